/* The state dispatch and combine share.  Private to engine/ep_*.c.  The
 * message format is the ep ops' contract, in kernels/kernels.h; here the
 * host keeps counts, headers and the plan of where rows go. */
#ifndef MR_ENGINE_EP_INTERNAL_H
#define MR_ENGINE_EP_INTERNAL_H

#include "engine/ep.h"
#include "engine/model_internal.h"

struct mr_ep {
    mr_comm *comm;
    mr_backend *be;
    mr_ep_shape shape;
    int n_ranks, rank;
    size_t header_bytes, record_bytes;
    int64_t *bytes;  /* [n_ranks]: per exchange, what this rank sends each */
    int64_t *expect; /* [n_ranks]: and what it expects from each (mr_comm_exchange) */
    /* Sending side of the layer in flight: the layout in backend buffers
     * (send.visits, .deferred, .order, .room, .counts) and its counts here. */
    mr_ep_send send;
    int32_t *counts;          /* [mr_ep_counts_len]: send.counts, downloaded */
    const int32_t *tokens_to; /* [n_ranks]: tokens sent to each rank, in counts */
    const int32_t *first_to;  /* [n_ranks]: of them, in the first message */
    /* Receiving side: headers and the row plan here, the rows in recv. */
    mr_ep_header *header; /* one header, downloaded */
    int32_t *count;       /* [n_ranks][slots_per_rank]: pairs each source sends */
    int32_t *tokens_from; /* [n_ranks] */
    int32_t *records_got; /* [n_ranks] */
    int32_t *base;        /* [n_ranks]: index of each source's first token here */
    int32_t *cursor;      /* [n_ranks][slots_per_rank]: its first row */
    int32_t *offsets;     /* [slots_per_rank + 1] */
    mr_ep_recv recv;      /* backend buffers; base and cursor uploaded from the above */
    int recv_tokens, recv_rows, cap_tokens, cap_rows;
    const void **msgs;    /* [n_ranks]: the combine messages received */
};

/* Waits for the ops that wrote this exchange's messages, then exchanges
 * ep->bytes against ep->expect. */
int mr_ep_exchange_written(mr_ep *ep, char *err, size_t errlen);

#endif
