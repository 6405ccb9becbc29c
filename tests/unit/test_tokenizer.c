/*
 * The tokenizer on the tiny model's vocabulary: round trips of arbitrary
 * UTF-8, streaming decode, raw bytes, special tokens, training, and the
 * errors a damaged tokenizer.json gives.  The comparison with Hugging Face
 * on Qwen3's vocabulary is in tests/system/test_tokenizer_hf.c.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "engine/engine.h"
#include "engine/testmodel/testmodel.h"
#include "tests/common/fixture.h"

static mr_tokenizer *tok;
static char err[1024];

static void setup(void)
{
    cr_assert_eq(mr_tokenizer_load(mr_test_tiny_model(), &tok, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
}

static void teardown(void)
{
    mr_tokenizer_free(tok);
}

TestSuite(tokenizer, .init = setup, .fini = teardown);

static mr_tokens encode(const char *text, size_t len)
{
    mr_tokens t = {0};
    cr_assert_eq(mr_tokenizer_encode(tok, text, len, &t, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    return t;
}

/* Decodes one id at a time, checking that every piece that comes out is
 * whole UTF-8. */
static char *decode_streaming(const mr_tokens *t, size_t *len)
{
    char *out = NULL;
    size_t cap = 0;
    mr_detok state = {0};
    *len = 0;
    for (size_t i = 0; i <= t->count; i++) {
        size_t before = *len;
        cr_assert_eq(mr_detok_push(tok, &state, i < t->count ? t->ids[i] : -1, &out, len, &cap),
                     MR_ENGINE_OK);
        utf8proc_int32_t cp;
        for (size_t at = before; at < *len;) {
            utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)out + at,
                                                  (utf8proc_ssize_t)(*len - at), &cp);
            cr_assert(n > 0, "token %zu let out a broken character", i);
            at += (size_t)n;
        }
    }
    return out ? out : strdup("");
}

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static size_t put_codepoint(char *out, uint32_t cp)
{
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

Test(tokenizer, arbitrary_utf8_round_trips_to_its_nfc_form)
{
    uint64_t seed = 42;
    int rounds = 400 * (getenv("MR_TEST_SCALE") ? atoi(getenv("MR_TEST_SCALE")) : 1);
    for (int round = 0; round < rounds; round++) {
        char text[512];
        size_t len = 0;
        for (int k = (int)(next(&seed) % 40); k > 0; k--) {
            uint32_t cp;
            do { /* any scalar value but surrogates and NUL */
                uint64_t r = next(&seed) % 4;
                cp = r == 0   ? (uint32_t)(next(&seed) % 0x80)
                     : r == 1 ? (uint32_t)(next(&seed) % 0x800)
                     : r == 2 ? (uint32_t)(next(&seed) % 0x10000)
                              : (uint32_t)(next(&seed) % 0x110000);
            } while (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff));
            len += put_codepoint(text + len, cp);
        }
        text[len] = '\0';
        mr_tokens t = encode(text, len);
        size_t n;
        char *back = decode_streaming(&t, &n);
        char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text);
        cr_assert_eq(n, strlen(nfc), "round %d: %zu bytes back for %zu", round, n, strlen(nfc));
        cr_assert_eq(memcmp(back, nfc, n), 0, "round %d differs", round);
        free(nfc);
        free(back);
        mr_tokens_free(&t);
    }
}

Test(tokenizer, invalid_utf8_is_encoded_as_its_bytes)
{
    const char text[] = "ok \xff\xfe then \xc3 and \xe2\x82 end \xf0\x9f\x98\x80";
    size_t len = sizeof text - 1;
    mr_tokens t = encode(text, len);
    char joined[128];
    size_t n = 0;
    for (size_t i = 0; i < t.count; i++) {
        size_t piece;
        const char *bytes = mr_tokenizer_token_bytes(tok, t.ids[i], &piece);
        cr_assert(bytes && n + piece <= sizeof joined);
        memcpy(joined + n, bytes, piece);
        n += piece;
    }
    cr_assert_eq(n, len);
    cr_assert_eq(memcmp(joined, text, len), 0);
    /* Decoding replaces each maximal invalid subpart with one U+FFFD. */
    char *back = decode_streaming(&t, &n);
    cr_assert_str_eq(back, "ok \xef\xbf\xbd\xef\xbf\xbd then \xef\xbf\xbd and \xef\xbf\xbd end "
                           "\xf0\x9f\x98\x80");
    free(back);
    mr_tokens_free(&t);
}

/* A model's vocab_size may pass the tokenizer's (Qwen3: 151936 over
 * 151669): a sampled padding id adds no text and does not fail the
 * sequence, as Hugging Face's decode skips ids it does not know. */
Test(tokenizer, ids_past_the_tokenizer_decode_to_nothing)
{
    mr_tokens t = encode("hello world", 11);
    int32_t past = mr_tokenizer_vocab_size(tok);
    mr_tokens padded = {.ids = malloc((t.count + 2) * sizeof(int32_t)), .count = t.count + 2};
    padded.ids[0] = past;
    memcpy(padded.ids + 1, t.ids, t.count * sizeof(int32_t));
    padded.ids[t.count + 1] = past + 1000;
    size_t n;
    char *back = decode_streaming(&padded, &n);
    cr_assert_str_eq(back, "hello world");
    free(back);
    mr_tokens_free(&padded);
    mr_tokens_free(&t);
}

Test(tokenizer, special_tokens_are_matched_in_text)
{
    int32_t start = mr_tokenizer_find(tok, "<|im_start|>"), end = mr_tokenizer_find(tok, "<|im_end|>");
    cr_assert(start >= 0 && end >= 0 && start != end);
    const char *text = "<|im_start|>user\nHi<|im_end|>";
    mr_tokens t = encode(text, strlen(text));
    cr_assert(t.count >= 4);
    cr_assert_eq(t.ids[0], start);
    cr_assert_eq(t.ids[t.count - 1], end);
    const int32_t *eos;
    cr_assert_eq(mr_tokenizer_eos(tok, &eos), 1);
    cr_assert_eq(eos[0], end, "tokenizer_config.json names <|im_end|> as eos_token");
    /* Half a special token is plain text. */
    mr_tokens half = encode("<|im_sta", 8);
    for (size_t i = 0; i < half.count; i++)
        cr_assert_neq(half.ids[i], start);
    mr_tokens_free(&t);
    mr_tokens_free(&half);
}

Test(tokenizer, topic_words_are_whole_tokens)
{
    static const char *const words[] = {" garlic", " function", " passport", " recipe"};
    for (size_t i = 0; i < 4; i++) {
        mr_tokens t = encode(words[i], strlen(words[i]));
        cr_assert_eq(t.count, 1, "'%s' took %zu tokens", words[i], t.count);
        mr_tokens_free(&t);
    }
}

Test(tokenizer, training_is_deterministic_and_fills_the_vocabulary)
{
    static const char *const specials[] = {"<|endoftext|>"};
    const char *corpus = "the cat sat on the mat; the cat ate the rat. 123 456 the end\n";
    char *a = NULL, *b = NULL;
    cr_assert_eq(mr_tokenizer_train(corpus, strlen(corpus), 270, specials, 1, &a, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    cr_assert_eq(mr_tokenizer_train(corpus, strlen(corpus), 270, specials, 1, &b, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    cr_assert_str_eq(a, b);
    free(b);
    b = NULL;
    char *dir = mr_test_tmpdir();
    char *path = mr_test_write(dir, "tokenizer.json", a, (size_t)-1);
    mr_tokenizer *trained;
    cr_assert_eq(mr_tokenizer_load(path, &trained, err, sizeof err), MR_ENGINE_OK, "%s", err);
    cr_assert_eq(mr_tokenizer_vocab_size(trained), 270);
    cr_assert_eq(mr_tokenizer_find(trained, "<|endoftext|>"), 269);
    mr_tokens t = {0};
    cr_assert_eq(mr_tokenizer_encode(trained, " the cat", 8, &t, err, sizeof err), MR_ENGINE_OK);
    cr_assert_eq(t.count, 2, "' the' and ' cat' are frequent enough to be merged");
    mr_tokens_free(&t);
    mr_tokenizer_free(trained);
    cr_assert_eq(mr_tokenizer_train(corpus, strlen(corpus), 100, specials, 1, &b, err, sizeof err),
                 MR_ENGINE_EINVAL);
    cr_assert(strstr(err, "at least 257 tokens"), "%s", err);
    cr_assert_null(b);
    free(a);
    free(path);
    mr_test_rmtree(dir);
    free(dir);
}

/* A tokenizer.json with one part replaced by `model` or `pre`. */
static void expect_load_error(const char *model, const char *pre, const char *normalizer,
                              const char *expect)
{
    char *dir = mr_test_tmpdir();
    char json[2048];
    snprintf(json, sizeof json,
             "{\"added_tokens\": [], \"normalizer\": %s, \"pre_tokenizer\": %s, \"model\": %s}",
             normalizer, pre, model);
    char *path = mr_test_write(dir, "tokenizer.json", json, (size_t)-1);
    mr_tokenizer *t = NULL;
    cr_assert_eq(mr_tokenizer_load(dir, &t, err, sizeof err), MR_ENGINE_EINVAL, "%s loaded",
                 json);
    cr_assert(strstr(err, path), "the message names the file: %s", err);
    cr_assert(strstr(err, expect), "expected '%s' in: %s", expect, err);
    free(path);
    mr_test_rmtree(dir);
    free(dir);
}

#define BYTE_LEVEL "{\"type\": \"ByteLevel\"}"
#define GOOD_MODEL "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

Test(tokenizer, damaged_tokenizer_json_gives_clear_errors)
{
    expect_load_error("{\"type\": \"WordPiece\", \"vocab\": {}, \"merges\": []}", BYTE_LEVEL,
                      "null", "model type \"WordPiece\" is not supported");
    expect_load_error("{\"type\": \"BPE\", \"vocab\": {}}", BYTE_LEVEL, "null",
                      "needs a \"vocab\" object and a \"merges\" array");
    expect_load_error("{\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}", BYTE_LEVEL,
                      "null", "merge 1 names a token that is not in the vocabulary");
    expect_load_error("{\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"ab\"]}", BYTE_LEVEL,
                      "null", "merge 1 is neither");
    expect_load_error("{\"vocab\": {\"a\": -3}, \"merges\": []}", BYTE_LEVEL, "null",
                      "not an integer in range");
    expect_load_error("{\"vocab\": {\"\\u0100\\u0400\": 0}, \"merges\": []}", BYTE_LEVEL, "null",
                      "is not in the byte-level alphabet");
    expect_load_error(GOOD_MODEL, "{\"type\": \"Metaspace\"}", "null",
                      "a Metaspace pre-tokenizer whose replacement is not");
    expect_load_error(GOOD_MODEL,
                      "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                      "\"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, "
                      "{\"type\": \"ByteLevel\", \"use_regex\": false}]}",
                      "null", "pattern 1 does not compile");
    expect_load_error(GOOD_MODEL, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
                                  "\"behavior\": \"Isolated\"}",
                      "null", "has no ByteLevel step");
    expect_load_error(GOOD_MODEL, BYTE_LEVEL, "{\"type\": \"Lowercase\"}",
                      "normalizer \"Lowercase\" is not supported for byte-level BPE");
}

/* SentencePiece-style BPE (Llama 2, Mistral): what is not that family's
 * shape is refused by name. */
#define SPM_MODEL(fallback)                                                                    \
    "{\"type\": \"BPE\", \"byte_fallback\": " fallback ", \"unk_token\": \"<unk>\", "          \
    "\"vocab\": {\"<unk>\": 0, \"a\": 1, \"\u2581\": 2}, \"merges\": []}"
#define SPM_NORMALIZER                                                                         \
    "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "           \
    "\"\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "     \
    "\"\u2581\"}]}"
#define SPM_DECODER                                                                            \
    "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": " \
    "\"\u2581\"}, \"content\": \" \"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "          \
    "\"content\": \" \", \"start\": 1, \"stop\": 0}]}"

/* expect_load_error with a decoder as well. */
static void expect_spm_error(const char *model, const char *pre, const char *normalizer,
                             const char *decoder, const char *expect)
{
    char *dir = mr_test_tmpdir();
    char json[2048];
    snprintf(json, sizeof json,
             "{\"added_tokens\": [], \"normalizer\": %s, \"pre_tokenizer\": %s, "
             "\"decoder\": %s, \"model\": %s}",
             normalizer, pre, decoder, model);
    char *path = mr_test_write(dir, "tokenizer.json", json, (size_t)-1);
    mr_tokenizer *t = NULL;
    int rc = mr_tokenizer_load(dir, &t, err, sizeof err);
    if (!expect) {
        cr_assert_eq(rc, MR_ENGINE_OK, "%s: %s", json, err);
        mr_tokens ids = {0};
        cr_assert_eq(mr_tokenizer_encode(t, "a a", 3, &ids, err, sizeof err), MR_ENGINE_OK);
        /* "▁a▁a": the characters, no merges; "<unk>" for nothing here. */
        cr_assert(ids.count == 4 && ids.ids[0] == 2 && ids.ids[1] == 1 && ids.ids[2] == 2 &&
                  ids.ids[3] == 1);
        mr_tokens_free(&ids);
        /* A whole text loses the space its encoding put in front (the
         * decoder's Strip); a continuation, such as a completion after its
         * prompt, keeps it. */
        char *out = NULL;
        size_t len = 0, cap = 0;
        mr_detok whole = {.whole = true}, continued = {0};
        for (int32_t id = 2; id > 0; id--)
            cr_assert_eq(mr_detok_push(t, &whole, id, &out, &len, &cap), MR_ENGINE_OK);
        cr_assert_str_eq(out, "a");
        len = 0;
        for (int32_t id = 2; id > 0; id--)
            cr_assert_eq(mr_detok_push(t, &continued, id, &out, &len, &cap), MR_ENGINE_OK);
        cr_assert_str_eq(out, " a");
        free(out);
        mr_tokenizer_free(t);
    } else {
        cr_assert_eq(rc, MR_ENGINE_EINVAL, "%s loaded", json);
        cr_assert(strstr(err, path), "the message names the file: %s", err);
        cr_assert(strstr(err, expect), "expected '%s' in: %s", expect, err);
    }
    free(path);
    mr_test_rmtree(dir);
    free(dir);
}

Test(tokenizer, sentencepiece_parts_outside_the_family_are_refused)
{
    expect_spm_error(SPM_MODEL("false"), "null", SPM_NORMALIZER, SPM_DECODER, NULL);
    expect_spm_error(SPM_MODEL("true"), "null", SPM_NORMALIZER,
                     "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
                     "\"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"}, "
                     "{\"type\": \"ByteFallback\"}]}",
                     "byte_fallback is set but the vocabulary has no <0x00>");
    expect_spm_error(SPM_MODEL("false"), "null",
                     "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
                     "\"prepend\": \"\u2581\"}, {\"type\": \"NFKC\"}]}",
                     SPM_DECODER, "normalizer step \"NFKC\" is not supported");
    expect_spm_error(SPM_MODEL("false"), "{\"type\": \"Whitespace\"}", SPM_NORMALIZER,
                     SPM_DECODER, "pre-tokenizer \"Whitespace\" is not supported");
    expect_spm_error(SPM_MODEL("false"),
                     "{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", "
                     "\"prepend_scheme\": \"sometimes\"}",
                     "null", SPM_DECODER, "prepend_scheme \"sometimes\" is not supported");
    expect_spm_error(SPM_MODEL("false"), "null", SPM_NORMALIZER,
                     "{\"type\": \"Metaspace\", \"replacement\": \"\u2581\"}",
                     "decoder step \"Metaspace\" is not supported");
    expect_spm_error(SPM_MODEL("false"), "null", SPM_NORMALIZER, "null",
                     "the decoder does not undo the encoding");
    /* Before Fuse, Strip would cut every token's space, not the text's. */
    expect_spm_error(SPM_MODEL("false"), "null", SPM_NORMALIZER,
                     "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
                     "\"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"}, "
                     "{\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}",
                     "decoder step \"Strip\" is not supported");
    expect_spm_error(SPM_MODEL("false"), "null",
                     "{\"type\": \"Prepend\", \"prepend\": \"\u2581\"}", SPM_DECODER,
                     "normalizer step \"Prepend\" is not supported");
}

/* An empty vocabulary entry does no harm: no piece is ever empty.  Loading
 * it once copied zero bytes from NULL, which UBSan reports (tests/fuzz). */
Test(tokenizer, empty_vocabulary_entry_loads)
{
    char *dir = mr_test_tmpdir();
    free(mr_test_write(dir, "tokenizer.json",
                       "{\"model\": {\"vocab\": {\"\": 0, \"a\": 1}, \"merges\": []}, "
                       "\"pre_tokenizer\": " BYTE_LEVEL "}",
                       (size_t)-1));
    mr_tokenizer *t = NULL;
    cr_assert_eq(mr_tokenizer_load(dir, &t, err, sizeof err), MR_ENGINE_OK, "%s", err);
    mr_tokens ids = {0};
    cr_assert_eq(mr_tokenizer_encode(t, "a", 1, &ids, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    cr_assert(ids.count == 1 && ids.ids[0] == 1);
    mr_tokens_free(&ids);
    mr_tokenizer_free(t);
    mr_test_rmtree(dir);
    free(dir);
}

Test(tokenizer, broken_json_names_the_line)
{
    char *dir = mr_test_tmpdir();
    free(mr_test_write(dir, "tokenizer.json", "{\n\"model\": {\n\"vocab\": [,\n}", (size_t)-1));
    mr_tokenizer *t = NULL;
    cr_assert_eq(mr_tokenizer_load(dir, &t, err, sizeof err), MR_ENGINE_EINVAL);
    cr_assert(strstr(err, "tokenizer.json:3: not valid JSON"), "%s", err);
    mr_test_rmtree(dir);
    free(dir);
}
