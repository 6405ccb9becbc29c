/*
 * Continuous batching.  Every step takes one token from each sequence that
 * is decoding and fills the rest of the token budget with prompt chunks of
 * sequences still prefilling; a finished sequence frees its slot and KV
 * blocks at once, and the next waiting request takes them in the next
 * step.  A sequence reserves the KV blocks for its whole length when it is
 * admitted, so a step can never run out of cache half way.
 *
 * Batching never changes a result: every kernel is row-invariant, so a
 * token's logits are the same bits whether it shares its step with 0 or
 * 255 other tokens, or is prefilled in one chunk or three.  The same holds
 * between prefill and decode, which is what lets a generation that stopped
 * go on: its earlier completion tokens are prefilled after the prompt, its
 * random stream is moved on one draw per token, and the next token sampled
 * is the one it would have sampled had it never stopped.
 *
 * A request comes in as text or chat turns; mr_engine_prepare renders the
 * chat, tokenizes and checks the length, and completions go back as text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/grow.h"
#include "engine/model_internal.h"
#include "engine/sampler.h"

typedef struct {
    bool used, prefilled;
    uint64_t handle;
    uint64_t admitted; /* admission order: prefill goes first come, first served */
    int32_t *tokens;   /* prompt, then what was sampled */
    int n_prompt, n_tokens, n_cached, max_tokens_total;
    int n_prefill; /* the prompt and the earlier completion tokens it came with */
    int32_t *blocks;
    int n_blocks;
    mr_sampling_params sampling;
    char **stop;
    mr_rng rng;
    mr_detok detok;
    char *text;
    size_t text_len, text_cap;
    /* Log-probabilities when asked: n_top >= 0, and for every token from
     * tokens[logprobs_from] on, 1 + n_top entries (mr_completion_out). */
    int n_top, logprobs_from;
    mr_token_logprob *logprobs;
} sequence;

/* A submitted generation waiting for a slot and its KV blocks. */
typedef struct {
    uint64_t handle;
    int32_t *prompt; /* then the earlier completion tokens, n_generated of them */
    int n_prompt, n_generated;
    mr_sampling_params sampling;
    char **stop;
    int n_top;            /* -1: no log-probabilities */
    bool prompt_logprobs; /* of the prompt's tokens too */
} pending;

struct mr_engine {
    mr_model *m;
    mr_engine_options opt;
    int max_seq_len, max_blocks, vocab;
    mr_kv_cache kv;
    mr_activations *act;
    sequence *seqs;
    pending *queue; /* FIFO ring of max_sequences entries */
    int queue_head, queue_len;
    uint64_t admissions;
    uint64_t generated; /* tokens sampled: progress counts them as they come */
    int32_t eos[8];
    int n_eos;
    /* Step buffers, sized once. */
    int32_t *tokens, *pos, *seq_of_row, *slot, *block_table, *logit_rows, *logit_seq;
    int32_t *logit_pos; /* the position each logits row is of */
    int32_t *penalized; /* ids sorted for mr_penalize, [max_seq_len] */
    float *logits, *scratch_logits;
    mr_candidate *candidates;
    mr_tokens prompt; /* the ids mr_engine_prepare made of turns or text */
};

static void free_stop(char **stop, size_t n)
{
    for (size_t i = 0; stop && i < n; i++)
        free(stop[i]);
    free(stop);
}

static void release(mr_engine *e, sequence *s)
{
    mr_kv_cache_give(&e->kv, s->n_blocks, s->blocks);
    free_stop(s->stop, s->sampling.n_stop);
    free(s->tokens);
    free(s->blocks);
    free(s->text);
    free(s->logprobs);
    *s = (sequence){0};
}

void mr_completion_out_free(mr_completion_out *c)
{
    free(c->text);
    free(c->tokens);
    free(c->logprobs);
    *c = (mr_completion_out){0};
}

void mr_engine_free(mr_engine *e)
{
    if (!e)
        return;
    for (int i = 0; e->seqs && i < e->opt.max_sequences; i++)
        if (e->seqs[i].used)
            release(e, &e->seqs[i]);
    for (int i = 0; i < e->queue_len; i++) {
        pending *p = &e->queue[(e->queue_head + i) % e->opt.max_sequences];
        free(p->prompt);
        free_stop(p->stop, p->sampling.n_stop);
    }
    mr_activations_free(e->act, e->m);
    if (e->kv.free_ids)
        mr_kv_cache_free(&e->kv, e->m);
    free(e->seqs);
    free(e->queue);
    free(e->tokens);
    free(e->pos);
    free(e->seq_of_row);
    free(e->slot);
    free(e->block_table);
    free(e->logit_rows);
    free(e->logit_seq);
    free(e->logit_pos);
    free(e->penalized);
    free(e->logits);
    free(e->scratch_logits);
    free(e->candidates);
    mr_tokens_free(&e->prompt);
    free(e);
}

static void add_eos(mr_engine *e, int32_t id)
{
    if (id < 0 || e->n_eos == (int)(sizeof e->eos / sizeof e->eos[0]))
        return;
    for (int i = 0; i < e->n_eos; i++)
        if (e->eos[i] == id)
            return;
    e->eos[e->n_eos++] = id;
}

static int check_options(const mr_engine_options *o, char *err, size_t errlen)
{
    if (o->max_batch_tokens < 1 || o->max_sequences < 1 || o->kv_block_size < 1 ||
        o->kv_blocks < 0) {
        snprintf(err, errlen, "engine options must be positive");
        return MR_ENGINE_EINVAL;
    }
    if (o->max_sequences > o->max_batch_tokens) {
        snprintf(err, errlen,
                 "[engine] max_sequences (%d) exceeds max_batch_tokens (%d): every decoding "
                 "sequence needs one token of each step",
                 o->max_sequences, o->max_batch_tokens);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

/* kv_blocks = 0: as many blocks as 90% of the memory the backend has left
 * once the weights and this engine's activations are in (a GPU's free
 * memory, or the host's share of its available memory), and no more than
 * every sequence at the model's longest could use. */
static int size_kv_pool(mr_engine *e, char *err, size_t errlen)
{
    const mr_model_config *c = &e->m->cfg;
    mr_backend *be = e->m->be;
    size_t available, total;
    int rc = mr_engine_backend_status(be, be->ops->memory(be, &available, &total), err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    size_t block = mr_model_kv_bytes(c, e->opt.kv_type, e->opt.kv_block_size, 1);
    size_t fit = (size_t)(0.9 * (double)available) / block;
    size_t most = (size_t)e->opt.max_sequences *
                  (((size_t)c->max_position_embeddings + e->opt.kv_block_size - 1) /
                   (size_t)e->opt.kv_block_size);
    fit = fit < most ? fit : most;
    fit = fit < (1u << 24) ? fit : (1u << 24);
    if (fit < 1) {
        snprintf(err, errlen, "kv_blocks = 0: %zu MiB left on the %s backend hold no KV block "
                 "of %zu KiB", available >> 20, be->ops->name, block >> 10);
        return MR_ENGINE_ENOMEM;
    }
    e->opt.kv_blocks = (int)fit;
    return MR_ENGINE_OK;
}

int mr_engine_create(mr_model *m, const mr_engine_options *o, mr_engine **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    int rc = check_options(o, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    mr_engine *e = calloc(1, sizeof *e);
    if (!e)
        goto nomem;
    e->m = m;
    e->opt = *o;
    /* The activations first, so that a pool sized from what is left
     * leaves them their room. */
    rc = mr_activations_new(m, o->max_batch_tokens, o->max_sequences, &e->act, err, errlen);
    if (rc == MR_ENGINE_OK && o->kv_blocks == 0)
        rc = size_kv_pool(e, err, errlen);
    if (rc != MR_ENGINE_OK) {
        mr_engine_free(e);
        return rc;
    }
    o = &e->opt;
    e->vocab = m->cfg.vocab_size;
    long capacity = (long)o->kv_blocks * o->kv_block_size;
    e->max_seq_len = (int)(capacity < m->cfg.max_position_embeddings
                               ? capacity
                               : m->cfg.max_position_embeddings);
    e->max_blocks = (e->max_seq_len + o->kv_block_size - 1) / o->kv_block_size;
    const int32_t *eos;
    int n = mr_tokenizer_eos(m->tokenizer, &eos);
    for (int i = 0; i < n; i++)
        add_eos(e, eos[i]);
    add_eos(e, m->cfg.eos_token_id);
    size_t rows = (size_t)o->max_batch_tokens, seqs = (size_t)o->max_sequences;
    e->seqs = calloc(seqs, sizeof *e->seqs);
    e->queue = calloc(seqs, sizeof *e->queue);
    e->tokens = malloc(rows * sizeof(int32_t));
    e->pos = malloc(rows * sizeof(int32_t));
    e->seq_of_row = malloc(rows * sizeof(int32_t));
    e->slot = malloc(rows * sizeof(int32_t));
    e->block_table = calloc(seqs * e->max_blocks, sizeof(int32_t));
    e->logit_rows = malloc(seqs * sizeof(int32_t));
    e->logit_seq = malloc(seqs * sizeof(int32_t));
    e->logit_pos = malloc(seqs * sizeof(int32_t));
    e->penalized = malloc(((size_t)e->max_seq_len + 1) * sizeof(int32_t));
    e->logits = malloc(seqs * e->vocab * sizeof(float));
    e->scratch_logits = malloc((size_t)e->vocab * sizeof(float));
    e->candidates = malloc((size_t)e->vocab * sizeof *e->candidates);
    if (!e->seqs || !e->queue || !e->tokens || !e->pos || !e->seq_of_row || !e->slot ||
        !e->block_table || !e->logit_rows || !e->logit_seq || !e->logit_pos || !e->penalized ||
        !e->logits || !e->scratch_logits || !e->candidates)
        goto nomem;
    rc = mr_kv_cache_init(&e->kv, m, o->kv_type, o->kv_block_size, o->kv_blocks, err, errlen);
    if (rc != MR_ENGINE_OK) {
        mr_engine_free(e);
        return rc;
    }
    *out = e;
    return MR_ENGINE_OK;
nomem:
    mr_engine_free(e);
    snprintf(err, errlen, "out of memory creating the engine");
    return MR_ENGINE_ENOMEM;
}

int mr_engine_kv_blocks(const mr_engine *e)
{
    return e->opt.kv_blocks;
}

/* Whether a prompt of n_prompt tokens and a completion of up to max_tokens
 * (0: the prompt alone) fit in one sequence; when not, err says why. */
static bool fits(const mr_engine *e, size_t n_prompt, size_t max_tokens, char *err,
                 size_t errlen)
{
    if (n_prompt == 0) {
        snprintf(err, errlen, "the prompt is empty");
        return false;
    }
    if (n_prompt + max_tokens > (size_t)e->max_seq_len) {
        char what[128];
        if (max_tokens)
            snprintf(what, sizeof what, "%zu prompt tokens and max_tokens %zu make %zu", n_prompt,
                     max_tokens, n_prompt + max_tokens);
        else
            snprintf(what, sizeof what, "the prompt has %zu tokens", n_prompt);
        snprintf(err, errlen,
                 "%s; this engine holds at most %d per sequence "
                 "(the smaller of the KV cache, %d blocks of %d, and the model's "
                 "max_position_embeddings, %d)",
                 what, e->max_seq_len, e->opt.kv_blocks, e->opt.kv_block_size,
                 e->m->cfg.max_position_embeddings);
        return false;
    }
    return true;
}

/* The ids of a generation's turns or text, in e->prompt; *formatted is
 * false when the model's chat template cannot render its turns. */
static int tokenize(mr_engine *e, const mr_generation *g, bool *formatted, char *err,
                    size_t errlen)
{
    char *chat = NULL;
    const char *text = g->text ? g->text : "";
    size_t len = g->text ? g->text_len : 0;
    *formatted = true;
    if (g->turns) {
        int rc = mr_chat_template_apply(e->m->chat, g->turns, g->n_turns,
                                        g->chat_template_kwargs, &chat, err, errlen);
        if (rc == MR_ENGINE_EINVAL) {
            *formatted = false;
            return MR_ENGINE_OK;
        }
        if (rc != MR_ENGINE_OK)
            return rc;
        text = chat;
        len = strlen(chat);
    }
    e->prompt.count = 0;
    /* A text prompt gets the BOS token, as vLLM's completions encode it
     * with special tokens; a chat template writes its own. */
    int32_t bos = g->turns ? -1 : mr_tokenizer_bos(e->m->tokenizer);
    int rc = MR_ENGINE_OK;
    if (bos >= 0 && !mr_grow((void **)&e->prompt.ids, &e->prompt.cap, 1, sizeof *e->prompt.ids))
        rc = MR_ENGINE_ENOMEM;
    else if (bos >= 0)
        e->prompt.ids[e->prompt.count++] = bos;
    if (rc == MR_ENGINE_OK)
        rc = mr_tokenizer_encode(e->m->tokenizer, text, len, &e->prompt, err, errlen);
    free(chat);
    return rc;
}

int mr_engine_prepare(mr_engine *e, mr_generation *g, mr_prompt_verdict *verdict, char *err,
                      size_t errlen)
{
    if (!g->prompt) {
        bool formatted;
        int rc = tokenize(e, g, &formatted, err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
        if (!formatted) {
            *verdict = MR_PROMPT_CHAT_UNSUPPORTED;
            return MR_ENGINE_OK;
        }
        g->prompt = e->prompt.ids;
        g->n_prompt = e->prompt.count;
    }
    size_t max_tokens = g->sampling.max_tokens > 0 ? (size_t)g->sampling.max_tokens : 0;
    size_t bad = 0;
    while (bad < g->n_prompt && g->prompt[bad] >= 0 && g->prompt[bad] < e->vocab)
        bad++;
    if (bad < g->n_prompt) {
        snprintf(err, errlen, "prompt token %zu is %d, not in the vocabulary (ids 0 to %d)",
                 bad, (int)g->prompt[bad], e->vocab - 1);
        *verdict = MR_PROMPT_BAD_TOKEN;
    } else if (!fits(e, g->n_prompt, 0, err, errlen))
        *verdict = MR_PROMPT_TOO_LONG;
    else if (!fits(e, g->n_prompt, max_tokens, err, errlen))
        *verdict = MR_PROMPT_NO_ROOM;
    else
        *verdict = MR_PROMPT_OK;
    return MR_ENGINE_OK;
}

size_t mr_engine_in_flight(const mr_engine *e)
{
    size_t n = (size_t)e->queue_len;
    for (int i = 0; i < e->opt.max_sequences; i++)
        n += e->seqs[i].used;
    return n;
}

bool mr_engine_has_room(const mr_engine *e)
{
    return mr_engine_room(e) > 0;
}

size_t mr_engine_room(const mr_engine *e)
{
    return (size_t)e->opt.max_sequences - mr_engine_in_flight(e);
}

bool mr_engine_generated(const mr_engine *e, uint64_t handle, const int32_t **tokens, size_t *n)
{
    for (int i = 0; i < e->opt.max_sequences; i++) {
        const sequence *s = &e->seqs[i];
        if (s->used && s->handle == handle) {
            *tokens = s->tokens + s->n_prompt;
            *n = (size_t)(s->n_tokens - s->n_prompt);
            return true;
        }
    }
    for (int i = 0; i < e->queue_len; i++) {
        const pending *p = &e->queue[(e->queue_head + i) % e->opt.max_sequences];
        if (p->handle == handle) {
            *tokens = p->prompt + p->n_prompt;
            *n = (size_t)p->n_generated;
            return true;
        }
    }
    return false;
}

/* The tokens a sequence of this prompt and these sampling parameters may
 * hold (its KV reservation), less the one last token, which is sampled but
 * never run. */
static int sequence_length(const mr_engine *e, long n_prompt, const mr_sampling_params *sp)
{
    long want = n_prompt + (sp->max_tokens > 0 ? sp->max_tokens : 1) - 1;
    return (int)(want < e->max_seq_len ? want : e->max_seq_len);
}

static bool is_eos(const mr_engine *e, int32_t id)
{
    for (int i = 0; i < e->n_eos; i++)
        if (e->eos[i] == id)
            return true;
    return false;
}

/* Earlier completion tokens must be ones this generation could have
 * produced without finishing: ids of the vocabulary, no end of sequence,
 * fewer than max_tokens and within the sequence. */
static int check_generated(const mr_engine *e, const mr_generation *g, char *err, size_t errlen)
{
    for (size_t i = 0; i < g->n_generated; i++) {
        int32_t id = g->generated[i];
        if (id < 0 || id >= e->vocab || (!g->sampling.ignore_eos && is_eos(e, id))) {
            snprintf(err, errlen,
                     "earlier completion token %zu of generation %llu is %d, %s", i,
                     (unsigned long long)g->handle, (int)id,
                     id < 0 || id >= e->vocab ? "not in the vocabulary"
                                              : "an end of sequence, which would have ended it");
            return MR_ENGINE_EINVAL;
        }
    }
    if (g->n_generated > 0 &&
        ((long)g->n_generated >= g->sampling.max_tokens ||
         (long)(g->n_prompt + g->n_generated) > sequence_length(e, (long)g->n_prompt, &g->sampling))) {
        snprintf(err, errlen,
                 "generation %llu comes with %zu earlier completion tokens: as many as its "
                 "max_tokens (%d) or its sequence allows, so it would have finished",
                 (unsigned long long)g->handle, g->n_generated, g->sampling.max_tokens);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

static char **copy_stop(const mr_sampling_params *s)
{
    char **stop = calloc(s->n_stop ? s->n_stop : 1, sizeof *stop);
    for (size_t i = 0; stop && i < s->n_stop; i++)
        if (!(stop[i] = strdup(s->stop[i]))) {
            free_stop(stop, i);
            return NULL;
        }
    return stop;
}

int mr_engine_submit(mr_engine *e, const mr_generation *gen, char *err, size_t errlen)
{
    mr_generation prepared = *gen, *g = &prepared;
    mr_prompt_verdict verdict;
    int rc = mr_engine_prepare(e, g, &verdict, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    if (verdict == MR_PROMPT_CHAT_UNSUPPORTED || verdict == MR_PROMPT_TOO_LONG ||
        verdict == MR_PROMPT_BAD_TOKEN)
        return MR_ENGINE_EINVAL;
    if (!mr_engine_has_room(e)) {
        snprintf(err, errlen, "the engine is full: wait for mr_engine_has_room");
        return MR_ENGINE_EINVAL;
    }
    rc = check_generated(e, g, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    if (g->logprobs && (g->top_logprobs < 0 || g->top_logprobs > MR_MAX_TOP_LOGPROBS)) {
        snprintf(err, errlen, "top_logprobs %d: from 0 to %d alternatives", g->top_logprobs,
                 MR_MAX_TOP_LOGPROBS);
        return MR_ENGINE_EINVAL;
    }
    pending p = {.handle = g->handle,
                 .n_prompt = (int)g->n_prompt,
                 .n_generated = (int)g->n_generated,
                 .sampling = g->sampling,
                 .n_top = g->logprobs ? g->top_logprobs : -1,
                 .prompt_logprobs = g->logprobs && g->prompt_logprobs};
    p.prompt = malloc((g->n_prompt + g->n_generated) * sizeof(int32_t));
    p.stop = copy_stop(&g->sampling);
    if (!p.prompt || !p.stop) {
        free(p.prompt);
        free_stop(p.stop, 0);
        snprintf(err, errlen, "out of memory queueing a prompt of %zu tokens", g->n_prompt);
        return MR_ENGINE_ENOMEM;
    }
    memcpy(p.prompt, g->prompt, g->n_prompt * sizeof(int32_t));
    if (g->n_generated)
        memcpy(p.prompt + g->n_prompt, g->generated, g->n_generated * sizeof(int32_t));
    p.sampling.stop = (const char *const *)p.stop;
    e->queue[(e->queue_head + e->queue_len++) % e->opt.max_sequences] = p;
    return MR_ENGINE_OK;
}

/* The first stop string in the text, searched only where the newest token
 * could have completed one. */
static bool cut_at_stop(sequence *s, size_t old_len)
{
    for (size_t i = 0; i < s->sampling.n_stop; i++) {
        size_t n = strlen(s->stop[i]);
        if (n == 0 || s->text_len < n)
            continue;
        size_t from = old_len >= n ? old_len - n + 1 : 0;
        for (size_t at = from; at + n <= s->text_len; at++)
            if (memcmp(s->text + at, s->stop[i], n) == 0) {
                s->text_len = at;
                return true;
            }
    }
    return false;
}

/* A sequence that comes with earlier completion tokens takes up where it
 * stopped: its text and detokenizer hold what those tokens made, and its
 * random stream is one draw on per token, as mr_sample takes one draw
 * whatever it samples. */
static int replay(mr_engine *e, sequence *s, char *err, size_t errlen)
{
    for (int i = s->n_prompt; i < s->n_tokens; i++) {
        size_t old_len = s->text_len;
        mr_rng_uniform(&s->rng);
        if (mr_detok_push(e->m->tokenizer, &s->detok, s->tokens[i], &s->text, &s->text_len,
                          &s->text_cap) != MR_ENGINE_OK) {
            snprintf(err, errlen, "out of memory admitting a sequence");
            return MR_ENGINE_ENOMEM;
        }
        if (cut_at_stop(s, old_len)) {
            snprintf(err, errlen,
                     "the earlier completion tokens of generation %llu end in a stop string, "
                     "so it would have finished",
                     (unsigned long long)s->handle);
            return MR_ENGINE_EINVAL;
        }
    }
    return MR_ENGINE_OK;
}

/* Moves waiting generations into free slots while their KV fits, in
 * submission order: a long prompt at the head waits rather than being
 * overtaken forever by short ones. */
static int admit(mr_engine *e, char *err, size_t errlen)
{
    int rc;
    while (e->queue_len > 0) {
        pending *p = &e->queue[e->queue_head];
        int free_slot = -1;
        for (int i = 0; i < e->opt.max_sequences && free_slot < 0; i++)
            if (!e->seqs[i].used)
                free_slot = i;
        int length = sequence_length(e, p->n_prompt, &p->sampling);
        int n_blocks = (length + e->opt.kv_block_size - 1) / e->opt.kv_block_size;
        if (free_slot < 0 || n_blocks > e->kv.n_free)
            return MR_ENGINE_OK;
        sequence *s = &e->seqs[free_slot];
        *s = (sequence){.used = true,
                        .handle = p->handle,
                        .admitted = e->admissions++,
                        .tokens = realloc(p->prompt, ((size_t)length + 1) * sizeof(int32_t)),
                        .n_prompt = p->n_prompt,
                        .n_tokens = p->n_prompt + p->n_generated,
                        .n_prefill = p->n_prompt + p->n_generated,
                        .max_tokens_total = length + 1,
                        .blocks = malloc((size_t)n_blocks * sizeof(int32_t)),
                        .n_blocks = n_blocks,
                        .sampling = p->sampling,
                        .stop = p->stop,
                        .n_top = p->n_top,
                        .logprobs_from = p->prompt_logprobs ? 1 : p->n_prompt};
        if (s->n_top >= 0)
            s->logprobs = malloc(((size_t)length + 1) * (size_t)(1 + s->n_top) *
                                 sizeof *s->logprobs);
        e->queue_head = (e->queue_head + 1) % e->opt.max_sequences;
        e->queue_len--;
        if (!s->tokens || !s->blocks || (s->n_top >= 0 && !s->logprobs)) {
            s->n_blocks = 0;
            release(e, s);
            snprintf(err, errlen, "out of memory admitting a sequence");
            return MR_ENGINE_ENOMEM;
        }
        mr_kv_cache_take(&e->kv, n_blocks, s->blocks);
        memcpy(e->block_table + (size_t)free_slot * e->max_blocks, s->blocks,
               (size_t)n_blocks * sizeof(int32_t));
        mr_rng_seed(&s->rng, s->sampling.seed);
        if ((rc = replay(e, s, err, errlen)) != MR_ENGINE_OK)
            return rc;
    }
    return MR_ENGINE_OK;
}

static void add_row(mr_engine *e, int *rows, int seq, int position, int32_t token)
{
    const sequence *s = &e->seqs[seq];
    int r = (*rows)++;
    e->tokens[r] = token;
    e->pos[r] = position;
    e->seq_of_row[r] = seq;
    e->slot[r] = s->blocks[position / e->opt.kv_block_size] * e->opt.kv_block_size +
                 position % e->opt.kv_block_size;
}

/* Whether the logits at `position` are wanted: the last one is sampled
 * from, and those before it give the log-probability of the token after
 * them when the generation asked for it. */
static bool wants_logits(const sequence *s, int position)
{
    return position == s->n_prefill - 1 ||
           (s->n_top >= 0 && position + 1 >= s->logprobs_from && position + 1 < s->n_prefill);
}

static void add_logits_row(mr_engine *e, int *n_logits, int row, int seq, int position)
{
    e->logit_rows[*n_logits] = row;
    e->logit_seq[*n_logits] = seq;
    e->logit_pos[(*n_logits)++] = position;
}

/* Builds the step: decode rows first (one per sequence past its prompt),
 * then prompt chunks oldest first, within the token budget and the logits
 * rows the step has (max_sequences): a prompt whose every position wants
 * its logits is prefilled in chunks of what is left of those, which
 * changes no bit, as chunking never does. */
static int build_step(mr_engine *e, int *n_logits)
{
    int rows = 0, budget = e->opt.max_batch_tokens, logits_room = e->opt.max_sequences;
    *n_logits = 0;
    for (int i = 0; i < e->opt.max_sequences; i++) {
        sequence *s = &e->seqs[i];
        if (!s->used || !s->prefilled)
            continue;
        add_row(e, &rows, i, s->n_cached, s->tokens[s->n_cached]);
        add_logits_row(e, n_logits, rows - 1, i, s->n_cached);
        s->n_cached++;
    }
    bool room = true;
    while (room && rows < budget) {
        int oldest = -1;
        for (int i = 0; i < e->opt.max_sequences; i++) {
            const sequence *s = &e->seqs[i];
            if (s->used && !s->prefilled && s->n_cached < s->n_prefill &&
                (oldest < 0 || s->admitted < e->seqs[oldest].admitted))
                oldest = i;
        }
        if (oldest < 0)
            break;
        sequence *s = &e->seqs[oldest];
        while (rows < budget && s->n_cached < s->n_prefill) {
            bool wanted = wants_logits(s, s->n_cached);
            if (wanted && *n_logits == logits_room) {
                room = false;
                break;
            }
            add_row(e, &rows, oldest, s->n_cached, s->tokens[s->n_cached]);
            if (wanted)
                add_logits_row(e, n_logits, rows - 1, oldest, s->n_cached);
            s->n_cached++;
        }
        if (s->n_cached == s->n_prefill)
            s->prefilled = true;
    }
    return rows;
}

/* The log-probabilities of the token after `position` and its
 * alternatives, from that position's logits. */
static void record_logprobs(sequence *s, const float *logits, int vocab, int position)
{
    int token = position + 1;
    if (s->n_top < 0 || token < s->logprobs_from)
        return;
    mr_logprobs(logits, vocab, s->tokens[token], s->n_top,
                s->logprobs + (size_t)(token - s->logprobs_from) * (size_t)(1 + s->n_top));
}

/* Appends a sampled token; true when the sequence is finished. */
static int take_token(mr_engine *e, sequence *s, int32_t id, bool *finished,
                      mr_finish_reason *why)
{
    s->tokens[s->n_tokens++] = id;
    int completion = s->n_tokens - s->n_prompt;
    *finished = false;
    if (!s->sampling.ignore_eos && is_eos(e, id)) {
        *finished = true;
        *why = MR_FINISH_STOP;
    } else {
        size_t old_len = s->text_len;
        int rc = mr_detok_push(e->m->tokenizer, &s->detok, id, &s->text, &s->text_len,
                               &s->text_cap);
        if (rc != MR_ENGINE_OK)
            return rc;
        if (cut_at_stop(s, old_len)) {
            *finished = true;
            *why = MR_FINISH_STOP;
        }
    }
    if (!*finished && (completion >= s->sampling.max_tokens || s->n_tokens >= s->max_tokens_total)) {
        *finished = true;
        *why = MR_FINISH_LENGTH;
    }
    if (*finished && *why == MR_FINISH_LENGTH)
        return mr_detok_push(e->m->tokenizer, &s->detok, -1, &s->text, &s->text_len,
                             &s->text_cap);
    return MR_ENGINE_OK;
}

static int finish(mr_engine *e, sequence *s, mr_finish_reason why, mr_completion_out *out)
{
    /* Text is handed over NUL-terminated, even when empty. */
    char *text = realloc(s->text, s->text_len + 1);
    if (!text)
        return MR_ENGINE_ENOMEM;
    text[s->text_len] = '\0';
    *out = (mr_completion_out){.handle = s->handle,
                               .text = text,
                               .text_len = s->text_len,
                               .finish = why,
                               .prompt_tokens = s->n_prompt,
                               .completion_tokens = s->n_tokens - s->n_prompt,
                               .tokens = s->tokens,
                               .logprobs = s->logprobs,
                               .logprobs_from = s->logprobs_from,
                               .n_top = s->n_top < 0 ? 0 : s->n_top};
    s->text = NULL;
    s->tokens = NULL;
    s->logprobs = NULL;
    release(e, s);
    return MR_ENGINE_OK;
}

int mr_engine_step(mr_engine *e, mr_completion_out *done, size_t cap, size_t *n_done,
                   char *err, size_t errlen)
{
    *n_done = 0;
    if (cap < (size_t)e->opt.max_sequences) {
        snprintf(err, errlen, "mr_engine_step needs room for %d completions", e->opt.max_sequences);
        return MR_ENGINE_EINVAL;
    }
    int rc = admit(e, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    int n_logits = 0;
    int rows = build_step(e, &n_logits);
    /* With other ranks, a step with nothing to run still joins theirs. */
    if (rows == 0 && (!e->m->comm || mr_comm_size(e->m->comm) == 1))
        return MR_ENGINE_OK;
    mr_step step = {.rows = rows,
                    .tokens = e->tokens,
                    .pos = e->pos,
                    .seq = e->seq_of_row,
                    .slot = e->slot,
                    .block_table = e->block_table,
                    .max_blocks = e->max_blocks,
                    .logit_rows = e->logit_rows,
                    .n_logits = n_logits};
    rc = mr_forward(e->m, &e->kv, e->act, &step, e->logits, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc; /* its message says what ran out */
    for (int i = 0; rc == MR_ENGINE_OK && i < n_logits; i++) {
        sequence *s = &e->seqs[e->logit_seq[i]];
        const float *logits = e->logits + (size_t)i * e->vocab;
        if (e->logit_pos[i] < s->n_tokens - 1) { /* a known token's log-probability */
            record_logprobs(s, logits, e->vocab, e->logit_pos[i]);
            continue;
        }
        if (s->sampling.presence_penalty != 0 || s->sampling.frequency_penalty != 0) {
            memcpy(e->scratch_logits, logits, (size_t)e->vocab * sizeof *logits);
            mr_penalize(e->scratch_logits, s->tokens + s->n_prompt, s->n_tokens - s->n_prompt,
                        &s->sampling, e->penalized);
            logits = e->scratch_logits;
        }
        int32_t id = mr_sample(logits, e->vocab, &s->sampling, &s->rng, e->candidates);
        logits = e->logits + (size_t)i * e->vocab;
        e->generated++;
        bool finished;
        mr_finish_reason why = MR_FINISH_LENGTH;
        rc = take_token(e, s, id, &finished, &why);
        record_logprobs(s, logits, e->vocab, e->logit_pos[i]);
        if (rc == MR_ENGINE_OK && finished)
            rc = finish(e, s, why, &done[(*n_done)++]);
    }
    if (rc == MR_ENGINE_ENOMEM)
        snprintf(err, errlen, "out of memory taking sampled tokens");
    return rc;
}

const uint64_t *mr_engine_expert_counts(const mr_engine *e)
{
    return mr_forward_expert_counts(e->act);
}

void mr_engine_get_stats(const mr_engine *e, mr_engine_stats *out)
{
    *out = *mr_forward_stats(e->act);
    out->generated = e->generated;
}
