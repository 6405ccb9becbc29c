/*
 * Result and error lines in the OpenAI Batch output format.  Every id in a
 * line is derived from the job name and the request's place in the input,
 * never from a clock or a counter, so that a rerun or a resumed run writes
 * the same bytes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jobs/internal.h"

/* `key` is what names the line within the job: a result's custom_id, or an
 * error line's place in the input (its custom_id may be missing or taken). */
static void make_id(char *out, size_t n, const char *prefix, const char *job_name,
                    const char *key)
{
    uint64_t h = mr_hash64(key, strlen(key), mr_hash64(job_name, strlen(job_name), 0));
    snprintf(out, n, "%s%016" PRIx64, prefix, h);
}

int mr_json_append(mr_buf *out, cJSON *root, bool indented)
{
    char *text = !root ? NULL : indented ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    int rc = text ? mr_buf_append(out, text, strlen(text)) : MR_JOBS_ENOMEM;
    if (rc == MR_JOBS_OK)
        rc = mr_buf_append(out, "\n", 1);
    cJSON_free(text);
    cJSON_Delete(root);
    return rc;
}

/* A token's text for JSON: its bytes when they are UTF-8, else "bytes:"
 * and each byte as \\xNN, as vLLM and OpenAI spell a token that ends
 * inside a character. */
static cJSON *token_string(const mr_result_token *t)
{
    char small[256], *text = small;
    size_t need = t->len * 4 + sizeof "bytes:";
    if (need > sizeof small && !(text = malloc(need)))
        return NULL;
    if (mr_utf8_invalid_at(t->bytes, t->len) == t->len) {
        memcpy(text, t->bytes, t->len);
        text[t->len] = '\0';
    } else {
        size_t at = (size_t)snprintf(text, need, "bytes:");
        for (size_t i = 0; i < t->len; i++)
            at += (size_t)snprintf(text + at, need - at, "\\x%02x", (unsigned char)t->bytes[i]);
    }
    cJSON *out = cJSON_CreateString(text);
    if (text != small)
        free(text);
    return out;
}

static cJSON *token_bytes(const mr_result_token *t)
{
    cJSON *array = cJSON_CreateArray();
    for (size_t i = 0; array && i < t->len; i++)
        cJSON_AddItemToArray(array, cJSON_CreateNumber((unsigned char)t->bytes[i]));
    return array;
}

/* Adds item to an object (name) or an array (NULL); *ok turns false for
 * an item that could not be made (out of memory). */
static void add(cJSON *parent, const char *name, cJSON *item, bool *ok)
{
    if (!item || !parent) {
        *ok = false;
        cJSON_Delete(item);
    } else if (name) {
        cJSON_AddItemToObject(parent, name, item);
    } else {
        cJSON_AddItemToArray(parent, item);
    }
}

/* The token, its log-probability and its bytes: chat's shape of one. */
static cJSON *chat_token(const mr_result_token *t, bool *ok)
{
    cJSON *one = cJSON_CreateObject();
    add(one, "token", token_string(t), ok);
    add(one, "logprob", cJSON_CreateNumber(t->logprob), ok);
    add(one, "bytes", token_bytes(t), ok);
    return one;
}

/* Chat's shape: {"content": [{token, logprob, bytes, top_logprobs}]}. */
static cJSON *chat_logprobs(const mr_completion *c, bool *ok)
{
    cJSON *o = cJSON_CreateObject(), *content = cJSON_CreateArray();
    add(o, "content", content, ok);
    for (size_t i = 0; *ok && i < c->n_tokens; i++) {
        cJSON *one = chat_token(&c->tokens[i], ok), *top = cJSON_CreateArray();
        add(content, NULL, one, ok);
        add(one, "top_logprobs", top, ok);
        for (int k = 0; *ok && k < c->n_top; k++)
            add(top, NULL, chat_token(&c->top[i * (size_t)c->n_top + (size_t)k], ok), ok);
    }
    return o;
}

/* Completions' shape: parallel lists of each token's byte offset in the
 * choice's text, log-probability, text and {token: logprob} alternatives;
 * null for a token without one (echo's first). */
static cJSON *completion_logprobs(const mr_completion *c, bool *ok)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *offsets = cJSON_CreateArray(), *logprobs = cJSON_CreateArray();
    cJSON *tokens = cJSON_CreateArray(), *tops = cJSON_CreateArray();
    add(o, "text_offset", offsets, ok);
    add(o, "token_logprobs", logprobs, ok);
    add(o, "tokens", tokens, ok);
    add(o, "top_logprobs", tops, ok);
    size_t offset = 0;
    for (size_t i = 0; *ok && i < c->n_tokens; i++) {
        bool scored = i >= c->n_unscored;
        add(offsets, NULL, cJSON_CreateNumber((double)offset), ok);
        offset += c->tokens[i].len;
        add(logprobs, NULL, scored ? cJSON_CreateNumber(c->tokens[i].logprob) : cJSON_CreateNull(),
            ok);
        add(tokens, NULL, token_string(&c->tokens[i]), ok);
        cJSON *top = scored ? cJSON_CreateObject() : cJSON_CreateNull();
        add(tops, NULL, top, ok);
        for (int k = 0; scored && *ok && k < c->n_top; k++) {
            const mr_result_token *t = &c->top[i * (size_t)c->n_top + (size_t)k];
            cJSON *name = token_string(t);
            add(top, name ? name->valuestring : NULL, cJSON_CreateNumber(t->logprob), ok);
            cJSON_Delete(name);
        }
    }
    return o;
}

static cJSON *choice(const mr_request *req, const mr_completion *c, size_t index, bool *ok)
{
    cJSON *o = cJSON_CreateObject();
    /* the text is not NUL-terminated; cJSON wants a C string */
    char *copy = malloc(c->text_len + 1);
    cJSON *text = NULL;
    if (copy) {
        memcpy(copy, c->text, c->text_len);
        copy[c->text_len] = '\0';
        text = cJSON_CreateString(copy);
        free(copy);
    }
    cJSON_AddNumberToObject(o, "index", (double)index);
    bool chat = req->endpoint == MR_ENDPOINT_CHAT;
    if (chat) {
        cJSON *message = cJSON_AddObjectToObject(o, "message");
        cJSON_AddStringToObject(message, "role", "assistant");
        cJSON_AddItemToObject(message, "content", text);
    } else {
        cJSON_AddItemToObject(o, "text", text);
    }
    add(o, "logprobs", !req->logprobs ? cJSON_CreateNull()
                       : chat         ? chat_logprobs(c, ok)
                                      : completion_logprobs(c, ok), ok);
    add(o, "finish_reason", cJSON_CreateString(c->finish_reason), ok);
    if (!text)
        *ok = false;
    return o;
}

int mr_result_format(mr_buf *out, const char *job_name, const char *model_name,
                     const mr_request *req, const mr_completion *choices, size_t n_choices,
                     int64_t created)
{
    bool chat = req->endpoint == MR_ENDPOINT_CHAT;
    char id[64], request_id[64], body_id[64];
    make_id(id, sizeof id, "batch_req_", job_name, req->custom_id);
    make_id(request_id, sizeof request_id, "req_", job_name, req->custom_id);
    make_id(body_id, sizeof body_id, chat ? "chatcmpl-" : "cmpl-", job_name, req->custom_id);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", id);
    cJSON_AddStringToObject(root, "custom_id", req->custom_id);
    cJSON *response = cJSON_AddObjectToObject(root, "response");
    cJSON_AddNumberToObject(response, "status_code", 200);
    cJSON_AddStringToObject(response, "request_id", request_id);
    cJSON *body = cJSON_AddObjectToObject(response, "body");
    cJSON_AddStringToObject(body, "id", body_id);
    cJSON_AddStringToObject(body, "object", chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(body, "created", (double)created);
    cJSON_AddStringToObject(body, "model", req->model ? req->model : model_name);
    cJSON *list = cJSON_AddArrayToObject(body, "choices");
    int64_t prompt_tokens = 0, completion_tokens = 0;
    bool ok = true;
    for (size_t i = 0; i < n_choices; i++) {
        add(list, NULL, choice(req, &choices[i], i, &ok), &ok);
        prompt_tokens += choices[i].prompt_tokens;
        completion_tokens += choices[i].completion_tokens;
    }
    cJSON *usage = cJSON_AddObjectToObject(body, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", (double)prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", (double)completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", (double)(prompt_tokens + completion_tokens));
    cJSON_AddNullToObject(root, "error");
    /* any failed allocation above leaves a NULL somewhere: check the leaves */
    if (!ok || !usage || !cJSON_GetObjectItem(usage, "total_tokens")) {
        cJSON_Delete(root);
        return MR_JOBS_ENOMEM;
    }
    return mr_json_append(out, root, false);
}

int mr_error_format(mr_buf *out, const char *job_name, const char *file, uint64_t line_no,
                    const mr_request_error *error)
{
    char id[64], place[4200];
    snprintf(place, sizeof place, "%s:%" PRIu64, file, line_no);
    make_id(id, sizeof id, "batch_req_", job_name, place);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", id);
    if (error->custom_id)
        cJSON_AddStringToObject(root, "custom_id", error->custom_id);
    else
        cJSON_AddNullToObject(root, "custom_id");
    cJSON_AddNullToObject(root, "response");
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "code", error->code);
    cJSON_AddStringToObject(e, "message", error->message);
    cJSON_AddStringToObject(e, "file", file);
    cJSON_AddNumberToObject(e, "line", (double)line_no);
    if (!e || !cJSON_GetObjectItem(e, "line")) {
        cJSON_Delete(root);
        return MR_JOBS_ENOMEM;
    }
    return mr_json_append(out, root, false);
}
