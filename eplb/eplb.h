/*
 * eplb -- where routed experts live: the logical → physical → rank maps
 * (named as in DeepSeek's EPLB: phy2log, log2phy, logcnt), the load
 * statistics (a window of per-expert token counts, trace files) and the
 * solvers that choose them (docs/eplb.md).
 *
 * A model has E logical experts per MoE layer.  A placement spreads P >= E
 * physical slots evenly over R ranks (P / R slots each, slot s on rank
 * s / (P / R)); every logical expert fills one or more slots, so a hot
 * expert can be replicated.  Nothing here knows about models or MPI.
 */
#ifndef MR_EPLB_H
#define MR_EPLB_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MR_EPLB_OK = 0,
    MR_EPLB_EINVAL = -1, /* the placement asked for is impossible, or a trace is malformed:
                          * the message says why */
    MR_EPLB_EIO = -2,    /* a file could not be read or written */
    MR_EPLB_ENOMEM = -3
} mr_eplb_status;

typedef struct {
    int n_layers;     /* MoE layers */
    int n_logical;    /* experts per layer in the model */
    int n_physical;   /* slots per layer, a multiple of n_ranks */
    int n_ranks;
    int max_replicas; /* width of log2phy's rows */
    int32_t *phy2log; /* [n_layers][n_physical]: the logical expert in each slot */
    int32_t *log2phy; /* [n_layers][n_logical][max_replicas]: its slots, -1 after the last */
    int32_t *logcnt;  /* [n_layers][n_logical]: how many slots it has */
} mr_eplb_placement;

/* Slot s of every layer holds logical expert s.  Where the experts do not
 * divide evenly over the ranks, the spare slots of the last ranks hold
 * replicas of the first experts (slot s holds s mod experts), so every rank
 * has the same number of slots and none sits empty. */
int mr_eplb_placement_contiguous(mr_eplb_placement *p, int layers, int experts, int ranks,
                                 char *err, size_t errlen);
/* The contiguous placement with n_physical slots (a multiple of ranks, at
 * least experts): slot s holds s mod experts, the redundant slots holding
 * replicas of the first experts until a solver knows better. */
int mr_eplb_placement_round_robin(mr_eplb_placement *p, int layers, int experts, int n_physical,
                                  int ranks, char *err, size_t errlen);
/* Slots per rank of the contiguous placement: experts over ranks, rounded
 * up (what buffers are sized by before the placement is made). */
static inline int mr_eplb_contiguous_slots_per_rank(int experts, int ranks)
{
    return (experts + ranks - 1) / ranks;
}

/* A placement from its phy2log ([layers][n_physical], copied); log2phy and
 * logcnt are derived.  Every logical expert must have a slot. */
int mr_eplb_placement_from_phy2log(mr_eplb_placement *p, int layers, int n_logical,
                                   int n_physical, int ranks, const int32_t *phy2log,
                                   char *err, size_t errlen);

void mr_eplb_placement_free(mr_eplb_placement *p);

/* The rank that holds physical slot `slot`. */
static inline int mr_eplb_slot_rank(const mr_eplb_placement *p, int slot)
{
    return slot / (p->n_physical / p->n_ranks);
}

/* The slot that serves (layer, logical) for a token: among the expert's
 * replicas, chosen by `key` (the token's position in its sequence, say), so
 * the choice is deterministic and load spreads evenly over replicas. */
static inline int32_t mr_eplb_pick_slot(const mr_eplb_placement *p, int layer, int logical,
                                        uint64_t key)
{
    size_t row = (size_t)layer * (size_t)p->n_logical + (size_t)logical;
    int32_t count = p->logcnt[row];
    return p->log2phy[row * (size_t)p->max_replicas + (size_t)(key % (uint64_t)count)];
}

/* ------------------------------------------------------------------------
 * Load and how well a placement balances it
 * ------------------------------------------------------------------------
 * A load is tokens per (layer, logical expert), [n_layers][n_logical], as
 * doubles so traces of any scale and windows of summed counts fit.  A
 * token of an expert with several replicas is served by one of them, picked
 * evenly (mr_eplb_pick_slot), so each replica carries load / logcnt. */

/* Tokens each rank serves in `layer` under `p`: rank_load[n_ranks]. */
void mr_eplb_rank_loads(const mr_eplb_placement *p, const double *load, int layer,
                        double *rank_load);

typedef struct {
    /* vLLM's figure: the sum over layers of the mean rank load over the sum
     * of the maximum rank load; 1.0 is perfect balance. */
    double balancedness;
    /* the worst layer's max / mean rank load */
    double max_over_mean;
    /* a bound on the balancedness any placement with this many slots per
     * rank could reach: per layer the largest rank load is at least the
     * mean, at least the smallest possible heaviest replica with n_physical
     * slots, and at least that replica plus the least the other slots of
     * its rank can carry */
    double bound;
} mr_eplb_score;

int mr_eplb_evaluate(const mr_eplb_placement *p, const double *load, mr_eplb_score *out,
                     char *err, size_t errlen);

/* With n_groups groups of consecutive experts (DeepSeek's expert groups)
 * and n_nodes nodes of consecutive ranks: the share of the load that each
 * group serves on the one node serving most of it, over all layers.  1.0
 * when every group lives on one node; a token routed within few groups
 * then crosses few nodes. */
int mr_eplb_group_locality(const mr_eplb_placement *p, const double *load, int n_nodes,
                           int n_groups, double *out, char *err, size_t errlen);

/* What moving the ranks from one placement to another costs: the (layer,
 * rank, expert) triples where a rank must load an expert it did not hold in
 * that layer, and in *layers_changed (may be NULL) the layers whose phy2log
 * differs.  -1 when the two differ in shape. */
int mr_eplb_moves(const mr_eplb_placement *from, const mr_eplb_placement *to,
                  int *layers_changed);

/* ------------------------------------------------------------------------
 * Solvers
 * ------------------------------------------------------------------------ */
typedef enum {
    MR_EPLB_POLICY_AUTO,         /* global, and across nodes hierarchical: the more
                                  * balanced, hierarchical on a tie */
    MR_EPLB_POLICY_GLOBAL,       /* replicate, pack, then swaps and re-replication
                                  * (eplb/global.c) */
    MR_EPLB_POLICY_HIERARCHICAL, /* global's balance, expert groups kept on nodes as
                                  * far as that costs none (eplb/hierarchical.c) */
    MR_EPLB_POLICY_DEEPSEEK      /* deepseek-ai/EPLB's eplb.py, faithfully */
} mr_eplb_policy;

/* "auto", "global", "hierarchical", "deepseek"; NULL for an unknown value. */
const char *mr_eplb_policy_name(mr_eplb_policy policy);
/* The policy of a name; MR_EPLB_EINVAL for an unknown one. */
int mr_eplb_policy_parse(const char *name, mr_eplb_policy *out);

typedef struct {
    mr_eplb_policy policy;
    int n_physical; /* slots per layer: >= experts, a multiple of n_ranks */
    int n_ranks;
    int n_nodes;    /* <= 1: one node; must divide n_ranks */
    int n_groups;   /* expert groups kept together on a node (DeepSeek's
                     * num_groups); <= 1: none */
    /* Migration-aware re-solve: the placement the ranks hold now (same
     * shape), or NULL for a fresh solve.  Experts stay where they are unless
     * moving them buys balance; at most max_moves experts move in all
     * layers together (< 0: no bound), counted as experts_moved is.  The
     * policy's fresh solve is the target; moves stop once balancedness is
     * within 1% of it. */
    const mr_eplb_placement *current;
    int max_moves;
    uint64_t expert_bytes; /* weight bytes of one expert, for bytes_moved */
} mr_eplb_solve_options;

typedef struct {
    /* of `current`; without one, of mr_eplb_placement_contiguous (which has
     * its own slot count, so its bound may differ from after's) */
    mr_eplb_score before;
    mr_eplb_score after;
    mr_eplb_policy chosen;  /* the policy that made it: what auto picked */
    /* Against `current` (0 without one): */
    int layers_changed;     /* layers whose phy2log differs */
    int experts_moved;      /* (layer, rank, expert) a rank must newly load */
    uint64_t bytes_moved;   /* experts_moved * expert_bytes */
    double seconds;         /* the solve, scoring left out */
} mr_eplb_solve_result;

/* Chooses a placement for `load` ([layers][experts]) into *out (freed by
 * the caller with mr_eplb_placement_free).  Deterministic: the same input
 * gives the same placement on every rank.  `result` may be NULL, which
 * skips the scoring.  MR_EPLB_EINVAL when the options do not fit (slots
 * fewer than experts or not dividing over the ranks, ranks not dividing
 * over the nodes, experts not over the groups, a load not a finite
 * non-negative count, `current` of another shape), with the message. */
int mr_eplb_solve(const double *load, int layers, int experts,
                  const mr_eplb_solve_options *options, mr_eplb_placement *out,
                  mr_eplb_solve_result *result, char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * Load window: the last `steps` steps of per-expert counts (a ring)
 * ------------------------------------------------------------------------ */
typedef struct mr_eplb_window mr_eplb_window;

int mr_eplb_window_create(int layers, int experts, int steps, mr_eplb_window **out,
                          char *err, size_t errlen);
void mr_eplb_window_free(mr_eplb_window *w);
/* One step's tokens per (layer, logical expert), [layers][experts], summed
 * over every rank; the oldest step drops out once the ring is full. */
void mr_eplb_window_push(mr_eplb_window *w, const uint64_t *counts);
/* The window's total per (layer, expert) into load[layers][experts]. */
void mr_eplb_window_sum(const mr_eplb_window *w, double *load);
int mr_eplb_window_filled(const mr_eplb_window *w); /* steps held, <= steps */

/* ------------------------------------------------------------------------
 * Traces: a load as a file (docs/eplb.md)
 * ------------------------------------------------------------------------
 * CSV, one row per MoE layer and one column per logical expert, token
 * counts (non-negative numbers); '#' lines are comments and an optional
 * header row (its first field not a number) names the columns.  *load is
 * malloc'd [layers][experts].  A malformed trace is MR_EPLB_EINVAL with
 * "FILE:LINE: column N: what"; one that cannot be opened, MR_EPLB_EIO. */
int mr_eplb_trace_read(const char *path, double **load, int *layers, int *experts,
                       char *err, size_t errlen);
/* A '#' comment, a header "e0,e1,...", then the rows (whole counts
 * without a decimal point, others exactly). */
int mr_eplb_trace_write(const char *path, const double *load, int layers, int experts,
                        char *err, size_t errlen);

#endif
