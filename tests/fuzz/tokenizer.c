/*
 * Fuzz target: a Hugging Face tokenizer.json (engine/tokenizer.c, sentencepiece_bpe.c,
 * presplit.c, detok.c): vocabulary, merges, added tokens, normalizer and
 * pre-tokenizer regexes.  A tokenizer that loads then encodes a fixed text
 * and the input's own bytes, and decodes what it got: every id it hands
 * out must stand for bytes, or a completion could not be written.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/fuzz/fuzz.h"

/* Added tokens, letters, digits, blanks, newlines, accents, an emoji, a
 * CJK word and a byte that is not UTF-8. */
static const char sample[] = "<|im_start|>user\nHello, wörld! It's 2024 \xf0\x9f\x98\x80 日本語"
                             "  \t\r\n\n x\xff<|im_end|>\n";
/* The input is encoded too, up to this many bytes: longer adds little. */
#define MAX_TEXT 1024

static const char *dir;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dir = mr_fuzz_tmpdir();
    return 0;
}

static void round_trip(const mr_tokenizer *tok, const char *text, size_t len)
{
    mr_tokens ids = {0};
    char err[512], *out = NULL;
    size_t out_len = 0, cap = 0;
    if (mr_tokenizer_encode(tok, text, len, &ids, err, sizeof err) == MR_ENGINE_OK) {
        mr_detok state = {0};
        for (size_t i = 0; i < ids.count; i++) {
            size_t n;
            mr_fuzz_check(mr_tokenizer_token_bytes(tok, ids.ids[i], &n) != NULL,
                          "every id encoded stands for bytes");
            mr_fuzz_check(mr_detok_push(tok, &state, ids.ids[i], &out, &out_len, &cap) ==
                              MR_ENGINE_OK,
                          "every id encoded decodes");
        }
        mr_fuzz_check(mr_detok_push(tok, &state, -1, &out, &out_len, &cap) == MR_ENGINE_OK,
                      "the decoder flushes");
    }
    free(out);
    mr_tokens_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = mr_fuzz_write(dir, "tokenizer.json", data, size);
    mr_tokenizer *tok;
    char err[1024];
    int rc = mr_tokenizer_load(path, &tok, err, sizeof err);
    free(path);
    if (rc != MR_ENGINE_OK) {
        mr_fuzz_check(err[0], "a refused tokenizer says why");
        return 0;
    }
    const int32_t *eos;
    (void)mr_tokenizer_eos(tok, &eos);
    (void)mr_tokenizer_find(tok, "<|im_end|>");
    mr_fuzz_check(mr_tokenizer_vocab_size(tok) > 0, "a tokenizer has a vocabulary");
    round_trip(tok, sample, sizeof sample - 1);
    round_trip(tok, (const char *)data, size < MAX_TEXT ? size : MAX_TEXT);
    mr_tokenizer_free(tok);
    return 0;
}
