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

static cJSON *choice(const mr_request *req, const mr_completion *c)
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
    cJSON_AddNumberToObject(o, "index", 0);
    if (req->endpoint == MR_ENDPOINT_CHAT) {
        cJSON *message = cJSON_AddObjectToObject(o, "message");
        cJSON_AddStringToObject(message, "role", "assistant");
        cJSON_AddItemToObject(message, "content", text);
        cJSON_AddNullToObject(o, "logprobs");
    } else {
        cJSON_AddItemToObject(o, "text", text);
        cJSON_AddNullToObject(o, "logprobs");
    }
    cJSON_AddStringToObject(o, "finish_reason", c->finish_reason);
    return o;
}

int mr_result_format(mr_buf *out, const char *job_name, const char *model_name,
                     const mr_request *req, const mr_completion *completion, int64_t created)
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
    cJSON *choices = cJSON_AddArrayToObject(body, "choices");
    cJSON_AddItemToArray(choices, choice(req, completion));
    cJSON *usage = cJSON_AddObjectToObject(body, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", (double)completion->prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", (double)completion->completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens",
                            (double)(completion->prompt_tokens + completion->completion_tokens));
    cJSON_AddNullToObject(root, "error");
    /* any failed allocation above leaves a NULL somewhere: check the leaves */
    if (!usage || !cJSON_GetObjectItem(usage, "total_tokens") || !cJSON_GetArrayItem(choices, 0)) {
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
