/*
 * The "cpu" backend: AVX-512 kernels on OpenMP threads for the ops that
 * carry the arithmetic (matmul, expert FFN, attention, RMSNorm); the cheap
 * ops are the reference ones run across threads.  On a CPU without AVX-512
 * but with AVX2 and FMA the same ops run cpu_avx2.c's kernels; with
 * neither, the exact backend's scalar loops (cpu_exact.c).  All three give
 * the same bits: exact.h defines them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_fast_internal.h"

int mr_cpu_fast_init(mr_backend *be, char *err, size_t errlen)
{
    mr_cpu_fast *fast = calloc(1, sizeof *fast);
    if (!fast) {
        snprintf(err, errlen, "backend \"cpu\": out of memory");
        return -1;
    }
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    fast->avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    /* MR_CPU_ISA=avx2 or =ref takes a slower path on purpose: tests and
     * benchmarks compare the paths on one machine. */
    const char *isa = getenv("MR_CPU_ISA");
    if (isa && (strcmp(isa, "avx2") == 0 || strcmp(isa, "ref") == 0))
        fast->avx512 = false;
    if (isa && strcmp(isa, "ref") == 0)
        avx2 = false;
    fast->avx2 = !fast->avx512 && avx2;
    be->impl = fast;
    return 0;
}

void mr_cpu_fast_release(mr_backend *be)
{
    mr_cpu_fast *fast = be->impl;
    if (!fast)
        return;
    mr_cpu_scratch_free(&fast->expert);
    mr_cpu_fast_free_weights(fast);
    free(fast);
    be->impl = NULL;
}

/* exact.h's: x * (1 / sqrt(mean + eps)) * w, the mean from mr_dot16. */
MR_AVX512 static void rmsnorm_row(float *out, const float *x, const void *w, mr_tensor_type type,
                                  int dim, float eps)
{
    float inv_rms = 1.0f / sqrtf(mr_dot16(x, x, dim) / (float)dim + eps);
    __m512 scale = _mm512_set1_ps(inv_rms);
    for (int i = 0; i < dim; i += 16) {
        __mmask16 m = dim - i >= 16 ? (__mmask16)0xffff : mr_tail_mask(dim - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, mr_load16(w, type, i, m)));
    }
}

static int fast_rmsnorm(mr_backend *be, float *out, const float *x, const void *w,
                        mr_tensor_type type, int rows, int dim, float eps)
{
    if ((!mr_fast_avx512(be) && !mr_fast_avx2(be)) ||
        (type != MR_TENSOR_F32 && type != MR_TENSOR_BF16))
        return mr_exact_rmsnorm(be, out, x, w, type, rows, dim, eps);
    int rc = mr_kernels_check_rows(be, "rmsnorm", rows, dim);
    if (rc != MR_KERNELS_OK)
        return rc;
    bool avx512 = mr_fast_avx512(be);
#pragma omp parallel for num_threads(be->threads) if (rows > 1)
    for (int r = 0; r < rows; r++) {
        size_t at = (size_t)r * (size_t)dim;
        if (avx512)
            rmsnorm_row(out + at, x + at, w, type, dim, eps);
        else
            mr_avx2_rmsnorm_row(out + at, x + at, w, type, dim, eps);
    }
    return MR_KERNELS_OK;
}

/* Experts a softmax router row takes on the vector path (its terms on
 * the stack); more take exact.h's row, the same bits. */
#define MAX_VECTOR_ROUTED 1024

/* exact.h's softmax router row (mr_exact_router_row) with its e^x sixteen
 * experts at a time: mr_exp16 is mr_exact_exp lane by lane, and the terms
 * are summed and ranked in expert order as there, so the picks and
 * weights are the same bits.  exact.h's row calls libm's fmaf nine times
 * per e^x: a prefill of 8192 tokens spent 2.5% of its step routing. */
MR_AVX512 static void softmax_route_row(const mr_route_args *a, int r)
{
    int n = a->n_experts, k = a->k;
    if (a->scoring != MR_ROUTE_SOFTMAX || n > MAX_VECTOR_ROUTED) {
        mr_exact_route_row(a, r);
        return;
    }
    const float *logits = a->logits + (size_t)r * (size_t)n;
    float terms[MAX_VECTOR_ROUTED], max = -INFINITY, total = 0;
    for (int e = 0; e < n; e++)
        max = fmaxf(max, logits[e]);
    for (int e = 0; e < n; e += 16) {
        __mmask16 m = n - e >= 16 ? (__mmask16)0xffff : mr_tail_mask(n - e);
        __m512 shifted = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, logits + e), _mm512_set1_ps(max));
        _mm512_mask_storeu_ps(terms + e, m, mr_exp16(shifted));
    }
    for (int e = 0; e < n; e++)
        total += terms[e];
    int32_t *ids = a->slots + (size_t)r * (size_t)k;
    float *weights = a->weights + (size_t)r * (size_t)k;
    int kept = 0;
    for (int e = 0; e < n; e++)
        mr_exact_keep_best(ids, weights, &kept, k, e, terms[e] / total);
    if (a->renormalize)
        mr_exact_router_renormalize(weights, k);
}

static int fast_route(mr_backend *be, const mr_route_args *a)
{
    return mr_cpu_route_rows(be, mr_fast_avx512(be) ? softmax_route_row : mr_exact_route_row, a);
}

const mr_ops mr_cpu_fast_ops = {
    .name = "cpu",
    MR_CPU_MEMORY_OPS,
    MR_CPU_CHEAP_OPS,
    .map_weights = mr_cpu_fast_map_weights,
    .rmsnorm = fast_rmsnorm,
    .route = fast_route,
    .matmul = mr_fast_matmul,
    .matmul_heads = mr_fast_matmul_heads,
    .attention = mr_fast_attention,
    .mla_attention = mr_fast_mla_attention,
    .expert_ffn = mr_fast_expert_ffn,
};
