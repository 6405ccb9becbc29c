/*
 * Template source to tokens, with jinja2's whitespace control as
 * transformers configures it: `{%-`/`-%}` (and the same on `{{ }}`, `{# #}`)
 * strip all whitespace on that side; lstrip_blocks strips the spaces and
 * tabs before a `{%` or `{#` that starts its line (not after `{%+`);
 * trim_blocks drops the newline right after `%}` or `#}`; a single
 * newline at the end of the source is dropped (keep_trailing_newline off).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

typedef struct {
    const char *src;
    size_t len, pos;
    size_t at;         /* where line and col were counted to */
    int line, col;     /* of `at` */
    tpl_arena *arena;
    tpl_tokens *out;
    char *err;
    size_t errlen;
} lexer;

static void locate(lexer *lx, size_t pos, int *line, int *col)
{
    if (pos < lx->at) { /* only ever forward, but be safe */
        lx->at = 0;
        lx->line = lx->col = 1;
    }
    for (; lx->at < pos; lx->at++) {
        if (lx->src[lx->at] == '\n') {
            lx->line++;
            lx->col = 1;
        } else if (((unsigned char)lx->src[lx->at] & 0xC0) != 0x80) {
            lx->col++;
        }
    }
    *line = lx->line;
    *col = lx->col;
}

static int fail(lexer *lx, size_t pos, const char *what)
{
    int line, col;
    locate(lx, pos, &line, &col);
    snprintf(lx->err, lx->errlen, "line %d, column %d: %s", line, col, what);
    return MR_TEMPLATE_EINVAL;
}

static tpl_token *push(lexer *lx, tpl_token_kind kind, size_t pos, const char *text, size_t len)
{
    tpl_tokens *t = lx->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        tpl_token *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return NULL;
        t->v = v;
        t->cap = cap;
    }
    char *copy = tpl_strndup(lx->arena, text, len);
    if (!copy)
        return NULL;
    tpl_token *tk = &t->v[t->n++];
    *tk = (tpl_token){.kind = kind, .text = copy, .len = len};
    locate(lx, pos, &tk->line, &tk->col);
    return tk;
}

#define PUSH(lx, kind, pos, text, len)                                                       \
    do {                                                                                     \
        if (!push(lx, kind, pos, text, len)) {                                               \
            snprintf((lx)->err, (lx)->errlen, "out of memory");                              \
            return MR_TEMPLATE_ENOMEM;                                                       \
        }                                                                                    \
    } while (0)

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Appends the UTF-8 of code point cp. */
static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The character a one-letter escape stands for; 0 for none. */
static char simple_escape(char e)
{
    switch (e) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'v': return '\v';
    case 'a': return '\a';
    case '\\': case '\'': case '"': return e;
    default: return 0;
    }
}

/* A string literal at lx->pos, its escapes decoded as Python decodes them. */
static int lex_string(lexer *lx)
{
    size_t start = lx->pos;
    char quote = lx->src[lx->pos++];
    char *o = malloc(lx->len - start + 1); /* decoding never grows it */
    if (!o) {
        snprintf(lx->err, lx->errlen, "out of memory");
        return MR_TEMPLATE_ENOMEM;
    }
    size_t n = 0;
    while (lx->pos < lx->len && lx->src[lx->pos] != quote) {
        char c = lx->src[lx->pos++];
        if (c != '\\' || lx->pos >= lx->len) {
            o[n++] = c;
            continue;
        }
        char e = lx->src[lx->pos++];
        int hex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        char simple = simple_escape(e);
        if (simple || e == '0') { /* \0 is a NUL */
            o[n++] = simple;
        } else if (hex && lx->pos + (size_t)hex <= lx->len) {
            char digits[9] = {0};
            memcpy(digits, lx->src + lx->pos, (size_t)hex);
            char *end;
            unsigned long cp = strtoul(digits, &end, 16);
            if (*end || cp > 0x10FFFF) {
                free(o);
                return fail(lx, lx->pos - 2, "a bad escape in a string");
            }
            lx->pos += (size_t)hex;
            n += put_utf8(o + n, cp);
        } else { /* Python keeps an unknown escape as it stands */
            o[n++] = '\\';
            o[n++] = e;
        }
    }
    if (lx->pos >= lx->len) {
        free(o);
        return fail(lx, start, "a string that does not end");
    }
    lx->pos++;
    tpl_token *tk = push(lx, TK_STRING, start, o, n);
    free(o);
    if (!tk) {
        snprintf(lx->err, lx->errlen, "out of memory");
        return MR_TEMPLATE_ENOMEM;
    }
    return MR_TEMPLATE_OK;
}

static int lex_number(lexer *lx)
{
    size_t start = lx->pos;
    const char *s = lx->src;
    bool is_float = false;
    while (lx->pos < lx->len && isdigit((unsigned char)s[lx->pos]))
        lx->pos++;
    if (lx->pos + 1 < lx->len && s[lx->pos] == '.' && isdigit((unsigned char)s[lx->pos + 1])) {
        is_float = true;
        for (lx->pos++; lx->pos < lx->len && isdigit((unsigned char)s[lx->pos]);)
            lx->pos++;
    }
    if (lx->pos < lx->len && (s[lx->pos] == 'e' || s[lx->pos] == 'E')) {
        size_t e = lx->pos + 1;
        if (e < lx->len && (s[e] == '+' || s[e] == '-'))
            e++;
        if (e < lx->len && isdigit((unsigned char)s[e])) {
            is_float = true;
            for (lx->pos = e; lx->pos < lx->len && isdigit((unsigned char)s[lx->pos]);)
                lx->pos++;
        }
    }
    tpl_token *tk = push(lx, is_float ? TK_FLOAT : TK_INT, start, s + start, lx->pos - start);
    if (!tk) {
        snprintf(lx->err, lx->errlen, "out of memory");
        return MR_TEMPLATE_ENOMEM;
    }
    if (is_float)
        tk->f = strtod(tk->text, NULL);
    else
        tk->i = strtoll(tk->text, NULL, 10);
    return MR_TEMPLATE_OK;
}

/* The tokens of one {{ }} or {% %} up to its end `close` ("}}" or "%}");
 * *strip_after says whether it ended with `-`. */
static int lex_tag(lexer *lx, const char *close, bool *strip_after)
{
    static const char *const ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/",
                                      "%",  "~",  "<",  ">",  "=",  "(",  ")", "[", "]", "{",
                                      "}",  ",",  ".",  ":",  "|"};
    const char *s = lx->src;
    int depth = 0; /* open brackets: `}}` inside {'a': {}} does not end the tag */
    for (;;) {
        while (lx->pos < lx->len && is_space(s[lx->pos]))
            lx->pos++;
        if (lx->pos >= lx->len)
            return fail(lx, lx->pos, close[0] == '}' ? "a {{ without its }}" : "a {% without its %}");
        if (!depth && s[lx->pos] == '-' && !strncmp(s + lx->pos + 1, close, 2)) {
            lx->pos += 3;
            *strip_after = true;
            return MR_TEMPLATE_OK;
        }
        if (!depth && !strncmp(s + lx->pos, close, 2)) {
            lx->pos += 2;
            *strip_after = false;
            return MR_TEMPLATE_OK;
        }
        char c = s[lx->pos];
        int rc = MR_TEMPLATE_OK;
        if (c == '\'' || c == '"') {
            rc = lex_string(lx);
        } else if (isdigit((unsigned char)c)) {
            rc = lex_number(lx);
        } else if (isalpha((unsigned char)c) || c == '_') {
            size_t start = lx->pos;
            while (lx->pos < lx->len && (isalnum((unsigned char)s[lx->pos]) || s[lx->pos] == '_'))
                lx->pos++;
            PUSH(lx, TK_NAME, start, s + start, lx->pos - start);
        } else {
            size_t k = 0, n = sizeof ops / sizeof *ops;
            while (k < n && strncmp(s + lx->pos, ops[k], strlen(ops[k])))
                k++;
            if (k == n) {
                char what[48];
                snprintf(what, sizeof what, "unexpected character '%c'", c);
                return fail(lx, lx->pos, what);
            }
            if (strchr("([{", c))
                depth++;
            else if (strchr(")]}", c) && depth > 0)
                depth--;
            PUSH(lx, TK_OP, lx->pos, ops[k], strlen(ops[k]));
            lx->pos += strlen(ops[k]);
        }
        if (rc != MR_TEMPLATE_OK)
            return rc;
    }
}

/* Text from lx->pos to `end`, whitespace control applied on its left by
 * the tag before (skip_ws: all whitespace; skip_nl: one newline) and on its
 * right by the tag after (`rstrip`: all whitespace; `lstrip`: spaces and
 * tabs back to the start of the line). */
static int emit_text(lexer *lx, size_t end, bool rstrip, bool lstrip, bool at_start)
{
    size_t from = lx->pos, to = end;
    if (rstrip) {
        while (to > from && is_space(lx->src[to - 1]))
            to--;
    } else if (lstrip) {
        size_t k = to;
        while (k > from && (lx->src[k - 1] == ' ' || lx->src[k - 1] == '\t'))
            k--;
        if ((k > from && lx->src[k - 1] == '\n') || (k == from && at_start))
            to = k;
    }
    if (to > from)
        PUSH(lx, TK_TEXT, from, lx->src + from, to - from);
    return MR_TEMPLATE_OK;
}

int tpl_lex(const char *source, tpl_arena *a, tpl_tokens *out, char *err, size_t errlen)
{
    /* Newlines become \n as jinja2 normalises them; one at the end goes. */
    size_t n = strlen(source);
    char *src = tpl_alloc(a, n + 1); /* in the template's arena: no path frees it */
    if (!src) {
        snprintf(err, errlen, "out of memory");
        return MR_TEMPLATE_ENOMEM;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (source[i] == '\r') {
            src[len++] = '\n';
            if (i + 1 < n && source[i + 1] == '\n')
                i++;
        } else {
            src[len++] = source[i];
        }
    }
    if (len && src[len - 1] == '\n')
        len--;
    src[len] = '\0';
    lexer lx = {.src = src, .len = len, .line = 1, .col = 1, .arena = a, .out = out,
                .err = err, .errlen = errlen};
    int rc = MR_TEMPLATE_OK;
    /* Whitespace the tag before asks to skip at the start of the next text,
     * and whether this text starts a line (jinja2's line_starting: true at
     * the start and after a tag whose match ended with a newline). */
    bool skip_ws = false, skip_nl = false, at_start = true;
    while (rc == MR_TEMPLATE_OK) {
        if (skip_ws) { /* a line starts after it when the last it skipped ends one */
            while (lx.pos < len && is_space(src[lx.pos]))
                at_start = src[lx.pos++] == '\n';
        } else if (skip_nl && lx.pos < len && src[lx.pos] == '\n') {
            lx.pos++;
            at_start = true; /* the next text starts a line */
        }
        skip_ws = skip_nl = false;
        const char *tag = src + lx.pos;
        while ((tag = strchr(tag, '{')) && tag[1] != '{' && tag[1] != '%' && tag[1] != '#')
            tag++;
        size_t end = tag ? (size_t)(tag - src) : len;
        char kind = tag ? tag[1] : 0, mod = tag && tag[2] ? tag[2] : 0;
        rc = emit_text(&lx, end, mod == '-', kind != '{' && kind && mod != '+', at_start);
        if (rc != MR_TEMPLATE_OK || !tag)
            break;
        at_start = false;
        lx.pos = end + 2 + (mod == '-' || mod == '+');
        if (kind == '#') {
            const char *close = strstr(src + lx.pos, "#}");
            if (!close) {
                rc = fail(&lx, end, "a {# without its #}");
                break;
            }
            skip_ws = close > src + lx.pos && close[-1] == '-';
            skip_nl = !skip_ws;
            lx.pos = (size_t)(close - src) + 2;
            continue;
        }
        bool block = kind == '%';
        PUSH(&lx, block ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, end, tag, 2);
        rc = lex_tag(&lx, block ? "%}" : "}}", &skip_ws);
        skip_nl = block && !skip_ws;
        if (rc == MR_TEMPLATE_OK)
            PUSH(&lx, block ? TK_BLOCK_END : TK_VAR_END, lx.pos - 2, "", 0);
    }
    if (rc == MR_TEMPLATE_OK)
        PUSH(&lx, TK_EOF, len, "", 0);
    return rc;
}
