/* Private to kernels/: the fast CPU backend's state and AVX-512 helpers.
 *
 * Batch invariance rests on one rule kept by every helper here: a value is
 * computed by the same instructions on the same inputs in the same order
 * wherever it sits (which tile, which lane, which thread).  Dot products run
 * 16 lanes, lane l taking k = l, l+16, ... in increasing k with one FMA each
 * (a tail shorter than 16 is loaded masked, as zeros), then add the lanes in
 * one fixed tree (reduce16). */
#ifndef MR_KERNELS_CPU_FAST_INTERNAL_H
#define MR_KERNELS_CPU_FAST_INTERNAL_H

#include <immintrin.h>
#include <stdbool.h>

#include "kernels/cpu_internal.h"

#define MR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define MR_AVX512_INLINE MR_AVX512 __attribute__((always_inline)) static inline

typedef struct mr_cpu_arena_chunk mr_cpu_arena_chunk;

typedef struct {
    bool avx512;           /* checked once at create */
    bool avx2;             /* AVX2 and FMA, when there is no AVX-512; with neither, ops run mr_ref_* */
    mr_cpu_scratch expert; /* expert_ffn's gate and up outputs, [rows][inter] each */
    mr_cpu_arena_chunk *weights; /* huge-page copies of the weights (cpu_weights.c) */
} mr_cpu_fast;

int mr_cpu_fast_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out);
void mr_cpu_fast_free_weights(mr_cpu_fast *fast);

static inline bool mr_fast_avx512(const mr_backend *be)
{
    return ((const mr_cpu_fast *)be->impl)->avx512;
}

static inline bool mr_fast_avx2(const mr_backend *be)
{
    return ((const mr_cpu_fast *)be->impl)->avx2;
}

/* AVX2 and FMA, whether or not AVX-512 is there too: every AVX-512 CPU has
 * them, so cpu_avx2.c's kernels serve it where the AVX-512 ones do not. */
static inline bool mr_fast_has_avx2(const mr_backend *be)
{
    return mr_fast_avx2(be) || mr_fast_avx512(be);
}

/* cpu_avx2.c: the same ops on AVX2 and FMA.  A tile is as cpu_matmul.c's:
 * out[r * (16 / rows) + c] = x[r] · w[c], prefetching the bytes of ahead[c]
 * (up to ahead_len) as it reads the same bytes of w[c]. */
void mr_avx2_tile(float out[16], const float *const *x, const void *const *w,
                  const void *const *ahead, size_t ahead_len, int rows, mr_tensor_type type,
                  int k_len);
void mr_avx2_silu_mul(float *gate, const float *up, int n);
void mr_avx2_rmsnorm_row(float *out, const float *x, const void *w, mr_tensor_type type, int dim,
                         float eps);
void mr_avx2_attend_head(float *out, const float *q, const void *k_cache, const void *v_cache,
                         const mr_attention_args *a, int row, int kv_head);
void mr_avx2_mla_head(float *out, const float *q_lat, const float *q_rope,
                      const void *latent_cache, const void *rope_cache, const mr_mla_args *a,
                      int row);

/* The lanes k .. k+15 of a weight row as f32 (bf16 widens exactly: its bits
 * are the top half of an f32); lanes outside `mask` are 0. */
MR_AVX512_INLINE __m512 mr_load16(const void *row, mr_tensor_type type, int k, __mmask16 mask)
{
    if (type == MR_TENSOR_BF16) {
        __m256i half = _mm256_maskz_loadu_epi16(mask, (const uint16_t *)row + k);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
    }
    return _mm512_maskz_loadu_ps(mask, (const float *)row + k);
}

/* Lanes that remain when `left` (< 16) elements are left. */
MR_AVX512_INLINE __mmask16 mr_tail_mask(int left)
{
    return (__mmask16)((1u << left) - 1u);
}

/* ((l0+l8) + (l4+l12)) + ((l2+l10) + (l6+l14)) + ... : halves, then quarters. */
MR_AVX512_INLINE float mr_reduce16(__m512 v)
{
    __m256 eighths = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 quarters =
        _mm_add_ps(_mm256_castps256_ps128(eighths), _mm256_extractf128_ps(eighths, 1));
    __m128 pairs = _mm_add_ps(quarters, _mm_movehl_ps(quarters, quarters));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
}

/* Sixteen reductions at once: lane j of the result is the sum of v[j]'s
 * lanes, by the same tree as mr_reduce16 (so the same bits), in a third of
 * the shuffles and adds. */
MR_AVX512_INLINE __m512 mr_reduce16x16(const __m512 v[16])
{
    __m512 halves[8], quarters[4], pairs[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* [a.lo256 + a.hi256 | b.lo256 + b.hi256] */
        halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                                  _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* 128-bit chunk j: source 4i + j, l + l+4 */
        quarters[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0x88),
                                    _mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0xdd));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* chunk j: sources 8i + j and 8i + 4 + j, l + l+2 */
        pairs[i] = _mm512_add_ps(_mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0x44),
                                 _mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0xee));
    /* chunk j: sources j, 4 + j, 8 + j, 12 + j */
    __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], 0x88),
                                _mm512_shuffle_ps(pairs[0], pairs[1], 0xdd));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, sums);
}

/* e^x lane by lane, within 2 ulp of the exact value: x = n ln2 + r with |r| <= ln2/2,
 * e^r by a degree-7 polynomial, then scaled by 2^n.  Below -104 it underflows
 * to 0 or a denormal, above 89 it is infinity, NaN stays NaN. */
MR_AVX512_INLINE __m512 mr_exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* x · w over n elements, f32 both. */
MR_AVX512_INLINE float mr_dot16(const float *x, const float *w, int n)
{
    __m512 acc = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= n; k += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), acc);
    if (k < n) {
        __mmask16 m = mr_tail_mask(n - k);
        acc =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + k), _mm512_maskz_loadu_ps(m, w + k), acc);
    }
    return mr_reduce16(acc);
}

int mr_fast_matmul(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                   int rows, int out_dim, int in_dim);
int mr_fast_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                         mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                         int head_stride_rows);
int mr_fast_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g);
int mr_fast_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                      const void *v_cache, const mr_attention_args *a);
int mr_fast_mla_attention(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                          const void *latent_cache, const void *rope_cache, const mr_mla_args *a);

#endif
