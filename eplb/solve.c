/*
 * mr_eplb_solve: check the request, run the policy (auto runs global and,
 * across nodes, hierarchical, and keeps the better), make the result
 * migration-aware when the ranks already hold a placement, and score it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eplb/eplb_internal.h"

static const char *const policy_names[] = {
    [MR_EPLB_POLICY_AUTO] = "auto",
    [MR_EPLB_POLICY_GLOBAL] = "global",
    [MR_EPLB_POLICY_HIERARCHICAL] = "hierarchical",
    [MR_EPLB_POLICY_DEEPSEEK] = "deepseek",
};
#define N_POLICIES (int)(sizeof policy_names / sizeof policy_names[0])

const char *mr_eplb_policy_name(mr_eplb_policy policy)
{
    return (int)policy >= 0 && (int)policy < N_POLICIES ? policy_names[policy] : NULL;
}

int mr_eplb_policy_parse(const char *name, mr_eplb_policy *out)
{
    for (int i = 0; i < N_POLICIES; i++)
        if (strcmp(name, policy_names[i]) == 0) {
            *out = (mr_eplb_policy)i;
            return MR_EPLB_OK;
        }
    return MR_EPLB_EINVAL;
}

static int invalid(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int invalid(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return MR_EPLB_EINVAL;
}

static int check_options(const double *load, int layers, int experts,
                         const mr_eplb_solve_options *o, mr_eplb_shape *s, char *err,
                         size_t errlen)
{
    if (layers < 1 || experts < 1)
        return invalid(err, errlen, "a load needs at least one layer and one expert (got %d x %d)",
                       layers, experts);
    if (!mr_eplb_policy_name(o->policy))
        return invalid(err, errlen, "unknown placement policy %d", (int)o->policy);
    if (o->n_ranks < 1)
        return invalid(err, errlen, "a placement needs at least one rank (got %d)", o->n_ranks);
    if (o->n_physical < experts)
        return invalid(err, errlen,
                       "%d physical slots cannot hold %d experts: every expert needs one",
                       o->n_physical, experts);
    if (o->n_physical % o->n_ranks != 0)
        return invalid(err, errlen,
                       "%d physical slots do not divide evenly over %d ranks; %d more would",
                       o->n_physical, o->n_ranks, o->n_ranks - o->n_physical % o->n_ranks);
    *s = (mr_eplb_shape){.experts = experts,
                         .n_physical = o->n_physical,
                         .n_ranks = o->n_ranks,
                         .n_nodes = o->n_nodes > 1 ? o->n_nodes : 1,
                         .n_groups = o->n_groups > 1 ? o->n_groups : 1,
                         .per_rank = o->n_physical / o->n_ranks};
    if (s->n_ranks % s->n_nodes != 0)
        return invalid(err, errlen, "%d ranks do not divide evenly over %d nodes", s->n_ranks,
                       s->n_nodes);
    if (experts % s->n_groups != 0)
        return invalid(err, errlen, "%d experts do not make %d groups of equal size", experts,
                       s->n_groups);
    for (int l = 0; l < layers; l++)
        for (int e = 0; e < experts; e++) {
            double v = load[(size_t)l * experts + e];
            if (!isfinite(v) || v < 0)
                return invalid(err, errlen, "layer %d, expert %d: %g is not a token count", l, e,
                               v);
        }
    const mr_eplb_placement *c = o->current;
    if (c && (c->n_layers != layers || c->n_logical != experts ||
              c->n_physical != o->n_physical || c->n_ranks != o->n_ranks))
        return invalid(err, errlen,
                       "the current placement has %d layers of %d experts in %d slots on %d "
                       "ranks; the solve is for %d layers of %d experts in %d slots on %d ranks",
                       c->n_layers, c->n_logical, c->n_physical, c->n_ranks, layers, experts,
                       o->n_physical, o->n_ranks);
    return MR_EPLB_OK;
}

/* The sum over layers of the largest rank load: what balancedness divides
 * by, so the lower of two is the better placement. */
static int sum_of_max(const mr_eplb_shape *s, const double *load, int layers,
                      const int32_t *phy2log, double *out, char *err, size_t errlen)
{
    int32_t *cnt = malloc((size_t)s->experts * sizeof *cnt);
    double *rank_load = malloc((size_t)s->n_ranks * sizeof *rank_load);
    if (!cnt || !rank_load) {
        free(cnt);
        free(rank_load);
        return MR_EPLB_OOM(err, errlen);
    }
    *out = 0;
    for (int l = 0; l < layers; l++) {
        const int32_t *row = phy2log + (size_t)l * s->n_physical;
        mr_eplb_count_replicas(row, s->n_physical, s->experts, cnt);
        *out += mr_eplb_layer_rank_loads(row, cnt, load + (size_t)l * s->experts,
                                         s->n_physical, s->n_ranks, rank_load);
    }
    free(cnt);
    free(rank_load);
    return MR_EPLB_OK;
}

/* Global, and across nodes also hierarchical (global rearranged for
 * locality): the hierarchical one unless it is less balanced, since on a
 * tie it crosses nodes less. */
static int solve_auto(const mr_eplb_shape *s, const double *load, int layers,
                      int32_t *phy2log, mr_eplb_policy *chosen, char *err, size_t errlen)
{
    *chosen = MR_EPLB_POLICY_GLOBAL;
    int rc = mr_eplb_solve_global(s, load, layers, phy2log, err, errlen);
    if (rc != MR_EPLB_OK || s->n_nodes <= 1)
        return rc;
    size_t n = (size_t)layers * (size_t)s->n_physical;
    int32_t *local = malloc(n * sizeof *local);
    if (!local)
        return MR_EPLB_OOM(err, errlen);
    memcpy(local, phy2log, n * sizeof *local);
    double global_max = 0, local_max = 0;
    rc = mr_eplb_localize_groups(s, load, layers, local, err, errlen);
    if (rc == MR_EPLB_OK)
        rc = sum_of_max(s, load, layers, phy2log, &global_max, err, errlen);
    if (rc == MR_EPLB_OK)
        rc = sum_of_max(s, load, layers, local, &local_max, err, errlen);
    /* The tolerance absorbs rounding in sums taken in another order. */
    if (rc == MR_EPLB_OK && local_max <= global_max * (1 + 1e-9)) {
        memcpy(phy2log, local, n * sizeof *local);
        *chosen = MR_EPLB_POLICY_HIERARCHICAL;
    }
    free(local);
    return rc;
}

static int run_policy(const mr_eplb_shape *s, const double *load, int layers,
                      mr_eplb_policy policy, int32_t *phy2log, mr_eplb_policy *chosen,
                      char *err, size_t errlen)
{
    *chosen = policy;
    switch (policy) {
    case MR_EPLB_POLICY_DEEPSEEK:
        return mr_eplb_solve_deepseek(s, load, layers, phy2log, err, errlen);
    case MR_EPLB_POLICY_GLOBAL:
        return mr_eplb_solve_global(s, load, layers, phy2log, err, errlen);
    case MR_EPLB_POLICY_HIERARCHICAL: {
        int rc = mr_eplb_solve_global(s, load, layers, phy2log, err, errlen);
        return rc == MR_EPLB_OK ? mr_eplb_localize_groups(s, load, layers, phy2log, err, errlen)
                                : rc;
    }
    case MR_EPLB_POLICY_AUTO:
        break;
    }
    return solve_auto(s, load, layers, phy2log, chosen, err, errlen);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

static int score(const double *load, int layers, int experts,
                 const mr_eplb_solve_options *o, const mr_eplb_placement *out,
                 mr_eplb_solve_result *r, char *err, size_t errlen)
{
    mr_eplb_placement contiguous = {0};
    const mr_eplb_placement *before = o->current;
    int rc = MR_EPLB_OK;
    if (!before) {
        rc = mr_eplb_placement_contiguous(&contiguous, layers, experts, o->n_ranks, err, errlen);
        before = &contiguous;
    }
    if (rc == MR_EPLB_OK)
        rc = mr_eplb_evaluate(before, load, &r->before, err, errlen);
    if (rc == MR_EPLB_OK)
        rc = mr_eplb_evaluate(out, load, &r->after, err, errlen);
    if (rc == MR_EPLB_OK && o->current) {
        r->experts_moved = mr_eplb_moves(o->current, out, &r->layers_changed);
        r->bytes_moved = (uint64_t)r->experts_moved * o->expert_bytes;
    }
    mr_eplb_placement_free(&contiguous);
    return rc;
}

int mr_eplb_solve(const double *load, int layers, int experts,
                  const mr_eplb_solve_options *options, mr_eplb_placement *out,
                  mr_eplb_solve_result *result, char *err, size_t errlen)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(out, 0, sizeof *out);
    mr_eplb_shape s;
    int rc = check_options(load, layers, experts, options, &s, err, errlen);
    if (rc != MR_EPLB_OK)
        return rc;
    int32_t *phy2log = malloc((size_t)layers * (size_t)s.n_physical * sizeof *phy2log);
    if (!phy2log)
        return MR_EPLB_OOM(err, errlen);
    mr_eplb_solve_result r = {0};
    rc = run_policy(&s, load, layers, options->policy, phy2log, &r.chosen, err, errlen);
    if (rc == MR_EPLB_OK && options->current)
        rc = mr_eplb_migrate(&s, load, layers, options->current->phy2log, options->max_moves,
                             phy2log, err, errlen);
    if (rc == MR_EPLB_OK)
        rc = mr_eplb_placement_from_phy2log(out, layers, experts, s.n_physical, s.n_ranks,
                                            phy2log, err, errlen);
    free(phy2log);
    r.seconds = seconds_since(&t0);
    if (rc == MR_EPLB_OK && result)
        rc = score(load, layers, experts, options, out, &r, err, errlen);
    if (rc != MR_EPLB_OK) {
        mr_eplb_placement_free(out);
        return rc;
    }
    if (result)
        *result = r;
    return MR_EPLB_OK;
}
