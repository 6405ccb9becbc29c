/*
 * moerun render: the exact prompt a model sees for a request body, as text
 * and token ids, through the functions serving prepares a request with
 * (the request parser, the model's chat template, its tokenizer).  For
 * checking a model's chat template and chat_template_kwargs before a job.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "jobs/jobs.h"
#include "runner/runner.h"

typedef struct {
    const mr_tokenizer *tok;
    const mr_chat_template *chat;
    mr_request_parser *parser;
    mr_tokens ids;
} render_state;

/* The body as a batch request line, so that the request parser serving
 * uses reads it: chat when it has messages, else a completion. */
static char *as_request_line(cJSON *body, unsigned long line_no)
{
    char id[32];
    snprintf(id, sizeof id, "stdin:%lu", line_no);
    bool chat = cJSON_HasObjectItem(body, "messages");
    cJSON *line = cJSON_CreateObject();
    char *text = NULL;
    if (line && cJSON_AddStringToObject(line, "custom_id", id) &&
        cJSON_AddStringToObject(line, "method", "POST") &&
        cJSON_AddStringToObject(line, "url", chat ? "/v1/chat/completions" : "/v1/completions") &&
        cJSON_AddItemReferenceToObject(line, "body", body))
        text = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    return text;
}

/* The prompt of one body, in *prompt (malloc'd); err says why not. */
static int prompt_of(render_state *s, cJSON *body, unsigned long line_no, char **prompt,
                     char *err, size_t errlen)
{
    char *line = as_request_line(body, line_no);
    if (!line)
        return MR_ENGINE_ENOMEM;
    mr_request req;
    mr_request_error error;
    int parsed = mr_request_parse(s->parser, line, strlen(line), "stdin", 0, line_no, &req,
                                  &error);
    free(line);
    if (parsed != MR_JOBS_OK) {
        snprintf(err, errlen, "%s", error.message);
        return MR_ENGINE_EINVAL;
    }
    if (req.endpoint == MR_ENDPOINT_COMPLETIONS) {
        *prompt = strdup(req.prompt);
        return *prompt ? MR_ENGINE_OK : MR_ENGINE_ENOMEM;
    }
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(body, "chat_template_kwargs");
    char *kwargs = kw && !cJSON_IsNull(kw) ? cJSON_PrintUnformatted(kw) : NULL;
    mr_chat_turn *turns = calloc(req.n_messages ? req.n_messages : 1, sizeof *turns);
    if ((kw && !cJSON_IsNull(kw) && !kwargs) || !turns) {
        free(kwargs);
        free(turns);
        return MR_ENGINE_ENOMEM;
    }
    for (size_t i = 0; i < req.n_messages; i++)
        turns[i] = (mr_chat_turn){req.messages[i].role, req.messages[i].content};
    int rc = mr_chat_template_apply(s->chat, turns, req.n_messages, kwargs, prompt, err, errlen);
    free(kwargs);
    free(turns);
    return rc;
}

static int render_line(render_state *s, const char *text, size_t len, unsigned long line_no,
                       char *err, size_t errlen)
{
    cJSON *body = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(body)) {
        cJSON_Delete(body);
        snprintf(err, errlen, "not a JSON object");
        return MR_ENGINE_EINVAL;
    }
    char *prompt = NULL;
    int rc = prompt_of(s, body, line_no, &prompt, err, errlen);
    cJSON_Delete(body);
    s->ids.count = 0;
    if (rc == MR_ENGINE_OK)
        rc = mr_tokenizer_encode(s->tok, prompt, strlen(prompt), &s->ids, err, errlen);
    cJSON *out = rc == MR_ENGINE_OK ? cJSON_CreateObject() : NULL;
    cJSON *ids = out ? cJSON_AddArrayToObject(out, "token_ids") : NULL;
    bool ok = ids && cJSON_AddStringToObject(out, "prompt", prompt);
    for (size_t i = 0; ok && i < s->ids.count; i++) {
        cJSON *id = cJSON_CreateNumber(s->ids.ids[i]);
        ok = id && cJSON_AddItemToArray(ids, id);
    }
    ok = ok && cJSON_AddNumberToObject(out, "n_tokens", (double)s->ids.count);
    /* "prompt" first, as people read it */
    char *json = ok && cJSON_DetachItemFromObject(out, "token_ids") &&
                         cJSON_AddItemToObject(out, "token_ids", ids)
                     ? cJSON_PrintUnformatted(out)
                     : NULL;
    cJSON_Delete(out);
    free(prompt);
    if (rc == MR_ENGINE_OK && !json)
        rc = MR_ENGINE_ENOMEM;
    if (json)
        puts(json);
    free(json);
    return rc;
}

static int render_stdin(render_state *s)
{
    char *line = NULL, err[1024];
    size_t cap = 0;
    ssize_t n;
    int rc = MR_EXIT_OK;
    for (unsigned long line_no = 1; rc != MR_EXIT_FAILED && (n = getline(&line, &cap, stdin)) >= 0;
         line_no++) {
        int status = render_line(s, line, (size_t)n, line_no, err, sizeof err);
        if (status == MR_ENGINE_ENOMEM) {
            fprintf(stderr, "moerun render: out of memory\n");
            rc = MR_EXIT_FAILED;
        } else if (status != MR_ENGINE_OK) {
            cJSON *out = cJSON_CreateObject();
            char *json = out && cJSON_AddNumberToObject(out, "line", (double)line_no) &&
                                 cJSON_AddStringToObject(out, "error", err)
                             ? cJSON_PrintUnformatted(out)
                             : NULL;
            cJSON_Delete(out);
            if (json)
                puts(json);
            free(json);
            rc = json ? MR_EXIT_INVALID : MR_EXIT_FAILED;
        }
        fflush(stdout);
    }
    free(line);
    return rc;
}

int mr_runner_render(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, 0, "MODEL_DIR", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    char err[1024];
    mr_tokenizer *tok = NULL;
    mr_chat_template *chat = NULL;
    /* The request parser takes a job's [generation] defaults; they do not
     * change a prompt, but must pass the parser's checks. */
    mr_job job = {.generation_max_tokens = 1, .generation_top_p = 1.0};
    mr_request_parser *parser = mr_request_parser_new(&job);
    int loaded = mr_tokenizer_load(args.operand, &tok, err, sizeof err);
    if (loaded == MR_ENGINE_OK)
        loaded = mr_chat_template_load(args.operand, &chat, err, sizeof err);
    if (!parser) {
        fprintf(stderr, "moerun render: out of memory\n");
        rc = MR_EXIT_FAILED;
    } else if (loaded != MR_ENGINE_OK) {
        fprintf(stderr, "moerun render: %s\n", err);
        rc = loaded == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
    } else {
        render_state s = {.tok = tok, .chat = chat, .parser = parser};
        rc = render_stdin(&s);
        mr_tokens_free(&s.ids);
    }
    mr_request_parser_free(parser);
    mr_chat_template_free(chat);
    mr_tokenizer_free(tok);
    mr_runner_free_args(&args);
    return rc;
}
