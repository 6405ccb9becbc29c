/*
 * EPLB in a running job: the placement a job starts with (static, from a
 * calibration trace, or a resumed run's) and the job's side of the
 * engine's online balancer (engine/balancer.c): its options from [eplb],
 * its decisions into RUN_DIR/eplb.jsonl and its window into checkpoints.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "runner/runner.h"

struct mr_runner_balancer {
    const mr_job *job;
    mr_model *model;
    mr_engine_balancer *engine;
    int rank;
    FILE *log; /* rank 0: RUN_DIR/eplb.jsonl */
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

void mr_runner_balance_options(const mr_job *job, mr_engine_balance_options *out)
{
    *out = (mr_engine_balance_options){
        .online = job->eplb_mode == MR_EPLB_MODE_ONLINE ||
                  job->eplb_mode == MR_EPLB_MODE_STATIC_ONLINE,
        .redundant_experts =
            job->eplb_mode == MR_EPLB_MODE_OFF ? 0 : (int)job->eplb_redundant_experts,
        .step_interval = (int)job->eplb_step_interval,
        .window_steps = (int)job->eplb_window_steps,
        .min_batch_tokens = (int)job->eplb_min_batch_tokens,
        .max_moves_percent = job->eplb_max_moves_percent,
        .policy = policy_of(job)};
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

/* The checkpoint's load window when it has the model's shape and holds
 * any steps; else NULL. */
static const uint64_t *saved_window(const mr_checkpoint_state *resume, int layers, int experts)
{
    const mr_checkpoint_window *w = resume ? &resume->window : NULL;
    return w && w->n_layers == layers && w->n_experts == experts && w->steps > 0 ? w->sum
                                                                                 : NULL;
}

/* The checkpoint's load window, as a load to solve from; else NULL. */
static double *saved_load(const mr_checkpoint_state *resume, int layers, int experts)
{
    const uint64_t *sum = saved_window(resume, layers, experts);
    if (!sum)
        return NULL;
    size_t cells = (size_t)layers * experts;
    double *load = malloc(cells * sizeof *load);
    for (size_t i = 0; load && i < cells; i++)
        load[i] = (double)sum[i];
    return load;
}

/* groups: the model's expert groups (DeepSeek-V3's n_group), which the
 * hierarchical policy keeps on a node, as the online balancer does. */
static int solve_initial(const mr_job *job, const double *load, int layers, int experts,
                         int groups, int n_physical, int ranks, int nodes, bool print,
                         const char *from, mr_eplb_placement *out)
{
    char err[1024];
    mr_eplb_solve_options opt = {.policy = policy_of(job), .n_physical = n_physical,
                                 .n_ranks = ranks, .n_nodes = nodes, .n_groups = groups,
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
                             int experts, int groups, int n_physical, int ranks, int nodes,
                             bool print, mr_eplb_placement *out)
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
    double *load = saved_load(resume, layers, experts);
    if (!load)
        return -1;
    int rc = solve_initial(job, load, layers, experts, groups, n_physical, ranks, nodes, print,
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
    mr_engine_balance_options bo;
    mr_runner_balance_options(job, &bo);
    int n_physical = mr_engine_balance_slots_per_rank(&bo, experts, ranks) * ranks;
    if (resume && job->eplb_mode != MR_EPLB_MODE_OFF) {
        int rc = resumed_placement(job, resume, layers, experts, mr_config_expert_groups(cfg),
                                   n_physical, ranks, nodes, print, out);
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
    int rc = solve_initial(job, load, layers, experts, mr_config_expert_groups(cfg), n_physical,
                           ranks, nodes, print, path, out);
    free(load);
    return rc;
}

int mr_runner_balancer_new(const mr_job *job, mr_model *model, mr_engine *engine, mr_comm *comm,
                           const mr_checkpoint_state *resume, mr_runner_balancer **out)
{
    char err[512];
    const mr_model_config *cfg = mr_model_config_get(model);
    int layers = mr_config_moe_layers(cfg);
    mr_runner_balancer *b = calloc(1, sizeof *b);
    *out = b;
    if (!b)
        return MR_EXIT_FAILED;
    *b = (mr_runner_balancer){.job = job, .model = model, .rank = mr_comm_rank(comm)};
    mr_engine_balance_options opt;
    mr_runner_balance_options(job, &opt);
    if (mr_engine_balancer_new(&opt, model, engine, comm,
                               saved_window(resume, layers, cfg->num_experts), &b->engine, err,
                               sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: eplb: %s\n", err);
        return MR_EXIT_FAILED;
    }
    if (b->rank == 0 && layers > 0 && opt.online) {
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
    mr_engine_balancer_free(b->engine);
    free(b);
}

static double number(const cJSON *record, const char *key)
{
    return cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(record, key));
}

/* Rank 0 says what a switch did; eplb.jsonl has the rest. */
static void print_rebalance(const cJSON *record)
{
    const cJSON *action = cJSON_GetObjectItemCaseSensitive(record, "action");
    if (!cJSON_IsString(action) || strcmp(action->valuestring, "rebalanced") != 0)
        return;
    printf("eplb: step %" PRIu64 ": %d of %d layers changed; rank imbalance %.2f -> "
           "%.2f on the window; %d experts (%.1f MiB) moved; solve %.1f ms, move "
           "%.1f ms\n",
           (uint64_t)number(record, "step"), (int)number(record, "layers_changed"),
           cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(record, "layer_expert_imbalance")),
           number(record, "rank_imbalance_before"), number(record, "rank_imbalance_after"),
           (int)number(record, "experts_moved"), number(record, "bytes_moved") / (1 << 20),
           number(record, "solve_seconds") * 1e3, number(record, "move_seconds") * 1e3);
}

/* A decision the engine reported: printed and logged on rank 0. */
static int keep_record(mr_runner_balancer *b, int rc, const char *err, cJSON *record)
{
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: eplb: %s\n", b->rank, err);
        return MR_EXIT_FAILED;
    }
    if (!record)
        return MR_EXIT_OK;
    if (b->rank == 0)
        print_rebalance(record);
    rc = MR_EXIT_OK;
    if (b->log) {
        char *line = cJSON_PrintUnformatted(record);
        if (!line) {
            rc = MR_EXIT_FAILED;
        } else if (fprintf(b->log, "%s\n", line) < 0 || fflush(b->log) != 0) {
            int e = errno;
            char *path = mr_runner_path(b->job->job_run_dir, MR_RUN_EPLB_LOG);
            rc = mr_runner_write_failed(path ? path : MR_RUN_EPLB_LOG, e);
            free(path);
        }
        free(line);
    }
    cJSON_Delete(record);
    return rc;
}

int mr_runner_balancer_step(mr_runner_balancer *b)
{
    char err[1024];
    cJSON *record;
    int rc = mr_engine_balancer_step(b->engine, &record, err, sizeof err);
    return keep_record(b, rc, err, record);
}

int mr_runner_balancer_finish(mr_runner_balancer *b)
{
    char err[1024];
    cJSON *record;
    int rc = mr_engine_balancer_finish(b->engine, &record, err, sizeof err);
    return keep_record(b, rc, err, record);
}

int mr_runner_balancer_checkpoint(mr_runner_balancer *b, mr_checkpoint_state *state)
{
    char err[1024];
    const uint64_t *sum;
    uint64_t steps;
    if (mr_engine_balancer_window(b->engine, &sum, &steps, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: eplb: %s\n", b->rank, err);
        return MR_EXIT_FAILED;
    }
    if (!sum || b->rank != 0)
        return MR_EXIT_OK;
    const mr_eplb_placement *p = mr_model_placement(b->model);
    bool ok = mr_checkpoint_set_placement(state, p->n_layers, p->n_logical, p->n_physical,
                                          p->n_ranks, p->phy2log, err, sizeof err) ==
                  MR_CHECKPOINT_OK &&
              mr_checkpoint_set_window(state, p->n_layers, p->n_logical, steps, sum, err,
                                       sizeof err) == MR_CHECKPOINT_OK;
    if (!ok)
        fprintf(stderr, "moerun run: checkpoint: %s\n", err);
    return ok ? MR_EXIT_OK : MR_EXIT_FAILED;
}

int mr_runner_balancer_rebalances(const mr_runner_balancer *b)
{
    return mr_engine_balancer_rebalances(b->engine);
}
