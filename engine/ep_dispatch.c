/*
 * Dispatch: the layout, each destination's message packed straight into
 * its receive buffer, the exchange, and every received (token, slot) pair
 * placed in its row of the slot-grouped input.  Rows are placed by counts
 * known before any payload is read (from the counts exchange, or from the
 * low-latency message's own header), so a source's rows land in the same
 * place whichever exchange carried them.  Row work is backend ops; this
 * file reads counts and headers only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ep_internal.h"

size_t mr_ep_exchange_bytes(const mr_ep_shape *s)
{
    size_t dispatch = mr_ep_header_bytes(s->slots_per_rank) +
                      (size_t)s->max_tokens * mr_ep_record_bytes(s->top_k, s->hidden);
    size_t combine = (size_t)s->max_tokens * (size_t)s->hidden * sizeof(double);
    return dispatch > combine ? dispatch : combine;
}

static void backend_free(mr_backend *be, void *ptr)
{
    if (ptr)
        be->ops->free(be, ptr);
}

static void free_receive(mr_ep *ep)
{
    mr_ep_recv *r = &ep->recv;
    void *owned[] = {(void *)r->base, r->cursor, r->n_local, r->rows, r->weight,
                     (void *)r->x_rows, r->y};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        backend_free(ep->be, owned[i]);
}

void mr_ep_free(mr_ep *ep)
{
    if (!ep)
        return;
    mr_ep_send *s = &ep->send;
    void *device[] = {s->visits, s->deferred, s->order, s->room, s->counts};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        backend_free(ep->be, device[i]);
    free_receive(ep);
    void *host[] = {ep->bytes, ep->expect, ep->counts, ep->header, ep->count, ep->tokens_from,
                    ep->records_got, ep->base, ep->cursor, ep->offsets, ep->msgs};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
    free(ep);
}

static void *backend_alloc(mr_backend *be, size_t bytes, bool *ok)
{
    void *p = NULL;
    if (be->ops->alloc(be, bytes ? bytes : 1, &p) != MR_KERNELS_OK)
        p = NULL;
    *ok = *ok && p;
    return p;
}

int mr_ep_new(mr_comm *comm, mr_backend *be, const mr_ep_shape *shape, mr_ep **out, char *err,
              size_t errlen)
{
    size_t need = mr_ep_exchange_bytes(shape);
    if (mr_comm_capacity(comm) < need) {
        snprintf(err, errlen, "the communicator's %zu-byte buffers are smaller than the %zu "
                 "bytes %d tokens need", mr_comm_capacity(comm), need, shape->max_tokens);
        return MR_ENGINE_EINVAL;
    }
    mr_ep *ep = calloc(1, sizeof *ep);
    if (!ep)
        goto nomem;
    ep->comm = comm;
    ep->be = be;
    ep->shape = *shape;
    ep->n_ranks = mr_comm_size(comm);
    ep->rank = mr_comm_rank(comm);
    ep->header_bytes = mr_ep_header_bytes(shape->slots_per_rank);
    ep->record_bytes = mr_ep_record_bytes(shape->top_k, shape->hidden);
    size_t r = (size_t)ep->n_ranks, spr = (size_t)shape->slots_per_rank, slots = r * spr;
    size_t per_token = (size_t)(shape->max_tokens > 0 ? shape->max_tokens : 1) * r;
    size_t counts = mr_ep_counts_len(ep->n_ranks, shape->slots_per_rank);
    bool ok = true;
    ep->send = (mr_ep_send){.top_k = shape->top_k, .hidden = shape->hidden,
                            .n_ranks = ep->n_ranks, .slots_per_rank = shape->slots_per_rank,
                            .ll_capacity = shape->mode == MR_EP_LOW_LATENCY ? shape->ll_capacity : 0,
                            .visits = backend_alloc(be, per_token, &ok),
                            .deferred = backend_alloc(be, per_token, &ok),
                            .order = backend_alloc(be, per_token * sizeof(int32_t), &ok),
                            .room = backend_alloc(be, slots * sizeof(int32_t), &ok),
                            .counts = backend_alloc(be, counts * sizeof(int32_t), &ok)};
    ep->recv = (mr_ep_recv){.top_k = shape->top_k, .hidden = shape->hidden,
                            .n_ranks = ep->n_ranks, .slots_per_rank = shape->slots_per_rank,
                            .base = backend_alloc(be, r * sizeof(int32_t), &ok),
                            .cursor = backend_alloc(be, slots * sizeof(int32_t), &ok)};
    if (!ok)
        goto nomem;
    ep->bytes = malloc(r * sizeof *ep->bytes);
    ep->expect = malloc(r * sizeof *ep->expect);
    ep->counts = malloc(counts * sizeof *ep->counts);
    ep->header = malloc(ep->header_bytes);
    ep->count = malloc(slots * sizeof *ep->count);
    ep->tokens_from = malloc(r * sizeof *ep->tokens_from);
    ep->records_got = malloc(r * sizeof *ep->records_got);
    ep->base = malloc(r * sizeof *ep->base);
    ep->cursor = malloc(slots * sizeof *ep->cursor);
    ep->offsets = malloc((spr + 1) * sizeof *ep->offsets);
    ep->msgs = malloc(r * sizeof *ep->msgs);
    if (!ep->bytes || !ep->expect || !ep->counts || !ep->header || !ep->count ||
        !ep->tokens_from || !ep->records_got || !ep->base || !ep->cursor || !ep->offsets ||
        !ep->msgs)
        goto nomem;
    ep->tokens_to = ep->counts;
    ep->first_to = ep->counts + r + slots;
    *out = ep;
    return MR_ENGINE_OK;
nomem:
    mr_ep_free(ep);
    snprintf(err, errlen, "out of memory for expert-parallel buffers");
    return MR_ENGINE_ENOMEM;
}

double mr_ep_wait_seconds(const mr_ep *ep)
{
    return mr_comm_wait_seconds(ep->comm);
}

/* What a dispatch message weighs: a header and `records` records. */
static int64_t message_bytes(const mr_ep *ep, int records)
{
    return (int64_t)(ep->header_bytes + (size_t)records * ep->record_bytes);
}

/* Packs `part` of dst's message (`records` records) into its send buffer. */
static int pack_to(mr_ep *ep, int dst, mr_ep_pack_part part, int32_t records, char *err,
                   size_t errlen)
{
    void *buf;
    int rc = mr_comm_send_buffer(ep->comm, dst, &buf, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    rc = mr_engine_backend_status(ep->be, ep->be->ops->ep_pack(ep->be, buf, &ep->send, dst, part),
                                  err, errlen);
    if (rc == MR_ENGINE_OK)
        ep->bytes[dst] = message_bytes(ep, records);
    return rc;
}

int mr_ep_exchange_written(mr_ep *ep, char *err, size_t errlen)
{
    /* The transport sends what the ops wrote. */
    int rc = mr_engine_backend_status(ep->be, ep->be->ops->sync(ep->be), err, errlen);
    return rc == MR_ENGINE_OK ? mr_comm_exchange(ep->comm, ep->bytes, ep->expect, err, errlen)
                              : rc;
}

/* Packs `part` of every destination's message (all destinations, or only
 * those with tokens when sparse), and exchanges.  The counts step's
 * messages are headers; high-throughput payloads are sparse and their
 * sizes known from the counts; the low-latency message's size only the
 * message knows. */
static int exchange_messages(mr_ep *ep, mr_ep_pack_part part, bool sparse, char *err,
                             size_t errlen)
{
    int rc = MR_ENGINE_OK;
    for (int d = 0; rc == MR_ENGINE_OK && d < ep->n_ranks; d++) {
        ep->bytes[d] = MR_COMM_NO_MESSAGE;
        if (part == MR_EP_PACK_HEADER)
            ep->expect[d] = message_bytes(ep, 0);
        else if (sparse)
            ep->expect[d] = ep->tokens_from[d] > 0 ? message_bytes(ep, ep->tokens_from[d])
                                                   : MR_COMM_NO_MESSAGE;
        else
            ep->expect[d] = MR_COMM_RECV_UP_TO_CAPACITY;
        if (!sparse || ep->tokens_to[d] > 0)
            rc = pack_to(ep, d, part, part == MR_EP_PACK_HEADER ? 0 : ep->first_to[d], err,
                         errlen);
    }
    return rc == MR_ENGINE_OK ? mr_ep_exchange_written(ep, err, errlen) : rc;
}

/* Each source's counts, from the header of its message. */
static int read_headers(mr_ep *ep, char *err, size_t errlen)
{
    int spr = ep->shape.slots_per_rank;
    for (int s = 0; s < ep->n_ranks; s++) {
        size_t bytes;
        const void *msg = mr_comm_received(ep->comm, s, &bytes);
        mr_ep_header *h = ep->header;
        int op = msg ? ep->be->ops->download(ep->be, h, msg, ep->header_bytes) : MR_KERNELS_OK;
        if (op != MR_KERNELS_OK)
            return mr_engine_backend_status(ep->be, op, err, errlen);
        ep->tokens_from[s] = msg ? h->tokens : 0;
        ep->records_got[s] = msg ? h->records : 0;
        for (int e = 0; e < spr; e++)
            ep->count[(size_t)s * spr + e] = msg ? h->counts[e] : 0;
    }
    return MR_ENGINE_OK;
}

static void backend_realloc(mr_backend *be, void **p, size_t bytes, bool *ok)
{
    backend_free(be, *p);
    *p = backend_alloc(be, bytes, ok);
}

/* Receive buffers grow to the largest layer seen, doubling, and stay. */
static int grow_receive(mr_ep *ep)
{
    mr_backend *be = ep->be;
    mr_ep_recv *r = &ep->recv;
    size_t hidden = (size_t)ep->shape.hidden, k = (size_t)ep->shape.top_k;
    bool ok = true;
    if (ep->recv_tokens > ep->cap_tokens) {
        int cap = ep->recv_tokens > 2 * ep->cap_tokens ? ep->recv_tokens : 2 * ep->cap_tokens;
        backend_realloc(be, (void **)&r->n_local, (size_t)cap * sizeof(int32_t), &ok);
        backend_realloc(be, (void **)&r->rows, (size_t)cap * k * sizeof(int32_t), &ok);
        backend_realloc(be, (void **)&r->weight, (size_t)cap * k * sizeof(float), &ok);
        ep->cap_tokens = ok ? cap : 0;
    }
    if (ok && ep->recv_rows > ep->cap_rows) {
        int cap = ep->recv_rows > 2 * ep->cap_rows ? ep->recv_rows : 2 * ep->cap_rows;
        backend_realloc(be, (void **)&r->x_rows, (size_t)cap * sizeof(float *), &ok);
        backend_realloc(be, (void **)&r->y, (size_t)cap * hidden * sizeof(float), &ok);
        ep->cap_rows = ok ? cap : 0;
    }
    return ok ? MR_ENGINE_OK : MR_ENGINE_ENOMEM;
}

/* From every source's counts: where each source's tokens start, and where
 * its rows of each slot start, slots in order and sources in rank order
 * within a slot. */
static int plan_rows(mr_ep *ep, char *err, size_t errlen)
{
    int spr = ep->shape.slots_per_rank;
    ep->recv_tokens = 0;
    for (int s = 0; s < ep->n_ranks; s++) {
        ep->base[s] = ep->recv_tokens;
        ep->recv_tokens += ep->tokens_from[s];
    }
    int row = 0;
    for (int e = 0; e < spr; e++) {
        ep->offsets[e] = row;
        for (int s = 0; s < ep->n_ranks; s++) {
            ep->cursor[(size_t)s * spr + e] = row;
            row += ep->count[(size_t)s * spr + e];
        }
    }
    ep->offsets[spr] = row;
    ep->recv_rows = row;
    if (grow_receive(ep) != MR_ENGINE_OK) {
        snprintf(err, errlen, "out of memory receiving %d expert rows", row);
        return MR_ENGINE_ENOMEM;
    }
    mr_backend *be = ep->be;
    int op = be->ops->upload(be, (void *)ep->recv.base, ep->base,
                             (size_t)ep->n_ranks * sizeof(int32_t));
    if (op == MR_KERNELS_OK)
        op = be->ops->upload(be, ep->recv.cursor, ep->cursor,
                             (size_t)ep->n_ranks * spr * sizeof(int32_t));
    return mr_engine_backend_status(be, op, err, errlen);
}

/* Places the records of every message the last exchange brought. */
static int unpack_received(mr_ep *ep, char *err, size_t errlen)
{
    for (int s = 0; s < ep->n_ranks; s++) {
        size_t bytes;
        const void *msg = mr_comm_received(ep->comm, s, &bytes);
        if (!msg)
            continue;
        int op = ep->be->ops->ep_unpack(ep->be, &ep->recv, msg, s);
        if (op != MR_KERNELS_OK)
            return mr_engine_backend_status(ep->be, op, err, errlen);
    }
    return MR_ENGINE_OK;
}

/* Low-latency: the records that did not fit go to their destinations in
 * one more exchange, between the pairs that need it. */
static int exchange_deferred(mr_ep *ep, char *err, size_t errlen)
{
    bool any = false;
    int rc = MR_ENGINE_OK;
    for (int d = 0; rc == MR_ENGINE_OK && d < ep->n_ranks; d++) {
        int32_t deferred = ep->tokens_to[d] - ep->first_to[d];
        int32_t left = ep->tokens_from[d] - ep->records_got[d];
        ep->expect[d] = left > 0 ? message_bytes(ep, left) : MR_COMM_NO_MESSAGE;
        ep->bytes[d] = MR_COMM_NO_MESSAGE;
        any = any || left > 0 || deferred > 0;
        if (deferred > 0)
            rc = pack_to(ep, d, MR_EP_PACK_DEFERRED, deferred, err, errlen);
    }
    if (rc != MR_ENGINE_OK || !any)
        return rc;
    rc = mr_ep_exchange_written(ep, err, errlen);
    return rc == MR_ENGINE_OK ? unpack_received(ep, err, errlen) : rc;
}

int mr_ep_dispatch(mr_ep *ep, const float *x, const int32_t *slots, const float *weights,
                   int n, mr_ep_received *out, char *err, size_t errlen)
{
    const mr_ep_shape *s = &ep->shape;
    if (n > s->max_tokens) {
        snprintf(err, errlen, "dispatch of %d tokens exceeds the %d sized for", n,
                 s->max_tokens);
        return MR_ENGINE_EINVAL;
    }
    mr_backend *be = ep->be;
    ep->send.n_tokens = n;
    ep->send.x = x;
    ep->send.slots = slots;
    ep->send.weights = weights;
    int op = be->ops->ep_layout(be, &ep->send);
    if (op != MR_KERNELS_OK)
        return mr_engine_backend_status(be, op, err, errlen);
    op = be->ops->download(be, ep->counts, ep->send.counts,
                           mr_ep_counts_len(ep->n_ranks, s->slots_per_rank) * sizeof(int32_t));
    int rc = mr_engine_backend_status(be, op, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    bool ll = s->mode == MR_EP_LOW_LATENCY;
    if (!ll) {
        rc = exchange_messages(ep, MR_EP_PACK_HEADER, false, err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
        rc = read_headers(ep, err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
        mr_comm_release(ep->comm);
    }
    rc = exchange_messages(ep, MR_EP_PACK_FIRST, !ll, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    if (ll)
        rc = read_headers(ep, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = plan_rows(ep, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = unpack_received(ep, err, errlen);
    if (rc == MR_ENGINE_OK && ll)
        rc = exchange_deferred(ep, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    *out = (mr_ep_received){.rows = ep->recv_rows, .offsets = ep->offsets,
                            .x_rows = ep->recv.x_rows, .y = ep->recv.y};
    return MR_ENGINE_OK;
}
