/*
 * The fast CPU backend's kernels on CPUs with AVX2 and FMA but no AVX-512
 * (many AMD EPYC and older Intel parts): without them every op would run
 * the double-precision reference, some fifty times slower.
 *
 * A dot product keeps the 16-lane order of cpu_fast_internal.h, each
 * 16-lane accumulator held as two 8-lane halves (lanes 0-7 and 8-15), one
 * FMA per lane in increasing k, a short tail loaded as zeros, and the lanes
 * added in mr_reduce16's tree (l + l+8 first): the same operations on the
 * same values as the AVX-512 tile, so a matmul or expert FFN value is
 * meant to come out the same bits on either (the AVX-512 machines check
 * it; this one cannot).  SiLU and attention follow exact.h step by step
 * (its scalar e^x, its chunked softmax), so they too give the AVX-512
 * kernels' bits.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_fast_internal.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE AVX2 __attribute__((always_inline)) static inline

/* Eight e4m3 codes widened to f32 exactly, as mr_exact_e4m3 does, in
 * integer steps (a gather from a table of 256 values ran FP8 matmuls at
 * half bf16's speed on Zen): a normal code's exponent and mantissa move to
 * an f32's places and its bias from 7 to 127; a subnormal one (exponent
 * 0) is its mantissa times 2^-9; S.1111.111 is NaN. */
AVX2_INLINE __m256 e4m3x8(__m128i codes8)
{
    __m256i c = _mm256_cvtepu8_epi32(codes8);
    __m256i mag = _mm256_and_si256(c, _mm256_set1_epi32(0x7f));
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24);
    __m256 normal = _mm256_castsi256_ps(
        _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    __m256 subnormal = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
    __m256 small = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
    __m256 v = _mm256_blendv_ps(normal, subnormal, small);
    __m256 nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)));
    v = _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)), nan);
    return _mm256_or_ps(v, _mm256_castsi256_ps(sign));
}

/* Lanes [k, k + n) of a weight row as f32, n <= 8, the rest 0.  An FP8
 * value is its code's value times its block's scale, one rounding, as in
 * exact.h; k steps by 16, so 8 lanes never straddle a block of 128. */
AVX2_INLINE __m256 load8(const void *row, mr_tensor_type type, int k, int n)
{
    if (n >= 8) {
        if (type == MR_TENSOR_F8_BLOCKS) {
            const unsigned char *block =
                (const unsigned char *)row + (size_t)(k / MR_F8_BLOCK) * MR_F8_BLOCK_BYTES;
            float scale;
            memcpy(&scale, block, sizeof scale);
            __m128i codes = _mm_loadl_epi64((const __m128i *)(block + 4 + k % MR_F8_BLOCK));
            return _mm256_mul_ps(e4m3x8(codes), _mm256_set1_ps(scale));
        }
        if (type == MR_TENSOR_BF16) {
            __m128i half = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k));
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
        }
        return _mm256_loadu_ps((const float *)row + k);
    }
    float lanes[8] = {0};
    for (int i = 0; i < n; i++)
        lanes[i] = mr_exact_weight(row, type, (size_t)(k + i));
    return _mm256_loadu_ps(lanes);
}

/* The 16 lanes k .. k+15 (left of them present) as two halves. */
typedef struct {
    __m256 lo, hi;
} v16;

AVX2_INLINE v16 load16(const void *row, mr_tensor_type type, int k, int left)
{
    return (v16){load8(row, type, k, left), load8(row, type, k + 8, left - 8)};
}

AVX2_INLINE v16 fma16(v16 a, v16 b, v16 acc)
{
    return (v16){_mm256_fmadd_ps(a.lo, b.lo, acc.lo), _mm256_fmadd_ps(a.hi, b.hi, acc.hi)};
}

/* mr_reduce16's tree: (lo + hi), then quarters, pairs, the last pair. */
AVX2_INLINE float reduce16(v16 v)
{
    __m256 eighths = _mm256_add_ps(v.lo, v.hi);
    __m128 quarters =
        _mm_add_ps(_mm256_castps256_ps128(eighths), _mm256_extractf128_ps(eighths, 1));
    __m128 pairs = _mm_add_ps(quarters, _mm_movehl_ps(quarters, quarters));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
}

#define TILE 16
#define GROUP 8             /* outputs a sweep keeps in registers */

/* Where weight element k of a row lies from the row's start, for
 * prefetching. */
AVX2_INLINE size_t weight_offset(mr_tensor_type type, int k)
{
    if (type == MR_TENSOR_F8_BLOCKS)
        return (size_t)(k / MR_F8_BLOCK) * MR_F8_BLOCK_BYTES + 4 + (size_t)(k % MR_F8_BLOCK);
    return (size_t)k * mr_tensor_type_size(type);
}

/* One half (lanes 0-7, or 8-15, of every 16) of the dot products of
 * `rows` activation rows with GROUP / rows weight rows, over all of k: a
 * lane's sum depends on its own lane alone, so the halves are summed one
 * after the other, each in the same FMAs, in the same order, as a 16-lane
 * accumulator would, and only GROUP accumulators are live.  (Sixteen
 * 16-lane accumulators are 32 ymm registers, twice what AVX2 has: the
 * compiler spilled them on every FMA.)  The lo sweep streams the weights
 * from memory; the hi sweep finds them in L1 or L2. */
AVX2_INLINE void half_sweep(__m256 sums[GROUP], const float *const *x, const void *const *w,
                            const void *const *ahead, size_t ahead_len, int rows,
                            mr_tensor_type type, int k_len, int half)
{
    int cols = GROUP / rows;
    __m256 acc[GROUP];
#pragma GCC unroll 8
    for (int i = 0; i < GROUP; i++)
        acc[i] = _mm256_setzero_ps();
    for (int k = 0; k < k_len; k += 16) {
        int at = k + 8 * half, left = k_len - at;
        size_t ahead_at = weight_offset(type, k);
        bool fetch = !half && ahead_at < ahead_len;
        __m256 xv[4];
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
            xv[r] = load8(x[r], MR_TENSOR_F32, at, left);
#pragma GCC unroll 8
        for (int c = 0; c < cols; c++) {
            if (fetch)
                _mm_prefetch((const char *)ahead[c] + ahead_at, _MM_HINT_T0);
            __m256 wv = load8(w[c], type, at, left);
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
                acc[r * cols + c] = _mm256_fmadd_ps(xv[r], wv, acc[r * cols + c]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < GROUP; i++)
        sums[i] = acc[i];
}

/* out[r * cols + c] = x[r] · w[c] for rows × (16 / rows) columns, in
 * groups of GROUP / rows columns. */
AVX2_INLINE void tile_rows(float out[TILE], const float *const *x, const void *const *w,
                           const void *const *ahead, size_t ahead_len, int rows,
                           mr_tensor_type type, int k_len)
{
    int cols = TILE / rows, group_cols = GROUP / rows;
    for (int c0 = 0; c0 < cols; c0 += group_cols) {
        __m256 lo[GROUP], hi[GROUP];
        half_sweep(lo, x, w + c0, ahead + c0, ahead_len, rows, type, k_len, 0);
        half_sweep(hi, x, w + c0, ahead + c0, ahead_len, rows, type, k_len, 1);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < group_cols; c++)
                out[r * cols + c0 + c] =
                    reduce16((v16){lo[r * group_cols + c], hi[r * group_cols + c]});
    }
}

AVX2 void mr_avx2_tile(float out[16], const float *const *x, const void *const *w,
                       const void *const *ahead, size_t ahead_len, int rows, mr_tensor_type type,
                       int k_len)
{
    /* One instance per height and type, each fully unrolled. */
    if (type == MR_TENSOR_F8_BLOCKS)
        rows == 4   ? tile_rows(out, x, w, ahead, ahead_len, 4, MR_TENSOR_F8_BLOCKS, k_len)
        : rows == 2 ? tile_rows(out, x, w, ahead, ahead_len, 2, MR_TENSOR_F8_BLOCKS, k_len)
                    : tile_rows(out, x, w, ahead, ahead_len, 1, MR_TENSOR_F8_BLOCKS, k_len);
    else if (type == MR_TENSOR_BF16)
        rows == 4   ? tile_rows(out, x, w, ahead, ahead_len, 4, MR_TENSOR_BF16, k_len)
        : rows == 2 ? tile_rows(out, x, w, ahead, ahead_len, 2, MR_TENSOR_BF16, k_len)
                    : tile_rows(out, x, w, ahead, ahead_len, 1, MR_TENSOR_BF16, k_len);
    else
        rows == 4   ? tile_rows(out, x, w, ahead, ahead_len, 4, MR_TENSOR_F32, k_len)
        : rows == 2 ? tile_rows(out, x, w, ahead, ahead_len, 2, MR_TENSOR_F32, k_len)
                    : tile_rows(out, x, w, ahead, ahead_len, 1, MR_TENSOR_F32, k_len);
}

/* x · w over n elements, w of `type`, in the 16-lane order. */
AVX2_INLINE float dot16(const float *x, const void *w, mr_tensor_type type, int n)
{
    v16 acc = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int k = 0; k < n; k += 16)
        acc = fma16(load16(x, MR_TENSOR_F32, k, n - k), load16(w, type, k, n - k), acc);
    return reduce16(acc);
}

AVX2 void mr_avx2_silu_mul(float *gate, const float *up, int n)
{
    for (int j = 0; j < n; j++)
        gate[j] = mr_exact_silu_mul(gate[j], up[j]);
}

AVX2 void mr_avx2_rmsnorm_row(float *out, const float *x, const void *w, mr_tensor_type type,
                              int dim, float eps)
{
    float inv_rms = 1.0f / sqrtf(dot16(x, x, MR_TENSOR_F32, dim) / (float)dim + eps);
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * inv_rms * mr_exact_weight(w, type, (size_t)i);
}

/* out = fmaf(w[p], rows[p][i], out * rescale) over p < n in position
 * order, 8 coordinates at a time (each coordinate's arithmetic is
 * exact.h's): the values of attention and the latents of MLA. */
AVX2_INLINE void accumulate_values(float *out, float rescale, const float *weights,
                                   const void *const *rows, mr_tensor_type type, int n, int d)
{
    for (int i = 0; i < d; i += 8) {
        int lanes = d - i < 8 ? d - i : 8;
        __m256 acc = _mm256_mul_ps(load8(out, MR_TENSOR_F32, i, lanes), _mm256_set1_ps(rescale));
        for (int p = 0; p < n; p++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(weights[p]), load8(rows[p], type, i, lanes), acc);
        float stored[8];
        _mm256_storeu_ps(stored, acc);
        memcpy(out + i, stored, (size_t)lanes * sizeof *out);
    }
}

/* One query head against positions 0..pos of its KV head, in exact.h's
 * mr_exact_attend_head order: scores by dot16, each chunk's softmax by
 * mr_exact_softmax_chunk itself, the values 8 coordinates at a time. */
AVX2 void mr_avx2_attend_head(float *out, const float *q, const void *k_cache,
                              const void *v_cache, const mr_attention_args *a, int row,
                              int kv_head)
{
    int d = a->head_dim, last = a->pos[row];
    float max = -INFINITY, total = 0, weights[MR_EXACT_CHUNK];
    memset(out, 0, (size_t)d * sizeof *out);
    for (int first = 0; first <= last; first += MR_EXACT_CHUNK) {
        int n = last + 1 - first < MR_EXACT_CHUNK ? last + 1 - first : MR_EXACT_CHUNK;
        for (int p = 0; p < n; p++) {
            const void *k = mr_exact_kv_at(k_cache, a, row, first + p, kv_head);
            weights[p] = dot16(q, k, a->kv_type, d) * a->scale;
        }
        float rescale = mr_exact_softmax_chunk(weights, n, &max, &total);
        const void *values[MR_EXACT_CHUNK];
        for (int p = 0; p < n; p++)
            values[p] = mr_exact_kv_at(v_cache, a, row, first + p, kv_head);
        accumulate_values(out, rescale, weights, values, a->kv_type, n, d);
    }
    float inv_total = 1.0f / total;
    for (int i = 0; i < d; i++)
        out[i] *= inv_total;
}

/* One MLA head in exact.h's mr_exact_mla_head order: a score is dot16 of
 * the latent part plus dot16 of the rope part, times scale; each chunk's
 * softmax by mr_exact_softmax_chunk itself; the latents 8 coordinates at
 * a time. */
AVX2 void mr_avx2_mla_head(float *out, const float *q_lat, const float *q_rope,
                           const void *latent_cache, const void *rope_cache, const mr_mla_args *a,
                           int row)
{
    int last = a->pos[row];
    float max = -INFINITY, total = 0, weights[MR_EXACT_CHUNK];
    const void *latents[MR_EXACT_CHUNK];
    memset(out, 0, (size_t)a->latent * sizeof *out);
    for (int first = 0; first <= last; first += MR_EXACT_CHUNK) {
        int n = last + 1 - first < MR_EXACT_CHUNK ? last + 1 - first : MR_EXACT_CHUNK;
        for (int p = 0; p < n; p++) {
            size_t slot = mr_exact_mla_slot(a, row, first + p);
            latents[p] = mr_exact_cache_row(latent_cache, a->kv_type, slot, a->latent);
            const void *k = mr_exact_cache_row(rope_cache, a->kv_type, slot, a->rope);
            weights[p] = (dot16(q_lat, latents[p], a->kv_type, a->latent) +
                          dot16(q_rope, k, a->kv_type, a->rope)) *
                         a->scale;
        }
        float rescale = mr_exact_softmax_chunk(weights, n, &max, &total);
        accumulate_values(out, rescale, weights, latents, a->kv_type, n, a->latent);
    }
    float inv_total = 1.0f / total;
    for (int i = 0; i < a->latent; i++)
        out[i] *= inv_total;
}
