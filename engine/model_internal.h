/*
 * The model as the forward pass sees it: one struct of weight pointers per
 * layer, already mapped for the backend, and the scratch activations of one
 * step.  Private to engine/.
 */
#ifndef MR_ENGINE_MODEL_INTERNAL_H
#define MR_ENGINE_MODEL_INTERNAL_H

#include "engine/engine.h"

/* A weight as ops read it: an address on the backend, its type, and the
 * bytes the backend holds for it (mr_model_attention_bytes sums them). */
typedef struct {
    const void *data;
    mr_tensor_type type;
    size_t bytes;
} mr_weight;

typedef struct {
    mr_weight input_norm, post_attention_norm;
    mr_weight q_proj, k_proj, v_proj, o_proj, q_norm, k_norm;
    bool moe;
    int moe_index;                            /* row in the expert placement */
    mr_weight router;                         /* [experts][hidden] */
    /* This rank's physical slots: [slots_per_rank], the logical expert in
     * each given by the placement. */
    const void **expert_gate, **expert_up, **expert_down;
    void *expert_store;         /* the slots' weights: [slots][gate, up, down] */
    size_t expert_tensor_bytes; /* one of gate, up, down */
    mr_weight dense_gate, dense_up, dense_down; /* layers that stay dense */
    mr_tensor_type expert_type;
    /* DeepSeek-V3: MLA's weights in the checkpoint's types (mla_weights.c);
     * o_proj is o_proj above */
    mr_weight q_a, q_a_norm;  /* q_lora_rank > 0 */
    mr_weight q_b;            /* [heads * nope + heads * rope][q_in]: the nope rows, then
                               * the rope rows de-interleaved */
    mr_weight kv_a, kv_norm;  /* [latent + rope][hidden], rope rows de-interleaved */
    mr_weight kv_b;           /* [heads * (nope + v)][latent] as loaded: W_UV's rows */
    mr_weight uk_t;           /* [heads][latent][nope]: each head's W_UKᵀ */
    mr_weight router_bias;    /* [experts], f32: e_score_correction_bias */
    mr_weight shared_gate, shared_up, shared_down; /* the shared experts as one MLP */
} mr_layer;

struct mr_model {
    mr_model_config cfg;
    mr_tokenizer *tokenizer;
    mr_weights *weights;
    mr_backend *be;
    char backend_note[256]; /* see mr_model_backend_note */
    mr_weight embed, final_norm, lm_head;
    mr_layer *layers;
    mr_chat_template *chat; /* tokenizer_config.json's chat template */
    char *dir;
    /* Expert parallelism: the world (NULL: alone), this rank's slots. */
    mr_comm *comm;
    mr_eplb_placement placement;
    /* Its log2phy and logcnt in backend memory, where the route op reads
     * them: uploaded at load and by mr_model_set_placement. */
    int32_t *route_log2phy, *route_logcnt;
    float *rope_cos_sin; /* backend: mr_rope_table of max_position_embeddings positions */
    void **synthetic;    /* backend buffers of synthetic weights, freed with the model */
    size_t n_synthetic;
    /* Host memory weights were mapped from that is not the file's mapping
     * (packed FP8 rows): map_weights may keep reading it (the ref backend
     * does), so it lives as long as the backend. */
    void **host_weights;
    size_t n_host_weights;
    int rank, slots_per_rank;
    mr_ep_mode dispatch;
    int ll_capacity;
};

/* MR_ENGINE_OK when a backend op returned MR_KERNELS_OK; else the engine's
 * code for it, with the backend's message in err. */
int mr_engine_backend_status(const mr_backend *be, int status, char *err, size_t errlen);

/* Keeps host memory a weight was mapped from (map_weights) until the
 * backend is gone: the ref backend reads weights where they were mapped
 * from.  Takes `host`, freeing it itself when it cannot keep it. */
int mr_model_keep_host(mr_model *m, void *host);

/* t's bytes as the kernels take them, on the host: the file's mapping,
 * or FP8 rows packed, or a synthetic tensor's values made on the backend;
 * *owned is what the caller frees (NULL for the mapping).  NULL with err
 * filled when out of memory or the backend failed. */
const void *mr_model_tensor_host(mr_model *m, const mr_tensor *t, void **owned, char *err,
                                 size_t errlen);
/* Maps `host` (bytes of `type`, taken: kept as long as the backend, see
 * mr_model_keep_host) as weight w. */
int mr_model_map_host(mr_model *m, mr_weight *w, void *host, size_t bytes, mr_tensor_type type,
                      char *err, size_t errlen);
/* Tensor `name` of the given shape, mapped as it is in the checkpoint
 * (synthetic weights made on the backend). */
int mr_model_map_tensor(mr_model *m, mr_weight *out, const char *name, int ndim, int64_t d0,
                        int64_t d1, char *err, size_t errlen);

/* MLA's softmax scale: 1/sqrt(qk head dim), times YaRN's mscale_all_dim
 * correction squared when the RoPE is stretched (DeepseekV3Attention). */
float mr_mla_softmax_scale(const mr_model_config *c);

/* DeepSeek-V3's attention weights of `layer` into L (mla_weights.c). */
int mr_mla_load_layer(mr_model *m, mr_layer *L, int layer, char *err, size_t errlen);


/* KV cache: K and V of every layer in blocks of block_size tokens (MLA:
 * the latent in k, the rope key in v). */
typedef struct {
    int block_size, n_blocks, k_dim, v_dim, n_layers;
    mr_tensor_type type; /* f32, or bf16 for half the memory */
    void **k, **v;     /* [layer] -> [n_blocks][block_size][kv_dim] on the backend */
    int32_t *free_ids; /* stack of free blocks */
    int n_free;
} mr_kv_cache;

int mr_kv_cache_init(mr_kv_cache *kv, const mr_model *m, mr_tensor_type type, int block_size,
                     int n_blocks, char *err, size_t errlen);
void mr_kv_cache_free(mr_kv_cache *kv, const mr_model *m);
/* Takes n blocks off the free stack into ids; false when too few are free. */
bool mr_kv_cache_take(mr_kv_cache *kv, int n, int32_t *ids);
void mr_kv_cache_give(mr_kv_cache *kv, int n, const int32_t *ids);

/* One forward step: `rows` tokens of any number of sequences. */
typedef struct {
    int rows;
    const int32_t *tokens;      /* [rows] */
    const int32_t *pos;         /* [rows] position in its sequence */
    const int32_t *seq;         /* [rows] row of block_table */
    const int32_t *slot;        /* [rows] KV slot: block * block_size + offset */
    const int32_t *block_table; /* [sequences][max_blocks] */
    int max_blocks;
    const int32_t *logit_rows;  /* rows whose logits are wanted */
    int n_logits;
} mr_step;

/* Activations of one step, sized for max_rows tokens and max_logits rows of
 * logits; allocated once on the backend. */
typedef struct mr_activations mr_activations;

int mr_activations_new(const mr_model *m, int max_rows, int max_logits,
                       mr_activations **out, char *err, size_t errlen);
void mr_activations_free(mr_activations *a, const mr_model *m);
/* Runs the model over a step; logits[n_logits][vocab] land in host memory. */
int mr_forward(mr_model *m, mr_kv_cache *kv, mr_activations *a, const mr_step *step,
               float *logits, char *err, size_t errlen);

/* Token counts per (layer, expert) since the model was loaded: the load
 * statistics EPLB and the report read. */
const uint64_t *mr_forward_expert_counts(const mr_activations *a);
/* The step measurements behind mr_engine_get_stats. */
const mr_engine_stats *mr_forward_stats(const mr_activations *a);

#endif
