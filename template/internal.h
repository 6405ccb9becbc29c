/*
 * What the files of template/ share: the arena everything lives in, tokens,
 * the syntax tree, values and the evaluator's state.  Private to the folder.
 */
#ifndef MR_TEMPLATE_INTERNAL_H
#define MR_TEMPLATE_INTERNAL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "template/template.h"

/* ---- arena: a compiled template, or one rendering, is freed at once ---- */
typedef struct tpl_block tpl_block;
typedef struct {
    tpl_block *head;
} tpl_arena;
void *tpl_alloc(tpl_arena *a, size_t n); /* zeroed; NULL when out of memory */
char *tpl_strndup(tpl_arena *a, const char *s, size_t n);
void tpl_arena_free(tpl_arena *a);

/* ---- tokens (lexer.c) ---- */
typedef enum {
    TK_TEXT,        /* literal text between tags, whitespace control applied */
    TK_VAR_BEGIN,   /* {{ */
    TK_VAR_END,     /* }} */
    TK_BLOCK_BEGIN, /* {% */
    TK_BLOCK_END,   /* %} */
    TK_NAME,
    TK_STRING, /* decoded */
    TK_INT,
    TK_FLOAT,
    TK_OP, /* an operator or punctuation: text holds it */
    TK_EOF
} tpl_token_kind;

typedef struct {
    tpl_token_kind kind;
    const char *text; /* NUL-terminated, in the template's arena */
    size_t len;
    int64_t i;
    double f;
    int line, col;
} tpl_token;

typedef struct {
    tpl_token *v;
    size_t n, cap;
} tpl_tokens;

int tpl_lex(const char *source, tpl_arena *a, tpl_tokens *out, char *err, size_t errlen);

/* ---- values ---- */
typedef enum {
    V_UNDEFINED,
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_LIST,
    V_DICT,
    V_NAMESPACE, /* a dict whose members `set ns.x = ...` may change */
    V_MACRO,
    V_FUNCTION, /* a global function: namespace, raise_exception, ... */
    V_METHOD    /* a method bound to its object: "abc".upper */
} tpl_kind;

typedef struct tpl_value tpl_value;
typedef struct tpl_list tpl_list;
typedef struct tpl_dict tpl_dict;
typedef struct tpl_node tpl_node;

struct tpl_value {
    tpl_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s;
            size_t len;
        } str;
        tpl_list *list;
        tpl_dict *dict;
        const tpl_node *macro;
        const char *function;
        struct {
            tpl_value *self;
            const char *name;
        } method;
    } u;
};

struct tpl_list {
    tpl_value *v;
    size_t n, cap;
};

struct tpl_dict {
    tpl_value *keys; /* strings, in insertion order */
    tpl_value *vals;
    size_t n, cap;
};

/* ---- syntax tree (parser.c) ---- */
typedef enum {
    /* statements */
    N_TEXT,     /* text */
    N_OUTPUT,   /* {{ a }} */
    N_IF,       /* if a: body, else: orelse (an elif is an N_IF there) */
    N_FOR,      /* for names in a [if b]: body, else: orelse */
    N_SET,      /* set name[.attr] = a */
    N_MACRO,    /* macro name(params = defaults): body */
    N_BREAK,
    N_CONTINUE,
    /* expressions */
    E_CONST,  /* value */
    E_NAME,   /* name */
    E_LIST,   /* [items] */
    E_TUPLE,  /* (items) */
    E_DICT,   /* {items[0]: items[1], ...} */
    E_ATTR,   /* a.name */
    E_INDEX,  /* a[b] */
    E_SLICE,  /* a[items[0]:items[1]:items[2]], any of them NULL */
    E_CALL,   /* a(items), keyword arguments named by their kw */
    E_FILTER, /* a | name(items) */
    E_TEST,   /* a is [not] name(items) */
    E_NEG,
    E_POS,
    E_NOT,
    E_BINARY, /* a op b */
    E_AND,
    E_OR,
    E_COND /* b if a else c */
} tpl_node_kind;

typedef struct {
    tpl_node **v;
    size_t n, cap;
} tpl_nodes;

struct tpl_node {
    tpl_node_kind kind;
    int line, col;
    const char *name; /* names, attributes, filters, tests, operators */
    const char *attr; /* N_SET of ns.attr */
    const char *kw;   /* an argument given as kw=value */
    tpl_node *a, *b, *c;
    tpl_nodes items;            /* arguments, list items, macro defaults (NULL: none) */
    tpl_nodes body, orelse;     /* statements */
    const char **names;         /* N_FOR's targets, N_MACRO's parameters */
    size_t n_names;
    bool negate;                /* is not */
    tpl_value value;            /* E_CONST */
};

int tpl_parse(const tpl_tokens *tokens, tpl_arena *a, tpl_nodes *out, char *err, size_t errlen);
/* Whether parser.c may accept a filter or test of that name (filters.c). */
bool tpl_has_filter(const char *name);
bool tpl_has_test(const char *name);

/* ---- rendering (eval.c, value.c, filters.c) ---- */
typedef struct tpl_frame tpl_frame;
typedef struct { /* text being written, in the rendering's arena */
    char *s;
    size_t len, cap;
} tpl_buf;

typedef struct {
    tpl_arena arena;
    jmp_buf fail;
    int status;
    char *err;
    size_t errlen;
    tpl_frame *root;
    int64_t now;
    int loop_control; /* 0, N_BREAK or N_CONTINUE while one unwinds */
    int macro_depth;  /* macro calls in progress: a recursion is bounded */
} tpl_eval;

/* Leaves the rendering: longjmp to the caller with status and message. */
_Noreturn void tpl_fail(tpl_eval *ev, int status, const tpl_node *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void *tpl_need(tpl_eval *ev, size_t n); /* arena memory, or fail */

tpl_value tpl_undefined(void);
tpl_value tpl_none(void);
tpl_value tpl_bool(bool b);
tpl_value tpl_int(int64_t i);
tpl_value tpl_float(double f);
tpl_value tpl_str(tpl_eval *ev, const char *s, size_t len); /* copies */
tpl_value tpl_cstr(const char *s);                          /* s lives as long as the rendering */
tpl_value tpl_new_list(tpl_eval *ev);
tpl_value tpl_new_dict(tpl_eval *ev, tpl_kind kind);
void tpl_list_push(tpl_eval *ev, tpl_list *l, tpl_value v);
void tpl_dict_set(tpl_eval *ev, tpl_dict *d, tpl_value key, tpl_value v);
/* The member named so, or NULL. */
tpl_value *tpl_dict_get(const tpl_dict *d, const char *key, size_t len);

bool tpl_truthy(tpl_value v);
bool tpl_equal(tpl_value a, tpl_value b);
const char *tpl_kind_name(tpl_kind k);
/* str(v) as Python gives it, appended to b. */
void tpl_buf_put(tpl_eval *ev, tpl_buf *b, const char *s, size_t n);
void tpl_buf_str(tpl_eval *ev, tpl_buf *b, tpl_value v);
tpl_value tpl_buf_value(const tpl_buf *b); /* the text so far, as a string */
tpl_value tpl_to_str(tpl_eval *ev, tpl_value v);
/* json.dumps(v, ensure_ascii=False, indent=indent) as transformers' tojson;
 * indent < 0: on one line. */
void tpl_buf_json(tpl_eval *ev, tpl_buf *b, tpl_value v, int indent, int depth, bool sort_keys,
                  const tpl_node *at);
/* A JSON document as values. */
tpl_value tpl_from_json(tpl_eval *ev, const cJSON *j);

/* What a for loop visits (loop) or a filter takes as a sequence: a list,
 * a dict's keys, a string's code points; nothing for an undefined value,
 * as jinja2 iterates one; another kind fails, worded for each. */
tpl_list *tpl_as_list(tpl_eval *ev, const tpl_node *at, tpl_value v, bool loop);

/* UTF-8: the byte offsets of each code point of s, and the count. */
size_t tpl_utf8_offsets(tpl_eval *ev, const char *s, size_t len, size_t **offsets);

/* filters.c: filters, tests, methods of strings, lists and dicts, global
 * functions.  args[n] are evaluated; kw[i] names args[i] or is NULL. */
tpl_value tpl_filter(tpl_eval *ev, const tpl_node *at, const char *name, tpl_value in,
                     const tpl_value *args, const char *const *kw, size_t n);
bool tpl_test(tpl_eval *ev, const tpl_node *at, const char *name, tpl_value v,
              const tpl_value *args, size_t n);
/* Whether v has a method of that name (v.name is then the bound method). */
bool tpl_method_exists(tpl_value v, const char *name);
tpl_value tpl_call_method(tpl_eval *ev, const tpl_node *at, tpl_value self, const char *name,
                          const tpl_value *args, const char *const *kw, size_t n);
tpl_value tpl_call_function(tpl_eval *ev, const tpl_node *at, const char *name,
                            const tpl_value *args, const char *const *kw, size_t n);
/* The global functions every rendering has. */
extern const char *const tpl_functions[];

/* eval.c */
void tpl_eval_body(tpl_eval *ev, tpl_frame *f, const tpl_nodes *body, tpl_buf *out);
tpl_frame *tpl_frame_new(tpl_eval *ev, tpl_frame *parent);
void tpl_frame_set(tpl_eval *ev, tpl_frame *f, const char *name, tpl_value v);

#endif
