/*
 * Private to kernels/: expert parallelism's data path, one token or one
 * coordinate at a time, as functions that compile both as C and as CUDA.
 * cpu_ep.c runs them in loops, kernels/cuda/cuda_ep.cu one thread (or one
 * block) per token, so a message packed on a GPU reads the same on a CPU
 * and every sum keeps its order.  Combine's two sums (mr_ep_partial,
 * mr_ep_reduce) cpu_ep.c restates a row at a time, the same additions in
 * the same order, so its loops vectorise (test_ep_ops holds both to the
 * straightforward sum).  kernels.h gives the message format.
 */
#ifndef MR_KERNELS_EP_RULES_H
#define MR_KERNELS_EP_RULES_H

#include <stdbool.h>
#include <string.h>

#include "kernels/exact.h"

/* A record: int32 order, int32 local picks, int32 slot[top_k], f32
 * weight[top_k], f32 x[hidden]. */
MR_EXACT_FN int32_t *mr_ep_record_head(void *record)
{
    return (int32_t *)record;
}

MR_EXACT_FN int32_t *mr_ep_record_slots(void *record)
{
    return (int32_t *)record + 2;
}

MR_EXACT_FN float *mr_ep_record_weights(void *record, int top_k)
{
    return (float *)((int32_t *)record + 2 + top_k);
}

MR_EXACT_FN float *mr_ep_record_x(void *record, int top_k)
{
    return (float *)((int32_t *)record + 2 + 2 * top_k);
}

/* counts: tokens per rank, then pairs per slot, then first-message records
 * per rank. */
MR_EXACT_FN int32_t *mr_ep_tokens_per_rank(const mr_ep_send *s)
{
    return s->counts;
}

MR_EXACT_FN int32_t *mr_ep_pairs_per_slot(const mr_ep_send *s)
{
    return s->counts + s->n_ranks;
}

MR_EXACT_FN int32_t *mr_ep_first_records(const mr_ep_send *s)
{
    return s->counts + s->n_ranks + (size_t)s->n_ranks * s->slots_per_rank;
}

/* Low-latency: does token t fit the room left in its slots on dst?  If so
 * it takes the room. */
MR_EXACT_FN bool mr_ep_fits(const mr_ep_send *s, int t, int dst)
{
    int k = s->top_k, spr = s->slots_per_rank;
    const int32_t *slots = s->slots + (size_t)t * k;
    for (int j = 0; j < k; j++)
        if (slots[j] / spr == dst && s->room[slots[j]] <= 0)
            return false;
    for (int j = 0; j < k; j++)
        if (slots[j] / spr == dst)
            s->room[slots[j]]--;
    return true;
}

/* The whole layout, in token order: one pass, as it must be (a token's
 * order and room depend on every token before it). */
MR_EXACT_FN void mr_ep_layout_tokens(const mr_ep_send *s)
{
    int ranks = s->n_ranks, k = s->top_k, spr = s->slots_per_rank;
    memset(s->counts, 0, mr_ep_counts_len(ranks, spr) * sizeof(int32_t));
    for (int i = 0; i < ranks * spr; i++)
        s->room[i] = s->ll_capacity;
    for (int t = 0; t < s->n_tokens; t++) {
        uint8_t *visits = s->visits + (size_t)t * ranks;
        memset(visits, 0, (size_t)ranks);
        for (int j = 0; j < k; j++) {
            int32_t slot = s->slots[(size_t)t * k + j];
            mr_ep_pairs_per_slot(s)[slot]++;
            visits[slot / spr] = 1;
        }
        for (int d = 0; d < ranks; d++) {
            size_t at = (size_t)t * ranks + (size_t)d;
            s->deferred[at] = 0;
            if (!visits[d])
                continue;
            s->order[at] = mr_ep_tokens_per_rank(s)[d]++;
            if (s->ll_capacity > 0 && !mr_ep_fits(s, t, d))
                s->deferred[at] = 1;
            else
                mr_ep_first_records(s)[d]++;
        }
    }
}

/* The header of dst's message. */
MR_EXACT_FN void mr_ep_pack_header(mr_ep_header *h, const mr_ep_send *s, int dst)
{
    h->records = 0;
    h->tokens = mr_ep_tokens_per_rank(s)[dst];
    memcpy(h->counts, mr_ep_pairs_per_slot(s) + (size_t)dst * s->slots_per_rank,
           (size_t)s->slots_per_rank * sizeof(int32_t));
}

/* Does token t go into dst's message of `part`? */
MR_EXACT_FN bool mr_ep_in_part(const mr_ep_send *s, int t, int dst, mr_ep_pack_part part)
{
    size_t i = (size_t)t * s->n_ranks + (size_t)dst;
    return s->visits[i] && s->deferred[i] == (part == MR_EP_PACK_DEFERRED);
}

/* Token t's record for dst, but its x: order, local picks, their slots
 * (local to dst) and weights in pick order. */
MR_EXACT_FN void mr_ep_pack_picks(void *record, const mr_ep_send *s, int t, int dst)
{
    int k = s->top_k, spr = s->slots_per_rank;
    int32_t *head = mr_ep_record_head(record);
    head[0] = s->order[(size_t)t * s->n_ranks + dst];
    head[1] = 0;
    for (int j = 0; j < k; j++) {
        int32_t slot = s->slots[(size_t)t * k + j];
        if (slot / spr != dst)
            continue;
        mr_ep_record_slots(record)[head[1]] = slot - dst * spr;
        mr_ep_record_weights(record, k)[head[1]] = s->weights[(size_t)t * k + j];
        head[1]++;
    }
}

/* Places one received record: its picks and weights, and its row pointer
 * at every local slot it picked.  False, with nothing written, when the
 * record leaves its header (order past the tokens announced, no picks or
 * more than top_k, a slot not of this rank): a peer's message is not
 * trusted to index. */
MR_EXACT_FN bool mr_ep_unpack_record(const mr_ep_recv *r, const mr_ep_header *h, void *record,
                                     int src)
{
    int k = r->top_k, spr = r->slots_per_rank;
    const int32_t *head = mr_ep_record_head(record), *slots = mr_ep_record_slots(record);
    if (head[0] < 0 || head[0] >= h->tokens || head[1] < 1 || head[1] > k)
        return false;
    for (int j = 0; j < head[1]; j++)
        if (slots[j] < 0 || slots[j] >= spr)
            return false;
    int token = r->base[src] + head[0];
    r->n_local[token] = head[1];
    for (int j = 0; j < head[1]; j++) {
        int row = r->cursor[(size_t)src * spr + slots[j]]++;
        r->x_rows[row] = mr_ep_record_x(record, k);
        r->rows[(size_t)token * k + j] = row;
        r->weight[(size_t)token * k + j] = mr_ep_record_weights(record, k)[j];
    }
    return true;
}

/* Coordinate d of received token `token`'s partial: the f32 products
 * weight * y of its local picks, summed in double in pick order. */
MR_EXACT_FN double mr_ep_partial(const mr_ep_recv *r, int token, int d)
{
    const int32_t *rows = r->rows + (size_t)token * r->top_k;
    const float *w = r->weight + (size_t)token * r->top_k;
    double sum = (double)(w[0] * r->y[(size_t)rows[0] * r->hidden + d]);
    for (int j = 1; j < r->n_local[token]; j++)
        sum += (double)(w[j] * r->y[(size_t)rows[j] * r->hidden + d]);
    return sum;
}

/* Coordinate d of token t's combined row: the partials of the ranks it
 * visited, summed in rank order, rounded to f32 once. */
MR_EXACT_FN float mr_ep_reduce(const mr_ep_send *s, const void *const *msgs, int t, int d)
{
    const uint8_t *visits = s->visits + (size_t)t * s->n_ranks;
    const int32_t *order = s->order + (size_t)t * s->n_ranks;
    double sum = 0;
    for (int r = 0; r < s->n_ranks; r++)
        if (visits[r])
            sum += ((const double *)msgs[r])[(size_t)order[r] * s->hidden + d];
    return (float)sum;
}

#endif
