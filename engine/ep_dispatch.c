/*
 * Dispatch: pack each token once per destination rank straight into that
 * rank's receive buffer, exchange, and place every received (token, slot)
 * pair in its row of the slot-grouped input.  Rows are placed by counts
 * known before any payload is read (from the counts exchange, or from the
 * low-latency message's own header), so a source's rows land in the same
 * place whichever exchange carried them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ep_internal.h"

size_t mr_ep_exchange_bytes(const mr_ep_shape *s)
{
    size_t header = sizeof(mr_ep_header) + (size_t)s->slots_per_rank * sizeof(int32_t);
    size_t record = sizeof(mr_ep_record) + (size_t)s->top_k * 2 * sizeof(int32_t) +
                    (size_t)s->hidden * sizeof(float);
    size_t dispatch = header + (size_t)s->max_tokens * record;
    size_t combine = (size_t)s->max_tokens * (size_t)s->hidden * sizeof(double);
    return dispatch > combine ? dispatch : combine;
}

void mr_ep_free(mr_ep *ep)
{
    if (!ep)
        return;
    mr_ep_layout_free(&ep->layout);
    void *owned[] = {ep->bytes, ep->recv, ep->ll_left, ep->overflow, ep->overflow_order,
                     ep->n_overflow, ep->sent, ep->partial,
                     ep->count, ep->tokens_from, ep->records_got, ep->base, ep->cursor,
                     ep->offsets, ep->recv_local, ep->recv_row, ep->recv_weight, ep->x_rows, ep->y,
                     ep->acc};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
    free(ep);
}

int mr_ep_new(mr_comm *comm, const mr_ep_shape *shape, mr_ep **out, char *err, size_t errlen)
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
    ep->shape = *shape;
    ep->n_ranks = mr_comm_size(comm);
    ep->rank = mr_comm_rank(comm);
    ep->header_bytes = sizeof(mr_ep_header) + (size_t)shape->slots_per_rank * sizeof(int32_t);
    ep->record_bytes = sizeof(mr_ep_record) + (size_t)shape->top_k * 2 * sizeof(int32_t) +
                       (size_t)shape->hidden * sizeof(float);
    size_t r = (size_t)ep->n_ranks, slots = r * (size_t)shape->slots_per_rank;
    ep->bytes = malloc(r * sizeof *ep->bytes);
    ep->recv = malloc(r * sizeof *ep->recv);
    ep->ll_left = malloc(slots * sizeof *ep->ll_left);
    size_t per_rank = r * (size_t)(shape->max_tokens > 0 ? shape->max_tokens : 1);
    ep->overflow = malloc(per_rank * sizeof *ep->overflow);
    ep->overflow_order = malloc(per_rank * sizeof *ep->overflow_order);
    ep->partial = malloc(r * sizeof *ep->partial);
    ep->n_overflow = malloc(r * sizeof *ep->n_overflow);
    ep->sent = malloc(r * sizeof *ep->sent);
    ep->count = malloc(slots * sizeof *ep->count);
    ep->tokens_from = malloc(r * sizeof *ep->tokens_from);
    ep->records_got = malloc(r * sizeof *ep->records_got);
    ep->base = malloc(r * sizeof *ep->base);
    ep->cursor = malloc(slots * sizeof *ep->cursor);
    ep->offsets = malloc(((size_t)shape->slots_per_rank + 1) * sizeof *ep->offsets);
    ep->acc = malloc((size_t)shape->hidden * sizeof *ep->acc);
    if (!ep->bytes || !ep->recv || !ep->ll_left || !ep->overflow || !ep->overflow_order ||
        !ep->partial || !ep->n_overflow ||
        !ep->sent || !ep->count || !ep->tokens_from || !ep->records_got || !ep->base ||
        !ep->cursor || !ep->offsets || !ep->acc)
        goto nomem;
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

static int32_t *record_slots(mr_ep_record *r)
{
    return r->picks;
}

static float *record_weights(mr_ep_record *r, int top_k)
{
    return (float *)(r->picks + top_k);
}

static float *record_x(mr_ep_record *r, int top_k)
{
    return (float *)(r->picks + 2 * top_k);
}

/* Appends token t's record for `dst` at `at`. */
static void pack_record(mr_ep *ep, unsigned char *at, const float *x, const int32_t *slots,
                        const float *weights, int t, int dst)
{
    int k = ep->shape.top_k, spr = ep->shape.slots_per_rank, hidden = ep->shape.hidden;
    mr_ep_record *r = (mr_ep_record *)at;
    r->order = ep->sent[dst]++;
    r->n_local = 0;
    for (int j = 0; j < k; j++) {
        int32_t slot = slots[(size_t)t * k + j];
        if (slot / spr != dst)
            continue;
        record_slots(r)[r->n_local] = slot - dst * spr;
        record_weights(r, k)[r->n_local] = weights[(size_t)t * k + j];
        r->n_local++;
    }
    memcpy(record_x(r, k), x + (size_t)t * hidden, (size_t)hidden * sizeof(float));
}

/* Low-latency: does token t fit the room left in its slots on dst? */
static bool fits(mr_ep *ep, const int32_t *slots, int t, int dst)
{
    int k = ep->shape.top_k, spr = ep->shape.slots_per_rank;
    for (int j = 0; j < k; j++) {
        int32_t slot = slots[(size_t)t * k + j];
        if (slot / spr == dst && ep->ll_left[slot] <= 0)
            return false;
    }
    for (int j = 0; j < k; j++) {
        int32_t slot = slots[(size_t)t * k + j];
        if (slot / spr == dst)
            ep->ll_left[slot]--;
    }
    return true;
}

/* Writes the message for dst: its header, then the records of its tokens
 * (low-latency: those that fit; the rest wait in the overflow list). */
static int pack_message(mr_ep *ep, int dst, const float *x, const int32_t *slots,
                        const float *weights, bool with_records, char *err, size_t errlen)
{
    void *buf;
    int rc = mr_comm_send_buffer(ep->comm, dst, &buf, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    const mr_ep_layout *l = &ep->layout;
    int spr = ep->shape.slots_per_rank;
    mr_ep_header *h = buf;
    h->records = 0;
    h->tokens = l->tokens_per_rank[dst];
    memcpy(h->counts, l->tokens_per_slot + (size_t)dst * spr, (size_t)spr * sizeof(int32_t));
    unsigned char *at = (unsigned char *)buf + ep->header_bytes;
    bool ll = ep->shape.mode == MR_EP_LOW_LATENCY;
    for (int t = 0; with_records && t < ep->n_tokens; t++) {
        if (!l->in_rank[(size_t)t * ep->n_ranks + dst])
            continue;
        if (ll && !fits(ep, slots, t, dst)) {
            size_t at_list = (size_t)dst * ep->shape.max_tokens + ep->n_overflow[dst]++;
            ep->overflow[at_list] = t;
            ep->overflow_order[at_list] = ep->sent[dst]++; /* the record follows later */
            continue;
        }
        pack_record(ep, at, x, slots, weights, t, dst);
        at += ep->record_bytes;
        h->records++;
    }
    ep->bytes[dst] = (int64_t)(ep->header_bytes + (size_t)h->records * ep->record_bytes);
    return MR_ENGINE_OK;
}

static bool resize(void **p, size_t n, size_t size)
{
    void *q = realloc(*p, n * size);
    if (q)
        *p = q;
    return q != NULL;
}

/* Receive buffers grow to the largest layer seen, doubling, and stay. */
static int grow_receive(mr_ep *ep)
{
    size_t hidden = (size_t)ep->shape.hidden, k = (size_t)ep->shape.top_k;
    if (ep->recv_tokens > ep->cap_tokens) {
        int cap = ep->recv_tokens > 2 * ep->cap_tokens ? ep->recv_tokens : 2 * ep->cap_tokens;
        if (!resize((void **)&ep->recv_local, (size_t)cap, sizeof(int32_t)) ||
            !resize((void **)&ep->recv_row, (size_t)cap, k * sizeof(int32_t)) ||
            !resize((void **)&ep->recv_weight, (size_t)cap, k * sizeof(float)))
            return MR_ENGINE_ENOMEM;
        ep->cap_tokens = cap;
    }
    if (ep->recv_rows > ep->cap_rows) {
        int cap = ep->recv_rows > 2 * ep->cap_rows ? ep->recv_rows : 2 * ep->cap_rows;
        if (!resize((void **)&ep->x_rows, (size_t)cap, sizeof(float *)) ||
            !resize((void **)&ep->y, (size_t)cap, hidden * sizeof(float)))
            return MR_ENGINE_ENOMEM;
        ep->cap_rows = cap;
    }
    return MR_ENGINE_OK;
}

/* From every source's counts: where each source's rows of each slot start,
 * slots in order and sources in rank order within a slot. */
static int plan_rows(mr_ep *ep, char *err, size_t errlen)
{
    int spr = ep->shape.slots_per_rank;
    ep->recv_tokens = 0;
    for (int s = 0; s < ep->n_ranks; s++) {
        ep->base[s] = ep->recv_tokens;
        ep->recv_tokens += ep->tokens_from[s];
        ep->records_got[s] = 0;
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
    return MR_ENGINE_OK;
}

static void read_headers(mr_ep *ep)
{
    int spr = ep->shape.slots_per_rank;
    for (int s = 0; s < ep->n_ranks; s++) {
        size_t bytes;
        const mr_ep_header *h = mr_comm_received(ep->comm, s, &bytes);
        ep->tokens_from[s] = h ? h->tokens : 0;
        for (int e = 0; e < spr; e++)
            ep->count[(size_t)s * spr + e] = h ? h->counts[e] : 0;
    }
}

static void unpack_records(mr_ep *ep)
{
    int k = ep->shape.top_k, spr = ep->shape.slots_per_rank;
    for (int s = 0; s < ep->n_ranks; s++) {
        size_t bytes;
        const unsigned char *msg = mr_comm_received(ep->comm, s, &bytes);
        if (!msg)
            continue;
        const mr_ep_header *h = (const mr_ep_header *)msg;
        const unsigned char *at = msg + ep->header_bytes;
        for (int i = 0; i < h->records; i++, at += ep->record_bytes) {
            mr_ep_record *r = (mr_ep_record *)at;
            int token = ep->base[s] + r->order;
            ep->recv_local[token] = r->n_local;
            for (int j = 0; j < r->n_local; j++) {
                int row = ep->cursor[(size_t)s * spr + record_slots(r)[j]]++;
                ep->x_rows[row] = record_x(r, k);
                ep->recv_row[(size_t)token * k + j] = row;
                ep->recv_weight[(size_t)token * k + j] = record_weights(r, k)[j];
            }
        }
        ep->records_got[s] += h->records;
    }
}

/* What a dispatch message weighs: a header and `records` records. */
static int64_t message_bytes(const mr_ep *ep, int records)
{
    return (int64_t)(ep->header_bytes + (size_t)records * ep->record_bytes);
}

/* Sends every destination a header alone (the counts exchange), or a
 * header and its records.  High-throughput payloads are sparse and their
 * sizes known from the counts; the low-latency message's size only the
 * message knows. */
static int exchange_messages(mr_ep *ep, const float *x, const int32_t *slots,
                             const float *weights, bool with_records, bool sparse, char *err,
                             size_t errlen)
{
    int rc = MR_ENGINE_OK;
    for (int d = 0; rc == MR_ENGINE_OK && d < ep->n_ranks; d++) {
        ep->bytes[d] = -1;
        if (!with_records)
            ep->recv[d] = message_bytes(ep, 0);
        else if (sparse)
            ep->recv[d] = ep->tokens_from[d] > 0 ? message_bytes(ep, ep->tokens_from[d])
                                                 : MR_COMM_NO_MESSAGE;
        else
            ep->recv[d] = MR_COMM_RECV_UP_TO_CAPACITY;
        if (!sparse || ep->layout.tokens_per_rank[d] > 0)
            rc = pack_message(ep, d, x, slots, weights, with_records, err, errlen);
    }
    return rc == MR_ENGINE_OK ? mr_comm_exchange(ep->comm, ep->bytes, ep->recv, err, errlen)
                              : rc;
}

/* Low-latency: the records that did not fit go to their destinations in
 * one more exchange, between the pairs that need it. */
static int exchange_overflow(mr_ep *ep, const float *x, const int32_t *slots,
                             const float *weights, char *err, size_t errlen)
{
    bool any = false;
    int rc = MR_ENGINE_OK;
    for (int d = 0; rc == MR_ENGINE_OK && d < ep->n_ranks; d++) {
        int left = ep->tokens_from[d] - ep->records_got[d];
        ep->recv[d] = left > 0 ? message_bytes(ep, left) : MR_COMM_NO_MESSAGE;
        ep->bytes[d] = -1;
        any = any || left > 0 || ep->n_overflow[d] > 0;
        if (ep->n_overflow[d] == 0)
            continue;
        void *buf;
        rc = mr_comm_send_buffer(ep->comm, d, &buf, err, errlen);
        if (rc != MR_ENGINE_OK)
            break;
        mr_ep_header *h = buf;
        h->records = ep->n_overflow[d];
        unsigned char *at = (unsigned char *)buf + ep->header_bytes;
        for (int i = 0; i < ep->n_overflow[d]; i++, at += ep->record_bytes) {
            size_t listed = (size_t)d * ep->shape.max_tokens + (size_t)i;
            ep->sent[d] = ep->overflow_order[listed];
            pack_record(ep, at, x, slots, weights, ep->overflow[listed], d);
        }
        ep->bytes[d] = message_bytes(ep, h->records);
    }
    if (rc != MR_ENGINE_OK || !any)
        return rc;
    rc = mr_comm_exchange(ep->comm, ep->bytes, ep->recv, err, errlen);
    if (rc == MR_ENGINE_OK)
        unpack_records(ep);
    return rc;
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
    if (mr_ep_layout_build(&ep->layout, slots, n, s->top_k, ep->n_ranks, s->slots_per_rank) != 0) {
        snprintf(err, errlen, "out of memory for the dispatch layout of %d tokens", n);
        return MR_ENGINE_ENOMEM;
    }
    ep->n_tokens = n;
    size_t slots_all = (size_t)ep->n_ranks * s->slots_per_rank;
    for (int d = 0; d < ep->n_ranks; d++)
        ep->sent[d] = ep->n_overflow[d] = 0;
    for (size_t i = 0; i < slots_all; i++)
        ep->ll_left[i] = s->ll_capacity;
    int rc;
    bool ll = s->mode == MR_EP_LOW_LATENCY;
    if (!ll) {
        rc = exchange_messages(ep, x, slots, weights, false, false, err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
        read_headers(ep);
        mr_comm_release(ep->comm);
        for (int d = 0; d < ep->n_ranks; d++)
            ep->sent[d] = 0;
    }
    rc = exchange_messages(ep, x, slots, weights, true, !ll, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    if (ll)
        read_headers(ep);
    rc = plan_rows(ep, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    unpack_records(ep);
    if (ll && (rc = exchange_overflow(ep, x, slots, weights, err, errlen)) != MR_ENGINE_OK)
        return rc;
    *out = (mr_ep_received){.rows = ep->recv_rows, .offsets = ep->offsets,
                            .x_rows = ep->x_rows, .y = ep->y};
    return MR_ENGINE_OK;
}
