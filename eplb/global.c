/*
 * moerun's global solver, one layer at a time, ranks taken as equals:
 *   1. replicate, two ways: by per-replica load (each redundant slot to the
 *      expert whose replicas are heaviest, which minimises the heaviest
 *      replica), and by splitting to a target size (every expert into
 *      replicas of at most 3/4 of the mean rank load, the slots left over
 *      splitting the experts that had one replica, heaviest first);
 *   2. pack each: replicas heaviest first, each to the lightest rank with
 *      room, never a second replica of an expert on one rank while another
 *      rank has room (it would serve nothing the first does not); keep the
 *      packing whose most loaded rank is least;
 *   3. improve it: while it lowers the most loaded rank, swap one of its
 *      replicas with a lighter one of another rank, or split one of its
 *      experts further with a slot of an expert that can spare one
 *      (search.c).
 * Why two replications: with few slots per rank, the per-replica rule cuts
 * the hottest expert into many replicas of about half a rank's load, two of
 * which then share a rank; replicas of nearly a rank's load, each topped up
 * with cold experts, pack better.  With many slots per rank the first rule
 * packs as well and is kept.  Replication by per-replica load and step 2
 * without the spreading are DeepSeek's global policy.
 */
#include <math.h>
#include <string.h>

#include "eplb/eplb_internal.h"

/* Donors a replica move is sought among (search.c). */
#define SEARCH_BREADTH 4

/* Step 1's target replica size, over the mean rank load: a replica of
 * this size leaves a quarter of a rank for the cold experts that share it.
 * (0.6 to 0.9 all do about as well; step 3 makes up the difference.) */
#define SPLIT_SIZE 0.75

typedef struct {
    int32_t *cnt;             /* [experts] */
    double *w;                /* [experts]: load per replica */
    int32_t *by_weight;       /* [experts] */
    int32_t *items;           /* [n_physical]: replicas, heaviest first */
    mr_eplb_sort_entry *sort; /* [2 experts] */
    mr_eplb_heap_entry *heap; /* [experts] */
    mr_eplb_layer layer;
} global_work;

static void carve(void *work, mr_eplb_arena *a, const mr_eplb_shape *s)
{
    global_work *w = work;
    MR_EPLB_TAKE(a, w->cnt, s->experts);
    MR_EPLB_TAKE(a, w->w, s->experts);
    MR_EPLB_TAKE(a, w->by_weight, s->experts);
    MR_EPLB_TAKE(a, w->items, s->n_physical);
    MR_EPLB_TAKE(a, w->sort, 2 * s->experts);
    MR_EPLB_TAKE(a, w->heap, s->experts);
    mr_eplb_layer_carve(&w->layer, a, s);
    w->layer.breadth = SEARCH_BREADTH;
}

/* Step 1's split to replicas of at most tau; false when that takes more
 * slots than there are. */
static bool split_to(global_work *w, const mr_eplb_shape *s, const double *load, double tau)
{
    int used = 0;
    for (int e = 0; e < s->experts; e++) {
        double parts = ceil(load[e] / tau);
        if (parts > s->n_physical)
            return false;
        w->cnt[e] = parts > 1 ? (int32_t)parts : 1;
        used += w->cnt[e];
        if (used > s->n_physical)
            return false;
    }
    /* The spare slots go to experts that were not split (all of them when
     * every one was). */
    mr_eplb_heap h = {w->heap, 0};
    for (int pass = 0; pass < 2 && h.n == 0; pass++)
        for (int e = 0; e < s->experts; e++)
            if (w->cnt[e] == 1 || pass == 1)
                h.e[h.n++] = (mr_eplb_heap_entry){load[e] / w->cnt[e], e};
    mr_eplb_heap_build(&h);
    for (; used < s->n_physical; used++) {
        int32_t e = h.e[0].id;
        h.e[0].key = load[e] / ++w->cnt[e];
        mr_eplb_heap_sift_top(&h);
    }
    return true;
}

/* Step 2 for the replica counts in w->cnt; returns the most loaded rank's
 * load. */
static double pack(global_work *w, const mr_eplb_shape *s, const double *load)
{
    mr_eplb_replica_weights(load, w->cnt, s->experts, w->w);
    mr_eplb_sort_desc(w->w, s->experts, w->by_weight, w->sort);
    int n = 0;
    for (int i = 0; i < s->experts; i++)
        for (int c = 0; c < w->cnt[w->by_weight[i]]; c++)
            w->items[n++] = w->by_weight[i];
    mr_eplb_bins *b = &w->layer.bins;
    mr_eplb_bins_clear(b, w->w);
    mr_eplb_bins_pack(b, w->items, n, true);
    return b->load[mr_eplb_bins_max(b)];
}

static void solve_layer(void *work, const mr_eplb_shape *s, const double *load,
                        int32_t *phy2log)
{
    global_work *w = work;
    size_t bytes = (size_t)s->n_physical * sizeof *phy2log;
    mr_eplb_replicate(load, s->experts, s->n_physical, w->cnt, NULL, w->heap);
    double total = 0, floor = 0;
    for (int e = 0; e < s->experts; e++) {
        total += load[e];
        floor = load[e] / w->cnt[e] > floor ? load[e] / w->cnt[e] : floor;
    }
    double mean = total / s->n_ranks;
    floor = mean > floor ? mean : floor;
    double best = pack(w, s, load);
    memcpy(phy2log, w->layer.bins.item, bytes);
    if (mean > 0 && split_to(w, s, load, SPLIT_SIZE * mean) && pack(w, s, load) < best)
        memcpy(phy2log, w->layer.bins.item, bytes);
    mr_eplb_layer_index(&w->layer, load, phy2log);
    mr_eplb_layer_improve(&w->layer, 2 * s->n_ranks, floor);
    memcpy(phy2log, w->layer.bins.item, bytes);
}

int mr_eplb_solve_global(const mr_eplb_shape *s, const double *load, int layers,
                         int32_t *phy2log, char *err, size_t errlen)
{
    global_work w;
    return mr_eplb_each_layer(s, load, layers, phy2log, &w, carve, solve_layer, err, errlen);
}
