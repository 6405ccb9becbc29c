/*
 * kernels -- the arithmetic behind the model, as one table of operations per
 * backend, in the manner of ggml's backends.  The model code calls only
 * through a backend's ops table, on buffers that backend allocated, so a
 * CUDA backend (device memory, a stream, cuBLAS) slots in beside the CPU one
 * without the model code changing.
 *
 * Conventions every backend keeps:
 *  - Activations are f32, row-major, one row per token.
 *  - Weights stay in the checkpoint's type (f32 or bf16) and in the Hugging
 *    Face Linear layout [out_features][in_features]: out = x · Wᵀ.
 *  - Batch invariance: an output row depends only on that row's inputs,
 *    never on how many rows the call has or where the row sits.  Every
 *    reduction runs in one fixed order whatever the tiling or the thread
 *    count, so a request gives the same bits alone or in a batch of 256.
 *  - Ops may run asynchronously (CUDA); what they wrote is visible to the
 *    host after `download` or `sync`.
 *
 * Nothing here knows about models, requests or ranks.
 */
#ifndef MR_KERNELS_H
#define MR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MR_TENSOR_F32, MR_TENSOR_BF16 } mr_tensor_type;

/* Inline: kernels call it per weight row and per prefetch in hot loops. */
static inline size_t mr_tensor_type_size(mr_tensor_type type)
{
    return type == MR_TENSOR_BF16 ? 2 : 4;
}

const char *mr_tensor_type_name(mr_tensor_type type);
float mr_bf16_to_f32(uint16_t h);
uint16_t mr_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

typedef struct mr_backend mr_backend;

/* Paged attention over a KV cache in fixed-size blocks.  The cache of one
 * layer is two buffers (K and V) of [n_blocks][block_size][n_kv_heads]
 * [head_dim] f32; a token at position p of a sequence lives in block
 * block_table[seq * max_blocks + p / block_size], slot p % block_size. */
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
} mr_attention_args;

/* Experts run as one grouped call: group g owns rows offsets[g] ..
 * offsets[g+1]-1 of x and out, and its weights are gate[g], up[g]
 * ([inter][hidden]) and down[g] ([hidden][inter]).  out = down(silu(gate(x))
 * * up(x)), unweighted; the caller combines.  With x_rows, input row r is
 * x_rows[r] instead of x + r * hidden: expert parallelism reads tokens
 * where dispatch delivered them, one copy per token rather than per pick. */
typedef struct {
    int groups;
    const int32_t *offsets; /* [groups + 1], offsets[0] = 0 */
    const float *const *x_rows; /* [rows] or NULL */
    const void *const *gate;
    const void *const *up;
    const void *const *down;
    mr_tensor_type type;
    int hidden, inter;
} mr_expert_groups;

typedef struct {
    const char *name;

    /* Memory.  On the CPU device memory is host memory; upload and download
     * are copies.  map_weights gives the address ops should read a weight
     * at, made once at load: the "ref" backend reads the mmapped file
     * itself, "cpu" a copy in huge pages, a GPU a device copy. */
    void *(*alloc)(mr_backend *be, size_t bytes);
    void (*free)(mr_backend *be, void *ptr);
    void (*upload)(mr_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(mr_backend *be, void *dst, const void *src, size_t bytes);
    const void *(*map_weights)(mr_backend *be, const void *host, size_t bytes);
    void (*sync)(mr_backend *be);

    /* out[i] = table[ids[i]], rows of `dim`. */
    void (*embed)(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                  const int32_t *ids, int rows, int dim);
    /* out = x / sqrt(mean(x²) + eps) * w, per row of `dim`; out may be x. */
    void (*rmsnorm)(mr_backend *be, float *out, const float *x, const void *w,
                    mr_tensor_type type, int rows, int dim, float eps);
    /* out[rows][out_dim] = x[rows][in_dim] · w[out_dim][in_dim]ᵀ. */
    void (*matmul)(mr_backend *be, float *out, const float *x, const void *w,
                   mr_tensor_type type, int rows, int out_dim, int in_dim);
    /* NeoX rotary embedding in place: x is [rows][heads][head_dim]; pair
     * (i, i + head_dim/2) rotates by pos * theta^(-2i/head_dim). */
    void (*rope_neox)(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                      int head_dim, float theta);
    /* Write k and v ([rows][kv_dim]) into the cache slots slot[i] (block *
     * block_size + offset); kv_dim = n_kv_heads * head_dim. */
    void (*kv_store)(mr_backend *be, float *k_cache, float *v_cache, const float *k,
                     const float *v, const int32_t *slot, int rows, int kv_dim);
    /* out[rows][n_q_heads * head_dim] = softmax(q kᵀ * scale) v, causal
     * through pos, keys read in position order. */
    void (*attention)(mr_backend *be, float *out, const float *q, const float *k_cache,
                      const float *v_cache, const mr_attention_args *args);
    /* Router: softmax over all n_experts logits, the k largest (ties to the
     * lower expert id) in descending order into ids[rows][k] and
     * weights[rows][k]; renormalised to sum 1 when `renormalize`. */
    void (*router_topk)(mr_backend *be, int32_t *ids, float *weights, const float *logits,
                        int rows, int n_experts, int k, int renormalize);
    /* SwiGLU experts, see mr_expert_groups. */
    void (*expert_ffn)(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
    /* out[i] = x[src[i]], rows of `dim`. */
    void (*gather)(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                   int dim);
    /* y += x, n floats. */
    void (*add)(mr_backend *be, float *y, const float *x, size_t n);
} mr_ops;

struct mr_backend {
    const mr_ops *ops;
    int threads;
    void *impl; /* the backend's own state: scratch, streams, handles */
};

/* Backends by name: "cpu" (AVX-512 where the CPU has it, OpenMP threads),
 * "ref" (plain loops, one thread: the readable definition every other
 * backend is tested against), "cuda" when built with CUDA.  threads <= 0
 * means all cores. */
int mr_backend_create(const char *name, int threads, mr_backend **out, char *err,
                      size_t errlen);
void mr_backend_free(mr_backend *be);

#endif
