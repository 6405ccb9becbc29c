/*
 * Expert parallelism's data path on the GPU: ep_rules.h's per-token steps
 * as kernels, so a message packed here reads the same on a CPU rank.
 *
 * Messages live where the transport puts them.  The GPU transports (the
 * issue after this one) hand out device buffers, which the kernels read
 * and write in place; shm and MPI hand out host memory, which is staged:
 * a packed message is built on the device and copied out, a received one
 * copied in to this layer's staging (the rows that point into it are read
 * by the layer's experts) before its kernel runs.
 *
 * The layout and the unpacking walk their tokens in order on one thread:
 * each token's place depends on every token before it.  That is cheap
 * beside the experts at the batch sizes here; a scan over the tokens is the
 * way to go wider.
 */
#include <stdlib.h>

#include "kernels/cuda/cuda_internal.h"
#include "kernels/ep_rules.h"

#define SERIAL 1, 1, 0, mr_cuda_of(be)->stream
#define THREAD_INDEX ((size_t)blockIdx.x * blockDim.x + threadIdx.x)

/* ---- this layer's staging ---- */

struct mr_cuda_chunk {
    char *ptr;
    size_t bytes, used;
    mr_cuda_chunk *next;
};

#define MIN_CHUNK ((size_t)1 << 20)

void *mr_cuda_stage(mr_backend *be, size_t bytes)
{
    mr_cuda *cu = mr_cuda_of(be);
    mr_cuda_chunk *head = cu->staging;
    size_t at = head ? (head->used + 255) / 256 * 256 : 0;
    if (!head || at + bytes > head->bytes) {
        /* A new chunk: the old ones hold rows this layer still reads. */
        mr_cuda_chunk *c = (mr_cuda_chunk *)calloc(1, sizeof *c);
        size_t size = bytes > MIN_CHUNK ? bytes : MIN_CHUNK;
        if (head && size < 2 * head->bytes)
            size = 2 * head->bytes;
        if (!c) {
            mr_backend_fail(be, MR_KERNELS_ENOMEM, "staging a message: out of host memory");
            return NULL;
        }
        if (mr_cuda_check(be, cudaMalloc((void **)&c->ptr, size), "staging a message") !=
            MR_KERNELS_OK) {
            free(c);
            return NULL;
        }
        c->bytes = size;
        c->next = head;
        cu->staging = head = c;
        at = 0;
    }
    head->used = at + bytes;
    return head->ptr + at;
}

void mr_cuda_stage_free(mr_cuda *cu)
{
    while (cu->staging) {
        mr_cuda_chunk *next = cu->staging->next;
        cudaFree(cu->staging->ptr);
        free(cu->staging);
        cu->staging = next;
    }
}

/* A layer starts: its staging is free again.  Chunks added last layer are
 * merged into one, so a steady state stages without allocating.  The
 * previous layer's reads of it are queued on the stream before any copy
 * into it, so reuse needs no wait. */
int mr_cuda_stage_reset(mr_backend *be)
{
    mr_cuda *cu = mr_cuda_of(be);
    if (!cu->staging)
        return MR_KERNELS_OK;
    if (!cu->staging->next) {
        cu->staging->used = 0;
        return MR_KERNELS_OK;
    }
    size_t total = 0;
    for (mr_cuda_chunk *c = cu->staging; c; c = c->next)
        total += c->bytes;
    mr_cuda_stage_free(cu); /* cudaFree waits for the work that read them */
    if (!mr_cuda_stage(be, total))
        return MR_KERNELS_ENOMEM;
    cu->staging->used = 0;
    return MR_KERNELS_OK;
}

/* ---- layout ---- */

__global__ void layout_kernel(mr_ep_send s)
{
    mr_ep_layout_tokens(&s);
}

int mr_cuda_ep_layout(mr_backend *be, const mr_ep_send *s)
{
    int rc = mr_cuda_stage_reset(be);
    if (rc != MR_KERNELS_OK)
        return rc;
    layout_kernel<<<SERIAL>>>(*s);
    return mr_cuda_launched(be, "ep_layout");
}

/* ---- pack ---- */

/* The header, and the tokens of `part` in order into part_rows[1..],
 * their count in part_rows[0] and the header. */
__global__ void pack_header_kernel(mr_ep_header *h, mr_ep_send s, int dst, mr_ep_pack_part part,
                                   int32_t *part_rows)
{
    mr_ep_pack_header(h, &s, dst);
    part_rows[0] = 0;
    if (part == MR_EP_PACK_HEADER)
        return;
    for (int t = 0; t < s.n_tokens; t++)
        if (mr_ep_in_part(&s, t, dst, part))
            part_rows[1 + part_rows[0]++] = t;
    h->records = part_rows[0];
}

/* One block per record: its picks from the first thread, x from all. */
__global__ void pack_records_kernel(unsigned char *records, mr_ep_send s, int dst,
                                    const int32_t *part_rows)
{
    int b = blockIdx.x;
    if (b >= part_rows[0])
        return;
    int t = part_rows[1 + b];
    unsigned char *record = records + (size_t)b * mr_ep_record_bytes(s.top_k, s.hidden);
    if (threadIdx.x == 0)
        mr_ep_pack_picks(record, &s, t, dst);
    float *x = mr_ep_record_x(record, s.top_k);
    for (int d = threadIdx.x; d < s.hidden; d += blockDim.x)
        x[d] = s.x[(size_t)t * s.hidden + d];
}

int mr_cuda_ep_pack(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                    mr_ep_pack_part part)
{
    mr_cuda *cu = mr_cuda_of(be);
    size_t header = mr_ep_header_bytes(s->slots_per_rank);
    size_t bytes = header + (part == MR_EP_PACK_HEADER
                                 ? 0
                                 : (size_t)s->n_tokens * mr_ep_record_bytes(s->top_k, s->hidden));
    bool in_place = mr_cuda_is_device(msg);
    unsigned char *out = in_place ? (unsigned char *)msg : (unsigned char *)mr_cuda_stage(be, bytes);
    int32_t *part_rows = (int32_t *)mr_cuda_scratch_get(
        be, &cu->part_rows, ((size_t)s->n_tokens + 1) * sizeof(int32_t), "ep_pack scratch");
    if (!out || !part_rows)
        return MR_KERNELS_ENOMEM;
    pack_header_kernel<<<SERIAL>>>((mr_ep_header *)out, *s, dst, part, part_rows);
    if (part != MR_EP_PACK_HEADER && s->n_tokens > 0)
        pack_records_kernel<<<s->n_tokens, 128, 0, cu->stream>>>(out + header, *s, dst,
                                                                 part_rows);
    int rc = mr_cuda_launched(be, "ep_pack");
    if (rc != MR_KERNELS_OK || in_place)
        return rc;
    /* The records past the count are copied too: cheaper than a round trip
     * for the count, and within the transport's buffer. */
    rc = mr_cuda_check(be, cudaMemcpyAsync(msg, out, bytes, cudaMemcpyDeviceToHost, cu->stream),
                       "ep_pack: copying the message out");
    return rc != MR_KERNELS_OK ? rc
                               : mr_cuda_check(be, cudaStreamSynchronize(cu->stream), "ep_pack");
}

/* ---- unpack ---- */

__global__ void unpack_kernel(mr_ep_recv r, const unsigned char *msg, int src, int *input_error)
{
    const mr_ep_header *h = (const mr_ep_header *)msg;
    unsigned char *at = (unsigned char *)msg + mr_ep_header_bytes(r.slots_per_rank);
    size_t record_bytes = mr_ep_record_bytes(r.top_k, r.hidden);
    for (int i = 0; i < h->records; i++, at += record_bytes)
        if (!mr_ep_unpack_record(&r, h, at, src)) {
            atomicCAS(input_error, MR_CUDA_INPUT_OK, MR_CUDA_BAD_RECORD);
            return;
        }
}

int mr_cuda_ep_unpack(mr_backend *be, const mr_ep_recv *r, const void *msg, int src)
{
    mr_cuda *cu = mr_cuda_of(be);
    const unsigned char *in = (const unsigned char *)msg;
    if (!mr_cuda_is_device(msg)) {
        /* Host memory: its header says how much to stage. */
        const mr_ep_header *h = (const mr_ep_header *)msg;
        if (h->records < 0)
            return mr_backend_fail(be, MR_KERNELS_EINVAL, "rank %d's dispatch message claims "
                                   "%d records", src, h->records);
        size_t bytes = mr_ep_header_bytes(r->slots_per_rank) +
                       (size_t)h->records * mr_ep_record_bytes(r->top_k, r->hidden);
        unsigned char *staged = (unsigned char *)mr_cuda_stage(be, bytes);
        if (!staged)
            return MR_KERNELS_ENOMEM;
        int rc = mr_cuda_check(be, cudaMemcpyAsync(staged, msg, bytes, cudaMemcpyHostToDevice,
                                                   cu->stream),
                               "ep_unpack: copying the message in");
        if (rc != MR_KERNELS_OK)
            return rc;
        in = staged;
    }
    unpack_kernel<<<SERIAL>>>(*r, in, src, cu->input_error);
    return mr_cuda_launched(be, "ep_unpack");
}

/* ---- combine ---- */

__global__ void partials_kernel(double *out, mr_ep_recv r, int src, int tokens)
{
    size_t i = THREAD_INDEX;
    if (i < (size_t)tokens * r.hidden)
        out[i] = mr_ep_partial(&r, r.base[src] + (int)(i / r.hidden), (int)(i % r.hidden));
}

int mr_cuda_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                                int tokens)
{
    mr_cuda *cu = mr_cuda_of(be);
    size_t n = (size_t)tokens * r->hidden;
    if (n == 0)
        return MR_KERNELS_OK;
    bool in_place = mr_cuda_is_device(msg);
    double *out = in_place ? (double *)msg : (double *)mr_cuda_stage(be, n * sizeof(double));
    if (!out)
        return MR_KERNELS_ENOMEM;
    partials_kernel<<<mr_cuda_blocks(n), MR_CUDA_BLOCK, 0, cu->stream>>>(out, *r, src, tokens);
    int rc = mr_cuda_launched(be, "ep_combine_partials");
    if (rc != MR_KERNELS_OK || in_place)
        return rc;
    rc = mr_cuda_check(be, cudaMemcpyAsync(msg, out, n * sizeof(double), cudaMemcpyDeviceToHost,
                                           cu->stream),
                       "ep_combine_partials: copying the message out");
    return rc != MR_KERNELS_OK ? rc
                               : mr_cuda_check(be, cudaStreamSynchronize(cu->stream),
                                               "ep_combine_partials");
}

__global__ void reduce_kernel(float *out, const void *const *msgs, mr_ep_send s)
{
    size_t i = THREAD_INDEX;
    if (i < (size_t)s.n_tokens * s.hidden)
        out[i] = mr_ep_reduce(&s, msgs, (int)(i / s.hidden), (int)(i % s.hidden));
}

/* Each message from host memory is staged whole: at most n_tokens rows
 * (a rank sends back one row per token it was sent), within the
 * transport's buffer. */
int mr_cuda_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                              const mr_ep_send *s)
{
    mr_cuda *cu = mr_cuda_of(be);
    size_t n = (size_t)s->n_tokens * s->hidden, bytes = n * sizeof(double);
    if (n == 0)
        return MR_KERNELS_OK;
    const void **on_device = (const void **)malloc((size_t)s->n_ranks * sizeof(void *));
    if (!on_device)
        return mr_backend_fail(be, MR_KERNELS_ENOMEM, "ep_combine_reduce: out of host memory");
    int rc = MR_KERNELS_OK;
    for (int r = 0; r < s->n_ranks && rc == MR_KERNELS_OK; r++) {
        on_device[r] = msgs[r];
        if (!msgs[r] || mr_cuda_is_device(msgs[r]))
            continue;
        void *staged = mr_cuda_stage(be, bytes);
        rc = staged ? mr_cuda_check(be, cudaMemcpyAsync(staged, msgs[r], bytes,
                                                        cudaMemcpyHostToDevice, cu->stream),
                                    "ep_combine_reduce: copying a message in")
                    : MR_KERNELS_ENOMEM;
        on_device[r] = staged;
    }
    void *table = rc == MR_KERNELS_OK ? mr_cuda_stage(be, (size_t)s->n_ranks * sizeof(void *))
                                      : NULL;
    if (rc == MR_KERNELS_OK && !table)
        rc = MR_KERNELS_ENOMEM;
    if (rc == MR_KERNELS_OK)
        rc = mr_cuda_check(be, cudaMemcpyAsync(table, on_device, (size_t)s->n_ranks * sizeof(void *),
                                               cudaMemcpyHostToDevice, cu->stream),
                           "ep_combine_reduce: the message table");
    /* The table is read from host memory by the copy, queued: wait for it
     * before the host array goes. */
    if (rc == MR_KERNELS_OK)
        rc = mr_cuda_check(be, cudaStreamSynchronize(cu->stream), "ep_combine_reduce");
    free(on_device);
    if (rc != MR_KERNELS_OK)
        return rc;
    reduce_kernel<<<mr_cuda_blocks(n), MR_CUDA_BLOCK, 0, cu->stream>>>(
        out, (const void *const *)table, *s);
    return mr_cuda_launched(be, "ep_combine_reduce");
}
