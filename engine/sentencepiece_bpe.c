/*
 * SentencePiece-style BPE in tokenizer.json, the family of Llama 2, Mistral
 * and Mixtral: what differs from byte-level BPE.  tokenizer.c keeps the
 * vocabulary, the merges, the added tokens and the merging itself; this
 * file reads the options, turns a segment of text into "▁"-text, cuts it
 * into the first symbols (characters, or their bytes' "<0xXX>" tokens) and
 * says which bytes a vocabulary entry stands for.
 *
 * Hugging Face's converter writes this family in two shapes, both read
 * here: the "legacy" one (normalizer Prepend "▁" + Replace " " -> "▁", no
 * pre-tokenizer) and the newer one (no normalizer, a Metaspace
 * pre-tokenizer with a prepend scheme); the decoder is Replace "▁" -> " ",
 * ByteFallback, Fuse and Strip of one leading space.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/tokenizer_internal.h"

static const char metaspace[] = "\xE2\x96\x81"; /* U+2581 "▁" */
#define METASPACE_LEN 3

static const char *type_of(const cJSON *obj)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(type) ? type->valuestring : "";
}

static const char *string_of(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* A Replace's pattern is {"String": "..."} (or {"Regex": ...}, refused). */
static bool is_replace(const cJSON *step, const char *from, const char *to)
{
    const char *pattern =
        string_of(cJSON_GetObjectItemCaseSensitive(step, "pattern"), "String");
    const char *content = string_of(step, "content");
    return strcmp(type_of(step), "Replace") == 0 && pattern && content &&
           strcmp(pattern, from) == 0 && strcmp(content, to) == 0;
}

/* The steps of a Sequence (key names them), or the object itself alone. */
static int steps_of(const cJSON *obj, const char *key, const cJSON **steps, int max)
{
    if (strcmp(type_of(obj), "Sequence") != 0) {
        steps[0] = obj;
        return 1;
    }
    int n = 0;
    const cJSON *step;
    cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(obj, key))
    {
        if (n == max)
            return -1;
        steps[n++] = step;
    }
    return n;
}

static bool has_step(const cJSON *obj, const char *key, const char *type)
{
    const cJSON *steps[16];
    int n = obj && !cJSON_IsNull(obj) ? steps_of(obj, key, steps, 16) : 0;
    for (int i = 0; i < n; i++)
        if (strcmp(type_of(steps[i]), type) == 0)
            return true;
    return false;
}

bool mr_spm_detect(const cJSON *root)
{
    const cJSON *normalizer = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (has_step(pre, "pretokenizers", "ByteLevel"))
        return false;
    return has_step(pre, "pretokenizers", "Metaspace") ||
           has_step(normalizer, "normalizers", "Prepend") ||
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
}

static int load_normalizer(mr_spm *s, const cJSON *normalizer, bool *replaces, char *why,
                           size_t whylen)
{
    if (!normalizer || cJSON_IsNull(normalizer))
        return MR_ENGINE_OK;
    const cJSON *steps[8];
    int n = steps_of(normalizer, "normalizers", steps, 8);
    if (n < 0) {
        snprintf(why, whylen, "the normalizer has too many steps");
        return MR_ENGINE_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        const char *prepend = string_of(steps[i], "prepend");
        if (strcmp(type_of(steps[i]), "Prepend") == 0 && prepend &&
            strcmp(prepend, metaspace) == 0 && i == 0 && n > 1) {
            s->prepend = MR_SPM_PREPEND_EVERY;
        } else if (is_replace(steps[i], " ", metaspace) && i == n - 1) {
            *replaces = true;
        } else {
            snprintf(why, whylen,
                     "normalizer step \"%s\" is not supported for SentencePiece-style BPE "
                     "(only Prepend \"\xE2\x96\x81\" then Replace \" \" -> \"\xE2\x96\x81\")",
                     type_of(steps[i]));
            return MR_ENGINE_EINVAL;
        }
    }
    return MR_ENGINE_OK;
}

static int load_metaspace(mr_spm *s, const cJSON *pre, char *why, size_t whylen)
{
    const char *replacement = string_of(pre, "replacement");
    const char *scheme = string_of(pre, "prepend_scheme");
    if (!replacement || strcmp(replacement, metaspace) != 0) {
        snprintf(why, whylen, "a Metaspace pre-tokenizer whose replacement is not "
                              "\"\xE2\x96\x81\" is not supported");
        return MR_ENGINE_EINVAL;
    }
    /* Files older than prepend_scheme say add_prefix_space, meaning "always". */
    if (!scheme)
        scheme = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space"))
                     ? "never"
                     : "always";
    if (strcmp(scheme, "first") == 0) {
        s->prepend = MR_SPM_PREPEND_FIRST;
    } else if (strcmp(scheme, "always") == 0) {
        s->prepend = MR_SPM_PREPEND_ALWAYS;
    } else if (strcmp(scheme, "never") == 0) {
        s->prepend = MR_SPM_PREPEND_NEVER;
    } else {
        snprintf(why, whylen, "Metaspace prepend_scheme \"%s\" is not supported", scheme);
        return MR_ENGINE_EINVAL;
    }
    s->split = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "split"));
    return MR_ENGINE_OK;
}

/* The decoder must undo the encoding: "▁" back to spaces, byte tokens back
 * to bytes, and at most a Strip of leading spaces, which decode applies to a
 * whole text. */
static int load_decoder(mr_spm *s, const cJSON *decoder, char *why, size_t whylen)
{
    const cJSON *steps[8];
    int n = decoder && !cJSON_IsNull(decoder) ? steps_of(decoder, "decoders", steps, 8) : 0;
    bool replace = false, fallback = false, fused = false;
    for (int i = 0; i < n; i++) {
        const char *type = type_of(steps[i]);
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(steps[i], "start");
        const cJSON *stop = cJSON_GetObjectItemCaseSensitive(steps[i], "stop");
        const char *content = string_of(steps[i], "content");
        /* Token by token until Fuse joins them; Strip after it cuts the
         * start of the whole text, before it the start of every token. */
        if (is_replace(steps[i], metaspace, " ") && !fused) {
            replace = true;
        } else if (strcmp(type, "ByteFallback") == 0 && !fused) {
            fallback = true;
        } else if (strcmp(type, "Fuse") == 0) {
            fused = true;
        } else if (strcmp(type, "Strip") == 0 && content && strcmp(content, " ") == 0 &&
                   cJSON_IsNumber(start) && start->valueint >= 0 && start->valueint <= 8 &&
                   cJSON_IsNumber(stop) && stop->valueint == 0 && i == n - 1 && fused) {
            s->strip_start = start->valueint;
        } else {
            snprintf(why, whylen,
                     "decoder step \"%s\" is not supported for SentencePiece-style BPE (only "
                     "Replace \"\xE2\x96\x81\" -> \" \", ByteFallback, then Fuse, then Strip "
                     "\" \" at the start)",
                     type);
            return MR_ENGINE_EINVAL;
        }
    }
    if (!replace || fallback != s->byte_fallback) {
        snprintf(why, whylen, "the decoder does not undo the encoding (it needs Replace "
                              "\"\xE2\x96\x81\" -> \" \", and ByteFallback exactly when the "
                              "model has byte_fallback)");
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

int mr_spm_load(mr_spm *s, const cJSON *root, char *why, size_t whylen)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    *s = (mr_spm){.prepend = MR_SPM_PREPEND_NEVER, .unk = -1};
    s->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    s->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    const char *prefix = string_of(model, "continuing_subword_prefix");
    const char *suffix = string_of(model, "end_of_word_suffix");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if ((prefix && *prefix) || (suffix && *suffix) ||
        (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)) {
        snprintf(why, whylen, "BPE continuing_subword_prefix, end_of_word_suffix and dropout "
                              "are not supported");
        return MR_ENGINE_EINVAL;
    }
    bool replaces = false;
    int rc = load_normalizer(s, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &replaces,
                             why, whylen);
    if (rc != MR_ENGINE_OK)
        return rc;
    if (pre && !cJSON_IsNull(pre)) {
        if (strcmp(type_of(pre), "Metaspace") != 0 || replaces ||
            s->prepend != MR_SPM_PREPEND_NEVER) {
            snprintf(why, whylen,
                     "pre-tokenizer \"%s\" is not supported for SentencePiece-style BPE (only "
                     "Metaspace, without a \"\xE2\x96\x81\" normalizer)",
                     type_of(pre));
            return MR_ENGINE_EINVAL;
        }
        rc = load_metaspace(s, pre, why, whylen);
    } else if (!replaces) {
        snprintf(why, whylen, "neither a normalizer nor a Metaspace pre-tokenizer turns spaces "
                              "into \"\xE2\x96\x81\"");
        rc = MR_ENGINE_EINVAL;
    }
    if (rc == MR_ENGINE_OK)
        rc = load_decoder(s, cJSON_GetObjectItemCaseSensitive(root, "decoder"), why, whylen);
    return rc;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
           : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "<0xXX>" (Hugging Face writes upper-case digits and decodes either):
 * the byte, or -1. */
static int byte_token(const char *piece, size_t len)
{
    if (len != 6 || memcmp(piece, "<0x", 3) != 0 || piece[5] != '>')
        return -1;
    int hi = hex_digit(piece[3]), lo = hex_digit(piece[4]);
    return hi >= 0 && lo >= 0 ? hi * 16 + lo : -1;
}

int mr_spm_set_ids(mr_spm *s, const mr_strmap *vocab, const char *unk_token, char *why,
                   size_t whylen)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        s->byte_ids[b] = mr_strmap_get(vocab, name, 6);
        if (s->byte_fallback && s->byte_ids[b] < 0) {
            snprintf(why, whylen, "byte_fallback is set but the vocabulary has no %s", name);
            return MR_ENGINE_EINVAL;
        }
    }
    s->unk = unk_token ? mr_strmap_get(vocab, unk_token, strlen(unk_token)) : -1;
    if (unk_token && s->unk < 0) {
        snprintf(why, whylen, "unk_token \"%s\" is not in the vocabulary", unk_token);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

size_t mr_spm_piece_bytes(const mr_spm *s, const char *piece, size_t len, char *out)
{
    int byte = s->byte_fallback ? byte_token(piece, len) : -1;
    if (byte >= 0) {
        out[0] = (char)byte;
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (len - i >= METASPACE_LEN && memcmp(piece + i, metaspace, METASPACE_LEN) == 0) {
            out[n++] = ' ';
            i += METASPACE_LEN;
        } else {
            out[n++] = piece[i++];
        }
    }
    return n;
}

int mr_spm_pieces(const mr_spm *s, const char *text, size_t len, bool first, mr_piece_fn piece,
                  void *ctx)
{
    if (len == 0)
        return MR_ENGINE_OK;
    /* Every byte may become "▁" (3 bytes), plus the prepended one. */
    char *buf = malloc(3 * len + METASPACE_LEN);
    if (!buf)
        return MR_ENGINE_ENOMEM;
    size_t n = 0;
    bool starts_with_space = text[0] == ' ' ||
                             (len >= METASPACE_LEN && memcmp(text, metaspace, METASPACE_LEN) == 0);
    if (s->prepend == MR_SPM_PREPEND_EVERY ||
        (!starts_with_space &&
         (s->prepend == MR_SPM_PREPEND_ALWAYS || (s->prepend == MR_SPM_PREPEND_FIRST && first)))) {
        memcpy(buf, metaspace, METASPACE_LEN);
        n = METASPACE_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, metaspace, METASPACE_LEN);
            n += METASPACE_LEN;
        } else {
            buf[n++] = text[i];
        }
    }
    int rc = MR_ENGINE_OK;
    size_t start = 0;
    /* Metaspace split, behaviour MergedWithNext: each "▁" opens a piece. */
    for (size_t i = 1; s->split && i + METASPACE_LEN <= n && rc == MR_ENGINE_OK; i++)
        if (memcmp(buf + i, metaspace, METASPACE_LEN) == 0) {
            rc = piece(buf + start, i - start, ctx);
            start = i;
        }
    if (rc == MR_ENGINE_OK)
        rc = piece(buf + start, n - start, ctx);
    free(buf);
    return rc;
}

/* The length of the UTF-8 character at s[0..n): 1 for a byte that does not
 * start a well-formed one, which then stands alone (and falls back to its
 * byte token). */
static size_t char_length(const unsigned char *s, size_t n)
{
    size_t need = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] <= 0xDF ? 2
                  : s[0] >= 0xE0 && s[0] <= 0xEF ? 3 : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 1;
    if (need > n)
        return 1;
    for (size_t j = 1; j < need; j++) {
        unsigned char lo = 0x80, hi = 0xBF;
        if (j == 1 && s[0] == 0xE0)
            lo = 0xA0;
        else if (j == 1 && s[0] == 0xED)
            hi = 0x9F;
        else if (j == 1 && s[0] == 0xF0)
            lo = 0x90;
        else if (j == 1 && s[0] == 0xF4)
            hi = 0x8F;
        if (s[j] < lo || s[j] > hi)
            return 1;
    }
    return need;
}

long mr_spm_symbols(const mr_spm *s, const mr_strmap *vocab, const char *piece, size_t len,
                    int32_t *sym, size_t *bad)
{
    long n = 0;
    bool after_unk = false;
    for (size_t i = 0; i < len;) {
        size_t clen = char_length((const unsigned char *)piece + i, len - i);
        int32_t id = mr_strmap_get(vocab, piece + i, clen);
        if (id >= 0) {
            sym[n++] = id;
            after_unk = false;
        } else if (s->byte_fallback) {
            for (size_t j = 0; j < clen; j++)
                sym[n++] = s->byte_ids[(unsigned char)piece[i + j]];
            after_unk = false;
        } else if (s->unk >= 0) {
            if (!(s->fuse_unk && after_unk))
                sym[n++] = s->unk;
            after_unk = true;
        } else {
            *bad = i;
            return -1;
        }
        i += clen;
    }
    return n;
}
