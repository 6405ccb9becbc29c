/*
 * The module's face: compile a template once (lexer.c, parser.c), render
 * it with JSON variables (eval.c) as often as wanted, from any thread: a
 * rendering only reads the compiled tree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

struct mr_template {
    tpl_arena arena;
    tpl_nodes body;
};

int mr_template_compile(const char *source, mr_template **out, char *err, size_t errlen)
{
    *out = NULL;
    mr_template *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return MR_TEMPLATE_ENOMEM;
    }
    tpl_tokens tokens = {0};
    int rc = tpl_lex(source, &t->arena, &tokens, err, errlen);
    if (rc == MR_TEMPLATE_OK)
        rc = tpl_parse(&tokens, &t->arena, &t->body, err, errlen);
    free(tokens.v);
    if (rc != MR_TEMPLATE_OK) {
        mr_template_free(t);
        return rc;
    }
    *out = t;
    return MR_TEMPLATE_OK;
}

void mr_template_free(mr_template *t)
{
    if (!t)
        return;
    tpl_arena_free(&t->arena);
    free(t);
}

int mr_template_render(const mr_template *t, const cJSON *vars, const mr_template_options *opt,
                       char **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    /* On the heap: what longjmp comes back to must not live in registers. */
    tpl_eval *ev = calloc(1, sizeof *ev);
    if (!ev) {
        snprintf(err, errlen, "out of memory");
        return MR_TEMPLATE_ENOMEM;
    }
    ev->err = err;
    ev->errlen = errlen;
    ev->now = opt ? opt->now : 0;
    int rc = MR_TEMPLATE_OK;
    if (setjmp(ev->fail)) {
        rc = ev->status;
    } else {
        tpl_buf text = {0};
        ev->root = tpl_frame_new(ev, NULL);
        for (size_t i = 0; tpl_functions[i]; i++)
            tpl_frame_set(ev, ev->root, tpl_functions[i],
                          (tpl_value){.kind = V_FUNCTION, .u.function = tpl_functions[i]});
        const cJSON *v;
        cJSON_ArrayForEach(v, vars) tpl_frame_set(ev, ev->root, v->string, tpl_from_json(ev, v));
        tpl_eval_body(ev, ev->root, &t->body, &text);
        *out = malloc(text.len + 1);
        if (!*out) {
            snprintf(err, errlen, "out of memory");
            rc = MR_TEMPLATE_ENOMEM;
        } else {
            if (text.len)
                memcpy(*out, text.s, text.len);
            (*out)[text.len] = '\0';
            *out_len = text.len;
        }
    }
    tpl_arena_free(&ev->arena);
    free(ev);
    return rc;
}
