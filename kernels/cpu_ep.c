/*
 * The data path of expert parallelism on the CPU: layout, packing,
 * unpacking and the two halves of combine, as loops over ep_rules.h's
 * per-token and per-coordinate steps (the CUDA backend runs the same
 * steps).  Every CPU backend uses them as they are: they copy rows and add
 * them up, so they run at the speed of memory.  Layout and packing keep
 * one thread (each token's place depends on the tokens before it); the
 * two halves of combine spread tokens over the backend's threads, since
 * every sum belongs to one token and keeps its order whichever thread
 * runs it.  They sum a whole row per pick (or per rank) rather than one
 * coordinate at a time: the same additions in the same order for every
 * coordinate, in loops the compiler vectorises (one coordinate at a time,
 * a prefill of 8192 tokens spent 10% of its step in combine).
 */
#include <stdbool.h>
#include <string.h>

#include "kernels/cpu_internal.h"
#include "kernels/ep_rules.h"

int mr_cpu_ep_layout(mr_backend *be, const mr_ep_send *s)
{
    (void)be;
    mr_ep_layout_tokens(s);
    return MR_KERNELS_OK;
}

int mr_cpu_ep_pack(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                   mr_ep_pack_part part)
{
    (void)be;
    mr_ep_header *h = msg;
    mr_ep_pack_header(h, s, dst);
    if (part == MR_EP_PACK_HEADER)
        return MR_KERNELS_OK;
    size_t record_bytes = mr_ep_record_bytes(s->top_k, s->hidden);
    unsigned char *at = (unsigned char *)msg + mr_ep_header_bytes(s->slots_per_rank);
    for (int t = 0; t < s->n_tokens; t++) {
        if (!mr_ep_in_part(s, t, dst, part))
            continue;
        mr_ep_pack_picks(at, s, t, dst);
        memcpy(mr_ep_record_x(at, s->top_k), s->x + (size_t)t * s->hidden,
               (size_t)s->hidden * sizeof(float));
        at += record_bytes;
        h->records++;
    }
    return MR_KERNELS_OK;
}

int mr_cpu_ep_unpack(mr_backend *be, const mr_ep_recv *r, const void *msg, int src)
{
    const mr_ep_header *h = msg;
    size_t record_bytes = mr_ep_record_bytes(r->top_k, r->hidden);
    unsigned char *at = (unsigned char *)msg + mr_ep_header_bytes(r->slots_per_rank);
    for (int i = 0; i < h->records; i++, at += record_bytes)
        if (!mr_ep_unpack_record(r, h, at, src))
            return mr_backend_fail(be, MR_KERNELS_EINVAL,
                                   "record %d of rank %d's dispatch message is malformed (order "
                                   "%d of %d tokens, %d local picks)",
                                   i, src, mr_ep_record_head(at)[0], h->tokens,
                                   mr_ep_record_head(at)[1]);
    return MR_KERNELS_OK;
}

/* Combine's loops fork only for this many values or more: a decode step's
 * few rows cost less than waking the other threads. */
#define COMBINE_FORK_VALUES (64 * 1024)

/* mr_ep_partial for every coordinate of received token `token` into out:
 * the first pick's products, then each further pick's added, in pick
 * order. */
static void partial_row(double *restrict out, const mr_ep_recv *r, int token)
{
    const int32_t *rows = r->rows + (size_t)token * r->top_k;
    const float *w = r->weight + (size_t)token * r->top_k;
    const float *y = r->y + (size_t)rows[0] * r->hidden;
#pragma omp simd
    for (int d = 0; d < r->hidden; d++)
        out[d] = (double)(w[0] * y[d]);
    for (int j = 1; j < r->n_local[token]; j++) {
        y = r->y + (size_t)rows[j] * r->hidden;
#pragma omp simd
        for (int d = 0; d < r->hidden; d++)
            out[d] += (double)(w[j] * y[d]);
    }
}

int mr_cpu_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                               int tokens)
{
    double *out = msg;
    bool fork = (size_t)tokens * (size_t)r->hidden >= COMBINE_FORK_VALUES;
#pragma omp parallel for num_threads(be->threads) if (be->threads > 1 && fork)
    for (int o = 0; o < tokens; o++)
        partial_row(out + (size_t)o * (size_t)r->hidden, r, r->base[src] + o);
    return MR_KERNELS_OK;
}

/* mr_ep_reduce for every coordinate of token t into out: from 0, the
 * partials of the ranks it visited added in rank order, each sum rounded
 * to f32 once, a chunk of coordinates at a time. */
static void reduce_row(float *restrict out, const mr_ep_send *s, const void *const *msgs, int t)
{
    enum { CHUNK = 256 };
    const uint8_t *visits = s->visits + (size_t)t * s->n_ranks;
    const int32_t *order = s->order + (size_t)t * s->n_ranks;
    for (int d0 = 0; d0 < s->hidden; d0 += CHUNK) {
        int n = s->hidden - d0 < CHUNK ? s->hidden - d0 : CHUNK;
        double sum[CHUNK];
#pragma omp simd
        for (int i = 0; i < n; i++)
            sum[i] = 0;
        for (int r = 0; r < s->n_ranks; r++) {
            if (!visits[r])
                continue;
            const double *part = (const double *)msgs[r] + (size_t)order[r] * s->hidden + d0;
#pragma omp simd
            for (int i = 0; i < n; i++)
                sum[i] += part[i];
        }
#pragma omp simd
        for (int i = 0; i < n; i++)
            out[d0 + i] = (float)sum[i];
    }
}

int mr_cpu_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                             const mr_ep_send *s)
{
    bool fork = (size_t)s->n_tokens * (size_t)s->hidden >= COMBINE_FORK_VALUES;
#pragma omp parallel for num_threads(be->threads) if (be->threads > 1 && fork)
    for (int t = 0; t < s->n_tokens; t++)
        reduce_row(out + (size_t)t * (size_t)s->hidden, s, msgs, t);
    return MR_KERNELS_OK;
}
