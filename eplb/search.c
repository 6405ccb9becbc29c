/*
 * One layer's placement under change, and the moves that lower its most
 * loaded rank:
 *   swap     a replica of the most loaded rank trades places with a lighter
 *            one of another rank;
 *   replica  an expert of the most loaded rank gets one more replica (its
 *            load there splits further), in a slot given up by an expert
 *            whose other replicas grow least for it.
 * Swaps alone keep the replica counts they start from; after a change of
 * load (migration) those are wrong, and replica moves put them right one
 * slot at a time.
 *
 * A move's gain is how far it lowers the most loaded of the ranks it
 * touches below the most loaded rank's load, which lets the search walk
 * through ranks tied at the top (the layer's largest load drops only when
 * the last of them comes down).  With a cost function (migration) moves
 * are ranked by gain per expert moved.
 */
#include <math.h>
#include <string.h>

#include "eplb/eplb_internal.h"

/* What a move that loads nothing new (it undoes an earlier one) counts as
 * when gains are divided by costs: cheap, not free, so it must still buy
 * balance. */
#define FREE_MOVE_COST 0.25

void mr_eplb_layer_carve(mr_eplb_layer *L, mr_eplb_arena *a, const mr_eplb_shape *s)
{
    L->s = s;
    int sortable = s->experts > s->n_ranks ? s->experts : s->n_ranks;
    MR_EPLB_TAKE(a, L->cnt, s->experts);
    MR_EPLB_TAKE(a, L->w, s->experts);
    MR_EPLB_TAKE(a, L->first, s->experts + 1);
    MR_EPLB_TAKE(a, L->slots, s->n_physical);
    MR_EPLB_TAKE(a, L->by_load, s->n_ranks);
    MR_EPLB_TAKE(a, L->sort, 2 * sortable);
    MR_EPLB_TAKE(a, L->donors, s->experts);
    MR_EPLB_TAKE(a, L->takers, s->experts + s->per_rank + 1);
    MR_EPLB_TAKE(a, L->key, s->experts);
    MR_EPLB_TAKE(a, L->top_w, s->per_rank);
    MR_EPLB_TAKE(a, L->stamp, s->n_ranks);
    mr_eplb_bins_carve(&L->bins, a, s->n_ranks, s->per_rank, s->experts);
    if (a->base)
        memset(L->stamp, 0, (size_t)s->n_ranks * sizeof *L->stamp);
    L->gen = 0;
    L->breadth = 0;
    L->cost = NULL;
    L->cost_ctx = NULL;
}

/* Each expert's slots, in slot order. */
static void index_slots(mr_eplb_layer *L)
{
    const mr_eplb_shape *s = L->s;
    const int32_t *item = L->bins.item;
    L->first[0] = 0;
    for (int e = 0; e < s->experts; e++)
        L->first[e + 1] = L->first[e] + L->cnt[e];
    int32_t *fill = L->donors; /* free until the next search */
    memcpy(fill, L->first, (size_t)s->experts * sizeof *fill);
    for (int i = 0; i < s->n_physical; i++)
        L->slots[fill[item[i]]++] = i;
}

/* Whether rank a comes before rank b in by_load: more loaded, or equally
 * loaded and lower. */
static bool ranks_before(const double *load, int32_t a, int32_t b)
{
    return load[a] > load[b] || (load[a] == load[b] && a < b);
}

/* Re-sort the ranks by load after a move: insertion, as a move changes
 * few ranks' loads. */
static void sort_ranks(mr_eplb_layer *L)
{
    const double *load = L->bins.load;
    int32_t *order = L->by_load;
    for (int i = 1; i < L->s->n_ranks; i++) {
        int32_t r = order[i];
        int j = i;
        while (j > 0 && ranks_before(load, r, order[j - 1])) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = r;
    }
}

/* After a swap only its two ranks' loads change: take both out and put
 * each back in its place, which gives the order sort_ranks would (the
 * order is total) with a pass of the rank ids alone. */
static void resort_pair(mr_eplb_layer *L, int32_t a, int32_t b)
{
    const double *load = L->bins.load;
    int32_t *order = L->by_load;
    int n = L->s->n_ranks, kept = 0;
    for (int i = 0; i < n; i++)
        if (order[i] != a && order[i] != b)
            order[kept++] = order[i];
    const int32_t put[2] = {a, b};
    for (int p = 0; p < 2; p++) {
        int i = kept++;
        for (; i > 0 && ranks_before(load, put[p], order[i - 1]); i--)
            order[i] = order[i - 1];
        order[i] = put[p];
    }
}

void mr_eplb_layer_index(mr_eplb_layer *L, const double *load, const int32_t *phy2log)
{
    const mr_eplb_shape *s = L->s;
    L->load = load;
    mr_eplb_count_replicas(phy2log, s->n_physical, s->experts, L->cnt);
    mr_eplb_replica_weights(load, L->cnt, s->experts, L->w);
    mr_eplb_bins_load(&L->bins, phy2log, L->w);
    index_slots(L);
    mr_eplb_sort_desc(L->bins.load, s->n_ranks, L->by_load, L->sort);
}

double mr_eplb_layer_max(const mr_eplb_layer *L)
{
    return L->bins.load[L->by_load[0]];
}

static int holds(const mr_eplb_layer *L, int rank, int32_t e)
{
    return L->bins.holds[(size_t)rank * L->s->experts + (size_t)e];
}

static void next_stamp(mr_eplb_layer *L)
{
    if (++L->gen == 0) {
        memset(L->stamp, 0, (size_t)L->s->n_ranks * sizeof *L->stamp);
        L->gen = 1;
    }
}

/* The gain of a move whose touched ranks (stamped) end at most at
 * `touched`. */
static double gain_of(const mr_eplb_layer *L, double touched)
{
    double top = mr_eplb_layer_max(L);
    return L->stamp[L->by_load[0]] == L->gen ? top - touched : 0;
}

/* The least gain, relative to the most loaded rank, a move must bring: in
 * a migration, less than this is not worth loading an expert for. */
#define LEAST_GAIN 1e-12
#define LEAST_MIGRATION_GAIN 1e-4

static void consider(mr_eplb_layer *L, mr_eplb_move mv, int budget, mr_eplb_move *best)
{
    double top = mr_eplb_layer_max(L);
    if (mv.gain <= top * (L->cost ? LEAST_MIGRATION_GAIN : LEAST_GAIN) ||
        mv.gain / FREE_MOVE_COST <= best->rate)
        return;
    mv.cost = L->cost ? L->cost(L, &mv, L->cost_ctx) : 1;
    if (mv.cost > budget)
        return;
    mv.rate = mv.gain / (mv.cost > 0 ? mv.cost : FREE_MOVE_COST);
    if (mv.rate > best->rate)
        *best = mv;
}

static void best_swap(mr_eplb_layer *L, int budget, mr_eplb_move *best)
{
    const mr_eplb_shape *s = L->s;
    const mr_eplb_bins *b = &L->bins;
    const double *w = L->w;
    double *top_w = L->top_w;
    int k = s->per_rank, m = L->by_load[0];
    double top = b->load[m], least_cost = L->cost ? FREE_MOVE_COST : 1;
    for (int a = 0; a < k; a++)
        top_w[a] = w[b->item[m * k + a]];
    /* A swap must gain more than this: the best rate at the least cost (a
     * power of two, so the product is exact). */
    double bar = best->rate * least_cost;
    /* Lightest ranks first: a swap with rank r gains at most half the gap,
     * so once that cannot beat the best, no heavier rank can. */
    for (int i = s->n_ranks - 1; i > 0; i--) {
        int r = L->by_load[i];
        double gap = top - b->load[r], light = b->load[r];
        if (gap / 2 <= bar)
            break;
        const int32_t *theirs = b->item + (size_t)r * k;
        for (int a = 0; a < k; a++) {
            if (holds(L, r, b->item[m * k + a]))
                continue;
            for (int j = 0; j < k; j++) {
                /* No test of d's sign or size: a swap that moves load the
                 * wrong way, or too much, gains nothing and fails the test
                 * on the gain, and this loop runs with no branch to guess. */
                double d = top_w[a] - w[theirs[j]];
                double gain = top - (top - d > light + d ? top - d : light + d);
                if (gain <= bar || holds(L, m, theirs[j]))
                    continue;
                mr_eplb_move mv = {
                    .kind = MR_EPLB_MOVE_SWAP, .slot = m * k + a, .other = r * k + j, .gain = gain};
                consider(L, mv, budget, best);
                bar = best->rate * least_cost;
            }
        }
    }
}

/* The largest load among the ranks touched when `slot` takes expert b:
 * its rank, and every rank holding its old expert or b. */
static double replica_touched(mr_eplb_layer *L, int slot, int32_t b)
{
    const mr_eplb_shape *s = L->s;
    int r = slot / s->per_rank;
    int32_t a = L->bins.item[slot];
    double wa = L->w[a], wb = L->w[b];
    double wa2 = L->load[a] / (L->cnt[a] - 1), wb2 = L->load[b] / (L->cnt[b] + 1);
    next_stamp(L);
    double max = 0;
    const int32_t *lists[3] = {L->slots + L->first[a], L->slots + L->first[b], &slot};
    int lens[3] = {L->cnt[a], L->cnt[b], 1};
    for (int li = 0; li < 3; li++)
        for (int t = 0; t < lens[li]; t++) {
            int q = lists[li][t] / s->per_rank;
            if (L->stamp[q] == L->gen)
                continue;
            L->stamp[q] = L->gen;
            int ha = holds(L, q, a), hb = holds(L, q, b), here = q == r;
            double load = L->bins.load[q] - ha * wa + (ha - here) * wa2 - hb * wb +
                          (hb + here) * wb2;
            max = load > max ? load : max;
        }
    return max;
}

/* The n entries of least key, ascending, into out, passing over those
 * keyed HUGE_VAL; returns how many. */
static int least(const double *key, int count, int n, int32_t *out)
{
    int got = 0;
    for (int e = 0; e < count; e++) {
        if (key[e] == HUGE_VAL || (got == n && key[e] >= key[out[got - 1]]))
            continue;
        int i = got < n ? got++ : n - 1;
        while (i > 0 && key[out[i - 1]] > key[e]) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = e;
    }
    return got;
}

static void try_slot(mr_eplb_layer *L, int slot, int n_takers, int budget, mr_eplb_move *best)
{
    int r = slot / L->s->per_rank;
    int32_t a = L->bins.item[slot];
    for (int t = 0; t < n_takers; t++) {
        int32_t b = L->takers[t];
        if (b == a || holds(L, r, b))
            continue;
        mr_eplb_move mv = {.kind = MR_EPLB_MOVE_REPLICA, .slot = slot, .other = b};
        mv.gain = gain_of(L, replica_touched(L, slot, b));
        consider(L, mv, budget, best);
    }
}

/* Splitting an expert of the most loaded rank further is what lowers it;
 * the slot comes from the experts whose other replicas grow least when
 * they give one up. */
static void best_replica(mr_eplb_layer *L, int budget, mr_eplb_move *best)
{
    const mr_eplb_shape *s = L->s;
    int k = s->per_rank, m = L->by_load[0];
    int n_takers = 0;
    for (int i = m * k; i < (m + 1) * k; i++)
        if (!mr_eplb_in_slots(L->takers, n_takers, L->bins.item[i]))
            L->takers[n_takers++] = L->bins.item[i];
    for (int e = 0; e < s->experts; e++)
        L->key[e] = L->cnt[e] > 1 ? L->load[e] / L->cnt[e] / (L->cnt[e] - 1) : HUGE_VAL;
    int n_donors = least(L->key, s->experts, L->breadth, L->donors);
    for (int d = 0; d < n_donors; d++)
        for (int t = L->first[L->donors[d]]; t < L->first[L->donors[d] + 1]; t++)
            try_slot(L, L->slots[t], n_takers, budget, best);
}

void mr_eplb_layer_best(mr_eplb_layer *L, int budget, mr_eplb_move *best)
{
    best_swap(L, budget, best);
    best_replica(L, budget, best);
}

static void give_slot(mr_eplb_layer *L, int slot, int32_t b)
{
    const mr_eplb_shape *s = L->s;
    mr_eplb_bins *bins = &L->bins;
    int r = slot / s->per_rank;
    int32_t a = bins->item[slot];
    double wa2 = L->load[a] / (L->cnt[a] - 1), wb2 = L->load[b] / (L->cnt[b] + 1);
    for (int t = L->first[a]; t < L->first[a + 1]; t++)
        bins->load[L->slots[t] / s->per_rank] += wa2 - L->w[a];
    for (int t = L->first[b]; t < L->first[b + 1]; t++)
        bins->load[L->slots[t] / s->per_rank] += wb2 - L->w[b];
    bins->load[r] += wb2 - wa2;
    bins->holds[(size_t)r * s->experts + (size_t)a]--;
    bins->holds[(size_t)r * s->experts + (size_t)b]++;
    bins->item[slot] = b;
    L->cnt[a]--;
    L->cnt[b]++;
    L->w[a] = wa2;
    L->w[b] = wb2;
    index_slots(L);
}

/* In expert e's list of slots, `from` becomes `to`. */
static void move_slot(mr_eplb_layer *L, int32_t e, int from, int to)
{
    for (int t = L->first[e]; t < L->first[e + 1]; t++)
        if (L->slots[t] == from)
            L->slots[t] = to;
}

void mr_eplb_layer_apply(mr_eplb_layer *L, const mr_eplb_move *mv)
{
    if (mv->kind == MR_EPLB_MOVE_SWAP) {
        int32_t x = L->bins.item[mv->slot], y = L->bins.item[mv->other];
        mr_eplb_bins_swap(&L->bins, mv->slot, mv->other);
        move_slot(L, x, mv->slot, mv->other);
        move_slot(L, y, mv->other, mv->slot);
        resort_pair(L, mv->slot / L->s->per_rank, mv->other / L->s->per_rank);
    } else {
        give_slot(L, mv->slot, mv->other);
        sort_ranks(L);
    }
}

int mr_eplb_layer_improve(mr_eplb_layer *L, int max_moves, double floor)
{
    int moves = 0;
    /* Within a hundredth of a percent of the floor there is nothing left
     * worth the time. */
    while (moves < max_moves && mr_eplb_layer_max(L) > floor * (1 + 1e-6)) {
        /* Swaps first: they are cheap to find, and re-replication is
         * looked for only when they run out. */
        mr_eplb_move best = {.kind = MR_EPLB_MOVE_NONE};
        best_swap(L, 1, &best);
        if (best.kind == MR_EPLB_MOVE_NONE)
            best_replica(L, 1, &best);
        if (best.kind == MR_EPLB_MOVE_NONE)
            break;
        mr_eplb_layer_apply(L, &best);
        moves++;
    }
    return moves;
}
