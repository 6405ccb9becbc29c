/*
 * Combine: each rank sums the weighted outputs of its experts per received
 * token, in the order of the token's picks, and writes the sums (doubles)
 * straight into the source's receive buffer; the source adds the vectors
 * it gets back in rank order and rounds once.
 */
#include <stdio.h>
#include <string.h>

#include "engine/ep_internal.h"

/* Partial sums for the tokens `src` sent here, in the order it sent them. */
static int send_partials(mr_ep *ep, int src, char *err, size_t errlen)
{
    void *buf;
    int rc = mr_comm_send_buffer(ep->comm, src, &buf, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    int k = ep->shape.top_k, hidden = ep->shape.hidden;
    double *out = buf;
    for (int o = 0; o < ep->tokens_from[src]; o++, out += hidden) {
        int token = ep->base[src] + o;
        const int32_t *rows = ep->recv_row + (size_t)token * k;
        const float *w = ep->recv_weight + (size_t)token * k;
        /* The first pick writes, the others add: one pass over out each. */
        const float *y0 = ep->y + (size_t)rows[0] * hidden;
        const float w0 = w[0];
#pragma omp simd
        for (int d = 0; d < hidden; d++)
            out[d] = (double)(w0 * y0[d]);
        for (int j = 1; j < ep->recv_local[token]; j++) {
            const float *y = ep->y + (size_t)rows[j] * hidden;
            const float wj = w[j];
#pragma omp simd
            for (int d = 0; d < hidden; d++)
                out[d] += (double)(wj * y[d]);
        }
    }
    ep->bytes[src] = (int64_t)ep->tokens_from[src] * hidden * (int64_t)sizeof(double);
    return MR_ENGINE_OK;
}

/* out[t] = the rounding of the sum, in rank order, of what each rank t
 * visited sent back for it. */
static void reduce(mr_ep *ep, float *out)
{
    int hidden = ep->shape.hidden, ranks = ep->n_ranks;
    const double **next = ep->partial;
    for (int r = 0; r < ranks; r++) {
        size_t bytes;
        next[r] = mr_comm_received(ep->comm, r, &bytes);
    }
    for (int t = 0; t < ep->n_tokens; t++) {
        const uint8_t *visits = ep->layout.in_rank + (size_t)t * ranks;
        double *acc = ep->acc;
#pragma omp simd
        for (int d = 0; d < hidden; d++)
            acc[d] = 0;
        for (int r = 0; r < ranks; r++) {
            if (!visits[r])
                continue;
            const double *part = next[r];
#pragma omp simd
            for (int d = 0; d < hidden; d++)
                acc[d] += part[d];
            next[r] += hidden;
        }
        float *row = out + (size_t)t * hidden;
#pragma omp simd
        for (int d = 0; d < hidden; d++)
            row[d] = (float)acc[d];
    }
}

int mr_ep_combine(mr_ep *ep, float *out, char *err, size_t errlen)
{
    /* The experts have read the dispatched rows: senders may reuse them. */
    mr_comm_release(ep->comm);
    int rc = MR_ENGINE_OK;
    for (int r = 0; rc == MR_ENGINE_OK && r < ep->n_ranks; r++) {
        ep->bytes[r] = -1;
        if (ep->tokens_from[r] > 0)
            rc = send_partials(ep, r, err, errlen);
    }
    /* Each rank sends back one row of sums per token this rank sent it. */
    for (int r = 0; r < ep->n_ranks; r++)
        ep->recv[r] = ep->layout.tokens_per_rank[r] > 0
                          ? (int64_t)ep->layout.tokens_per_rank[r] * ep->shape.hidden *
                                (int64_t)sizeof(double)
                          : MR_COMM_NO_MESSAGE;
    if (rc == MR_ENGINE_OK)
        rc = mr_comm_exchange(ep->comm, ep->bytes, ep->recv, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    reduce(ep, out);
    mr_comm_release(ep->comm);
    return MR_ENGINE_OK;
}
