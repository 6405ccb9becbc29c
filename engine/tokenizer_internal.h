/* Private to engine/: what the tokenizer's files share -- a map from byte
 * strings to ids, the byte-level alphabet and the regex pre-split. */
#ifndef MR_ENGINE_TOKENIZER_INTERNAL_H
#define MR_ENGINE_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* ---- byte string -> int32 map (open addressing; keys are copied) ---- */
typedef struct {
    char *key;
    uint32_t len;
    int32_t value;
} mr_strmap_slot;

typedef struct {
    mr_strmap_slot *slots;
    size_t mask;  /* capacity - 1, a power of two */
    size_t count;
} mr_strmap;

int mr_strmap_init(mr_strmap *m, size_t expected);
void mr_strmap_free(mr_strmap *m);
/* The value of `key`, or -1. */
int32_t mr_strmap_get(const mr_strmap *m, const char *key, size_t len);
/* Sets key -> value (replacing); -1 when out of memory. */
int mr_strmap_put(mr_strmap *m, const char *key, size_t len, int32_t value);

/* ---- byte-level alphabet (GPT-2's bytes_to_unicode) ----
 * Every byte is shown as a printable code point so that vocabularies are
 * text: printable Latin-1 bytes stand for themselves, the others for
 * U+0100 upwards in byte order.  Vocab and merges in tokenizer.json are
 * written in this alphabet; the tokenizer converts them back to bytes. */
uint32_t mr_byte_to_codepoint(unsigned char byte);
/* Decodes a byte-level string (UTF-8 of alphabet code points) into the
 * bytes it stands for; out has room for len bytes.  Returns the byte count,
 * or -1 when a code point is outside the alphabet. */
long mr_byte_level_decode(const char *text, size_t len, char *out);
/* Encodes bytes into the alphabet (at most 2 UTF-8 bytes each); out has
 * room for 2 * len bytes.  Returns the length written. */
size_t mr_byte_level_encode(const char *bytes, size_t len, char *out);

/* ---- regex pre-split (PCRE2) ---- */
typedef struct mr_presplit mr_presplit;

/* Qwen2's pattern, also what make-model's tokenizers use. */
extern const char mr_qwen2_pattern[];

/* Compiles one or more patterns applied in sequence, each splitting the
 * pieces of the previous one with Hugging Face's "Isolated" behaviour: the
 * matches and the gaps between them become pieces. */
int mr_presplit_create(const char *const *patterns, size_t n, mr_presplit **out, char *err,
                       size_t errlen);
void mr_presplit_free(mr_presplit *p);

/* Calls `piece` for every piece of text[0..len), in order.  A non-zero
 * return from the callback stops the split and is returned. */
typedef int (*mr_piece_fn)(const char *piece, size_t len, void *ctx);
int mr_presplit_run(const mr_presplit *p, const char *text, size_t len, mr_piece_fn piece,
                    void *ctx);

#endif
