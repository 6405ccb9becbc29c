/*
 * Paged attention on AVX-512.  A work item is one token and one KV head
 * with up to MAX_HEADS of the query heads that share it (GQA), so the K and
 * V vectors they share are loaded while hot in L1.
 *
 * Keys go in position order in chunks of CHUNK positions that start at
 * multiples of CHUNK.  A chunk's scores sit in the item (no scratch grows
 * with the context) and the softmax is rescaled chunk by chunk, with the
 * running max and sum of flash attention.  Scores come sixteen keys at a
 * time, key j in lane j, each a dot product in the fixed order of
 * cpu_fast_internal.h; a chunk's last sixteen repeat its last key to fill
 * the lanes and mask the repeats out.  Chunks are fixed by position, not by
 * the call, so a token's arithmetic is the same in any batch.  exact.h's
 * mr_exact_attend_head writes the same steps as scalar code.
 */
#include <math.h>
#include <omp.h>

#include "kernels/cpu_fast_internal.h"

#define CHUNK MR_EXACT_CHUNK /* a multiple of 16 */
#define MAX_HEADS 8
#define OUT_VECS 4 /* output vectors a head accumulates at once */

typedef struct {
    int heads; /* query heads in this item, <= MAX_HEADS */
    int dim;
    const float *q[MAX_HEADS];
    float *out[MAX_HEADS];
    float max[MAX_HEADS], total[MAX_HEADS];
    float weights[MAX_HEADS][CHUNK]; /* scores, then exp(score - max) */
    const float *k[CHUNK], *v[CHUNK];
} head_group;

static __mmask16 lanes_below(int n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

/* Scores of q against the sixteen keys k[0..15], key j in lane j. */
MR_AVX512 static __m512 scores16(const float *q, const float *const *k, int dim, float scale)
{
    __m512 acc[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++)
        acc[j] = _mm512_setzero_ps();
    for (int d = 0; d < dim; d += 16) {
        __mmask16 m = lanes_below(dim - d);
        __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k[j] + d), acc[j]);
    }
    return _mm512_mul_ps(mr_reduce16x16(acc), _mm512_set1_ps(scale));
}

/* out *= a over the head's dim. */
MR_AVX512 static void scale_out(float *out, float a, int dim)
{
    for (int d = 0; d < dim; d += 16) {
        __mmask16 m = lanes_below(dim - d);
        _mm512_mask_storeu_ps(out + d, m,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out + d), _mm512_set1_ps(a)));
    }
}

/* The chunk's scores become exp(score - max) with the running max, and
 * the running sum and what each head holds so far are rescaled to it. */
MR_AVX512 static void softmax_chunk(head_group *hg, int n)
{
    for (int h = 0; h < hg->heads; h++) {
        float *w = hg->weights[h];
        __m512 top = _mm512_set1_ps(-INFINITY);
        for (int p = 0; p < n; p += 16)
            top = _mm512_max_ps(top, _mm512_maskz_loadu_ps(lanes_below(n - p), w + p));
        float max = fmaxf(hg->max[h], _mm512_reduce_max_ps(top));
        __m512 vmax = _mm512_set1_ps(max), sum = _mm512_setzero_ps();
        for (int p = 0; p < n; p += 16) {
            __mmask16 m = lanes_below(n - p);
            __m512 e = mr_exp16(_mm512_sub_ps(_mm512_loadu_ps(w + p), vmax));
            e = _mm512_maskz_mov_ps(m, e);
            _mm512_storeu_ps(w + p, e);
            sum = _mm512_add_ps(sum, e);
        }
        float rescale = _mm512_cvtss_f32(mr_exp16(_mm512_set1_ps(hg->max[h] - max)));
        hg->total[h] = hg->total[h] * rescale + mr_reduce16(sum);
        hg->max[h] = max;
        scale_out(hg->out[h], rescale, hg->dim);
    }
}

/* out += Σ_p weights[p] * v[p], in position order, OUT_VECS vectors of the
 * head at a time so the sums stay in registers. */
MR_AVX512 static void accumulate_values(float *out, const float *weights, const float *const *v,
                                        int n, int dim)
{
    for (int d0 = 0; d0 < dim; d0 += 16 * OUT_VECS) {
        __m512 acc[OUT_VECS];
        __mmask16 m[OUT_VECS];
#pragma GCC unroll 4
        for (int i = 0; i < OUT_VECS; i++) {
            m[i] = d0 + 16 * i < dim ? lanes_below(dim - d0 - 16 * i) : 0;
            acc[i] = _mm512_maskz_loadu_ps(m[i], out + d0 + 16 * i);
        }
        for (int p = 0; p < n; p++) {
            __m512 wp = _mm512_set1_ps(weights[p]);
#pragma GCC unroll 4
            for (int i = 0; i < OUT_VECS; i++)
                acc[i] =
                    _mm512_fmadd_ps(wp, _mm512_maskz_loadu_ps(m[i], v[p] + d0 + 16 * i), acc[i]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < OUT_VECS; i++)
            _mm512_mask_storeu_ps(out + d0 + 16 * i, m[i], acc[i]);
    }
}

MR_AVX512 static void attend(head_group *hg, const void *k_cache, const void *v_cache,
                             const mr_attention_args *a, int row, int kv_head)
{
    for (int h = 0; h < hg->heads; h++) {
        hg->max[h] = -INFINITY;
        hg->total[h] = 0;
        for (int i = 0; i < hg->dim; i++)
            hg->out[h][i] = 0;
    }
    int last = a->pos[row];
    for (int first = 0; first <= last; first += CHUNK) {
        int n = last + 1 - first < CHUNK ? last + 1 - first : CHUNK;
        int padded = (n + 15) / 16 * 16;
        for (int p = 0; p < padded; p++) {
            int at = first + (p < n ? p : n - 1);
            hg->k[p] = mr_exact_kv_at(k_cache, a, row, at, kv_head);
            hg->v[p] = mr_exact_kv_at(v_cache, a, row, at, kv_head);
        }
        for (int p = 0; p < n; p += 16)
            for (int h = 0; h < hg->heads; h++)
                _mm512_storeu_ps(hg->weights[h] + p,
                                 scores16(hg->q[h], hg->k + p, hg->dim, a->scale));
        softmax_chunk(hg, n);
        for (int h = 0; h < hg->heads; h++)
            accumulate_values(hg->out[h], hg->weights[h], hg->v, n, hg->dim);
    }
    for (int h = 0; h < hg->heads; h++)
        scale_out(hg->out[h], 1.0f / hg->total[h], hg->dim);
}

/* Without AVX-512: a query head at a time on cpu_avx2.c; without AVX2
 * either, the exact backend's loops. */
static int avx2_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                          const void *v_cache, const mr_attention_args *a)
{
    if (!mr_fast_has_avx2(be))
        return mr_exact_attention(be, out, q, k_cache, v_cache, a);
    int group = a->n_q_heads / a->n_kv_heads;
#pragma omp parallel for num_threads(be->threads) schedule(dynamic)
    for (int item = 0; item < a->rows * a->n_q_heads; item++) {
        int row = item / a->n_q_heads, h = item % a->n_q_heads;
        size_t at = ((size_t)row * (size_t)a->n_q_heads + (size_t)h) * (size_t)a->head_dim;
        mr_avx2_attend_head(out + at, q + at, k_cache, v_cache, a, row, h / group);
    }
    return MR_KERNELS_OK;
}

int mr_fast_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                      const void *v_cache, const mr_attention_args *a)
{
    int rc = mr_kernels_check_attention(be, a);
    if (rc != MR_KERNELS_OK)
        return rc;
    /* A bf16 cache takes the AVX2 kernel on AVX-512 CPUs too: the same
     * bits (exact.h), a little slower, and one kernel less to keep. */
    if (!mr_fast_avx512(be) || a->kv_type != MR_TENSOR_F32)
        return avx2_attention(be, out, q, k_cache, v_cache, a);
    int group = a->n_q_heads / a->n_kv_heads;
    int parts = (group + MAX_HEADS - 1) / MAX_HEADS;
    int items = a->rows * a->n_kv_heads * parts;
#pragma omp parallel for num_threads(be->threads) schedule(dynamic)
    for (int item = 0; item < items; item++) {
        int row = item / (a->n_kv_heads * parts), kv_head = item / parts % a->n_kv_heads;
        int first_head = kv_head * group + item % parts * MAX_HEADS;
        int end_head = kv_head * group + group;
        head_group hg = {.dim = a->head_dim};
        for (int h = first_head; h < end_head && hg.heads < MAX_HEADS; h++, hg.heads++) {
            size_t at = ((size_t)row * (size_t)a->n_q_heads + (size_t)h) * (size_t)a->head_dim;
            hg.q[hg.heads] = q + at;
            hg.out[hg.heads] = out + at;
        }
        attend(&hg, k_cache, v_cache, a, row, kv_head);
    }
    return MR_KERNELS_OK;
}

/* MLA on cpu_avx2.c's kernel, every head of every row an item (AVX-512
 * CPUs too: one kernel, exact.h's bits); without AVX2, the exact loops. */
int mr_fast_mla_attention(mr_backend *be, float *out, const float *q_lat, const float *q_rope,
                          const void *latent_cache, const void *rope_cache, const mr_mla_args *a)
{
    if (!mr_fast_has_avx2(be))
        return mr_exact_mla_attention(be, out, q_lat, q_rope, latent_cache, rope_cache, a);
    int rc = mr_kernels_check_mla(be, a);
    if (rc != MR_KERNELS_OK)
        return rc;
    int heads = a->n_heads;
#pragma omp parallel for num_threads(be->threads) schedule(dynamic)
    for (int i = 0; i < a->rows * heads; i++)
        mr_avx2_mla_head(out + (size_t)i * (size_t)a->latent, q_lat + (size_t)i * (size_t)a->latent,
                         q_rope + (size_t)i * (size_t)a->rope, latent_cache, rope_cache, a,
                         i / heads);
    return MR_KERNELS_OK;
}
