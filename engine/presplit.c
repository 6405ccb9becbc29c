/*
 * The pre-tokenizer's regex split, through PCRE2 in Unicode mode with JIT.
 *
 * Hugging Face's Split pre-tokenizer with behaviour "Isolated" cuts the text
 * into the regex's matches and the gaps between them; a Sequence of Splits
 * (DeepSeek-V3 has several) cuts each piece of one split again with the
 * next pattern, each piece being a whole subject so that lookaheads such as
 * \s+(?!\S) see its end.  Invalid UTF-8 does not fail the match: such bytes
 * never match and fall into gaps, which the byte-level BPE encodes as the
 * bytes they are.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "engine/tokenizer_internal.h"

#define MAX_PATTERNS 8

const char mr_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct mr_presplit {
    pcre2_code *code[MAX_PATTERNS];
    size_t n;
};

void mr_presplit_free(mr_presplit *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        pcre2_code_free(p->code[i]);
    free(p);
}

int mr_presplit_create(const char *const *patterns, size_t n, mr_presplit **out, char *err,
                       size_t errlen)
{
    if (n == 0 || n > MAX_PATTERNS) {
        snprintf(err, errlen, "the pre-tokenizer has %zu split patterns; 1 to %d are supported",
                 n, MAX_PATTERNS);
        return MR_ENGINE_EINVAL;
    }
    mr_presplit *p = calloc(1, sizeof *p);
    if (!p)
        return MR_ENGINE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int code;
        PCRE2_SIZE at;
        p->code[i] = pcre2_compile((PCRE2_SPTR)patterns[i], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &at,
                                   NULL);
        if (!p->code[i]) {
            PCRE2_UCHAR why[160];
            pcre2_get_error_message(code, why, sizeof why);
            snprintf(err, errlen, "pre-tokenizer pattern %zu does not compile at offset %zu: %s",
                     i + 1, (size_t)at, (const char *)why);
            mr_presplit_free(p);
            return MR_ENGINE_EINVAL;
        }
        p->n++;
        /* JIT is an optimisation: where it is unavailable the interpreter
         * gives the same matches. */
        pcre2_jit_compile(p->code[i], PCRE2_JIT_COMPLETE);
    }
    *out = p;
    return MR_ENGINE_OK;
}

typedef struct {
    const mr_presplit *p;
    pcre2_match_data *match[MAX_PATTERNS];
    mr_piece_fn piece;
    void *ctx;
} split_run;

static int split_level(split_run *r, size_t level, const char *text, size_t len)
{
    if (len == 0)
        return 0;
    if (level == r->p->n)
        return r->piece(text, len, r->ctx);
    size_t gap = 0, offset = 0;
    while (offset < len) {
        int rc = pcre2_match(r->p->code[level], (PCRE2_SPTR)text, len, offset, 0,
                             r->match[level], NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->match[level]);
        size_t start = ov[0], end = ov[1];
        if (end == start) { /* an empty match: step over one byte */
            offset = start + 1;
            continue;
        }
        int stop = split_level(r, level + 1, text + gap, start - gap);
        if (!stop)
            stop = split_level(r, level + 1, text + start, end - start);
        if (stop)
            return stop;
        gap = offset = end;
    }
    return split_level(r, level + 1, text + gap, len - gap);
}

int mr_presplit_run(const mr_presplit *p, const char *text, size_t len, mr_piece_fn piece,
                    void *ctx)
{
    split_run r = {.p = p, .piece = piece, .ctx = ctx};
    int rc = 0;
    for (size_t i = 0; i < p->n && rc == 0; i++)
        if (!(r.match[i] = pcre2_match_data_create_from_pattern(p->code[i], NULL)))
            rc = MR_ENGINE_ENOMEM;
    if (rc == 0)
        rc = split_level(&r, 0, text, len);
    for (size_t i = 0; i < p->n; i++)
        pcre2_match_data_free(r.match[i]);
    return rc;
}
