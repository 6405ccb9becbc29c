/*
 * Combine: each rank sums the weighted outputs of its experts per received
 * token, in the order of the token's picks, and writes the sums (doubles)
 * straight into the source's receive buffer; the source adds the vectors
 * it gets back in rank order and rounds once.  Both sums are backend ops.
 */
#include <stdio.h>
#include <string.h>

#include "engine/ep_internal.h"

int mr_ep_combine(mr_ep *ep, float *out, char *err, size_t errlen)
{
    /* The experts have read the dispatched rows: senders may reuse them. */
    mr_comm_release(ep->comm);
    mr_backend *be = ep->be;
    int hidden = ep->shape.hidden, rc = MR_ENGINE_OK;
    for (int r = 0; rc == MR_ENGINE_OK && r < ep->n_ranks; r++) {
        /* Each rank sends back one row of sums per token this rank sent it. */
        ep->bytes[r] = MR_COMM_NO_MESSAGE;
        ep->expect[r] = ep->tokens_to[r] > 0
                            ? (int64_t)ep->tokens_to[r] * hidden * (int64_t)sizeof(double)
                            : MR_COMM_NO_MESSAGE;
        if (ep->tokens_from[r] == 0)
            continue;
        void *buf;
        rc = mr_comm_send_buffer(ep->comm, r, &buf, err, errlen);
        if (rc != MR_ENGINE_OK)
            break;
        int op = be->ops->ep_combine_partials(be, buf, &ep->recv, r, ep->tokens_from[r]);
        if (op != MR_KERNELS_OK)
            return mr_engine_backend_status(be, op, err, errlen);
        ep->bytes[r] = (int64_t)ep->tokens_from[r] * hidden * (int64_t)sizeof(double);
    }
    if (rc != MR_ENGINE_OK)
        return rc;
    rc = mr_ep_exchange_written(ep, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    for (int r = 0; r < ep->n_ranks; r++) {
        size_t bytes;
        ep->msgs[r] = mr_comm_received(ep->comm, r, &bytes);
    }
    int op = be->ops->ep_combine_reduce(be, out, ep->msgs, &ep->send);
    if (op != MR_KERNELS_OK)
        return mr_engine_backend_status(be, op, err, errlen);
    /* The received sums are read before they are released. */
    rc = mr_engine_backend_status(be, be->ops->sync(be), err, errlen);
    mr_comm_release(ep->comm);
    return rc;
}
