/*
 * Tokens to a syntax tree, by recursive descent in jinja2's own precedence
 * (lowest first): `x if c else y`, or, and, not, comparisons and `in`,
 * + -, ~, * / // %, **, unary - +, then postfix . [] () and the filters
 * and tests (`|f`, `is t`) that bind tighter than any operator.  Anything
 * outside the subset stops here with its line and column.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "template/internal.h"

typedef struct {
    const tpl_tokens *t;
    size_t i;
    tpl_arena *arena;
    int loops; /* for bodies the parser is in: where break and continue may stand */
    int depth; /* nested expressions and statements, bounded: the parser recurses */
    jmp_buf fail;
    int status;
    char *err;
    size_t errlen;
} parser;

_Noreturn __attribute__((format(printf, 3, 4))) static void fail(parser *p, const tpl_token *at,
                                                                 const char *fmt, ...)
{
    int n = snprintf(p->err, p->errlen, "line %d, column %d: ", at->line, at->col);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < p->errlen)
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    p->status = MR_TEMPLATE_EINVAL;
    longjmp(p->fail, 1);
}

_Noreturn static void out_of_memory(parser *p)
{
    snprintf(p->err, p->errlen, "out of memory");
    p->status = MR_TEMPLATE_ENOMEM;
    longjmp(p->fail, 1);
}

static const tpl_token *peek(parser *p)
{
    return &p->t->v[p->i];
}

static const tpl_token *next(parser *p)
{
    const tpl_token *tk = &p->t->v[p->i];
    if (tk->kind != TK_EOF)
        p->i++;
    return tk;
}

static bool is_op(const tpl_token *tk, const char *op)
{
    return tk->kind == TK_OP && !strcmp(tk->text, op);
}

static bool is_name(const tpl_token *tk, const char *name)
{
    return tk->kind == TK_NAME && !strcmp(tk->text, name);
}

static bool skip_op(parser *p, const char *op)
{
    if (!is_op(peek(p), op))
        return false;
    p->i++;
    return true;
}

static bool skip_name(parser *p, const char *name)
{
    if (!is_name(peek(p), name))
        return false;
    p->i++;
    return true;
}

static const char *shown(const tpl_token *tk)
{
    switch (tk->kind) {
    case TK_EOF: return "the end of the template";
    case TK_BLOCK_END: return "'%}'";
    case TK_VAR_END: return "'}}'";
    case TK_STRING: return "a string";
    case TK_TEXT: return "text";
    default: return tk->text;
    }
}

static void expect_op(parser *p, const char *op)
{
    if (!skip_op(p, op))
        fail(p, peek(p), "expected '%s', found %s", op, shown(peek(p)));
}

static const char *expect_name(parser *p)
{
    const tpl_token *tk = peek(p);
    if (tk->kind != TK_NAME)
        fail(p, tk, "expected a name, found %s", shown(tk));
    p->i++;
    return tk->text;
}

static void expect_end(parser *p, tpl_token_kind kind)
{
    const tpl_token *tk = next(p);
    if (tk->kind != kind)
        fail(p, tk, "expected %s, found %s", kind == TK_BLOCK_END ? "'%}'" : "'}}'", shown(tk));
}

/* How deep expressions and statements may nest: far beyond any template,
 * well within the stack. */
#define MAX_DEPTH 200

static void enter(parser *p)
{
    if (++p->depth > MAX_DEPTH)
        fail(p, peek(p), "nested more than %d deep", MAX_DEPTH);
}

static tpl_node *node(parser *p, tpl_node_kind kind, const tpl_token *at)
{
    tpl_node *n = tpl_alloc(p->arena, sizeof *n);
    if (!n)
        out_of_memory(p);
    n->kind = kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static void add(parser *p, tpl_nodes *list, tpl_node *n)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 4;
        tpl_node **v = tpl_alloc(p->arena, cap * sizeof *v);
        if (!v)
            out_of_memory(p);
        if (list->n)
            memcpy(v, list->v, list->n * sizeof *v);
        list->v = v;
        list->cap = cap;
    }
    list->v[list->n++] = n;
}

static void add_name(parser *p, tpl_node *n, const char *name)
{
    const char **v = tpl_alloc(p->arena, (n->n_names + 1) * sizeof *v);
    if (!v)
        out_of_memory(p);
    if (n->n_names)
        memcpy(v, n->names, n->n_names * sizeof *v);
    v[n->n_names++] = name;
    n->names = v;
}

static tpl_node *binary(parser *p, const tpl_token *at, const char *op, tpl_node *a, tpl_node *b)
{
    tpl_node *n = node(p, E_BINARY, at);
    n->name = op;
    n->a = a;
    n->b = b;
    return n;
}

/* ---- expressions ---- */
static tpl_node *parse_expr(parser *p);
static tpl_node *parse_or(parser *p);
static tpl_node *parse_unary(parser *p, bool with_filter);

/* Arguments up to `)`: positional, then name=value. */
static void parse_args(parser *p, tpl_nodes *args)
{
    bool keywords = false;
    while (!skip_op(p, ")")) {
        if (args->n)
            expect_op(p, ",");
        if (skip_op(p, ")"))
            break;
        const tpl_token *tk = peek(p);
        if (is_op(tk, "*") || is_op(tk, "**"))
            fail(p, tk, "unsupported: *args and **kwargs in a call");
        const char *kw = NULL;
        if (tk->kind == TK_NAME && is_op(&p->t->v[p->i + 1], "=")) {
            kw = tk->text;
            p->i += 2;
            keywords = true;
        } else if (keywords) {
            fail(p, tk, "a positional argument after a keyword argument");
        }
        tpl_node *arg = parse_expr(p);
        arg->kw = kw;
        add(p, args, arg);
    }
}

static tpl_node *parse_primary(parser *p)
{
    const tpl_token *tk = next(p);
    tpl_node *n;
    switch (tk->kind) {
    case TK_NAME:
        n = node(p, E_CONST, tk);
        if (!strcmp(tk->text, "true") || !strcmp(tk->text, "True"))
            n->value = tpl_bool(true);
        else if (!strcmp(tk->text, "false") || !strcmp(tk->text, "False"))
            n->value = tpl_bool(false);
        else if (!strcmp(tk->text, "none") || !strcmp(tk->text, "None"))
            n->value = tpl_none();
        else {
            n->kind = E_NAME;
            n->name = tk->text;
        }
        return n;
    case TK_STRING: {
        /* Adjacent literals are one string, as in Python. */
        size_t len = tk->len, first = p->i - 1;
        while (peek(p)->kind == TK_STRING)
            len += next(p)->len;
        char *s = tpl_alloc(p->arena, len + 1);
        if (!s)
            out_of_memory(p);
        for (size_t k = first, at = 0; k < p->i; at += p->t->v[k].len, k++)
            memcpy(s + at, p->t->v[k].text, p->t->v[k].len);
        n = node(p, E_CONST, tk);
        n->value = (tpl_value){.kind = V_STR, .u.str = {s, len}};
        return n;
    }
    case TK_INT:
        n = node(p, E_CONST, tk);
        n->value = tpl_int(tk->i);
        return n;
    case TK_FLOAT:
        n = node(p, E_CONST, tk);
        n->value = tpl_float(tk->f);
        return n;
    default:
        break;
    }
    if (is_op(tk, "(")) {
        if (skip_op(p, ")"))
            return node(p, E_TUPLE, tk);
        tpl_node *first = parse_expr(p);
        if (skip_op(p, ")"))
            return first;
        n = node(p, E_TUPLE, tk);
        add(p, &n->items, first);
        while (!skip_op(p, ")")) {
            expect_op(p, ",");
            if (skip_op(p, ")"))
                break;
            add(p, &n->items, parse_expr(p));
        }
        return n;
    }
    if (is_op(tk, "[")) {
        n = node(p, E_LIST, tk);
        while (!skip_op(p, "]")) {
            if (n->items.n)
                expect_op(p, ",");
            if (skip_op(p, "]"))
                break;
            add(p, &n->items, parse_expr(p));
        }
        return n;
    }
    if (is_op(tk, "{")) {
        n = node(p, E_DICT, tk);
        while (!skip_op(p, "}")) {
            if (n->items.n)
                expect_op(p, ",");
            if (skip_op(p, "}"))
                break;
            add(p, &n->items, parse_expr(p));
            expect_op(p, ":");
            add(p, &n->items, parse_expr(p));
        }
        return n;
    }
    fail(p, tk, "expected a value, found %s", shown(tk));
}

/* a[...]: an index or a slice start:stop:step, each part optional. */
static tpl_node *parse_subscript(parser *p, const tpl_token *at, tpl_node *target)
{
    tpl_node *parts[3] = {NULL, NULL, NULL};
    int k = 0;
    if (!is_op(peek(p), ":"))
        parts[0] = parse_expr(p);
    while (k < 2 && skip_op(p, ":")) {
        k++;
        if (!is_op(peek(p), ":") && !is_op(peek(p), "]"))
            parts[k] = parse_expr(p);
    }
    if (is_op(peek(p), ","))
        fail(p, peek(p), "unsupported: a tuple as an index");
    expect_op(p, "]");
    tpl_node *n = node(p, k ? E_SLICE : E_INDEX, at);
    n->a = target;
    if (!k) {
        n->b = parts[0];
        return n;
    }
    for (int j = 0; j < 3; j++)
        add(p, &n->items, parts[j]);
    return n;
}

static tpl_node *parse_postfix(parser *p, tpl_node *n)
{
    for (;;) {
        const tpl_token *tk = peek(p);
        if (skip_op(p, ".")) {
            const tpl_token *name = next(p);
            if (name->kind != TK_NAME && name->kind != TK_INT)
                fail(p, name, "expected an attribute name after '.', found %s", shown(name));
            tpl_node *attr = node(p, name->kind == TK_NAME ? E_ATTR : E_INDEX, tk);
            attr->a = n;
            if (name->kind == TK_NAME) {
                attr->name = name->text;
            } else { /* x.0 is x[0] */
                attr->b = node(p, E_CONST, name);
                attr->b->value = tpl_int(name->i);
            }
            n = attr;
        } else if (skip_op(p, "[")) {
            n = parse_subscript(p, tk, n);
        } else if (skip_op(p, "(")) {
            tpl_node *call = node(p, E_CALL, tk);
            call->a = n;
            parse_args(p, &call->items);
            n = call;
        } else {
            return n;
        }
    }
}

/* A filter or test name, dotted names included as jinja2 allows them. */
static const char *dotted_name(parser *p)
{
    const tpl_token *tk = peek(p);
    const char *name = expect_name(p);
    if (is_op(peek(p), "."))
        fail(p, tk, "unsupported: a dotted filter or test name");
    return name;
}

static tpl_node *parse_filters_and_tests(parser *p, tpl_node *n)
{
    for (;;) {
        const tpl_token *tk = peek(p);
        if (skip_op(p, "|")) {
            const tpl_token *at = peek(p);
            tpl_node *f = node(p, E_FILTER, at);
            f->name = dotted_name(p);
            if (!tpl_has_filter(f->name))
                fail(p, at, "unsupported filter '%s'", f->name);
            f->a = n;
            if (skip_op(p, "("))
                parse_args(p, &f->items);
            n = f;
        } else if (skip_name(p, "is")) {
            tpl_node *t = node(p, E_TEST, tk);
            t->negate = skip_name(p, "not");
            const tpl_token *at = peek(p);
            t->name = dotted_name(p);
            if (!tpl_has_test(t->name))
                fail(p, at, "unsupported test '%s'", t->name);
            t->a = n;
            const tpl_token *arg = peek(p);
            if (skip_op(p, "(")) {
                parse_args(p, &t->items);
            } else if ((arg->kind == TK_NAME || arg->kind == TK_STRING || arg->kind == TK_INT ||
                        arg->kind == TK_FLOAT || is_op(arg, "[") || is_op(arg, "{")) &&
                       !is_name(arg, "else") && !is_name(arg, "or") && !is_name(arg, "and")) {
                /* jinja2 takes one argument without parentheses: `x is sameas none` */
                if (is_name(arg, "is"))
                    fail(p, arg, "tests cannot be chained with 'is'");
                add(p, &t->items, parse_postfix(p, parse_primary(p)));
            }
            n = t;
        } else if (skip_op(p, "(")) {
            tpl_node *call = node(p, E_CALL, tk);
            call->a = n;
            parse_args(p, &call->items);
            n = call;
        } else {
            return n;
        }
    }
}

static tpl_node *parse_unary(parser *p, bool with_filter)
{
    const tpl_token *tk = peek(p);
    tpl_node *n;
    if (skip_op(p, "-") || skip_op(p, "+")) {
        enter(p);
        n = node(p, tk->text[0] == '-' ? E_NEG : E_POS, tk);
        n->a = parse_unary(p, false);
        p->depth--;
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    return with_filter ? parse_filters_and_tests(p, n) : n;
}

static tpl_node *parse_pow(parser *p)
{
    tpl_node *n = parse_unary(p, true);
    for (const tpl_token *tk; tk = peek(p), skip_op(p, "**");)
        n = binary(p, tk, "**", n, parse_unary(p, true));
    return n;
}

static tpl_node *parse_math2(parser *p)
{
    static const char *const ops[] = {"*", "/", "//", "%"};
    tpl_node *n = parse_pow(p);
    for (;;) {
        const tpl_token *tk = peek(p);
        size_t k = 0;
        while (k < 4 && !is_op(tk, ops[k]))
            k++;
        if (k == 4)
            return n;
        p->i++;
        n = binary(p, tk, ops[k], n, parse_pow(p));
    }
}

static tpl_node *parse_concat(parser *p)
{
    tpl_node *n = parse_math2(p);
    for (const tpl_token *tk; tk = peek(p), skip_op(p, "~");)
        n = binary(p, tk, "~", n, parse_math2(p));
    return n;
}

static tpl_node *parse_math1(parser *p)
{
    tpl_node *n = parse_concat(p);
    for (;;) {
        const tpl_token *tk = peek(p);
        if (!is_op(tk, "+") && !is_op(tk, "-"))
            return n;
        p->i++;
        n = binary(p, tk, tk->text, n, parse_concat(p));
    }
}

/* Comparisons chain as Python's do: a < b < c is a < b and b < c. */
static tpl_node *parse_compare(parser *p)
{
    static const char *const ops[] = {"==", "!=", "<", ">", "<=", ">="};
    tpl_node *left = parse_math1(p), *result = NULL;
    for (;;) {
        const tpl_token *tk = peek(p);
        const char *op = NULL;
        for (size_t k = 0; k < 6 && !op; k++)
            if (is_op(tk, ops[k]))
                op = ops[k];
        if (op) {
            p->i++;
        } else if (is_name(tk, "in")) {
            p->i++;
            op = "in";
        } else if (is_name(tk, "not") && is_name(&p->t->v[p->i + 1], "in")) {
            p->i += 2;
            op = "not in";
        } else {
            return result ? result : left;
        }
        tpl_node *right = parse_math1(p);
        tpl_node *cmp = binary(p, tk, op, left, right);
        if (result) {
            tpl_node *both = node(p, E_AND, tk);
            both->a = result;
            both->b = cmp;
            cmp = both;
        }
        result = cmp;
        left = right;
    }
}

static tpl_node *parse_not(parser *p)
{
    const tpl_token *tk = peek(p);
    if (!skip_name(p, "not"))
        return parse_compare(p);
    enter(p);
    tpl_node *n = node(p, E_NOT, tk);
    n->a = parse_not(p);
    p->depth--;
    return n;
}

static tpl_node *parse_and(parser *p)
{
    tpl_node *n = parse_not(p);
    for (const tpl_token *tk; tk = peek(p), skip_name(p, "and");) {
        tpl_node *both = node(p, E_AND, tk);
        both->a = n;
        both->b = parse_not(p);
        n = both;
    }
    return n;
}

static tpl_node *parse_or(parser *p)
{
    tpl_node *n = parse_and(p);
    for (const tpl_token *tk; tk = peek(p), skip_name(p, "or");) {
        tpl_node *either = node(p, E_OR, tk);
        either->a = n;
        either->b = parse_and(p);
        n = either;
    }
    return n;
}

static tpl_node *parse_expr(parser *p)
{
    enter(p);
    tpl_node *n = parse_or(p);
    for (const tpl_token *tk; tk = peek(p), skip_name(p, "if");) {
        tpl_node *cond = node(p, E_COND, tk);
        cond->a = parse_or(p);
        cond->b = n;
        if (skip_name(p, "else"))
            cond->c = parse_expr(p);
        n = cond;
    }
    p->depth--;
    return n;
}

/* ---- statements ---- */

/* Statements up to a {% that opens with one of `ends` (NULL-terminated):
 * returns that word, the parser on the token after it. */
static const char *parse_body(parser *p, tpl_nodes *body, const char *const *ends,
                              const tpl_token *opened, const char *what);

static void parse_if(parser *p, tpl_node *n, const tpl_token *opened)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    n->a = parse_expr(p);
    expect_end(p, TK_BLOCK_END);
    const char *end = parse_body(p, &n->body, ends, opened, "endif");
    if (!strcmp(end, "elif")) {
        tpl_node *elif = node(p, N_IF, &p->t->v[p->i - 1]);
        add(p, &n->orelse, elif);
        parse_if(p, elif, opened);
    } else if (!strcmp(end, "else")) {
        static const char *const endif[] = {"endif", NULL};
        expect_end(p, TK_BLOCK_END);
        parse_body(p, &n->orelse, endif, opened, "endif");
        expect_end(p, TK_BLOCK_END);
    } else {
        expect_end(p, TK_BLOCK_END);
    }
}

static void parse_for(parser *p, tpl_node *n, const tpl_token *opened)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    do
        add_name(p, n, expect_name(p));
    while (skip_op(p, ","));
    if (!skip_name(p, "in"))
        fail(p, peek(p), "expected 'in', found %s", shown(peek(p)));
    n->a = parse_or(p); /* `if` after it filters the loop, as in jinja2 */
    if (skip_name(p, "if"))
        n->b = parse_or(p);
    if (is_name(peek(p), "recursive"))
        fail(p, peek(p), "unsupported: recursive loops");
    expect_end(p, TK_BLOCK_END);
    p->loops++;
    const char *end = parse_body(p, &n->body, ends, opened, "endfor");
    p->loops--;
    if (!strcmp(end, "else")) {
        static const char *const endfor[] = {"endfor", NULL};
        expect_end(p, TK_BLOCK_END);
        parse_body(p, &n->orelse, endfor, opened, "endfor");
    }
    expect_end(p, TK_BLOCK_END);
}

static void parse_set(parser *p, tpl_node *n, const tpl_token *opened)
{
    n->name = expect_name(p);
    if (skip_op(p, "."))
        n->attr = expect_name(p);
    if (is_op(peek(p), ","))
        fail(p, peek(p), "unsupported: set of several names");
    if (peek(p)->kind == TK_BLOCK_END)
        fail(p, opened, "unsupported: a set block ({%% set x %%}...{%% endset %%})");
    expect_op(p, "=");
    n->a = parse_expr(p);
    expect_end(p, TK_BLOCK_END);
}

static void parse_macro(parser *p, tpl_node *n, const tpl_token *opened)
{
    static const char *const ends[] = {"endmacro", NULL};
    n->name = expect_name(p);
    expect_op(p, "(");
    while (!skip_op(p, ")")) {
        if (n->n_names)
            expect_op(p, ",");
        add_name(p, n, expect_name(p));
        add(p, &n->items, skip_op(p, "=") ? parse_expr(p) : NULL);
    }
    expect_end(p, TK_BLOCK_END);
    int loops = p->loops; /* a loop around the macro is not the macro's */
    p->loops = 0;
    parse_body(p, &n->body, ends, opened, "endmacro");
    p->loops = loops;
    if (peek(p)->kind == TK_NAME) /* {% endmacro name %} */
        p->i++;
    expect_end(p, TK_BLOCK_END);
}

static const char *parse_body(parser *p, tpl_nodes *body, const char *const *ends,
                              const tpl_token *opened, const char *what)
{
    enter(p);
    for (;;) {
        const tpl_token *tk = next(p);
        if (tk->kind == TK_EOF) {
            if (!ends) {
                p->depth--;
                return NULL;
            }
            fail(p, opened, "'%s' is never closed (no {%% %s %%})", opened->text, what);
        }
        if (tk->kind == TK_TEXT) {
            tpl_node *n = node(p, N_TEXT, tk);
            n->value = (tpl_value){.kind = V_STR, .u.str = {tk->text, tk->len}};
            add(p, body, n);
            continue;
        }
        if (tk->kind == TK_VAR_BEGIN) {
            tpl_node *n = node(p, N_OUTPUT, tk);
            n->a = parse_expr(p);
            expect_end(p, TK_VAR_END);
            add(p, body, n);
            continue;
        }
        const tpl_token *word = next(p);
        if (word->kind != TK_NAME)
            fail(p, word, "expected a statement name, found %s", shown(word));
        for (size_t k = 0; ends && ends[k]; k++)
            if (!strcmp(word->text, ends[k])) {
                p->depth--;
                return ends[k];
            }
        tpl_node *n;
        if (!strcmp(word->text, "if")) {
            parse_if(p, n = node(p, N_IF, word), word);
        } else if (!strcmp(word->text, "for")) {
            parse_for(p, n = node(p, N_FOR, word), word);
        } else if (!strcmp(word->text, "set")) {
            parse_set(p, n = node(p, N_SET, word), word);
        } else if (!strcmp(word->text, "macro")) {
            parse_macro(p, n = node(p, N_MACRO, word), word);
        } else if (!strcmp(word->text, "break") || !strcmp(word->text, "continue")) {
            if (!p->loops)
                fail(p, word, "'%s' outside a for loop", word->text);
            n = node(p, word->text[0] == 'b' ? N_BREAK : N_CONTINUE, word);
            expect_end(p, TK_BLOCK_END);
        } else if (!strncmp(word->text, "end", 3) || !strcmp(word->text, "else") ||
                   !strcmp(word->text, "elif")) {
            fail(p, word, "'%s' without the statement it belongs to", word->text);
        } else {
            fail(p, word, "unsupported statement '%s'", word->text);
        }
        add(p, body, n);
    }
}

int tpl_parse(const tpl_tokens *tokens, tpl_arena *a, tpl_nodes *out, char *err, size_t errlen)
{
    parser p = {.t = tokens, .arena = a, .err = err, .errlen = errlen};
    if (setjmp(p.fail))
        return p.status;
    parse_body(&p, out, NULL, NULL, NULL);
    return MR_TEMPLATE_OK;
}
