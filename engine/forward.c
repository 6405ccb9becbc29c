/*
 * The Qwen3-MoE forward pass, top to bottom, as Hugging Face's
 * modeling_qwen3_moe.py computes it (Mixtral's, modeling_mixtral.py, is the
 * same without q_norm and k_norm):
 *
 *   x = embed(tokens)
 *   for each layer:
 *       h = rmsnorm(x)
 *       q, k, v = h·Wq, h·Wk, h·Wv;  q, k = rmsnorm per head (q_norm, k_norm)
 *       q, k = rope(q, k);  store k, v in the KV cache
 *       x += o_proj(attention(q, cache))
 *       h = rmsnorm(x)
 *       x += moe(h)            (or a dense SwiGLU MLP on mlp_only layers)
 *   logits = lm_head(rmsnorm(x))   only for the rows that sample
 *
 * The MoE block is route → group tokens by expert → one grouped expert GEMM
 * → weighted combine: the shape expert parallelism splits across ranks.
 * All arithmetic goes through the backend's ops table; each block returns
 * the first failing op's status, which mr_engine_backend_status turns into
 * the engine's code and message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/ep.h"
#include "engine/model_internal.h"

struct mr_activations {
    int max_rows, max_logits;
    mr_backend *be;
    /* Backend buffers. */
    float *x, *h, *q, *k, *v, *attn, *out;
    float *q_rope, *shared; /* DeepSeek-V3: MLA's rotated q, the shared experts' output */
    float *router_logits, *route_weight;
    int32_t *route_slots;
    uint64_t *route_counts; /* [layers][experts]: tokens this rank routed */
    int32_t *tokens, *pos, *seq, *slot, *block_table, *logit_rows;
    float *final_rows, *logits;
    size_t block_table_cap;
    /* The local slots that have rows, as one grouped expert call. */
    int32_t *group_offsets;
    const void **group_gate, **group_up, **group_down;
    /* Expert parallelism; own_comm when the model has no world. */
    mr_ep *ep;
    mr_comm *own_comm;
    uint64_t *expert_counts; /* route_counts as last downloaded */
    size_t counts_bytes;
    uint64_t *slot_tokens;   /* [moe layers][slots_per_rank]: rows its slots ran */
    mr_engine_stats stats;
};

/* A backend buffer, unless an earlier one failed (*rc says so). */
static void *backend_alloc(const mr_model *m, size_t bytes, int *rc)
{
    void *p = NULL;
    if (*rc == MR_KERNELS_OK)
        *rc = m->be->ops->alloc(m->be, bytes ? bytes : 1, &p);
    return p;
}

static int new_expert_parallel(const mr_model *m, mr_activations *a, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    mr_ep_shape shape = {.hidden = c->hidden_size,
                         .top_k = c->num_experts_per_tok,
                         .slots_per_rank = m->slots_per_rank,
                         .max_tokens = a->max_rows,
                         .mode = m->dispatch,
                         .ll_capacity = m->ll_capacity};
    mr_comm *comm = m->comm;
    if (!comm) {
        mr_comm_options solo = {.capacity = mr_ep_exchange_bytes(&shape)};
        int rc = mr_comm_solo(&solo, &a->own_comm, err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
        comm = a->own_comm;
    }
    return mr_ep_new(comm, m->be, &shape, &a->ep, err, errlen);
}

int mr_activations_new(const mr_model *m, int max_rows, int max_logits,
                       mr_activations **out, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    mr_activations *a = calloc(1, sizeof *a);
    if (!a)
        goto nomem;
    a->max_rows = max_rows;
    a->max_logits = max_logits;
    a->be = m->be;
    size_t rows = (size_t)max_rows, f = sizeof(float);
    size_t q_dim = (size_t)c->num_attention_heads * c->head_dim;
    size_t kv_dim = (size_t)c->num_key_value_heads * c->head_dim;
    /* MLA's steps reuse q and attn for [heads][latent], [heads][nope] and
     * [heads][v], k for the latent, v for q_a's output and then the rope
     * key (mla_block) */
    bool mla = c->family == MR_FAMILY_DEEPSEEK_V3;
    size_t head_width = (size_t)c->mla.kv_lora_rank;
    head_width = head_width > (size_t)c->mla.qk_nope_head_dim ? head_width
                                                             : (size_t)c->mla.qk_nope_head_dim;
    head_width = head_width > (size_t)c->mla.v_head_dim ? head_width : (size_t)c->mla.v_head_dim;
    size_t heads_latent = (size_t)c->num_attention_heads * head_width;
    size_t v_dim = (size_t)c->mla.q_lora_rank > (size_t)c->mla.qk_rope_head_dim
                       ? (size_t)c->mla.q_lora_rank
                       : (size_t)c->mla.qk_rope_head_dim;
    if (mla) {
        q_dim = q_dim > heads_latent ? q_dim : heads_latent;
        kv_dim = kv_dim > v_dim ? kv_dim : v_dim;
        kv_dim = kv_dim > (size_t)c->mla.kv_lora_rank ? kv_dim : (size_t)c->mla.kv_lora_rank;
    }
    size_t top_k = c->num_experts_per_tok > 0 ? (size_t)c->num_experts_per_tok : 1;
    size_t experts = c->num_experts > 0 ? (size_t)c->num_experts : 1;
    size_t slots = m->slots_per_rank > 0 ? (size_t)m->slots_per_rank : 1;
    size_t moe_layers = (size_t)mr_config_moe_layers(c);
    size_t counts = (size_t)c->num_hidden_layers * experts * sizeof(uint64_t);
    a->counts_bytes = counts;
    int rc = MR_KERNELS_OK;
    a->x = backend_alloc(m, rows * c->hidden_size * f, &rc);
    a->h = backend_alloc(m, rows * c->hidden_size * f, &rc);
    a->out = backend_alloc(m, rows * c->hidden_size * f, &rc);
    a->q = backend_alloc(m, rows * q_dim * f, &rc);
    a->attn = backend_alloc(m, rows * q_dim * f, &rc);
    a->k = backend_alloc(m, rows * kv_dim * f, &rc);
    a->v = backend_alloc(m, rows * kv_dim * f, &rc);
    if (mla) {
        a->q_rope = backend_alloc(
            m, rows * (size_t)c->num_attention_heads * (size_t)c->mla.qk_rope_head_dim * f, &rc);
        a->shared = backend_alloc(m, rows * c->hidden_size * f, &rc);
    }
    a->router_logits = backend_alloc(m, rows * experts * f, &rc);
    a->route_weight = backend_alloc(m, rows * top_k * f, &rc);
    a->route_slots = backend_alloc(m, rows * top_k * sizeof(int32_t), &rc);
    a->route_counts = backend_alloc(m, counts, &rc);
    a->tokens = backend_alloc(m, rows * sizeof(int32_t), &rc);
    a->pos = backend_alloc(m, rows * sizeof(int32_t), &rc);
    a->seq = backend_alloc(m, rows * sizeof(int32_t), &rc);
    a->slot = backend_alloc(m, rows * sizeof(int32_t), &rc);
    a->logit_rows = backend_alloc(m, (size_t)max_logits * sizeof(int32_t), &rc);
    a->final_rows = backend_alloc(m, (size_t)max_logits * c->hidden_size * f, &rc);
    a->logits = backend_alloc(m, (size_t)max_logits * c->vocab_size * f, &rc);
    if (rc != MR_KERNELS_OK) {
        mr_activations_free(a, m);
        return mr_engine_backend_status(m->be, rc, err, errlen);
    }
    a->group_offsets = malloc((slots + 1) * sizeof(int32_t));
    a->group_gate = malloc(slots * sizeof(void *));
    a->group_up = malloc(slots * sizeof(void *));
    a->group_down = malloc(slots * sizeof(void *));
    a->expert_counts = calloc((size_t)c->num_hidden_layers * experts, sizeof(uint64_t));
    a->slot_tokens = calloc((moe_layers ? moe_layers : 1) * slots, sizeof(uint64_t));
    if (!a->group_offsets ||
        !a->group_gate || !a->group_up || !a->group_down || !a->expert_counts ||
        !a->slot_tokens)
        goto nomem;
    a->stats.moe_layers = (int)moe_layers;
    a->stats.slots_per_rank = m->slots_per_rank;
    a->stats.slot_tokens = a->slot_tokens;
    rc = mr_engine_backend_status(m->be, m->be->ops->upload(m->be, a->route_counts,
                                                        a->expert_counts, counts),
                                 err, errlen);
    if (rc == MR_ENGINE_OK && moe_layers)
        rc = new_expert_parallel(m, a, err, errlen);
    if (rc != MR_ENGINE_OK) {
        mr_activations_free(a, m);
        return rc;
    }
    *out = a;
    return MR_ENGINE_OK;
nomem:
    mr_activations_free(a, m);
    snprintf(err, errlen, "out of memory for the activations of %d tokens", max_rows);
    return MR_ENGINE_ENOMEM;
}

void mr_activations_free(mr_activations *a, const mr_model *m)
{
    if (!a)
        return;
    void *device[] = {a->x, a->h, a->out, a->q, a->attn, a->k, a->v, a->q_rope, a->shared,
                      a->router_logits,
                      a->route_weight, a->route_slots, a->route_counts, a->tokens, a->pos,
                      a->seq, a->slot, a->block_table, a->logit_rows, a->final_rows,
                      a->logits};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        if (device[i])
            m->be->ops->free(m->be, device[i]);
    void *host[] = {a->group_offsets,
                    a->group_gate, a->group_up, a->group_down, a->expert_counts,
                    a->slot_tokens};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
    mr_ep_free(a->ep);
    mr_comm_free(a->own_comm);
    free(a);
}

/* Downloaded when read, not per layer.  Should the download fail, the
 * last read's counts stand; the next step then fails with the backend's
 * error. */
const uint64_t *mr_forward_expert_counts(const mr_activations *a)
{
    a->be->ops->download(a->be, a->expert_counts, a->route_counts, a->counts_bytes);
    return a->expert_counts;
}

const mr_engine_stats *mr_forward_stats(const mr_activations *a)
{
    return &a->stats;
}

/* The router's logits, then the route op: each (token, pick) to the
 * physical slot that serves it and its weight, counted per expert, all on
 * the backend from the placement maps the model keeps there. */
static int route(const mr_model *m, mr_activations *a, const mr_layer *L, int layer, int rows)
{
    const mr_model_config *c = &m->cfg;
    const mr_eplb_placement *p = &m->placement;
    mr_backend *be = m->be;
    size_t maps = (size_t)L->moe_index * (size_t)p->n_logical;
    bool grouped = c->family == MR_FAMILY_DEEPSEEK_V3;
    mr_route_args args = {.rows = rows,
                          .n_experts = c->num_experts,
                          .k = c->num_experts_per_tok,
                          .renormalize = c->norm_topk_prob,
                          .scoring = grouped ? MR_ROUTE_SIGMOID_GROUPED : MR_ROUTE_SOFTMAX,
                          .bias = L->router_bias.data,
                          .n_group = c->mla.n_group,
                          .topk_group = c->mla.topk_group,
                          .scaling = c->mla.routed_scaling_factor,
                          .max_replicas = p->max_replicas,
                          .logits = a->router_logits,
                          .pos = a->pos,
                          .log2phy = m->route_log2phy + maps * (size_t)p->max_replicas,
                          .logcnt = m->route_logcnt + maps,
                          .counts = a->route_counts + (size_t)layer * c->num_experts,
                          .slots = a->route_slots,
                          .weights = a->route_weight};
    int rc = be->ops->matmul(be, a->router_logits, a->h, L->router.data, L->router.type, rows,
                             c->num_experts, c->hidden_size);
    return rc != MR_KERNELS_OK ? rc : be->ops->route(be, &args);
}

/* This rank's slots that received rows, as one grouped expert call. */
static int run_local_experts(const mr_model *m, mr_activations *a, const mr_layer *L,
                             const mr_ep_received *got)
{
    int n_groups = 0;
    uint64_t *ran = a->slot_tokens + (size_t)L->moe_index * m->slots_per_rank;
    a->group_offsets[0] = 0;
    for (int s = 0; s < m->slots_per_rank; s++) {
        int count = got->offsets[s + 1] - got->offsets[s];
        ran[s] += (uint64_t)count;
        if (count == 0)
            continue;
        a->group_gate[n_groups] = L->expert_gate[s];
        a->group_up[n_groups] = L->expert_up[s];
        a->group_down[n_groups] = L->expert_down[s];
        a->group_offsets[n_groups + 1] = got->offsets[s + 1];
        n_groups++;
    }
    mr_expert_groups groups = {.groups = n_groups,
                               .offsets = a->group_offsets,
                               .x_rows = got->x_rows,
                               .gate = a->group_gate,
                               .up = a->group_up,
                               .down = a->group_down,
                               .type = L->expert_type,
                               .hidden = m->cfg.hidden_size,
                               .inter = m->cfg.moe_intermediate_size};
    return n_groups > 0 ? m->be->ops->expert_ffn(m->be, got->y, NULL, &groups) : MR_KERNELS_OK;
}

/* out = Σ_j weight_j · expert_j(h) over the token's top-k experts, the
 * experts wherever the placement puts them.  Every rank runs this for
 * every MoE layer of every step, with zero rows when it has none. */
static int moe_block(mr_model *m, mr_activations *a, const mr_layer *L, int layer,
                     const mr_step *s, char *err, size_t errlen)
{
    mr_backend *be = m->be;
    int rows = s->rows;
    double t0 = mr_clock_seconds(), wait0 = mr_ep_wait_seconds(a->ep);
    int rc = rows > 0 ? route(m, a, L, layer, rows) : MR_KERNELS_OK;
    if ((rc = mr_engine_backend_status(be, rc, err, errlen)) != MR_ENGINE_OK)
        return rc;
    mr_ep_received got;
    rc = mr_ep_dispatch(a->ep, a->h, a->route_slots, a->route_weight, rows, &got, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    double t1 = mr_clock_seconds(), wait1 = mr_ep_wait_seconds(a->ep);
    rc = mr_engine_backend_status(be, run_local_experts(m, a, L, &got), err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    double t2 = mr_clock_seconds();
    rc = mr_ep_combine(a->ep, a->out, err, errlen);
    double t3 = mr_clock_seconds(), wait3 = mr_ep_wait_seconds(a->ep);
    a->stats.dispatch_seconds += t1 - t0 - (wait1 - wait0);
    a->stats.experts_seconds += t2 - t1;
    a->stats.combine_seconds += t3 - t2 - (wait3 - wait1);
    a->stats.wait_seconds += wait3 - wait0;
    return rc;
}

/* A SwiGLU MLP that every token goes through: one expert group of all
 * the rows. */
static int every_token_mlp(mr_model *m, float *out, const float *h, const mr_weight *gate,
                           const mr_weight *up, const mr_weight *down, int rows, int inter)
{
    int32_t offsets[2] = {0, rows};
    mr_expert_groups one = {.groups = 1,
                            .offsets = offsets,
                            .gate = &gate->data,
                            .up = &up->data,
                            .down = &down->data,
                            .type = gate->type,
                            .hidden = m->cfg.hidden_size,
                            .inter = inter};
    return m->be->ops->expert_ffn(m->be, out, h, &one);
}

/* A dense layer's MLP. */
static int dense_block(mr_model *m, mr_activations *a, const mr_layer *L, int rows)
{
    return every_token_mlp(m, a->out, a->h, &L->dense_gate, &L->dense_up, &L->dense_down, rows,
                           m->cfg.intermediate_size);
}

/* DeepSeek-V3's shared experts: one SwiGLU MLP of every token's h, added
 * to what the routed experts gave (out), as DeepseekV3MoE adds them. */
static int shared_experts(mr_model *m, mr_activations *a, const mr_layer *L, int rows)
{
    if (rows == 0)
        return MR_KERNELS_OK;
    int rc = every_token_mlp(m, a->shared, a->h, &L->shared_gate, &L->shared_up, &L->shared_down,
                             rows, m->cfg.moe_intermediate_size * m->cfg.mla.n_shared_experts);
    return rc != MR_KERNELS_OK ? rc
                               : m->be->ops->add(m->be, a->out, a->shared,
                                                 (size_t)rows * (size_t)m->cfg.hidden_size);
}

/* The address of row `row` of weight w of rows `cols` wide: a slice of
 * the tensor as loaded (backend memory; an address inside it). */
static const void *weight_rows(const mr_weight *w, int64_t row, int cols)
{
    return (const char *)w->data + (size_t)row * mr_tensor_row_bytes(w->type, cols);
}

/* DeepSeek-V3's attention in the absorbed form (mla_weights.c): q_nope
 * and q's rope part from q_b_proj (after q_a and its norm), q_nope taken
 * to the latent per head by W_UKᵀ, the rope part rotated; the token's
 * latent (normalised) and rope key into the two caches; every head over
 * the latent cache (mla_attention); each head's latent output to its v by
 * W_UV, then o_proj.  Its norms use RMSNorm's default eps, 1e-6, as
 * DeepseekV3Attention builds them.  Scratch: v holds q_a's output, then
 * the rope key; attn q_nope, then the heads' latents; q the q latents,
 * then the heads' v.  Returns the first failing op's status. */
static int mla_block(mr_model *m, mr_kv_cache *kv, mr_activations *a, const mr_layer *L,
                     int layer, const mr_step *s)
{
    const mr_model_config *c = &m->cfg;
    const mr_mla_config *mla = &c->mla;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
    int rows = s->rows, hidden = c->hidden_size, heads = c->num_attention_heads;
    int latent = mla->kv_lora_rank, rope = mla->qk_rope_head_dim;
    int nope = mla->qk_nope_head_dim, v_dim = mla->v_head_dim;
    int q_in = mla->q_lora_rank ? mla->q_lora_rank : hidden;
    const float norm_eps = 1e-6f;
    mr_mla_args args = {.rows = rows,
                        .n_heads = heads,
                        .latent = latent,
                        .rope = rope,
                        .block_size = kv->block_size,
                        .max_blocks = s->max_blocks,
                        .scale = mr_mla_softmax_scale(c),
                        .seq = a->seq,
                        .pos = a->pos,
                        .block_table = a->block_table,
                        .kv_type = kv->type};
    const float *q_src = a->h;
    int rc;
    if (mla->q_lora_rank &&
        ((rc = op->matmul(be, a->v, a->h, L->q_a.data, L->q_a.type, rows, q_in, hidden)) ||
         (rc = op->rmsnorm(be, a->v, a->v, L->q_a_norm.data, L->q_a_norm.type, rows, q_in,
                           norm_eps))))
        return rc;
    if (mla->q_lora_rank)
        q_src = a->v;
    if ((rc = op->matmul(be, a->attn, q_src, L->q_b.data, L->q_b.type, rows, heads * nope,
                         q_in)) ||
        (rc = op->matmul(be, a->q_rope, q_src, weight_rows(&L->q_b, (int64_t)heads * nope, q_in),
                         L->q_b.type, rows, heads * rope, q_in)) ||
        (rc = op->matmul_heads(be, a->q, a->attn, L->uk_t.data, L->uk_t.type, rows, heads,
                               latent, nope, latent)) ||
        (rc = op->rope_neox(be, a->q_rope, a->pos, rows, heads, rope, m->rope_cos_sin)) ||
        (rc = op->matmul(be, a->k, a->h, L->kv_a.data, L->kv_a.type, rows, latent, hidden)) ||
        (rc = op->rmsnorm(be, a->k, a->k, L->kv_norm.data, L->kv_norm.type, rows, latent,
                          norm_eps)) ||
        (rc = op->matmul(be, a->v, a->h, weight_rows(&L->kv_a, latent, hidden), L->kv_a.type,
                         rows, rope, hidden)) ||
        (rc = op->rope_neox(be, a->v, a->pos, rows, 1, rope, m->rope_cos_sin)) ||
        (rc = op->kv_store(be, kv->k[layer], NULL, kv->type, a->k, NULL, a->slot, rows, latent)) ||
        (rc = op->kv_store(be, kv->v[layer], NULL, kv->type, a->v, NULL, a->slot, rows, rope)) ||
        (rc = op->mla_attention(be, a->attn, a->q, a->q_rope, kv->k[layer], kv->v[layer], &args)) ||
        (rc = op->matmul_heads(be, a->q, a->attn, weight_rows(&L->kv_b, nope, latent),
                               L->kv_b.type, rows, heads, v_dim, latent, nope + v_dim)))
        return rc;
    return op->matmul(be, a->out, a->q, L->o_proj.data, L->o_proj.type, rows, hidden,
                      heads * v_dim);
}

/* Returns the first failing op's status. */
static int attention_block(mr_model *m, mr_kv_cache *kv, mr_activations *a,
                           const mr_layer *L, int layer, const mr_step *s)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
    int rows = s->rows, hd = c->head_dim, hidden = c->hidden_size;
    int q_heads = c->num_attention_heads, kv_heads = c->num_key_value_heads;
    int q_dim = q_heads * hd, kv_dim = kv_heads * hd;
    float eps = c->rms_norm_eps;
    mr_attention_args args = {.rows = rows,
                              .n_q_heads = q_heads,
                              .n_kv_heads = kv_heads,
                              .head_dim = hd,
                              .block_size = kv->block_size,
                              .max_blocks = s->max_blocks,
                              .scale = 1.0f / sqrtf((float)hd),
                              .seq = a->seq,
                              .pos = a->pos,
                              .block_table = a->block_table,
                              .kv_type = kv->type};
    int rc;
    if ((rc = op->matmul(be, a->q, a->h, L->q_proj.data, L->q_proj.type, rows, q_dim, hidden)) ||
        (rc = op->matmul(be, a->k, a->h, L->k_proj.data, L->k_proj.type, rows, kv_dim, hidden)) ||
        (rc = op->matmul(be, a->v, a->h, L->v_proj.data, L->v_proj.type, rows, kv_dim, hidden)))
        return rc;
    /* Qwen3 normalises each head of q and k before rotating them; Mixtral
     * does not. */
    if (c->qk_norm &&
        ((rc = op->rmsnorm(be, a->q, a->q, L->q_norm.data, L->q_norm.type, rows * q_heads, hd,
                           eps)) ||
         (rc = op->rmsnorm(be, a->k, a->k, L->k_norm.data, L->k_norm.type, rows * kv_heads, hd,
                           eps))))
        return rc;
    if ((rc = op->rope_neox(be, a->q, a->pos, rows, q_heads, hd, m->rope_cos_sin)) ||
        (rc = op->rope_neox(be, a->k, a->pos, rows, kv_heads, hd, m->rope_cos_sin)) ||
        (rc = op->kv_store(be, kv->k[layer], kv->v[layer], kv->type, a->k, a->v, a->slot, rows,
                           kv_dim)) ||
        (rc = op->attention(be, a->attn, a->q, kv->k[layer], kv->v[layer], &args)))
        return rc;
    return op->matmul(be, a->out, a->attn, L->o_proj.data, L->o_proj.type, rows, hidden, q_dim);
}

/* The step's tokens, positions and block table to the backend. */
static int upload_step(mr_model *m, mr_activations *a, const mr_step *s, int n_seqs)
{
    mr_backend *be = m->be;
    size_t table = (size_t)n_seqs * s->max_blocks * sizeof(int32_t);
    int rc = MR_KERNELS_OK;
    if (table > a->block_table_cap) {
        rc = a->block_table ? be->ops->free(be, a->block_table) : MR_KERNELS_OK;
        a->block_table = NULL;
        a->block_table_cap = 0;
        if (rc == MR_KERNELS_OK)
            rc = be->ops->alloc(be, table, (void **)&a->block_table);
        if (rc != MR_KERNELS_OK)
            return rc;
        a->block_table_cap = table;
    }
    size_t rows = (size_t)s->rows * sizeof(int32_t);
    if ((rc = be->ops->upload(be, a->tokens, s->tokens, rows)) ||
        (rc = be->ops->upload(be, a->pos, s->pos, rows)) ||
        (rc = be->ops->upload(be, a->seq, s->seq, rows)) ||
        (rc = be->ops->upload(be, a->slot, s->slot, rows)) ||
        (rc = be->ops->upload(be, a->block_table, s->block_table, table)))
        return rc;
    return be->ops->upload(be, a->logit_rows, s->logit_rows,
                           (size_t)s->n_logits * sizeof(int32_t));
}

/* A rank with no tokens still serves the others' tokens through its
 * experts: it takes part in every MoE layer's exchanges with zero rows. */
static int idle_step(mr_model *m, mr_activations *a, const mr_step *s, char *err,
                     size_t errlen)
{
    int rc = MR_ENGINE_OK;
    for (int layer = 0; rc == MR_ENGINE_OK && layer < m->cfg.num_hidden_layers; layer++)
        if (m->layers[layer].moe)
            rc = moe_block(m, a, &m->layers[layer], layer, s, err, errlen);
    return rc;
}

/* A layer up to its MLP: attention added into x, then h = rmsnorm(x), and
 * on a dense layer the MLP's output in out. */
static int attention_half(mr_model *m, mr_kv_cache *kv, mr_activations *a, const mr_layer *L,
                          int layer, const mr_step *s)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
    int rows = s->rows, hidden = c->hidden_size;
    float eps = c->rms_norm_eps;
    int rc;
    if ((rc = op->rmsnorm(be, a->h, a->x, L->input_norm.data, L->input_norm.type, rows, hidden,
                          eps)) ||
        (rc = c->family == MR_FAMILY_DEEPSEEK_V3 ? mla_block(m, kv, a, L, layer, s)
                                                 : attention_block(m, kv, a, L, layer, s)) ||
        (rc = op->add(be, a->x, a->out, (size_t)rows * hidden)) ||
        (rc = op->rmsnorm(be, a->h, a->x, L->post_attention_norm.data,
                          L->post_attention_norm.type, rows, hidden, eps)) ||
        (rc = L->moe ? MR_KERNELS_OK : dense_block(m, a, L, rows)))
        return rc;
    return be->ops->sync(be);
}

/* The logits of the rows that sample, into host memory. */
static int logits_head(mr_model *m, mr_activations *a, const mr_step *s, float *logits)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
    int n = s->n_logits, hidden = c->hidden_size;
    int rc;
    if ((rc = op->gather(be, a->final_rows, a->x, a->logit_rows, n, hidden)) ||
        (rc = op->rmsnorm(be, a->final_rows, a->final_rows, m->final_norm.data,
                          m->final_norm.type, n, hidden, c->rms_norm_eps)) ||
        (rc = op->matmul(be, a->logits, a->final_rows, m->lm_head.data, m->lm_head.type, n,
                         c->vocab_size, hidden)))
        return rc;
    return op->download(be, logits, a->logits, (size_t)n * c->vocab_size * sizeof(float));
}

/* One decoder layer: x += attention(rmsnorm(x)), then x += mlp(rmsnorm(x)),
 * the MLP dense or the experts. */
static int decoder_layer(mr_model *m, mr_kv_cache *kv, mr_activations *a, int layer,
                         const mr_step *s, char *err, size_t errlen)
{
    const mr_layer *L = &m->layers[layer];
    mr_backend *be = m->be;
    double started = mr_clock_seconds();
    int rc = mr_engine_backend_status(be, attention_half(m, kv, a, L, layer, s), err, errlen);
    a->stats.attention_seconds += mr_clock_seconds() - started;
    if (rc == MR_ENGINE_OK && L->moe)
        rc = moe_block(m, a, L, layer, s, err, errlen);
    if (rc == MR_ENGINE_OK && L->moe && L->shared_gate.data)
        rc = mr_engine_backend_status(be, shared_experts(m, a, L, s->rows), err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    size_t n = (size_t)s->rows * m->cfg.hidden_size;
    return mr_engine_backend_status(be, be->ops->add(be, a->x, a->out, n), err, errlen);
}

int mr_forward(mr_model *m, mr_kv_cache *kv, mr_activations *a, const mr_step *s,
               float *logits, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    if (s->rows > a->max_rows || s->n_logits > a->max_logits) {
        snprintf(err, errlen, "a step of %d tokens and %d logits exceeds the %d and %d sized for",
                 s->rows, s->n_logits, a->max_rows, a->max_logits);
        return MR_ENGINE_EINVAL;
    }
    a->stats.steps++;
    a->stats.tokens += (uint64_t)s->rows;
    if (s->rows == 0)
        return idle_step(m, a, s, err, errlen);
    int n_seqs = 0;
    for (int i = 0; i < s->rows; i++)
        if (s->seq[i] + 1 > n_seqs)
            n_seqs = s->seq[i] + 1;
    int op = upload_step(m, a, s, n_seqs);
    if (op == MR_KERNELS_OK)
        op = be->ops->embed(be, a->x, m->embed.data, m->embed.type, a->tokens, s->rows,
                            c->hidden_size);
    int rc = mr_engine_backend_status(be, op, err, errlen);
    for (int layer = 0; rc == MR_ENGINE_OK && layer < c->num_hidden_layers; layer++)
        rc = decoder_layer(m, kv, a, layer, s, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = mr_engine_backend_status(be, logits_head(m, a, s, logits), err, errlen);
    return rc;
}
