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

typedef struct {
    char architecture[64]; /* "Qwen3MoeForCausalLM" */
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
} mr_model_config;

/* Reads and checks `config.json` (a path to the file itself). */
int mr_config_load(const char *path, mr_model_config *cfg, char *err, size_t errlen);
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
} mr_tensor;

/* Opens the folder's safetensors (single or sharded) and checks every
 * header: JSON well formed, dtypes known, offsets inside the file, sizes
 * equal to the product of the shape, no overlaps. */
int mr_weights_open(const char *model_dir, mr_weights **out, char *err, size_t errlen);
void mr_weights_close(mr_weights *w);
/* Finds tensor `name` and checks its shape (ndim entries of `shape`).  A
 * missing tensor or a wrong shape is an error naming the tensor and file. */
int mr_weights_get(const mr_weights *w, const char *name, int ndim, const int64_t *shape,
                   mr_tensor *out, char *err, size_t errlen);
size_t mr_weights_count(const mr_weights *w);

/* Writes one safetensors file (for make-model and tests).  `metadata` may
 * be NULL; it becomes the header's "__metadata__" string map. */
typedef struct {
    const char *name;
    mr_tensor_type type;
    int ndim;
    int64_t shape[4];
    const void *data; /* bytes: product(shape) * type size */
} mr_tensor_spec;

int mr_safetensors_write(const char *path, const mr_tensor_spec *tensors, size_t count,
                         char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * Tokenizer (Hugging Face tokenizer.json, byte-level BPE)
 * ------------------------------------------------------------------------
 * The family Qwen2/Qwen3, Llama 3 and DeepSeek-V3 use: a regex pre-split
 * (PCRE2), bytes mapped to printable code points, merges applied by rank,
 * added tokens matched before everything else. */
typedef struct mr_tokenizer mr_tokenizer;

/* `path` is a model folder (its tokenizer.json and tokenizer_config.json)
 * or a tokenizer.json file. */
int mr_tokenizer_load(const char *path, mr_tokenizer **out, char *err, size_t errlen);
void mr_tokenizer_free(mr_tokenizer *tok);
int mr_tokenizer_vocab_size(const mr_tokenizer *tok);
/* The id of a token given by its text (e.g. "<|im_end|>"), or -1. */
int32_t mr_tokenizer_find(const mr_tokenizer *tok, const char *token);
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
 * never form a character come out as U+FFFD, as Hugging Face decodes them. */
#define MR_DETOK_MAX 8
typedef struct {
    unsigned char pending[MR_DETOK_MAX];
    int n_pending;
} mr_detok;

/* Appends the text the token completes to *out (grown with realloc;
 * *len and *cap track it).  Call with id -1 at the end to flush. */
int mr_detok_push(const mr_tokenizer *tok, mr_detok *state, int32_t id, char **out,
                  size_t *len, size_t *cap);

/* Trains a byte-level BPE vocabulary of `vocab_size` tokens (256 bytes +
 * merges + `specials`) on `corpus` and writes it as tokenizer.json text
 * into *json (malloc'd), with Qwen2's pre-tokenizer.  Deterministic. */
int mr_tokenizer_train(const char *corpus, size_t len, int vocab_size,
                       const char *const *specials, size_t n_specials, char **json,
                       char *err, size_t errlen);

#endif
