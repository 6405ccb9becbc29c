/*
 * Measuring dispatch + combine on synthetic routing: what preflight and the
 * benchmarks report.  Routing is uniform and fixed for the run, so every
 * iteration moves the same bytes; the experts copy their input, so the
 * time is the exchange's own (layout, packing, transport, unpacking,
 * weighted sums and the reduction).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/ep_internal.h"

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static mr_ep_shape shape_of(const mr_exchange_probe *p)
{
    return (mr_ep_shape){.hidden = p->hidden, .top_k = p->top_k,
                         .slots_per_rank = p->slots_per_rank, .max_tokens = p->tokens,
                         .mode = p->mode, .ll_capacity = p->ll_capacity};
}

size_t mr_exchange_probe_bytes(const mr_exchange_probe *p)
{
    mr_ep_shape shape = shape_of(p);
    return mr_ep_exchange_bytes(&shape);
}

static void random_routing(int rank, int n_slots, const mr_exchange_probe *p, float *x,
                           int32_t *slots, float *weights)
{
    uint64_t rng = 0x2545F4914F6CDD1Dull ^ (uint64_t)(rank + 1) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < (size_t)p->tokens * p->hidden; i++)
        x[i] = (float)(next_random(&rng) % 2001) / 1000.0f - 1.0f;
    for (int t = 0; t < p->tokens; t++)
        for (int j = 0; j < p->top_k; j++) {
            int32_t s;
            bool taken;
            do {
                s = (int32_t)(next_random(&rng) % (uint64_t)n_slots);
                taken = false;
                for (int i = 0; i < j; i++)
                    taken = taken || slots[(size_t)t * p->top_k + i] == s;
            } while (taken);
            slots[(size_t)t * p->top_k + j] = s;
            weights[(size_t)t * p->top_k + j] = 1.0f / (float)p->top_k;
        }
}

/* One layer; the "experts" copy their input only while warming up, so the
 * timed layers measure the exchange and not a stand-in for expert work. */
static int one_layer(mr_ep *ep, const float *x, const int32_t *slots, const float *weights,
                     int n, float *out, bool warming, char *err, size_t errlen)
{
    mr_ep_received got;
    int rc = mr_ep_dispatch(ep, x, slots, weights, n, &got, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    for (int r = 0; warming && r < got.rows; r++)
        memcpy(got.y + (size_t)r * ep->shape.hidden, got.x_rows[r],
               (size_t)ep->shape.hidden * sizeof(float));
    return mr_ep_combine(ep, out, err, errlen);
}

/* What this rank's messages of one layer weigh, per destination. */
static void count_bytes(const mr_ep *ep, mr_exchange_result *out)
{
    out->dispatch_bytes = out->combine_bytes = 0;
    for (int d = 0; d < ep->n_ranks; d++) {
        int64_t sent = ep->layout.tokens_per_rank[d];
        int64_t dispatch = sent ? (int64_t)(ep->header_bytes + (size_t)sent * ep->record_bytes) : 0;
        int64_t combine = (int64_t)ep->tokens_from[d] * ep->shape.hidden * (int64_t)sizeof(double);
        out->dispatch_bytes += (uint64_t)dispatch;
        out->combine_bytes += (uint64_t)combine;
        if (out->dispatch_to)
            out->dispatch_to[d] = dispatch;
        if (out->combine_to)
            out->combine_to[d] = combine;
    }
}

int mr_exchange_measure(mr_comm *comm, const mr_exchange_probe *p, mr_exchange_result *out,
                        char *err, size_t errlen)
{
    mr_ep_shape shape = shape_of(p);
    mr_ep *ep = NULL;
    int rc = mr_ep_new(comm, &shape, &ep, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    int ranks = mr_comm_size(comm), rank = mr_comm_rank(comm);
    size_t rows = (size_t)p->tokens * p->hidden, picks = (size_t)p->tokens * p->top_k;
    float *x = malloc((rows ? rows : 1) * sizeof *x), *y = malloc((rows ? rows : 1) * sizeof *y);
    float *weights = malloc((picks ? picks : 1) * sizeof *weights);
    int32_t *slots = malloc((picks ? picks : 1) * sizeof *slots);
    double *times = malloc((size_t)ranks * sizeof *times);
    if (!x || !y || !weights || !slots || !times) {
        snprintf(err, errlen, "out of memory for an exchange of %d tokens", p->tokens);
        rc = MR_ENGINE_ENOMEM;
    }
    if (rc == MR_ENGINE_OK)
        random_routing(rank, ranks * p->slots_per_rank, p, x, slots, weights);
    /* Two layers to warm the buffers, then the timed ones. */
    for (int i = 0; rc == MR_ENGINE_OK && i < 2; i++)
        rc = one_layer(ep, x, slots, weights, p->tokens, y, true, err, errlen);
    double mine = 0;
    if (rc == MR_ENGINE_OK)
        rc = mr_comm_ctrl_allgather(comm, &mine, sizeof mine, times, err, errlen);
    double started = mr_clock_seconds();
    for (int i = 0; rc == MR_ENGINE_OK && i < p->iterations; i++)
        rc = one_layer(ep, x, slots, weights, p->tokens, y, false, err, errlen);
    mine = (mr_clock_seconds() - started) / (p->iterations > 0 ? p->iterations : 1);
    if (rc == MR_ENGINE_OK)
        rc = mr_comm_ctrl_allgather(comm, &mine, sizeof mine, times, err, errlen);
    if (rc == MR_ENGINE_OK) {
        out->seconds = 0;
        for (int r = 0; r < ranks; r++)
            out->seconds = times[r] > out->seconds ? times[r] : out->seconds;
        count_bytes(ep, out);
    }
    free(x);
    free(y);
    free(weights);
    free(slots);
    free(times);
    mr_ep_free(ep);
    return rc;
}
