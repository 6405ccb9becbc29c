/*
 * How well a placement balances a load: vLLM's balancedness (sum of mean
 * rank loads over sum of max rank loads, so a layer counts by its size),
 * the worst layer's max/mean, and the best balancedness the slot count
 * allows, for a gap to report against.
 */
#include <stdlib.h>

#include "eplb/eplb_internal.h"

double mr_eplb_layer_rank_loads(const int32_t *phy2log, const int32_t *logcnt,
                                const double *load, int n_physical, int n_ranks,
                                double *rank_load)
{
    int per_rank = n_physical / n_ranks;
    double max = 0;
    for (int r = 0; r < n_ranks; r++) {
        double sum = 0;
        for (int s = r * per_rank; s < (r + 1) * per_rank; s++)
            sum += load[phy2log[s]] / logcnt[phy2log[s]];
        rank_load[r] = sum;
        max = sum > max ? sum : max;
    }
    return max;
}

void mr_eplb_rank_loads(const mr_eplb_placement *p, const double *load, int layer,
                        double *rank_load)
{
    mr_eplb_layer_rank_loads(p->phy2log + (size_t)layer * p->n_physical,
                             p->logcnt + (size_t)layer * p->n_logical,
                             load + (size_t)layer * p->n_logical, p->n_physical, p->n_ranks,
                             rank_load);
}

typedef struct {
    double *rank_load;        /* [n_ranks] */
    int32_t *cnt, *ids;       /* [experts] */
    double *least;            /* [experts] */
    mr_eplb_heap_entry *heap; /* [experts] */
    mr_eplb_sort_entry *sort; /* [2 experts] */
} score_work;

/* The least any rank's largest load can be, the largest of:
 *   - the mean;
 *   - the heaviest replica when the slots are handed out to make it as
 *     light as can be (replication by per-replica load);
 *   - that replica plus the other slots of its rank at their lightest: a
 *     replica of expert e weighs at least load / (spare slots + 1), and one
 *     expert fills at most that many of the rank's other slots. */
static double layer_floor(score_work *w, const double *load, int experts, int n_physical,
                          int n_ranks)
{
    int others = n_physical / n_ranks - 1, most = n_physical - experts + 1;
    double total = 0, replica = 0, rest = 0;
    for (int e = 0; e < experts; e++)
        total += load[e];
    mr_eplb_replicate(load, experts, n_physical, w->cnt, NULL, w->heap);
    for (int e = 0; e < experts; e++) {
        replica = load[e] / w->cnt[e] > replica ? load[e] / w->cnt[e] : replica;
        w->least[e] = load[e] / most;
    }
    mr_eplb_sort_desc(w->least, experts, w->ids, w->sort);
    for (int i = experts - 1; i >= 0 && others > 0; i--) {
        int take = others < most ? others : most;
        rest += take * w->least[w->ids[i]];
        others -= take;
    }
    double floor = replica + rest;
    return total / n_ranks > floor ? total / n_ranks : floor;
}

static double ratio_or_one(double num, double den)
{
    return den > 0 ? num / den : 1.0;
}

int mr_eplb_evaluate(const mr_eplb_placement *p, const double *load, mr_eplb_score *out,
                     char *err, size_t errlen)
{
    score_work w;
    mr_eplb_arena a = {0};
    for (int pass = 0; pass < 2; pass++) {
        MR_EPLB_TAKE(&a, w.rank_load, p->n_ranks);
        MR_EPLB_TAKE(&a, w.cnt, p->n_logical);
        MR_EPLB_TAKE(&a, w.ids, p->n_logical);
        MR_EPLB_TAKE(&a, w.least, p->n_logical);
        MR_EPLB_TAKE(&a, w.heap, p->n_logical);
        MR_EPLB_TAKE(&a, w.sort, 2 * p->n_logical);
        if (pass == 0 && mr_eplb_arena_alloc(&a, err, errlen) != MR_EPLB_OK)
            return MR_EPLB_ENOMEM;
    }
    double sum_mean = 0, sum_max = 0, sum_floor = 0, worst = 1;
    for (int l = 0; l < p->n_layers; l++) {
        const double *layer_load = load + (size_t)l * p->n_logical;
        double max = mr_eplb_layer_rank_loads(p->phy2log + (size_t)l * p->n_physical,
                                              p->logcnt + (size_t)l * p->n_logical,
                                              layer_load, p->n_physical, p->n_ranks,
                                              w.rank_load);
        double total = 0;
        for (int r = 0; r < p->n_ranks; r++)
            total += w.rank_load[r];
        double mean = total / p->n_ranks;
        sum_mean += mean;
        sum_max += max;
        sum_floor += layer_floor(&w, layer_load, p->n_logical, p->n_physical, p->n_ranks);
        double ratio = ratio_or_one(max, mean);
        worst = ratio > worst ? ratio : worst;
    }
    out->balancedness = ratio_or_one(sum_mean, sum_max);
    out->max_over_mean = worst;
    out->bound = ratio_or_one(sum_mean, sum_floor);
    free(a.base);
    return MR_EPLB_OK;
}

int mr_eplb_group_locality(const mr_eplb_placement *p, const double *load, int n_nodes,
                           int n_groups, double *out, char *err, size_t errlen)
{
    n_nodes = n_nodes > 1 ? n_nodes : 1;
    n_groups = n_groups > 1 ? n_groups : 1;
    double *served = malloc((size_t)n_groups * (size_t)n_nodes * sizeof *served);
    if (!served)
        return MR_EPLB_OOM(err, errlen);
    int group_size = p->n_logical / n_groups;
    int slots_per_node = p->n_physical / n_nodes;
    double home = 0, total = 0;
    for (int l = 0; l < p->n_layers; l++) {
        const int32_t *phy2log = p->phy2log + (size_t)l * p->n_physical;
        const int32_t *cnt = p->logcnt + (size_t)l * p->n_logical;
        const double *layer_load = load + (size_t)l * p->n_logical;
        for (int i = 0; i < n_groups * n_nodes; i++)
            served[i] = 0;
        for (int s = 0; s < p->n_physical; s++) {
            int32_t e = phy2log[s];
            double share = layer_load[e] / cnt[e];
            served[(size_t)(e / group_size) * n_nodes + (size_t)(s / slots_per_node)] += share;
            total += share;
        }
        for (int g = 0; g < n_groups; g++) {
            double most = 0;
            for (int n = 0; n < n_nodes; n++)
                most = served[g * n_nodes + n] > most ? served[g * n_nodes + n] : most;
            home += most;
        }
    }
    free(served);
    *out = ratio_or_one(home, total);
    return MR_EPLB_OK;
}
