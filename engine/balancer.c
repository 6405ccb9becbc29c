/*
 * The online expert balancer: re-solves the expert placement every
 * step_interval steps from the last window_steps steps of load, and
 * switches to it when it helps.
 *
 * Every rank keeps a window of the load its own tokens put on each logical
 * expert.  At a decision the ranks allgather their windows and figures,
 * each sums them in rank order and runs the same deterministic solver on
 * the same numbers, so every rank reaches the same placement without a
 * broadcast and switches to it between the same two steps.  Results do not
 * change: a token's replica is picked by its position and combine sums in a
 * fixed order, whatever the placement.
 *
 * The balancer writes no files: each decision comes back as a record (what
 * was measured, what was decided and why) for the caller to keep.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/clock.h"
#include "engine/engine.h"

/* The least gain in predicted balancedness worth a rebalance. */
#define MIN_GAIN 0.01

struct mr_engine_balancer {
    mr_engine_balance_options opt;
    mr_model *model;
    mr_engine *engine;
    mr_comm *comm;
    int rank, ranks, nodes, layers, experts;
    int *moe_layer;           /* [layers]: the model layer of each MoE layer */
    bool online;
    mr_eplb_window *window;
    uint64_t *seen;           /* [layers][experts]: routed counts at the last step */
    uint64_t *step_counts;    /* [layers][experts]: this step's */
    uint64_t *window_sum;     /* [layers][experts]: the world's window, for a checkpoint */
    uint64_t steps;
    /* Since the last decision, to measure what the placement did. */
    uint64_t mark_step, mark_tokens;
    double mark_wait, mark_time;
    uint64_t *mark_rank_tokens; /* [layers]: rows this rank's slots had run */
    /* Allgather buffers: per rank [window sum][rank load per layer][tokens, wait]. */
    size_t msg_len;
    double *mine, *all, *load, *rank_load;
    int rebalances;
};

int mr_engine_balance_slots_per_rank(const mr_engine_balance_options *opt, int experts,
                                     int ranks)
{
    return mr_eplb_contiguous_slots_per_rank(experts + opt->redundant_experts, ranks);
}

int mr_engine_balance_nodes(const mr_comm *comm)
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

static int out_of_memory(char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory");
    return MR_ENGINE_ENOMEM;
}

int mr_engine_balancer_new(const mr_engine_balance_options *opt, mr_model *model,
                           mr_engine *engine, mr_comm *comm, const uint64_t *saved_window,
                           mr_engine_balancer **out, char *err, size_t errlen)
{
    const mr_model_config *cfg = mr_model_config_get(model);
    mr_engine_balancer *b = calloc(1, sizeof *b);
    *out = b;
    if (!b)
        return out_of_memory(err, errlen);
    *b = (mr_engine_balancer){.opt = *opt, .model = model, .engine = engine, .comm = comm,
                              .rank = mr_comm_rank(comm), .ranks = mr_comm_size(comm),
                              .nodes = mr_engine_balance_nodes(comm),
                              .layers = mr_config_moe_layers(cfg), .experts = cfg->num_experts,
                              .mark_time = mr_clock_seconds()};
    b->online = b->layers > 0 && opt->online;
    if (b->layers == 0)
        return MR_ENGINE_OK;
    size_t cells = (size_t)b->layers * b->experts;
    b->msg_len = cells + (size_t)b->layers + 2;
    b->moe_layer = malloc((size_t)b->layers * sizeof *b->moe_layer);
    b->seen = calloc(cells, sizeof *b->seen);
    b->step_counts = calloc(cells, sizeof *b->step_counts);
    b->window_sum = calloc(cells, sizeof *b->window_sum);
    b->mark_rank_tokens = calloc((size_t)b->layers, sizeof *b->mark_rank_tokens);
    b->mine = calloc(b->msg_len, sizeof *b->mine);
    b->all = calloc(b->msg_len * (size_t)b->ranks, sizeof *b->all);
    b->load = calloc(cells, sizeof *b->load);
    b->rank_load = calloc((size_t)b->ranks, sizeof *b->rank_load);
    if (!b->moe_layer || !b->seen || !b->step_counts || !b->window_sum ||
        !b->mark_rank_tokens || !b->mine || !b->all || !b->load || !b->rank_load)
        return out_of_memory(err, errlen);
    for (int i = 0, l = 0; i < cfg->num_hidden_layers; i++)
        if (mr_config_layer_is_moe(cfg, i))
            b->moe_layer[l++] = i;
    if (mr_eplb_window_create(b->layers, b->experts, opt->window_steps, &b->window, err,
                              errlen) != MR_EPLB_OK)
        return MR_ENGINE_EINVAL;
    /* The saved window is the world's sum: one rank holds it, as one step
     * that drops out like any other. */
    if (b->rank == 0 && saved_window)
        mr_eplb_window_push(b->window, saved_window);
    return MR_ENGINE_OK;
}

void mr_engine_balancer_free(mr_engine_balancer *b)
{
    if (!b)
        return;
    mr_eplb_window_free(b->window);
    free(b->moe_layer);
    free(b->seen);
    free(b->step_counts);
    free(b->window_sum);
    free(b->mark_rank_tokens);
    free(b->mine);
    free(b->all);
    free(b->load);
    free(b->rank_load);
    free(b);
}

/* Routed counts of the MoE layers since the last call, into step_counts. */
static void take_step_counts(mr_engine_balancer *b)
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
static int gather_sum(mr_engine_balancer *b, size_t len, char *err, size_t errlen)
{
    size_t cells = (size_t)b->layers * b->experts;
    int rc = mr_comm_ctrl_allgather(b->comm, b->mine, len * sizeof *b->mine, b->all, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    memset(b->load, 0, cells * sizeof *b->load);
    for (int r = 0; r < b->ranks; r++)
        for (size_t i = 0; i < cells; i++)
            b->load[i] += b->all[(size_t)r * len + i];
    return MR_ENGINE_OK;
}

/* Gathers every rank's window and figures since the last decision; sums
 * the windows into b->load. */
static int gather(mr_engine_balancer *b, const mr_engine_stats *st, char *err, size_t errlen)
{
    size_t cells = (size_t)b->layers * b->experts;
    mr_eplb_window_sum(b->window, b->mine);
    for (int l = 0; l < b->layers; l++)
        b->mine[cells + l] = (double)(rank_tokens(st, l) - b->mark_rank_tokens[l]);
    b->mine[cells + b->layers] = (double)(st->tokens - b->mark_tokens);
    b->mine[cells + b->layers + 1] = st->wait_seconds - b->mark_wait;
    return gather_sum(b, b->msg_len, err, errlen);
}

static double rank_part(const mr_engine_balancer *b, int rank, size_t index)
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
static double measured_imbalance(const mr_engine_balancer *b, cJSON *per_layer)
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
static void layer_figures(mr_engine_balancer *b, const mr_eplb_placement *p, cJSON *experts,
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
static int decide(mr_engine_balancer *b, double tokens_per_rank_step, cJSON *record, char *err,
                  size_t errlen)
{
    const mr_engine_balance_options *o = &b->opt;
    if (tokens_per_rank_step < (double)o->min_batch_tokens) {
        cJSON_AddStringToObject(record, "action", "skipped");
        cJSON_AddStringToObject(record, "reason", "fewer tokens per rank-step than "
                                                  "min_batch_tokens");
        return MR_ENGINE_OK;
    }
    const mr_eplb_placement *cur = mr_model_placement(b->model);
    int slots = b->layers * cur->n_physical;
    mr_eplb_solve_options so = {
        .policy = o->policy, .n_physical = cur->n_physical, .n_ranks = b->ranks,
        .n_nodes = b->nodes, .n_groups = mr_config_expert_groups(mr_model_config_get(b->model)),
        .current = cur,
        .max_moves = o->max_moves_percent >= 100
                         ? -1
                         : (int)floor(o->max_moves_percent / 100.0 * slots),
        .expert_bytes = mr_model_expert_bytes(b->model)};
    mr_eplb_placement next;
    mr_eplb_solve_result res;
    if (mr_eplb_solve(b->load, b->layers, b->experts, &so, &next, &res, err, errlen) !=
        MR_EPLB_OK)
        return MR_ENGINE_EINVAL;
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
    int loaded = 0, rc = MR_ENGINE_OK;
    double t0 = mr_clock_seconds();
    if (better)
        rc = mr_model_set_placement(b->model, &next, &loaded, err, errlen);
    double moved_seconds = mr_clock_seconds() - t0;
    mr_eplb_placement_free(&next);
    if (rc != MR_ENGINE_OK)
        return rc;
    cJSON_AddStringToObject(record, "action", better ? "rebalanced" : "kept");
    cJSON_AddNumberToObject(record, "layers_changed", better ? res.layers_changed : 0);
    cJSON_AddNumberToObject(record, "experts_moved", better ? res.experts_moved : 0);
    cJSON_AddNumberToObject(record, "bytes_moved", better ? (double)res.bytes_moved : 0);
    cJSON_AddNumberToObject(record, "move_seconds", moved_seconds);
    if (better)
        b->rebalances++;
    return MR_ENGINE_OK;
}

/* One decision (collective): gather, measure, maybe rebalance, and start
 * measuring the next interval.  `final` only measures. */
static int close_interval(mr_engine_balancer *b, bool final, cJSON **out, char *err,
                          size_t errlen)
{
    mr_engine_stats st;
    mr_engine_get_stats(b->engine, &st);
    int rc = gather(b, &st, err, errlen);
    if (rc != MR_ENGINE_OK)
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
        rc = decide(b, per_rank_step, record, err, errlen);
    if (rc == MR_ENGINE_OK)
        *out = record;
    else
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

int mr_engine_balancer_step(mr_engine_balancer *b, cJSON **record, char *err, size_t errlen)
{
    *record = NULL;
    if (b->layers == 0)
        return MR_ENGINE_OK;
    take_step_counts(b);
    mr_eplb_window_push(b->window, b->step_counts);
    b->steps++;
    if (!b->online || b->steps % (uint64_t)b->opt.step_interval != 0)
        return MR_ENGINE_OK;
    return close_interval(b, false, record, err, errlen);
}

int mr_engine_balancer_finish(mr_engine_balancer *b, cJSON **record, char *err, size_t errlen)
{
    *record = NULL;
    if (!b->online)
        return MR_ENGINE_OK;
    return close_interval(b, true, record, err, errlen);
}

int mr_engine_balancer_window(mr_engine_balancer *b, const uint64_t **sum, uint64_t *steps,
                              char *err, size_t errlen)
{
    *sum = NULL;
    *steps = 0;
    if (b->layers == 0)
        return MR_ENGINE_OK;
    size_t cells = (size_t)b->layers * b->experts;
    mr_eplb_window_sum(b->window, b->mine);
    int rc = gather_sum(b, cells, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    /* Counts are whole numbers well inside a double's exact range. */
    for (size_t i = 0; i < cells; i++)
        b->window_sum[i] = (uint64_t)b->load[i];
    *sum = b->window_sum;
    *steps = (uint64_t)mr_eplb_window_filled(b->window);
    return MR_ENGINE_OK;
}

int mr_engine_balancer_rebalances(const mr_engine_balancer *b)
{
    return b->rebalances;
}
