/*
 * DeepSeek-V3's attention weights, loaded for the form the engine runs MLA
 * in (forward.c's mla_block): every head attends over one latent cache, as
 * multi-query attention, the way vLLM and SGLang decode.
 *
 * With c the token's latent (kv_a_layernorm of kv_a_proj_with_mqa's first
 * kv_lora_rank outputs) and kv_b_proj's rows per head h split into W_UK[h]
 * (qk_nope_head_dim rows) and W_UV[h] (v_head_dim rows):
 *   q_nope[h] · k_nope[h] = q_nope[h] · (W_UK[h] c) = (W_UK[h]ᵀ q_nope[h]) · c
 *   v[h] = W_UV[h] Σ_t p_t c_t
 * so a step runs q_b_proj as it is, q_lat[h] = W_UK[h]ᵀ q_nope[h], attention
 * over the latents, v[h] = W_UV[h] o_lat[h] and o_proj as it is: the two
 * per-head products are the backend's matmul_heads.
 *
 * Every weight stays in the checkpoint's type (FP8 blocks included) at
 * the checkpoint's size, plus one copy of W_UKᵀ; W_UV is read in
 * kv_b_proj where it lies.  (Multiplying W_UK into q_b_proj and W_UV into
 * o_proj at load, as this file first did, saves the two small products
 * per step but kept all of attention in f32, 2.4 GB a layer at V3's sizes
 * and 146 GB a rank, since every rank holds all of attention; as they
 * are, 202 MB a layer in FP8, 12.3 GB a rank.)
 *
 * W_UKᵀ is transposed in kv_b_proj's own type where that is exact: f32,
 * bf16 and f16 element by element; FP8 with 128 x 128 block scales when
 * each head's nope rows in a block of 128 share one scale row of kv_b_proj
 * (as when qk_nope_head_dim + v_head_dim is a multiple of 128, V3's 128 +
 * 128, or divides it): codes and scale grid transposed, packed as a
 * checkpoint's.
 * Otherwise it is stored as f32: heads x kv_lora_rank x qk_nope_head_dim x
 * 4 bytes, 32 MiB a layer and 2 GB over 61 layers at V3's sizes.
 *
 * RoPE's pairs: with rope_interleave (V3's default) Hugging Face rotates
 * the pairs (2i, 2i+1) after de-interleaving them; the rope rows of q and
 * of the rope key are de-interleaved here once, so rope_neox's halves are
 * those pairs, and q_rope · k_rope is unchanged by the reordering.  Rows
 * move whole, which is exact in every type (FP8 rows carry their scales);
 * q_b_proj's copy also puts every head's nope rows before the rope rows,
 * so one matmul gives q_nope as matmul_heads reads it and one the rope
 * part.  Neither copy is larger than the tensor it replaces.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_internal.h"

/* Where rotated dimension d of a head comes from: HF's de-interleaving
 * (even dimensions, then odd) when rope_interleave. */
static int rope_source(const mr_mla_config *mla, int d)
{
    int half = mla->qk_rope_head_dim / 2;
    if (!mla->rope_interleave)
        return d;
    return d < half ? 2 * d : 2 * (d - half) + 1;
}

static int out_of_memory(const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory for %s", what);
    return MR_ENGINE_ENOMEM;
}

/* Tensor `name` [rows][cols] with its rows reordered, row i of the copy
 * being row from[i], mapped as w. */
static int map_rows(mr_model *m, mr_weight *w, const char *name, int64_t rows, int64_t cols,
                    const int64_t *from, char *err, size_t errlen)
{
    int64_t shape[2] = {rows, cols};
    mr_tensor t;
    int rc = mr_weights_get(m->weights, name, 2, shape, &t, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    void *owned = NULL;
    const unsigned char *src = mr_model_tensor_host(m, &t, &owned, err, errlen);
    unsigned char *dst = src ? malloc(t.bytes) : NULL;
    if (!dst) {
        free(owned);
        return src ? out_of_memory(name, err, errlen) : MR_ENGINE_ENOMEM;
    }
    size_t row_bytes = mr_tensor_row_bytes(t.type, (int)cols);
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * row_bytes, src + (size_t)from[r] * row_bytes, row_bytes);
    free(owned);
    return mr_model_map_host(m, w, dst, t.bytes, t.type, err, errlen);
}

/* Whether FP8 W_UK transposes exactly: a head's nope rows n0 .. n0 + 127
 * (a block of its transpose's rows) lie in one block row of kv_b_proj's
 * scales. */
static bool fp8_transposes(const mr_mla_config *mla, int64_t heads)
{
    int64_t nope = mla->qk_nope_head_dim, per_head = nope + mla->v_head_dim;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t n0 = 0; n0 < nope; n0 += MR_F8_BLOCK) {
            int64_t last = n0 + MR_F8_BLOCK < nope ? n0 + MR_F8_BLOCK : nope;
            if ((h * per_head + n0) / MR_F8_BLOCK != (h * per_head + last - 1) / MR_F8_BLOCK)
                return false;
        }
    return true;
}

/* kv_b (FP8) as [heads][latent][nope] in packed blocks: per head the codes
 * transposed and its scales' grid too, packed by mr_tensor_pack as a
 * checkpoint's tensor of that shape would be. */
static void *transpose_fp8(const mr_tensor *kv_b, const mr_mla_config *mla, int64_t heads,
                           size_t *bytes)
{
    int64_t latent = mla->kv_lora_rank, nope = mla->qk_nope_head_dim;
    int64_t per_head = nope + mla->v_head_dim;
    int64_t latent_blocks = (latent + MR_F8_BLOCK - 1) / MR_F8_BLOCK;
    int64_t nope_blocks = (nope + MR_F8_BLOCK - 1) / MR_F8_BLOCK;
    size_t scale_size = kv_b->scales_type == MR_TENSOR_BF16 ? 2 : 4;
    size_t head_bytes = (size_t)latent * mr_tensor_row_bytes(MR_TENSOR_F8_BLOCKS, (int)nope);
    unsigned char *out = malloc((size_t)heads * head_bytes);
    unsigned char *codes = malloc((size_t)(latent * nope));
    unsigned char *scales = malloc((size_t)(latent_blocks * nope_blocks) * scale_size);
    if (!out || !codes || !scales) {
        free(out);
        out = NULL;
    }
    const unsigned char *src = kv_b->data, *src_scales = kv_b->scales;
    for (int64_t h = 0; out && h < heads; h++) {
        for (int64_t j = 0; j < latent; j++)
            for (int64_t n = 0; n < nope; n++)
                codes[j * nope + n] = src[(h * per_head + n) * latent + j];
        for (int64_t jb = 0; jb < latent_blocks; jb++)
            for (int64_t nb = 0; nb < nope_blocks; nb++) {
                int64_t block_row = (h * per_head + nb * MR_F8_BLOCK) / MR_F8_BLOCK;
                memcpy(scales + (size_t)(jb * nope_blocks + nb) * scale_size,
                       src_scales + (size_t)(block_row * latent_blocks + jb) * scale_size,
                       scale_size);
            }
        mr_tensor head = {.data = codes,
                          .type = MR_TENSOR_F8_BLOCKS,
                          .ndim = 2,
                          .shape = {latent, nope},
                          .bytes = head_bytes,
                          .scales = scales,
                          .scales_type = kv_b->scales_type};
        mr_tensor_pack(&head, out + (size_t)h * head_bytes);
    }
    free(codes);
    free(scales);
    *bytes = (size_t)heads * head_bytes;
    return out;
}

/* kv_b as [heads][latent][nope]: element by element in its own type, or
 * as f32 values (FP8 whose blocks do not transpose). */
static void *transpose_values(const unsigned char *src, mr_tensor_type type,
                              mr_tensor_type to, const mr_mla_config *mla, int64_t heads,
                              size_t *bytes)
{
    int64_t latent = mla->kv_lora_rank, nope = mla->qk_nope_head_dim;
    int64_t per_head = nope + mla->v_head_dim;
    size_t size = mr_tensor_type_size(to), row_bytes = mr_tensor_row_bytes(type, (int)latent);
    *bytes = (size_t)(heads * latent * nope) * size;
    unsigned char *out = malloc(*bytes);
    for (int64_t h = 0; out && h < heads; h++)
        for (int64_t n = 0; n < nope; n++) {
            const unsigned char *row = src + (size_t)(h * per_head + n) * row_bytes;
            for (int64_t j = 0; j < latent; j++) {
                unsigned char *at = out + (size_t)((h * latent + j) * nope + n) * size;
                if (to == type) {
                    memcpy(at, row + (size_t)j * size, size);
                } else {
                    float value = mr_tensor_value(row, type, (size_t)j);
                    memcpy(at, &value, sizeof value);
                }
            }
        }
    return out;
}

/* Each head's W_UKᵀ from kv_b_proj (see the top of the file). */
static int map_uk_transposed(mr_model *m, mr_layer *L, const char *name, int64_t heads,
                             char *err, size_t errlen)
{
    const mr_mla_config *mla = &m->cfg.mla;
    int64_t shape[2] = {heads * (mla->qk_nope_head_dim + mla->v_head_dim), mla->kv_lora_rank};
    mr_tensor t;
    int rc = mr_weights_get(m->weights, name, 2, shape, &t, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    size_t bytes = 0;
    void *out;
    mr_tensor_type type = t.type;
    if (type == MR_TENSOR_F8_BLOCKS && t.data && fp8_transposes(mla, heads)) {
        out = transpose_fp8(&t, mla, heads, &bytes);
    } else {
        void *owned = NULL;
        const unsigned char *src = mr_model_tensor_host(m, &t, &owned, err, errlen);
        if (!src)
            return MR_ENGINE_ENOMEM;
        if (type == MR_TENSOR_F8_BLOCKS)
            type = MR_TENSOR_F32;
        out = transpose_values(src, t.type, type, mla, heads, &bytes);
        free(owned);
    }
    if (!out)
        return out_of_memory(name, err, errlen);
    return mr_model_map_host(m, &L->uk_t, out, bytes, type, err, errlen);
}

int mr_mla_load_layer(mr_model *m, mr_layer *L, int layer, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    const mr_mla_config *mla = &c->mla;
    int64_t hidden = c->hidden_size, heads = c->num_attention_heads;
    int64_t latent = mla->kv_lora_rank, rope = mla->qk_rope_head_dim;
    int64_t nope = mla->qk_nope_head_dim, v = mla->v_head_dim, qk = nope + rope;
    int64_t q_in = mla->q_lora_rank ? mla->q_lora_rank : hidden;
    char name[256];
#define NAME(part) (snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", layer, part), name)
    int rc = MR_ENGINE_OK;
    if (mla->q_lora_rank) {
        rc = mr_model_map_tensor(m, &L->q_a, NAME("q_a_proj.weight"), 2, q_in, hidden, err,
                                 errlen);
        if (rc == MR_ENGINE_OK)
            rc = mr_model_map_tensor(m, &L->q_a_norm, NAME("q_a_layernorm.weight"), 1, q_in, 0,
                                     err, errlen);
    }
    int64_t *from = malloc((size_t)(heads * qk + latent + rope) * sizeof *from);
    if (!from)
        return out_of_memory("a row order", err, errlen);
    for (int64_t h = 0; h < heads; h++) {
        for (int64_t n = 0; n < nope; n++)
            from[h * nope + n] = h * qk + n;
        for (int64_t d = 0; d < rope; d++)
            from[heads * nope + h * rope + d] = h * qk + nope + rope_source(mla, (int)d);
    }
    if (rc == MR_ENGINE_OK)
        rc = map_rows(m, &L->q_b, NAME(mla->q_lora_rank ? "q_b_proj.weight" : "q_proj.weight"),
                      heads * qk, q_in, from, err, errlen);
    for (int64_t r = 0; r < latent + rope; r++)
        from[r] = r < latent ? r : latent + rope_source(mla, (int)(r - latent));
    if (rc == MR_ENGINE_OK && mla->rope_interleave)
        rc = map_rows(m, &L->kv_a, NAME("kv_a_proj_with_mqa.weight"), latent + rope, hidden,
                      from, err, errlen);
    else if (rc == MR_ENGINE_OK)
        rc = mr_model_map_tensor(m, &L->kv_a, NAME("kv_a_proj_with_mqa.weight"), 2,
                                 latent + rope, hidden, err, errlen);
    free(from);
    if (rc == MR_ENGINE_OK)
        rc = mr_model_map_tensor(m, &L->kv_norm, NAME("kv_a_layernorm.weight"), 1, latent, 0,
                                 err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = mr_model_map_tensor(m, &L->kv_b, NAME("kv_b_proj.weight"), 2, heads * (nope + v),
                                 latent, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = map_uk_transposed(m, L, NAME("kv_b_proj.weight"), heads, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = mr_model_map_tensor(m, &L->o_proj, NAME("o_proj.weight"), 2, hidden, heads * v,
                                 err, errlen);
#undef NAME
    return rc;
}
