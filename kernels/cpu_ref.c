/*
 * The "ref" backend: every op as plain loops on one thread, the definition
 * the other backends are tested against.  Dot products and sums of squares
 * accumulate in double, so the reference sits closer to the exact value
 * than any f32 kernel and a difference measures the other kernel's error.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_internal.h"
#include "kernels/exact.h"

static double dot(const float *x, const void *w, mr_tensor_type type, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)x[i] * (double)mr_exact_weight(w, type, (size_t)i);
    return sum;
}

static void embed_row(float *out, const void *table, mr_tensor_type type, int32_t id, int dim)
{
    const void *row = mr_exact_weight_row(table, type, (size_t)id, dim);
    for (int i = 0; i < dim; i++)
        out[i] = mr_exact_weight(row, type, (size_t)i);
}

/* As Hugging Face's Qwen3 RMSNorm: x * (1 / sqrt(mean + eps)), then * w. */
static void rmsnorm_row(float *out, const float *x, const void *w, mr_tensor_type type, int dim,
                        float eps)
{
    double squares = 0;
    for (int i = 0; i < dim; i++)
        squares += (double)x[i] * (double)x[i];
    float inv_rms = 1.0f / sqrtf((float)(squares / dim) + eps);
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * inv_rms * mr_exact_weight(w, type, (size_t)i);
}

static void matmul_row(float *out, const float *x, const void *w, mr_tensor_type type, int out_dim,
                       int in_dim)
{
    for (int n = 0; n < out_dim; n++)
        out[n] = (float)dot(x, mr_exact_weight_row(w, type, (size_t)n, in_dim), type, in_dim);
}

static void kv_store_row(void *k_cache, void *v_cache, mr_tensor_type type, const float *k,
                         const float *v, int32_t slot, int kv_dim)
{
    size_t at = (size_t)slot * (size_t)kv_dim;
    for (int i = 0; i < kv_dim; i++) {
        mr_exact_store(k_cache, type, at + (size_t)i, k[i]);
        if (v_cache)
            mr_exact_store(v_cache, type, at + (size_t)i, v[i]);
    }
}

static float score(const float *q, const void *k_cache, const mr_attention_args *a, int row, int p,
                   int kv_head)
{
    const void *k = mr_exact_kv_at(k_cache, a, row, p, kv_head);
    return (float)dot(q, k, a->kv_type, a->head_dim) * a->scale;
}

/* Three passes over the keys (max, sum, weighted V) recompute the scores
 * rather than store them, so the reference needs no scratch memory; the
 * weighted sum of V accumulates in f32 in `out` itself. */
static void attention_row(float *out, const float *q, const void *k_cache, const void *v_cache,
                          const mr_attention_args *a, int row)
{
    int group = a->n_q_heads / a->n_kv_heads, last = a->pos[row], d = a->head_dim;
    for (int h = 0; h < a->n_q_heads; h++) {
        const float *qh = q + (size_t)h * (size_t)d;
        float *oh = out + (size_t)h * (size_t)d;
        int kv_head = h / group;
        float max = -INFINITY;
        for (int p = 0; p <= last; p++)
            max = fmaxf(max, score(qh, k_cache, a, row, p, kv_head));
        double total = 0;
        for (int p = 0; p <= last; p++)
            total += exp((double)score(qh, k_cache, a, row, p, kv_head) - max);
        for (int i = 0; i < d; i++)
            oh[i] = 0;
        for (int p = 0; p <= last; p++) {
            float weight =
                (float)(exp((double)score(qh, k_cache, a, row, p, kv_head) - max) / total);
            const void *v = mr_exact_kv_at(v_cache, a, row, p, kv_head);
            for (int i = 0; i < d; i++)
                oh[i] += weight * mr_exact_weight(v, a->kv_type, (size_t)i);
        }
    }
}

static void expert_row(float *out, const float *x, const mr_expert_groups *g, int group, float *h)
{
    for (int j = 0; j < g->inter; j++) {
        const void *gate_row = mr_exact_weight_row(g->gate[group], g->type, (size_t)j, g->hidden);
        const void *up_row = mr_exact_weight_row(g->up[group], g->type, (size_t)j, g->hidden);
        float gate = (float)dot(x, gate_row, g->type, g->hidden);
        float up = (float)dot(x, up_row, g->type, g->hidden);
        h[j] = gate / (1.0f + expf(-gate)) * up;
    }
    matmul_row(out, h, g->down[group], g->type, g->hidden, g->inter);
}

/* ---- the ops: each row function over every row (FOR_EACH_ROW) ---- */

int mr_ref_embed(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                 const int32_t *ids, int rows, int dim)
{
    int rc = mr_kernels_check_rows(be, "embed", rows, dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++)
        embed_row(out + (size_t)r * (size_t)dim, table, type, ids[r], dim);
    return MR_KERNELS_OK;
}

int mr_cpu_rmsnorm_rows(mr_backend *be, mr_cpu_rmsnorm_row *row, float *out, const float *x,
                        const void *w, mr_tensor_type type, int rows, int dim, float eps)
{
    int rc = mr_kernels_check_rows(be, "rmsnorm", rows, dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++) {
        size_t at = (size_t)r * (size_t)dim;
        row(out + at, x + at, w, type, dim, eps);
    }
    return MR_KERNELS_OK;
}

int mr_ref_rmsnorm(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                   int rows, int dim, float eps)
{
    return mr_cpu_rmsnorm_rows(be, rmsnorm_row, out, x, w, type, rows, dim, eps);
}

int mr_cpu_matmul_rows(mr_backend *be, mr_cpu_matmul_row *row, float *out, const float *x,
                       const void *w, mr_tensor_type type, int rows, int out_dim, int in_dim)
{
    int rc = mr_kernels_check_matmul(be, rows, out_dim, in_dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++)
        row(out + (size_t)r * (size_t)out_dim, x + (size_t)r * (size_t)in_dim, w, type, out_dim,
            in_dim);
    return MR_KERNELS_OK;
}

int mr_ref_matmul(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                  int rows, int out_dim, int in_dim)
{
    return mr_cpu_matmul_rows(be, matmul_row, out, x, w, type, rows, out_dim, in_dim);
}

/* Each (row, head) is one matmul row over its head's weight slice. */
int mr_cpu_matmul_heads_rows(mr_backend *be, mr_cpu_matmul_row *row, float *out, const float *x,
                             const void *w, mr_tensor_type type, int rows, int heads,
                             int out_dim, int in_dim, int head_stride_rows)
{
    int rc = mr_kernels_check_matmul_heads(be, rows, heads, out_dim, in_dim, head_stride_rows);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int i = 0; i < rows * heads; i++) {
        size_t h = (size_t)(i % heads);
        row(out + (size_t)i * (size_t)out_dim, x + (size_t)i * (size_t)in_dim,
            mr_exact_weight_row(w, type, h * (size_t)head_stride_rows, in_dim), type, out_dim,
            in_dim);
    }
    return MR_KERNELS_OK;
}

int mr_ref_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                        mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                        int head_stride_rows)
{
    return mr_cpu_matmul_heads_rows(be, matmul_row, out, x, w, type, rows, heads, out_dim, in_dim,
                                    head_stride_rows);
}

int mr_ref_rope_neox(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                     int head_dim, const float *cos_sin)
{
    int rc = mr_kernels_check_rows(be, "rope_neox", rows, heads * head_dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++)
        mr_exact_rope_row(x + (size_t)r * (size_t)heads * (size_t)head_dim, cos_sin, pos[r],
                          heads, head_dim);
    return MR_KERNELS_OK;
}

int mr_ref_kv_store(mr_backend *be, void *k_cache, void *v_cache, mr_tensor_type kv_type,
                    const float *k, const float *v, const int32_t *slot, int rows, int kv_dim)
{
    int rc = mr_kernels_check_rows(be, "kv_store", rows, kv_dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++) {
        size_t at = (size_t)r * (size_t)kv_dim;
        kv_store_row(k_cache, v_cache, kv_type, k + at, v ? v + at : NULL, slot[r], kv_dim);
    }
    return MR_KERNELS_OK;
}

int mr_cpu_attention_rows(mr_backend *be, mr_cpu_attention_row *row, float *out, const float *q,
                          const void *k_cache, const void *v_cache, const mr_attention_args *a)
{
    int rc = mr_kernels_check_attention(be, a);
    if (rc != MR_KERNELS_OK)
        return rc;
    size_t width = (size_t)a->n_q_heads * (size_t)a->head_dim;
    FOR_EACH_ROW
    for (int r = 0; r < a->rows; r++)
        row(out + (size_t)r * width, q + (size_t)r * width, k_cache, v_cache, a, r);
    return MR_KERNELS_OK;
}

int mr_ref_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                     const void *v_cache, const mr_attention_args *a)
{
    return mr_cpu_attention_rows(be, attention_row, out, q, k_cache, v_cache, a);
}

static int group_of_row(const mr_expert_groups *g, int row)
{
    int group = 0;
    while (g->offsets[group + 1] <= row)
        group++;
    return group;
}

int mr_cpu_expert_rows(mr_backend *be, mr_cpu_expert_row *row, float *out, const float *x,
                       const mr_expert_groups *g)
{
    int rc = mr_kernels_check_groups(be, g);
    if (rc != MR_KERNELS_OK)
        return rc;
    int rows = g->offsets[g->groups];
    float *h = malloc((size_t)be->threads * (size_t)g->inter * sizeof *h + 1);
    if (!h)
        return mr_backend_fail(be, MR_KERNELS_ENOMEM, "expert_ffn: out of memory for %d x %d "
                               "floats of scratch", be->threads, g->inter);
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++) {
        size_t at = (size_t)r * (size_t)g->hidden;
        row(out + at, g->x_rows ? g->x_rows[r] : x + at, g, group_of_row(g, r),
            h + (size_t)omp_get_thread_num() * (size_t)g->inter);
    }
    free(h);
    return MR_KERNELS_OK;
}

int mr_ref_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g)
{
    return mr_cpu_expert_rows(be, expert_row, out, x, g);
}

int mr_ref_gather(mr_backend *be, float *out, const float *x, const int32_t *src, int rows,
                  int dim)
{
    int rc = mr_kernels_check_rows(be, "gather", rows, dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    FOR_EACH_ROW
    for (int r = 0; r < rows; r++)
        memcpy(out + (size_t)r * (size_t)dim, x + (size_t)src[r] * (size_t)dim,
               (size_t)dim * sizeof *out);
    return MR_KERNELS_OK;
}

int mr_ref_fill_uniform(mr_backend *be, void *dst, mr_tensor_type type, size_t n, uint64_t seed,
                        float lo, float hi)
{
    FOR_EACH_ROW
    for (size_t i = 0; i < n; i++)
        mr_exact_store(dst, type, i, mr_exact_uniform(seed, i, lo, hi));
    return MR_KERNELS_OK;
}

int mr_ref_add(mr_backend *be, float *y, const float *x, size_t n)
{
    FOR_EACH_ROW
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
    return MR_KERNELS_OK;
}

/* Hugging Face's Qwen3 rotary embedding step by step in f32, as its
 * inv_freq buffer and f32 outer product are. */
void mr_rope_table(float *out, int positions, int head_dim, float theta)
{
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        for (int pos = 0; pos < positions; pos++) {
            float angle = (float)pos * inv_freq;
            float *at = out + ((size_t)pos * (size_t)half + (size_t)i) * 2;
            at[0] = cosf(angle);
            at[1] = sinf(angle);
        }
    }
}

const mr_ops mr_cpu_ref_ops = {
    .name = "ref",
    MR_CPU_MEMORY_OPS,
    .map_weights = mr_cpu_map_weights,
    MR_CPU_CHEAP_OPS,
    .route = mr_exact_route,
    .mla_attention = mr_exact_mla_attention,
    .rmsnorm = mr_ref_rmsnorm,
    .matmul = mr_ref_matmul,
    .matmul_heads = mr_ref_matmul_heads,
    .attention = mr_ref_attention,
    .expert_ffn = mr_ref_expert_ffn,
};
