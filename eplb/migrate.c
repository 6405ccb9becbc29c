/*
 * Migration-aware re-solve.  Moving an expert means copying its weights to
 * a rank (hundreds of MB for a large model), so a re-solve should not
 * reshuffle every rank for the last percent of balance.  The moves allowed
 * go where they buy the most: each layer gets a few ways to improve, each
 * a curve of (experts moved, largest rank load), and the budget is spent
 * across all layers on the steepest stretch of any curve first.
 *   1. Per layer, three ways:
 *      - walk: from the placement the ranks hold, the local search of
 *        search.c one move at a time (a swap, two experts moved; or a
 *        re-replication, one: a slot of an expert now cold goes to one
 *        now hot on the most loaded rank), each the most gain per expert
 *        moved; every step is a point of the curve;
 *      - recount, then walk: the replica counts become the fresh solve's
 *        (each new replica in a slot freed by an expert with too many, on
 *        the lightest rank that has one), then the walk from there;
 *      - adopt: the fresh solve, its ranks and slots first matched to the
 *        current ones so that what can stays put (one point).
 *      A walk stops at the fresh solve's largest load, at the moves the
 *      fresh solve would take, or when nothing helps.
 *   2. Of a layer's points only those cheaper than every better one count,
 *      and of those the lower convex hull: its stretches give the most
 *      balance per move in order.
 *   3. Across layers, the stretch with the most gain per move is taken
 *      while the budget allows (a stretch that does not fit gives way to
 *      the best point of the layer that does), until balancedness is within
 *      1% of the fresh solve's.
 * A walk ranks moves by how far they lower the most loaded of the ranks
 * they touch, so it passes through ranks tied at the top, where no single
 * move lowers the layer's largest load; the curve records that load, so
 * such a passage is paid for only when it ends lower.
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

/* Where a point of a layer's curve starts from. */
enum { FROM_CURRENT, FROM_RECOUNT, FROM_FRESH, N_STARTS };

/* A point of a layer's curve: the start and how many of its walk's moves. */
typedef struct {
    int cost;   /* experts moved in all, against what the ranks hold */
    double max; /* the layer's largest rank load */
    int start, steps;
} point;

/* One move of a walk, enough to replay it on a layer's phy2log. */
typedef struct {
    mr_eplb_move_kind kind;
    int32_t slot, other;
} step;

typedef struct {
    const mr_eplb_shape *s;
    const int32_t *orig;      /* [layers][n_physical]: what the ranks hold */
    int32_t *fresh;           /* [layers][n_physical]: the fresh solve, relabelled */
    int32_t *recount;         /* [layers][n_physical]: the current, recounted */
    double *fresh_max;        /* [layers] */
    int *fresh_cost;          /* [layers] */
    int max_steps;            /* a walk's length at most */
    step *walks;              /* [layers][2][max_steps] */
    int max_points;           /* a layer's points at most */
    point *points;            /* [layers][max_points] */
    int *n_points, *n_hull, *at; /* [layers] */
    bool *done;               /* [layers] */
    int32_t *hull;            /* [layers][max_points]: indices into the points */
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
    w->max_steps = 2 * s->n_physical;
    w->max_points = 2 * (w->max_steps + 1) + 1;
    size_t points = (size_t)layers * (size_t)w->max_points;
    MR_EPLB_TAKE(a, w->fresh, slots);
    MR_EPLB_TAKE(a, w->recount, slots);
    MR_EPLB_TAKE(a, w->fresh_max, layers);
    MR_EPLB_TAKE(a, w->fresh_cost, layers);
    MR_EPLB_TAKE(a, w->walks, (size_t)layers * 2 * (size_t)w->max_steps);
    MR_EPLB_TAKE(a, w->points, points);
    MR_EPLB_TAKE(a, w->n_points, layers);
    MR_EPLB_TAKE(a, w->n_hull, layers);
    MR_EPLB_TAKE(a, w->at, layers);
    MR_EPLB_TAKE(a, w->done, layers);
    MR_EPLB_TAKE(a, w->hull, points);
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
    const int32_t *cur = w->orig + (size_t)l * s->n_physical;
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

/* ------------------------------------------------------------------------
 * Curves and the budget
 * ------------------------------------------------------------------------ */

static void add_point(migrate_work *w, int l, int cost, double max, int start, int steps)
{
    point *p = w->points + (size_t)l * w->max_points + w->n_points[l]++;
    *p = (point){.cost = cost, .max = max, .start = start, .steps = steps};
}

/* Layer l's walk from `row` (start FROM_CURRENT or FROM_RECOUNT), its
 * points added, while it costs at most `cap` experts moved. */
static void walk(migrate_work *w, const double *load, int l, int start, const int32_t *row,
                 int cap)
{
    const mr_eplb_shape *s = w->s;
    mr_eplb_layer *L = &w->layer;
    const int32_t *orig = w->orig + (size_t)l * s->n_physical;
    step *steps = w->walks + ((size_t)l * 2 + (size_t)start) * (size_t)w->max_steps;
    L->cost_ctx = (void *)orig;
    mr_eplb_layer_index(L, load, row);
    int cost = mr_eplb_layer_moves(orig, row, s->n_physical, s->per_rank);
    add_point(w, l, cost, mr_eplb_layer_max(L), start, 0);
    for (int n = 0; n < w->max_steps && cost < cap && mr_eplb_layer_max(L) > w->fresh_max[l];
         n++) {
        mr_eplb_move best = {.kind = MR_EPLB_MOVE_NONE};
        mr_eplb_layer_best(L, cap - cost, &best);
        if (best.kind == MR_EPLB_MOVE_NONE)
            break;
        steps[n] = (step){best.kind, best.slot, best.other};
        mr_eplb_layer_apply(L, &best);
        cost += best.cost;
        add_point(w, l, cost, mr_eplb_layer_max(L), start, n + 1);
    }
}

static int by_cost(const void *pa, const void *pb)
{
    const point *a = pa, *b = pb;
    if (a->cost != b->cost)
        return a->cost < b->cost ? -1 : 1;
    if (a->max != b->max)
        return a->max < b->max ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return (a->steps > b->steps) - (a->steps < b->steps);
}

/* Layer l's points cut to those cheaper than every better one (in order
 * of cost), and the lower convex hull of those into w->hull. */
static void hull_of(migrate_work *w, int l)
{
    point *p = w->points + (size_t)l * w->max_points;
    int32_t *h = w->hull + (size_t)l * w->max_points;
    qsort(p, (size_t)w->n_points[l], sizeof *p, by_cost);
    int kept = 0;
    for (int i = 0; i < w->n_points[l]; i++)
        if (kept == 0 || p[i].max < p[kept - 1].max)
            p[kept++] = p[i];
    w->n_points[l] = kept;
    int n = 0;
    for (int i = 0; i < kept; i++) {
        /* The last vertex goes while the stretch to it is no steeper than
         * the one past it to this point. */
        while (n >= 2) {
            const point *a = &p[h[n - 2]], *b = &p[h[n - 1]];
            if ((a->max - b->max) * (double)(p[i].cost - a->cost) >
                (a->max - p[i].max) * (double)(b->cost - a->cost))
                break;
            n--;
        }
        h[n++] = i;
    }
    w->n_hull[l] = n;
    w->at[l] = 0;
    w->done[l] = false;
}

/* The point layer l is at. */
static const point *at_point(const migrate_work *w, int l)
{
    return w->points + (size_t)l * w->max_points + w->hull[(size_t)l * w->max_points + w->at[l]];
}

/* Layer l moves on to its best point within `budget` more moves (not on
 * the hull: it is the layer's last step). */
static void best_within(migrate_work *w, int l, int budget)
{
    const point *p = w->points + (size_t)l * w->max_points, *now = at_point(w, l);
    int best = -1;
    for (int i = 0; i < w->n_points[l] && p[i].cost - now->cost <= budget; i++)
        if (p[i].max < now->max)
            best = i;
    w->done[l] = true;
    if (best >= 0) {
        /* The hull's slot at[l] now names the point taken. */
        w->hull[(size_t)l * w->max_points + w->at[l]] = best;
    }
}

/* Layer l's phy2log at its chosen point, into out. */
static void replay(migrate_work *w, int l, int32_t *out)
{
    const mr_eplb_shape *s = w->s;
    const point *p = at_point(w, l);
    size_t off = (size_t)l * s->n_physical;
    const int32_t *from = p->start == FROM_FRESH     ? w->fresh + off
                          : p->start == FROM_RECOUNT ? w->recount + off
                                                     : w->orig + off;
    memcpy(out, from, (size_t)s->n_physical * sizeof *out);
    const step *steps = w->walks + ((size_t)l * 2 + (size_t)p->start) * (size_t)w->max_steps;
    for (int n = 0; p->start != FROM_FRESH && n < p->steps; n++) {
        if (steps[n].kind == MR_EPLB_MOVE_SWAP) {
            int32_t t = out[steps[n].slot];
            out[steps[n].slot] = out[steps[n].other];
            out[steps[n].other] = t;
        } else {
            out[steps[n].slot] = steps[n].other;
        }
    }
}

/* The fresh solve, matched to the current ranks, what it costs and its
 * largest rank load; then each layer's curve. */
static void curves(migrate_work *w, const double *load, int layers, int budget)
{
    const mr_eplb_shape *s = w->s;
    for (int l = 0; l < layers; l++) {
        const int32_t *orig = w->orig + (size_t)l * s->n_physical;
        int32_t *fresh = w->fresh + (size_t)l * s->n_physical;
        const double *layer_load = load + (size_t)l * s->experts;
        relabel(w, orig, fresh);
        w->fresh_cost[l] = mr_eplb_layer_moves(orig, fresh, s->n_physical, s->per_rank);
        mr_eplb_count_replicas(fresh, s->n_physical, s->experts, w->cnt);
        w->fresh_max[l] = mr_eplb_layer_rank_loads(fresh, w->cnt, layer_load, s->n_physical,
                                                   s->n_ranks, w->rank_load);
        w->n_points[l] = 0;
        add_point(w, l, w->fresh_cost[l], w->fresh_max[l], FROM_FRESH, 0);
        /* Past the fresh solve's cost adopting it is as good. */
        int cap = budget < w->fresh_cost[l] ? budget : w->fresh_cost[l];
        walk(w, layer_load, l, FROM_CURRENT, orig, cap);
        plan_recount(w, layer_load, l);
        const int32_t *recount = w->recount + (size_t)l * s->n_physical;
        if (memcmp(recount, orig, (size_t)s->n_physical * sizeof *orig) != 0)
            walk(w, layer_load, l, FROM_RECOUNT, recount, cap);
        hull_of(w, l);
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
    int budget = max_moves < 0 ? INT_MAX : max_moves;
    curves(&w, load, layers, budget);
    double sum_cur = 0, sum_fresh = 0;
    for (int l = 0; l < layers; l++) {
        sum_cur += at_point(&w, l)->max;
        sum_fresh += w.fresh_max[l];
    }
    while (sum_cur * GOOD_ENOUGH > sum_fresh) {
        /* The steepest next stretch of any layer (ties: the lower layer). */
        int l = -1;
        double steepest = 0;
        for (int i = 0; i < layers; i++) {
            if (w.done[i] || w.at[i] + 1 >= w.n_hull[i])
                continue;
            const point *now = at_point(&w, i);
            const point *next = w.points + (size_t)i * w.max_points +
                                w.hull[(size_t)i * w.max_points + w.at[i] + 1];
            double slope = (now->max - next->max) / (next->cost - now->cost);
            if (l < 0 || slope > steepest) {
                l = i;
                steepest = slope;
            }
        }
        if (l < 0)
            break;
        const point *now = at_point(&w, l);
        const point *next =
            w.points + (size_t)l * w.max_points + w.hull[(size_t)l * w.max_points + w.at[l] + 1];
        double before = now->max;
        if (next->cost - now->cost <= budget) {
            budget -= next->cost - now->cost;
            w.at[l]++;
        } else {
            int cost = now->cost;
            best_within(&w, l, budget);
            budget -= at_point(&w, l)->cost - cost;
        }
        sum_cur += at_point(&w, l)->max - before;
    }
    for (int l = 0; l < layers; l++)
        replay(&w, l, target + (size_t)l * s->n_physical);
    free(a.base);
    return MR_EPLB_OK;
}
