/*
 * kernels -- the arithmetic behind the model, as one table of operations per
 * backend, in the manner of ggml's backends.  The model code calls only
 * through a backend's ops table, on buffers that backend allocated, so a
 * CUDA backend (device memory, a stream, cuBLAS) slots in beside the CPU one
 * without the model code changing.
 *
 * Conventions every backend keeps:
 *  - Activations are f32, row-major, one row per token.
 *  - Weights stay in the checkpoint's type (f32, bf16, f16, or FP8 e4m3 with
 *    block scales) and in the Hugging Face Linear layout
 *    [out_features][in_features]: out = x · Wᵀ.  FP8 rows are repacked at
 *    load into blocks of their scale and 128 values (MR_TENSOR_F8_BLOCKS).
 *  - Batch invariance: an output row depends only on that row's inputs,
 *    never on how many rows the call has or where the row sits.  Every
 *    reduction runs in one fixed order whatever the tiling or the thread
 *    count, so a request gives the same bits alone or in a batch of 256.
 *  - Every op returns an mr_kernels_status: MR_KERNELS_OK (0) or a negative
 *    code, with mr_backend_error naming the problem.  Ops may queue work
 *    and return before it is done (CUDA, as ggml's backends do); an error
 *    of queued work may surface only at the next `sync`.  The host reads
 *    backend memory only after `download` or `sync`.
 *  - Every pointer an op takes is one of three kinds of memory:
 *      backend    a buffer from `alloc` or `map_weights` (device memory on
 *                 a GPU), or an address inside one; the host never reads
 *                 or writes it but through `upload` and `download`;
 *      host       the caller's memory, which the op reads on the host: the
 *                 args structs themselves and the arrays marked [host];
 *      transport  a message buffer of the engine's comm module, marked
 *                 [transport]: host memory for shm and MPI, device memory
 *                 for the GPU transports; ops read and write it in place.
 *    A pointer not marked otherwise is a backend buffer.  The "fenced"
 *    backend checks every op's pointers against these marks and faults a
 *    host access to backend memory outside the ops.
 *
 * Nothing here knows about models, requests or ranks.
 */
#ifndef MR_KERNELS_H
#define MR_KERNELS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The small helpers below are for host and device code alike. */
#ifdef __CUDACC__
#define MR_KERNELS_INLINE __host__ __device__ static inline
#else
#define MR_KERNELS_INLINE static inline
#endif

typedef enum {
    MR_TENSOR_F32,
    MR_TENSOR_BF16,
    MR_TENSOR_F16,
    /* FP8 e4m3 (OCP "fn": no infinities) in blocks along a row, each an f32
     * scale and then MR_F8_BLOCK values, the last block padded: a value is
     * its e4m3 number times its block's scale.  Block-scaled checkpoints
     * (weight_scale_inv over 128 x 128 tiles) are repacked into it at load,
     * so a row carries its scales and kernels need no second pointer. */
    MR_TENSOR_F8_BLOCKS
} mr_tensor_type;

#define MR_F8_BLOCK 128
#define MR_F8_BLOCK_BYTES (4 + MR_F8_BLOCK)

/* Bytes of one element of a type with whole-byte elements (for FP8
 * blocks: of a value alone; use mr_tensor_row_bytes for their rows).
 * Inline: kernels call it per weight row and per prefetch in hot loops. */
MR_KERNELS_INLINE size_t mr_tensor_type_size(mr_tensor_type type)
{
    return type == MR_TENSOR_F8_BLOCKS ? 1 : type == MR_TENSOR_F32 ? 4 : 2;
}

/* Bytes of a row of `cols` values of `type`, scales included. */
MR_KERNELS_INLINE size_t mr_tensor_row_bytes(mr_tensor_type type, int cols)
{
    if (type == MR_TENSOR_F8_BLOCKS)
        return (size_t)((cols + MR_F8_BLOCK - 1) / MR_F8_BLOCK) * MR_F8_BLOCK_BYTES;
    return (size_t)cols * mr_tensor_type_size(type);
}

const char *mr_tensor_type_name(mr_tensor_type type);
float mr_bf16_to_f32(uint16_t h);
/* Value i of a weight row of `type` in host memory (exact.h's widening),
 * for the host code that transforms weights at load. */
float mr_tensor_value(const void *row, mr_tensor_type type, size_t i);
uint16_t mr_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

typedef struct mr_backend mr_backend;

typedef enum {
    MR_KERNELS_OK = 0,
    MR_KERNELS_EINVAL = -1,  /* an argument out of range */
    MR_KERNELS_EDEVICE = -2, /* the device failed (a launch, a copy) */
    MR_KERNELS_ENOMEM = -3
} mr_kernels_status;

/* Paged attention over a KV cache in fixed-size blocks.  The cache of one
 * layer is two buffers (K and V) of [n_blocks][block_size][n_kv_heads]
 * [head_dim] of kv_type (f32, or bf16 for half the memory); a token at
 * position p of a sequence lives in block block_table[seq * max_blocks +
 * p / block_size], slot p % block_size. */
typedef struct {
    int rows;                   /* query rows (tokens) in this call */
    int n_q_heads, n_kv_heads;  /* n_q_heads is a multiple of n_kv_heads (GQA) */
    int head_dim;
    int block_size;             /* tokens per KV block */
    int max_blocks;             /* columns of block_table */
    float scale;                /* usually 1/sqrt(head_dim) */
    const int32_t *seq;         /* [rows]: row of block_table of the token's sequence */
    const int32_t *pos;         /* [rows]: position; the token sees positions 0..pos */
    const int32_t *block_table; /* [sequences][max_blocks] */
    mr_tensor_type kv_type;     /* of the cache's elements */
} mr_attention_args;            /* every pointer a backend buffer */

/* Experts run as one grouped call: group g owns rows offsets[g] ..
 * offsets[g+1]-1 of x and out, and its weights are gate[g], up[g]
 * ([inter][hidden]) and down[g] ([hidden][inter]).  out = down(silu(gate(x))
 * * up(x)), unweighted; the caller combines.  With x_rows, input row r is
 * x_rows[r] instead of x + r * hidden: expert parallelism reads tokens
 * where dispatch delivered them, one copy per token rather than per pick.
 * The op reads offsets and the weight addresses on the host (to launch
 * per group); the rows stay on the device. */
typedef struct {
    int groups;
    const int32_t *offsets; /* [host] [groups + 1], offsets[0] = 0 */
    /* [rows] or NULL: a backend buffer (ep_unpack writes it) whose entries
     * point into dispatch's received messages, [transport] */
    const float *const *x_rows;
    const void *const *gate; /* [host] [groups]: each a backend address (a weight) */
    const void *const *up;   /* [host] [groups]: likewise */
    const void *const *down; /* [host] [groups]: likewise */
    mr_tensor_type type;
    int hidden, inter;
} mr_expert_groups;

/* ---- Expert parallelism: the data path of dispatch and combine ----
 * DeepEP's shape, as ops so a device runs it on its own buffers: the host
 * reads only counts and message headers (through `download`) and moves
 * messages between ranks (the engine's comm module); it never reads a
 * token row.  A message lives in a buffer the transport hands out: host
 * memory for shm and MPI, device memory for the GPU transports.
 *
 * A dispatch message is a header, then one record per token:
 *   header  int32 records, int32 tokens (all the source sends this
 *           destination in this layer, deferred ones included), int32 per
 *           destination slot: the (token, slot) pairs among them;
 *   record  int32 order (the token's index among those sent to this
 *           destination), int32 local picks, int32 slot[top_k] (local),
 *           f32 weight[top_k], f32 x[hidden].
 * A combine message is one row of `hidden` doubles per token, in order. */
typedef struct {
    int32_t records, tokens;
    int32_t counts[]; /* [slots_per_rank] */
} mr_ep_header;

MR_KERNELS_INLINE size_t mr_ep_header_bytes(int slots_per_rank)
{
    return sizeof(mr_ep_header) + (size_t)slots_per_rank * sizeof(int32_t);
}

MR_KERNELS_INLINE size_t mr_ep_record_bytes(int top_k, int hidden)
{
    return 2 * sizeof(int32_t) + (size_t)top_k * 2 * sizeof(int32_t) +
           (size_t)hidden * sizeof(float);
}

/* The sending side of one layer.  The pointers are backend buffers. */
typedef struct {
    int n_tokens, top_k, hidden, n_ranks, slots_per_rank;
    int ll_capacity;      /* > 0: low-latency, at most this many tokens per destination
                           * slot in the first message; the rest are deferred */
    const int32_t *slots; /* [n_tokens][top_k]: physical slots, < n_ranks * slots_per_rank */
    const float *weights; /* [n_tokens][top_k] */
    const float *x;       /* [n_tokens][hidden] */
    /* ep_layout writes these; ep_pack reads them. */
    uint8_t *visits;      /* [n_tokens][n_ranks]: 1 where the token goes */
    uint8_t *deferred;    /* [n_tokens][n_ranks]: 1 where it waits for the overflow message */
    int32_t *order;       /* [n_tokens][n_ranks]: its index among the destination's tokens */
    int32_t *room;        /* [n_ranks * slots_per_rank]: scratch */
    int32_t *counts;      /* [mr_ep_counts_len]: per destination rank the tokens, per
                           * destination slot the pairs, per destination rank the
                           * records of the first message */
} mr_ep_send;

MR_KERNELS_INLINE size_t mr_ep_counts_len(int n_ranks, int slots_per_rank)
{
    return (size_t)n_ranks * (2 + (size_t)slots_per_rank);
}

/* What ep_pack writes for a destination. */
typedef enum {
    MR_EP_PACK_HEADER,   /* the header alone: high-throughput's counts step */
    MR_EP_PACK_FIRST,    /* the header and every record not deferred */
    MR_EP_PACK_DEFERRED, /* the header and the deferred records */
} mr_ep_pack_part;

/* The receiving side of one layer.  The pointers are backend buffers. */
typedef struct {
    int top_k, hidden, n_ranks, slots_per_rank;
    const int32_t *base;  /* [n_ranks]: the index here of each source's first token */
    int32_t *cursor;      /* [n_ranks][slots_per_rank]: the next grouped row of each
                           * source's pairs for each slot; ep_unpack advances it */
    int32_t *n_local;     /* [tokens]: each received token's local picks */
    int32_t *rows;        /* [tokens][top_k]: the grouped row of each pick */
    float *weight;        /* [tokens][top_k] */
    const float **x_rows; /* [rows]: each grouped row's input, where it landed: an
                           * address in its message, [transport] */
    float *y;             /* [rows][hidden]: the experts' outputs */
} mr_ep_recv;

/* Multi-head latent attention (DeepSeek-V3's MLA) in its absorbed form:
 * every head attends over one latent cache, as multi-query attention.
 * Per row r and head h, over the row's positions 0..pos in chunks as
 * attention does:
 *   score_t = (q_lat[r][h] · c_t + q_rope[r][h] · k_t) * scale
 *   out[r][h] = Σ_t softmax(score)_t c_t           ([latent])
 * where c_t ([latent]) and k_t ([rope]) are position t's entries in
 * latent_cache and rope_cache, slots laid out as kv_store writes them. */
typedef struct {
    int rows, n_heads, latent, rope;
    int block_size, max_blocks;
    float scale;
    const int32_t *seq, *pos, *block_table;
    mr_tensor_type kv_type;
} mr_mla_args;

/* How a router scores its experts. */
typedef enum {
    MR_ROUTE_SOFTMAX,        /* Qwen3-MoE, Mixtral */
    MR_ROUTE_SIGMOID_GROUPED /* DeepSeek-V3: sigmoid, bias for the choice, groups */
} mr_route_scoring;

/* Routing of one MoE layer, every pointer a backend buffer.  Per row, with
 * MR_ROUTE_SOFTMAX: softmax in f32 over the n_experts logits, the k
 * largest (ties to the lower expert id) in descending order, renormalised
 * to sum 1 when `renormalize`.  With MR_ROUTE_SIGMOID_GROUPED
 * (transformers' DeepseekV3TopkRouter): sigmoid scores; for choosing only,
 * each plus bias[expert]; the experts in n_group groups, a group scored by
 * its two best, the topk_group best groups kept and every other expert
 * scored 0; the k best; their weights the sigmoid scores, divided by their
 * sum (+ 1e-20) when `renormalize`, times `scaling`.  Either way each pick
 * adds 1 to counts[expert] and goes to the physical slot
 * log2phy[expert][pos % logcnt[expert]] (eplb's mr_eplb_pick_slot: the
 * replica chosen by the token's position, so a token takes the same slot
 * whichever rank or batch it is in). */
typedef struct {
    int rows, n_experts, k; /* 1 <= k <= n_experts */
    int renormalize;
    mr_route_scoring scoring;
    const float *bias;      /* [n_experts], MR_ROUTE_SIGMOID_GROUPED */
    int n_group, topk_group; /* n_group divides n_experts; 1 <= topk_group <= n_group */
    float scaling;          /* routed_scaling_factor (grouped only) */
    int max_replicas;        /* width of log2phy's rows */
    const float *logits;     /* [rows][n_experts] */
    const int32_t *pos;      /* [rows] */
    const int32_t *log2phy;  /* [n_experts][max_replicas] of this layer */
    const int32_t *logcnt;   /* [n_experts], each >= 1 */
    uint64_t *counts;        /* [n_experts], added to */
    int32_t *slots;          /* [rows][k] out: physical slot of each pick */
    float *weights;          /* [rows][k] out: its weight */
} mr_route_args;

typedef struct {
    const char *name;
    /* Device memory is host memory and upload is a plain copy, safe to call
     * from several threads at once (the loader copies experts so: on a
     * virtual machine the first touch of fresh memory, not the copy, sets
     * the load's pace, and two threads touch twice as fast). */
    bool host_memory;

    /* Memory.  On the CPU device memory is host memory; upload and download
     * are copies.  upload's src is [host]; download's dst is [host] and its
     * src a backend buffer or a [transport] message (dispatch reads each
     * received header so).  map_weights gives the address ops should read
     * a weight at, made once at load from `host` [host], the mapped file:
     * the "ref" backend reads the file itself, "cpu" a copy in huge pages,
     * a GPU a device copy.  download waits for the work queued before it;
     * sync waits for all of it.  free's status reports a device error;
     * teardown has nothing to do with it but go on freeing. */
    int (*alloc)(mr_backend *be, size_t bytes, void **out);
    int (*free)(mr_backend *be, void *ptr);
    int (*upload)(mr_backend *be, void *dst, const void *src, size_t bytes);
    int (*download)(mr_backend *be, void *dst, const void *src, size_t bytes);
    int (*map_weights)(mr_backend *be, const void *host, size_t bytes, const void **out);
    int (*sync)(mr_backend *be);
    /* The memory this rank may still allocate and the device's total: a
     * GPU's free memory, or the host's available memory shared among the
     * ranks on it (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE). */
    int (*memory)(mr_backend *be, size_t *available, size_t *total);

    /* out[i] = table[ids[i]], rows of `dim`. */
    int (*embed)(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                 const int32_t *ids, int rows, int dim);
    /* out = x / sqrt(mean(x²) + eps) * w, per row of `dim`; out may be x. */
    int (*rmsnorm)(mr_backend *be, float *out, const float *x, const void *w,
                   mr_tensor_type type, int rows, int dim, float eps);
    /* out[rows][out_dim] = x[rows][in_dim] · w[out_dim][in_dim]ᵀ. */
    int (*matmul)(mr_backend *be, float *out, const float *x, const void *w,
                  mr_tensor_type type, int rows, int out_dim, int in_dim);
    /* A small matmul per head, one weight slice each:
     *   out[r][h][o] = x[r][h] · w[h * head_stride_rows + o]  (over in_dim)
     * with out [rows][heads][out_dim], x [rows][heads][in_dim] and w's rows
     * of in_dim.  MLA's W_UKᵀ and W_UV, each head a slice of one tensor as
     * loaded (head_stride_rows: the rows from one head's slice to the
     * next), so the absorbed form needs no q or o products at load.  Each
     * value is matmul's dot product (exact.h's mr_exact_matmul_heads_at). */
    int (*matmul_heads)(mr_backend *be, float *out, const float *x, const void *w,
                        mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                        int head_stride_rows);
    /* NeoX rotary embedding in place: x is [rows][heads][head_dim]; pair
     * (i, i + head_dim/2) rotates by the angle of cos_sin (mr_rope_table,
     * uploaded: [positions][head_dim/2] pairs of cos and sin). */
    int (*rope_neox)(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                     int head_dim, const float *cos_sin);
    /* Write k and v ([rows][kv_dim], f32) into the cache slots slot[i]
     * (block * block_size + offset) as kv_type (bf16: rounded to nearest
     * even); kv_dim = n_kv_heads * head_dim.  v_cache and v NULL: k alone
     * (MLA's caches, one per width). */
    int (*kv_store)(mr_backend *be, void *k_cache, void *v_cache, mr_tensor_type kv_type,
                    const float *k, const float *v, const int32_t *slot, int rows, int kv_dim);
    /* out[rows][n_q_heads * head_dim] = softmax(q kᵀ * scale) v, causal
     * through pos, keys read in position order. */
    int (*attention)(mr_backend *be, float *out, const float *q, const void *k_cache,
                     const void *v_cache, const mr_attention_args *args);
    /* out[rows][n_heads * latent], see mr_mla_args. */
    int (*mla_attention)(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                         const void *latent_cache, const void *rope_cache,
                         const mr_mla_args *args);
    /* Routing of one MoE layer, see mr_route_args. */
    int (*route)(mr_backend *be, const mr_route_args *args);
    /* SwiGLU experts, see mr_expert_groups. */
    int (*expert_ffn)(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
    /* out[i] = x[src[i]], rows of `dim`. */
    int (*gather)(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                  int dim);
    /* y += x, n floats. */
    int (*add)(mr_backend *be, float *y, const float *x, size_t n);
    /* dst[i] = mr_exact_uniform(seed, i) between lo and hi as `type`, i < n:
     * random weights made where they live (benchmarks at a real model's
     * shapes without its file), the same bits on every backend. */
    int (*fill_uniform)(mr_backend *be, void *dst, mr_tensor_type type, size_t n,
                        uint64_t seed, float lo, float hi);

    /* Expert parallelism (see mr_ep_send and mr_ep_recv).  The dispatch
     * layout (DeepEP's get_dispatch_layout): which ranks each token visits,
     * its order among each destination's tokens, the counts, and in
     * low-latency mode which records wait for the overflow message: room
     * per destination slot is taken in token order, and a token that does
     * not fit one of its slots on a rank goes to that rank deferred. */
    int (*ep_layout)(mr_backend *be, const mr_ep_send *s);
    /* The message for `dst` into msg [transport]: its header, then the
     * records of `part` in token order. */
    int (*ep_pack)(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                   mr_ep_pack_part part);
    /* Places each record of the message from `src` (msg [transport]): the
     * token's picks and weights, and at every local slot it picked a
     * pointer to its row in the message (one copy of the token however
     * many of its experts are here).  A record whose order or local slots fall
     * outside its header is MR_KERNELS_EINVAL: a peer's message is not
     * trusted to index. */
    int (*ep_unpack)(mr_backend *be, const mr_ep_recv *r, const void *msg, int src);
    /* The combine message (msg [transport]) for the `tokens` tokens `src`
     * sent here, in its order: per token the sum over its local picks, in
     * pick order, of weight * y, the f32 products summed in double. */
    int (*ep_combine_partials)(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                               int tokens);
    /* out[t] = the f32 rounding of the sum, in rank order, of the partial
     * rows from the ranks token t visited (s->visits, s->order: the layout
     * of the dispatch this combines): msgs [host] [n_ranks], msgs[r] rank
     * r's combine message [transport], NULL when none came. */
    int (*ep_combine_reduce)(mr_backend *be, float *out, const void *const *msgs,
                             const mr_ep_send *s);
} mr_ops;

struct mr_backend {
    const mr_ops *ops;
    int threads;
    void *impl; /* the backend's own state: scratch, streams, handles */
    char error[256]; /* see mr_backend_error */
};

/* RoPE's angles for positions 0 .. positions-1, as Hugging Face's Qwen3
 * rotary embedding (default rope type) computes them in f32: inv_freq =
 * 1 / theta^(2i/d), angle = pos * inv_freq rounded to f32, then its cos and
 * sin; out[pos][i] = {cos, sin}, [positions][head_dim/2][2].  Filled once
 * on the host and uploaded, so every backend rotates by the same bits
 * (libm's cosf and a GPU's differ in the last one). */
void mr_rope_table(float *out, int positions, int head_dim, float theta);

/* The message of the backend's last failed op ("" when none). */
const char *mr_backend_error(const mr_backend *be);

/* Backends by name: "cpu" (AVX-512 where the CPU has it, OpenMP threads),
 * "ref" (plain loops, one thread: the readable definition every other
 * backend is tested against), "cuda" when built with CUDA, and "auto":
 * cuda when this build has it and a GPU is usable, else cpu.  threads <= 0
 * means all cores.  Returns 0, or -1 with err filled.  For "auto" a 0
 * return may still leave a line in err: why cuda was not taken ("" when
 * it was, or when this build has no CUDA backend). */
int mr_backend_create(const char *name, int threads, mr_backend **out, char *err,
                      size_t errlen);
/* The backends this build has, as "cpu, ref" or "cpu, ref, cuda". */
const char *mr_backend_names(void);
void mr_backend_free(mr_backend *be);

#ifdef __cplusplus
}
#endif

#endif
