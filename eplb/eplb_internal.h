/*
 * eplb's private pieces: the greedy building blocks the solvers share
 * (replication, packing into ranks, the swap search) and each solver's
 * entry.  A solver works one layer at a time on a `mr_eplb_bins`: ranks of
 * equal slot count whose slots hold expert ids, each replica weighing its
 * expert's per-replica load.
 */
#ifndef MR_EPLB_INTERNAL_H
#define MR_EPLB_INTERNAL_H

#include <stdbool.h>
#include <stdio.h>

#include "eplb/eplb.h"

/* One layer's problem, checked by mr_eplb_solve. */
typedef struct {
    int experts, n_physical, n_ranks;
    int n_nodes;  /* >= 1, divides n_ranks */
    int n_groups; /* >= 1, divides experts */
    int per_rank; /* n_physical / n_ranks */
} mr_eplb_shape;

/* A solver's scratch in one block: carve every array once with base NULL
 * to count the bytes, allocate, then carve again to hand them out. */
typedef struct {
    char *base;
    size_t used;
} mr_eplb_arena;

void *mr_eplb_take(mr_eplb_arena *a, size_t n, size_t size);
#define MR_EPLB_TAKE(a, ptr, n) ((ptr) = mr_eplb_take((a), (size_t)(n), sizeof *(ptr)))
/* Allocates the bytes counted so far and rewinds; MR_EPLB_ENOMEM with the
 * message when it cannot. */
int mr_eplb_arena_alloc(mr_eplb_arena *a, char *err, size_t errlen);

/* Runs a solver that works one layer at a time: carve(work) is called
 * twice (to count and to hand out its scratch), then layer() for every
 * layer, with that layer's load and phy2log. */
typedef void (*mr_eplb_carve_fn)(void *work, mr_eplb_arena *a, const mr_eplb_shape *s);
typedef void (*mr_eplb_layer_fn)(void *work, const mr_eplb_shape *s, const double *load,
                                 int32_t *phy2log);
int mr_eplb_each_layer(const mr_eplb_shape *s, const double *load, int layers,
                       int32_t *phy2log, void *work, mr_eplb_carve_fn carve,
                       mr_eplb_layer_fn layer, char *err, size_t errlen);

/* A binary heap, largest key on top, equal keys by the lower id: the
 * order every greedy choice here breaks ties by, so solves are
 * deterministic. */
typedef struct {
    double key;
    int32_t id;
} mr_eplb_heap_entry;

typedef struct {
    mr_eplb_heap_entry *e;
    int n;
} mr_eplb_heap;

void mr_eplb_heap_push(mr_eplb_heap *h, double key, int32_t id);
/* Order h->e[0 .. h->n) into a heap. */
void mr_eplb_heap_build(mr_eplb_heap *h);
void mr_eplb_heap_pop(mr_eplb_heap *h);
/* Restore the order after the top's key changed. */
void mr_eplb_heap_sift_top(mr_eplb_heap *h);

/* Hand out n_physical - experts extra slots one at a time, each to the
 * expert whose per-replica load is highest (ties: the lower index); this
 * minimises the largest per-replica load.  cnt[experts] out; order
 * (optional) gets each physical slot's expert in DeepSeek's order: experts
 * 0..experts-1, then the replicas as they were added.  heap: `experts`
 * entries of scratch. */
void mr_eplb_replicate(const double *load, int experts, int n_physical, int32_t *cnt,
                       int32_t *order, mr_eplb_heap_entry *heap);

typedef struct {
    uint64_t key;
    int32_t id;
} mr_eplb_sort_entry;

/* ids[0..n) by w descending, equal weights by the lower id; scratch holds
 * 2n entries. */
void mr_eplb_sort_desc(const double *w, int n, int32_t *ids, mr_eplb_sort_entry *scratch);

/* Ranks being filled: per_bin slots each holding an expert (kind). */
typedef struct {
    int n_bins, per_bin, n_kinds;
    int32_t *item;     /* [n_bins * per_bin]: the expert in each slot */
    int32_t *fill;     /* [n_bins]: slots used */
    double *load;      /* [n_bins] */
    uint16_t *holds;   /* [n_bins * n_kinds]: copies of each expert in each bin */
    const double *w;   /* the weight of one replica of each expert */
    mr_eplb_heap heap; /* n_bins entries of scratch */
    mr_eplb_heap_entry *stash; /* n_bins entries of scratch */
} mr_eplb_bins;

void mr_eplb_bins_carve(mr_eplb_bins *b, mr_eplb_arena *a, int n_bins, int per_bin,
                        int n_kinds);
/* Empty every bin; w is kept (not copied) as the replica weights. */
void mr_eplb_bins_clear(mr_eplb_bins *b, const double *w);
/* Refill from a layer's phy2log (slot s in bin s / per_bin). */
void mr_eplb_bins_load(mr_eplb_bins *b, const int32_t *phy2log, const double *w);
void mr_eplb_bins_place(mr_eplb_bins *b, int bin, int32_t kind);
/* Exchange the experts of two slots, keeping loads and holds. */
void mr_eplb_bins_swap(mr_eplb_bins *b, int slot_a, int slot_b);
/* The most loaded bin (ties: the lower index). */
int mr_eplb_bins_max(const mr_eplb_bins *b);
/* Longest processing time first under the slot count: items (experts, in
 * the order given, heaviest first) each go to the lightest bin with room
 * (ties: the lower index).  With `spread`, a bin that already holds the
 * expert is passed over while another with room does not. */
void mr_eplb_bins_pack(mr_eplb_bins *b, const int32_t *items, int n, bool spread);
/* One layer's placement under change (search.c): the bins, replica
 * counts and weights, each expert's slots, the ranks by load. */
typedef enum {
    MR_EPLB_MOVE_NONE,
    MR_EPLB_MOVE_SWAP,
    MR_EPLB_MOVE_REPLICA
} mr_eplb_move_kind;

typedef struct {
    mr_eplb_move_kind kind;
    int slot, other; /* swap: two slots; replica: `slot` takes expert `other` */
    double gain;     /* how far the most loaded of the ranks it touches comes
                      * down below the most loaded rank's load */
    int cost;        /* experts moved (migration), else 1 */
    double rate;     /* gain per cost */
} mr_eplb_move;

typedef struct mr_eplb_layer mr_eplb_layer;
/* The change a move makes to the experts moved; may be 0 or negative
 * when it undoes earlier moves. */
typedef int (*mr_eplb_cost_fn)(const mr_eplb_layer *L, const mr_eplb_move *mv, void *ctx);

struct mr_eplb_layer {
    const mr_eplb_shape *s;
    const double *load;       /* the layer's */
    mr_eplb_bins bins;
    int32_t *cnt;             /* [experts] */
    double *w;                /* [experts]: load per replica */
    int32_t *first, *slots;   /* expert e's slots: slots[first[e] .. first[e + 1]) */
    int32_t *by_load;         /* [n_ranks], most loaded first */
    mr_eplb_sort_entry *sort; /* [2 max(experts, n_ranks)] */
    int32_t *donors, *takers; /* candidate lists */
    double *key;              /* [experts] */
    double *top_w;            /* [per_rank]: the most loaded rank's replica weights */
    uint32_t *stamp;          /* [n_ranks]: ranks a move touches */
    uint32_t gen;
    int breadth;              /* donors and takers a replica search tries */
    mr_eplb_cost_fn cost;     /* NULL: a fresh solve */
    void *cost_ctx;
};

void mr_eplb_layer_carve(mr_eplb_layer *L, mr_eplb_arena *a, const mr_eplb_shape *s);
void mr_eplb_layer_index(mr_eplb_layer *L, const double *load, const int32_t *phy2log);
double mr_eplb_layer_max(const mr_eplb_layer *L);
/* Replaces *best with a better move within budget, if there is one. */
void mr_eplb_layer_best(mr_eplb_layer *L, int budget, mr_eplb_move *best);
void mr_eplb_layer_apply(mr_eplb_layer *L, const mr_eplb_move *mv);
/* Apply the best move while one lowers the most loaded rank, at most
 * max_moves, and until it is down to `floor` (a lower bound on it);
 * returns the moves made. */
int mr_eplb_layer_improve(mr_eplb_layer *L, int max_moves, double floor);

/* Per-replica weights from logcnt-like counts: w[e] = load[e] / cnt[e]. */
void mr_eplb_replica_weights(const double *load, const int32_t *cnt, int experts, double *w);
/* cnt[experts] of a layer's phy2log. */
void mr_eplb_count_replicas(const int32_t *phy2log, int n_physical, int experts,
                            int32_t *cnt);
/* The rank loads of one layer (rank_load[n_ranks]); returns the largest. */
double mr_eplb_layer_rank_loads(const int32_t *phy2log, const int32_t *logcnt,
                                const double *load, int n_physical, int n_ranks,
                                double *rank_load);

/* Experts the ranks of `to` hold that they did not in `from` (one layer's
 * phy2log each), counting an expert once per rank. */
int mr_eplb_layer_moves(const int32_t *from, const int32_t *to, int n_physical, int per_rank);
/* Whether one of the n slots holds `expert`. */
bool mr_eplb_in_slots(const int32_t *slots, int n, int32_t expert);

/* The solvers: phy2log[layers][n_physical] for load[layers][experts].
 * Each returns MR_EPLB_OK or MR_EPLB_ENOMEM (with the message). */
int mr_eplb_solve_deepseek(const mr_eplb_shape *s, const double *load, int layers,
                           int32_t *phy2log, char *err, size_t errlen);
int mr_eplb_solve_global(const mr_eplb_shape *s, const double *load, int layers,
                         int32_t *phy2log, char *err, size_t errlen);
/* Rearranges a global solution in place (phy2log) so groups stay on
 * nodes, without raising any layer's largest rank load. */
int mr_eplb_localize_groups(const mr_eplb_shape *s, const double *load, int layers,
                            int32_t *phy2log, char *err, size_t errlen);
/* Turns `current` (phy2log, same shape) towards `target` by the moves
 * that buy the most balance, as options->max_moves allows; the outcome
 * replaces `target`. */
int mr_eplb_migrate(const mr_eplb_shape *s, const double *load, int layers,
                    const int32_t *current, int max_moves, int32_t *target,
                    char *err, size_t errlen);

#define MR_EPLB_OOM(err, errlen) \
    (snprintf((err), (errlen), "out of memory for the expert placement solver"), MR_EPLB_ENOMEM)

#endif
