/*
 * The library a chat template calls: jinja2's filters and tests that chat
 * templates use, Python's string and dict methods, and the globals
 * transformers gives (namespace, raise_exception, strftime_now, range).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "template/internal.h"

static const char *const filters[] = {
    "abs",   "capitalize", "count",     "d",      "default", "first",      "float",
    "int",   "items",      "join",      "last",   "length",  "list",       "lower",
    "map",   "reject",     "rejectattr", "replace", "reverse", "safe",     "select",
    "selectattr", "string", "title",    "tojson", "trim",    "upper",      NULL};

static const char *const tests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq",       "equalto",  "even",
    "false",   "float",    "ge",      "gt",          "in",       "integer",  "iterable",
    "le",      "lower",    "lt",      "mapping",     "ne",       "none",     "number",
    "odd",     "sameas",   "sequence", "string",     "true",     "undefined", "upper", NULL};

const char *const tpl_functions[] = {"namespace", "raise_exception", "strftime_now", "range",
                                     "dict", NULL};

static bool listed(const char *const *list, const char *name)
{
    for (; *list; list++)
        if (!strcmp(*list, name))
            return true;
    return false;
}

bool tpl_has_filter(const char *name) { return listed(filters, name); }
bool tpl_has_test(const char *name) { return listed(tests, name); }

/* ---- arguments ---- */

/* The argument at position `pos` or named `name`; NULL when not given. */
static const tpl_value *arg(const tpl_value *args, const char *const *kw, size_t n, size_t pos,
                            const char *name)
{
    size_t positional = 0;
    for (size_t i = 0; i < n; i++) {
        if (kw[i] ? name && !strcmp(kw[i], name) : positional++ == pos)
            return &args[i];
    }
    return NULL;
}

static tpl_value want(tpl_eval *ev, const tpl_node *at, const tpl_value *v, tpl_kind kind,
                      const char *what)
{
    if (!v || v->kind != kind)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "%s needs a %s, got %s", what, tpl_kind_name(kind),
                 v ? tpl_kind_name(v->kind) : "nothing");
    return *v;
}

static void check_count(tpl_eval *ev, const tpl_node *at, const char *what, size_t n, size_t most)
{
    if (n > most)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "%s takes at most %zu argument%s, got %zu", what,
                 most, most == 1 ? "" : "s", n);
}

/* ---- strings ---- */

/* A string's text NUL-terminated (a slice of another one is not). */
static const char *cstr(tpl_eval *ev, tpl_value s)
{
    return tpl_str(ev, s.u.str.s, s.u.str.len).u.str.s;
}

/* Python's str.isspace() for one code point. */
static bool is_space_cp(utf8proc_int32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
    utf8proc_category_t cat = utf8proc_category(c);
    return c == 0x85 || cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
           cat == UTF8PROC_CATEGORY_ZP;
}

/* The code point at s[i] (a byte where it is not valid UTF-8), its length. */
static utf8proc_int32_t cp_at(const char *s, size_t len, size_t i, size_t *n)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                          (utf8proc_ssize_t)(len - i), &c);
    if (k <= 0) {
        *n = 1;
        return (unsigned char)s[i];
    }
    *n = (size_t)k;
    return c;
}

static bool in_chars(utf8proc_int32_t c, const tpl_value *chars)
{
    if (!chars || chars->kind == V_NONE)
        return is_space_cp(c);
    for (size_t i = 0, n; i < chars->u.str.len; i += n)
        if (cp_at(chars->u.str.s, chars->u.str.len, i, &n) == c)
            return true;
    return false;
}

/* str.strip / lstrip / rstrip: `which` 'b', 'l' or 'r'. */
static tpl_value strip(tpl_value s, const tpl_value *chars, char which)
{
    size_t from = 0, to = s.u.str.len, n;
    if (which != 'r')
        while (from < to && in_chars(cp_at(s.u.str.s, to, from, &n), chars))
            from += n;
    if (which != 'l') {
        while (to > from) {
            size_t start = to - 1;
            while (start > from && ((unsigned char)s.u.str.s[start] & 0xC0) == 0x80)
                start--;
            if (!in_chars(cp_at(s.u.str.s, to, start, &n), chars))
                break;
            to = start;
        }
    }
    return (tpl_value){.kind = V_STR, .u.str = {s.u.str.s + from, to - from}};
}

/* Upper or lower case, or capitalize ('c': first upper, rest lower) or
 * title ('t': upper after anything that is not a letter). */
static tpl_value recase(tpl_eval *ev, tpl_value s, char how)
{
    tpl_buf b = {0};
    bool after_letter = false;
    for (size_t i = 0, n; i < s.u.str.len; i += n) {
        utf8proc_int32_t c = cp_at(s.u.str.s, s.u.str.len, i, &n);
        bool up = how == 'u' || (how == 'c' && i == 0) || (how == 't' && !after_letter);
        utf8proc_int32_t m = up ? utf8proc_toupper(c) : utf8proc_tolower(c);
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t k = utf8proc_encode_char(m, enc);
        tpl_buf_put(ev, &b, (const char *)enc, (size_t)k);
        after_letter = utf8proc_category(c) >= UTF8PROC_CATEGORY_LU &&
                       utf8proc_category(c) <= UTF8PROC_CATEGORY_LO;
    }
    return tpl_buf_value(&b);
}

static const char *find(tpl_value hay, tpl_value needle, size_t from)
{
    for (size_t i = from; i + needle.u.str.len <= hay.u.str.len; i++)
        if (!memcmp(hay.u.str.s + i, needle.u.str.s, needle.u.str.len))
            return hay.u.str.s + i;
    return NULL;
}

static tpl_value replace(tpl_eval *ev, const tpl_node *at, tpl_value s, const tpl_value *old,
                         const tpl_value *new, const tpl_value *count)
{
    tpl_value o = want(ev, at, old, V_STR, "replace"), w = want(ev, at, new, V_STR, "replace");
    int64_t left = count && count->kind == V_INT ? count->u.i : -1;
    tpl_buf b = {0};
    size_t i = 0;
    if (!o.u.str.len) { /* Python puts `new` between every character, and at both ends */
        for (size_t n; i < s.u.str.len && left; i += n, left--) {
            tpl_buf_put(ev, &b, w.u.str.s, w.u.str.len);
            cp_at(s.u.str.s, s.u.str.len, i, &n);
            tpl_buf_put(ev, &b, s.u.str.s + i, n);
        }
        if (left)
            tpl_buf_put(ev, &b, w.u.str.s, w.u.str.len);
    } else {
        for (const char *hit; left && (hit = find(s, o, i)); left--) {
            tpl_buf_put(ev, &b, s.u.str.s + i, (size_t)(hit - s.u.str.s) - i);
            tpl_buf_put(ev, &b, w.u.str.s, w.u.str.len);
            i = (size_t)(hit - s.u.str.s) + o.u.str.len;
        }
    }
    tpl_buf_put(ev, &b, s.u.str.s + i, s.u.str.len - i);
    return tpl_buf_value(&b);
}

/* str.split(sep=None, maxsplit=-1). */
static tpl_value split(tpl_eval *ev, const tpl_node *at, tpl_value s, const tpl_value *sep,
                       const tpl_value *max)
{
    tpl_value out = tpl_new_list(ev);
    int64_t left = max && max->kind == V_INT ? max->u.i : -1;
    const char *p = s.u.str.s, *end = s.u.str.s + s.u.str.len;
    if (sep && sep->kind != V_NONE) {
        tpl_value d = want(ev, at, sep, V_STR, "split");
        if (!d.u.str.len)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "split: empty separator");
        const char *hit;
        while (left-- != 0 && (hit = find(s, d, (size_t)(p - s.u.str.s)))) {
            tpl_list_push(ev, out.u.list, (tpl_value){.kind = V_STR, .u.str = {p, (size_t)(hit - p)}});
            p = hit + d.u.str.len;
        }
        tpl_list_push(ev, out.u.list, (tpl_value){.kind = V_STR, .u.str = {p, (size_t)(end - p)}});
        return out;
    }
    for (;;) { /* runs of whitespace, none at either end */
        size_t n;
        while (p < end && is_space_cp(cp_at(p, (size_t)(end - p), 0, &n)))
            p += n;
        if (p == end)
            return out;
        const char *word = p;
        if (left-- == 0) {
            tpl_value rest = strip((tpl_value){.kind = V_STR, .u.str = {p, (size_t)(end - p)}},
                                   NULL, 'r');
            tpl_list_push(ev, out.u.list, rest);
            return out;
        }
        while (p < end && !is_space_cp(cp_at(p, (size_t)(end - p), 0, &n)))
            p += n;
        tpl_list_push(ev, out.u.list, (tpl_value){.kind = V_STR, .u.str = {word, (size_t)(p - word)}});
    }
}

static bool affix(tpl_eval *ev, const tpl_node *at, tpl_value s, const tpl_value *a, bool end)
{
    if (a && a->kind == V_LIST) { /* a tuple of alternatives */
        for (size_t i = 0; i < a->u.list->n; i++)
            if (affix(ev, at, s, &a->u.list->v[i], end))
                return true;
        return false;
    }
    tpl_value p = want(ev, at, a, V_STR, end ? "endswith" : "startswith");
    return p.u.str.len <= s.u.str.len &&
           !memcmp(s.u.str.s + (end ? s.u.str.len - p.u.str.len : 0), p.u.str.s, p.u.str.len);
}

static size_t length(tpl_eval *ev, const tpl_node *at, tpl_value v)
{
    size_t *off;
    switch (v.kind) {
    case V_STR: return tpl_utf8_offsets(ev, v.u.str.s, v.u.str.len, &off);
    case V_LIST: return v.u.list->n;
    case V_DICT: case V_NAMESPACE: return v.u.dict->n;
    case V_UNDEFINED: return 0;
    default: tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "a %s has no length", tpl_kind_name(v.kind));
    }
}

static tpl_value items_of(tpl_eval *ev, const tpl_node *at, tpl_value d)
{
    tpl_value out = tpl_new_list(ev);
    if (d.kind == V_UNDEFINED)
        return out;
    if (d.kind != V_DICT && d.kind != V_NAMESPACE)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "items needs a dict, got %s", tpl_kind_name(d.kind));
    for (size_t i = 0; i < d.u.dict->n; i++) {
        tpl_value pair = tpl_new_list(ev);
        tpl_list_push(ev, pair.u.list, d.u.dict->keys[i]);
        tpl_list_push(ev, pair.u.list, d.u.dict->vals[i]);
        tpl_list_push(ev, out.u.list, pair);
    }
    return out;
}

/* The member `name` of v for map and selectattr (dotted: a.b). */
static tpl_value member(tpl_value v, tpl_value name)
{
    const char *p = name.u.str.s, *end = p + name.u.str.len;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        tpl_value *m = (v.kind == V_DICT || v.kind == V_NAMESPACE) ? tpl_dict_get(v.u.dict, p, n)
                                                                    : NULL;
        v = m ? *m : tpl_undefined();
        p += n + 1;
    }
    return v;
}

/* select, reject, selectattr, rejectattr: keep the items (or their member)
 * that pass the test (truth without one). */
static tpl_value select_items(tpl_eval *ev, const tpl_node *at, const char *name, tpl_value in,
                              const tpl_value *args, size_t n)
{
    bool by_attr = strstr(name, "attr") != NULL, keep = name[0] == 's';
    size_t first_test = by_attr ? 1 : 0;
    if (by_attr)
        want(ev, at, n ? &args[0] : NULL, V_STR, name);
    const char *test = NULL;
    if (n > first_test) {
        test = cstr(ev, want(ev, at, &args[first_test], V_STR, name));
        if (!tpl_has_test(test))
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "unsupported test '%s'", test);
    }
    tpl_list *l = tpl_as_list(ev, at, in, false);
    tpl_value out = tpl_new_list(ev);
    for (size_t i = 0; i < l->n; i++) {
        tpl_value v = by_attr ? member(l->v[i], args[0]) : l->v[i];
        bool pass = test ? tpl_test(ev, at, test, v, args + first_test + 1, n - first_test - 1)
                         : tpl_truthy(v);
        if (pass == keep)
            tpl_list_push(ev, out.u.list, l->v[i]);
    }
    return out;
}

tpl_value tpl_filter(tpl_eval *ev, const tpl_node *at, const char *name, tpl_value in,
                     const tpl_value *args, const char *const *kw, size_t n)
{
    tpl_buf b = {0};
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const tpl_value *fallback = arg(args, kw, n, 0, "default_value");
        const tpl_value *boolean = arg(args, kw, n, 1, "boolean");
        bool use = in.kind == V_UNDEFINED || (boolean && tpl_truthy(*boolean) && !tpl_truthy(in));
        return use ? (fallback ? *fallback : tpl_cstr("")) : in;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count"))
        return tpl_int((int64_t)length(ev, at, in));
    if (!strcmp(name, "string"))
        return tpl_to_str(ev, in);
    if (!strcmp(name, "safe"))
        return in;
    if (!strcmp(name, "tojson")) {
        const tpl_value *indent = arg(args, kw, n, 0, "indent");
        const tpl_value *sort = arg(args, kw, n, 1, "sort_keys");
        if (indent && indent->kind != V_NONE)
            want(ev, at, indent, V_INT, "tojson's indent");
        tpl_buf_json(ev, &b, in, indent && indent->kind == V_INT ? (int)indent->u.i : -1, 0,
                     sort && tpl_truthy(*sort), at);
        return tpl_buf_value(&b);
    }
    if (!strcmp(name, "items"))
        return items_of(ev, at, in);
    if (!strcmp(name, "list")) {
        tpl_list *l = tpl_as_list(ev, at, in, false);
        tpl_value out = tpl_new_list(ev);
        for (size_t i = 0; i < l->n; i++)
            tpl_list_push(ev, out.u.list, l->v[i]);
        return out;
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        tpl_list *l = tpl_as_list(ev, at, in, false);
        return l->n ? l->v[name[0] == 'f' ? 0 : l->n - 1] : tpl_undefined();
    }
    if (!strcmp(name, "reverse")) {
        tpl_list *l = tpl_as_list(ev, at, in, false);
        tpl_value out = tpl_new_list(ev);
        for (size_t i = l->n; i-- > 0;)
            tpl_list_push(ev, out.u.list, l->v[i]);
        if (in.kind != V_STR)
            return out;
        for (size_t i = 0; i < l->n; i++)
            tpl_buf_put(ev, &b, out.u.list->v[i].u.str.s, out.u.list->v[i].u.str.len);
        return tpl_buf_value(&b);
    }
    if (!strcmp(name, "join")) {
        const tpl_value *sep = arg(args, kw, n, 0, "d");
        const tpl_value *attr = arg(args, kw, n, 1, "attribute");
        tpl_list *l = tpl_as_list(ev, at, in, false);
        for (size_t i = 0; i < l->n; i++) {
            if (i && sep)
                tpl_buf_str(ev, &b, *sep);
            tpl_buf_str(ev, &b, attr ? member(l->v[i], *attr) : l->v[i]);
        }
        return tpl_buf_value(&b);
    }
    if (!strcmp(name, "map")) {
        const tpl_value *attr = arg(args, kw, n, 99, "attribute");
        tpl_list *l = tpl_as_list(ev, at, in, false);
        tpl_value out = tpl_new_list(ev);
        const char *filter =
            attr ? NULL : cstr(ev, want(ev, at, n ? &args[0] : NULL, V_STR, "map"));
        if (filter && !tpl_has_filter(filter))
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "unsupported filter '%s'", filter);
        for (size_t i = 0; i < l->n; i++)
            tpl_list_push(ev, out.u.list,
                          attr ? member(l->v[i], *attr)
                               : tpl_filter(ev, at, filter, l->v[i], args + 1, kw + 1, n - 1));
        return out;
    }
    if (!strcmp(name, "select") || !strcmp(name, "reject") || !strcmp(name, "selectattr") ||
        !strcmp(name, "rejectattr"))
        return select_items(ev, at, name, in, args, n);
    if (!strcmp(name, "abs")) {
        if (in.kind == V_INT)
            return tpl_int(in.u.i < 0 ? -in.u.i : in.u.i);
        if (in.kind == V_FLOAT)
            return tpl_float(in.u.f < 0 ? -in.u.f : in.u.f);
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "abs needs a number, got %s", tpl_kind_name(in.kind));
    }
    if (!strcmp(name, "int") || !strcmp(name, "float")) {
        const tpl_value *fallback = arg(args, kw, n, 0, "default");
        tpl_value dflt = fallback ? *fallback : name[0] == 'i' ? tpl_int(0) : tpl_float(0);
        double d;
        if (in.kind == V_INT || in.kind == V_BOOL) {
            d = in.kind == V_INT ? (double)in.u.i : in.u.b;
        } else if (in.kind == V_FLOAT) {
            d = in.u.f;
        } else if (in.kind == V_STR) {
            tpl_value s = strip(in, NULL, 'b');
            char *copy = tpl_strndup(&ev->arena, s.u.str.s, s.u.str.len), *end;
            if (!copy)
                tpl_fail(ev, MR_TEMPLATE_ENOMEM, NULL, "out of memory");
            d = strtod(copy, &end);
            if (end == copy || *end)
                return dflt;
        } else {
            return dflt;
        }
        return name[0] == 'i' ? tpl_int((int64_t)d) : tpl_float(d);
    }
    /* The rest work on strings. */
    if (in.kind != V_STR)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "filter %s needs a string, got %s", name,
                 tpl_kind_name(in.kind));
    if (!strcmp(name, "trim"))
        return strip(in, arg(args, kw, n, 0, "chars"), 'b');
    if (!strcmp(name, "replace"))
        return replace(ev, at, in, arg(args, kw, n, 0, "old"), arg(args, kw, n, 1, "new"),
                       arg(args, kw, n, 2, "count"));
    return recase(ev, in, !strcmp(name, "upper") ? 'u' : !strcmp(name, "lower") ? 'l'
                           : !strcmp(name, "title") ? 't' : 'c');
}

bool tpl_test(tpl_eval *ev, const tpl_node *at, const char *name, tpl_value v,
              const tpl_value *args, size_t n)
{
    tpl_kind k = v.kind;
    if (!strcmp(name, "defined")) return k != V_UNDEFINED;
    if (!strcmp(name, "undefined")) return k == V_UNDEFINED;
    if (!strcmp(name, "none")) return k == V_NONE;
    if (!strcmp(name, "string")) return k == V_STR;
    if (!strcmp(name, "boolean")) return k == V_BOOL;
    if (!strcmp(name, "true")) return k == V_BOOL && v.u.b;
    if (!strcmp(name, "false")) return k == V_BOOL && !v.u.b;
    if (!strcmp(name, "integer")) return k == V_INT;
    if (!strcmp(name, "float")) return k == V_FLOAT;
    if (!strcmp(name, "number")) return k == V_INT || k == V_FLOAT || k == V_BOOL;
    if (!strcmp(name, "mapping")) return k == V_DICT;
    if (!strcmp(name, "callable")) return k == V_MACRO || k == V_FUNCTION || k == V_METHOD;
    if (!strcmp(name, "iterable"))
        return k == V_STR || k == V_LIST || k == V_DICT || k == V_UNDEFINED;
    if (!strcmp(name, "sequence")) return k == V_STR || k == V_LIST || k == V_DICT;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (k != V_STR)
            return false;
        tpl_value c = recase(ev, v, name[0] == 'l' ? 'l' : 'u');
        return c.u.str.len == v.u.str.len && !memcmp(c.u.str.s, v.u.str.s, v.u.str.len);
    }
    if (!strcmp(name, "even") || !strcmp(name, "odd")) {
        if (k != V_INT)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "test %s needs an integer, got %s", name,
                     tpl_kind_name(k));
        return (v.u.i % 2 == 0) == (name[0] == 'e');
    }
    /* The rest compare with one argument. */
    if (n != 1)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "test %s takes one argument, got %zu", name, n);
    tpl_value a = args[0];
    if (!strcmp(name, "divisibleby")) {
        if (k != V_INT || a.kind != V_INT || !a.u.i)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "divisibleby needs two integers, the second not 0");
        return v.u.i % a.u.i == 0;
    }
    if (!strcmp(name, "eq") || !strcmp(name, "equalto")) return tpl_equal(v, a);
    if (!strcmp(name, "ne")) return !tpl_equal(v, a);
    if (!strcmp(name, "sameas"))
        return tpl_equal(v, a) && (k == V_NONE || k == V_BOOL || k == V_UNDEFINED) && k == a.kind;
    if (!strcmp(name, "in")) {
        if (a.kind == V_STR && k == V_STR)
            return find(a, v, 0) != NULL;
        tpl_list *l = tpl_as_list(ev, at, a, false);
        for (size_t i = 0; i < l->n; i++)
            if (tpl_equal(v, l->v[i]))
                return true;
        return false;
    }
    /* lt, le, gt, ge */
    bool nums = (k == V_INT || k == V_FLOAT) && (a.kind == V_INT || a.kind == V_FLOAT);
    if (!nums)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "test %s needs numbers", name);
    double x = k == V_INT ? (double)v.u.i : v.u.f, y = a.kind == V_INT ? (double)a.u.i : a.u.f;
    return name[0] == 'l' ? (name[1] == 't' ? x < y : x <= y) : (name[1] == 't' ? x > y : x >= y);
}

/* ---- methods ---- */
static const char *const string_methods[] = {
    "capitalize", "count", "endswith", "find", "isalpha", "isdigit", "islower", "isspace",
    "isupper", "join", "lower", "lstrip", "replace", "rstrip", "split", "startswith", "strip",
    "title", "upper", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", NULL};

bool tpl_method_exists(tpl_value v, const char *name)
{
    return (v.kind == V_STR && listed(string_methods, name)) ||
           (v.kind == V_DICT && listed(dict_methods, name));
}

/* str.isdigit and the like: every code point in the class, and one at least. */
static bool all_of(tpl_value s, const char *what)
{
    if (!s.u.str.len)
        return false;
    bool cased = false;
    for (size_t i = 0, n; i < s.u.str.len; i += n) {
        utf8proc_int32_t c = cp_at(s.u.str.s, s.u.str.len, i, &n);
        utf8proc_category_t cat = utf8proc_category(c);
        bool ok = !strcmp(what, "isspace")   ? is_space_cp(c)
                  : !strcmp(what, "isdigit") ? cat == UTF8PROC_CATEGORY_ND
                  : !strcmp(what, "isalpha") ? cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO
                  : !strcmp(what, "islower") ? cat != UTF8PROC_CATEGORY_LU && cat != UTF8PROC_CATEGORY_LT
                                             : cat != UTF8PROC_CATEGORY_LL;
        cased |= cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
                 cat == UTF8PROC_CATEGORY_LT;
        if (!ok)
            return false;
    }
    return (strcmp(what, "islower") && strcmp(what, "isupper")) || cased;
}

static tpl_value string_method(tpl_eval *ev, const tpl_node *at, tpl_value s, const char *name,
                               const tpl_value *args, const char *const *kw, size_t n)
{
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        check_count(ev, at, name, n, 1);
        return tpl_bool(affix(ev, at, s, arg(args, kw, n, 0, NULL), name[0] == 'e'));
    }
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        check_count(ev, at, name, n, 1);
        const tpl_value *chars = arg(args, kw, n, 0, NULL);
        if (chars && chars->kind != V_NONE)
            want(ev, at, chars, V_STR, name);
        return strip(s, chars, name[0] == 's' ? 'b' : name[0]);
    }
    if (!strcmp(name, "split"))
        return split(ev, at, s, arg(args, kw, n, 0, "sep"), arg(args, kw, n, 1, "maxsplit"));
    if (!strcmp(name, "replace"))
        return replace(ev, at, s, arg(args, kw, n, 0, NULL), arg(args, kw, n, 1, NULL),
                       arg(args, kw, n, 2, "count"));
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        tpl_value sub = want(ev, at, arg(args, kw, n, 0, NULL), V_STR, name);
        if (name[0] == 'f') {
            const char *hit = find(s, sub, 0);
            if (!hit)
                return tpl_int(-1);
            size_t *off;
            return tpl_int((int64_t)tpl_utf8_offsets(ev, s.u.str.s, (size_t)(hit - s.u.str.s), &off));
        }
        int64_t count = 0;
        size_t *off;
        if (!sub.u.str.len)
            return tpl_int((int64_t)tpl_utf8_offsets(ev, s.u.str.s, s.u.str.len, &off) + 1);
        for (const char *hit = find(s, sub, 0); hit;
             hit = find(s, sub, (size_t)(hit - s.u.str.s) + sub.u.str.len))
            count++;
        return tpl_int(count);
    }
    if (!strcmp(name, "join")) {
        tpl_list *l = tpl_as_list(ev, at, args && n ? args[0] : tpl_undefined(), false);
        tpl_buf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (l->v[i].kind != V_STR)
                tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "join: item %zu is a %s, not a string", i,
                         tpl_kind_name(l->v[i].kind));
            if (i)
                tpl_buf_put(ev, &b, s.u.str.s, s.u.str.len);
            tpl_buf_put(ev, &b, l->v[i].u.str.s, l->v[i].u.str.len);
        }
        return tpl_buf_value(&b);
    }
    check_count(ev, at, name, n, 0);
    if (!strncmp(name, "is", 2))
        return tpl_bool(all_of(s, name));
    return recase(ev, s, !strcmp(name, "upper") ? 'u' : !strcmp(name, "lower") ? 'l'
                          : !strcmp(name, "title") ? 't' : 'c');
}

tpl_value tpl_call_method(tpl_eval *ev, const tpl_node *at, tpl_value self, const char *name,
                          const tpl_value *args, const char *const *kw, size_t n)
{
    if (self.kind == V_STR)
        return string_method(ev, at, self, name, args, kw, n);
    if (!strcmp(name, "get")) {
        tpl_value key = want(ev, at, arg(args, kw, n, 0, NULL), V_STR, "get");
        const tpl_value *fallback = arg(args, kw, n, 1, NULL);
        tpl_value *v = tpl_dict_get(self.u.dict, key.u.str.s, key.u.str.len);
        return v ? *v : fallback ? *fallback : tpl_none();
    }
    check_count(ev, at, name, n, 0);
    if (!strcmp(name, "items"))
        return items_of(ev, at, self);
    tpl_value out = tpl_new_list(ev);
    for (size_t i = 0; i < self.u.dict->n; i++)
        tpl_list_push(ev, out.u.list, name[0] == 'k' ? self.u.dict->keys[i] : self.u.dict->vals[i]);
    return out;
}

/* ---- global functions ---- */
tpl_value tpl_call_function(tpl_eval *ev, const tpl_node *at, const char *name,
                            const tpl_value *args, const char *const *kw, size_t n)
{
    if (!strcmp(name, "raise_exception")) {
        tpl_buf b = {0};
        if (n)
            tpl_buf_str(ev, &b, args[0]);
        snprintf(ev->err, ev->errlen, "%s", b.s ? b.s : "");
        ev->status = MR_TEMPLATE_ERAISE;
        longjmp(ev->fail, 1);
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        tpl_value d = tpl_new_dict(ev, name[0] == 'n' ? V_NAMESPACE : V_DICT);
        for (size_t i = 0; i < n; i++) {
            if (kw[i]) {
                tpl_dict_set(ev, d.u.dict, tpl_cstr(kw[i]), args[i]);
            } else if (args[i].kind == V_DICT) { /* namespace(a_dict) */
                for (size_t k = 0; k < args[i].u.dict->n; k++)
                    tpl_dict_set(ev, d.u.dict, args[i].u.dict->keys[k], args[i].u.dict->vals[k]);
            } else {
                tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "%s takes name=value arguments", name);
            }
        }
        return d;
    }
    if (!strcmp(name, "strftime_now")) {
        tpl_value fmt = want(ev, at, arg(args, kw, n, 0, NULL), V_STR, "strftime_now");
        time_t t = (time_t)ev->now;
        struct tm tm;
        char out[256];
        /* The format is the template's, as strftime_now's is in Python. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        if (!gmtime_r(&t, &tm) || !strftime(out, sizeof out, cstr(ev, fmt), &tm))
            out[0] = '\0';
#pragma GCC diagnostic pop
        return tpl_str(ev, out, strlen(out));
    }
    /* range(stop) or range(start, stop[, step]) */
    int64_t r[3] = {0, 0, 1};
    if (n < 1 || n > 3)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "range takes 1 to 3 integers, got %zu", n);
    for (size_t i = 0; i < n; i++)
        r[n == 1 ? 1 : i] = want(ev, at, &args[i], V_INT, "range").u.i;
    if (!r[2])
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "range: step cannot be zero");
    /* jinja2's sandbox, which transformers renders in, refuses more */
    double count = ((double)r[1] - (double)r[0]) / (double)r[2];
    if (count > 100000)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "range too big (more than 100000 items)");
    tpl_value out = tpl_new_list(ev);
    for (int64_t i = r[0]; r[2] > 0 ? i < r[1] : i > r[1]; i += r[2])
        tpl_list_push(ev, out.u.list, tpl_int(i));
    return out;
}
