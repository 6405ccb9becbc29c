/*
 * Hugging Face tokenizer.json, BPE: loading and encoding, for its two
 * families: byte-level BPE (Qwen, Llama 3, DeepSeek-V3) and
 * SentencePiece-style BPE (Llama 2, Mistral, Mixtral; the differences live
 * in sentencepiece_bpe.c).  Which one a file is comes from its contents.
 *
 * Encoding follows the library's pipeline in order:
 *   1. added tokens ("<|im_start|>") are cut out of the raw text first;
 *   2. each remaining segment is normalised (byte-level: NFC where the file
 *      says so; SentencePiece: spaces become "▁", one put in front);
 *   3. byte-level: the pre-tokenizer's regexes split it into pieces
 *      (presplit.c);
 *   4. each piece is cut into first symbols (byte-level: one per byte;
 *      SentencePiece: one per character, or its bytes' tokens) and merged
 *      pair by pair, always the pair of lowest merge rank first, leftmost
 *      first on a tie.
 * A byte-level vocabulary is kept as bytes rather than in the alphabet it
 * is written in, so step 4 starts from one id per byte; a SentencePiece
 * one is kept as written, "▁" and all.
 */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "engine/engine.h"
#include "engine/grow.h"
#include "engine/tokenizer_internal.h"
#include "engine/weights_internal.h"

#define TOKENIZER_MAX_BYTES (256u << 20)
#define CONFIG_MAX_BYTES (16u << 20)
#define MAX_EOS 4

/* GPT-2's pattern, used by a ByteLevel pre-tokenizer with use_regex. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    bool lstrip, rstrip;
} added_token;

struct mr_tokenizer {
    char path[512];  /* tokenizer.json, for messages */
    int vocab_size;  /* highest id + 1 */
    char **bytes;    /* [vocab_size]: what each id stands for; NULL for holes */
    uint32_t *len;
    mr_strmap vocab; /* bytes -> id, the BPE model's entries */
    mr_strmap ranks; /* (left id, right id) -> merge rank */
    int32_t *merged; /* [n_merges]: the id a merge produces */
    int n_merges;
    int32_t byte_id[256];
    added_token *added;
    size_t n_added;
    bool added_starts[256]; /* first bytes of added tokens: most bytes start none */
    bool nfc;
    bool ignore_merges; /* Llama 3: a piece that is a token is not merged */
    bool spm;           /* SentencePiece-style BPE rather than byte-level */
    mr_spm sp;          /* its rules, when spm */
    mr_presplit *split;
    int32_t eos[MAX_EOS];
    int n_eos;
    int32_t bos; /* what a text prompt starts with, or -1 */
};

typedef struct {
    char *msg;
    size_t len;
    const char *path;
} error_sink;

/* Writes "<file>: <message>" and returns rc. */
__attribute__((format(printf, 3, 4))) static int failf(error_sink *e, int rc, const char *fmt,
                                                       ...)
{
    int n = snprintf(e->msg, e->len, "%s: ", e->path);
    if (n >= 0 && (size_t)n < e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg + n, e->len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------ */
static int set_token_bytes(mr_tokenizer *t, int32_t id, const char *bytes, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return MR_ENGINE_ENOMEM;
    memcpy(copy, bytes, len);
    copy[len] = '\0';
    free(t->bytes[id]);
    t->bytes[id] = copy;
    t->len[id] = (uint32_t)len;
    return MR_ENGINE_OK;
}

static int id_of(const cJSON *item, error_sink *e, const char *what)
{
    if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > 16777216 ||
        item->valuedouble != (double)(int)item->valuedouble)
        return failf(e, MR_ENGINE_EINVAL, "%s has an id that is not an integer in range",
                     what), -1;
    return (int)item->valuedouble;
}

static int highest_id(const cJSON *vocab, const cJSON *added, error_sink *e)
{
    int highest = -1;
    const cJSON *item;
    cJSON_ArrayForEach(item, vocab)
    {
        int id = id_of(item, e, item->string);
        if (id < 0)
            return -1;
        highest = id > highest ? id : highest;
    }
    cJSON_ArrayForEach(item, added)
    {
        int id = id_of(cJSON_GetObjectItemCaseSensitive(item, "id"), e, "an added token");
        if (id < 0)
            return -1;
        highest = id > highest ? id : highest;
    }
    return highest;
}

/* Whether `added` (the added_tokens array) has `content` with this id:
 * DeepSeek-V3 lists its special tokens in the vocabulary too, written as
 * themselves rather than in the byte-level alphabet. */
static bool is_added(const cJSON *added, const char *content, int32_t id)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(item, "content");
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(item, "id");
        if (cJSON_IsString(c) && strcmp(c->valuestring, content) == 0 && cJSON_IsNumber(i) &&
            i->valuedouble == id)
            return true;
    }
    return false;
}

/* What a vocabulary entry stands for, as the key of t->vocab: its bytes
 * (byte-level) or itself (SentencePiece).  -1 outside the alphabet. */
static long entry_key(const mr_tokenizer *t, const char *text, size_t n, char *out)
{
    if (t->spm) {
        memcpy(out, text, n);
        return (long)n;
    }
    return mr_byte_level_decode(text, n, out);
}

static int load_vocab(mr_tokenizer *t, const cJSON *vocab, const cJSON *added, error_sink *e)
{
    if (mr_strmap_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab)) != 0)
        return MR_ENGINE_ENOMEM;
    const cJSON *item;
    char *buf = NULL;
    size_t cap = 0;
    int rc = MR_ENGINE_OK;
    cJSON_ArrayForEach(item, vocab)
    {
        size_t n = strlen(item->string);
        /* One more than the bytes, so that an empty entry ("") still has a
         * buffer: copying zero bytes from NULL is undefined. */
        if (!mr_grow((void **)&buf, &cap, n + 1, 1)) {
            rc = MR_ENGINE_ENOMEM;
            break;
        }
        int32_t id = (int32_t)item->valuedouble;
        long len = entry_key(t, item->string, n, buf);
        if (len < 0 && is_added(added, item->string, id))
            continue; /* load_added gives it its bytes; merges never make it */
        if (len < 0) {
            rc = failf(e, MR_ENGINE_EINVAL,
                       "vocabulary entry \"%s\" is not in the byte-level alphabet",
                       item->string);
            break;
        }
        if ((rc = mr_strmap_put(&t->vocab, buf, (size_t)len, id) ? MR_ENGINE_ENOMEM : 0))
            break;
        if (t->spm)
            len = (long)mr_spm_piece_bytes(&t->sp, item->string, n, buf);
        if ((rc = set_token_bytes(t, id, buf, (size_t)len)) != MR_ENGINE_OK)
            break;
        if (len == 1 && !t->spm)
            t->byte_id[(unsigned char)buf[0]] = id;
    }
    free(buf);
    return rc;
}

/* A merge is "left right" (older files) or ["left", "right"]. */
static int merge_sides(const cJSON *merge, const char **left, size_t *left_len,
                       const char **right, size_t *right_len)
{
    if (cJSON_IsString(merge)) {
        const char *s = merge->valuestring, *space = strchr(s, ' ');
        if (!space || strchr(space + 1, ' '))
            return -1;
        *left = s, *left_len = (size_t)(space - s);
        *right = space + 1, *right_len = strlen(space + 1);
        return 0;
    }
    if (cJSON_GetArraySize(merge) != 2 || !cJSON_IsString(merge->child) ||
        !cJSON_IsString(merge->child->next))
        return -1;
    *left = merge->child->valuestring, *left_len = strlen(*left);
    *right = merge->child->next->valuestring, *right_len = strlen(*right);
    return 0;
}

static int32_t vocab_id(const mr_tokenizer *t, const char *text, size_t n, char *buf)
{
    long len = entry_key(t, text, n, buf);
    return len < 0 ? -1 : mr_strmap_get(&t->vocab, buf, (size_t)len);
}

static void pair_key(int32_t left, int32_t right, char key[8])
{
    memcpy(key, &left, 4);
    memcpy(key + 4, &right, 4);
}

static int load_merges(mr_tokenizer *t, const cJSON *merges, error_sink *e)
{
    int n = cJSON_GetArraySize(merges);
    t->merged = malloc(((size_t)n + 1) * sizeof *t->merged);
    if (!t->merged || mr_strmap_init(&t->ranks, (size_t)n) != 0)
        return MR_ENGINE_ENOMEM;
    const cJSON *merge;
    char buf[1024];
    cJSON_ArrayForEach(merge, merges)
    {
        const char *l, *r;
        size_t ll, rl;
        char where[64];
        snprintf(where, sizeof where, "%d", t->n_merges + 1);
        if (merge_sides(merge, &l, &ll, &r, &rl) != 0 || ll + rl > sizeof buf / 2)
            return failf(e, MR_ENGINE_EINVAL,
                         "merge %s is neither \"left right\" nor [\"left\", \"right\"]",
                         where);
        char joined[sizeof buf / 2];
        memcpy(joined, l, ll);
        memcpy(joined + ll, r, rl);
        int32_t left = vocab_id(t, l, ll, buf), right = vocab_id(t, r, rl, buf),
                result = vocab_id(t, joined, ll + rl, buf);
        if (left < 0 || right < 0 || result < 0)
            return failf(e, MR_ENGINE_EINVAL,
                         "merge %s names a token that is not in the vocabulary", where);
        char key[8];
        pair_key(left, right, key);
        /* The last rank of a pair listed twice wins, as in Hugging Face,
         * whose merge map is built by inserting them in order (Mistral's
         * tokenizer.json lists 47 pairs twice). */
        if (mr_strmap_put(&t->ranks, key, 8, t->n_merges) != 0)
            return MR_ENGINE_ENOMEM;
        t->merged[t->n_merges++] = result;
    }
    return MR_ENGINE_OK;
}

static int load_added(mr_tokenizer *t, const cJSON *added, error_sink *e)
{
    int n = cJSON_GetArraySize(added);
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added)
        return MR_ENGINE_ENOMEM;
    const cJSON *item;
    cJSON_ArrayForEach(item, added)
    {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
        if (!cJSON_IsString(content) || !content->valuestring[0])
            return failf(e, MR_ENGINE_EINVAL, "an added token has no \"content\"");
        added_token *a = &t->added[t->n_added++];
        a->len = strlen(content->valuestring);
        a->content = strdup(content->valuestring);
        a->id = (int32_t)cJSON_GetObjectItemCaseSensitive(item, "id")->valuedouble;
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "rstrip"));
        t->added_starts[(unsigned char)content->valuestring[0]] = true;
        if (!a->content)
            return MR_ENGINE_ENOMEM;
        /* Decoding runs added tokens through the decoder too: a SentencePiece
         * one's "▁" is a space. */
        char *bytes = t->spm ? malloc(a->len) : NULL;
        size_t len = bytes ? mr_spm_piece_bytes(&t->sp, a->content, a->len, bytes) : a->len;
        int rc = t->spm && !bytes ? MR_ENGINE_ENOMEM
                                  : set_token_bytes(t, a->id, bytes ? bytes : a->content, len);
        free(bytes);
        if (rc != MR_ENGINE_OK)
            return rc;
    }
    return MR_ENGINE_OK;
}

static const char *type_of(const cJSON *obj)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(type) ? type->valuestring : "";
}

/* Byte-level: no normalizer or NFC, alone or in a Sequence (DeepSeek-V3's
 * is an empty Sequence). */
static int load_normalizer(mr_tokenizer *t, const cJSON *normalizer, error_sink *e)
{
    if (!normalizer || cJSON_IsNull(normalizer))
        return MR_ENGINE_OK;
    if (strcmp(type_of(normalizer), "Sequence") == 0) {
        const cJSON *step;
        cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(normalizer, "normalizers"))
        {
            int rc = load_normalizer(t, step, e);
            if (rc != MR_ENGINE_OK)
                return rc;
        }
        return MR_ENGINE_OK;
    }
    if (strcmp(type_of(normalizer), "NFC") == 0) {
        t->nfc = true;
        return MR_ENGINE_OK;
    }
    return failf(e, MR_ENGINE_EINVAL,
                 "normalizer \"%s\" is not supported for byte-level BPE (only none or NFC)",
                 type_of(normalizer));
}

/* Collects the regexes of a pre-tokenizer: Split steps (behaviour
 * Isolated, not inverted) and ByteLevel, alone or in a Sequence. */
static int collect_patterns(const cJSON *pre, const char **patterns, size_t *n, bool *byte_level,
                            error_sink *e)
{
    const char *type = type_of(pre);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *step;
        cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers"))
        {
            int rc = collect_patterns(step, patterns, n, byte_level, e);
            if (rc != MR_ENGINE_OK)
                return rc;
        }
        return MR_ENGINE_OK;
    }
    if (*n == 8)
        return failf(e, MR_ENGINE_EINVAL, "the pre-tokenizer has too many steps");
    if (strcmp(type, "ByteLevel") == 0) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space")))
            return failf(e, MR_ENGINE_EINVAL,
                         "ByteLevel add_prefix_space is not supported");
        *byte_level = true;
        if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "use_regex")))
            patterns[(*n)++] = gpt2_pattern;
        return MR_ENGINE_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(pre, "pattern");
        const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pattern, "Regex");
        const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(pre, "behavior");
        if (!cJSON_IsString(regex))
            return failf(e, MR_ENGINE_EINVAL, "a Split pre-tokenizer without a Regex "
                                              "pattern is not supported");
        if (!cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated") != 0 ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pre, "invert")))
            return failf(e, MR_ENGINE_EINVAL, "only Split with behavior \"Isolated\" "
                                              "is supported");
        patterns[(*n)++] = regex->valuestring;
        return MR_ENGINE_OK;
    }
    return failf(e, MR_ENGINE_EINVAL, "pre-tokenizer \"%s\" is not supported", type);
}

static int load_pretokenizer(mr_tokenizer *t, const cJSON *pre, error_sink *e)
{
    const char *patterns[8];
    size_t n = 0;
    bool byte_level = false;
    int rc = collect_patterns(pre, patterns, &n, &byte_level, e);
    if (rc == MR_ENGINE_OK && !byte_level)
        rc = failf(e, MR_ENGINE_EINVAL,
                   "the pre-tokenizer has no ByteLevel step, and the file is not "
                   "SentencePiece-style BPE either (no \"\xE2\x96\x81\" normalizer, "
                   "Metaspace pre-tokenizer or byte_fallback); only these two kinds of "
                   "BPE are supported");
    if (rc == MR_ENGINE_OK && n == 0) /* ByteLevel without regex: one piece */
        patterns[n++] = "(?s).+";
    if (rc != MR_ENGINE_OK)
        return rc;
    char why[256];
    rc = mr_presplit_create(patterns, n, &t->split, why, sizeof why);
    return rc == MR_ENGINE_EINVAL ? failf(e, rc, "%s", why) : rc;
}

/* The special token a TemplateProcessing post-processor puts in front of
 * a single text (Llama 2, Mistral: "<s>"), alone or in a Sequence (Llama
 * 3), or -1.  What it appends (no family here does) is not added. */
static int32_t template_bos(const mr_tokenizer *t, const cJSON *post)
{
    if (strcmp(type_of(post), "Sequence") == 0) {
        const cJSON *step;
        cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(post, "processors"))
        {
            int32_t id = template_bos(t, step);
            if (id >= 0)
                return id;
        }
        return -1;
    }
    if (strcmp(type_of(post), "TemplateProcessing") != 0)
        return -1;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(post, "single"), 0);
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(special, "id");
    return cJSON_IsString(name) ? mr_tokenizer_find(t, name->valuestring) : -1;
}

static int load_tokenizer_json(mr_tokenizer *t, const cJSON *root, error_sink *e)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0)
        return failf(e, MR_ENGINE_EINVAL, "model type \"%s\" is not supported (only BPE)",
                     type->valuestring);
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return failf(e, MR_ENGINE_EINVAL,
                     "\"model\" needs a \"vocab\" object and a \"merges\" array");
    if (added && !cJSON_IsArray(added))
        return failf(e, MR_ENGINE_EINVAL, "\"added_tokens\" must be an array");
    int highest = highest_id(vocab, added, e);
    if (highest < 0)
        return MR_ENGINE_EINVAL;
    t->vocab_size = highest + 1;
    t->bytes = calloc((size_t)t->vocab_size, sizeof *t->bytes);
    t->len = calloc((size_t)t->vocab_size, sizeof *t->len);
    if (!t->bytes || !t->len)
        return MR_ENGINE_ENOMEM;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    t->spm = mr_spm_detect(root);
    int rc = MR_ENGINE_OK;
    if (t->spm) {
        char why[384];
        if ((rc = mr_spm_load(&t->sp, root, why, sizeof why)) != MR_ENGINE_OK)
            return failf(e, rc, "%s", why);
    }
    rc = load_vocab(t, vocab, added, e);
    if (rc == MR_ENGINE_OK)
        rc = load_merges(t, merges, e);
    if (rc == MR_ENGINE_OK)
        rc = load_added(t, added, e);
    if (rc == MR_ENGINE_OK && t->spm) {
        const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
        char why[256];
        rc = mr_spm_set_ids(&t->sp, &t->vocab, cJSON_IsString(unk) ? unk->valuestring : NULL,
                            why, sizeof why);
        if (rc != MR_ENGINE_OK)
            return failf(e, rc, "%s", why);
    } else if (rc == MR_ENGINE_OK) {
        rc = load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), e);
        if (rc == MR_ENGINE_OK)
            rc = load_pretokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                                   e);
    }
    if (rc == MR_ENGINE_OK)
        t->bos = template_bos(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
    return rc;
}

/* A token of tokenizer_config.json, "text" or {"content": "text"}: its id,
 * or -1. */
static int32_t config_token(const mr_tokenizer *t, const cJSON *token)
{
    if (cJSON_IsObject(token))
        token = cJSON_GetObjectItemCaseSensitive(token, "content");
    return cJSON_IsString(token) ? mr_tokenizer_find(t, token->valuestring) : -1;
}

static int add_eos(mr_tokenizer *t, const cJSON *token)
{
    int32_t id = config_token(t, token);
    if (id >= 0 && t->n_eos < MAX_EOS)
        t->eos[t->n_eos++] = id;
    return id;
}

/* tokenizer_config.json is optional; when present it names the EOS token,
 * and its add_bos_token, where given, decides about the BOS token in
 * front of a text, as transformers' Llama tokenizers do (DeepSeek-V3 says
 * so there only). */
static int load_tokenizer_config(mr_tokenizer *t, const char *path, error_sink *e)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return MR_ENGINE_OK;
    cJSON *root = NULL;
    int rc = mr_json_file_load(path, CONFIG_MAX_BYTES, &root, e->msg, e->len);
    if (rc != MR_ENGINE_OK)
        return rc;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token");
    if (eos && !cJSON_IsNull(eos) && add_eos(t, eos) < 0) {
        e->path = path;
        rc = failf(e, MR_ENGINE_EINVAL,
                   "\"eos_token\" is not a token of tokenizer.json");
    }
    const cJSON *add_bos = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    if (rc == MR_ENGINE_OK && cJSON_IsBool(add_bos)) {
        t->bos = cJSON_IsTrue(add_bos)
                     ? config_token(t, cJSON_GetObjectItemCaseSensitive(root, "bos_token"))
                     : -1;
        if (cJSON_IsTrue(add_bos) && t->bos < 0) {
            e->path = path;
            rc = failf(e, MR_ENGINE_EINVAL, "\"add_bos_token\" is true but \"bos_token\" is "
                                            "not a token of tokenizer.json");
        }
    }
    cJSON_Delete(root);
    return rc;
}

int mr_tokenizer_load(const char *path, mr_tokenizer **out, char *err, size_t errlen)
{
    struct stat st;
    char json_path[512], config_path[512];
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(json_path, sizeof json_path, "%s/tokenizer.json", path);
        snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", path);
    } else {
        snprintf(json_path, sizeof json_path, "%s", path);
        const char *slash = strrchr(path, '/');
        int dir_len = slash ? (int)(slash - path) : 1;
        snprintf(config_path, sizeof config_path, "%.*s/tokenizer_config.json", dir_len,
                 slash ? path : ".");
    }
    mr_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return MR_ENGINE_ENOMEM;
    t->bos = -1;
    snprintf(t->path, sizeof t->path, "%s", json_path);
    error_sink e = {err, errlen, t->path};
    cJSON *root = NULL;
    int rc = mr_json_file_load(json_path, TOKENIZER_MAX_BYTES, &root, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = load_tokenizer_json(t, root, &e);
    cJSON_Delete(root);
    if (rc == MR_ENGINE_OK)
        rc = load_tokenizer_config(t, config_path, &e);
    if (rc != MR_ENGINE_OK) {
        if (rc == MR_ENGINE_ENOMEM)
            snprintf(err, errlen, "%s: out of memory loading the tokenizer", json_path);
        mr_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return MR_ENGINE_OK;
}

void mr_tokenizer_free(mr_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; t->bytes && i < t->vocab_size; i++)
        free(t->bytes[i]);
    free(t->bytes);
    free(t->len);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->merged);
    mr_strmap_free(&t->vocab);
    mr_strmap_free(&t->ranks);
    mr_presplit_free(t->split);
    free(t);
}

int mr_tokenizer_vocab_size(const mr_tokenizer *t)
{
    return t->vocab_size;
}

int32_t mr_tokenizer_find(const mr_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0)
            return t->added[i].id;
    return mr_strmap_get(&t->vocab, token, n);
}

int32_t mr_tokenizer_bos(const mr_tokenizer *t)
{
    return t->bos;
}

int mr_tokenizer_eos(const mr_tokenizer *t, const int32_t **ids)
{
    *ids = t->eos;
    return t->n_eos;
}

int mr_tokenizer_strip_start(const mr_tokenizer *t)
{
    return t->spm ? t->sp.strip_start : 0;
}

const char *mr_tokenizer_token_bytes(const mr_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->vocab_size || !t->bytes[id])
        return NULL;
    *len = t->len[id];
    return t->bytes[id];
}

/* ------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------ */
void mr_tokens_free(mr_tokens *tokens)
{
    free(tokens->ids);
    tokens->ids = NULL;
    tokens->count = tokens->cap = 0;
}

static int push_id(mr_tokens *out, int32_t id)
{
    if (!mr_grow((void **)&out->ids, &out->cap, out->count + 1, sizeof *out->ids))
        return MR_ENGINE_ENOMEM;
    out->ids[out->count++] = id;
    return MR_ENGINE_OK;
}

/* Pending merges live in a binary heap ordered by (rank, position); an
 * entry whose symbols changed since it was pushed is skipped when popped. */
typedef struct {
    int32_t rank;
    int32_t pos;   /* the left symbol */
    int32_t left, right;
} candidate;

typedef struct {
    const mr_tokenizer *t;
    mr_tokens *out;
    /* scratch, grown to the longest piece */
    int32_t *sym, *prev, *next;
    candidate *heap;
    size_t n_heap, cap;
    char *err;
    size_t errlen;
} bpe_run;

static bool before(const candidate *a, const candidate *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(bpe_run *r, candidate c)
{
    size_t i = r->n_heap++;
    while (i > 0 && before(&c, &r->heap[(i - 1) / 2])) {
        r->heap[i] = r->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    r->heap[i] = c;
}

static candidate heap_pop(bpe_run *r)
{
    candidate top = r->heap[0], last = r->heap[--r->n_heap];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= r->n_heap)
            break;
        if (child + 1 < r->n_heap && before(&r->heap[child + 1], &r->heap[child]))
            child++;
        if (!before(&r->heap[child], &last))
            break;
        r->heap[i] = r->heap[child];
        i = child;
    }
    if (r->n_heap)
        r->heap[i] = last;
    return top;
}

static void push_pair(bpe_run *r, int32_t pos)
{
    int32_t right = pos >= 0 ? r->next[pos] : -1;
    if (right < 0)
        return;
    char key[8];
    pair_key(r->sym[pos], r->sym[right], key);
    int32_t rank = mr_strmap_get(&r->t->ranks, key, 8);
    if (rank >= 0)
        heap_push(r, (candidate){rank, pos, r->sym[pos], r->sym[right]});
}

static int reserve(bpe_run *r, size_t n)
{
    if (n <= r->cap)
        return MR_ENGINE_OK;
    size_t cap = n * 2;
    int32_t *sym = realloc(r->sym, cap * sizeof *sym);
    if (!sym)
        return MR_ENGINE_ENOMEM;
    r->sym = sym;
    int32_t *prev = realloc(r->prev, cap * sizeof *prev);
    if (!prev)
        return MR_ENGINE_ENOMEM;
    r->prev = prev;
    int32_t *next = realloc(r->next, cap * sizeof *next);
    if (!next)
        return MR_ENGINE_ENOMEM;
    r->next = next;
    /* Each merge pushes at most two pairs on top of the first n - 1. */
    candidate *heap = realloc(r->heap, 3 * cap * sizeof *heap);
    if (!heap)
        return MR_ENGINE_ENOMEM;
    r->heap = heap;
    r->cap = cap;
    return MR_ENGINE_OK;
}

static int encode_piece(const char *piece, size_t len, void *ctx)
{
    bpe_run *r = ctx;
    const mr_tokenizer *t = r->t;
    if (t->ignore_merges) {
        int32_t whole = mr_strmap_get(&t->vocab, piece, len);
        if (whole >= 0)
            return push_id(r->out, whole);
    }
    if (reserve(r, len) != MR_ENGINE_OK)
        return MR_ENGINE_ENOMEM;
    if (t->spm) {
        size_t bad;
        long n = mr_spm_symbols(&t->sp, &t->vocab, piece, len, r->sym, &bad);
        if (n < 0) {
            snprintf(r->err, r->errlen,
                     "%s: the character at byte %zu of a piece has no token, and the "
                     "tokenizer has neither byte_fallback nor an unk_token",
                     t->path, bad);
            return MR_ENGINE_EINVAL;
        }
        len = (size_t)n;
    } else {
        for (size_t i = 0; i < len; i++) {
            r->sym[i] = t->byte_id[(unsigned char)piece[i]];
            if (r->sym[i] < 0) {
                snprintf(r->err, r->errlen, "%s: byte 0x%02x has no token in the vocabulary",
                         t->path, (unsigned char)piece[i]);
                return MR_ENGINE_EINVAL;
            }
        }
    }
    for (size_t i = 0; i < len; i++) {
        r->prev[i] = (int32_t)i - 1;
        r->next[i] = i + 1 < len ? (int32_t)i + 1 : -1;
    }
    r->n_heap = 0;
    for (size_t i = 0; i + 1 < len; i++)
        push_pair(r, (int32_t)i);
    while (r->n_heap) {
        candidate c = heap_pop(r);
        int32_t right = r->next[c.pos];
        /* Stale: the left symbol was merged away or changed, or its right
         * neighbour is no longer the one this pair was made with. */
        if (r->sym[c.pos] != c.left || right < 0 || r->sym[right] != c.right)
            continue;
        r->sym[c.pos] = t->merged[c.rank];
        r->sym[right] = -1;
        r->next[c.pos] = r->next[right];
        if (r->next[right] >= 0)
            r->prev[r->next[right]] = c.pos;
        push_pair(r, r->prev[c.pos]);
        push_pair(r, c.pos);
    }
    for (int32_t i = 0; i >= 0; i = r->next[i])
        if (push_id(r->out, r->sym[i]) != MR_ENGINE_OK)
            return MR_ENGINE_ENOMEM;
    return MR_ENGINE_OK;
}

/* `first`: the segment starts the text (Metaspace's prepend_scheme "first"). */
static int encode_segment(bpe_run *r, const char *text, size_t len, bool first)
{
    if (len == 0)
        return MR_ENGINE_OK;
    if (r->t->spm)
        return mr_spm_pieces(&r->t->sp, text, len, first, encode_piece, r);
    utf8proc_uint8_t *normal = NULL;
    if (r->t->nfc) {
        /* Invalid UTF-8 cannot be normalised; it is encoded as its bytes. */
        utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len,
                                          &normal, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (n >= 0) {
            text = (const char *)normal;
            len = (size_t)n;
        } else if (n == UTF8PROC_ERROR_NOMEM) {
            return MR_ENGINE_ENOMEM;
        }
    }
    int rc = mr_presplit_run(r->t->split, text, len, encode_piece, r);
    free(normal);
    return rc;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The longest added token starting at text[at], or NULL. */
static const added_token *added_at(const mr_tokenizer *t, const char *text, size_t len,
                                   size_t at)
{
    const added_token *best = NULL;
    if (!t->added_starts[(unsigned char)text[at]])
        return NULL;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (a->len <= len - at && (!best || a->len > best->len) &&
            memcmp(text + at, a->content, a->len) == 0)
            best = a;
    }
    return best;
}

int mr_tokenizer_encode(const mr_tokenizer *t, const char *text, size_t len, mr_tokens *out,
                        char *err, size_t errlen)
{
    bpe_run r = {.t = t, .out = out, .err = err, .errlen = errlen};
    size_t segment = 0;
    int rc = MR_ENGINE_OK;
    for (size_t at = 0; at < len && rc == MR_ENGINE_OK;) {
        const added_token *a = added_at(t, text, len, at);
        if (!a) {
            at++;
            continue;
        }
        size_t end = at;
        if (a->lstrip)
            while (end > segment && is_space(text[end - 1]))
                end--;
        rc = encode_segment(&r, text + segment, end - segment, segment == 0);
        if (rc == MR_ENGINE_OK)
            rc = push_id(out, a->id);
        at += a->len;
        if (a->rstrip)
            while (at < len && is_space(text[at]))
                at++;
        segment = at;
    }
    if (rc == MR_ENGINE_OK)
        rc = encode_segment(&r, text + segment, len - segment, segment == 0);
    free(r.sym);
    free(r.prev);
    free(r.next);
    free(r.heap);
    if (rc == MR_ENGINE_ENOMEM)
        snprintf(err, errlen, "out of memory while tokenizing");
    return rc;
}
