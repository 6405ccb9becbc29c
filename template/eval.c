/*
 * Rendering: statements write into a buffer, expressions give values, with
 * jinja2's scoping (a for body is a scope of its own each time round, `if`
 * is not one; a macro sees the template's top level and its arguments) and
 * Python's operators.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

struct tpl_frame {
    tpl_frame *parent;
    const char **names;
    tpl_value *vals;
    size_t n, cap;
};

tpl_frame *tpl_frame_new(tpl_eval *ev, tpl_frame *parent)
{
    tpl_frame *f = tpl_need(ev, sizeof *f);
    f->parent = parent;
    return f;
}

void tpl_frame_set(tpl_eval *ev, tpl_frame *f, const char *name, tpl_value v)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        const char **names = tpl_need(ev, cap * sizeof *names);
        tpl_value *vals = tpl_need(ev, cap * sizeof *vals);
        if (f->n) {
            memcpy(names, f->names, f->n * sizeof *names);
            memcpy(vals, f->vals, f->n * sizeof *vals);
        }
        f->names = names;
        f->vals = vals;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static tpl_value *lookup(tpl_frame *f, const char *name)
{
    for (; f; f = f->parent)
        for (size_t i = 0; i < f->n; i++)
            if (!strcmp(f->names[i], name))
                return &f->vals[i];
    return NULL;
}

static tpl_value eval(tpl_eval *ev, tpl_frame *f, const tpl_node *n);

static bool is_int(tpl_value v)
{
    return v.kind == V_INT || v.kind == V_BOOL;
}

static int64_t int_of(tpl_value v)
{
    return v.kind == V_INT ? v.u.i : v.u.b;
}

static double float_of(tpl_value v)
{
    return v.kind == V_FLOAT ? v.u.f : (double)int_of(v);
}

static bool is_num(tpl_value v)
{
    return is_int(v) || v.kind == V_FLOAT;
}

/* a[i] of a list or string, Python's negative indices included;
 * undefined out of range. */
static tpl_value index_of(tpl_eval *ev, tpl_value a, int64_t i)
{
    if (a.kind == V_LIST) {
        int64_t n = (int64_t)a.u.list->n;
        if (i < 0)
            i += n;
        return i >= 0 && i < n ? a.u.list->v[i] : tpl_undefined();
    }
    size_t *off;
    int64_t n = (int64_t)tpl_utf8_offsets(ev, a.u.str.s, a.u.str.len, &off);
    if (i < 0)
        i += n;
    if (i < 0 || i >= n)
        return tpl_undefined();
    return (tpl_value){.kind = V_STR, .u.str = {a.u.str.s + off[i], off[i + 1] - off[i]}};
}

/* Python's slice a[start:stop:step] of a list or a string (by code point). */
static tpl_value slice(tpl_eval *ev, const tpl_node *at, tpl_value a, const tpl_value *part)
{
    for (int k = 0; k < 3; k++)
        if (part[k].kind != V_NONE && !is_int(part[k]))
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "slice indices must be integers, not %s",
                     tpl_kind_name(part[k].kind));
    if (a.kind != V_LIST && a.kind != V_STR)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "cannot slice a %s", tpl_kind_name(a.kind));
    size_t *off = NULL;
    int64_t n = a.kind == V_LIST ? (int64_t)a.u.list->n
                                 : (int64_t)tpl_utf8_offsets(ev, a.u.str.s, a.u.str.len, &off);
    int64_t step = part[2].kind == V_NONE ? 1 : int_of(part[2]);
    if (step == 0)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "slice step cannot be zero");
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? n - 1 : n, bound[2];
    for (int k = 0; k < 2; k++) {
        if (part[k].kind == V_NONE) {
            bound[k] = k == 0 ? (step > 0 ? 0 : n - 1) : (step > 0 ? n : -1);
            continue;
        }
        int64_t v = int_of(part[k]);
        if (v < 0)
            v += n;
        bound[k] = v < lo ? lo : v > hi ? hi : v;
    }
    tpl_value out = a.kind == V_LIST ? tpl_new_list(ev) : tpl_cstr("");
    tpl_buf b = {0};
    for (int64_t i = bound[0]; step > 0 ? i < bound[1] : i > bound[1]; i += step) {
        if (a.kind == V_LIST)
            tpl_list_push(ev, out.u.list, a.u.list->v[i]);
        else
            tpl_buf_put(ev, &b, a.u.str.s + off[i], off[i + 1] - off[i]);
    }
    return a.kind == V_STR ? tpl_buf_value(&b) : out;
}

/* obj.name: a method of it, else its member; undefined when it has none. */
static tpl_value attribute(tpl_eval *ev, const tpl_node *at, tpl_value obj, const char *name)
{
    if (obj.kind == V_UNDEFINED)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "cannot read '%s' of an undefined value", name);
    if (obj.kind != V_NAMESPACE && tpl_method_exists(obj, name)) {
        tpl_value m = {.kind = V_METHOD, .u.method = {tpl_need(ev, sizeof(tpl_value)), name}};
        *m.u.method.self = obj;
        return m;
    }
    if (obj.kind == V_DICT || obj.kind == V_NAMESPACE) {
        tpl_value *v = tpl_dict_get(obj.u.dict, name, strlen(name));
        return v ? *v : tpl_undefined();
    }
    return tpl_undefined();
}

/* obj[key]: its item, else (a string key) its attribute. */
static tpl_value item(tpl_eval *ev, const tpl_node *at, tpl_value obj, tpl_value key)
{
    if (obj.kind == V_UNDEFINED)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "cannot index an undefined value");
    if ((obj.kind == V_LIST || obj.kind == V_STR) && is_int(key))
        return index_of(ev, obj, int_of(key));
    if ((obj.kind == V_DICT || obj.kind == V_NAMESPACE) && key.kind == V_STR) {
        tpl_value *v = tpl_dict_get(obj.u.dict, key.u.str.s, key.u.str.len);
        if (v)
            return *v;
    }
    if (key.kind == V_STR && !memchr(key.u.str.s, '\0', key.u.str.len))
        return attribute(ev, at, obj, tpl_str(ev, key.u.str.s, key.u.str.len).u.str.s);
    return tpl_undefined();
}

/* The longest string `*` makes: more is a mistake, not a prompt. */
#define MAX_STRING (16 << 20)

static tpl_value arith(tpl_eval *ev, const tpl_node *at, const char *op, tpl_value a, tpl_value b)
{
    if (!strcmp(op, "+") && a.kind == V_STR && b.kind == V_STR) {
        tpl_buf buf = {0};
        tpl_buf_put(ev, &buf, a.u.str.s, a.u.str.len);
        tpl_buf_put(ev, &buf, b.u.str.s, b.u.str.len);
        return tpl_buf_value(&buf);
    }
    if (!strcmp(op, "+") && a.kind == V_LIST && b.kind == V_LIST) {
        tpl_value l = tpl_new_list(ev);
        for (size_t i = 0; i < a.u.list->n; i++)
            tpl_list_push(ev, l.u.list, a.u.list->v[i]);
        for (size_t i = 0; i < b.u.list->n; i++)
            tpl_list_push(ev, l.u.list, b.u.list->v[i]);
        return l;
    }
    if (!strcmp(op, "*") && ((a.kind == V_STR && is_int(b)) || (is_int(a) && b.kind == V_STR))) {
        tpl_value s = a.kind == V_STR ? a : b;
        int64_t times = a.kind == V_STR ? int_of(b) : int_of(a);
        if (times > 0 && s.u.str.len && (uint64_t)times > MAX_STRING / s.u.str.len)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "a string of more than %d bytes", MAX_STRING);
        tpl_buf buf = {0};
        for (int64_t i = 0; i < times; i++)
            tpl_buf_put(ev, &buf, s.u.str.s, s.u.str.len);
        return tpl_buf_value(&buf);
    }
    if (!is_num(a) || !is_num(b))
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "unsupported operand types for %s: %s and %s", op,
                 tpl_kind_name(a.kind), tpl_kind_name(b.kind));
    bool ints = is_int(a) && is_int(b);
    int64_t x = ints ? int_of(a) : 0, y = ints ? int_of(b) : 0;
    double fx = float_of(a), fy = float_of(b);
    if ((!strcmp(op, "/") || !strcmp(op, "//") || !strcmp(op, "%")) && fy == 0)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "division by zero");
    switch (op[0]) {
    case '+': return ints ? tpl_int(x + y) : tpl_float(fx + fy);
    case '-': return ints ? tpl_int(x - y) : tpl_float(fx - fy);
    case '/':
        if (op[1] == '/') {
            if (!ints)
                return tpl_float(floor(fx / fy));
            int64_t q = x / y;
            return tpl_int(q - ((x % y != 0) && ((x < 0) != (y < 0))));
        }
        return tpl_float(fx / fy);
    case '%':
        if (ints) {
            int64_t r = x % y;
            return tpl_int(r && ((r < 0) != (y < 0)) ? r + y : r);
        } else {
            double r = fmod(fx, fy);
            return tpl_float(r && ((r < 0) != (fy < 0)) ? r + fy : r);
        }
    default: /* "*" and "**" */
        if (op[1] != '*')
            return ints ? tpl_int(x * y) : tpl_float(fx * fy);
        if (ints && y >= 0) {
            int64_t r = 1;
            for (int64_t i = 0; i < y; i++)
                r *= x;
            return tpl_int(r);
        }
        return tpl_float(pow(fx, fy));
    }
}

static tpl_value compare(tpl_eval *ev, const tpl_node *at, const char *op, tpl_value a,
                         tpl_value b)
{
    if (!strcmp(op, "=="))
        return tpl_bool(tpl_equal(a, b));
    if (!strcmp(op, "!="))
        return tpl_bool(!tpl_equal(a, b));
    if (!strcmp(op, "in") || !strcmp(op, "not in")) {
        bool found = false;
        if (b.kind == V_STR && a.kind == V_STR) {
            found = !a.u.str.len;
            for (size_t i = 0; !found && i + a.u.str.len <= b.u.str.len; i++)
                found = !memcmp(b.u.str.s + i, a.u.str.s, a.u.str.len);
        } else if (b.kind == V_LIST) {
            for (size_t i = 0; !found && i < b.u.list->n; i++)
                found = tpl_equal(a, b.u.list->v[i]);
        } else if ((b.kind == V_DICT || b.kind == V_NAMESPACE) && a.kind == V_STR) {
            found = tpl_dict_get(b.u.dict, a.u.str.s, a.u.str.len) != NULL;
        } else if (b.kind != V_UNDEFINED && !(b.kind == V_DICT || b.kind == V_NAMESPACE)) {
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "'in' needs a string, list or dict on its right, "
                     "not %s%s", tpl_kind_name(b.kind), b.kind == V_STR ? " with a non-string" : "");
        }
        return tpl_bool(found == (op[0] == 'i'));
    }
    int c;
    if (is_num(a) && is_num(b)) {
        double x = float_of(a), y = float_of(b);
        if (is_int(a) && is_int(b))
            c = (int_of(a) > int_of(b)) - (int_of(a) < int_of(b));
        else
            c = (x > y) - (x < y);
    } else if (a.kind == V_STR && b.kind == V_STR) {
        size_t n = a.u.str.len < b.u.str.len ? a.u.str.len : b.u.str.len;
        c = memcmp(a.u.str.s, b.u.str.s, n);
        if (!c)
            c = (a.u.str.len > b.u.str.len) - (a.u.str.len < b.u.str.len);
    } else {
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "'%s' not supported between %s and %s", op,
                 tpl_kind_name(a.kind), tpl_kind_name(b.kind));
    }
    bool r = !strcmp(op, "<") ? c < 0 : !strcmp(op, ">") ? c > 0 : !strcmp(op, "<=") ? c <= 0 : c >= 0;
    return tpl_bool(r);
}

/* Arguments of a call, filter or test, evaluated. */
typedef struct {
    tpl_value *v;
    const char **kw;
    size_t n;
} args;

static args eval_args(tpl_eval *ev, tpl_frame *f, const tpl_nodes *items)
{
    args a = {.n = items->n};
    if (a.n) {
        a.v = tpl_need(ev, a.n * sizeof *a.v);
        a.kw = tpl_need(ev, a.n * sizeof *a.kw);
    }
    for (size_t i = 0; i < a.n; i++) {
        a.v[i] = eval(ev, f, items->v[i]);
        a.kw[i] = items->v[i]->kw;
    }
    return a;
}

/* Macro calls that may be in progress at once, as Python's recursion limit
 * stops a runaway recursion before the stack does. */
#define MAX_MACRO_DEPTH 100

static tpl_value call_macro(tpl_eval *ev, const tpl_node *at, const tpl_node *macro, args a)
{
    if (++ev->macro_depth > MAX_MACRO_DEPTH)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "macro calls nested more than %d deep",
                 MAX_MACRO_DEPTH);
    tpl_frame *f = tpl_frame_new(ev, ev->root);
    bool *given = tpl_need(ev, (macro->n_names + 1) * sizeof *given);
    size_t positional = 0;
    for (size_t i = 0; i < a.n; i++) {
        size_t k = 0;
        if (!a.kw[i]) {
            k = positional++;
        } else {
            while (k < macro->n_names && strcmp(macro->names[k], a.kw[i]))
                k++;
        }
        if (k >= macro->n_names)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, at, "macro '%s' takes no argument %s%s",
                     macro->name, a.kw[i] ? "named " : "number ", a.kw[i] ? a.kw[i] : "past its last");
        tpl_frame_set(ev, f, macro->names[k], a.v[i]);
        given[k] = true;
    }
    for (size_t k = 0; k < macro->n_names; k++)
        if (!given[k])
            tpl_frame_set(ev, f, macro->names[k],
                          macro->items.v[k] ? eval(ev, f, macro->items.v[k]) : tpl_undefined());
    tpl_buf out = {0};
    tpl_eval_body(ev, f, &macro->body, &out);
    ev->macro_depth--;
    return tpl_buf_value(&out);
}

static tpl_value call(tpl_eval *ev, tpl_frame *f, const tpl_node *n)
{
    tpl_value callee = eval(ev, f, n->a);
    args a = eval_args(ev, f, &n->items);
    switch (callee.kind) {
    case V_METHOD:
        return tpl_call_method(ev, n, *callee.u.method.self, callee.u.method.name, a.v, a.kw, a.n);
    case V_FUNCTION: return tpl_call_function(ev, n, callee.u.function, a.v, a.kw, a.n);
    case V_MACRO: return call_macro(ev, n, callee.u.macro, a);
    case V_UNDEFINED:
        if (n->a->kind == E_NAME)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "'%s' is undefined", n->a->name);
        if (n->a->kind == E_ATTR)
            tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "unsupported method '%s'", n->a->name);
        tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "an undefined value is not callable");
    default:
        tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "a %s is not callable", tpl_kind_name(callee.kind));
    }
}

static tpl_value eval(tpl_eval *ev, tpl_frame *f, const tpl_node *n)
{
    switch (n->kind) {
    case E_CONST: return n->value;
    case E_NAME: {
        tpl_value *v = lookup(f, n->name);
        return v ? *v : tpl_undefined();
    }
    case E_LIST: case E_TUPLE: {
        tpl_value l = tpl_new_list(ev);
        for (size_t i = 0; i < n->items.n; i++)
            tpl_list_push(ev, l.u.list, eval(ev, f, n->items.v[i]));
        return l;
    }
    case E_DICT: {
        tpl_value d = tpl_new_dict(ev, V_DICT);
        for (size_t i = 0; i + 1 < n->items.n; i += 2) {
            tpl_value k = eval(ev, f, n->items.v[i]);
            if (k.kind != V_STR)
                tpl_fail(ev, MR_TEMPLATE_EINVAL, n->items.v[i],
                         "unsupported: a dict key that is not a string");
            tpl_dict_set(ev, d.u.dict, k, eval(ev, f, n->items.v[i + 1]));
        }
        return d;
    }
    case E_ATTR: return attribute(ev, n, eval(ev, f, n->a), n->name);
    case E_INDEX: {
        tpl_value obj = eval(ev, f, n->a);
        return item(ev, n, obj, eval(ev, f, n->b));
    }
    case E_SLICE: {
        tpl_value obj = eval(ev, f, n->a), part[3];
        for (int k = 0; k < 3; k++)
            part[k] = n->items.v[k] ? eval(ev, f, n->items.v[k]) : tpl_none();
        return slice(ev, n, obj, part);
    }
    case E_CALL: return call(ev, f, n);
    case E_FILTER: {
        tpl_value in = eval(ev, f, n->a);
        args a = eval_args(ev, f, &n->items);
        return tpl_filter(ev, n, n->name, in, a.v, a.kw, a.n);
    }
    case E_TEST: {
        tpl_value in = eval(ev, f, n->a);
        args a = eval_args(ev, f, &n->items);
        return tpl_bool(tpl_test(ev, n, n->name, in, a.v, a.n) != n->negate);
    }
    case E_NEG: case E_POS: {
        tpl_value v = eval(ev, f, n->a);
        if (!is_num(v))
            tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "bad operand type for unary %c: %s",
                     n->kind == E_NEG ? '-' : '+', tpl_kind_name(v.kind));
        if (n->kind == E_POS)
            return is_int(v) ? tpl_int(int_of(v)) : v;
        return is_int(v) ? tpl_int(-int_of(v)) : tpl_float(-v.u.f);
    }
    case E_NOT: return tpl_bool(!tpl_truthy(eval(ev, f, n->a)));
    case E_AND: {
        tpl_value a = eval(ev, f, n->a);
        return tpl_truthy(a) ? eval(ev, f, n->b) : a;
    }
    case E_OR: {
        tpl_value a = eval(ev, f, n->a);
        return tpl_truthy(a) ? a : eval(ev, f, n->b);
    }
    case E_COND:
        if (tpl_truthy(eval(ev, f, n->a)))
            return eval(ev, f, n->b);
        return n->c ? eval(ev, f, n->c) : tpl_undefined();
    case E_BINARY: {
        tpl_value a = eval(ev, f, n->a), b = eval(ev, f, n->b);
        if (!strcmp(n->name, "~")) {
            tpl_buf buf = {0};
            tpl_buf_str(ev, &buf, a);
            tpl_buf_str(ev, &buf, b);
            return tpl_buf_value(&buf);
        }
        if (strchr("=!<>", n->name[0]) || !strcmp(n->name, "in") || !strcmp(n->name, "not in"))
            return compare(ev, n, n->name, a, b);
        return arith(ev, n, n->name, a, b);
    }
    default:
        tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "a statement where a value belongs");
    }
}

static void bind_targets(tpl_eval *ev, const tpl_node *n, tpl_frame *f, tpl_value v)
{
    if (n->n_names == 1) {
        tpl_frame_set(ev, f, n->names[0], v);
        return;
    }
    if (v.kind != V_LIST || v.u.list->n != n->n_names)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "cannot unpack a %s into %zu names",
                 tpl_kind_name(v.kind), n->n_names);
    for (size_t k = 0; k < n->n_names; k++)
        tpl_frame_set(ev, f, n->names[k], v.u.list->v[k]);
}

static void loop_set(tpl_eval *ev, tpl_dict *loop, const char *key, tpl_value v)
{
    tpl_dict_set(ev, loop, tpl_cstr(key), v);
}

static void run_for(tpl_eval *ev, tpl_frame *f, const tpl_node *n, tpl_buf *out)
{
    tpl_list *all = tpl_as_list(ev, n, eval(ev, f, n->a), true), *items = all;
    if (n->b) { /* the loop's `if`: loop.index and length count what passes */
        items = tpl_new_list(ev).u.list;
        for (size_t i = 0; i < all->n; i++) {
            tpl_frame *g = tpl_frame_new(ev, f);
            bind_targets(ev, n, g, all->v[i]);
            if (tpl_truthy(eval(ev, g, n->b)))
                tpl_list_push(ev, items, all->v[i]);
        }
    }
    if (!items->n) {
        tpl_eval_body(ev, f, &n->orelse, out);
        return;
    }
    int64_t len = (int64_t)items->n;
    for (int64_t i = 0; i < len; i++) {
        tpl_frame *g = tpl_frame_new(ev, f);
        tpl_value loop = tpl_new_dict(ev, V_DICT);
        loop_set(ev, loop.u.dict, "index", tpl_int(i + 1));
        loop_set(ev, loop.u.dict, "index0", tpl_int(i));
        loop_set(ev, loop.u.dict, "revindex", tpl_int(len - i));
        loop_set(ev, loop.u.dict, "revindex0", tpl_int(len - i - 1));
        loop_set(ev, loop.u.dict, "first", tpl_bool(i == 0));
        loop_set(ev, loop.u.dict, "last", tpl_bool(i == len - 1));
        loop_set(ev, loop.u.dict, "length", tpl_int(len));
        loop_set(ev, loop.u.dict, "previtem", i ? items->v[i - 1] : tpl_undefined());
        loop_set(ev, loop.u.dict, "nextitem", i + 1 < len ? items->v[i + 1] : tpl_undefined());
        tpl_frame_set(ev, g, "loop", loop);
        bind_targets(ev, n, g, items->v[i]);
        tpl_eval_body(ev, g, &n->body, out);
        int control = ev->loop_control;
        ev->loop_control = 0;
        if (control == N_BREAK)
            break;
    }
}

static void run_set(tpl_eval *ev, tpl_frame *f, const tpl_node *n)
{
    tpl_value v = eval(ev, f, n->a);
    if (!n->attr) {
        tpl_frame_set(ev, f, n->name, v);
        return;
    }
    tpl_value *ns = lookup(f, n->name);
    if (!ns || ns->kind != V_NAMESPACE)
        tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "set %s.%s: '%s' is not a namespace()", n->name,
                 n->attr, n->name);
    tpl_dict_set(ev, ns->u.dict, tpl_cstr(n->attr), v);
}

void tpl_eval_body(tpl_eval *ev, tpl_frame *f, const tpl_nodes *body, tpl_buf *out)
{
    for (size_t i = 0; i < body->n && !ev->loop_control; i++) {
        const tpl_node *n = body->v[i];
        switch (n->kind) {
        case N_TEXT: tpl_buf_put(ev, out, n->value.u.str.s, n->value.u.str.len); break;
        case N_OUTPUT: tpl_buf_str(ev, out, eval(ev, f, n->a)); break;
        case N_IF:
            tpl_eval_body(ev, f, tpl_truthy(eval(ev, f, n->a)) ? &n->body : &n->orelse, out);
            break;
        case N_FOR: run_for(ev, f, n, out); break;
        case N_SET: run_set(ev, f, n); break;
        case N_MACRO:
            tpl_frame_set(ev, f, n->name, (tpl_value){.kind = V_MACRO, .u.macro = n});
            break;
        case N_BREAK: case N_CONTINUE: ev->loop_control = n->kind; break;
        default: tpl_fail(ev, MR_TEMPLATE_EINVAL, n, "a value where a statement belongs");
        }
    }
}
