/*
 * How wide a step runs when the job file leaves it to the engine
 * ([engine] max_sequences and max_batch_tokens at 0): the widest rung of
 * a ladder whose step memory fits in a share of what the backend has left
 * once the weights and the KV pool are in.
 *
 * The ladder tops out at 256 sequences and 8192 tokens, vLLM's defaults:
 * on the CPU, decode throughput on the small preset grows 1.5x from 64 to
 * 256 sequences and little beyond, while each sequence's KV reservation
 * and its logits row grow linearly.  Halving from there keeps the ratio
 * of 32 tokens a sequence, so a step can still prefill while every
 * sequence decodes.
 *
 * The step memory is an estimate from the config, an upper bound of
 * mr_activations_new, the dispatch buffers and the scheduler's logits
 * rows (not measured: memory the host has not touched is not yet taken).
 */
#include <stdio.h>

#include "engine/model_internal.h"

enum { TOP_SEQUENCES = 256, TOP_TOKENS = 8192, LOW_SEQUENCES = 8 };

size_t mr_engine_step_bytes(const mr_model_config *c, int slots_per_rank, int max_batch_tokens,
                            int max_sequences)
{
    size_t f = sizeof(float), hidden = (size_t)c->hidden_size;
    size_t top_k = c->num_experts_per_tok > 0 ? (size_t)c->num_experts_per_tok : 1;
    size_t experts = c->num_experts > 0 ? (size_t)c->num_experts : 1;
    size_t heads = (size_t)c->num_attention_heads;
    size_t q_dim = heads * (size_t)c->head_dim, kv_dim = (size_t)c->num_key_value_heads * c->head_dim;
    if (c->family == MR_FAMILY_DEEPSEEK_V3) { /* [heads][latent] queries, the latent and rope key */
        size_t lat = heads * (size_t)c->mla.kv_lora_rank;
        q_dim = q_dim > lat ? q_dim : lat;
        kv_dim = (size_t)c->mla.q_lora_rank + (size_t)c->mla.kv_lora_rank + c->mla.qk_rope_head_dim;
    }
    size_t inter = (size_t)(c->moe_intermediate_size > c->intermediate_size ? c->moe_intermediate_size
                                                                             : c->intermediate_size);
    /* Per token: the residual stream and its norms, q and attention out,
     * k and v, router logits and picks; per pick: its dispatched copy,
     * the expert's output and gate-times-up row; the combine's doubles. */
    size_t per_row = f * (hidden * 4 + 2 * q_dim + 2 * kv_dim + experts + 3 * top_k +
                          top_k * (2 * hidden + inter)) +
                     sizeof(double) * hidden;
    /* Per sequence: logits rows in the step and in the scheduler, the
     * sampler's scratch, and its final hidden row. */
    size_t per_seq = f * (3 * (size_t)c->vocab_size + hidden);
    size_t exchange = mr_model_exchange_bytes(c, slots_per_rank, max_batch_tokens);
    return (size_t)max_batch_tokens * per_row + (size_t)max_sequences * per_seq + exchange;
}

void mr_engine_widths_fit(const mr_model_config *c, int slots_per_rank, size_t available,
                          mr_engine_options *o)
{
    bool seqs_auto = o->max_sequences == 0, tokens_auto = o->max_batch_tokens == 0;
    /* A pool of a fixed size comes off first and the steps get a quarter
     * of the rest; a pool sized to memory (kv_blocks 0) takes 90% of what
     * the steps leave, so they get half and leave it at least 45%. */
    size_t kv = o->kv_blocks > 0 ? mr_model_kv_bytes(c, o->kv_type, o->kv_block_size, o->kv_blocks)
                                 : 0;
    size_t left = available > kv ? available - kv : 0;
    size_t budget = o->kv_blocks > 0 ? left / 4 : left / 2;
    for (int seqs = TOP_SEQUENCES, tokens = TOP_TOKENS;; seqs /= 2, tokens /= 2) {
        int s = seqs_auto ? seqs : o->max_sequences;
        int t = tokens_auto ? tokens : o->max_batch_tokens;
        if (seqs_auto && s > t)
            s = t;
        if (tokens_auto && t < s)
            t = s;
        if (mr_engine_step_bytes(c, slots_per_rank, t, s) <= budget || seqs <= LOW_SEQUENCES) {
            o->max_sequences = s;
            o->max_batch_tokens = t;
            return;
        }
    }
}

int mr_engine_widths_most_tokens(const mr_engine_options *o)
{
    if (o->max_batch_tokens > 0)
        return o->max_batch_tokens;
    return o->max_sequences > TOP_TOKENS ? o->max_sequences : TOP_TOKENS;
}

int mr_engine_auto_widths(const mr_model *m, mr_engine_options *o, char *err, size_t errlen)
{
    if (o->max_sequences > 0 && o->max_batch_tokens > 0)
        return MR_ENGINE_OK;
    mr_backend *be = m->be;
    size_t available, total;
    int rc = mr_engine_backend_status(be, be->ops->memory(be, &available, &total), err, errlen);
    if (rc == MR_ENGINE_OK)
        mr_engine_widths_fit(&m->cfg, m->slots_per_rank, available, o);
    return rc;
}
