/*
 * eplb -- where routed experts live: the logical → physical → rank maps
 * (named as in DeepSeek's EPLB: phy2log, log2phy, logcnt), and later the
 * load statistics and solvers that choose them.
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
    MR_EPLB_EINVAL = -1, /* the placement asked for is impossible: the message says why */
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

#endif
