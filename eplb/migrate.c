/*
 * Migration-aware re-solve.  Moving an expert means copying its weights to
 * a rank (hundreds of MB for a large model), so a re-solve should not
 * reshuffle every rank for the last percent of balance.  Starting from the
 * placement the ranks hold, this applies one change at a time, in whichever
 * layer it lowers the largest rank load most per expert a rank must newly
 * load:
 *   - a swap or a re-replication from search.c (one or two experts moved);
 *   - recount: the layer's replica counts become the fresh solve's, each
 *     new replica taking a slot freed by an expert with too many, on the
 *     lightest rank that has one (as many experts moved as replicas added);
 *   - adopt: the layer takes the fresh solve's placement, its ranks and
 *     slots first matched to the current ones so that what can stays put.
 * Recounting first and polishing with swaps moves a small part of what a
 * fresh solve would, since most experts keep their replica counts.
 * It stops when the moves allowed are spent, when nothing helps, or when
 * balancedness is within 1% of the fresh solve's.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb_internal.h"

/* Stop when the balancedness is this close to the fresh solve's. */
#define GOOD_ENOUGH 0.991
/* Donors a re-replication is sought among: more than a fresh solve
 * tries, since after a drift the replicas worth taking back can be many. */
#define SEARCH_BREADTH 16

static int move_cost(const mr_eplb_layer *L, const mr_eplb_move *mv, void *ctx);

typedef struct {
    const mr_eplb_shape *s;
    const int32_t *orig;      /* [layers][n_physical]: what the ranks hold */
    int32_t *cur;             /* [layers][n_physical]: the placement being changed */
    int32_t *fresh;           /* [layers][n_physical]: the fresh solve, relabelled */
    int32_t *recount;         /* [layers][n_physical]: the current, recounted */
    double *cur_max, *fresh_max;
    int *moved, *fresh_cost;  /* [layers] */
    mr_eplb_move *best;       /* [layers] */
    int32_t *cnt, *target;    /* [experts] */
    double *w;                /* [experts] */
    int32_t *first, *slots;   /* each current expert's slots, while relabelling */
    double *rank_load;        /* [n_ranks] */
    double *overlap;          /* [n_ranks * n_ranks] */
    double *node_overlap;     /* [n_nodes * n_nodes] */
    int32_t *pairs;           /* [max(n_ranks * n_ranks, experts)] */
    mr_eplb_sort_entry *sort; /* [2 max(n_ranks * n_ranks, experts)] */
    int32_t *node_map, *rank_map, *side_a, *side_b, *taken; /* [n_ranks] */
    int32_t *row;             /* [n_physical] */
    int32_t *free_slots;      /* [n_physical] */
    bool *used;               /* [per_rank] */
    mr_eplb_layer layer;
} migrate_work;

static void carve(migrate_work *w, mr_eplb_arena *a, const mr_eplb_shape *s, int layers)
{
    size_t slots = (size_t)layers * (size_t)s->n_physical;
    size_t squares = (size_t)s->n_ranks * (size_t)s->n_ranks;
    size_t sorted = squares > (size_t)s->experts ? squares : (size_t)s->experts;
    MR_EPLB_TAKE(a, w->cur, slots);
    MR_EPLB_TAKE(a, w->fresh, slots);
    MR_EPLB_TAKE(a, w->recount, slots);
    MR_EPLB_TAKE(a, w->cur_max, layers);
    MR_EPLB_TAKE(a, w->fresh_max, layers);
    MR_EPLB_TAKE(a, w->moved, layers);
    MR_EPLB_TAKE(a, w->fresh_cost, layers);
    MR_EPLB_TAKE(a, w->best, layers);
    MR_EPLB_TAKE(a, w->cnt, s->experts);
    MR_EPLB_TAKE(a, w->target, s->experts);
    MR_EPLB_TAKE(a, w->w, s->experts);
    MR_EPLB_TAKE(a, w->first, s->experts + 1);
    MR_EPLB_TAKE(a, w->slots, s->n_physical);
    MR_EPLB_TAKE(a, w->rank_load, s->n_ranks);
    MR_EPLB_TAKE(a, w->overlap, squares);
    MR_EPLB_TAKE(a, w->node_overlap, (size_t)s->n_nodes * (size_t)s->n_nodes);
    MR_EPLB_TAKE(a, w->pairs, sorted);
    MR_EPLB_TAKE(a, w->sort, 2 * sorted);
    MR_EPLB_TAKE(a, w->node_map, s->n_ranks);
    MR_EPLB_TAKE(a, w->rank_map, s->n_ranks);
    MR_EPLB_TAKE(a, w->side_a, s->n_ranks);
    MR_EPLB_TAKE(a, w->side_b, s->n_ranks);
    MR_EPLB_TAKE(a, w->taken, s->n_ranks);
    MR_EPLB_TAKE(a, w->row, s->n_physical);
    MR_EPLB_TAKE(a, w->free_slots, s->n_physical);
    MR_EPLB_TAKE(a, w->used, s->per_rank);
    mr_eplb_layer_carve(&w->layer, a, s);
    w->layer.breadth = SEARCH_BREADTH;
    w->layer.cost = move_cost;
}

/* Each expert's slots in a layer, in slot order. */
static void index_slots(migrate_work *w, const int32_t *row)
{
    const mr_eplb_shape *s = w->s;
    mr_eplb_count_replicas(row, s->n_physical, s->experts, w->cnt);
    w->first[0] = 0;
    for (int e = 0; e < s->experts; e++)
        w->first[e + 1] = w->first[e] + w->cnt[e];
    for (int e = 0; e < s->experts; e++)
        w->cnt[e] = 0;
    for (int i = 0; i < s->n_physical; i++)
        w->slots[w->first[row[i]] + w->cnt[row[i]]++] = i;
}

/* ------------------------------------------------------------------------
 * Matching the fresh solve to the current placement
 * ------------------------------------------------------------------------ */

/* map[i] = j for the pairs of most score first (ties: lower i, then j),
 * i and j each used once; with sides, only i and j of the same side. */
static void greedy_match(migrate_work *w, const double *score, int n, const int32_t *side_a,
                         const int32_t *side_b, int32_t *map)
{
    mr_eplb_sort_desc(score, n * n, w->pairs, w->sort);
    for (int i = 0; i < n; i++) {
        map[i] = -1;
        w->taken[i] = 0;
    }
    for (int p = 0; p < n * n; p++) {
        int i = w->pairs[p] / n, j = w->pairs[p] % n;
        if (map[i] < 0 && !w->taken[j] && (!side_a || side_a[i] == side_b[j])) {
            map[i] = j;
            w->taken[j] = 1;
        }
    }
}

/* Fresh rank `from` into the slots of current rank `to`: experts both hold
 * keep their current slots. */
static void align(migrate_work *w, const int32_t *current, const int32_t *fresh, int32_t *out)
{
    int k = w->s->per_rank;
    for (int j = 0; j < k; j++)
        w->used[j] = false;
    for (int i = 0; i < k; i++) {
        out[i] = -1;
        for (int j = 0; j < k && out[i] < 0; j++)
            if (!w->used[j] && fresh[j] == current[i]) {
                out[i] = fresh[j];
                w->used[j] = true;
            }
    }
    for (int i = 0, j = 0; i < k; i++) {
        while (out[i] < 0 && w->used[j])
            j++;
        if (out[i] < 0) {
            out[i] = fresh[j];
            w->used[j] = true;
        }
    }
}

/* Rank labels of a solution are arbitrary: give each fresh rank (nodes
 * first, so a hierarchical solution stays node by node) the current rank
 * it shares most experts with. */
static void relabel(migrate_work *w, const int32_t *orig, int32_t *fresh)
{
    const mr_eplb_shape *s = w->s;
    int R = s->n_ranks, N = s->n_nodes, k = s->per_rank, per_node = R / N;
    index_slots(w, orig);
    memset(w->overlap, 0, (size_t)R * (size_t)R * sizeof *w->overlap);
    for (int i = 0; i < s->n_physical; i++) {
        int32_t e = fresh[i];
        int rf = i / k, last = -1;
        if (mr_eplb_in_slots(fresh + (size_t)rf * k, i - rf * k, e))
            continue; /* a second replica on the rank shares nothing more */
        for (int t = w->first[e]; t < w->first[e + 1]; t++) {
            int rc = w->slots[t] / k;
            if (rc != last)
                w->overlap[(size_t)rf * R + (size_t)rc] += 1;
            last = rc;
        }
    }
    memset(w->node_overlap, 0, (size_t)N * (size_t)N * sizeof *w->node_overlap);
    for (int rf = 0; rf < R; rf++)
        for (int rc = 0; rc < R; rc++)
            w->node_overlap[(rf / per_node) * N + rc / per_node] += w->overlap[rf * R + rc];
    greedy_match(w, w->node_overlap, N, NULL, NULL, w->node_map);
    for (int r = 0; r < R; r++) {
        w->side_a[r] = w->node_map[r / per_node];
        w->side_b[r] = r / per_node;
    }
    greedy_match(w, w->overlap, R, w->side_a, w->side_b, w->rank_map);
    for (int rf = 0; rf < R; rf++) {
        int rc = w->rank_map[rf];
        align(w, orig + (size_t)rc * k, fresh + (size_t)rf * k, w->row + (size_t)rc * k);
    }
    memcpy(fresh, w->row, (size_t)s->n_physical * sizeof *fresh);
}

/* ------------------------------------------------------------------------
 * Moves
 * ------------------------------------------------------------------------ */

/* The change in experts moved when `rank` gains expert `in` (not held) and
 * gives up one replica of `out`. */
static int trade_cost(const mr_eplb_layer *L, const int32_t *orig, int rank, int32_t in,
                      int32_t out)
{
    int k = L->s->per_rank;
    const int32_t *held = orig + (size_t)rank * k;
    int copies = L->bins.holds[(size_t)rank * L->s->experts + (size_t)out];
    return !mr_eplb_in_slots(held, k, in) - (copies == 1 && !mr_eplb_in_slots(held, k, out));
}

static int move_cost(const mr_eplb_layer *L, const mr_eplb_move *mv, void *ctx)
{
    const int32_t *orig = ctx;
    const int32_t *item = L->bins.item;
    int k = L->s->per_rank, r = mv->slot / k;
    if (mv->kind == MR_EPLB_MOVE_REPLICA)
        return trade_cost(L, orig, r, mv->other, item[mv->slot]);
    int r2 = mv->other / k;
    return trade_cost(L, orig, r2, item[mv->slot], item[mv->other]) +
           trade_cost(L, orig, r, item[mv->other], item[mv->slot]);
}

/* The recount plan of layer l into w->recount: replica counts as in the
 * fresh solve, surplus replicas given up on the most loaded ranks, new ones
 * (heaviest first) put in the freed slot of the least loaded rank that does
 * not hold the expert yet. */
static void plan_recount(migrate_work *w, const double *load, int l)
{
    const mr_eplb_shape *s = w->s;
    int k = s->per_rank, n_free = 0;
    const int32_t *cur = w->cur + (size_t)l * s->n_physical;
    int32_t *row = w->recount + (size_t)l * s->n_physical;
    double *rank_load = w->rank_load;
    index_slots(w, cur);
    mr_eplb_count_replicas(w->fresh + (size_t)l * s->n_physical, s->n_physical, s->experts,
                           w->target);
    mr_eplb_replica_weights(load, w->target, s->experts, w->w);
    memcpy(row, cur, (size_t)s->n_physical * sizeof *row);
    for (int r = 0; r < s->n_ranks; r++) {
        rank_load[r] = 0;
        for (int i = r * k; i < (r + 1) * k; i++)
            rank_load[r] += w->w[cur[i]];
    }
    for (int e = 0; e < s->experts; e++)
        for (int give = w->cnt[e] - w->target[e]; give > 0; give--) {
            int freed = -1;
            for (int t = w->first[e]; t < w->first[e + 1]; t++) {
                int slot = w->slots[t];
                if (row[slot] == e && (freed < 0 || rank_load[slot / k] > rank_load[freed / k]))
                    freed = slot;
            }
            row[freed] = -1;
            rank_load[freed / k] -= w->w[e];
            w->free_slots[n_free++] = freed;
        }
    mr_eplb_sort_desc(w->w, s->experts, w->pairs, w->sort);
    for (int i = 0; i < s->experts; i++) {
        int32_t e = w->pairs[i];
        for (int take = w->target[e] - w->cnt[e]; take > 0; take--) {
            int chosen = -1;
            bool chosen_holds = true;
            for (int f = 0; f < n_free; f++) {
                int slot = w->free_slots[f];
                if (row[slot] >= 0)
                    continue;
                bool held = mr_eplb_in_slots(row + (size_t)(slot / k) * k, k, e);
                if (chosen < 0 || held < chosen_holds ||
                    (held == chosen_holds && rank_load[slot / k] < rank_load[chosen / k])) {
                    chosen = slot;
                    chosen_holds = held;
                }
            }
            row[chosen] = e;
            rank_load[chosen / k] += w->w[e];
        }
    }
}

/* Replacing layer l with a plan (`plan`: 0 fresh, 1 recount), as a move. */
static mr_eplb_move plan_move(migrate_work *w, const double *load, int l, int plan, double max)
{
    const mr_eplb_shape *s = w->s;
    const int32_t *row = (plan ? w->recount : w->fresh) + (size_t)l * s->n_physical;
    mr_eplb_count_replicas(row, s->n_physical, s->experts, w->cnt);
    double after = mr_eplb_layer_rank_loads(row, w->cnt, load + (size_t)l * s->experts,
                                            s->n_physical, s->n_ranks, w->rank_load);
    int cost = mr_eplb_layer_moves(w->orig + (size_t)l * s->n_physical, row, s->n_physical,
                                   s->per_rank) -
               w->moved[l];
    mr_eplb_move mv = {.kind = MR_EPLB_MOVE_LAYER, .slot = plan, .gain = max - after, .cost = cost};
    mv.rate = mv.gain / (cost > 1 ? cost : 1);
    return mv;
}

/* Layer l's best move within budget; sets its cur_max. */
static mr_eplb_move best_move(migrate_work *w, const double *load, int l, int budget)
{
    const mr_eplb_shape *s = w->s;
    mr_eplb_layer *L = &w->layer;
    plan_recount(w, load + (size_t)l * s->experts, l);
    L->cost_ctx = (void *)(w->orig + (size_t)l * s->n_physical);
    mr_eplb_layer_index(L, load + (size_t)l * s->experts, w->cur + (size_t)l * s->n_physical);
    double max = mr_eplb_layer_max(L);
    w->cur_max[l] = max;
    mr_eplb_move best = {.kind = MR_EPLB_MOVE_NONE};
    for (int plan = 0; plan < 2; plan++) {
        mr_eplb_move mv = plan_move(w, load, l, plan, max);
        if (mv.gain > max * 1e-9 && mv.cost <= budget && mv.rate > best.rate)
            best = mv;
    }
    mr_eplb_layer_best(L, budget, &best);
    return best;
}

static void apply(migrate_work *w, int l, const mr_eplb_move *mv)
{
    int32_t *row = w->cur + (size_t)l * w->s->n_physical;
    if (mv->kind == MR_EPLB_MOVE_LAYER) {
        memcpy(row, (mv->slot ? w->recount : w->fresh) + (size_t)l * w->s->n_physical,
               (size_t)w->s->n_physical * sizeof *row);
    } else if (mv->kind == MR_EPLB_MOVE_SWAP) {
        int32_t t = row[mv->slot];
        row[mv->slot] = row[mv->other];
        row[mv->other] = t;
    } else {
        row[mv->slot] = mv->other;
    }
    w->moved[l] += mv->cost;
}

/* The fresh solve, matched to the current ranks, and what each layer's
 * largest rank load is now and would be after it. */
static void prepare(migrate_work *w, const double *load, int layers)
{
    const mr_eplb_shape *s = w->s;
    for (int l = 0; l < layers; l++) {
        const int32_t *orig = w->orig + (size_t)l * s->n_physical;
        int32_t *fresh = w->fresh + (size_t)l * s->n_physical;
        relabel(w, orig, fresh);
        w->fresh_cost[l] = mr_eplb_layer_moves(orig, fresh, s->n_physical, s->per_rank);
        w->moved[l] = 0;
        mr_eplb_count_replicas(fresh, s->n_physical, s->experts, w->cnt);
        w->fresh_max[l] = mr_eplb_layer_rank_loads(fresh, w->cnt, load + (size_t)l * s->experts,
                                                   s->n_physical, s->n_ranks, w->rank_load);
    }
}

int mr_eplb_migrate(const mr_eplb_shape *s, const double *load, int layers,
                    const int32_t *current, int max_moves, int32_t *target, char *err,
                    size_t errlen)
{
    migrate_work w = {.s = s, .orig = current};
    mr_eplb_arena a = {0};
    carve(&w, &a, s, layers);
    int rc = mr_eplb_arena_alloc(&a, err, errlen);
    if (rc != MR_EPLB_OK)
        return rc;
    carve(&w, &a, s, layers);
    size_t slots = (size_t)layers * (size_t)s->n_physical;
    memcpy(w.fresh, target, slots * sizeof *target);
    memcpy(w.cur, current, slots * sizeof *current);
    prepare(&w, load, layers);
    int budget = max_moves < 0 ? INT_MAX : max_moves;
    double sum_cur = 0, sum_fresh = 0;
    for (int l = 0; l < layers; l++) {
        w.best[l] = best_move(&w, load, l, budget);
        sum_cur += w.cur_max[l];
        sum_fresh += w.fresh_max[l];
    }
    /* Every move lowers a layer's maximum, so this ends; the cap is a
     * guard against crawling by rounding-sized gains. */
    for (size_t step = 0; step < 4 * slots && sum_cur * GOOD_ENOUGH > sum_fresh; step++) {
        int l = -1;
        for (int i = 0; i < layers; i++)
            if (w.best[i].kind != MR_EPLB_MOVE_NONE && (l < 0 || w.best[i].rate > w.best[l].rate))
                l = i;
        if (l < 0)
            break;
        if (w.best[l].cost > budget) {
            w.best[l] = best_move(&w, load, l, budget);
            continue;
        }
        apply(&w, l, &w.best[l]);
        budget -= w.best[l].cost;
        double before = w.cur_max[l];
        w.best[l] = best_move(&w, load, l, budget);
        sum_cur += w.cur_max[l] - before;
    }
    memcpy(target, w.cur, slots * sizeof *target);
    free(a.base);
    return MR_EPLB_OK;
}
