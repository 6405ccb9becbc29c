/*
 * Chat templates.  Hugging Face models carry a Jinja template in
 * tokenizer_config.json; moerun does not embed a Jinja engine, so it
 * recognises the template families it can render exactly and refuses the
 * rest with a message, rather than guessing a format the model was not
 * trained on.  ChatML covers Qwen2, Qwen2.5 and Qwen3.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_internal.h"

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

int mr_chat_detect(mr_model *m, char *err, size_t errlen)
{
    size_t n = strlen(m->dir) + sizeof "/tokenizer_config.json";
    char *path = malloc(n);
    if (!path) {
        snprintf(err, errlen, "out of memory");
        return MR_ENGINE_ENOMEM;
    }
    snprintf(path, n, "%s/tokenizer_config.json", m->dir);
    char *text = read_text(path);
    cJSON *config = text ? cJSON_Parse(text) : NULL;
    const char *template = config ? default_template(config) : NULL;
    m->chat = MR_CHAT_NONE;
    if (!text)
        snprintf(m->chat_problem, sizeof m->chat_problem, "%s is missing", path);
    else if (!config)
        snprintf(m->chat_problem, sizeof m->chat_problem, "%s is not valid JSON", path);
    else if (!template)
        snprintf(m->chat_problem, sizeof m->chat_problem, "%s has no chat_template", path);
    else if (strstr(template, "<|im_start|>") && strstr(template, "<|im_end|>"))
        m->chat = MR_CHAT_CHATML;
    else
        snprintf(m->chat_problem, sizeof m->chat_problem,
                 "%s: the chat_template is not ChatML, the only family moerun renders "
                 "(Qwen2/2.5/3); use /v1/completions with a formatted prompt", path);
    cJSON_Delete(config);
    free(text);
    free(path);
    return MR_ENGINE_OK;
}

int mr_chat_format(const mr_model *m, const mr_chat_turn *turns, size_t n, char **text,
                   char *err, size_t errlen)
{
    *text = NULL;
    if (m->chat != MR_CHAT_CHATML) {
        snprintf(err, errlen, "chat completions are not available: %s", m->chat_problem);
        return MR_ENGINE_EINVAL;
    }
    static const char open[] = "<|im_start|>", close[] = "<|im_end|>\n";
    static const char reply[] = "<|im_start|>assistant\n";
    size_t len = sizeof reply;
    for (size_t i = 0; i < n; i++)
        len += strlen(open) + strlen(turns[i].role) + 1 + strlen(turns[i].content) +
               strlen(close);
    char *out = malloc(len);
    if (!out) {
        snprintf(err, errlen, "out of memory formatting a chat of %zu bytes", len);
        return MR_ENGINE_ENOMEM;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        at += (size_t)snprintf(out + at, len - at, "%s%s\n%s%s", open, turns[i].role,
                               turns[i].content, close);
    snprintf(out + at, len - at, "%s", reply);
    *text = out;
    return MR_ENGINE_OK;
}
