/* Private to engine/: what the tokenizer's files share -- a map from byte
 * strings to ids, the byte-level alphabet, the regex pre-split and the
 * rules of SentencePiece-style BPE. */
#ifndef MR_ENGINE_TOKENIZER_INTERNAL_H
#define MR_ENGINE_TOKENIZER_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
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
typedef int (*mr_piece_fn)(const char *piece, size_t len, void *ctx);

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
int mr_presplit_run(const mr_presplit *p, const char *text, size_t len, mr_piece_fn piece,
                    void *ctx);

/* ---- SentencePiece-style BPE (Llama 2, Mistral, Mixtral) ----
 * The vocabulary is text in which "\u2581" (LOWER ONE EIGHTH BLOCK, "▁")
 * stands for a space, plus one token "<0xXX>" per byte for characters the
 * vocabulary lacks (byte fallback).  A segment of text becomes "▁"-text
 * (a normalizer Prepend "▁" + Replace " " -> "▁", or a Metaspace
 * pre-tokenizer), is cut into characters, each its token or its bytes'
 * tokens, and merged by rank like byte-level BPE. */
typedef enum {
    MR_SPM_PREPEND_NEVER,
    MR_SPM_PREPEND_FIRST,  /* Metaspace "first": the segment at the text's start */
    MR_SPM_PREPEND_ALWAYS, /* Metaspace "always": every segment not starting with "▁" */
    MR_SPM_PREPEND_EVERY,  /* normalizer Prepend: every non-empty segment, unconditionally */
} mr_spm_prepend;

typedef struct {
    mr_spm_prepend prepend;
    bool split;          /* Metaspace split: a piece starts at every "▁" */
    bool byte_fallback;
    bool fuse_unk;
    int32_t unk;         /* the unknown token's id, or -1 */
    int32_t byte_ids[256]; /* the "<0xXX>" tokens, -1 where absent */
    int strip_start;     /* the decoder's Strip: spaces cut from a whole text's start */
} mr_spm;

/* Whether tokenizer.json describes SentencePiece-style BPE rather than
 * byte-level BPE: no ByteLevel step, and a "▁" normalizer, a Metaspace
 * pre-tokenizer or byte_fallback. */
bool mr_spm_detect(const cJSON *root);
/* Reads the normalizer, pre-tokenizer, decoder and model options of
 * tokenizer.json into s.  Anything else is refused: EINVAL with `why`
 * naming the component.  byte_ids and unk are filled later, from the
 * vocabulary (mr_spm_set_ids). */
int mr_spm_load(mr_spm *s, const cJSON *root, char *why, size_t whylen);
/* Finds the byte tokens and the unknown token in the vocabulary; EINVAL
 * when byte_fallback lacks one of the 256. */
int mr_spm_set_ids(mr_spm *s, const mr_strmap *vocab, const char *unk_token, char *why,
                   size_t whylen);
/* The bytes a vocabulary entry stands for: "▁" -> " ", and "<0xXX>" -> that
 * byte under byte_fallback.  out has room for len bytes; returns the count. */
size_t mr_spm_piece_bytes(const mr_spm *s, const char *piece, size_t len, char *out);
/* Calls `piece` with the "▁"-text of text[0..len), a segment between added
 * tokens; `first` when the segment starts the whole text.  The callback's
 * non-zero return, or MR_ENGINE_ENOMEM, stops it. */
int mr_spm_pieces(const mr_spm *s, const char *text, size_t len, bool first, mr_piece_fn piece,
                  void *ctx);
/* The first symbols of a piece: each character's id, or its bytes' ids
 * (byte fallback), or the unknown token (consecutive ones fused under
 * fuse_unk).  sym has room for len ids; returns how many, or -1 when a
 * character has none (its offset in *bad). */
long mr_spm_symbols(const mr_spm *s, const mr_strmap *vocab, const char *piece, size_t len,
                    int32_t *sym, size_t *bad);

/* How many leading spaces decoding a whole text drops (the decoder's Strip:
 * 1 for Llama 2 and Mistral, whose encoding put a "▁" in front; 0 for
 * byte-level BPE). */
struct mr_tokenizer;
int mr_tokenizer_strip_start(const struct mr_tokenizer *t);

#endif
