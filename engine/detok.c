/*
 * Streaming decode.  A byte-level token can end in the middle of a UTF-8
 * character (an emoji is often two or three tokens), so bytes wait in the
 * state until their character is complete.  Bytes that can never become a
 * character are replaced by U+FFFD, one per maximal invalid subpart, which
 * is what Rust's String::from_utf8_lossy (and so Hugging Face) does.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/grow.h"
#include "engine/tokenizer_internal.h"

static const char replacement[] = "\xEF\xBF\xBD";

/* The range the second byte of a sequence may take after `lead`; the
 * narrow ranges rule out overlong forms, surrogates and code points past
 * U+10FFFF. */
static void second_byte_range(unsigned char lead, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (lead == 0xE0)
        *lo = 0xA0;
    else if (lead == 0xED)
        *hi = 0x9F;
    else if (lead == 0xF0)
        *lo = 0x90;
    else if (lead == 0xF4)
        *hi = 0x8F;
}

static int sequence_length(unsigned char lead)
{
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead >= 0xE0 && lead <= 0xEF)
        return 3;
    if (lead >= 0xF0 && lead <= 0xF4)
        return 4;
    return 0;
}

/* How many bytes at s[0..n) form the next unit: > 0 a whole character,
 * < 0 an invalid subpart of that many bytes, 0 an incomplete but so far
 * valid character. */
static int next_unit(const unsigned char *s, size_t n)
{
    int need = sequence_length(s[0]);
    if (need == 0)
        return -1;
    for (int j = 1; j < need; j++) {
        if ((size_t)j >= n)
            return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (j == 1)
            second_byte_range(s[0], &lo, &hi);
        if (s[j] < lo || s[j] > hi)
            return -j;
    }
    return need;
}

static void append(char *out, size_t *len, const void *bytes, size_t n)
{
    memcpy(out + *len, bytes, n);
    *len += n;
    out[*len] = '\0';
}

/* Drops up to `max` leading spaces from the start of a whole text, which
 * is text[0..*len - begin) of out now. */
static void strip_start(mr_detok *state, int max, char *text, size_t *len, size_t begin)
{
    size_t n = *len - begin, cut = 0;
    if (n == 0)
        return;
    while (cut < n && text[cut] == ' ' && state->stripped < max) {
        cut++;
        state->stripped++;
    }
    if (cut < n)
        state->started = true;
    memmove(text, text + cut, n - cut + 1); /* and the NUL */
    *len -= cut;
}

int mr_detok_push(const mr_tokenizer *tok, mr_detok *state, int32_t id, char **out,
                  size_t *len, size_t *cap)
{
    size_t n_token = 0;
    const char *token = "";
    /* An id the tokenizer lacks (a config's vocab_size padded past the
     * tokenizer's, as Qwen3's 151936 over 151669) adds no text, as Hugging
     * Face's decode skips such ids. */
    if (id >= 0 && !(token = mr_tokenizer_token_bytes(tok, id, &n_token)))
        token = "", n_token = 0;
    size_t n = (size_t)state->n_pending + n_token;
    unsigned char stack[256], *work = n <= sizeof stack ? stack : malloc(n);
    /* Each byte comes out as itself or within a 3-byte U+FFFD, plus a NUL. */
    if (!work || !mr_grow((void **)out, cap, *len + 3 * n + 1, 1)) {
        if (work != stack)
            free(work);
        return MR_ENGINE_ENOMEM;
    }
    memcpy(work, state->pending, (size_t)state->n_pending);
    memcpy(work + state->n_pending, token, n_token);
    state->n_pending = 0;
    size_t begin = *len;
    for (size_t i = 0; i < n;) {
        int unit = next_unit(work + i, n - i);
        if (unit > 0) {
            append(*out, len, work + i, (size_t)unit);
            i += (size_t)unit;
        } else if (unit < 0 || id < 0) {
            /* At the flush an incomplete character will never complete. */
            append(*out, len, replacement, 3);
            i += unit < 0 ? (size_t)-unit : n - i;
        } else {
            memcpy(state->pending, work + i, n - i);
            state->n_pending = (int)(n - i);
            break;
        }
    }
    if (work != stack)
        free(work);
    if (state->whole && !state->started)
        strip_start(state, mr_tokenizer_strip_start(tok), *out + begin, len, begin);
    return MR_ENGINE_OK;
}
