/* Private to engine/: expert parallelism, DeepEP's shape on CPU ranks.
 *
 * One MoE layer on rank r, for its n tokens and their top-k physical slots:
 *   layout    which ranks each token must visit (once per rank, never once
 *             per expert), how many tokens go to each rank and slot;
 *   dispatch  every token row goes once to each such rank with its local
 *             slots and weights; the receiver groups rows by local slot for
 *             one grouped expert GEMM;
 *   combine   each rank sums its experts' weighted outputs per token (f32
 *             products summed in double, see kernels.h) and sends one vector
 *             back per (token, rank); the source adds them in rank order in
 *             double and rounds once, so results do not depend on placement
 *             or rank count. */
#ifndef MR_ENGINE_EP_H
#define MR_ENGINE_EP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int n_ranks, n_tokens, top_k, slots_per_rank;
    int32_t *tokens_per_rank; /* [n_ranks]: tokens that visit each rank */
    int32_t *tokens_per_slot; /* [n_ranks * slots_per_rank]: (token, slot) pairs */
    uint8_t *in_rank;         /* [n_tokens][n_ranks]: 1 where the token visits */
    int cap_tokens;           /* what the buffers hold; they grow, never shrink */
} mr_ep_layout;

/* slots: [n_tokens][top_k] physical slots, each < n_ranks * slots_per_rank.
 * Buffers are kept between calls.  Returns 0, or -1 when out of memory. */
int mr_ep_layout_build(mr_ep_layout *l, const int32_t *slots, int n_tokens, int top_k,
                       int n_ranks, int slots_per_rank);
void mr_ep_layout_free(mr_ep_layout *l);

#endif
