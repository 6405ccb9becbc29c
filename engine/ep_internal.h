/* The state dispatch and combine share.  Private to engine/ep_*.c.
 *
 * A dispatch message is a header, then one record per token:
 *   header  int32 records, int32 tokens (all this source sends the
 *           destination this layer, overflow included), int32 per
 *           destination slot: the (token, slot) pairs among them;
 *   record  int32 order (the token's index among those sent to this
 *           destination), int32 local picks, int32 slot[top_k],
 *           f32 weight[top_k], f32 x[hidden].
 * A combine message is one row of `hidden` doubles per token, in order. */
#ifndef MR_ENGINE_EP_INTERNAL_H
#define MR_ENGINE_EP_INTERNAL_H

#include "engine/ep.h"

typedef struct {
    int32_t records, tokens;
    int32_t counts[]; /* [slots_per_rank] */
} mr_ep_header;

typedef struct {
    int32_t order, n_local;
    int32_t picks[]; /* slot[top_k], then weight[top_k] as f32 bits, then x[hidden] */
} mr_ep_record;

struct mr_ep {
    mr_comm *comm;
    mr_ep_shape shape;
    int n_ranks, rank;
    size_t header_bytes, record_bytes;
    int64_t *bytes; /* [n_ranks]: per exchange, what this rank sends each */
    int64_t *recv;  /* [n_ranks]: and what it expects from each (mr_comm_exchange) */
    /* Sending side of the layer in flight. */
    mr_ep_layout layout;
    int n_tokens;
    int32_t *ll_left;    /* [n_ranks][slots_per_rank]: low-latency room left */
    int32_t *overflow;   /* [n_ranks][max_tokens]: tokens that did not fit */
    int32_t *overflow_order; /* [n_ranks][max_tokens]: the order each took */
    int32_t *n_overflow; /* [n_ranks] */
    int32_t *sent;       /* [n_ranks]: tokens packed for each destination so far */
    /* Receiving side. */
    int32_t *count;       /* [n_ranks][slots_per_rank]: pairs each source sends */
    int32_t *tokens_from; /* [n_ranks] */
    int32_t *records_got; /* [n_ranks] */
    int32_t *base;        /* [n_ranks]: index of each source's first token here */
    int32_t *cursor;      /* [n_ranks][slots_per_rank]: its next row */
    int32_t *offsets;     /* [slots_per_rank + 1] */
    int recv_tokens, recv_rows, cap_tokens, cap_rows;
    int32_t *recv_local;  /* [tokens]: local picks of each received token */
    int32_t *recv_row;    /* [tokens][top_k]: the grouped row of each pick */
    float *recv_weight;   /* [tokens][top_k] */
    const float **x_rows; /* [rows]: where each row's input landed */
    float *y;             /* [rows][hidden] */
    double *acc;          /* [hidden] */
    const double **partial; /* [n_ranks]: the next row of each rank's sums */
};

#endif
