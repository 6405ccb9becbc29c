/*
 * EPLB on a running job: the placement a job starts with (static, from a
 * calibration trace) and the online rebalancer that re-solves it every
 * [eplb] step_interval steps from the last window_steps steps of load.
 *
 * Every rank keeps a window of the load its own tokens put on each logical
 * expert.  At a rebalance the ranks allgather their windows and figures,
 * each sums them in rank order and runs the same deterministic solver on
 * the same numbers, so every rank reaches the same placement without a
 * broadcast and switches to it between the same two steps.  Results do not
 * change: a token's replica is picked by its position and combine sums in a
 * fixed order, whatever the placement.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/clock.h"
#include "runner/runner.h"

/* The least gain in predicted balancedness worth a rebalance. */
#define MIN_GAIN 0.01

struct mr_runner_balancer {
    const mr_job *job;
    mr_model *model;
    mr_engine *engine;
    mr_comm *comm;
    int rank, ranks, nodes, layers, experts;
    int *moe_layer;           /* [layers]: the model layer of each MoE layer */
    bool online;
    mr_eplb_window *window;
    uint64_t *seen;           /* [layers][experts]: routed counts at the last step */
    uint64_t *step_counts;    /* [layers][experts]: this step's */
    uint64_t steps;
    /* Since the last decision, to measure what the placement did. */
    uint64_t mark_step, mark_tokens;
    double mark_wait, mark_time;
    uint64_t *mark_rank_tokens; /* [layers]: rows this rank's slots had run */
    /* Allgather buffers: per rank [window sum][rank load per layer][tokens, wait]. */
    size_t msg_len;
    double *mine, *all, *load, *rank_load;
    FILE *log; /* rank 0: RUN_DIR/eplb.jsonl */
    int rebalances;
};

static mr_eplb_policy policy_of(const mr_job *job)
{
    switch (job->eplb_strategy) {
    case MR_EPLB_STRATEGY_GLOBAL:
        return MR_EPLB_POLICY_GLOBAL;
    case MR_EPLB_STRATEGY_HIERARCHICAL:
        return MR_EPLB_POLICY_HIERARCHICAL;
    case MR_EPLB_STRATEGY_DEEPSEEK:
        return MR_EPLB_POLICY_DEEPSEEK;
    default:
        return MR_EPLB_POLICY_AUTO;
    }
}

int mr_runner_eplb_slots_per_rank(const mr_job *job, int experts, int ranks)
{
    int redundant = job->eplb_mode == MR_EPLB_MODE_OFF ? 0 : (int)job->eplb_redundant_experts;
    return mr_eplb_contiguous_slots_per_rank(experts + redundant, ranks);
}

int mr_runner_eplb_nodes(mr_comm *comm)
{
    int hosts = mr_comm_hosts(comm), ranks = mr_comm_size(comm);
    if (ranks % hosts != 0)
        return 1;
    /* The hierarchical solvers assume as many ranks on every node. */
    for (int h = 0; h < hosts; h++) {
        int here = 0;
        for (int r = 0; r < ranks; r++)
            here += mr_comm_host_of(comm, r) == h;
        if (here != ranks / hosts)
            return 1;
    }
    return hosts;
}

static bool uses_static(const mr_job *job)
{
    return job->eplb_mode == MR_EPLB_MODE_STATIC || job->eplb_mode == MR_EPLB_MODE_STATIC_ONLINE;
}

/* The checkpoint's placement, when the resumed run has its shape. */
static bool saved_placement_fits(const mr_checkpoint_placement *p, int layers, int experts,
                                 int n_physical, int ranks)
{
    return p->n_layers == layers && p->n_logical == experts && p->n_physical == n_physical &&
           p->n_ranks == ranks;
}

/* The checkpoint's load window, as a load to solve from, when it has the
 * model's shape and holds any steps; else NULL. */
static double *saved_load(const mr_checkpoint_window *w, int layers, int experts)
{
    if (w->n_layers != layers || w->n_experts != experts || w->steps == 0)
        return NULL;
    size_t cells = (size_t)layers * experts;
    double *load = malloc(cells * sizeof *load);
    for (size_t i = 0; load && i < cells; i++)
        load[i] = (double)w->sum[i];
    return load;
}

static int solve_initial(const mr_job *job, const double *load, int layers, int experts,
                         int n_physical, int ranks, int nodes, bool print, const char *from,
                         mr_eplb_placement *out)
{
    char err[1024];
    mr_eplb_solve_options opt = {.policy = policy_of(job), .n_physical = n_physical,
                                 .n_ranks = ranks, .n_nodes = nodes, .n_groups = 1,
                                 .max_moves = -1};
    mr_eplb_solve_result res;
    if (mr_eplb_solve(load, layers, experts, &opt, out, &res, err, sizeof err) != MR_EPLB_OK) {
        fprintf(stderr, "moerun run: eplb: placement from %s: %s\n", from, err);
        return MR_EXIT_INVALID;
    }
    if (print)
        printf("eplb: static placement from %s (%s): balancedness %.3f -> %.3f on %d ranks\n",
               from, mr_eplb_policy_name(res.chosen), res.before.balancedness,
               res.after.balancedness, ranks);
    return MR_EXIT_OK;
}

/* A resumed run keeps its placement on as many ranks, and re-solves one
 * from the saved load on another count; -1 when the checkpoint has
 * neither for this shape. */
static int resumed_placement(const mr_job *job, const mr_checkpoint_state *resume, int layers,
                             int experts, int n_physical, int ranks, int nodes, bool print,
                             mr_eplb_placement *out)
{
    char err[1024];
    const mr_checkpoint_placement *p = &resume->placement;
    if (saved_placement_fits(p, layers, experts, n_physical, ranks)) {
        if (mr_eplb_placement_from_phy2log(out, layers, experts, n_physical, ranks, p->phy2log,
                                           err, sizeof err) != MR_EPLB_OK) {
            fprintf(stderr, "moerun run: eplb: the checkpoint's placement: %s\n", err);
            return MR_EXIT_INVALID;
        }
        if (print)
            printf("eplb: placement of the checkpoint kept on %d ranks\n", ranks);
        return MR_EXIT_OK;
    }
    double *load = saved_load(&resume->window, layers, experts);
    if (!load)
        return -1;
    int rc = solve_initial(job, load, layers, experts, n_physical, ranks, nodes, print,
                           "the checkpoint's load window", out);
    free(load);
    return rc;
}

int mr_runner_eplb_initial(const mr_job *job, const mr_model_config *cfg, int ranks, int nodes,
                           bool print, const mr_checkpoint_state *resume,
                           mr_eplb_placement *out)
{
    char err[1024];
    int layers = mr_config_moe_layers(cfg), experts = cfg->num_experts;
    int n_physical = mr_runner_eplb_slots_per_rank(job, experts, ranks) * ranks;
    if (resume && job->eplb_mode != MR_EPLB_MODE_OFF) {
        int rc = resumed_placement(job, resume, layers, experts, n_physical, ranks, nodes, print,
                                   out);
        if (rc >= 0)
            return rc;
    }
    if (!uses_static(job) || !job->eplb_calibration) {
        int rc = mr_eplb_placement_round_robin(out, layers, experts, n_physical, ranks, err,
                                               sizeof err);
        if (rc != MR_EPLB_OK)
            fprintf(stderr, "moerun run: expert placement: %s\n", err);
        return rc == MR_EPLB_OK ? MR_EXIT_OK : MR_EXIT_INVALID;
    }
    double *load = NULL;
    int trace_layers, trace_experts;
    const char *path = job->eplb_calibration;
    if (mr_eplb_trace_read(path, &load, &trace_layers, &trace_experts, err, sizeof err) !=
        MR_EPLB_OK) {
        fprintf(stderr, "moerun run: [eplb] calibration: %s\n", err);
        return MR_EXIT_INVALID;
    }
    if (trace_layers != layers || trace_experts != experts) {
        fprintf(stderr, "moerun run: [eplb] calibration: %s has %d layers x %d experts, but the "
                "model has %d MoE layers x %d experts\n", path, trace_layers, trace_experts,
                layers, experts);
        free(load);
        return MR_EXIT_INVALID;
    }
    int rc = solve_initial(job, load, layers, experts, n_physical, ranks, nodes, print, path,
                           out);
    free(load);
    return rc;
}

int mr_runner_balancer_new(const mr_job *job, mr_model *model, mr_engine *engine, mr_comm *comm,
                           const mr_checkpoint_state *resume, mr_runner_balancer **out)
{
    char err[512];
    const mr_model_config *cfg = mr_model_config_get(model);
    mr_runner_balancer *b = calloc(1, sizeof *b);
    *out = b;
    if (!b)
        return MR_EXIT_FAILED;
    *b = (mr_runner_balancer){.job = job, .model = model, .engine = engine, .comm = comm,
                              .rank = mr_comm_rank(comm), .ranks = mr_comm_size(comm),
                              .nodes = mr_runner_eplb_nodes(comm),
                              .layers = mr_config_moe_layers(cfg), .experts = cfg->num_experts,
                              .mark_time = mr_clock_seconds()};
    b->online = b->layers > 0 && (job->eplb_mode == MR_EPLB_MODE_ONLINE ||
                                  job->eplb_mode == MR_EPLB_MODE_STATIC_ONLINE);
    if (b->layers == 0)
        return MR_EXIT_OK;
    size_t cells = (size_t)b->layers * b->experts;
    b->msg_len = cells + (size_t)b->layers + 2;
    b->moe_layer = malloc((size_t)b->layers * sizeof *b->moe_layer);
    b->seen = calloc(cells, sizeof *b->seen);
    b->step_counts = calloc(cells, sizeof *b->step_counts);
    b->mark_rank_tokens = calloc((size_t)b->layers, sizeof *b->mark_rank_tokens);
    b->mine = calloc(b->msg_len, sizeof *b->mine);
    b->all = calloc(b->msg_len * (size_t)b->ranks, sizeof *b->all);
    b->load = calloc(cells, sizeof *b->load);
    b->rank_load = calloc((size_t)b->ranks, sizeof *b->rank_load);
    if (!b->moe_layer || !b->seen || !b->step_counts || !b->mark_rank_tokens || !b->mine ||
        !b->all || !b->load || !b->rank_load)
        return MR_EXIT_FAILED;
    for (int i = 0, l = 0; i < cfg->num_hidden_layers; i++)
        if (mr_config_layer_is_moe(cfg, i))
            b->moe_layer[l++] = i;
    if (mr_eplb_window_create(b->layers, b->experts, (int)job->eplb_window_steps, &b->window,
                              err, sizeof err) != MR_EPLB_OK) {
        fprintf(stderr, "moerun run: eplb: %s\n", err);
        return MR_EXIT_FAILED;
    }
    /* The saved window is the world's sum: one rank holds it, as one step
     * that drops out like any other. */
    const mr_checkpoint_window *saved = resume ? &resume->window : NULL;
    if (b->rank == 0 && saved && saved->n_layers == b->layers &&
        saved->n_experts == b->experts && saved->steps > 0)
        mr_eplb_window_push(b->window, saved->sum);
    if (b->rank == 0 && b->online) {
        char *path = mr_runner_path(job->job_run_dir, MR_RUN_EPLB_LOG);
        b->log = path ? fopen(path, resume ? "a" : "w") : NULL;
        int rc = b->log ? MR_EXIT_OK : path ? mr_runner_write_failed(path, errno) : MR_EXIT_FAILED;
        free(path);
        if (rc != MR_EXIT_OK)
            return rc;
    }
    return MR_EXIT_OK;
}

void mr_runner_balancer_free(mr_runner_balancer *b)
{
    if (!b)
        return;
    if (b->log)
        fclose(b->log);
    mr_eplb_window_free(b->window);
    free(b->moe_layer);
    free(b->seen);
    free(b->step_counts);
    free(b->mark_rank_tokens);
    free(b->mine);
    free(b->all);
    free(b->load);
    free(b->rank_load);
    free(b);
}

/* Routed counts of the MoE layers since the last call, into step_counts. */
static void take_step_counts(mr_runner_balancer *b)
{
    const uint64_t *total = mr_engine_expert_counts(b->engine);
    for (int l = 0; l < b->layers; l++)
        for (int e = 0; e < b->experts; e++) {
            size_t at = (size_t)l * b->experts + e;
            uint64_t now = total[(size_t)b->moe_layer[l] * b->experts + e];
            b->step_counts[at] = now - b->seen[at];
            b->seen[at] = now;
        }
}

/* Rows this rank's slots ran in one layer, since the engine started. */
static uint64_t rank_tokens(const mr_engine_stats *st, int layer)
{
    uint64_t tokens = 0;
    for (int s = 0; s < st->slots_per_rank; s++)
        tokens += st->slot_tokens[(size_t)layer * st->slots_per_rank + s];
    return tokens;
}

/* Allgathers the first `len` doubles of every rank's b->mine and sums
 * their first layers x experts into b->load (rank order, the same sum
 * everywhere). */
static int gather_sum(mr_runner_balancer *b, size_t len)
{
    char err[512];
    size_t cells = (size_t)b->layers * b->experts;
    if (mr_comm_ctrl_allgather(b->comm, b->mine, len * sizeof *b->mine, b->all, err, sizeof err) !=
        MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: eplb: %s\n", b->rank, err);
        return MR_EXIT_FAILED;
    }
    memset(b->load, 0, cells * sizeof *b->load);
    for (int r = 0; r < b->ranks; r++)
        for (size_t i = 0; i < cells; i++)
            b->load[i] += b->all[(size_t)r * len + i];
    return MR_EXIT_OK;
}

/* Gathers every rank's window and figures since the last decision; sums
 * the windows into b->load. */
static int gather(mr_runner_balancer *b, const mr_engine_stats *st)
{
    size_t cells = (size_t)b->layers * b->experts;
    mr_eplb_window_sum(b->window, b->mine);
    for (int l = 0; l < b->layers; l++)
        b->mine[cells + l] = (double)(rank_tokens(st, l) - b->mark_rank_tokens[l]);
    b->mine[cells + b->layers] = (double)(st->tokens - b->mark_tokens);
    b->mine[cells + b->layers + 1] = st->wait_seconds - b->mark_wait;
    return gather_sum(b, b->msg_len);
}

static double rank_part(const mr_runner_balancer *b, int rank, size_t index)
{
    return b->all[(size_t)rank * b->msg_len + (size_t)b->layers * b->experts + index];
}

/* Sum over layers of the busiest rank's tokens over the sum of the mean:
 * the inverse of vLLM's balancedness, 1 when perfectly even. */
static double ratio(double sum_max, double sum_mean)
{
    return sum_mean > 0 ? sum_max / sum_mean : 1.0;
}

/* What the ranks' slots ran since the last decision, per layer and in all. */
static double measured_imbalance(const mr_runner_balancer *b, cJSON *per_layer)
{
    double sum_max = 0, sum_mean = 0;
    for (int l = 0; l < b->layers; l++) {
        double max = 0, total = 0;
        for (int r = 0; r < b->ranks; r++) {
            double t = rank_part(b, r, (size_t)l);
            max = t > max ? t : max;
            total += t;
        }
        sum_max += max;
        sum_mean += total / b->ranks;
        cJSON_AddItemToArray(per_layer, cJSON_CreateNumber(ratio(max, total / b->ranks)));
    }
    return ratio(sum_max, sum_mean);
}

/* Per layer: max / mean tokens per logical expert in the window, and the
 * predicted rank imbalance of placement p on it. */
static void layer_figures(mr_runner_balancer *b, const mr_eplb_placement *p, cJSON *experts,
                          cJSON *ranks)
{
    for (int l = 0; l < b->layers; l++) {
        const double *row = b->load + (size_t)l * b->experts;
        double max = 0, total = 0;
        for (int e = 0; e < b->experts; e++) {
            max = row[e] > max ? row[e] : max;
            total += row[e];
        }
        if (experts)
            cJSON_AddItemToArray(experts, cJSON_CreateNumber(ratio(max, total / b->experts)));
        mr_eplb_rank_loads(p, b->load, l, b->rank_load);
        double rmax = 0;
        for (int r = 0; r < b->ranks; r++)
            rmax = b->rank_load[r] > rmax ? b->rank_load[r] : rmax;
        cJSON_AddItemToArray(ranks, cJSON_CreateNumber(ratio(rmax, total / b->ranks)));
    }
}

static double inverse(double balancedness)
{
    return balancedness > 0 ? 1.0 / balancedness : 1.0;
}

/* Re-solve from the window and switch when it helps; `record` gets what
 * was decided and why. */
static int decide(mr_runner_balancer *b, double tokens_per_rank_step, cJSON *record)
{
    const mr_job *job = b->job;
    if (tokens_per_rank_step < (double)job->eplb_min_batch_tokens) {
        cJSON_AddStringToObject(record, "action", "skipped");
        cJSON_AddStringToObject(record, "reason", "fewer tokens per rank-step than "
                                                  "min_batch_tokens");
        return MR_EXIT_OK;
    }
    char err[1024];
    const mr_eplb_placement *cur = mr_model_placement(b->model);
    int slots = b->layers * cur->n_physical;
    mr_eplb_solve_options opt = {
        .policy = policy_of(job), .n_physical = cur->n_physical, .n_ranks = b->ranks,
        .n_nodes = b->nodes, .n_groups = 1, .current = cur,
        .max_moves = job->eplb_max_moves_percent >= 100
                         ? -1
                         : (int)floor(job->eplb_max_moves_percent / 100.0 * slots),
        .expert_bytes = mr_model_expert_bytes(b->model)};
    mr_eplb_placement next;
    mr_eplb_solve_result res;
    if (mr_eplb_solve(b->load, b->layers, b->experts, &opt, &next, &res, err, sizeof err) !=
        MR_EPLB_OK) {
        fprintf(stderr, "moerun run: rank %d: eplb: %s\n", b->rank, err);
        return MR_EXIT_FAILED;
    }
    cJSON *before = cJSON_AddArrayToObject(record, "layer_rank_imbalance_before");
    cJSON *after = cJSON_AddArrayToObject(record, "layer_rank_imbalance_after");
    layer_figures(b, cur, NULL, before);
    layer_figures(b, &next, NULL, after);
    cJSON_AddNumberToObject(record, "rank_imbalance_before", inverse(res.before.balancedness));
    cJSON_AddNumberToObject(record, "rank_imbalance_after", inverse(res.after.balancedness));
    cJSON_AddNumberToObject(record, "solve_seconds", res.seconds);
    /* Moving experts stalls every rank; below a 1% gain in predicted
     * balance it costs more than the steps after it save. */
    bool better = res.layers_changed > 0 &&
                  res.after.balancedness > res.before.balancedness * (1 + MIN_GAIN);
    int loaded = 0;
    double t0 = mr_clock_seconds();
    if (better && mr_model_set_placement(b->model, &next, &loaded, err, sizeof err) !=
                      MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: eplb: %s\n", b->rank, err);
        mr_eplb_placement_free(&next);
        return MR_EXIT_FAILED;
    }
    double moved_seconds = mr_clock_seconds() - t0;
    mr_eplb_placement_free(&next);
    cJSON_AddStringToObject(record, "action", better ? "rebalanced" : "kept");
    cJSON_AddNumberToObject(record, "layers_changed", better ? res.layers_changed : 0);
    cJSON_AddNumberToObject(record, "experts_moved", better ? res.experts_moved : 0);
    cJSON_AddNumberToObject(record, "bytes_moved", better ? (double)res.bytes_moved : 0);
    cJSON_AddNumberToObject(record, "move_seconds", moved_seconds);
    if (better) {
        b->rebalances++;
        if (b->rank == 0)
            printf("eplb: step %" PRIu64 ": %d of %d layers changed; rank imbalance %.2f -> "
                   "%.2f on the window; %d experts (%.1f MiB) moved; solve %.1f ms, move "
                   "%.1f ms\n",
                   b->steps, res.layers_changed, b->layers, inverse(res.before.balancedness),
                   inverse(res.after.balancedness), res.experts_moved,
                   (double)res.bytes_moved / (1 << 20), res.seconds * 1e3,
                   moved_seconds * 1e3);
    }
    return MR_EXIT_OK;
}

/* One decision (collective): gather, measure, maybe rebalance, log, and
 * start measuring the next interval.  `final` only measures. */
static int close_interval(mr_runner_balancer *b, bool final)
{
    mr_engine_stats st;
    mr_engine_get_stats(b->engine, &st);
    int rc = gather(b, &st);
    if (rc != MR_EXIT_OK)
        return rc;
    double now = mr_clock_seconds(), wall = now - b->mark_time, tokens = 0, wait = 0;
    for (int r = 0; r < b->ranks; r++) {
        tokens += rank_part(b, r, (size_t)b->layers);
        wait += rank_part(b, r, (size_t)b->layers + 1);
    }
    uint64_t steps = b->steps - b->mark_step;
    double per_rank_step = steps ? tokens / ((double)b->ranks * (double)steps) : 0;
    cJSON *record = cJSON_CreateObject();
    cJSON_AddNumberToObject(record, "step", (double)b->steps);
    cJSON_AddNumberToObject(record, "steps", (double)steps);
    cJSON_AddNumberToObject(record, "tokens_per_rank_step", per_rank_step);
    cJSON_AddNumberToObject(record, "wait_share",
                            wall > 0 ? wait / ((double)b->ranks * wall) : 0.0);
    cJSON *layers = cJSON_AddArrayToObject(record, "layer_rank_imbalance_measured");
    cJSON_AddNumberToObject(record, "rank_imbalance_measured", measured_imbalance(b, layers));
    cJSON *experts = cJSON_AddArrayToObject(record, "layer_expert_imbalance");
    cJSON *ranks = cJSON_CreateArray();
    layer_figures(b, mr_model_placement(b->model), experts, ranks);
    cJSON_Delete(ranks);
    if (final)
        cJSON_AddStringToObject(record, "action", "final");
    else
        rc = decide(b, per_rank_step, record);
    if (rc == MR_EXIT_OK && b->log) {
        char *line = cJSON_PrintUnformatted(record);
        if (!line) {
            rc = MR_EXIT_FAILED;
        } else if (fprintf(b->log, "%s\n", line) < 0 || fflush(b->log) != 0) {
            int err = errno;
            char *path = mr_runner_path(b->job->job_run_dir, MR_RUN_EPLB_LOG);
            rc = mr_runner_write_failed(path ? path : MR_RUN_EPLB_LOG, err);
            free(path);
        }
        free(line);
    }
    cJSON_Delete(record);
    /* Measure the next interval from here; the solve and move count in it. */
    mr_engine_get_stats(b->engine, &st);
    for (int l = 0; l < b->layers; l++)
        b->mark_rank_tokens[l] = rank_tokens(&st, l);
    b->mark_tokens = st.tokens;
    b->mark_wait = st.wait_seconds;
    b->mark_step = b->steps;
    b->mark_time = now;
    return rc;
}

int mr_runner_balancer_step(mr_runner_balancer *b)
{
    if (b->layers == 0)
        return MR_EXIT_OK;
    take_step_counts(b);
    mr_eplb_window_push(b->window, b->step_counts);
    b->steps++;
    if (!b->online || b->steps % (uint64_t)b->job->eplb_step_interval != 0)
        return MR_EXIT_OK;
    return close_interval(b, false);
}

int mr_runner_balancer_checkpoint(mr_runner_balancer *b, mr_checkpoint_state *state)
{
    if (b->layers == 0)
        return MR_EXIT_OK;
    char err[512];
    size_t cells = (size_t)b->layers * b->experts;
    mr_eplb_window_sum(b->window, b->mine);
    int rc = gather_sum(b, cells);
    if (rc != MR_EXIT_OK || b->rank != 0)
        return rc;
    /* Counts are whole numbers well inside a double's exact range. */
    uint64_t *sum = malloc(cells * sizeof *sum);
    for (size_t i = 0; sum && i < cells; i++)
        sum[i] = (uint64_t)b->load[i];
    const mr_eplb_placement *p = mr_model_placement(b->model);
    bool ok = sum &&
              mr_checkpoint_set_placement(state, p->n_layers, p->n_logical, p->n_physical,
                                          p->n_ranks, p->phy2log, err, sizeof err) ==
                  MR_CHECKPOINT_OK &&
              mr_checkpoint_set_window(state, b->layers, b->experts,
                                       (uint64_t)mr_eplb_window_filled(b->window), sum, err,
                                       sizeof err) == MR_CHECKPOINT_OK;
    if (!ok)
        fprintf(stderr, "moerun run: checkpoint: %s\n", sum ? err : "out of memory");
    free(sum);
    return ok ? MR_EXIT_OK : MR_EXIT_FAILED;
}

int mr_runner_balancer_finish(mr_runner_balancer *b)
{
    if (b->layers == 0)
        return MR_EXIT_OK;
    return b->online ? close_interval(b, true) : MR_EXIT_OK;
}

int mr_runner_balancer_rebalances(const mr_runner_balancer *b)
{
    return b->rebalances;
}
