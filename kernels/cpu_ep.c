/*
 * The data path of expert parallelism on the CPU: layout, packing,
 * unpacking and the two halves of combine, as plain loops.  Both CPU
 * backends use them as they are: they copy rows and add them up, so they
 * run at the speed of memory, and one thread keeps the order of every sum
 * without further thought.  kernels.h gives the message format.
 */
#include <stdbool.h>
#include <string.h>

#include "kernels/cpu_internal.h"

/* Coordinates combine's reduction sums at once, on the stack. */
#define REDUCE_BLOCK 256

typedef struct {
    int32_t order, n_local;
    int32_t picks[]; /* slot[top_k], then weight[top_k] as f32 bits, then x[hidden] */
} ep_record;

static int32_t *record_slots(ep_record *r)
{
    return r->picks;
}

static float *record_weights(ep_record *r, int top_k)
{
    return (float *)(r->picks + top_k);
}

static float *record_x(ep_record *r, int top_k)
{
    return (float *)(r->picks + 2 * top_k);
}

/* counts: tokens per rank, then pairs per slot, then first-message records
 * per rank. */
static int32_t *tokens_per_rank(const mr_ep_send *s)
{
    return s->counts;
}

static int32_t *pairs_per_slot(const mr_ep_send *s)
{
    return s->counts + s->n_ranks;
}

static int32_t *first_records(const mr_ep_send *s)
{
    return s->counts + s->n_ranks + (size_t)s->n_ranks * s->slots_per_rank;
}

/* Low-latency: does token t fit the room left in its slots on dst?  If so
 * it takes the room. */
static bool fits(const mr_ep_send *s, int t, int dst)
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

int mr_cpu_ep_layout(mr_backend *be, const mr_ep_send *s)
{
    (void)be;
    int ranks = s->n_ranks, k = s->top_k, spr = s->slots_per_rank;
    memset(s->counts, 0, mr_ep_counts_len(ranks, spr) * sizeof(int32_t));
    for (int i = 0; i < ranks * spr; i++)
        s->room[i] = s->ll_capacity;
    for (int t = 0; t < s->n_tokens; t++) {
        uint8_t *visits = s->visits + (size_t)t * ranks;
        memset(visits, 0, (size_t)ranks);
        for (int j = 0; j < k; j++) {
            int32_t slot = s->slots[(size_t)t * k + j];
            pairs_per_slot(s)[slot]++;
            visits[slot / spr] = 1;
        }
        for (int d = 0; d < ranks; d++) {
            size_t at = (size_t)t * ranks + (size_t)d;
            s->deferred[at] = 0;
            if (!visits[d])
                continue;
            s->order[at] = tokens_per_rank(s)[d]++;
            if (s->ll_capacity > 0 && !fits(s, t, d))
                s->deferred[at] = 1;
            else
                first_records(s)[d]++;
        }
    }
    return MR_KERNELS_OK;
}

/* Token t's record for dst at `at`. */
static void pack_record(const mr_ep_send *s, unsigned char *at, int t, int dst)
{
    int k = s->top_k, spr = s->slots_per_rank;
    ep_record *r = (ep_record *)at;
    r->order = s->order[(size_t)t * s->n_ranks + dst];
    r->n_local = 0;
    for (int j = 0; j < k; j++) {
        int32_t slot = s->slots[(size_t)t * k + j];
        if (slot / spr != dst)
            continue;
        record_slots(r)[r->n_local] = slot - dst * spr;
        record_weights(r, k)[r->n_local] = s->weights[(size_t)t * k + j];
        r->n_local++;
    }
    memcpy(record_x(r, k), s->x + (size_t)t * s->hidden, (size_t)s->hidden * sizeof(float));
}

int mr_cpu_ep_pack(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                   mr_ep_pack_part part)
{
    (void)be;
    int spr = s->slots_per_rank;
    mr_ep_header *h = msg;
    h->records = 0;
    h->tokens = tokens_per_rank(s)[dst];
    memcpy(h->counts, pairs_per_slot(s) + (size_t)dst * spr, (size_t)spr * sizeof(int32_t));
    if (part == MR_EP_PACK_HEADER)
        return MR_KERNELS_OK;
    size_t record_bytes = mr_ep_record_bytes(s->top_k, s->hidden);
    unsigned char *at = (unsigned char *)msg + mr_ep_header_bytes(spr);
    uint8_t want = part == MR_EP_PACK_DEFERRED;
    for (int t = 0; t < s->n_tokens; t++) {
        size_t i = (size_t)t * s->n_ranks + (size_t)dst;
        if (!s->visits[i] || s->deferred[i] != want)
            continue;
        pack_record(s, at, t, dst);
        at += record_bytes;
        h->records++;
    }
    return MR_KERNELS_OK;
}

/* Does the record stay within its message's header: an order below the
 * tokens announced, one to top_k picks, each of a slot of this rank? */
static bool record_fits(const mr_ep_recv *r, const mr_ep_header *h, ep_record *rec)
{
    if (rec->order < 0 || rec->order >= h->tokens || rec->n_local < 1 || rec->n_local > r->top_k)
        return false;
    for (int j = 0; j < rec->n_local; j++)
        if (record_slots(rec)[j] < 0 || record_slots(rec)[j] >= r->slots_per_rank)
            return false;
    return true;
}

int mr_cpu_ep_unpack(mr_backend *be, const mr_ep_recv *r, const void *msg, int src)
{
    int k = r->top_k, spr = r->slots_per_rank;
    const mr_ep_header *h = msg;
    size_t record_bytes = mr_ep_record_bytes(k, r->hidden);
    const unsigned char *at = (const unsigned char *)msg + mr_ep_header_bytes(spr);
    for (int i = 0; i < h->records; i++, at += record_bytes) {
        ep_record *rec = (ep_record *)at;
        if (!record_fits(r, h, rec))
            return mr_backend_fail(be, MR_KERNELS_EINVAL,
                                   "record %d of rank %d's dispatch message is malformed (order "
                                   "%d of %d tokens, %d local picks)",
                                   i, src, rec->order, h->tokens, rec->n_local);
        int token = r->base[src] + rec->order;
        r->n_local[token] = rec->n_local;
        for (int j = 0; j < rec->n_local; j++) {
            int row = r->cursor[(size_t)src * spr + record_slots(rec)[j]]++;
            r->x_rows[row] = record_x(rec, k);
            r->rows[(size_t)token * k + j] = row;
            r->weight[(size_t)token * k + j] = record_weights(rec, k)[j];
        }
    }
    return MR_KERNELS_OK;
}

int mr_cpu_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                               int tokens)
{
    (void)be;
    int k = r->top_k, hidden = r->hidden;
    double *out = msg;
    for (int o = 0; o < tokens; o++, out += hidden) {
        int token = r->base[src] + o;
        const int32_t *rows = r->rows + (size_t)token * k;
        const float *w = r->weight + (size_t)token * k;
        /* The first pick writes, the others add: one pass over out each. */
        const float *y0 = r->y + (size_t)rows[0] * hidden;
        const float w0 = w[0];
#pragma omp simd
        for (int d = 0; d < hidden; d++)
            out[d] = (double)(w0 * y0[d]);
        for (int j = 1; j < r->n_local[token]; j++) {
            const float *y = r->y + (size_t)rows[j] * hidden;
            const float wj = w[j];
#pragma omp simd
            for (int d = 0; d < hidden; d++)
                out[d] += (double)(wj * y[d]);
        }
    }
    return MR_KERNELS_OK;
}

int mr_cpu_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                             const mr_ep_send *s)
{
    (void)be;
    int ranks = s->n_ranks, hidden = s->hidden;
    for (int t = 0; t < s->n_tokens; t++) {
        const uint8_t *visits = s->visits + (size_t)t * ranks;
        const int32_t *order = s->order + (size_t)t * ranks;
        float *row = out + (size_t)t * hidden;
        /* A block of coordinates at a time, each summed over the ranks in
         * rank order: the order every coordinate's sum must keep. */
        for (int d0 = 0; d0 < hidden; d0 += REDUCE_BLOCK) {
            int n = hidden - d0 < REDUCE_BLOCK ? hidden - d0 : REDUCE_BLOCK;
            double acc[REDUCE_BLOCK] = {0};
            for (int r = 0; r < ranks; r++) {
                if (!visits[r])
                    continue;
                const double *part =
                    (const double *)msgs[r] + (size_t)order[r] * hidden + (size_t)d0;
#pragma omp simd
                for (int d = 0; d < n; d++)
                    acc[d] += part[d];
            }
#pragma omp simd
            for (int d = 0; d < n; d++)
                row[d0 + d] = (float)acc[d];
        }
    }
    return MR_KERNELS_OK;
}
