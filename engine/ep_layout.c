/*
 * The dispatch layout: from each token's top-k physical slots, the ranks it
 * visits and the counts the exchange is sized by.  Counting per slot as
 * well as per rank lets the receiver place every row without a second pass.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/ep.h"

static int grow(mr_ep_layout *l, int n_tokens, int n_ranks, int slots_per_rank)
{
    bool shape_changed = l->n_ranks != n_ranks || l->slots_per_rank != slots_per_rank;
    if (shape_changed || !l->tokens_per_rank) {
        free(l->tokens_per_rank);
        free(l->tokens_per_slot);
        l->tokens_per_rank = malloc((size_t)n_ranks * sizeof *l->tokens_per_rank);
        l->tokens_per_slot =
            malloc((size_t)n_ranks * (size_t)slots_per_rank * sizeof *l->tokens_per_slot);
        free(l->in_rank);
        l->in_rank = NULL;
        l->cap_tokens = 0;
        if (!l->tokens_per_rank || !l->tokens_per_slot)
            return -1;
    }
    if (n_tokens > l->cap_tokens) {
        uint8_t *in_rank = realloc(l->in_rank, (size_t)n_tokens * (size_t)n_ranks);
        if (!in_rank)
            return -1;
        l->in_rank = in_rank;
        l->cap_tokens = n_tokens;
    }
    return 0;
}

int mr_ep_layout_build(mr_ep_layout *l, const int32_t *slots, int n_tokens, int top_k,
                       int n_ranks, int slots_per_rank)
{
    if (grow(l, n_tokens, n_ranks, slots_per_rank) != 0)
        return -1;
    l->n_ranks = n_ranks;
    l->n_tokens = n_tokens;
    l->top_k = top_k;
    l->slots_per_rank = slots_per_rank;
    memset(l->tokens_per_rank, 0, (size_t)n_ranks * sizeof *l->tokens_per_rank);
    memset(l->tokens_per_slot, 0,
           (size_t)n_ranks * (size_t)slots_per_rank * sizeof *l->tokens_per_slot);
    if (n_tokens > 0)
        memset(l->in_rank, 0, (size_t)n_tokens * (size_t)n_ranks);
    for (int t = 0; t < n_tokens; t++) {
        uint8_t *visits = l->in_rank + (size_t)t * (size_t)n_ranks;
        for (int j = 0; j < top_k; j++) {
            int32_t slot = slots[(size_t)t * (size_t)top_k + (size_t)j];
            int rank = slot / slots_per_rank;
            l->tokens_per_slot[slot]++;
            if (!visits[rank]) {
                visits[rank] = 1;
                l->tokens_per_rank[rank]++;
            }
        }
    }
    return 0;
}

void mr_ep_layout_free(mr_ep_layout *l)
{
    free(l->tokens_per_rank);
    free(l->tokens_per_slot);
    free(l->in_rank);
    memset(l, 0, sizeof *l);
}
