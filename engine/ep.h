/* Private to engine/: expert parallelism, DeepEP's shape on CPU ranks.
 *
 * One MoE layer on rank r, for its n tokens and their top-k physical slots:
 *   layout    which ranks each token must visit (once per rank, never once
 *             per expert), how many tokens go to each rank and slot;
 *   dispatch  every token row goes once to each such rank with its local
 *             slots and weights, written straight into that rank's receive
 *             buffer; the receiver lists each (token, local slot) pair as a
 *             row grouped by slot, pointing at the token where it landed,
 *             ready for one grouped expert GEMM;
 *   combine   each rank sums its experts' weighted outputs per token (f32
 *             products summed in double, as the combine op does) and sends
 *             one vector of doubles back per (token, rank); the source adds
 *             them in rank order in double and rounds once.
 *
 * Results therefore do not depend on placement or rank count: a token's
 * rows meet the same expert weights wherever they run, and its output is
 * the rounding of the same sum.  Grouping the sum by rank can only change
 * the last bit of a double, which reaches the f32 result only when the
 * k products of one coordinate span more than 29 binades and the sum sits
 * within 2^-52 of an f32 rounding midpoint.
 *
 * Two modes, as DeepEP has:
 *   high-throughput  counts first (one small exchange), then each payload
 *                    exactly sized and only between ranks that have tokens
 *                    for each other: three exchanges per layer;
 *   low-latency      one dispatch exchange between all pairs, each message
 *                    carrying its own counts, at most `ll_capacity` tokens
 *                    per (source, destination slot); tokens beyond that go
 *                    in a second, pairwise exchange, so none is dropped.
 *
 * The work on token rows (layout, packing, unpacking, the weighted sums
 * and the reduction) is backend ops (kernels.h, ep_*); this code runs the
 * protocol: which exchange, the counts and sizes, where rows go.  It reads
 * counts and headers through `download` and no row, so a CUDA backend runs
 * the same protocol on device buffers over a GPU transport. */
#ifndef MR_ENGINE_EP_H
#define MR_ENGINE_EP_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct mr_ep mr_ep;

typedef struct {
    int hidden, top_k, slots_per_rank;
    int max_tokens;  /* tokens one rank dispatches in one layer */
    mr_ep_mode mode;
    int ll_capacity; /* low-latency: tokens per (source, destination slot) */
} mr_ep_shape;

/* Bytes one rank may send another in one exchange for this shape. */
size_t mr_ep_exchange_bytes(const mr_ep_shape *shape);

/* Dispatch and combine between the ranks of comm, on backend be's
 * buffers. */
int mr_ep_new(mr_comm *comm, mr_backend *be, const mr_ep_shape *shape, mr_ep **out, char *err,
              size_t errlen);
void mr_ep_free(mr_ep *ep);

/* What the local experts receive: rows grouped by local slot.  The inputs
 * stay where dispatch wrote them (x_rows, a backend buffer, points into the
 * receive buffers: one copy of a token however many local experts it
 * picked); they stay valid until mr_ep_combine. */
typedef struct {
    int rows;                   /* (token, local slot) pairs received */
    const int32_t *offsets;     /* [slots_per_rank + 1], host: slot s owns rows offsets[s].. */
    const float *const *x_rows; /* [rows], backend: each row's input, hidden floats */
    float *y;                   /* [rows][hidden], backend: the experts write their outputs here */
} mr_ep_received;

/* Sends the n tokens of x ([n][hidden]) with their top-k physical slots and
 * weights (backend buffers) to the ranks holding those slots, and receives every token other
 * ranks send here, grouped by local slot. */
int mr_ep_dispatch(mr_ep *ep, const float *x, const int32_t *slots, const float *weights,
                   int n, mr_ep_received *out, char *err, size_t errlen);
/* After the caller filled out->y: returns every token's weighted sum of its
 * experts' outputs into out ([n][hidden], backend) for the n tokens
 * dispatched. */
int mr_ep_combine(mr_ep *ep, float *out, char *err, size_t errlen);

/* Seconds spent waiting for other ranks, from the communicator. */
double mr_ep_wait_seconds(const mr_ep *ep);

#endif
