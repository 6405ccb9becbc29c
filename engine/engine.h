/*
 * engine -- a Qwen3-MoE model on one rank: its config and weights, the
 * tokenizer, the forward pass, the KV cache and the continuous-batching
 * scheduler that turns requests into completions.
 *
 * Every function that can fail returns an mr_engine_status and, on failure,
 * writes a one-line message naming the file, tensor or field at fault into
 * the caller's buffer.  Nothing here reads job files or writes result lines:
 * the runner does that around the engine.
 */
#ifndef MR_ENGINE_H
#define MR_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/comm/comm.h"
#include "eplb/eplb.h"
#include "kernels/kernels.h"

typedef enum {
    MR_ENGINE_OK = 0,
    MR_ENGINE_EINVAL = -1, /* the model or the input is wrong: the message says where */
    MR_ENGINE_EIO = -2,    /* the system failed us: open, read, mmap, write */
    MR_ENGINE_ENOMEM = -3
} mr_engine_status;

/* ------------------------------------------------------------------------
 * Model config (config.json)
 * ------------------------------------------------------------------------ */
#define MR_MAX_LAYERS 256

/* The model families moerun loads: their layers differ in names and in a
 * step or two (docs/model-format.md). */
typedef enum {
    MR_FAMILY_QWEN3_MOE, /* Qwen3MoeForCausalLM: q and k normalised per head */
    MR_FAMILY_MIXTRAL,   /* MixtralForCausalLM: Llama attention, block_sparse_moe */
    MR_FAMILY_DEEPSEEK_V3 /* DeepseekV3ForCausalLM: MLA, grouped sigmoid routing, shared experts */
} mr_model_family;

/* DeepSeek-V3's multi-head latent attention and router (DeepseekV3Config). */
typedef struct {
    int q_lora_rank;       /* 0: q_proj directly */
    int kv_lora_rank;      /* the latent a token's KV cache holds */
    int qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    bool rope_interleave;  /* RoPE on interleaved pairs (HF's default for V3) */
    int n_group, topk_group;
    float routed_scaling_factor;
    int n_shared_experts;
    /* rope_scaling type "yarn"; factor 0 when there is none, mscale and
     * mscale_all_dim 0 when not given, attention_factor 0 when derived */
    double yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim;
    double yarn_attention_factor;
    bool yarn_truncate;
    int yarn_original_max_positions;
} mr_mla_config;

typedef struct {
    char architecture[64]; /* "Qwen3MoeForCausalLM" */
    mr_model_family family;
    bool qk_norm;          /* an RMSNorm on each head of q and k before RoPE */
    int vocab_size;
    int hidden_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;
    int intermediate_size;     /* dense MLP layers (mlp_only_layers) */
    int moe_intermediate_size;
    int num_experts;
    int num_experts_per_tok;
    int decoder_sparse_step;   /* layer i is MoE when (i + 1) % step == 0 */
    bool mlp_only[MR_MAX_LAYERS]; /* from mlp_only_layers: these stay dense */
    bool norm_topk_prob;
    bool tie_word_embeddings;
    float rms_norm_eps;
    float rope_theta;
    int max_position_embeddings;
    int bos_token_id; /* -1 when config.json has none */
    int eos_token_id; /* -1 when config.json has none */
    mr_mla_config mla; /* MR_FAMILY_DEEPSEEK_V3 */
} mr_model_config;

/* Reads and checks `config.json` (a path to the file itself). */
int mr_config_load(const char *path, mr_model_config *cfg, char *err, size_t errlen);
/* The expert groups the router limits a token to (DeepSeek-V3's n_group),
 * which EPLB's hierarchical policy keeps on one node; 1 for the others. */
int mr_config_expert_groups(const mr_model_config *cfg);
/* True when layer `layer` runs routed experts rather than a dense MLP. */
bool mr_config_layer_is_moe(const mr_model_config *cfg, int layer);

/* ------------------------------------------------------------------------
 * Weights (safetensors, mmapped)
 * ------------------------------------------------------------------------
 * A model folder holds model.safetensors, or several shards listed by
 * model.safetensors.index.json.  Files are mmapped read-only; tensors are
 * views into the mapping, never copies. */
typedef struct mr_weights mr_weights;

typedef struct {
    const char *name;
    const void *data;
    mr_tensor_type type;
    int ndim;
    int64_t shape[4];
    size_t bytes;
    const char *file; /* the file it lives in, for messages */
    /* Synthetic weights (mr_weights_synthetic): data is NULL and the
     * backend makes the values, uniform between lo and hi from `seed`. */
    uint64_t seed;
    float lo, hi;
    /* FP8 block-scaled (type MR_TENSOR_F8_BLOCKS): data holds the
     * checkpoint's e4m3 values [rows][cols], scales its weight_scale_inv
     * [ceil(rows/128)][ceil(cols/128)] (f32 or bf16), and bytes is the size
     * of the packed rows mr_tensor_pack writes.  NULL otherwise. */
    const void *scales;
    mr_tensor_type scales_type;
} mr_tensor;

/* Loading through the mapping: fault_in maps t's pages in one call (a
 * fault per 4 KiB page made the copy a third of the file's read speed);
 * drop_pages unmaps them once a backend holds its own copy, so the file's
 * pages do not stay in the process's memory beside it (the page cache
 * keeps them, reclaimable).  Both only advise: nothing fails. */
void mr_tensor_fault_in(const mr_tensor *t);
void mr_tensor_drop_pages(const mr_tensor *t);

/* Whether t must be packed (mr_tensor_pack) before a backend takes it. */
bool mr_tensor_packed(const mr_tensor *t);
/* Writes t's t->bytes as the kernels take them into dst: FP8 rows as
 * blocks of a scale and 128 values (kernels.h, MR_TENSOR_F8_BLOCKS). */
void mr_tensor_pack(const mr_tensor *t, void *dst);

/* Opens the folder's safetensors (single or sharded) and checks every
 * header: JSON well formed, dtypes known, offsets inside the file, sizes
 * equal to the product of the shape, no overlaps. */
int mr_weights_open(const char *model_dir, mr_weights **out, char *err, size_t errlen);
void mr_weights_close(mr_weights *w);
/* Weights with no file: every tensor asked for exists with the shape asked,
 * of `type`, its values random (norms near 1, the rest small) and made on
 * the backend from `seed` and the tensor's name.  Benchmarks at a real
 * model's shapes, from its config.json alone. */
int mr_weights_synthetic(mr_tensor_type type, uint64_t seed, mr_weights **out, char *err,
                         size_t errlen);
/* Finds tensor `name` and checks its shape (ndim entries of `shape`).  A
 * missing tensor or a wrong shape is an error naming the tensor and file. */
int mr_weights_get(const mr_weights *w, const char *name, int ndim, const int64_t *shape,
                   mr_tensor *out, char *err, size_t errlen);
size_t mr_weights_count(const mr_weights *w);
/* The bytes of one routed expert (gate, up and down) in every MoE layer
 * of `cfg`, from the headers: what each expert slot per layer costs a
 * rank, known without loading the model (preflight).  0 without MoE
 * layers; a missing expert tensor or a wrong shape is an error. */
int mr_weights_expert_bytes(const mr_weights *w, const mr_model_config *cfg, uint64_t *bytes,
                            char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * Tokenizer (Hugging Face tokenizer.json, BPE)
 * ------------------------------------------------------------------------
 * Byte-level BPE, the family of Qwen2/Qwen3, Llama 3 and DeepSeek-V3: a
 * regex pre-split (PCRE2), bytes mapped to printable code points, merges
 * applied by rank.  SentencePiece-style BPE, the family of Llama 2, Mistral
 * and Mixtral: spaces as "▁", characters merged by rank, bytes as "<0xXX>"
 * tokens for characters the vocabulary lacks.  Added tokens are matched
 * before everything else in both. */
typedef struct mr_tokenizer mr_tokenizer;

/* `path` is a model folder (its tokenizer.json and tokenizer_config.json)
 * or a tokenizer.json file. */
int mr_tokenizer_load(const char *path, mr_tokenizer **out, char *err, size_t errlen);
void mr_tokenizer_free(mr_tokenizer *tok);
int mr_tokenizer_vocab_size(const mr_tokenizer *tok);
/* The id of a token given by its text (e.g. "<|im_end|>"), or -1. */
int32_t mr_tokenizer_find(const mr_tokenizer *tok, const char *token);
/* The id a text prompt starts with, as Hugging Face's encode with
 * special tokens puts it there (Llama 2, Mistral, DeepSeek-V3: their BOS;
 * tokenizer_config.json's add_bos_token, else tokenizer.json's
 * TemplateProcessing), or -1 (Qwen).  A chat template writes its own. */
int32_t mr_tokenizer_bos(const mr_tokenizer *tok);
/* End-of-sequence ids from tokenizer_config.json's eos_token (and
 * config.json's eos_token_id, which the engine adds); count returned. */
int mr_tokenizer_eos(const mr_tokenizer *tok, const int32_t **ids);

typedef struct {
    int32_t *ids;
    size_t count;
    size_t cap;
} mr_tokens;

void mr_tokens_free(mr_tokens *t);

/* Appends the ids of `text` (len bytes, any bytes) to `out`.  Added tokens
 * in the text ("<|im_start|>") are matched as themselves.  Text that is not
 * valid UTF-8 is encoded as the bytes it is, as Hugging Face does. */
int mr_tokenizer_encode(const mr_tokenizer *tok, const char *text, size_t len,
                        mr_tokens *out, char *err, size_t errlen);

/* The bytes a token stands for (special tokens: their text).  NULL for an
 * id out of range. */
const char *mr_tokenizer_token_bytes(const mr_tokenizer *tok, int32_t id, size_t *len);

/* Streaming decode: feed ids one at a time; only whole UTF-8 characters
 * come out, an incomplete one waits for the next token.  Bytes that can
 * never form a character come out as U+FFFD, one per maximal invalid
 * subpart (as Hugging Face's byte-level decoder; its ByteFallback decoder
 * writes one per byte instead, for ids no encoding makes).  Start from
 * {0}, or {.whole = true} when the ids are a whole text from its start:
 * then the decoder's cut of leading spaces applies as in Hugging Face's
 * decode (Llama 2, Mistral: the space their encoding put in front), which a
 * continuation such as a completion keeps. */
#define MR_DETOK_MAX 8
typedef struct {
    unsigned char pending[MR_DETOK_MAX];
    int n_pending;
    bool whole;
    int stripped; /* leading spaces dropped so far, under whole */
    bool started; /* text other than dropped spaces came out */
} mr_detok;

/* Appends the text the token completes to *out (grown with realloc;
 * *len and *cap track it); an id the tokenizer lacks adds none.  Call
 * with id -1 at the end to flush. */
int mr_detok_push(const mr_tokenizer *tok, mr_detok *state, int32_t id, char **out,
                  size_t *len, size_t *cap);

/* ------------------------------------------------------------------------
 * Expert parallelism
 * ------------------------------------------------------------------------
 * The ranks and their exchange are engine/comm/comm.h's mr_comm. */

/* How dispatch exchanges tokens (engine/ep.h explains both). */
typedef enum { MR_EP_HIGH_THROUGHPUT, MR_EP_LOW_LATENCY } mr_ep_mode;

/* Measures one MoE layer's dispatch + combine between the ranks of `comm`
 * (collective): every rank sends `tokens` random rows of `hidden` floats,
 * each to top_k distinct random slots, runs trivial experts, and combines.
 * For `moerun preflight` and the benchmarks. */
typedef struct {
    int hidden, top_k, slots_per_rank, tokens, iterations;
    mr_ep_mode mode;
    int ll_capacity;
} mr_exchange_probe;

typedef struct {
    double seconds;                 /* per layer, the slowest rank's mean */
    uint64_t dispatch_bytes;        /* this rank's dispatch messages, per layer */
    uint64_t combine_bytes;         /* this rank's combine messages, per layer */
    int64_t *dispatch_to, *combine_to; /* [ranks] if not NULL: the same, per destination */
} mr_exchange_result;

int mr_exchange_measure(mr_comm *comm, const mr_exchange_probe *probe, mr_exchange_result *out,
                        char *err, size_t errlen);
/* The buffer size mr_exchange_measure needs for `probe`. */
size_t mr_exchange_probe_bytes(const mr_exchange_probe *probe);

/* ------------------------------------------------------------------------
 * Model: config, tokenizer and weights of one folder, on one backend
 * ------------------------------------------------------------------------ */
typedef struct mr_model mr_model;

typedef struct {
    const char *backend; /* a name mr_backend_create takes; NULL: "cpu" */
    int threads;         /* <= 0: all cores */
    /* Expert parallelism.  comm: the ranks the routed experts are spread
     * over (NULL: this process alone).  placement: which slots each rank
     * holds, one layer per MoE layer (NULL: contiguous); a rank loads only
     * the experts of its own slots. */
    mr_comm *comm;
    const mr_eplb_placement *placement;
    mr_ep_mode dispatch;
    int ll_capacity; /* low-latency: tokens per (source, slot); <= 0: 128 */
    /* Random bf16 weights of this seed made on the backend instead of the
     * folder's safetensors (mr_weights_synthetic); 0: the files. */
    uint64_t synthetic_seed;
} mr_model_options;

int mr_model_load(const char *dir, const mr_model_options *options, mr_model **out,
                  char *err, size_t errlen);
void mr_model_free(mr_model *model);
const mr_model_config *mr_model_config_get(const mr_model *model);
/* MoE layers in the config: the rows of an expert placement. */
int mr_config_moe_layers(const mr_model_config *cfg);
/* The buffer size (mr_comm_options.capacity) expert parallelism needs for
 * steps of up to max_batch_tokens tokens with slots_per_rank slots a rank. */
size_t mr_model_exchange_bytes(const mr_model_config *cfg, int slots_per_rank,
                               int max_batch_tokens);
/* The bytes of the KV cache (K and V of every layer) in n_blocks blocks of
 * block_size tokens. */
size_t mr_model_kv_bytes(const mr_model_config *cfg, mr_tensor_type kv_type, int block_size,
                         int n_blocks);
const mr_tokenizer *mr_model_tokenizer(const mr_model *model);
/* The backend the model runs on ("cpu", "cuda", ...): with "auto", the one
 * it chose. */
const char *mr_model_backend_name(const mr_model *model);
/* With "auto": why cuda was not taken ("" when it was, or when this build
 * has no CUDA backend); "" for any other backend. */
const char *mr_model_backend_note(const mr_model *model);

/* Weight bytes of one routed expert (gate, up and down): what moving one
 * costs.  0 for a model without MoE layers. */
size_t mr_model_expert_bytes(const mr_model *model);
/* The bytes the backend holds for layer `layer`'s attention weights
 * (projections and norms; for DeepSeek-V3 also W_UKᵀ, mla_weights.c):
 * what attention costs every rank, since each holds all of it. */
size_t mr_model_attention_bytes(const mr_model *model, int layer);
/* The expert placement the model runs by now. */
const mr_eplb_placement *mr_model_placement(const mr_model *model);
/* Switches to placement `p` (same layers, experts, slots and ranks) between
 * two steps; every rank must switch between the same two steps.  A slot
 * that keeps its expert, or takes one another slot of this rank held,
 * copies nothing; the others load their expert from the model file, and
 * *loaded counts them.  On failure the model keeps its old placement. */
int mr_model_set_placement(mr_model *model, const mr_eplb_placement *p, int *loaded, char *err,
                           size_t errlen);

/* The logits of every position of one sequence, [n][vocab_size], from a
 * fresh KV cache.  For tests and tools; serving goes through mr_engine. */
int mr_model_logits(mr_model *model, const int32_t *ids, int n, float *logits, char *err,
                    size_t errlen);

/* One turn of a chat, formatted with the model's chat template
 * (tokenizer_config.json) when a generation is prepared. */
typedef struct {
    const char *role;
    const char *content;
} mr_chat_turn;

/* A model folder's chat template, compiled from its tokenizer_config.json
 * by moerun's Jinja interpreter (template/): mr_model_load loads the
 * model's; `moerun render` loads one alone.  A folder without the file or
 * without a chat_template loads (chats are then refused, with why); a
 * template outside the subset moerun runs is MR_ENGINE_EINVAL, naming the
 * file, the line and column and what is not supported. */
typedef struct mr_chat_template mr_chat_template;
int mr_chat_template_load(const char *dir, mr_chat_template **out, char *err, size_t errlen);
void mr_chat_template_free(mr_chat_template *t);
/* The chat as the template renders it, as transformers' apply_chat_template
 * does with add_generation_prompt true, the special tokens of
 * tokenizer_config.json (bos_token, eos_token, pad_token...), and then
 * the members of `kwargs` (a JSON object's text, e.g. {"enable_thinking":
 * false}, or NULL) over those; *text is malloc'd.  MR_ENGINE_EINVAL, with
 * the reason, when the model has no template, the template refuses the
 * chat (raise_exception: its message) or fails on it. */
int mr_chat_template_apply(const mr_chat_template *t, const mr_chat_turn *turns, size_t n,
                           const char *kwargs, char **text, char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * Serving: KV cache, continuous batching, sampling
 * ------------------------------------------------------------------------ */
typedef struct {
    int max_batch_tokens; /* tokens (prefill + decode) in one forward step */
    int max_sequences;    /* sequences in flight */
    int kv_block_size;    /* tokens per KV block */
    int kv_blocks;        /* KV blocks in the cache; 0: sized to the backend's memory */
    mr_tensor_type kv_type; /* of its elements: f32 (0, the default) or bf16 */
} mr_engine_options;

/* max_sequences and max_batch_tokens left at 0 are filled in from the
 * memory the backend has left beside the KV pool (engine/widths.c has the
 * rule; 256 sequences and 8192 tokens at most); the other options as
 * mr_engine_create takes them.  Ranks that must agree take the smallest. */
int mr_engine_auto_widths(const mr_model *m, mr_engine_options *o, char *err, size_t errlen);
/* The most tokens a step may take under these options, before the rule
 * has run (what buffers sized ahead of the load must hold). */
int mr_engine_widths_most_tokens(const mr_engine_options *o);
/* The rule itself, for `available` bytes left on the backend. */
void mr_engine_widths_fit(const mr_model_config *cfg, int slots_per_rank, size_t available,
                          mr_engine_options *o);
/* An upper bound of the memory a step of these widths takes on a rank:
 * activations, dispatch buffers and logits rows. */
size_t mr_engine_step_bytes(const mr_model_config *cfg, int slots_per_rank,
                            int max_batch_tokens, int max_sequences);

typedef struct {
    int max_tokens;
    double temperature; /* 0: greedy */
    double top_p;
    int top_k;          /* 0: off */
    uint64_t seed;
    const char *const *stop;
    size_t n_stop;
    bool ignore_eos; /* generate max_tokens whatever comes (benchmarks) */
    /* Subtracted from the logit of every token the completion has produced
     * (presence once, frequency once per time), before sampling; -2..2. */
    double presence_penalty, frequency_penalty;
} mr_sampling_params;

/* A token and its log-probability under the model's distribution: the
 * softmax of the raw logits, before penalties, temperature, top-k or top-p
 * (what vLLM returns by default). */
typedef struct {
    int32_t id;
    float logprob;
} mr_token_logprob;

/* The most top alternatives a generation may ask for (OpenAI's limit). */
#define MR_MAX_TOP_LOGPROBS 20

typedef struct {
    uint64_t handle; /* the caller's, returned with the completion */
    /* The prompt, one of three ways: token ids (`prompt`, for callers that
     * tokenize themselves), else chat `turns` (non-NULL: the chat
     * template's format, with the assistant's generation prompt appended),
     * else `text` (text_len bytes, any bytes).  mr_engine_prepare turns
     * turns or text into ids; mr_engine_submit copies the ids. */
    const int32_t *prompt;
    size_t n_prompt;
    const mr_chat_turn *turns;
    size_t n_turns;
    const char *chat_template_kwargs; /* the request's chat_template_kwargs: JSON object text, or NULL */
    const char *text;
    size_t text_len;
    mr_sampling_params sampling; /* stop strings copied at submit */
    /* Completion tokens an earlier run of this generation produced before it
     * stopped (mr_engine_generated gave them), copied at submit; NULL and 0
     * for a new one.  They are prefilled after the prompt and sampling goes
     * on after them: the completion is the same as if it had never stopped,
     * as prefill and decode give the same logits. */
    const int32_t *generated;
    size_t n_generated;
    /* Log-probabilities of every completion token, each with its
     * top_logprobs most likely alternatives (0..MR_MAX_TOP_LOGPROBS);
     * prompt_logprobs adds those of the prompt's tokens after the first. */
    bool logprobs, prompt_logprobs;
    int top_logprobs;
} mr_generation;

typedef enum { MR_FINISH_STOP, MR_FINISH_LENGTH } mr_finish_reason;

typedef struct {
    uint64_t handle;
    char *text; /* malloc'd; the caller frees */
    size_t text_len;
    mr_finish_reason finish;
    int prompt_tokens;
    int completion_tokens;
    /* The prompt's ids, then the completion's (malloc'd; the caller frees). */
    int32_t *tokens;
    /* When the generation asked for them (else NULL, the caller frees):
     * for each token from tokens[logprobs_from] on, 1 + n_top entries, the
     * token itself then its n_top most likely alternatives. */
    mr_token_logprob *logprobs;
    int logprobs_from, n_top;
} mr_completion_out;

/* Frees what a completion holds and empties it. */
void mr_completion_out_free(mr_completion_out *c);

typedef struct mr_engine mr_engine;

int mr_engine_create(mr_model *model, const mr_engine_options *options, mr_engine **out,
                     char *err, size_t errlen);
void mr_engine_free(mr_engine *engine);
/* Whether a generation can be served, and why not: the reason, in err,
 * goes into the request's error record. */
typedef enum {
    MR_PROMPT_OK,
    MR_PROMPT_CHAT_UNSUPPORTED, /* no chat template, or it refused or failed on the chat */
    MR_PROMPT_TOO_LONG,         /* empty, or more tokens than one sequence holds */
    MR_PROMPT_BAD_TOKEN,        /* token ids given that the vocabulary does not have */
    MR_PROMPT_NO_ROOM           /* fits, but not with max_tokens completion tokens */
} mr_prompt_verdict;

/* Formats and tokenizes gen's turns or text: gen->prompt and n_prompt then
 * hold its ids, in the engine's buffer (valid until the next call; ids the
 * caller gave are kept).  *verdict says whether the prompt and a completion
 * of sampling.max_tokens fit in one sequence of this engine, in that order;
 * n_prompt is the count of ids whenever the verdict is not
 * MR_PROMPT_CHAT_UNSUPPORTED.  A prompt that cannot be served is a verdict
 * with MR_ENGINE_OK; only a failure of the engine (memory, the tokenizer)
 * is another status. */
int mr_engine_prepare(mr_engine *engine, mr_generation *gen, mr_prompt_verdict *verdict,
                      char *err, size_t errlen);
/* True while the engine would admit another sequence right away. */
bool mr_engine_has_room(const mr_engine *engine);
/* How many more it would take right away. */
size_t mr_engine_room(const mr_engine *engine);
/* Queues a generation, prepared first when it comes as turns or text.  A
 * prompt that cannot be formatted or does not fit in a sequence is
 * MR_ENGINE_EINVAL, with the reason; a completion that would outgrow the
 * sequence ends there, with MR_FINISH_LENGTH (callers that refuse it look
 * for mr_engine_prepare's MR_PROMPT_NO_ROOM first). */
int mr_engine_submit(mr_engine *engine, const mr_generation *gen, char *err, size_t errlen);
/* Runs one forward step over everything in flight and returns the
 * generations that finished in it, up to `cap` (the rest wait for the next
 * call).  *n_done is 0 when nothing is in flight. */
int mr_engine_step(mr_engine *engine, mr_completion_out *done, size_t cap, size_t *n_done,
                   char *err, size_t errlen);
size_t mr_engine_in_flight(const mr_engine *engine);
/* KV blocks in the engine's pool: the options', or what kv_blocks = 0 sized. */
int mr_engine_kv_blocks(const mr_engine *engine);
/* The completion tokens the queued or running generation `handle` has
 * produced so far, its earlier ones included (valid until the next step):
 * what a checkpoint keeps so that a resumed run goes on from them.  False
 * when no generation in flight has that handle. */
bool mr_engine_generated(const mr_engine *engine, uint64_t handle, const int32_t **tokens,
                         size_t *n);
/* Tokens routed to each (layer, expert) since the engine was created,
 * [num_hidden_layers][num_experts]: the load EPLB balances.  Counted on the
 * backend and downloaded by this call (valid until the next); should that
 * download fail, the last one's counts stand and the next step fails. */
const uint64_t *mr_engine_expert_counts(const mr_engine *engine);

/* What each rank measures, summed over the steps so far. */
typedef struct {
    uint64_t steps;          /* forward steps, idle ones included */
    uint64_t tokens;         /* token rows this rank ran attention for */
    uint64_t generated;      /* completion tokens sampled, unfinished generations' too */
    double attention_seconds; /* norms, attention and the dense MLPs */
    double dispatch_seconds;  /* routing, layout, packing, exchange, unpacking */
    double experts_seconds;   /* the grouped expert GEMMs */
    double combine_seconds;   /* weighted sums, exchange, reduction */
    double wait_seconds;      /* of dispatch and combine: waiting for other ranks */
    int moe_layers, slots_per_rank;
    const uint64_t *slot_tokens; /* [moe_layers][slots_per_rank]: (token, slot)
                                  * pairs each of this rank's physical slots ran */
} mr_engine_stats;

void mr_engine_get_stats(const mr_engine *engine, mr_engine_stats *out);

/* The monotonic clock the engine times itself with (seconds; intervals
 * only, never dates), for callers that time what they do around it. */
double mr_engine_clock_seconds(void);

/* ------------------------------------------------------------------------
 * Expert balancing (online EPLB), balancer.c
 * ------------------------------------------------------------------------
 * Every rank counts the load its tokens put on each logical expert over a
 * window of steps; every step_interval steps the ranks pool their windows,
 * solve the same placement and switch to it between the same two steps
 * when it predicts a gain.  Results do not change whatever the placement.
 * Each decision comes back as a record; the balancer writes no files. */
typedef struct {
    bool online;             /* re-solve while serving */
    int redundant_experts;   /* physical slots beyond one per expert */
    int step_interval;       /* steps between decisions */
    int window_steps;        /* steps of load a decision solves from */
    int min_batch_tokens;    /* fewer tokens per rank-step: skip the decision */
    double max_moves_percent; /* of all slots, moved in one decision; 100: no limit */
    mr_eplb_policy policy;
} mr_engine_balance_options;

/* Physical expert slots per rank: experts plus redundant_experts, rounded
 * up to fill every rank. */
int mr_engine_balance_slots_per_rank(const mr_engine_balance_options *opt, int experts,
                                     int ranks);
/* Nodes the hierarchical solvers may use: the hosts, when each runs as many
 * ranks; else 1. */
int mr_engine_balance_nodes(const mr_comm *comm);

typedef struct mr_engine_balancer mr_engine_balancer;
struct cJSON;

/* A balancer for `engine` running `model` on the ranks of `comm`.
 * `saved_window` ([MoE layers][experts] counts, or NULL): the world's load
 * window a resumed run starts from (a checkpoint's). */
int mr_engine_balancer_new(const mr_engine_balance_options *opt, mr_model *model,
                           mr_engine *engine, mr_comm *comm, const uint64_t *saved_window,
                           mr_engine_balancer **out, char *err, size_t errlen);
void mr_engine_balancer_free(mr_engine_balancer *b);
/* After every engine step, on every rank; collective every step_interval
 * steps when online, and then *record is the decision (the line of
 * eplb.jsonl: docs/eplb.md), the caller's to cJSON_Delete; else NULL. */
int mr_engine_balancer_step(mr_engine_balancer *b, struct cJSON **record, char *err,
                            size_t errlen);
/* At the end, on every rank when online (collective): the last
 * measurement, as a record with "action": "final"; NULL when not online. */
int mr_engine_balancer_finish(mr_engine_balancer *b, struct cJSON **record, char *err,
                              size_t errlen);
/* Collective: the world's load window, [MoE layers][experts] (valid until
 * the next call), and the steps it holds on this rank, for a checkpoint;
 * NULL and 0 for a model without MoE layers. */
int mr_engine_balancer_window(mr_engine_balancer *b, const uint64_t **sum, uint64_t *steps,
                              char *err, size_t errlen);
/* Placement switches so far. */
int mr_engine_balancer_rebalances(const mr_engine_balancer *b);

#endif
