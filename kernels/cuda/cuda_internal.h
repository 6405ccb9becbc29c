/* Private to kernels/cuda/: the cuda backend's state and the helpers its
 * files share.  CUDA C++.
 *
 * Every op queues work on the backend's one stream and returns; download
 * and sync wait.  A launch error is reported by the op that launched; an
 * error a kernel finds in its input (a replica count out of range, a
 * malformed dispatch record) is raised in a device word that download and
 * sync read, so it surfaces at the next sync point, as kernels.h allows. */
#ifndef MR_KERNELS_CUDA_INTERNAL_H
#define MR_KERNELS_CUDA_INTERNAL_H

#include <cuda_runtime.h>

#include "kernels/backend_internal.h"
#include "kernels/cuda/cuda_backend.h"

/* What a kernel found wrong, in the device word (first one wins). */
enum {
    MR_CUDA_INPUT_OK = 0,
    MR_CUDA_BAD_REPLICAS = 1, /* route: logcnt out of 1..max_replicas */
    MR_CUDA_BAD_RECORD = 2,   /* ep_unpack: a record leaves its header */
};

/* Device memory that only grows, so hot ops stop allocating once warm. */
typedef struct {
    void *ptr;
    size_t bytes;
} mr_cuda_scratch;

typedef struct mr_cuda_weight mr_cuda_weight;
typedef struct mr_cuda_chunk mr_cuda_chunk;

typedef struct {
    int device;
    cudaStream_t stream;
    int *input_error;          /* device word, see MR_CUDA_* */
    mr_cuda_scratch hidden;    /* expert_ffn: silu(gate) * up, [rows][inter] */
    mr_cuda_chunk *staging;    /* ep: this layer's host messages, copied in */
    mr_cuda_scratch part_rows; /* ep_pack: [0] the count, then the tokens of the part, in order */
    mr_cuda_weight *weights;   /* map_weights' copies, freed at release */
} mr_cuda;

static inline mr_cuda *mr_cuda_of(mr_backend *be)
{
    return (mr_cuda *)be->impl;
}

/* MR_KERNELS_EDEVICE naming `what` and CUDA's error, or OK. */
int mr_cuda_check(mr_backend *be, cudaError_t rc, const char *what);
/* The launch just made (cudaGetLastError). */
int mr_cuda_launched(mr_backend *be, const char *op);
/* At least `bytes` of s, or NULL with the error recorded. */
void *mr_cuda_scratch_get(mr_backend *be, mr_cuda_scratch *s, size_t bytes, const char *what);
/* Device memory for `bytes` of this layer's staging: host messages copied
 * in, which received rows point into until the layer ends.  Never moves;
 * mr_cuda_stage_reset (at ep_layout, a layer's start) reuses it. */
void *mr_cuda_stage(mr_backend *be, size_t bytes);
int mr_cuda_stage_reset(mr_backend *be);
void mr_cuda_stage_free(mr_cuda *cu);
/* Whether p is device memory (a GPU transport's buffer) rather than host
 * memory (shm and MPI's). */
bool mr_cuda_is_device(const void *p);

/* Threads per block and blocks for n threads' work. */
#define MR_CUDA_BLOCK 256
static inline unsigned mr_cuda_blocks(size_t n)
{
    return (unsigned)((n + MR_CUDA_BLOCK - 1) / MR_CUDA_BLOCK);
}

/* The ops of cuda_exact.cu and cuda_ep.cu. */
int mr_cuda_embed(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                  const int32_t *ids, int rows, int dim);
int mr_cuda_rmsnorm(mr_backend *be, float *out, const float *x, const void *w,
                    mr_tensor_type type, int rows, int dim, float eps);
int mr_cuda_matmul(mr_backend *be, float *out, const float *x, const void *w,
                   mr_tensor_type type, int rows, int out_dim, int in_dim);
int mr_cuda_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                         mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                         int head_stride_rows);
int mr_cuda_rope_neox(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                      int head_dim, const float *cos_sin);
int mr_cuda_kv_store(mr_backend *be, void *k_cache, void *v_cache, mr_tensor_type kv_type,
                     const float *k, const float *v, const int32_t *slot, int rows, int kv_dim);
int mr_cuda_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                      const void *v_cache, const mr_attention_args *a);
int mr_cuda_mla_attention(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                          const void *latent_cache, const void *rope_cache, const mr_mla_args *a);
int mr_cuda_route(mr_backend *be, const mr_route_args *a);
int mr_cuda_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
int mr_cuda_gather(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                   int dim);
int mr_cuda_add(mr_backend *be, float *y, const float *x, size_t n);
int mr_cuda_fill_uniform(mr_backend *be, void *dst, mr_tensor_type type, size_t n,
                         uint64_t seed, float lo, float hi);
int mr_cuda_ep_layout(mr_backend *be, const mr_ep_send *s);
int mr_cuda_ep_pack(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                    mr_ep_pack_part part);
int mr_cuda_ep_unpack(mr_backend *be, const mr_ep_recv *r, const void *msg, int src);
int mr_cuda_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                                int tokens);
int mr_cuda_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                              const mr_ep_send *s);

#endif
