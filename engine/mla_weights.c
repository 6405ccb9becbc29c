/*
 * DeepSeek-V3's attention weights, read at load and absorbed into the form
 * the engine runs MLA in (forward.c's mla_block): multi-query attention
 * over one latent cache.
 *
 * With c the token's latent (kv_a_layernorm of kv_a_proj_with_mqa's first
 * kv_lora_rank outputs) and kv_b_proj's rows per head h split into W_UK[h]
 * (qk_nope_head_dim rows) and W_UV[h] (v_head_dim rows):
 *   q_nope[h] · k_nope[h] = q_nope[h] · (W_UK[h] c) = (W_UK[h]ᵀ q_nope[h]) · c
 *   o_proj(Σ p v[h]) = Σ_h W_o[h] W_UV[h] (Σ p c)
 * so q_b_proj's nope rows of a head times W_UK[h]ᵀ give q_lat directly from
 * q_a, and o_proj's columns of a head times W_UV[h] take the attention's
 * latent output to the hidden state.  The products are summed in double
 * and stored as f32, whatever the checkpoint's type: 4 and 4 times the
 * bytes of q_b_proj's nope rows and of o_proj at DeepSeek-V3's sizes (the
 * memory the absorbed form costs; the KV cache is what it saves).
 *
 * RoPE's pairs: with rope_interleave (V3's default) Hugging Face rotates
 * the pairs (2i, 2i+1) after de-interleaving them; the rope rows of q and
 * of the rope key are de-interleaved here once, so rope_neox's halves are
 * those pairs, and q_rope · k_rope is unchanged by the reordering.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_internal.h"

/* A tensor's values as f32 [rows][cols] (cols 0: a vector), malloc'd. */
static float *read_f32(const mr_model *m, const char *name, int64_t rows, int64_t cols,
                       char *err, size_t errlen)
{
    int64_t shape[2] = {rows, cols};
    mr_tensor t;
    if (mr_weights_get(m->weights, name, cols ? 2 : 1, shape, &t, err, errlen) != MR_ENGINE_OK)
        return NULL;
    int64_t width = cols ? cols : rows, height = cols ? rows : 1;
    float *out = malloc((size_t)(height * width) * sizeof *out);
    void *packed = mr_tensor_packed(&t) ? malloc(t.bytes) : NULL;
    if (!out || (mr_tensor_packed(&t) && !packed)) {
        free(out);
        free(packed);
        snprintf(err, errlen, "out of memory reading %s", name);
        return NULL;
    }
    if (packed)
        mr_tensor_pack(&t, packed);
    const unsigned char *base = packed ? packed : t.data;
    size_t row_bytes = mr_tensor_row_bytes(t.type, (int)width);
    for (int64_t r = 0; r < height; r++)
        for (int64_t c = 0; c < width; c++)
            out[r * width + c] = mr_tensor_value(base + (size_t)r * row_bytes, t.type, (size_t)c);
    free(packed);
    return out;
}

/* Hands host (taken: the model keeps it as long as the backend) to the
 * backend as an f32 weight. */
static int upload(mr_model *m, mr_weight *w, float *host, size_t n, char *err, size_t errlen)
{
    int rc = mr_engine_backend_status(
        m->be, m->be->ops->map_weights(m->be, host, n * sizeof *host, &w->data), err, errlen);
    w->type = MR_TENSOR_F32;
    if (mr_model_keep_host(m, host) != MR_ENGINE_OK && rc == MR_ENGINE_OK) {
        snprintf(err, errlen, "out of memory keeping absorbed weights");
        rc = MR_ENGINE_ENOMEM;
    }
    return rc;
}

/* Where rotated dimension d of a head comes from: HF's de-interleaving
 * (even dimensions, then odd) when rope_interleave. */
static int rope_source(const mr_mla_config *mla, int d)
{
    int half = mla->qk_rope_head_dim / 2;
    if (!mla->rope_interleave)
        return d;
    return d < half ? 2 * d : 2 * (d - half) + 1;
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
    float *q_a = NULL, *q_a_norm = NULL;
    if (mla->q_lora_rank) {
        q_a = read_f32(m, NAME("q_a_proj.weight"), q_in, hidden, err, errlen);
        q_a_norm = q_a ? read_f32(m, NAME("q_a_layernorm.weight"), q_in, 0, err, errlen) : NULL;
        if (!q_a_norm) {
            free(q_a);
            return MR_ENGINE_EINVAL;
        }
    }
    float *q_b = read_f32(m, NAME(mla->q_lora_rank ? "q_b_proj.weight" : "q_proj.weight"),
                          heads * qk, q_in, err, errlen);
    float *kv_a = q_b ? read_f32(m, NAME("kv_a_proj_with_mqa.weight"), latent + rope, hidden, err,
                                 errlen)
                      : NULL;
    float *kv_norm = kv_a ? read_f32(m, NAME("kv_a_layernorm.weight"), latent, 0, err, errlen) : NULL;
    float *kv_b = kv_norm ? read_f32(m, NAME("kv_b_proj.weight"), heads * (nope + v), latent,
                                     err, errlen)
                          : NULL;
    float *o = kv_b ? read_f32(m, NAME("o_proj.weight"), hidden, heads * v, err, errlen) : NULL;
#undef NAME
    float *q_lat = malloc((size_t)(heads * latent * q_in) * sizeof *q_lat);
    float *q_rope = malloc((size_t)(heads * rope * q_in) * sizeof *q_rope);
    float *kv_rope = malloc((size_t)(rope * hidden) * sizeof *kv_rope);
    float *o_lat = malloc((size_t)(hidden * heads * latent) * sizeof *o_lat);
    int rc = o && q_lat && q_rope && kv_rope && o_lat ? MR_ENGINE_OK : MR_ENGINE_ENOMEM;
    if (rc == MR_ENGINE_ENOMEM && o)
        snprintf(err, errlen, "out of memory absorbing layer %d's attention weights", layer);
    if (!o && rc == MR_ENGINE_ENOMEM)
        rc = MR_ENGINE_EINVAL;
    for (int64_t h = 0; rc == MR_ENGINE_OK && h < heads; h++) {
        const float *uk = kv_b + h * (nope + v) * latent, *uv = uk + nope * latent;
        const float *q_head = q_b + h * qk * q_in;
        for (int64_t j = 0; j < latent; j++)
            for (int64_t i = 0; i < q_in; i++) {
                double sum = 0;
                for (int64_t n = 0; n < nope; n++)
                    sum += (double)uk[n * latent + j] * q_head[n * q_in + i];
                q_lat[(h * latent + j) * q_in + i] = (float)sum;
            }
        for (int64_t d = 0; d < rope; d++)
            memcpy(q_rope + (h * rope + d) * q_in, q_head + (nope + rope_source(mla, (int)d)) * q_in,
                   (size_t)q_in * sizeof *q_rope);
        for (int64_t out = 0; out < hidden; out++)
            for (int64_t j = 0; j < latent; j++) {
                double sum = 0;
                for (int64_t k = 0; k < v; k++)
                    sum += (double)o[out * heads * v + h * v + k] * uv[k * latent + j];
                o_lat[out * heads * latent + h * latent + j] = (float)sum;
            }
    }
    /* kv_a's first rows are the latent's weights as they are */
    for (int64_t d = 0; rc == MR_ENGINE_OK && d < rope; d++)
        memcpy(kv_rope + d * hidden, kv_a + (latent + rope_source(mla, (int)d)) * hidden,
               (size_t)hidden * sizeof *kv_rope);
    free(q_b);
    free(kv_b);
    free(o);
    struct {
        mr_weight *w;
        float *host;
        int64_t n;
    } parts[] = {{&L->q_a, q_a, q_in * hidden},        {&L->q_a_norm, q_a_norm, q_in},
                 {&L->kv_norm, kv_norm, latent},       {&L->q_lat, q_lat, heads * latent * q_in},
                 {&L->q_rope, q_rope, heads * rope * q_in}, {&L->kv_lat, kv_a, latent * hidden},
                 {&L->kv_rope, kv_rope, rope * hidden}, {&L->o_lat, o_lat, hidden * heads * latent}};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        if (rc == MR_ENGINE_OK && parts[k].host)
            rc = upload(m, parts[k].w, parts[k].host, (size_t)parts[k].n, err, errlen);
        else
            free(parts[k].host);
    }
    return rc;
}
