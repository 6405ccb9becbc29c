/*
 * The "exact" backend: exact.h's functions in plain loops on the CPU, one
 * output at a time.  It is the bit-level definition that the `cpu`
 * backend's vector kernels and the `cuda` backend's exact mode reproduce:
 * tests compare both with it by memcmp.  Slow (scalar FMAs), and meant
 * only for that; the cheap ops and the EP data path are the CPU ones.
 */
#include "kernels/cpu_internal.h"

int mr_exact_rmsnorm(mr_backend *be, float *out, const float *x, const void *w,
                     mr_tensor_type type, int rows, int dim, float eps)
{
    return mr_cpu_rmsnorm_rows(be, mr_exact_rmsnorm_row, out, x, w, type, rows, dim, eps);
}

static void matmul_row(float *out, const float *x, const void *w, mr_tensor_type type,
                       int out_dim, int in_dim)
{
    for (int n = 0; n < out_dim; n++)
        out[n] = mr_exact_dot(x, mr_exact_weight_row(w, type, (size_t)n, in_dim), type, in_dim);
}

int mr_exact_matmul(mr_backend *be, float *out, const float *x, const void *w,
                    mr_tensor_type type, int rows, int out_dim, int in_dim)
{
    return mr_cpu_matmul_rows(be, matmul_row, out, x, w, type, rows, out_dim, in_dim);
}

int mr_exact_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                          mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                          int head_stride_rows)
{
    return mr_cpu_matmul_heads_rows(be, matmul_row, out, x, w, type, rows, heads, out_dim, in_dim,
                                    head_stride_rows);
}

/* Every query head of one token. */
static void attention_row(float *out, const float *q, const void *k_cache, const void *v_cache,
                          const mr_attention_args *a, int row)
{
    int group = a->n_q_heads / a->n_kv_heads;
    float weights[MR_EXACT_CHUNK];
    for (int h = 0; h < a->n_q_heads; h++) {
        size_t at = (size_t)h * (size_t)a->head_dim;
        mr_exact_attend_head(out + at, q + at, k_cache, v_cache, a, row, h / group, weights);
    }
}

int mr_exact_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                       const void *v_cache, const mr_attention_args *a)
{
    return mr_cpu_attention_rows(be, attention_row, out, q, k_cache, v_cache, a);
}

/* The gate and up dot products of one row, SwiGLU, then down. */
static void expert_row(float *out, const float *x, const mr_expert_groups *g, int group, float *h)
{
    for (int j = 0; j < g->inter; j++) {
        const void *gate_row = mr_exact_weight_row(g->gate[group], g->type, (size_t)j, g->hidden);
        const void *up_row = mr_exact_weight_row(g->up[group], g->type, (size_t)j, g->hidden);
        h[j] = mr_exact_silu_mul(mr_exact_dot(x, gate_row, g->type, g->hidden),
                                 mr_exact_dot(x, up_row, g->type, g->hidden));
    }
    matmul_row(out, h, g->down[group], g->type, g->hidden, g->inter);
}

int mr_exact_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g)
{
    return mr_cpu_expert_rows(be, expert_row, out, x, g);
}

int mr_exact_mla_attention(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                           const void *latent_cache, const void *rope_cache, const mr_mla_args *a)
{
    int rc = mr_kernels_check_mla(be, a);
    if (rc != MR_KERNELS_OK)
        return rc;
    int heads = a->n_heads;
#pragma omp parallel for num_threads(be->threads) if (be->threads > 1)
    for (int i = 0; i < a->rows * heads; i++) {
        float weights[MR_EXACT_CHUNK];
        mr_exact_mla_head(out + (size_t)i * (size_t)a->latent, q_lat + (size_t)i * (size_t)a->latent,
                          q_rope + (size_t)i * (size_t)a->rope, latent_cache, rope_cache, a,
                          i / heads, weights);
    }
    return MR_KERNELS_OK;
}

/* Every CPU backend's route op, with its row function.  The arguments
 * are checked before anything is written, so a failed call leaves the
 * counts as they were.  The top k of every row go first into `slots` as
 * logical ids, across threads; then one pass in (row, pick) order counts
 * them and swaps each for its slot, so the counts need no atomics. */
int mr_cpu_route_rows(mr_backend *be, mr_cpu_route_row *row, const mr_route_args *a)
{
    int rc = mr_kernels_check_route(be, a);
    if (rc != MR_KERNELS_OK)
        return rc;
    for (int e = 0; e < a->n_experts; e++)
        if (a->logcnt[e] < 1 || a->logcnt[e] > a->max_replicas)
            return mr_backend_fail(be, MR_KERNELS_EINVAL,
                                   "route: expert %d has %d replicas; needs 1 to %d", e,
                                   a->logcnt[e], a->max_replicas);
    int k = a->k;
    FOR_EACH_ROW
    for (int r = 0; r < a->rows; r++)
        row(a, r);
    for (size_t i = 0; i < (size_t)a->rows * (size_t)k; i++) {
        int32_t e = a->slots[i];
        a->counts[e]++;
        a->slots[i] = mr_exact_pick_slot(a, e, a->pos[i / (size_t)k]);
    }
    return MR_KERNELS_OK;
}

int mr_exact_route(mr_backend *be, const mr_route_args *a)
{
    return mr_cpu_route_rows(be, mr_exact_route_row, a);
}

const mr_ops mr_cpu_exact_ops = {
    .name = "exact",
    MR_CPU_MEMORY_OPS,
    .map_weights = mr_cpu_map_weights,
    MR_CPU_CHEAP_OPS,
    .route = mr_exact_route,
    .mla_attention = mr_exact_mla_attention,
    .rmsnorm = mr_exact_rmsnorm,
    .matmul = mr_exact_matmul,
    .matmul_heads = mr_exact_matmul_heads,
    .attention = mr_exact_attention,
    .expert_ffn = mr_exact_expert_ffn,
};
