/* Private to kernels/: what the CPU backends share ("cpu", "ref", "exact",
 * and "fenced", which runs cpu's ops). */
#ifndef MR_KERNELS_CPU_INTERNAL_H
#define MR_KERNELS_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend_internal.h"
#include "kernels/exact.h"
#include "kernels/kernels.h"

extern const mr_ops mr_cpu_ref_ops;
extern const mr_ops mr_cpu_fast_ops;
extern const mr_ops mr_cpu_exact_ops;

/* The fast backend's state (scratch, whether AVX-512 is used) in be->impl. */
int mr_cpu_fast_init(mr_backend *be, char *err, size_t errlen);
void mr_cpu_fast_release(mr_backend *be);

/* The "fenced" backend (fenced.c): cpu's ops on memory the host cannot
 * touch outside them; its state, cpu's among it, in be->impl. */
extern const mr_ops mr_fenced_ops;
int mr_fenced_init(mr_backend *be, char *err, size_t errlen);
void mr_fenced_release(mr_backend *be);

/* Rows of an op across be->threads, which is 1 for the ref backend.  A
 * row's arithmetic never depends on the others. */
#define FOR_EACH_ROW _Pragma("omp parallel for num_threads(be->threads) if (be->threads > 1)")

/* Host memory, shared by both CPU backends (cpu_memory.c). */
int mr_cpu_alloc(mr_backend *be, size_t bytes, void **out);
int mr_cpu_free(mr_backend *be, void *ptr);
int mr_cpu_copy(mr_backend *be, void *dst, const void *src, size_t bytes);
int mr_cpu_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out);
int mr_cpu_sync(mr_backend *be);
int mr_cpu_memory(mr_backend *be, size_t *available, size_t *total);
#define MR_CPU_MEMORY_OPS                                                                          \
    .host_memory = true, .alloc = mr_cpu_alloc, .free = mr_cpu_free, .upload = mr_cpu_copy, .download = mr_cpu_copy,    \
    .memory = mr_cpu_memory,                                                                       \
    .sync = mr_cpu_sync

/* A buffer that only ever grows, so hot ops stop allocating once warm.
 * Returns NULL when it cannot grow. */
typedef struct {
    void *ptr;
    size_t bytes;
} mr_cpu_scratch;
void *mr_cpu_scratch_get(mr_cpu_scratch *s, size_t bytes);
void mr_cpu_scratch_free(mr_cpu_scratch *s);

/* The row loops of rmsnorm, matmul, attention and expert_ffn (cpu_ref.c):
 * each checks its arguments and runs a backend's row function over every
 * row across be->threads.  ref passes its double-sum rows, exact the
 * exact.h ones. */
typedef void mr_cpu_rmsnorm_row(float *out, const float *x, const void *w, mr_tensor_type type,
                                int dim, float eps);
typedef void mr_cpu_matmul_row(float *out, const float *x, const void *w, mr_tensor_type type,
                               int out_dim, int in_dim);
typedef void mr_cpu_attention_row(float *out, const float *q, const void *k_cache,
                                  const void *v_cache, const mr_attention_args *a, int row);
/* h: inter floats of scratch, one set per thread. */
typedef void mr_cpu_expert_row(float *out, const float *x, const mr_expert_groups *g, int group,
                               float *h);
int mr_cpu_rmsnorm_rows(mr_backend *be, mr_cpu_rmsnorm_row *row, float *out, const float *x,
                        const void *w, mr_tensor_type type, int rows, int dim, float eps);
int mr_cpu_matmul_rows(mr_backend *be, mr_cpu_matmul_row *row, float *out, const float *x,
                       const void *w, mr_tensor_type type, int rows, int out_dim, int in_dim);
/* The same for matmul_heads: each (row, head) one row over its head's slice. */
int mr_cpu_matmul_heads_rows(mr_backend *be, mr_cpu_matmul_row *row, float *out, const float *x,
                             const void *w, mr_tensor_type type, int rows, int heads,
                             int out_dim, int in_dim, int head_stride_rows);
int mr_cpu_attention_rows(mr_backend *be, mr_cpu_attention_row *row, float *out, const float *q,
                          const void *k_cache, const void *v_cache, const mr_attention_args *a);
int mr_cpu_expert_rows(mr_backend *be, mr_cpu_expert_row *row, float *out, const float *x,
                       const mr_expert_groups *g);

/* The reference ops (cpu_ref.c).  Rows run across be->threads, which is 1
 * for the ref backend; the cpu backend uses the cheap ones as they are. */
int mr_ref_embed(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                 const int32_t *ids, int rows, int dim);
int mr_ref_rmsnorm(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                   int rows, int dim, float eps);
int mr_ref_matmul(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                  int rows, int out_dim, int in_dim);
int mr_ref_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                        mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                        int head_stride_rows);
int mr_ref_rope_neox(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                     int head_dim, const float *cos_sin);
int mr_ref_kv_store(mr_backend *be, void *k_cache, void *v_cache, mr_tensor_type kv_type,
                    const float *k, const float *v, const int32_t *slot, int rows, int kv_dim);
int mr_ref_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                     const void *v_cache, const mr_attention_args *a);
/* The exact backend's ops (cpu_exact.c): exact.h in plain loops.  The
 * cpu backend runs them on a CPU with neither AVX-512 nor AVX2, so its
 * bits never depend on the CPU.  Route's driver is every CPU backend's;
 * the cpu backend gives it a vector row where it has one. */
int mr_exact_rmsnorm(mr_backend *be, float *out, const float *x, const void *w,
                     mr_tensor_type type, int rows, int dim, float eps);
int mr_exact_matmul(mr_backend *be, float *out, const float *x, const void *w,
                    mr_tensor_type type, int rows, int out_dim, int in_dim);
int mr_exact_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                          mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                          int head_stride_rows);
int mr_exact_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                       const void *v_cache, const mr_attention_args *a);
int mr_exact_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
int mr_exact_route(mr_backend *be, const mr_route_args *a);
/* Route's driver (cpu_exact.c): checks, `row` for every row across
 * threads, then the counts and slots in one pass. */
typedef void mr_cpu_route_row(const mr_route_args *a, int r);
int mr_cpu_route_rows(mr_backend *be, mr_cpu_route_row *row, const mr_route_args *a);
/* Every CPU backend's MLA: exact.h's head, rows and heads across threads
 * (its vector kernels are still to be written). */
int mr_exact_mla_attention(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                           const void *latent_cache, const void *rope_cache,
                           const mr_mla_args *a);
int mr_ref_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
int mr_ref_gather(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                  int dim);
int mr_ref_add(mr_backend *be, float *y, const float *x, size_t n);
int mr_ref_fill_uniform(mr_backend *be, void *dst, mr_tensor_type type, size_t n, uint64_t seed,
                        float lo, float hi);
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
    .gather = mr_ref_gather,                                                                       \
    .add = mr_ref_add,                                                                             \
    .fill_uniform = mr_ref_fill_uniform,                                                           \
    .ep_layout = mr_cpu_ep_layout, .ep_pack = mr_cpu_ep_pack, .ep_unpack = mr_cpu_ep_unpack,       \
    .ep_combine_partials = mr_cpu_ep_combine_partials,                                             \
    .ep_combine_reduce = mr_cpu_ep_combine_reduce

#endif
