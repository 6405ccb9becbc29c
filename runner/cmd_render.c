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

/* One prompt as a line of output: its text and ids, with its place in the
 * request's list when it has several. */
static int print_prompt(const char *prompt, const int32_t *token_ids, size_t n_ids, int index,
                        char *err, size_t errlen)
{
    cJSON *out = cJSON_CreateObject();
    bool ok = out && cJSON_AddStringToObject(out, "prompt", prompt) &&
              (index < 0 || cJSON_AddNumberToObject(out, "prompt_index", index)) &&
              cJSON_AddNumberToObject(out, "n_tokens", (double)n_ids);
    cJSON *ids = ok ? cJSON_AddArrayToObject(out, "token_ids") : NULL;
    for (size_t i = 0; ids && i < n_ids; i++) {
        cJSON *id = cJSON_CreateNumber(token_ids[i]);
        ok = ok && id && cJSON_AddItemToArray(ids, id);
    }
    char *json = ok && ids ? cJSON_PrintUnformatted(out) : NULL;
    cJSON_Delete(out);
    if (json)
        puts(json);
    free(json);
    if (!json)
        snprintf(err, errlen, "out of memory");
    return json ? MR_ENGINE_OK : MR_ENGINE_ENOMEM;
}

/* A prompt given as token ids: the text they decode to. */
static int decode(render_state *s, const mr_prompt *p, char **text)
{
    mr_detok detok = {0};
    size_t len = 0, cap = 0;
    *text = NULL;
    for (size_t i = 0; i <= p->n_ids; i++)
        if (mr_detok_push(s->tok, &detok, i < p->n_ids ? p->ids[i] : -1, text, &len, &cap) !=
            MR_ENGINE_OK)
            return MR_ENGINE_ENOMEM;
    char *done = realloc(*text, len + 1);
    if (!done)
        return MR_ENGINE_ENOMEM;
    done[len] = '\0';
    *text = done;
    return MR_ENGINE_OK;
}

/* Every prompt of one body: a chat through the model's template and its
 * tokenizer, a completion's text through the tokenizer, its token ids as
 * given (with the text they decode to). */
static int render_line(render_state *s, const char *text, size_t len, unsigned long line_no,
                       char *err, size_t errlen)
{
    cJSON *body = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(body)) {
        cJSON_Delete(body);
        snprintf(err, errlen, "not a JSON object");
        return MR_ENGINE_EINVAL;
    }
    char *line = as_request_line(body, line_no);
    cJSON_Delete(body);
    if (!line)
        return MR_ENGINE_ENOMEM;
    mr_request req;
    mr_request_error error;
    int rc = mr_request_parse(s->parser, line, strlen(line), "stdin", 0, line_no, &req, &error);
    free(line);
    if (rc != MR_JOBS_OK) {
        snprintf(err, errlen, "%s", error.message);
        return MR_ENGINE_EINVAL;
    }
    size_t n = req.endpoint == MR_ENDPOINT_CHAT ? 1 : req.n_prompts;
    rc = MR_ENGINE_OK;
    for (size_t i = 0; rc == MR_ENGINE_OK && i < n; i++) {
        char *prompt = NULL;
        s->ids.count = 0;
        if (req.endpoint == MR_ENDPOINT_CHAT) {
            mr_chat_turn *turns = calloc(req.n_messages ? req.n_messages : 1, sizeof *turns);
            if (!turns)
                return MR_ENGINE_ENOMEM;
            for (size_t k = 0; k < req.n_messages; k++)
                turns[k] = (mr_chat_turn){req.messages[k].role, req.messages[k].content};
            rc = mr_chat_template_apply(s->chat, turns, req.n_messages, req.chat_template_kwargs,
                                        &prompt, err, errlen);
            free(turns);
        } else if (req.prompts[i].text) {
            prompt = strdup(req.prompts[i].text);
            rc = prompt ? MR_ENGINE_OK : MR_ENGINE_ENOMEM;
        } else {
            for (size_t k = 0; rc == MR_ENGINE_OK && k < req.prompts[i].n_ids; k++)
                if (req.prompts[i].ids[k] >= mr_tokenizer_vocab_size(s->tok)) {
                    snprintf(err, errlen, "prompt token %zu is %d, not in the vocabulary (ids 0 "
                             "to %d)", k, (int)req.prompts[i].ids[k],
                             mr_tokenizer_vocab_size(s->tok) - 1);
                    rc = MR_ENGINE_EINVAL;
                }
            if (rc == MR_ENGINE_OK)
                rc = decode(s, &req.prompts[i], &prompt);
        }
        bool given = req.endpoint == MR_ENDPOINT_COMPLETIONS && !req.prompts[i].text;
        if (rc == MR_ENGINE_OK && !given)
            rc = mr_tokenizer_encode(s->tok, prompt, strlen(prompt), &s->ids, err, errlen);
        if (rc == MR_ENGINE_OK)
            rc = print_prompt(prompt, given ? req.prompts[i].ids : s->ids.ids,
                              given ? req.prompts[i].n_ids : s->ids.count, n > 1 ? (int)i : -1,
                              err, errlen);
        free(prompt);
    }
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
