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

#include "engine/model_internal.h"

struct mr_activations {
    int max_rows, max_logits;
    /* Backend buffers. */
    float *x, *h, *q, *k, *v, *attn, *out;
    float *router_logits, *route_weight;
    int32_t *route_ids;
    float *grouped_in, *grouped_out;
    int32_t *src_row, *row_of;
    int32_t *tokens, *pos, *seq, *slot, *block_table, *logit_rows;
    float *final_rows, *logits;
    size_t block_table_cap;
    /* Host mirrors for the grouping, which is bookkeeping, not arithmetic. */
    int32_t *host_ids, *host_src_row, *host_row_of, *host_offsets, *host_count;
    const void **group_gate, **group_up, **group_down;
    uint64_t *expert_counts; /* [layers][experts] */
};

static void *backend_alloc(const mr_model *m, size_t bytes, bool *ok)
{
    void *p = m->be->ops->alloc(m->be, bytes ? bytes : 1);
    if (!p)
        *ok = false;
    return p;
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
    a->grouped_in = backend_alloc(m, rows * top_k * c->hidden_size * f, &ok);
    a->grouped_out = backend_alloc(m, rows * top_k * c->hidden_size * f, &ok);
    a->src_row = backend_alloc(m, rows * top_k * sizeof(int32_t), &ok);
    a->row_of = backend_alloc(m, rows * top_k * sizeof(int32_t), &ok);
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
    a->host_src_row = malloc(rows * top_k * sizeof(int32_t));
    a->host_row_of = malloc(rows * top_k * sizeof(int32_t));
    a->host_offsets = malloc((experts + 1) * sizeof(int32_t));
    a->host_count = malloc(experts * sizeof(int32_t));
    a->group_gate = malloc(experts * sizeof(void *));
    a->group_up = malloc(experts * sizeof(void *));
    a->group_down = malloc(experts * sizeof(void *));
    a->expert_counts = calloc((size_t)c->num_hidden_layers * experts, sizeof(uint64_t));
    if (!a->host_ids || !a->host_src_row || !a->host_row_of || !a->host_offsets ||
        !a->host_count || !a->group_gate || !a->group_up || !a->group_down ||
        !a->expert_counts)
        goto nomem;
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
                      a->route_weight, a->route_ids, a->grouped_in, a->grouped_out,
                      a->src_row, a->row_of, a->tokens, a->pos, a->seq, a->slot,
                      a->block_table, a->logit_rows, a->final_rows, a->logits};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        if (device[i])
            m->be->ops->free(m->be, device[i]);
    free(a->host_ids);
    free(a->host_src_row);
    free(a->host_row_of);
    free(a->host_offsets);
    free(a->host_count);
    free(a->group_gate);
    free(a->group_up);
    free(a->group_down);
    free(a->expert_counts);
    free(a);
}

const uint64_t *mr_forward_expert_counts(const mr_activations *a)
{
    return a->expert_counts;
}

/* Grouping is a counting sort of (token, choice) pairs by expert: rows of
 * one expert stay in token order, so the grouped GEMM reads each expert's
 * weights once and every token's result is the same wherever it sits. */
static void group_by_expert(const mr_model *m, mr_activations *a, const mr_layer *L,
                            int layer, int rows, mr_expert_groups *groups)
{
    const mr_model_config *c = &m->cfg;
    int k = c->num_experts_per_tok, n_experts = c->num_experts;
    mr_backend *be = m->be;
    be->ops->download(be, a->host_ids, a->route_ids, (size_t)rows * k * sizeof(int32_t));
    memset(a->host_count, 0, (size_t)n_experts * sizeof(int32_t));
    for (int i = 0; i < rows * k; i++)
        a->host_count[a->host_ids[i]]++;
    uint64_t *layer_counts = a->expert_counts + (size_t)layer * n_experts;
    int n_groups = 0, start = 0;
    a->host_offsets[0] = 0;
    for (int e = 0; e < n_experts; e++) {
        int count = a->host_count[e];
        layer_counts[e] += (uint64_t)count;
        a->host_count[e] = start; /* becomes the next free row of expert e */
        if (count == 0)
            continue;
        a->group_gate[n_groups] = L->expert_gate[e];
        a->group_up[n_groups] = L->expert_up[e];
        a->group_down[n_groups] = L->expert_down[e];
        start += count;
        a->host_offsets[++n_groups] = start;
    }
    for (int i = 0; i < rows * k; i++) {
        int row = a->host_count[a->host_ids[i]]++;
        a->host_src_row[row] = i / k;
        a->host_row_of[i] = row;
    }
    be->ops->upload(be, a->src_row, a->host_src_row, (size_t)rows * k * sizeof(int32_t));
    be->ops->upload(be, a->row_of, a->host_row_of, (size_t)rows * k * sizeof(int32_t));
    *groups = (mr_expert_groups){.groups = n_groups,
                                 .offsets = a->host_offsets,
                                 .gate = a->group_gate,
                                 .up = a->group_up,
                                 .down = a->group_down,
                                 .type = L->expert_type,
                                 .hidden = c->hidden_size,
                                 .inter = c->moe_intermediate_size};
}

/* out = Σ_j weight_j · expert_j(h) over the token's top-k experts. */
static void moe_block(mr_model *m, mr_activations *a, const mr_layer *L, int layer, int rows)
{
    const mr_model_config *c = &m->cfg;
    mr_backend *be = m->be;
    const mr_ops *op = be->ops;
    int k = c->num_experts_per_tok;
    op->matmul(be, a->router_logits, a->h, L->router.data, L->router.type, rows,
               c->num_experts, c->hidden_size);
    op->router_topk(be, a->route_ids, a->route_weight, a->router_logits, rows, c->num_experts,
                    k, c->norm_topk_prob);
    mr_expert_groups groups;
    group_by_expert(m, a, L, layer, rows, &groups);
    op->gather(be, a->grouped_in, a->h, a->src_row, rows * k, c->hidden_size);
    op->expert_ffn(be, a->grouped_out, a->grouped_in, &groups);
    op->combine(be, a->out, a->grouped_out, a->row_of, a->route_weight, rows, k,
                c->hidden_size);
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
    for (int layer = 0; layer < c->num_hidden_layers; layer++) {
        const mr_layer *L = &m->layers[layer];
        op->rmsnorm(be, a->h, a->x, L->input_norm.data, L->input_norm.type, rows,
                    c->hidden_size, c->rms_norm_eps);
        attention_block(m, kv, a, L, layer, s);
        op->add(be, a->x, a->out, hidden);
        op->rmsnorm(be, a->h, a->x, L->post_attention_norm.data, L->post_attention_norm.type,
                    rows, c->hidden_size, c->rms_norm_eps);
        if (L->moe)
            moe_block(m, a, L, layer, rows);
        else
            dense_block(m, a, L, rows);
        op->add(be, a->x, a->out, hidden);
    }
    op->gather(be, a->final_rows, a->x, a->logit_rows, s->n_logits, c->hidden_size);
    op->rmsnorm(be, a->final_rows, a->final_rows, m->final_norm.data, m->final_norm.type,
                s->n_logits, c->hidden_size, c->rms_norm_eps);
    op->matmul(be, a->logits, a->final_rows, m->lm_head.data, m->lm_head.type, s->n_logits,
               c->vocab_size, c->hidden_size);
    op->download(be, logits, a->logits, (size_t)s->n_logits * c->vocab_size * sizeof(float));
    return MR_ENGINE_OK;
}
