/*
 * Measuring dispatch + combine on synthetic routing: what preflight and the
 * benchmarks report.  Routing is uniform and fixed for the run, so every
 * iteration moves the same bytes; the experts do nothing (their outputs
 * are zeros), so the time is the exchange's own (layout, packing,
 * transport, unpacking, weighted sums and the reduction).  The rows live
 * in buffers of the CPU backend.
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

/* One layer.  The first time, the experts' outputs are set to zeros: the
 * routing is fixed, so every later layer reuses the same rows. */
static int one_layer(mr_ep *ep, const float *x, const int32_t *slots, const float *weights,
                     int n, float *out, bool first, char *err, size_t errlen)
{
    mr_ep_received got;
    int rc = mr_ep_dispatch(ep, x, slots, weights, n, &got, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    if (first) {
        size_t bytes = (size_t)got.rows * (size_t)ep->shape.hidden * sizeof(float);
        float *zeros = calloc(1, bytes ? bytes : 1);
        if (!zeros) {
            snprintf(err, errlen, "out of memory for %d expert rows", got.rows);
            return MR_ENGINE_ENOMEM;
        }
        rc = mr_engine_backend_status(ep->be, ep->be->ops->upload(ep->be, got.y, zeros, bytes),
                                      err, errlen);
        free(zeros);
        if (rc != MR_ENGINE_OK)
            return rc;
    }
    return mr_ep_combine(ep, out, err, errlen);
}

/* What this rank's messages of one layer weigh, per destination. */
static void count_bytes(const mr_ep *ep, mr_exchange_result *out)
{
    out->dispatch_bytes = out->combine_bytes = 0;
    for (int d = 0; d < ep->n_ranks; d++) {
        int64_t sent = ep->tokens_to[d];
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

/* The routing of one layer in backend buffers. */
typedef struct {
    float *x, *weights, *out;
    int32_t *slots;
} layer_buffers;

static int upload_routing(mr_backend *be, int rank, int n_slots, const mr_exchange_probe *p,
                          layer_buffers *b, char *err, size_t errlen)
{
    size_t rows = (size_t)p->tokens * p->hidden, picks = (size_t)p->tokens * p->top_k;
    size_t x_bytes = (rows ? rows : 1) * sizeof(float), k_bytes = (picks ? picks : 1) * 4;
    float *x = malloc(x_bytes), *weights = malloc(k_bytes);
    int32_t *slots = malloc(k_bytes);
    const mr_ops *op = be->ops;
    int rc = MR_KERNELS_OK;
    if (!x || !weights || !slots) {
        snprintf(err, errlen, "out of memory for an exchange of %d tokens", p->tokens);
        rc = MR_ENGINE_ENOMEM;
        goto done;
    }
    random_routing(rank, n_slots, p, x, slots, weights);
    if ((rc = op->alloc(be, x_bytes, (void **)&b->x)) == MR_KERNELS_OK &&
        (rc = op->alloc(be, x_bytes, (void **)&b->out)) == MR_KERNELS_OK &&
        (rc = op->alloc(be, k_bytes, (void **)&b->weights)) == MR_KERNELS_OK &&
        (rc = op->alloc(be, k_bytes, (void **)&b->slots)) == MR_KERNELS_OK &&
        (rc = op->upload(be, b->x, x, rows * sizeof(float))) == MR_KERNELS_OK &&
        (rc = op->upload(be, b->weights, weights, picks * sizeof(float))) == MR_KERNELS_OK)
        rc = op->upload(be, b->slots, slots, picks * sizeof(int32_t));
    rc = mr_engine_backend_status(be, rc, err, errlen);
done:
    free(x);
    free(weights);
    free(slots);
    return rc;
}

static void free_buffers(mr_backend *be, layer_buffers *b)
{
    void *all[] = {b->x, b->out, b->weights, b->slots};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            be->ops->free(be, all[i]);
}

int mr_exchange_measure(mr_comm *comm, const mr_exchange_probe *p, mr_exchange_result *out,
                        char *err, size_t errlen)
{
    mr_ep_shape shape = shape_of(p);
    mr_backend *be = NULL;
    mr_ep *ep = NULL;
    if (mr_backend_create("cpu", 1, &be, err, errlen) != 0)
        return MR_ENGINE_EINVAL;
    int ranks = mr_comm_size(comm), rank = mr_comm_rank(comm);
    layer_buffers b = {0};
    double *times = malloc((size_t)ranks * sizeof *times);
    int rc = mr_ep_new(comm, be, &shape, &ep, err, errlen);
    if (rc == MR_ENGINE_OK && !times) {
        snprintf(err, errlen, "out of memory for %d ranks' times", ranks);
        rc = MR_ENGINE_ENOMEM;
    }
    if (rc == MR_ENGINE_OK)
        rc = upload_routing(be, rank, ranks * p->slots_per_rank, p, &b, err, errlen);
    /* Two layers to warm the buffers, then the timed ones. */
    for (int i = 0; rc == MR_ENGINE_OK && i < 2; i++)
        rc = one_layer(ep, b.x, b.slots, b.weights, p->tokens, b.out, i == 0, err, errlen);
    double mine = 0;
    if (rc == MR_ENGINE_OK)
        rc = mr_comm_ctrl_allgather(comm, &mine, sizeof mine, times, err, errlen);
    double started = mr_clock_seconds();
    for (int i = 0; rc == MR_ENGINE_OK && i < p->iterations; i++)
        rc = one_layer(ep, b.x, b.slots, b.weights, p->tokens, b.out, false, err, errlen);
    mine = (mr_clock_seconds() - started) / (p->iterations > 0 ? p->iterations : 1);
    if (rc == MR_ENGINE_OK)
        rc = mr_comm_ctrl_allgather(comm, &mine, sizeof mine, times, err, errlen);
    if (rc == MR_ENGINE_OK) {
        out->seconds = 0;
        for (int r = 0; r < ranks; r++)
            out->seconds = times[r] > out->seconds ? times[r] : out->seconds;
        count_bytes(ep, out);
    }
    free(times);
    free_buffers(be, &b);
    mr_ep_free(ep);
    mr_backend_free(be);
    return rc;
}
