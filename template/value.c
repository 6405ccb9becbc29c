/*
 * Values as Python has them in a chat template: their truth, equality,
 * str() and repr(), and the JSON transformers' tojson writes; the arena
 * that holds them for one rendering.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

struct tpl_block {
    tpl_block *next;
    size_t used, size;
    _Alignas(max_align_t) unsigned char data[];
};

void *tpl_alloc(tpl_arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    tpl_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > 60000 ? n : 60000;
        b = malloc(sizeof *b + size);
        if (!b)
            return NULL;
        *b = (tpl_block){.next = a->head, .size = size};
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *tpl_strndup(tpl_arena *a, const char *s, size_t n)
{
    char *copy = tpl_alloc(a, n + 1);
    if (copy && n)
        memcpy(copy, s, n);
    return copy;
}

void tpl_arena_free(tpl_arena *a)
{
    while (a->head) {
        tpl_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

void tpl_fail(tpl_eval *ev, int status, const tpl_node *at, const char *fmt, ...)
{
    int n = at ? snprintf(ev->err, ev->errlen, "line %d, column %d: ", at->line, at->col) : 0;
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < ev->errlen)
        vsnprintf(ev->err + n, ev->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    ev->status = status;
    longjmp(ev->fail, 1);
}

void *tpl_need(tpl_eval *ev, size_t n)
{
    void *p = tpl_alloc(&ev->arena, n);
    if (!p)
        tpl_fail(ev, MR_TEMPLATE_ENOMEM, NULL, "out of memory rendering the chat template");
    return p;
}

tpl_value tpl_undefined(void) { return (tpl_value){.kind = V_UNDEFINED}; }
tpl_value tpl_none(void) { return (tpl_value){.kind = V_NONE}; }
tpl_value tpl_bool(bool b) { return (tpl_value){.kind = V_BOOL, .u.b = b}; }
tpl_value tpl_int(int64_t i) { return (tpl_value){.kind = V_INT, .u.i = i}; }
tpl_value tpl_float(double f) { return (tpl_value){.kind = V_FLOAT, .u.f = f}; }

tpl_value tpl_cstr(const char *s)
{
    return (tpl_value){.kind = V_STR, .u.str = {s, strlen(s)}};
}

tpl_value tpl_str(tpl_eval *ev, const char *s, size_t len)
{
    char *copy = tpl_need(ev, len + 1);
    if (len)
        memcpy(copy, s, len);
    return (tpl_value){.kind = V_STR, .u.str = {copy, len}};
}

tpl_value tpl_new_list(tpl_eval *ev)
{
    return (tpl_value){.kind = V_LIST, .u.list = tpl_need(ev, sizeof(tpl_list))};
}

tpl_value tpl_new_dict(tpl_eval *ev, tpl_kind kind)
{
    return (tpl_value){.kind = kind, .u.dict = tpl_need(ev, sizeof(tpl_dict))};
}

static void *grow(tpl_eval *ev, void *old, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return old;
    *cap = *cap ? 2 * *cap : 4;
    void *v = tpl_need(ev, *cap * size);
    if (n)
        memcpy(v, old, n * size);
    return v;
}

void tpl_list_push(tpl_eval *ev, tpl_list *l, tpl_value v)
{
    l->v = grow(ev, l->v, l->n, &l->cap, sizeof *l->v);
    l->v[l->n++] = v;
}

tpl_value *tpl_dict_get(const tpl_dict *d, const char *key, size_t len)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].u.str.len == len && !memcmp(d->keys[i].u.str.s, key, len))
            return &d->vals[i];
    return NULL;
}

void tpl_dict_set(tpl_eval *ev, tpl_dict *d, tpl_value key, tpl_value v)
{
    tpl_value *had = tpl_dict_get(d, key.u.str.s, key.u.str.len);
    if (had) {
        *had = v;
        return;
    }
    size_t cap = d->cap;
    d->keys = grow(ev, d->keys, d->n, &cap, sizeof *d->keys);
    d->vals = grow(ev, d->vals, d->n, &d->cap, sizeof *d->vals);
    d->keys[d->n] = key;
    d->vals[d->n++] = v;
}

bool tpl_truthy(tpl_value v)
{
    switch (v.kind) {
    case V_UNDEFINED: case V_NONE: return false;
    case V_BOOL: return v.u.b;
    case V_INT: return v.u.i != 0;
    case V_FLOAT: return v.u.f != 0;
    case V_STR: return v.u.str.len != 0;
    case V_LIST: return v.u.list->n != 0;
    case V_DICT: return v.u.dict->n != 0;
    default: return true;
    }
}

static bool is_number(tpl_value v)
{
    return v.kind == V_BOOL || v.kind == V_INT || v.kind == V_FLOAT;
}

static double number(tpl_value v)
{
    return v.kind == V_FLOAT ? v.u.f : v.kind == V_INT ? (double)v.u.i : v.u.b;
}

bool tpl_equal(tpl_value a, tpl_value b)
{
    if (is_number(a) && is_number(b)) {
        if (a.kind != V_FLOAT && b.kind != V_FLOAT)
            return (a.kind == V_INT ? a.u.i : a.u.b) == (b.kind == V_INT ? b.u.i : b.u.b);
        return number(a) == number(b);
    }
    bool a_dict = a.kind == V_DICT || a.kind == V_NAMESPACE;
    if (a.kind != b.kind && !(a_dict && (b.kind == V_DICT || b.kind == V_NAMESPACE)))
        return false;
    switch (a.kind) {
    case V_UNDEFINED: case V_NONE: return true;
    case V_STR:
        return a.u.str.len == b.u.str.len && !memcmp(a.u.str.s, b.u.str.s, a.u.str.len);
    case V_LIST:
        if (a.u.list->n != b.u.list->n)
            return false;
        for (size_t i = 0; i < a.u.list->n; i++)
            if (!tpl_equal(a.u.list->v[i], b.u.list->v[i]))
                return false;
        return true;
    case V_DICT: case V_NAMESPACE:
        if (a.u.dict->n != b.u.dict->n)
            return false;
        for (size_t i = 0; i < a.u.dict->n; i++) {
            tpl_value *other = tpl_dict_get(b.u.dict, a.u.dict->keys[i].u.str.s,
                                            a.u.dict->keys[i].u.str.len);
            if (!other || !tpl_equal(a.u.dict->vals[i], *other))
                return false;
        }
        return true;
    case V_MACRO: return a.u.macro == b.u.macro;
    case V_FUNCTION: return !strcmp(a.u.function, b.u.function);
    default: return false;
    }
}

const char *tpl_kind_name(tpl_kind k)
{
    static const char *const names[] = {"undefined", "none", "boolean", "integer",
                                        "float", "string", "list", "dict",
                                        "namespace", "macro", "function", "method"};
    return names[k];
}

void tpl_buf_put(tpl_eval *ev, tpl_buf *b, const char *s, size_t n)
{
    /* In the arena, so that a failure anywhere leaves nothing to free;
     * doubling keeps the copies left behind under the final size. */
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *v = tpl_need(ev, cap);
        if (b->len)
            memcpy(v, b->s, b->len);
        b->s = v;
        b->cap = cap;
    }
    if (n)
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void put(tpl_eval *ev, tpl_buf *b, const char *s)
{
    tpl_buf_put(ev, b, s, strlen(s));
}

/* repr(float) as Python writes it: the shortest digits that read back as
 * the same double, in exponent form below 1e-4 and from 1e16. */
static void put_float(tpl_eval *ev, tpl_buf *b, double f)
{
    if (isnan(f)) {
        put(ev, b, "nan");
        return;
    }
    if (isinf(f)) {
        put(ev, b, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    char digits[24], out[64];
    size_t nd = 0;
    const char *c = e + (e[0] == '-');
    for (; *c != 'e'; c++)
        if (*c != '.')
            digits[nd++] = *c;
    digits[nd] = '\0';
    int exp = atoi(c + 1), n = 0;
    n += snprintf(out + n, sizeof out - (size_t)n, "%s", e[0] == '-' ? "-" : "");
    if (exp < -4 || exp >= 16) {
        n += snprintf(out + n, sizeof out - (size_t)n, "%c%s%s", digits[0], nd > 1 ? "." : "",
                      digits + 1);
        snprintf(out + n, sizeof out - (size_t)n, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    } else if (exp < 0) {
        snprintf(out + n, sizeof out - (size_t)n, "0.%.*s%s", -exp - 1, "0000", digits);
    } else if ((int)nd <= exp + 1) {
        snprintf(out + n, sizeof out - (size_t)n, "%s%.*s.0", digits, exp + 1 - (int)nd,
                 "0000000000000000");
    } else {
        snprintf(out + n, sizeof out - (size_t)n, "%.*s.%s", exp + 1, digits, digits + exp + 1);
    }
    put(ev, b, out);
}

/* repr(str): single quotes unless the text has one and no double quote. */
static void put_repr_str(tpl_eval *ev, tpl_buf *b, const char *s, size_t len)
{
    char q = memchr(s, '\'', len) && !memchr(s, '"', len) ? '"' : '\'';
    tpl_buf_put(ev, b, &q, 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '\\' || c == (unsigned char)q)
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n' || c == '\r' || c == '\t')
            snprintf(esc, sizeof esc, "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        else if (c < 0x20 || c == 0x7f)
            snprintf(esc, sizeof esc, "\\x%02x", c);
        else
            esc[0] = (char)c, esc[1] = '\0';
        put(ev, b, esc);
    }
    tpl_buf_put(ev, b, &q, 1);
}

static void put_repr(tpl_eval *ev, tpl_buf *b, tpl_value v)
{
    if (v.kind == V_STR) {
        put_repr_str(ev, b, v.u.str.s, v.u.str.len);
    } else if (v.kind == V_LIST) {
        put(ev, b, "[");
        for (size_t i = 0; i < v.u.list->n; i++) {
            if (i)
                put(ev, b, ", ");
            put_repr(ev, b, v.u.list->v[i]);
        }
        put(ev, b, "]");
    } else if (v.kind == V_DICT) {
        put(ev, b, "{");
        for (size_t i = 0; i < v.u.dict->n; i++) {
            if (i)
                put(ev, b, ", ");
            put_repr(ev, b, v.u.dict->keys[i]);
            put(ev, b, ": ");
            put_repr(ev, b, v.u.dict->vals[i]);
        }
        put(ev, b, "}");
    } else {
        tpl_buf_str(ev, b, v);
    }
}

void tpl_buf_str(tpl_eval *ev, tpl_buf *b, tpl_value v)
{
    char num[32];
    switch (v.kind) {
    case V_UNDEFINED: return;
    case V_NONE: put(ev, b, "None"); return;
    case V_BOOL: put(ev, b, v.u.b ? "True" : "False"); return;
    case V_INT:
        snprintf(num, sizeof num, "%lld", (long long)v.u.i);
        put(ev, b, num);
        return;
    case V_FLOAT: put_float(ev, b, v.u.f); return;
    case V_STR: tpl_buf_put(ev, b, v.u.str.s, v.u.str.len); return;
    case V_LIST: case V_DICT: put_repr(ev, b, v); return;
    case V_NAMESPACE: put(ev, b, "<Namespace>"); return;
    default: put(ev, b, "<function>"); return;
    }
}

tpl_value tpl_buf_value(const tpl_buf *b)
{
    return (tpl_value){.kind = V_STR, .u.str = {b->s ? b->s : "", b->len}};
}

tpl_value tpl_to_str(tpl_eval *ev, tpl_value v)
{
    if (v.kind == V_STR)
        return v;
    tpl_buf b = {0};
    tpl_buf_str(ev, &b, v);
    return tpl_buf_value(&b);
}

static void put_json_str(tpl_eval *ev, tpl_buf *b, const char *s, size_t len)
{
    put(ev, b, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        static const char short_escapes[] = "\"\"\\\\\bb\ff\nn\rr\tt";
        const char *e = c ? memchr(short_escapes, c, sizeof short_escapes - 1) : NULL;
        char esc[8];
        if (e && (e - short_escapes) % 2 == 0)
            snprintf(esc, sizeof esc, "\\%c", e[1]);
        else if (c < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", c);
        else
            esc[0] = (char)c, esc[1] = '\0';
        put(ev, b, esc);
    }
    put(ev, b, "\"");
}

static void newline(tpl_eval *ev, tpl_buf *b, int indent, int depth)
{
    put(ev, b, "\n");
    for (int i = 0; i < indent * depth; i++)
        put(ev, b, " ");
}

static int compare_keys(const void *x, const void *y)
{
    const tpl_value *a = *(const tpl_value *const *)x, *b = *(const tpl_value *const *)y;
    size_t n = a->u.str.len < b->u.str.len ? a->u.str.len : b->u.str.len;
    int c = memcmp(a->u.str.s, b->u.str.s, n);
    return c ? c : (a->u.str.len > b->u.str.len) - (a->u.str.len < b->u.str.len);
}

void tpl_buf_json(tpl_eval *ev, tpl_buf *b, tpl_value v, int indent, int depth, bool sort_keys,
                  const tpl_node *at)
{
    /* json.dumps separates items with ", " on one line, "," before a newline. */
    const char *sep = indent < 0 ? ", " : ",";
    switch (v.kind) {
    case V_NONE: put(ev, b, "null"); return;
    case V_BOOL: put(ev, b, v.u.b ? "true" : "false"); return;
    case V_INT: case V_FLOAT: tpl_buf_str(ev, b, v); return;
    case V_STR: put_json_str(ev, b, v.u.str.s, v.u.str.len); return;
    case V_LIST:
        if (!v.u.list->n) {
            put(ev, b, "[]");
            return;
        }
        put(ev, b, "[");
        for (size_t i = 0; i < v.u.list->n; i++) {
            if (i)
                put(ev, b, sep);
            if (indent >= 0)
                newline(ev, b, indent, depth + 1);
            tpl_buf_json(ev, b, v.u.list->v[i], indent, depth + 1, sort_keys, at);
        }
        if (indent >= 0)
            newline(ev, b, indent, depth);
        put(ev, b, "]");
        return;
    case V_DICT: case V_NAMESPACE: {
        tpl_dict *d = v.u.dict;
        if (!d->n) {
            put(ev, b, "{}");
            return;
        }
        const tpl_value **keys = tpl_need(ev, d->n * sizeof *keys);
        for (size_t i = 0; i < d->n; i++)
            keys[i] = &d->keys[i];
        if (sort_keys)
            qsort(keys, d->n, sizeof *keys, compare_keys);
        put(ev, b, "{");
        for (size_t i = 0; i < d->n; i++) {
            if (i)
                put(ev, b, sep);
            if (indent >= 0)
                newline(ev, b, indent, depth + 1);
            put_json_str(ev, b, keys[i]->u.str.s, keys[i]->u.str.len);
            put(ev, b, ": ");
            tpl_buf_json(ev, b, d->vals[keys[i] - d->keys], indent, depth + 1, sort_keys, at);
        }
        if (indent >= 0)
            newline(ev, b, indent, depth);
        put(ev, b, "}");
        return;
    }
    default:
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "tojson: a value of type %s is not JSON",
                 tpl_kind_name(v.kind));
    }
}

tpl_value tpl_from_json(tpl_eval *ev, const cJSON *j)
{
    if (cJSON_IsString(j))
        return tpl_cstr(j->valuestring);
    if (cJSON_IsBool(j))
        return tpl_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        /* JSON keeps no int/float distinction; integral values within
         * double's exact range are Python ints. */
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            return tpl_int((int64_t)d);
        return tpl_float(d);
    }
    if (cJSON_IsArray(j)) {
        tpl_value l = tpl_new_list(ev);
        const cJSON *item;
        cJSON_ArrayForEach(item, j) tpl_list_push(ev, l.u.list, tpl_from_json(ev, item));
        return l;
    }
    if (cJSON_IsObject(j)) {
        tpl_value d = tpl_new_dict(ev, V_DICT);
        const cJSON *item;
        cJSON_ArrayForEach(item, j)
            tpl_dict_set(ev, d.u.dict, tpl_cstr(item->string), tpl_from_json(ev, item));
        return d;
    }
    return tpl_none();
}

tpl_list *tpl_as_list(tpl_eval *ev, const tpl_node *at, tpl_value v, bool loop)
{
    if (v.kind == V_LIST)
        return v.u.list;
    tpl_value l = tpl_new_list(ev);
    if (v.kind == V_DICT || v.kind == V_NAMESPACE) {
        for (size_t i = 0; i < v.u.dict->n; i++)
            tpl_list_push(ev, l.u.list, v.u.dict->keys[i]);
    } else if (v.kind == V_STR) {
        size_t *off, n = tpl_utf8_offsets(ev, v.u.str.s, v.u.str.len, &off);
        for (size_t i = 0; i < n; i++)
            tpl_list_push(ev, l.u.list, (tpl_value){.kind = V_STR,
                                                    .u.str = {v.u.str.s + off[i],
                                                              off[i + 1] - off[i]}});
    } else if (v.kind != V_UNDEFINED) {
        if (loop)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "cannot loop over a %s", tpl_kind_name(v.kind));
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "a %s is not iterable", tpl_kind_name(v.kind));
    }
    return l.u.list;
}

size_t tpl_utf8_offsets(tpl_eval *ev, const char *s, size_t len, size_t **offsets)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    size_t *o = tpl_need(ev, (n + 1) * sizeof *o);
    for (size_t i = 0, k = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            o[k++] = i;
    o[n] = len;
    *offsets = o;
    return n;
}
