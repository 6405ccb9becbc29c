/* Private to kernels/: what the CPU backends share ("cpu", "ref", and
 * "fenced", which runs cpu's ops). */
#ifndef MR_KERNELS_CPU_INTERNAL_H
#define MR_KERNELS_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

extern const mr_ops mr_cpu_ref_ops;
extern const mr_ops mr_cpu_fast_ops;

/* The fast backend's state (scratch, whether AVX-512 is used) in be->impl. */
int mr_cpu_fast_init(mr_backend *be, char *err, size_t errlen);
void mr_cpu_fast_release(mr_backend *be);

/* The "fenced" backend (fenced.c): cpu's ops on memory the host cannot
 * touch outside them; its state, cpu's among it, in be->impl. */
extern const mr_ops mr_fenced_ops;
int mr_fenced_init(mr_backend *be, char *err, size_t errlen);
void mr_fenced_release(mr_backend *be);

/* Records a failed op's message in be->error and returns `status`
 * (backend.c). */
int mr_backend_fail(mr_backend *be, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* MR_KERNELS_EINVAL naming `op` unless rows >= 0 and dim >= 1. */
int mr_kernels_check_rows(mr_backend *be, const char *op, int rows, int dim);
/* MR_KERNELS_EINVAL unless groups >= 0 and hidden, inter >= 1. */
int mr_kernels_check_groups(mr_backend *be, const mr_expert_groups *g);
/* MR_KERNELS_EINVAL unless the heads, head_dim and block_size make sense. */
int mr_kernels_check_attention(mr_backend *be, const mr_attention_args *a);

/* Host memory, shared by both CPU backends (cpu_memory.c). */
int mr_cpu_alloc(mr_backend *be, size_t bytes, void **out);
int mr_cpu_free(mr_backend *be, void *ptr);
int mr_cpu_copy(mr_backend *be, void *dst, const void *src, size_t bytes);
int mr_cpu_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out);
int mr_cpu_sync(mr_backend *be);
#define MR_CPU_MEMORY_OPS                                                                          \
    .alloc = mr_cpu_alloc, .free = mr_cpu_free, .upload = mr_cpu_copy, .download = mr_cpu_copy,    \
    .sync = mr_cpu_sync

/* A buffer that only ever grows, so hot ops stop allocating once warm.
 * Returns NULL when it cannot grow. */
typedef struct {
    void *ptr;
    size_t bytes;
} mr_cpu_scratch;
void *mr_cpu_scratch_get(mr_cpu_scratch *s, size_t bytes);
void mr_cpu_scratch_free(mr_cpu_scratch *s);

static inline float mr_cpu_weight_at(const void *w, mr_tensor_type type, size_t i)
{
    return type == MR_TENSOR_BF16 ? mr_bf16_to_f32(((const uint16_t *)w)[i])
                                  : ((const float *)w)[i];
}

static inline const void *mr_cpu_weight_row(const void *w, mr_tensor_type type, size_t row,
                                            int cols)
{
    return (const char *)w + row * (size_t)cols * mr_tensor_type_size(type);
}

/* Where position `p` of the token in `row` keeps its K and V for kv head
 * `kv_head` (offset in floats from the start of the cache). */
static inline size_t mr_cpu_kv_offset(const mr_attention_args *a, int row, int p, int kv_head)
{
    int32_t block =
        a->block_table[(size_t)a->seq[row] * (size_t)a->max_blocks + (size_t)(p / a->block_size)];
    size_t slot = (size_t)block * (size_t)a->block_size + (size_t)(p % a->block_size);
    return (slot * (size_t)a->n_kv_heads + (size_t)kv_head) * (size_t)a->head_dim;
}

/* The reference ops (cpu_ref.c).  Rows run across be->threads, which is 1
 * for the ref backend; the fast backend uses them as they are for its cheap
 * ops, and for every op on a CPU without AVX-512. */
int mr_ref_embed(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                 const int32_t *ids, int rows, int dim);
int mr_ref_rmsnorm(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                   int rows, int dim, float eps);
int mr_ref_matmul(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                  int rows, int out_dim, int in_dim);
int mr_ref_rope_neox(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                     int head_dim, float theta);
int mr_ref_kv_store(mr_backend *be, float *k_cache, float *v_cache, const float *k, const float *v,
                    const int32_t *slot, int rows, int kv_dim);
int mr_ref_attention(mr_backend *be, float *out, const float *q, const float *k_cache,
                     const float *v_cache, const mr_attention_args *a);
int mr_ref_route(mr_backend *be, const mr_route_args *a);
int mr_ref_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
int mr_ref_gather(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                  int dim);
int mr_ref_add(mr_backend *be, float *y, const float *x, size_t n);
/* Expert parallelism's data path (cpu_ep.c), the same in both backends. */
int mr_cpu_ep_layout(mr_backend *be, const mr_ep_send *s);
int mr_cpu_ep_pack(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                   mr_ep_pack_part part);
int mr_cpu_ep_unpack(mr_backend *be, const mr_ep_recv *r, const void *msg, int src);
int mr_cpu_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                               int tokens);
int mr_cpu_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                             const mr_ep_send *s);
/* The cheap ops, the same in both CPU backends. */
#define MR_CPU_CHEAP_OPS                                                                           \
    .embed = mr_ref_embed, .rope_neox = mr_ref_rope_neox, .kv_store = mr_ref_kv_store,             \
    .route = mr_ref_route, .gather = mr_ref_gather, .add = mr_ref_add,                             \
    .ep_layout = mr_cpu_ep_layout, .ep_pack = mr_cpu_ep_pack, .ep_unpack = mr_cpu_ep_unpack,       \
    .ep_combine_partials = mr_cpu_ep_combine_partials,                                             \
    .ep_combine_reduce = mr_cpu_ep_combine_reduce

#endif
