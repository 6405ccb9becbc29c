/*
 * Chat templates.  A Hugging Face model carries its chat format as a Jinja
 * template in tokenizer_config.json; moerun compiles it at load with its
 * own interpreter (template/) and renders every chat through it, as
 * transformers' apply_chat_template does: messages, add_generation_prompt
 * (true: a chat completion wants the assistant's reply), the special
 * tokens (bos_token, eos_token, ...), then the request's
 * chat_template_kwargs over them.  A template outside the subset moerun
 * runs is found at load, with where and what: the model still serves
 * completions, and each chat request gets that reason in its error record.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_internal.h"
#include "template/template.h"

/* strftime_now() gives this instant, 26 July 2024 00:00 UTC (the date
 * Llama 3.1's template defaults to), whatever the day: a job's prompts,
 * and so its results, must not depend on when it runs or resumes. */
#define MR_CHAT_NOW 1721952000

/* The special tokens transformers passes a template (its
 * special_tokens_map), by their tokenizer_config.json keys. */
static const char *const special_keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                           "pad_token", "cls_token", "mask_token"};
#define N_SPECIAL (sizeof special_keys / sizeof *special_keys)

struct mr_chat_template {
    mr_template *tpl;          /* NULL: the model has none (see problem) */
    char *special[N_SPECIAL];  /* tokenizer_config.json's, or NULL */
    char problem[512];         /* why chats cannot be served, when tpl is NULL */
};

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1))) {
            if (fread(text, 1, (size_t)n, f) == (size_t)n) {
                text[n] = '\0';
            } else {
                free(text);
                text = NULL;
            }
        }
    }
    fclose(f);
    return text;
}

/* The default template: a plain string, or the entry named "default" of a
 * list of named templates. */
static const char *default_template(const cJSON *config)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(config, "chat_template");
    if (cJSON_IsString(t))
        return t->valuestring;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, t)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(entry, "template");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 &&
            cJSON_IsString(text))
            return text->valuestring;
    }
    return NULL;
}

/* A special token as tokenizer_config.json gives it: its text, or an
 * object with its text as "content" (AddedToken); NULL when unset. */
static const char *special_token(const cJSON *config, const char *key)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(config, key);
    if (cJSON_IsObject(t))
        t = cJSON_GetObjectItemCaseSensitive(t, "content");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int compile(mr_chat_template *c, const cJSON *config, const char *path, char *err,
                   size_t errlen)
{
    for (size_t i = 0; i < N_SPECIAL; i++) {
        const char *token = special_token(config, special_keys[i]);
        if (token && !(c->special[i] = strdup(token))) {
            snprintf(err, errlen, "out of memory");
            return MR_ENGINE_ENOMEM;
        }
    }
    char why[384];
    int rc = mr_template_compile(default_template(config), &c->tpl, why, sizeof why);
    if (rc == MR_TEMPLATE_ENOMEM) {
        snprintf(err, errlen, "out of memory compiling %s's chat_template", path);
        return MR_ENGINE_ENOMEM;
    }
    if (rc != MR_TEMPLATE_OK) {
        snprintf(err, errlen,
                 "%s: chat_template %s (moerun runs the subset of Jinja in docs/formats.md)",
                 path, why);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

int mr_chat_template_load(const char *dir, mr_chat_template **out, char *err, size_t errlen)
{
    *out = NULL;
    mr_chat_template *c = calloc(1, sizeof *c);
    size_t n = strlen(dir) + sizeof "/tokenizer_config.json";
    char *path = malloc(n);
    if (!c || !path) {
        free(c);
        free(path);
        snprintf(err, errlen, "out of memory");
        return MR_ENGINE_ENOMEM;
    }
    snprintf(path, n, "%s/tokenizer_config.json", dir);
    char *text = read_text(path);
    cJSON *config = text ? cJSON_Parse(text) : NULL;
    int rc = MR_ENGINE_OK;
    if (!text)
        snprintf(c->problem, sizeof c->problem, "%s is missing", path);
    else if (!config)
        snprintf(c->problem, sizeof c->problem, "%s is not valid JSON", path);
    else if (!default_template(config))
        snprintf(c->problem, sizeof c->problem, "%s has no chat_template", path);
    else if ((rc = compile(c, config, path, err, errlen)) == MR_ENGINE_EINVAL) {
        /* the model still serves completions; chats get this reason */
        snprintf(c->problem, sizeof c->problem, "%s", err);
        rc = MR_ENGINE_OK;
    }
    cJSON_Delete(config);
    free(text);
    free(path);
    if (rc != MR_ENGINE_OK) {
        mr_chat_template_free(c);
        return rc;
    }
    *out = c;
    return MR_ENGINE_OK;
}

void mr_chat_template_free(mr_chat_template *c)
{
    if (!c)
        return;
    mr_template_free(c->tpl);
    for (size_t i = 0; i < N_SPECIAL; i++)
        free(c->special[i]);
    free(c);
}

/* The template's variables: what transformers passes, then the request's
 * chat_template_kwargs over them. */
static cJSON *variables(const mr_chat_template *c, const mr_chat_turn *turns, size_t n,
                        const cJSON *kwargs)
{
    cJSON *vars = cJSON_CreateObject(), *messages = cJSON_AddArrayToObject(vars, "messages");
    bool ok = messages != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        ok = m && cJSON_AddItemToArray(messages, m) &&
             cJSON_AddStringToObject(m, "role", turns[i].role) &&
             cJSON_AddStringToObject(m, "content", turns[i].content);
    }
    ok = ok && cJSON_AddBoolToObject(vars, "add_generation_prompt", 1);
    for (size_t i = 0; ok && i < N_SPECIAL; i++)
        if (c->special[i])
            ok = cJSON_AddStringToObject(vars, special_keys[i], c->special[i]) != NULL;
    const cJSON *kw;
    cJSON_ArrayForEach(kw, kwargs)
    {
        cJSON *copy = ok ? cJSON_Duplicate(kw, 1) : NULL;
        ok = copy && (cJSON_GetObjectItemCaseSensitive(vars, kw->string)
                          ? cJSON_ReplaceItemInObjectCaseSensitive(vars, kw->string, copy)
                          : cJSON_AddItemToObject(vars, kw->string, copy));
        if (copy && !ok)
            cJSON_Delete(copy);
    }
    if (!ok) {
        cJSON_Delete(vars);
        return NULL;
    }
    return vars;
}

int mr_chat_template_apply(const mr_chat_template *c, const mr_chat_turn *turns, size_t n,
                           const char *kwargs, char **text, char *err, size_t errlen)
{
    *text = NULL;
    if (!c->tpl) {
        snprintf(err, errlen,
                 "chat completions are not available: %s; use /v1/completions with a "
                 "formatted prompt",
                 c->problem);
        return MR_ENGINE_EINVAL;
    }
    cJSON *kw = kwargs ? cJSON_Parse(kwargs) : NULL;
    if (kwargs && !cJSON_IsObject(kw)) {
        cJSON_Delete(kw);
        snprintf(err, errlen, "chat_template_kwargs is not a JSON object");
        return MR_ENGINE_EINVAL;
    }
    cJSON *vars = variables(c, turns, n, kw);
    cJSON_Delete(kw);
    if (!vars) {
        snprintf(err, errlen, "out of memory formatting a chat of %zu turns", n);
        return MR_ENGINE_ENOMEM;
    }
    char why[384];
    size_t len;
    mr_template_options opt = {.now = MR_CHAT_NOW};
    int rc = mr_template_render(c->tpl, vars, &opt, text, &len, why, sizeof why);
    cJSON_Delete(vars);
    switch (rc) {
    case MR_TEMPLATE_OK: return MR_ENGINE_OK;
    case MR_TEMPLATE_ENOMEM:
        snprintf(err, errlen, "out of memory rendering the chat template");
        return MR_ENGINE_ENOMEM;
    case MR_TEMPLATE_ERAISE:
        snprintf(err, errlen, "the chat template refused the chat: %s", why);
        return MR_ENGINE_EINVAL;
    default:
        snprintf(err, errlen, "the chat template failed: %s", why);
        return MR_ENGINE_EINVAL;
    }
}
