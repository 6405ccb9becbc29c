/*
 * Private to kernels/: the bit-level definition of the `cpu` backend's
 * arithmetic, as scalar functions that compile both as C and as CUDA.
 *
 * The `cpu` backend computes with AVX-512 or AVX2 vectors; the `cuda`
 * backend's exact mode with one GPU thread per output.  Both must give the
 * same bits, so every rounding step is written down here once, in order:
 * which products are fused (fmaf), which sums run in which tree, how e^x
 * is approximated.  The `exact` backend (cpu_exact.c) runs these functions
 * in plain loops, and tests compare it with `cpu` by memcmp on every op;
 * the CUDA kernels (kernels/cuda/) call the very same functions.
 *
 * Rules that keep it exact on both sides:
 *  - no library transcendental: e^x is mr_exact_exp, a fixed polynomial;
 *    RoPE's cos and sin come from a table the host fills once
 *    (mr_rope_table), so libm and CUDA's math never meet;
 *  - every fused multiply-add is an explicit fmaf, and nothing else may be
 *    contracted: C11 compiles without contraction (-std=c11), CUDA files
 *    that include this are built with -fmad=false;
 *  - IEEE division and square root (CUDA's defaults without fast-math),
 *    no flush of denormals to zero on either side.
 */
#ifndef MR_KERNELS_EXACT_H
#define MR_KERNELS_EXACT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

#define MR_EXACT_FN MR_KERNELS_INLINE

#define MR_EXACT_LANES 16 /* a dot product's accumulators */
#define MR_EXACT_CHUNK 64 /* attention's keys per softmax rescale */

MR_EXACT_FN float mr_exact_bits_to_f32(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

MR_EXACT_FN uint32_t mr_exact_f32_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

/* IEEE half to f32, exactly (every half is an f32). */
MR_EXACT_FN float mr_exact_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) /* zero or subnormal: man x 2^-24 */
        return mr_exact_bits_to_f32(sign | mr_exact_f32_bits((float)man * 0x1p-24f));
    if (exp == 31) /* infinity or NaN */
        return mr_exact_bits_to_f32(sign | 0x7f800000u | (man << 13));
    return mr_exact_bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* FP8 e4m3 ("fn": bias 7, no infinities, S.1111.111 is NaN) to f32, exactly. */
MR_EXACT_FN float mr_exact_e4m3(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24, exp = (b >> 3) & 0xfu, man = b & 0x7u;
    if (exp == 15 && man == 7)
        return mr_exact_bits_to_f32(sign | 0x7fc00000u);
    if (exp == 0) /* zero or subnormal: man x 2^-9 */
        return mr_exact_bits_to_f32(sign | mr_exact_f32_bits((float)man * 0x1p-9f));
    return mr_exact_bits_to_f32(sign | ((exp + 120u) << 23) | (man << 20));
}

/* A weight's value: bf16 and f16 widen exactly; an FP8 value is its e4m3
 * number times its block's scale, rounded once to f32. */
MR_EXACT_FN float mr_exact_weight(const void *w, mr_tensor_type type, size_t i)
{
    if (type == MR_TENSOR_BF16)
        return mr_exact_bits_to_f32((uint32_t)((const uint16_t *)w)[i] << 16);
    if (type == MR_TENSOR_F16)
        return mr_exact_f16(((const uint16_t *)w)[i]);
    if (type == MR_TENSOR_F8_BLOCKS) {
        const unsigned char *block = (const unsigned char *)w + i / MR_F8_BLOCK * MR_F8_BLOCK_BYTES;
        float scale;
        memcpy(&scale, block, sizeof scale);
        return mr_exact_e4m3(block[4 + i % MR_F8_BLOCK]) * scale;
    }
    return ((const float *)w)[i];
}

MR_EXACT_FN const void *mr_exact_weight_row(const void *w, mr_tensor_type type, size_t row,
                                            int cols)
{
    return (const char *)w + row * mr_tensor_row_bytes(type, cols);
}

/* Sixteen lanes to one: halves (l + l+8), quarters (l + l+4), pairs
 * (l + l+2), then the last pair; mr_reduce16's tree on AVX-512, and a
 * shuffle-down by 8, 4, 2, 1 on a GPU. */
MR_EXACT_FN float mr_exact_reduce16(const float v[MR_EXACT_LANES])
{
    float eighths[8], quarters[4];
    for (int i = 0; i < 8; i++)
        eighths[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++)
        quarters[i] = eighths[i] + eighths[i + 4];
    return (quarters[0] + quarters[2]) + (quarters[1] + quarters[3]);
}

/* x · w over n: lane l takes k = l, l+16, ... in increasing k with one
 * fmaf each, then mr_exact_reduce16.  (A vector kernel's tail loaded as
 * zeros adds exactly nothing: a lane never holds -0.) */
MR_EXACT_FN float mr_exact_dot(const float *x, const void *w, mr_tensor_type type, int n)
{
    float acc[MR_EXACT_LANES] = {0};
    for (int k = 0; k < n; k++)
        acc[k % MR_EXACT_LANES] = fmaf(x[k], mr_exact_weight(w, type, (size_t)k),
                                       acc[k % MR_EXACT_LANES]);
    return mr_exact_reduce16(acc);
}

/* Value i of matmul_heads' out ([rows][heads][out_dim], flat): head h of
 * its row of x times weight row h * head_stride_rows + o, mr_exact_dot as
 * matmul's, so a head's slice multiplies as the same rows would alone. */
MR_EXACT_FN float mr_exact_matmul_heads_at(const float *x, const void *w, mr_tensor_type type,
                                           int heads, int out_dim, int in_dim,
                                           int head_stride_rows, size_t i)
{
    size_t o = i % (size_t)out_dim, row_head = i / (size_t)out_dim;
    size_t h = row_head % (size_t)heads;
    const void *w_row = mr_exact_weight_row(w, type, h * (size_t)head_stride_rows + o, in_dim);
    return mr_exact_dot(x + row_head * (size_t)in_dim, w_row, type, in_dim);
}

/* f32 to bf16, rounded to nearest even; a NaN stays a NaN (truncating
 * could clear every mantissa bit). */
MR_EXACT_FN uint16_t mr_exact_to_bf16(float f)
{
    uint32_t bits = mr_exact_f32_bits(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x0040u);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Element i of a cache or weight of `type` set to x (rounded for bf16). */
MR_EXACT_FN void mr_exact_store(void *to, mr_tensor_type type, size_t i, float x)
{
    if (type == MR_TENSOR_BF16)
        ((uint16_t *)to)[i] = mr_exact_to_bf16(x);
    else
        ((float *)to)[i] = x;
}

/* Element i of a random stream: splitmix64 of (seed, i), its top 24 bits
 * as u in [0, 1), then lo + (hi - lo) * u. */
MR_EXACT_FN float mr_exact_uniform(uint64_t seed, uint64_t i, float lo, float hi)
{
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    float u = (float)(z >> 40) * (1.0f / 16777216.0f);
    return lo + (hi - lo) * u;
}

/* 2^e for -126 <= e <= 127, exactly. */
MR_EXACT_FN float mr_exact_pow2(int e)
{
    return mr_exact_bits_to_f32((uint32_t)(e + 127) << 23);
}

/* e^x within 2 ulp: x clamped to [-104, 89] (the vector max/min, NaN
 * passing through), x = n ln2 + r with n = rint(x log2 e) and r from a
 * two-part ln2, e^r by a degree-7 polynomial in Horner's form, then
 * p * 2^n rounded once (AVX-512's scalef): p * 2^(n/2) is exact, the
 * second power rounds. */
MR_EXACT_FN float mr_exact_exp(float x)
{
    x = -104.0f > x ? -104.0f : x;
    x = 89.0f < x ? 89.0f : x;
    if (x != x)
        return x;
    float n = rintf(x * 1.44269504f);
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r + 1.0f);
    int e = (int)n, half = e / 2;
    return p * mr_exact_pow2(half) * mr_exact_pow2(e - half);
}

/* SwiGLU's middle: silu(gate) * up = gate / (1 + e^(0 - gate)) * up. */
MR_EXACT_FN float mr_exact_silu_mul(float gate, float up)
{
    return gate / (1.0f + mr_exact_exp(0.0f - gate)) * up;
}

/* out = x * (1 / sqrt(x·x / dim + eps)) * w, the mean from mr_exact_dot. */
MR_EXACT_FN void mr_exact_rmsnorm_row(float *out, const float *x, const void *w,
                                      mr_tensor_type type, int dim, float eps)
{
    float inv_rms = 1.0f / sqrtf(mr_exact_dot(x, x, MR_TENSOR_F32, dim) / (float)dim + eps);
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * inv_rms * mr_exact_weight(w, type, (size_t)i);
}

/* One NeoX pair, element i and i + head_dim/2 of a head, rotated by the
 * angle whose cos and sin are given. */
MR_EXACT_FN void mr_exact_rope_pair(float *first, float *second, float c, float s)
{
    float x1 = *first, x2 = *second;
    *first = x1 * c - x2 * s;
    *second = x2 * c + x1 * s;
}

/* NeoX rotation of `heads` heads at `pos` from the (cos, sin) table. */
MR_EXACT_FN void mr_exact_rope_row(float *x, const float *cos_sin, int32_t pos, int heads,
                                   int head_dim)
{
    int half = head_dim / 2;
    const float *at = cos_sin + (size_t)pos * (size_t)head_dim;
    for (int i = 0; i < half; i++)
        for (int h = 0; h < heads; h++) {
            float *first = x + (size_t)h * (size_t)head_dim + i;
            mr_exact_rope_pair(first, first + half, at[2 * i], at[2 * i + 1]);
        }
}

/* Where position p of the token in `row` keeps its K (or V) for kv_head
 * in a cache of a->kv_type. */
MR_EXACT_FN const void *mr_exact_kv_at(const void *cache, const mr_attention_args *a, int row,
                                       int p, int kv_head)
{
    int32_t block =
        a->block_table[(size_t)a->seq[row] * (size_t)a->max_blocks + (size_t)(p / a->block_size)];
    size_t slot = (size_t)block * (size_t)a->block_size + (size_t)(p % a->block_size);
    size_t element = (slot * (size_t)a->n_kv_heads + (size_t)kv_head) * (size_t)a->head_dim;
    return (const char *)cache + element * mr_tensor_type_size(a->kv_type);
}

/* The cache slot of position p of a row's sequence, and a slot's entry in
 * a cache of `width` values (MLA's latent and rope caches). */
MR_EXACT_FN size_t mr_exact_mla_slot(const mr_mla_args *a, int row, int p)
{
    int32_t block =
        a->block_table[(size_t)a->seq[row] * (size_t)a->max_blocks + (size_t)(p / a->block_size)];
    return (size_t)block * (size_t)a->block_size + (size_t)(p % a->block_size);
}

MR_EXACT_FN const void *mr_exact_cache_row(const void *cache, mr_tensor_type type, size_t slot,
                                           int width)
{
    return (const char *)cache + slot * (size_t)width * mr_tensor_type_size(type);
}

/* The softmax of one chunk of mr_exact_attend_head: weights[0..n) hold
 * the chunk's scores and become e^(score - max) with the new running
 * *max; *total is rescaled to it and grows by their sum.  Returns the
 * factor that rescales what the head's output holds so far. */
MR_EXACT_FN float mr_exact_softmax_chunk(float *weights, int n, float *max, float *total)
{
    float chunk_max = n % MR_EXACT_LANES ? 0.0f : -INFINITY;
    for (int p = 0; p < n; p++)
        chunk_max = chunk_max > weights[p] ? chunk_max : weights[p];
    float new_max = fmaxf(*max, chunk_max), lanes[MR_EXACT_LANES] = {0};
    for (int p = 0; p < n; p++) {
        weights[p] = mr_exact_exp(weights[p] - new_max);
        lanes[p % MR_EXACT_LANES] += weights[p];
    }
    float rescale = mr_exact_exp(*max - new_max);
    *total = *total * rescale + mr_exact_reduce16(lanes);
    *max = new_max;
    return rescale;
}

/* One query head of one token over positions 0..pos, flash attention's
 * way: keys in chunks of MR_EXACT_CHUNK from position 0, and per chunk
 *   scores   w[p] = (q · k_p) * scale;
 *   max      the running max with the chunk's (a chunk whose length is no
 *            multiple of 16 also counts a 0: the vector kernel's zero
 *            lanes; harmless, a softmax does not care about its shift);
 *   weights  e[p] = e^(w[p] - max), summed lane by lane (p mod 16) in
 *            increasing p, then mr_exact_reduce16;
 *   rescale  s = e^(old max - max): total = total * s + chunk sum, out *= s;
 *   values   out[i] = fmaf(e[p], v_p[i], out[i]) in increasing p;
 * and at the end out[i] *= 1 / total.  K and V widen from kv_type
 * exactly.  `weights` holds MR_EXACT_CHUNK. */
MR_EXACT_FN void mr_exact_attend_head(float *out, const float *q, const void *k_cache,
                                      const void *v_cache, const mr_attention_args *a, int row,
                                      int kv_head, float *weights)
{
    int d = a->head_dim, last = a->pos[row];
    float max = -INFINITY, total = 0;
    for (int i = 0; i < d; i++)
        out[i] = 0;
    for (int first = 0; first <= last; first += MR_EXACT_CHUNK) {
        int n = last + 1 - first < MR_EXACT_CHUNK ? last + 1 - first : MR_EXACT_CHUNK;
        for (int p = 0; p < n; p++) {
            const void *k = mr_exact_kv_at(k_cache, a, row, first + p, kv_head);
            weights[p] = mr_exact_dot(q, k, a->kv_type, d) * a->scale;
        }
        float rescale = mr_exact_softmax_chunk(weights, n, &max, &total);
        for (int i = 0; i < d; i++)
            out[i] *= rescale;
        for (int p = 0; p < n; p++) {
            const void *v = mr_exact_kv_at(v_cache, a, row, first + p, kv_head);
            for (int i = 0; i < d; i++)
                out[i] = fmaf(weights[p], mr_exact_weight(v, a->kv_type, (size_t)i), out[i]);
        }
    }
    float inv_total = 1.0f / total;
    for (int i = 0; i < d; i++)
        out[i] *= inv_total;
}

/* One head of MLA (mr_mla_args) for one row: mr_exact_attend_head's
 * chunks, rescales and sums, a score being the latent part's dot plus the
 * rope part's, times scale, and the values the latent entries. */
MR_EXACT_FN void mr_exact_mla_head(float *out, const float *q_lat, const float *q_rope,
                                   const void *latent_cache, const void *rope_cache,
                                   const mr_mla_args *a, int row, float *weights)
{
    int last = a->pos[row];
    float max = -INFINITY, total = 0;
    for (int i = 0; i < a->latent; i++)
        out[i] = 0;
    for (int first = 0; first <= last; first += MR_EXACT_CHUNK) {
        int n = last + 1 - first < MR_EXACT_CHUNK ? last + 1 - first : MR_EXACT_CHUNK;
        for (int p = 0; p < n; p++) {
            size_t slot = mr_exact_mla_slot(a, row, first + p);
            const void *c = mr_exact_cache_row(latent_cache, a->kv_type, slot, a->latent);
            const void *k = mr_exact_cache_row(rope_cache, a->kv_type, slot, a->rope);
            weights[p] = (mr_exact_dot(q_lat, c, a->kv_type, a->latent) +
                          mr_exact_dot(q_rope, k, a->kv_type, a->rope)) *
                         a->scale;
        }
        float rescale = mr_exact_softmax_chunk(weights, n, &max, &total);
        for (int i = 0; i < a->latent; i++)
            out[i] *= rescale;
        for (int p = 0; p < n; p++) {
            size_t slot = mr_exact_mla_slot(a, row, first + p);
            const void *c = mr_exact_cache_row(latent_cache, a->kv_type, slot, a->latent);
            for (int i = 0; i < a->latent; i++)
                out[i] = fmaf(weights[p], mr_exact_weight(c, a->kv_type, (size_t)i), out[i]);
        }
    }
    float inv_total = 1.0f / total;
    for (int i = 0; i < a->latent; i++)
        out[i] *= inv_total;
}

/* Inserts (id, v) into the sorted head best[0..*kept) of at most k. */
MR_EXACT_FN void mr_exact_keep_best(int32_t *ids, float *best, int *kept, int k, int32_t id,
                                    float v)
{
    int at = *kept;
    while (at > 0 && best[at - 1] < v)
        at--;
    if (at >= k)
        return;
    int last = *kept < k ? *kept : k - 1;
    for (int j = last; j > at; j--) {
        ids[j] = ids[j - 1];
        best[j] = best[j - 1];
    }
    ids[at] = id;
    best[at] = v;
    *kept += *kept < k;
}

/* The k kept weights divided by their sum, summed in pick order. */
MR_EXACT_FN void mr_exact_router_renormalize(float *weights, int k)
{
    float sum = 0;
    for (int j = 0; j < k; j++)
        sum += weights[j];
    for (int j = 0; j < k; j++)
        weights[j] /= sum;
}

/* The router of one token: softmax in f32 (the max, then e^(l - max)
 * summed in expert order, each divided by the sum), the top k kept sorted
 * while experts are scanned in id order, a new weight going after every
 * kept weight >= it so ties keep the lower id; renormalised by their sum
 * in pick order when asked.  ids holds logical experts. */
MR_EXACT_FN void mr_exact_router_row(int32_t *ids, float *weights, const float *logits,
                                     int n_experts, int k, int renormalize)
{
    float max = -INFINITY, total = 0;
    for (int e = 0; e < n_experts; e++)
        max = fmaxf(max, logits[e]);
    for (int e = 0; e < n_experts; e++)
        total += mr_exact_exp(logits[e] - max);
    int kept = 0;
    for (int e = 0; e < n_experts; e++)
        mr_exact_keep_best(ids, weights, &kept, k, e, mr_exact_exp(logits[e] - max) / total);
    if (renormalize)
        mr_exact_router_renormalize(weights, k);
}

/* DeepSeek-V3's router of one token (mr_route_args, MR_ROUTE_SIGMOID_
 * GROUPED).  Sigmoid as 1 / (1 + e^-x) with mr_exact_exp; a group's score
 * is its best two choice scores added (the larger first); groups and
 * experts are kept sorted as the softmax router keeps experts (ties to
 * the lower index); the weights are summed in pick order. */
#define MR_EXACT_MAX_GROUPS 64
MR_EXACT_FN float mr_exact_sigmoid(float x)
{
    return 1.0f / (1.0f + mr_exact_exp(-x));
}

MR_EXACT_FN void mr_exact_router_grouped_row(int32_t *ids, float *weights, const float *logits,
                                             const mr_route_args *a)
{
    int per_group = a->n_experts / a->n_group;
    int32_t group_ids[MR_EXACT_MAX_GROUPS];
    float group_best[MR_EXACT_MAX_GROUPS];
    int groups_kept = 0;
    for (int g = 0; g < a->n_group; g++) {
        float first = -INFINITY, second = -INFINITY;
        for (int e = g * per_group; e < (g + 1) * per_group; e++) {
            float choice = mr_exact_sigmoid(logits[e]) + a->bias[e];
            if (choice > first) {
                second = first;
                first = choice;
            } else if (choice > second) {
                second = choice;
            }
        }
        mr_exact_keep_best(group_ids, group_best, &groups_kept, a->topk_group, g,
                           first + second);
    }
    int chosen[MR_EXACT_MAX_GROUPS] = {0};
    for (int j = 0; j < groups_kept; j++)
        chosen[group_ids[j]] = 1;
    int kept = 0;
    for (int e = 0; e < a->n_experts; e++)
        mr_exact_keep_best(ids, weights, &kept, a->k, e,
                           chosen[e / per_group] ? mr_exact_sigmoid(logits[e]) + a->bias[e]
                                                 : 0.0f);
    float sum = 0;
    for (int j = 0; j < a->k; j++) {
        weights[j] = mr_exact_sigmoid(logits[ids[j]]);
        sum += weights[j];
    }
    for (int j = 0; j < a->k; j++)
        weights[j] = (a->renormalize ? weights[j] / (sum + 1e-20f) : weights[j]) * a->scaling;
}

/* Row r of a route: its picks' logical experts into slots, and weights. */
MR_EXACT_FN void mr_exact_route_row(const mr_route_args *a, int r)
{
    int32_t *ids = a->slots + (size_t)r * (size_t)a->k;
    float *weights = a->weights + (size_t)r * (size_t)a->k;
    const float *logits = a->logits + (size_t)r * (size_t)a->n_experts;
    if (a->scoring == MR_ROUTE_SIGMOID_GROUPED)
        mr_exact_router_grouped_row(ids, weights, logits, a);
    else
        mr_exact_router_row(ids, weights, logits, a->n_experts, a->k, a->renormalize);
}

/* eplb's mr_eplb_pick_slot: the replica chosen by the token's position,
 * so a token takes the same slot whichever rank or batch it is in. */
MR_EXACT_FN int32_t mr_exact_pick_slot(const mr_route_args *a, int32_t expert, int32_t pos)
{
    uint64_t replica = (uint64_t)pos % (uint64_t)a->logcnt[expert];
    return a->log2phy[(size_t)expert * (size_t)a->max_replicas + (size_t)replica];
}

#endif
