/*
 * The KV cache: fixed-size blocks handed to sequences from a free stack.
 * Blocks let sequences of any length share one allocation made at start,
 * so serving never allocates per token and a finished sequence's memory is
 * reusable at once by the next.
 */
#include <stdio.h>
#include <stdlib.h>

#include "engine/model_internal.h"

/* What a token keeps per layer in its two caches: K and V of every KV
 * head, or for MLA its latent (the "k" cache) and its rope key (the "v"
 * cache), which every head's K and V come from. */
static void token_dims(const mr_model_config *c, int *k_dim, int *v_dim)
{
    if (c->family == MR_FAMILY_DEEPSEEK_V3) {
        *k_dim = c->mla.kv_lora_rank;
        *v_dim = c->mla.qk_rope_head_dim;
    } else {
        *k_dim = *v_dim = c->num_key_value_heads * c->head_dim;
    }
}

size_t mr_model_kv_bytes(const mr_model_config *c, mr_tensor_type kv_type, int block_size,
                         int n_blocks)
{
    int k_dim, v_dim;
    token_dims(c, &k_dim, &v_dim);
    return (size_t)c->num_hidden_layers * (size_t)n_blocks * (size_t)block_size *
           (size_t)(k_dim + v_dim) * mr_tensor_type_size(kv_type);
}

int mr_kv_cache_init(mr_kv_cache *kv, const mr_model *m, mr_tensor_type type, int block_size,
                     int n_blocks, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    *kv = (mr_kv_cache){.block_size = block_size,
                        .n_blocks = n_blocks,
                        .n_layers = c->num_hidden_layers,
                        .type = type};
    token_dims(c, &kv->k_dim, &kv->v_dim);
    size_t slots = (size_t)n_blocks * (size_t)block_size, size = mr_tensor_type_size(type);
    kv->k = calloc((size_t)kv->n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)kv->n_layers, sizeof *kv->v);
    kv->free_ids = malloc((size_t)n_blocks * sizeof *kv->free_ids);
    bool ok = kv->k && kv->v && kv->free_ids;
    for (int l = 0; ok && l < kv->n_layers; l++)
        ok = m->be->ops->alloc(m->be, slots * (size_t)kv->k_dim * size, (void **)&kv->k[l]) ==
                 MR_KERNELS_OK &&
             m->be->ops->alloc(m->be, slots * (size_t)kv->v_dim * size, (void **)&kv->v[l]) ==
                 MR_KERNELS_OK;
    if (!ok) {
        mr_kv_cache_free(kv, m);
        snprintf(err, errlen,
                 "out of memory for a KV cache of %d blocks of %d tokens (%zu MiB per layer)",
                 n_blocks, block_size, (slots * (size_t)(kv->k_dim + kv->v_dim) * size) >> 20);
        return MR_ENGINE_ENOMEM;
    }
    /* Lowest ids on top, so a fresh cache fills from block 0. */
    for (int i = 0; i < n_blocks; i++)
        kv->free_ids[i] = n_blocks - 1 - i;
    kv->n_free = n_blocks;
    return MR_ENGINE_OK;
}

void mr_kv_cache_free(mr_kv_cache *kv, const mr_model *m)
{
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k && kv->k[l])
            m->be->ops->free(m->be, kv->k[l]);
        if (kv->v && kv->v[l])
            m->be->ops->free(m->be, kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->free_ids);
    *kv = (mr_kv_cache){0};
}

bool mr_kv_cache_take(mr_kv_cache *kv, int n, int32_t *ids)
{
    if (n > kv->n_free)
        return false;
    for (int i = 0; i < n; i++)
        ids[i] = kv->free_ids[--kv->n_free];
    return true;
}

void mr_kv_cache_give(mr_kv_cache *kv, int n, const int32_t *ids)
{
    for (int i = n - 1; i >= 0; i--)
        kv->free_ids[kv->n_free++] = ids[i];
}
