/*
 * Byte-level BPE training for the vocabularies of generated models.
 *
 * The textbook algorithm on the distinct pre-split pieces of the corpus,
 * each weighted by how often it occurs: start from the 256 bytes, then
 * repeatedly merge the most frequent adjacent pair everywhere.  Ties go to
 * the pair of lowest ids so that the result is the same on every machine.
 * The corpus is small, so pair counts are simply recounted each round.
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/testmodel/testmodel.h"
#include "engine/grow.h"
#include "engine/tokenizer_internal.h"

typedef struct {
    int32_t *syms;
    int n;
    int64_t count;
} word;

typedef struct {
    word *words;
    size_t n_words, cap_words;
    mr_strmap index; /* piece bytes -> index in words */
    /* the vocabulary as it grows */
    char **bytes;
    size_t *len;
    int n_tokens;
    mr_strmap vocab;
    int32_t (*merges)[2];
    int n_merges;
} trainer;

static int add_piece(const char *piece, size_t len, void *ctx)
{
    trainer *tr = ctx;
    int32_t at = mr_strmap_get(&tr->index, piece, len);
    if (at >= 0) {
        tr->words[at].count++;
        return 0;
    }
    if (!mr_grow((void **)&tr->words, &tr->cap_words, tr->n_words + 1, sizeof *tr->words))
        return MR_ENGINE_ENOMEM;
    word *w = &tr->words[tr->n_words];
    if (!(w->syms = malloc(len * sizeof *w->syms)))
        return MR_ENGINE_ENOMEM;
    for (size_t i = 0; i < len; i++)
        w->syms[i] = (unsigned char)piece[i]; /* byte b is token b */
    w->n = (int)len;
    w->count = 1;
    if (mr_strmap_put(&tr->index, piece, len, (int32_t)tr->n_words) != 0) {
        free(w->syms);
        return MR_ENGINE_ENOMEM;
    }
    tr->n_words++;
    return 0;
}

static int add_token(trainer *tr, const char *bytes, size_t len)
{
    int id = tr->n_tokens;
    if (!(tr->bytes[id] = malloc(len)))
        return -1;
    memcpy(tr->bytes[id], bytes, len);
    tr->len[id] = len;
    tr->n_tokens++;
    return mr_strmap_put(&tr->vocab, bytes, len, id) == 0 ? id : -1;
}

typedef struct {
    int32_t pair[2];
    int64_t total;
} pair_count;

typedef struct {
    mr_strmap index; /* pair -> position in counts */
    pair_count *counts;
    size_t n, cap;
} pair_table;

/* The entry of `pair`, added with total 0 when new; NULL when out of memory. */
static pair_count *entry_of(pair_table *t, const int32_t pair[2])
{
    int32_t at = mr_strmap_get(&t->index, (const char *)pair, 2 * sizeof *pair);
    if (at >= 0)
        return &t->counts[at];
    if (!mr_grow((void **)&t->counts, &t->cap, t->n + 1, sizeof *t->counts) ||
        mr_strmap_put(&t->index, (const char *)pair, 2 * sizeof *pair, (int32_t)t->n) != 0)
        return NULL;
    pair_count *c = &t->counts[t->n++];
    *c = (pair_count){{pair[0], pair[1]}, 0};
    return c;
}

/* The most frequent adjacent pair, or count 0 when every word is one token. */
static int best_pair(const trainer *tr, int32_t best[2])
{
    pair_table t = {0};
    if (mr_strmap_init(&t.index, 4096) != 0)
        return -1;
    int rc = 0;
    for (size_t w = 0; w < tr->n_words && rc == 0; w++)
        for (int i = 0; i + 1 < tr->words[w].n && rc == 0; i++) {
            pair_count *c = entry_of(&t, &tr->words[w].syms[i]);
            if (c)
                c->total += tr->words[w].count;
            else
                rc = -1;
        }
    int64_t best_count = 0;
    for (size_t p = 0; p < t.n && rc == 0; p++) {
        const pair_count *c = &t.counts[p];
        bool lower = c->pair[0] < best[0] || (c->pair[0] == best[0] && c->pair[1] < best[1]);
        if (c->total > best_count || (c->total == best_count && lower)) {
            best_count = c->total;
            best[0] = c->pair[0];
            best[1] = c->pair[1];
        }
    }
    mr_strmap_free(&t.index);
    free(t.counts);
    return rc < 0 ? -1 : best_count > 0;
}

static void apply_merge(trainer *tr, const int32_t pair[2], int32_t merged)
{
    for (size_t w = 0; w < tr->n_words; w++) {
        word *wd = &tr->words[w];
        int out = 0;
        for (int i = 0; i < wd->n; i++) {
            if (i + 1 < wd->n && wd->syms[i] == pair[0] && wd->syms[i + 1] == pair[1]) {
                wd->syms[out++] = merged;
                i++;
            } else {
                wd->syms[out++] = wd->syms[i];
            }
        }
        wd->n = out;
    }
}

static int learn(trainer *tr, int target)
{
    char joined[512];
    while (tr->n_tokens < target) {
        int32_t pair[2] = {INT32_MAX, INT32_MAX};
        int found = best_pair(tr, pair);
        if (found <= 0)
            return found;
        size_t l = tr->len[pair[0]], r = tr->len[pair[1]];
        if (l + r > sizeof joined)
            return 0; /* tokens this long are of no use to a small vocabulary */
        memcpy(joined, tr->bytes[pair[0]], l);
        memcpy(joined + l, tr->bytes[pair[1]], r);
        int32_t merged = mr_strmap_get(&tr->vocab, joined, l + r);
        if (merged < 0 && (merged = add_token(tr, joined, l + r)) < 0)
            return -1;
        tr->merges[tr->n_merges][0] = pair[0];
        tr->merges[tr->n_merges][1] = pair[1];
        tr->n_merges++;
        apply_merge(tr, pair, merged);
    }
    return 0;
}

static char *byte_level(const char *bytes, size_t len)
{
    char *s = malloc(2 * len + 1);
    if (s)
        s[mr_byte_level_encode(bytes, len, s)] = '\0';
    return s;
}

static cJSON *added_tokens_json(int first_id, const char *const *specials, size_t n)
{
    cJSON *list = cJSON_CreateArray();
    for (size_t i = 0; list && i < n; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddItemToArray(list, t);
        cJSON_AddNumberToObject(t, "id", first_id + (int)i);
        cJSON_AddStringToObject(t, "content", specials[i]);
        cJSON_AddBoolToObject(t, "single_word", 0);
        cJSON_AddBoolToObject(t, "lstrip", 0);
        cJSON_AddBoolToObject(t, "rstrip", 0);
        cJSON_AddBoolToObject(t, "normalized", 0);
        cJSON_AddBoolToObject(t, "special", 1);
    }
    return list;
}

static cJSON *byte_level_step(void)
{
    cJSON *step = cJSON_CreateObject();
    cJSON_AddStringToObject(step, "type", "ByteLevel");
    cJSON_AddBoolToObject(step, "add_prefix_space", 0);
    cJSON_AddBoolToObject(step, "trim_offsets", 0);
    cJSON_AddBoolToObject(step, "use_regex", 0);
    return step;
}

static cJSON *pre_tokenizer_json(void)
{
    cJSON *seq = cJSON_CreateObject(), *steps = cJSON_CreateArray();
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON_AddItemToObject(seq, "pretokenizers", steps);
    cJSON *split = cJSON_CreateObject(), *pattern = cJSON_CreateObject();
    cJSON_AddItemToArray(steps, split);
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddItemToObject(split, "pattern", pattern);
    cJSON_AddStringToObject(pattern, "Regex", mr_qwen2_pattern);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", 0);
    cJSON_AddItemToArray(steps, byte_level_step());
    return seq;
}

static cJSON *tokenizer_json(const trainer *tr, const char *const *specials, size_t n_specials)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON_AddItemToObject(root, "added_tokens",
                          added_tokens_json(tr->n_tokens, specials, n_specials));
    cJSON *nfc = cJSON_CreateObject();
    cJSON_AddStringToObject(nfc, "type", "NFC");
    cJSON_AddItemToObject(root, "normalizer", nfc);
    cJSON_AddItemToObject(root, "pre_tokenizer", pre_tokenizer_json());
    cJSON_AddItemToObject(root, "post_processor", byte_level_step());
    cJSON_AddItemToObject(root, "decoder", byte_level_step());
    cJSON *model = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    cJSON *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray();
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    for (int id = 0; id < tr->n_tokens; id++) {
        char *s = byte_level(tr->bytes[id], tr->len[id]);
        if (!s)
            goto oom;
        cJSON_AddNumberToObject(vocab, s, id);
        free(s);
    }
    for (int m = 0; m < tr->n_merges; m++) {
        char *l = byte_level(tr->bytes[tr->merges[m][0]], tr->len[tr->merges[m][0]]);
        char *r = byte_level(tr->bytes[tr->merges[m][1]], tr->len[tr->merges[m][1]]);
        char *both = l && r ? malloc(strlen(l) + strlen(r) + 2) : NULL;
        if (both)
            sprintf(both, "%s %s", l, r);
        free(l);
        free(r);
        if (!both)
            goto oom;
        cJSON_AddItemToArray(merges, cJSON_CreateString(both));
        free(both);
    }
    return root;
oom:
    cJSON_Delete(root);
    return NULL;
}

static void trainer_free(trainer *tr)
{
    for (size_t w = 0; w < tr->n_words; w++)
        free(tr->words[w].syms);
    free(tr->words);
    for (int i = 0; tr->bytes && i < tr->n_tokens; i++)
        free(tr->bytes[i]);
    free(tr->bytes);
    free(tr->len);
    free(tr->merges);
    mr_strmap_free(&tr->index);
    mr_strmap_free(&tr->vocab);
}

int mr_tokenizer_train(const char *corpus, size_t len, int vocab_size,
                       const char *const *specials, size_t n_specials, char **json, char *err,
                       size_t errlen)
{
    int learned = vocab_size - (int)n_specials;
    if (learned < 256) {
        snprintf(err, errlen, "a byte-level vocabulary needs at least %zu tokens, not %d",
                 256 + n_specials, vocab_size);
        return MR_ENGINE_EINVAL;
    }
    trainer tr = {0};
    mr_presplit *split = NULL;
    const char *pattern = mr_qwen2_pattern;
    int rc = mr_presplit_create(&pattern, 1, &split, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    tr.bytes = calloc((size_t)learned, sizeof *tr.bytes);
    tr.len = calloc((size_t)learned, sizeof *tr.len);
    tr.merges = malloc((size_t)learned * sizeof *tr.merges);
    rc = tr.bytes && tr.len && tr.merges && mr_strmap_init(&tr.index, 4096) == 0 &&
                 mr_strmap_init(&tr.vocab, (size_t)learned) == 0
             ? MR_ENGINE_OK
             : MR_ENGINE_ENOMEM;
    for (int b = 0; b < 256 && rc == MR_ENGINE_OK; b++) {
        char byte = (char)b;
        if (add_token(&tr, &byte, 1) < 0)
            rc = MR_ENGINE_ENOMEM;
    }
    if (rc == MR_ENGINE_OK)
        rc = mr_presplit_run(split, corpus, len, add_piece, &tr);
    if (rc == MR_ENGINE_OK && learn(&tr, learned) != 0)
        rc = MR_ENGINE_ENOMEM;
    cJSON *root = rc == MR_ENGINE_OK ? tokenizer_json(&tr, specials, n_specials) : NULL;
    *json = root ? cJSON_Print(root) : NULL;
    if (rc == MR_ENGINE_OK && !*json)
        rc = MR_ENGINE_ENOMEM;
    if (rc == MR_ENGINE_ENOMEM)
        snprintf(err, errlen, "out of memory training the tokenizer");
    cJSON_Delete(root);
    trainer_free(&tr);
    mr_presplit_free(split);
    return rc;
}
