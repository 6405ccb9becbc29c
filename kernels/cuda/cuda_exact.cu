/*
 * The cuda backend's compute ops in exact mode: one GPU thread per output
 * (a matmul value, a row of RMSNorm, a query head of attention), each
 * running exact.h's function for it, so every value is the cpu backend's
 * bits.  Built with -fmad=false: only exact.h's explicit fmaf fuse.
 *
 * These are CUDA-core kernels that read weights with little reuse; they
 * are the oracle and the mixing mode, not the speed.  What they cost on an
 * H200 is measured by tests/gpu/check.sh.
 */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/exact.h"

/* One thread per index below n: the grid for it on the backend's stream. */
#define LAUNCH(n) mr_cuda_blocks(n), MR_CUDA_BLOCK, 0, mr_cuda_of(be)->stream

#define THREAD_INDEX ((size_t)blockIdx.x * blockDim.x + threadIdx.x)

/* ---- embed, gather, add, kv_store: copies ---- */

__global__ void embed_kernel(float *out, const void *table, mr_tensor_type type,
                             const int32_t *ids, int rows, int dim)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * dim)
        return;
    size_t r = i / dim, c = i % dim;
    out[i] = mr_exact_weight(mr_exact_weight_row(table, type, (size_t)ids[r], dim), type, c);
}

int mr_cuda_embed(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                  const int32_t *ids, int rows, int dim)
{
    int rc = mr_kernels_check_rows(be, "embed", rows, dim);
    if (rc != MR_KERNELS_OK || rows == 0)
        return rc;
    embed_kernel<<<LAUNCH((size_t)rows * dim)>>>(out, table, type, ids, rows, dim);
    return mr_cuda_launched(be, "embed");
}

__global__ void gather_kernel(float *out, const float *x, const int32_t *src, int rows, int dim)
{
    size_t i = THREAD_INDEX;
    if (i < (size_t)rows * dim)
        out[i] = x[(size_t)src[i / dim] * dim + i % dim];
}

int mr_cuda_gather(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                   int dim)
{
    int rc = mr_kernels_check_rows(be, "gather", rows, dim);
    if (rc != MR_KERNELS_OK || rows == 0)
        return rc;
    gather_kernel<<<LAUNCH((size_t)rows * dim)>>>(out, x, src, rows, dim);
    return mr_cuda_launched(be, "gather");
}

__global__ void add_kernel(float *y, const float *x, size_t n)
{
    size_t i = THREAD_INDEX;
    if (i < n)
        y[i] += x[i];
}

int mr_cuda_add(mr_backend *be, float *y, const float *x, size_t n)
{
    if (n == 0)
        return MR_KERNELS_OK;
    add_kernel<<<LAUNCH(n)>>>(y, x, n);
    return mr_cuda_launched(be, "add");
}

__global__ void fill_kernel(void *dst, mr_tensor_type type, size_t n, uint64_t seed, float lo,
                            float hi)
{
    size_t i = THREAD_INDEX;
    if (i < n)
        mr_exact_store(dst, type, i, mr_exact_uniform(seed, i, lo, hi));
}

int mr_cuda_fill_uniform(mr_backend *be, void *dst, mr_tensor_type type, size_t n,
                         uint64_t seed, float lo, float hi)
{
    if (n == 0)
        return MR_KERNELS_OK;
    fill_kernel<<<LAUNCH(n)>>>(dst, type, n, seed, lo, hi);
    return mr_cuda_launched(be, "fill_uniform");
}

__global__ void kv_store_kernel(void *k_cache, void *v_cache, mr_tensor_type type, const float *k,
                                const float *v, const int32_t *slot, int rows, int kv_dim)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * kv_dim)
        return;
    size_t at = (size_t)slot[i / kv_dim] * kv_dim + i % kv_dim;
    mr_exact_store(k_cache, type, at, k[i]);
    if (v_cache)
        mr_exact_store(v_cache, type, at, v[i]);
}

int mr_cuda_kv_store(mr_backend *be, void *k_cache, void *v_cache, mr_tensor_type kv_type,
                     const float *k, const float *v, const int32_t *slot, int rows, int kv_dim)
{
    int rc = mr_kernels_check_rows(be, "kv_store", rows, kv_dim);
    if (rc != MR_KERNELS_OK || rows == 0)
        return rc;
    kv_store_kernel<<<LAUNCH((size_t)rows * kv_dim)>>>(k_cache, v_cache, kv_type, k, v, slot,
                                                        rows, kv_dim);
    return mr_cuda_launched(be, "kv_store");
}

/* ---- RMSNorm and RoPE ---- */

__global__ void rmsnorm_kernel(float *out, const float *x, const void *w, mr_tensor_type type,
                               int rows, int dim, float eps)
{
    size_t r = THREAD_INDEX;
    if (r < (size_t)rows)
        mr_exact_rmsnorm_row(out + r * dim, x + r * dim, w, type, dim, eps);
}

int mr_cuda_rmsnorm(mr_backend *be, float *out, const float *x, const void *w,
                    mr_tensor_type type, int rows, int dim, float eps)
{
    int rc = mr_kernels_check_rows(be, "rmsnorm", rows, dim);
    if (rc != MR_KERNELS_OK || rows == 0)
        return rc;
    rmsnorm_kernel<<<LAUNCH((size_t)rows)>>>(out, x, w, type, rows, dim, eps);
    return mr_cuda_launched(be, "rmsnorm");
}

/* One thread per (row, head, pair). */
__global__ void rope_kernel(float *x, const int32_t *pos, int rows, int heads, int head_dim,
                            const float *cos_sin)
{
    int half = head_dim / 2;
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * heads * half)
        return;
    size_t r = i / ((size_t)heads * half), h = i / half % heads, p = i % half;
    const float *angle = cos_sin + (size_t)pos[r] * head_dim + 2 * p;
    float *first = x + (r * heads + h) * head_dim + p;
    mr_exact_rope_pair(first, first + half, angle[0], angle[1]);
}

int mr_cuda_rope_neox(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                      int head_dim, const float *cos_sin)
{
    int rc = mr_kernels_check_rows(be, "rope_neox", rows, heads * head_dim);
    if (rc != MR_KERNELS_OK || rows == 0 || head_dim < 2)
        return rc;
    rope_kernel<<<LAUNCH((size_t)rows * heads * (head_dim / 2))>>>(x, pos, rows, heads, head_dim,
                                                                   cos_sin);
    return mr_cuda_launched(be, "rope_neox");
}

/* ---- matmul ---- */

/* One thread per output; neighbouring threads take neighbouring weight
 * rows of the same input row. */
__global__ void matmul_kernel(float *out, const float *x, const void *w, mr_tensor_type type,
                              int rows, int out_dim, int in_dim)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * out_dim)
        return;
    size_t r = i / out_dim, n = i % out_dim;
    out[i] = mr_exact_dot(x + r * in_dim, mr_exact_weight_row(w, type, n, in_dim), type, in_dim);
}

int mr_cuda_matmul(mr_backend *be, float *out, const float *x, const void *w,
                   mr_tensor_type type, int rows, int out_dim, int in_dim)
{
    int rc = mr_kernels_check_matmul(be, rows, out_dim, in_dim);
    if (rc != MR_KERNELS_OK || rows == 0)
        return rc;
    matmul_kernel<<<LAUNCH((size_t)rows * out_dim)>>>(out, x, w, type, rows, out_dim, in_dim);
    return mr_cuda_launched(be, "matmul");
}

/* One thread per output, as matmul's. */
__global__ void matmul_heads_kernel(float *out, const float *x, const void *w,
                                    mr_tensor_type type, int rows, int heads, int out_dim,
                                    int in_dim, int head_stride_rows)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * heads * out_dim)
        return;
    out[i] = mr_exact_matmul_heads_at(x, w, type, heads, out_dim, in_dim, head_stride_rows, i);
}

int mr_cuda_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                         mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                         int head_stride_rows)
{
    int rc = mr_kernels_check_matmul_heads(be, rows, heads, out_dim, in_dim, head_stride_rows);
    if (rc != MR_KERNELS_OK || rows == 0)
        return rc;
    matmul_heads_kernel<<<LAUNCH((size_t)rows * heads * out_dim)>>>(out, x, w, type, rows, heads,
                                                                    out_dim, in_dim,
                                                                    head_stride_rows);
    return mr_cuda_launched(be, "matmul_heads");
}

/* ---- attention ---- */

/* One thread per (token, query head), the whole context in its order. */
__global__ void attention_kernel(float *out, const float *q, const void *k_cache,
                                 const void *v_cache, mr_attention_args a)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)a.rows * a.n_q_heads)
        return;
    int row = (int)(i / a.n_q_heads), h = (int)(i % a.n_q_heads);
    float weights[MR_EXACT_CHUNK];
    size_t at = i * a.head_dim;
    mr_exact_attend_head(out + at, q + at, k_cache, v_cache, &a, row,
                         h / (a.n_q_heads / a.n_kv_heads), weights);
}

int mr_cuda_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                      const void *v_cache, const mr_attention_args *a)
{
    int rc = mr_kernels_check_attention(be, a);
    if (rc != MR_KERNELS_OK || a->rows == 0)
        return rc;
    attention_kernel<<<LAUNCH((size_t)a->rows * a->n_q_heads)>>>(out, q, k_cache, v_cache, *a);
    return mr_cuda_launched(be, "attention");
}

/* One thread per (row, head) of MLA, exact.h's head. */
__global__ void mla_kernel(float *out, const float *q_lat, const float *q_rope,
                           const void *latent_cache, const void *rope_cache, mr_mla_args a)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)a.rows * a.n_heads)
        return;
    float weights[MR_EXACT_CHUNK];
    mr_exact_mla_head(out + i * a.latent, q_lat + i * a.latent, q_rope + i * a.rope, latent_cache,
                      rope_cache, &a, (int)(i / a.n_heads), weights);
}

int mr_cuda_mla_attention(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                          const void *latent_cache, const void *rope_cache, const mr_mla_args *a)
{
    int rc = mr_kernels_check_mla(be, a);
    if (rc != MR_KERNELS_OK || a->rows == 0)
        return rc;
    mla_kernel<<<LAUNCH((size_t)a->rows * a->n_heads)>>>(out, q_lat, q_rope, latent_cache,
                                                         rope_cache, *a);
    return mr_cuda_launched(be, "mla_attention");
}

/* ---- routing ---- */

__global__ void router_kernel(mr_route_args a)
{
    size_t r = THREAD_INDEX;
    if (r < (size_t)a.rows)
        mr_exact_route_row(&a, (int)r);
}

/* Per pick: count its expert and swap its id for its slot.  Counts are
 * integers, so the atomics' order does not matter. */
__global__ void pick_slots_kernel(mr_route_args a, int *input_error)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)a.rows * a.k)
        return;
    int32_t e = a.slots[i];
    if (a.logcnt[e] < 1 || a.logcnt[e] > a.max_replicas) {
        atomicCAS(input_error, MR_CUDA_INPUT_OK, MR_CUDA_BAD_REPLICAS);
        a.slots[i] = 0;
        return;
    }
    atomicAdd((unsigned long long *)&a.counts[e], 1ull);
    a.slots[i] = mr_exact_pick_slot(&a, e, a.pos[i / a.k]);
}

int mr_cuda_route(mr_backend *be, const mr_route_args *a)
{
    int rc = mr_kernels_check_route(be, a);
    if (rc != MR_KERNELS_OK || a->rows == 0)
        return rc;
    router_kernel<<<LAUNCH((size_t)a->rows)>>>(*a);
    pick_slots_kernel<<<LAUNCH((size_t)a->rows * a->k)>>>(*a, mr_cuda_of(be)->input_error);
    return mr_cuda_launched(be, "route");
}

/* ---- grouped SwiGLU experts ---- */

/* h[r][j] = silu(x_r · gate_j) * (x_r · up_j) for the group's rows. */
__global__ void gate_up_kernel(float *h, const float *x, const float *const *x_rows, int first,
                               int rows, const void *gate, const void *up, mr_tensor_type type,
                               int hidden, int inter)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * inter)
        return;
    size_t r = first + i / inter, j = i % inter;
    const float *xr = x_rows ? x_rows[r] : x + r * hidden;
    float g = mr_exact_dot(xr, mr_exact_weight_row(gate, type, j, hidden), type, hidden);
    float u = mr_exact_dot(xr, mr_exact_weight_row(up, type, j, hidden), type, hidden);
    h[r * inter + j] = mr_exact_silu_mul(g, u);
}

/* out[r][n] = h_r · down_n for the group's rows. */
__global__ void down_kernel(float *out, const float *h, int first, int rows, const void *down,
                            mr_tensor_type type, int hidden, int inter)
{
    size_t i = THREAD_INDEX;
    if (i >= (size_t)rows * hidden)
        return;
    size_t r = first + i / hidden, n = i % hidden;
    out[r * hidden + n] = mr_exact_dot(h + r * inter, mr_exact_weight_row(down, type, n, inter),
                                       type, inter);
}

/* Two launches per group: the groups' weights are host arrays (kernels.h),
 * read here rather than copied to the device. */
int mr_cuda_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g)
{
    int rc = mr_kernels_check_groups(be, g);
    if (rc != MR_KERNELS_OK || g->groups == 0)
        return rc;
    mr_cuda *cu = mr_cuda_of(be);
    size_t rows = (size_t)g->offsets[g->groups];
    float *h = (float *)mr_cuda_scratch_get(be, &cu->hidden, rows * g->inter * sizeof(float) + 1,
                                            "expert_ffn scratch");
    if (!h)
        return MR_KERNELS_ENOMEM;
    for (int e = 0; e < g->groups; e++) {
        int first = g->offsets[e], n = g->offsets[e + 1] - first;
        if (n == 0)
            continue;
        gate_up_kernel<<<LAUNCH((size_t)n * g->inter)>>>(h, x, g->x_rows, first, n, g->gate[e],
                                                        g->up[e], g->type, g->hidden, g->inter);
        down_kernel<<<LAUNCH((size_t)n * g->hidden)>>>(out, h, first, n, g->down[e], g->type,
                                                      g->hidden, g->inter);
    }
    return mr_cuda_launched(be, "expert_ffn");
}
