/*
 * The Qwen3-MoE forward pass, top to bottom, as Hugging Face's
 * modeling_qwen3_moe.py computes it:
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
 * All arithmetic goes through the backend's ops table.
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
    /* Backend buffers. */
    float *x, *h, *q, *k, *v, *attn, *out;
    float *router_logits, *route_weight;
    int32_t *route_ids;
    int32_t *tokens, *pos, *seq, *slot, *block_table, *logit_rows;
    float *final_rows, *logits;
    size_t block_table_cap;
    /* Host side of routing: logical picks, their weights, their slots. */
    int32_t *host_ids, *host_slots;
    float *host_weights;
    /* The local slots that have rows, as one grouped expert call. */
    int32_t *group_offsets;
    const void **group_gate, **group_up, **group_down;
    /* Expert parallelism; own_comm when the model has no world. */
    mr_ep *ep;
    mr_comm *own_comm;
    uint64_t *expert_counts; /* [layers][experts]: tokens this rank routed */
    uint64_t *slot_tokens;   /* [moe layers][slots_per_rank]: rows its slots ran */
    mr_engine_stats stats;
};

static void *backend_alloc(const mr_model *m, size_t bytes, bool *ok)
{
    void *p = m->be->ops->alloc(m->be, bytes ? bytes : 1);
    if (!p)
        *ok = false;
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
    size_t rows = (size_t)max_rows, f = sizeof(float);
    size_t q_dim = (size_t)c->num_attention_heads * c->head_dim;
    size_t kv_dim = (size_t)c->num_key_value_heads * c->head_dim;
    size_t top_k = c->num_experts_per_tok > 0 ? (size_t)c->num_experts_per_tok : 1;
    size_t experts = c->num_experts > 0 ? (size_t)c->num_experts : 1;
    size_t slots = m->slots_per_rank > 0 ? (size_t)m->slots_per_rank : 1;
    size_t moe_layers = (size_t)mr_config_moe_layers(c);
    bool ok = true;
    a->x = backend_alloc(m, rows * c->hidden_size * f, &ok);
    a->h = backend_alloc(m, rows * c->hidden_size * f, &ok);
    a->out = backend_alloc(m, rows * c->hidden_size * f, &ok);
    a->q = backend_alloc(m, rows * q_dim * f, &ok);
    a->attn = backend_alloc(m, rows * q_dim * f, &ok);
    a->k = backend_alloc(m, rows * kv_dim * f, &ok);
    a->v = backend_alloc(m, rows * kv_dim * f, &ok);
    a->router_logits = backend_alloc(m, rows * experts * f, &ok);
    a->route_weight = backend_alloc(m, rows * top_k * f, &ok);
    a->route_ids = backend_alloc(m, rows * top_k * sizeof(int32_t), &ok);
    a->tokens = backend_alloc(m, rows * sizeof(int32_t), &ok);
    a->pos = backend_alloc(m, rows * sizeof(int32_t), &ok);
    a->seq = backend_alloc(m, rows * sizeof(int32_t), &ok);
    a->slot = backend_alloc(m, rows * sizeof(int32_t), &ok);
    a->logit_rows = backend_alloc(m, (size_t)max_logits * sizeof(int32_t), &ok);
    a->final_rows = backend_alloc(m, (size_t)max_logits * c->hidden_size * f, &ok);
    a->logits = backend_alloc(m, (size_t)max_logits * c->vocab_size * f, &ok);
    if (!ok)
        goto nomem;
    a->host_ids = malloc(rows * top_k * sizeof(int32_t));
    a->host_slots = malloc(rows * top_k * sizeof(int32_t));
    a->host_weights = malloc(rows * top_k * f);
    a->group_offsets = malloc((slots + 1) * sizeof(int32_t));
    a->group_gate = malloc(slots * sizeof(void *));
    a->group_up = malloc(slots * sizeof(void *));
    a->group_down = malloc(slots * sizeof(void *));
    a->expert_counts = calloc((size_t)c->num_hidden_layers * experts, sizeof(uint64_t));
    a->slot_tokens = calloc((moe_layers ? moe_layers : 1) * slots, sizeof(uint64_t));
    if (!a->host_ids || !a->host_slots || !a->host_weights || !a->group_offsets ||
        !a->group_gate || !a->group_up || !a->group_down || !a->expert_counts ||
        !a->slot_tokens)
        goto nomem;
    a->stats.moe_layers = (int)moe_layers;
    a->stats.slots_per_rank = m->slots_per_rank;
    a->stats.slot_tokens = a->slot_tokens;
    int rc = moe_layers ? new_expert_parallel(m, a, err, errlen) : MR_ENGINE_OK;
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
    void *device[] = {a->x, a->h, a->out, a->q, a->attn, a->k, a->v, a->router_logits,
                      a->route_weight, a->route_ids, a->tokens, a->pos, a->seq, a->slot,
                      a->block_table, a->logit_rows, a->final_rows, a->logits};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        if (device[i])
            m->be->ops->free(m->be, device[i]);
    void *host[] = {a->host_ids, a->host_slots, a->host_weights, a->group_offsets,
                    a->group_gate, a->group_up, a->group_down, a->expert_counts,
                    a->slot_tokens};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
    mr_ep_free(a->ep);
    mr_comm_free(a->own_comm);
    free(a);
}

const uint64_t *mr_forward_expert_counts(const mr_activations *a)
{
    return a->expert_counts;
}

const mr_engine_stats *mr_forward_stats(const mr_activations *a)
{
    return &a->stats;
}

/* Routing on the host: each (token, pick) to the physical slot that serves
 * it, the replica chosen by the token's position, so the choice is the
 * same whichever rank or batch the token is in. */
static void route_to_slots(const mr_model *m, mr_activations *a, const mr_layer *L, int layer,
                           const int32_t *pos, int rows)
{
    const mr_model_config *c = &m->cfg;
    int k = c->num_experts_per_tok;
    mr_backend *be = m->be;
    be->ops->download(be, a->host_ids, a->route_ids, (size_t)rows * k * sizeof(int32_t));
    be->ops->download(be, a->host_weights, a->route_weight, (size_t)rows * k * sizeof(float));
    uint64_t *counts = a->expert_counts + (size_t)layer * c->num_experts;
    for (int i = 0; i < rows * k; i++) {
        int32_t e = a->host_ids[i];
        counts[e]++;
        a->host_slots[i] = mr_eplb_pick_slot(&m->placement, L->moe_index, e, (uint64_t)pos[i / k]);
    }
}

/* This rank's slots that received rows, as one grouped expert call. */
static void run_local_experts(const mr_model *m, mr_activations *a, const mr_layer *L,
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
    if (n_groups > 0)
        m->be->ops->expert_ffn(m->be, got->y, NULL, &groups);
}

/* out = Σ_j weight_j · expert_j(h) over the token's top-k experts, the
 * experts wherever the placement puts them.  Every rank runs this for
 * every MoE layer of every step, with zero rows when it has none. */
static int moe_block(mr_model *m, mr_activations *a, const mr_layer *L, int layer,
                     const mr_step *s, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    int rows = s->rows;
    double t0 = mr_clock_seconds(), wait0 = mr_ep_wait_seconds(a->ep);
    if (rows > 0) {
        be->ops->matmul(be, a->router_logits, a->h, L->router.data, L->router.type, rows,
                        c->num_experts, c->hidden_size);
        be->ops->router_topk(be, a->route_ids, a->route_weight, a->router_logits, rows,
                             c->num_experts, c->num_experts_per_tok, c->norm_topk_prob);
        route_to_slots(m, a, L, layer, s->pos, rows);
    }
    be->ops->sync(be);
    mr_ep_received got;
    int rc = mr_ep_dispatch(a->ep, a->h, a->host_slots, a->host_weights, rows, &got, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    double t1 = mr_clock_seconds(), wait1 = mr_ep_wait_seconds(a->ep);
    run_local_experts(m, a, L, &got);
    double t2 = mr_clock_seconds();
    rc = mr_ep_combine(a->ep, a->out, err, errlen);
    double t3 = mr_clock_seconds(), wait3 = mr_ep_wait_seconds(a->ep);
    a->stats.dispatch_seconds += t1 - t0 - (wait1 - wait0);
    a->stats.experts_seconds += t2 - t1;
    a->stats.combine_seconds += t3 - t2 - (wait3 - wait1);
    a->stats.wait_seconds += wait3 - wait0;
    return rc;
}

/* A dense SwiGLU MLP is one expert that every token uses. */
static void dense_block(mr_model *m, mr_activations *a, const mr_layer *L, int rows)
{
    int32_t offsets[2] = {0, rows};
    mr_expert_groups one = {.groups = 1,
                            .offsets = offsets,
                            .gate = &L->dense_gate.data,
                            .up = &L->dense_up.data,
                            .down = &L->dense_down.data,
                            .type = L->dense_gate.type,
                            .hidden = m->cfg.hidden_size,
                            .inter = m->cfg.intermediate_size};
    m->be->ops->expert_ffn(m->be, a->out, a->h, &one);
}

static void attention_block(mr_model *m, mr_kv_cache *kv, mr_activations *a,
                            const mr_layer *L, int layer, const mr_step *s)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
    int rows = s->rows, hd = c->head_dim;
    int q_dim = c->num_attention_heads * hd, kv_dim = c->num_key_value_heads * hd;
    op->matmul(be, a->q, a->h, L->q_proj.data, L->q_proj.type, rows, q_dim, c->hidden_size);
    op->matmul(be, a->k, a->h, L->k_proj.data, L->k_proj.type, rows, kv_dim, c->hidden_size);
    op->matmul(be, a->v, a->h, L->v_proj.data, L->v_proj.type, rows, kv_dim, c->hidden_size);
    /* Qwen3 normalises each head of q and k before rotating them. */
    op->rmsnorm(be, a->q, a->q, L->q_norm.data, L->q_norm.type,
                rows * c->num_attention_heads, hd, c->rms_norm_eps);
    op->rmsnorm(be, a->k, a->k, L->k_norm.data, L->k_norm.type,
                rows * c->num_key_value_heads, hd, c->rms_norm_eps);
    op->rope_neox(be, a->q, a->pos, rows, c->num_attention_heads, hd, c->rope_theta);
    op->rope_neox(be, a->k, a->pos, rows, c->num_key_value_heads, hd, c->rope_theta);
    op->kv_store(be, kv->k[layer], kv->v[layer], a->k, a->v, a->slot, rows, kv_dim);
    mr_attention_args args = {.rows = rows,
                              .n_q_heads = c->num_attention_heads,
                              .n_kv_heads = c->num_key_value_heads,
                              .head_dim = hd,
                              .block_size = kv->block_size,
                              .max_blocks = s->max_blocks,
                              .scale = 1.0f / sqrtf((float)hd),
                              .seq = a->seq,
                              .pos = a->pos,
                              .block_table = a->block_table};
    op->attention(be, a->attn, a->q, kv->k[layer], kv->v[layer], &args);
    op->matmul(be, a->out, a->attn, L->o_proj.data, L->o_proj.type, rows, c->hidden_size,
               q_dim);
}

static int upload_step(mr_model *m, mr_activations *a, const mr_step *s, int n_seqs,
                       char *err, size_t errlen)
{
    mr_backend *be = m->be;
    size_t table = (size_t)n_seqs * s->max_blocks * sizeof(int32_t);
    if (table > a->block_table_cap) {
        if (a->block_table)
            be->ops->free(be, a->block_table);
        a->block_table = be->ops->alloc(be, table);
        a->block_table_cap = a->block_table ? table : 0;
        if (!a->block_table) {
            snprintf(err, errlen, "out of memory for a block table of %zu bytes", table);
            return MR_ENGINE_ENOMEM;
        }
    }
    size_t rows = (size_t)s->rows * sizeof(int32_t);
    be->ops->upload(be, a->tokens, s->tokens, rows);
    be->ops->upload(be, a->pos, s->pos, rows);
    be->ops->upload(be, a->seq, s->seq, rows);
    be->ops->upload(be, a->slot, s->slot, rows);
    be->ops->upload(be, a->block_table, s->block_table, table);
    be->ops->upload(be, a->logit_rows, s->logit_rows, (size_t)s->n_logits * sizeof(int32_t));
    return MR_ENGINE_OK;
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

int mr_forward(mr_model *m, mr_kv_cache *kv, mr_activations *a, const mr_step *s,
               float *logits, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
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
    int rc = upload_step(m, a, s, n_seqs, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    int rows = s->rows;
    size_t hidden = (size_t)rows * c->hidden_size;
    op->embed(be, a->x, m->embed.data, m->embed.type, a->tokens, rows, c->hidden_size);
    for (int layer = 0; rc == MR_ENGINE_OK && layer < c->num_hidden_layers; layer++) {
        const mr_layer *L = &m->layers[layer];
        double started = mr_clock_seconds();
        op->rmsnorm(be, a->h, a->x, L->input_norm.data, L->input_norm.type, rows,
                    c->hidden_size, c->rms_norm_eps);
        attention_block(m, kv, a, L, layer, s);
        op->add(be, a->x, a->out, hidden);
        op->rmsnorm(be, a->h, a->x, L->post_attention_norm.data, L->post_attention_norm.type,
                    rows, c->hidden_size, c->rms_norm_eps);
        if (!L->moe)
            dense_block(m, a, L, rows);
        be->ops->sync(be);
        a->stats.attention_seconds += mr_clock_seconds() - started;
        if (L->moe)
            rc = moe_block(m, a, L, layer, s, err, errlen);
        op->add(be, a->x, a->out, hidden);
    }
    if (rc != MR_ENGINE_OK)
        return rc;
    op->gather(be, a->final_rows, a->x, a->logit_rows, s->n_logits, c->hidden_size);
    op->rmsnorm(be, a->final_rows, a->final_rows, m->final_norm.data, m->final_norm.type,
                s->n_logits, c->hidden_size, c->rms_norm_eps);
    op->matmul(be, a->logits, a->final_rows, m->lm_head.data, m->lm_head.type, s->n_logits,
               c->vocab_size, c->hidden_size);
    op->download(be, logits, a->logits, (size_t)s->n_logits * c->vocab_size * sizeof(float));
    return MR_ENGINE_OK;
}
