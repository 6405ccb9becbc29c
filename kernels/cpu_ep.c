/*
 * The data path of expert parallelism on the CPU: layout, packing,
 * unpacking and the two halves of combine, as loops over ep_rules.h's
 * per-token and per-coordinate steps (the CUDA backend runs the same
 * steps).  Both CPU backends use them as they are: they copy rows and add
 * them up, so they run at the speed of memory, and one thread keeps the
 * order of every sum without further thought.
 */
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

int mr_cpu_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                               int tokens)
{
    (void)be;
    double *out = msg;
    for (int o = 0; o < tokens; o++, out += r->hidden)
        for (int d = 0; d < r->hidden; d++)
            out[d] = mr_ep_partial(r, r->base[src] + o, d);
    return MR_KERNELS_OK;
}

int mr_cpu_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                             const mr_ep_send *s)
{
    (void)be;
    for (int t = 0; t < s->n_tokens; t++)
        for (int d = 0; d < s->hidden; d++)
            out[(size_t)t * s->hidden + d] = mr_ep_reduce(s, msgs, t, d);
    return MR_KERNELS_OK;
}
