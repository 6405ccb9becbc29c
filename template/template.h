/*
 * Chat templates: the subset of Jinja that Hugging Face models write their
 * chat_template in, rendered as transformers renders it (jinja2 with
 * trim_blocks and lstrip_blocks, a single trailing newline of the source
 * dropped, raise_exception, strftime_now and transformers' tojson).
 *
 * A template is compiled once: anything outside the subset (a statement,
 * filter or test moerun does not know) is refused there with its line and
 * column, so a model with such a template fails at load rather than on its
 * first chat.  Rendering takes its variables as one JSON object.
 */
#ifndef MR_TEMPLATE_H
#define MR_TEMPLATE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

enum {
    MR_TEMPLATE_OK = 0,
    MR_TEMPLATE_EINVAL = 1, /* compile: outside the subset; render: a template error */
    MR_TEMPLATE_ERAISE = 2, /* render: the template called raise_exception(message) */
    MR_TEMPLATE_ENOMEM = 3
};

typedef struct mr_template mr_template;

/* Compiles `source`.  On failure err says "line L, column C: what". */
int mr_template_compile(const char *source, mr_template **out, char *err, size_t errlen);
void mr_template_free(mr_template *t);

typedef struct {
    /* The instant strftime_now() formats, in seconds since 1970 UTC: the
     * caller's, so that a prompt does not depend on when it is rendered. */
    int64_t now;
} mr_template_options;

/* Renders t with the members of `vars` (a JSON object) as its variables;
 * *out is malloc'd and NUL-terminated, *out_len its length.  On
 * MR_TEMPLATE_ERAISE err holds the template's own message; on
 * MR_TEMPLATE_EINVAL "line L, column C: what". */
int mr_template_render(const mr_template *t, const cJSON *vars, const mr_template_options *opt,
                       char **out, size_t *out_len, char *err, size_t errlen);

#endif
