/* Result and error lines, read back as JSON. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jobs/jobs.h"

static cJSON *at(const cJSON *obj, const char *path)
{
    char name[64];
    while (obj && *path) {
        size_t n = strcspn(path, ".");
        snprintf(name, sizeof name, "%.*s", (int)n, path);
        obj = cJSON_IsArray(obj) ? cJSON_GetArrayItem(obj, atoi(name))
                                 : cJSON_GetObjectItemCaseSensitive(obj, name);
        path += n + (path[n] == '.');
    }
    return (cJSON *)obj;
}

static cJSON *one_line(const mr_buf *out)
{
    cr_assert(out->len > 0 && out->data[out->len - 1] == '\n');
    cr_assert_null(memchr(out->data, '\n', out->len - 1), "one line only");
    cJSON *root = cJSON_ParseWithLength(out->data, out->len);
    cr_assert(root, "%s", out->data);
    return root;
}

static const char *const TEXT = "a \"quoted\"\n\ttab \x01 ctrl \\ 世界";

static void format_result(mr_endpoint endpoint, mr_buf *out)
{
    mr_request req = {.custom_id = "req-7", .endpoint = endpoint, .line_no = 3};
    mr_completion c = {.text = TEXT, .text_len = strlen(TEXT), .finish_reason = "stop",
                       .prompt_tokens = 11, .completion_tokens = 4};
    cr_assert_eq(mr_result_format(out, "job", "tiny", &req, &c, 1, 1700000000), MR_JOBS_OK);
}

Test(result, completion_line)
{
    mr_buf out = {0};
    format_result(MR_ENDPOINT_COMPLETIONS, &out);
    cJSON *root = one_line(&out);
    cr_assert_str_eq(at(root, "custom_id")->valuestring, "req-7");
    cr_assert(strncmp(at(root, "id")->valuestring, "batch_req_", 10) == 0);
    cr_assert_eq(at(root, "response.status_code")->valueint, 200);
    cr_assert(cJSON_IsString(at(root, "response.request_id")));
    cr_assert_str_eq(at(root, "response.body.object")->valuestring, "text_completion");
    cr_assert_str_eq(at(root, "response.body.model")->valuestring, "tiny");
    cr_assert_eq(at(root, "response.body.created")->valuedouble, 1700000000);
    cr_assert_str_eq(at(root, "response.body.choices.0.text")->valuestring, TEXT);
    cr_assert_str_eq(at(root, "response.body.choices.0.finish_reason")->valuestring, "stop");
    cr_assert_eq(at(root, "response.body.usage.prompt_tokens")->valueint, 11);
    cr_assert_eq(at(root, "response.body.usage.completion_tokens")->valueint, 4);
    cr_assert_eq(at(root, "response.body.usage.total_tokens")->valueint, 15);
    cr_assert(cJSON_IsNull(at(root, "error")));
    cr_assert(strstr(out.data, "\\u0001"), "control characters are escaped: %s", out.data);
    cJSON_Delete(root);
    mr_buf_free(&out);
}

Test(result, chat_line)
{
    mr_buf out = {0};
    format_result(MR_ENDPOINT_CHAT, &out);
    cJSON *root = one_line(&out);
    cr_assert_str_eq(at(root, "response.body.object")->valuestring, "chat.completion");
    cr_assert(strncmp(at(root, "response.body.id")->valuestring, "chatcmpl-", 9) == 0);
    cr_assert_str_eq(at(root, "response.body.choices.0.message.role")->valuestring,
                     "assistant");
    cr_assert_str_eq(at(root, "response.body.choices.0.message.content")->valuestring, TEXT);
    cJSON_Delete(root);
    mr_buf_free(&out);
}

/* Ids derive from the job and the custom_id only, so a rerun, a resumed
 * run or a re-sharded run writes the same ids. */
Test(result, same_request_same_bytes_other_request_other_ids)
{
    mr_buf a = {0}, b = {0}, c = {0};
    format_result(MR_ENDPOINT_COMPLETIONS, &a);
    format_result(MR_ENDPOINT_COMPLETIONS, &b);
    cr_assert_eq(a.len, b.len);
    cr_assert_eq(memcmp(a.data, b.data, a.len), 0);
    mr_request req = {.custom_id = "req-8", .line_no = 3};
    mr_completion comp = {.text = "x", .text_len = 1, .finish_reason = "length",
                          .prompt_tokens = 1, .completion_tokens = 1};
    cr_assert_eq(mr_result_format(&c, "job", "tiny", &req, &comp, 1, 1700000000), MR_JOBS_OK);
    mr_buf d = {0};
    req.custom_id = "req-7";
    cr_assert_eq(mr_result_format(&d, "other-job", "tiny", &req, &comp, 1, 1700000000), MR_JOBS_OK);
    cJSON *ra = one_line(&a), *rc = one_line(&c), *rd = one_line(&d);
    cr_assert_str_neq(at(ra, "id")->valuestring, at(rc, "id")->valuestring);
    cr_assert_str_neq(at(ra, "id")->valuestring, at(rd, "id")->valuestring);
    cJSON_Delete(ra);
    cJSON_Delete(rc);
    cJSON_Delete(rd);
    mr_buf_free(&d);
    mr_buf_free(&a);
    mr_buf_free(&b);
    mr_buf_free(&c);
}

Test(result, error_line_names_file_and_line)
{
    mr_request_error e = {.code = "invalid_json", .message = "in.jsonl:9: not valid JSON",
                          .custom_id = NULL};
    mr_buf out = {0};
    cr_assert_eq(mr_error_format(&out, "job", "in.jsonl", 9, &e), MR_JOBS_OK);
    cJSON *root = one_line(&out);
    cr_assert(cJSON_IsNull(at(root, "custom_id")));
    cr_assert(cJSON_IsNull(at(root, "response")));
    cr_assert_str_eq(at(root, "error.code")->valuestring, "invalid_json");
    cr_assert_str_eq(at(root, "error.message")->valuestring, "in.jsonl:9: not valid JSON");
    cr_assert_str_eq(at(root, "error.file")->valuestring, "in.jsonl");
    cr_assert_eq(at(root, "error.line")->valueint, 9);
    cJSON_Delete(root);

    e.custom_id = "dup";
    out.len = 0;
    cr_assert_eq(mr_error_format(&out, "job", "in.jsonl", 10, &e), MR_JOBS_OK);
    root = one_line(&out);
    cr_assert_str_eq(at(root, "custom_id")->valuestring, "dup");
    cJSON_Delete(root);
    mr_buf_free(&out);
}

/* Two choices with log-probabilities: chat's shape, the usage summed, and
 * a token that ends inside a character spelled as its bytes. */
Test(result, choices_and_chat_logprobs)
{
    static const char partial[] = {(char)0xe4, (char)0xb8};
    mr_result_token tokens[2] = {{"Hi", 2, -0.25f}, {partial, 2, -1.5f}};
    mr_result_token top[4] = {{"Hi", 2, -0.25f}, {"Ho", 2, -2.0f},
                              {partial, 2, -1.5f}, {" x", 2, -1.75f}};
    mr_completion c[2] = {{.text = "Hi", .text_len = 2, .finish_reason = "length",
                           .prompt_tokens = 5, .completion_tokens = 2, .tokens = tokens,
                           .top = top, .n_tokens = 2, .n_top = 2},
                          {.text = "Yo", .text_len = 2, .finish_reason = "stop",
                           .prompt_tokens = 0, .completion_tokens = 1, .tokens = tokens,
                           .top = top, .n_tokens = 1, .n_top = 2}};
    mr_request req = {.custom_id = "r", .endpoint = MR_ENDPOINT_CHAT, .n = 2, .logprobs = true,
                      .top_logprobs = 2};
    mr_buf out = {0};
    cr_assert_eq(mr_result_format(&out, "job", "tiny", &req, c, 2, 1700000000), MR_JOBS_OK);
    cJSON *root = one_line(&out);
    cr_assert_eq(at(root, "response.body.choices.1.index")->valueint, 1);
    cr_assert_str_eq(at(root, "response.body.choices.1.finish_reason")->valuestring, "stop");
    cr_assert_eq(at(root, "response.body.usage.prompt_tokens")->valueint, 5);
    cr_assert_eq(at(root, "response.body.usage.completion_tokens")->valueint, 3);
    const char *base = "response.body.choices.0.logprobs.content";
    char path[128];
    snprintf(path, sizeof path, "%s.0.token", base);
    cr_assert_str_eq(at(root, path)->valuestring, "Hi");
    snprintf(path, sizeof path, "%s.0.logprob", base);
    cr_assert_eq(at(root, path)->valuedouble, -0.25);
    snprintf(path, sizeof path, "%s.1.token", base);
    cr_assert_str_eq(at(root, path)->valuestring, "bytes:\\xe4\\xb8");
    snprintf(path, sizeof path, "%s.1.bytes.0", base);
    cr_assert_eq(at(root, path)->valueint, 0xe4);
    snprintf(path, sizeof path, "%s.0.top_logprobs.1.token", base);
    cr_assert_str_eq(at(root, path)->valuestring, "Ho");
    cr_assert_eq(cJSON_GetArraySize(at(root, "response.body.choices.1.logprobs.content")), 1);
    cJSON_Delete(root);
    mr_buf_free(&out);
}

/* Completions' shape with echo: the prompt's first token has no
 * log-probability (null), offsets run through the echoed text. */
Test(result, completion_logprobs_with_echo)
{
    mr_result_token tokens[3] = {{"The", 3, 0}, {" cat", 4, -3.5f}, {" sat", 4, -0.5f}};
    mr_result_token top[3] = {{"X", 1, -9}, {" dog", 4, -1.0f}, {" sat", 4, -0.5f}};
    mr_completion c = {.text = "The cat sat", .text_len = 11, .finish_reason = "length",
                       .prompt_tokens = 2, .completion_tokens = 1, .tokens = tokens, .top = top,
                       .n_tokens = 3, .n_unscored = 1, .n_top = 1};
    mr_request req = {.custom_id = "r", .endpoint = MR_ENDPOINT_COMPLETIONS, .n = 1,
                      .logprobs = true, .top_logprobs = 1, .echo = true};
    mr_buf out = {0};
    cr_assert_eq(mr_result_format(&out, "job", "tiny", &req, &c, 1, 1700000000), MR_JOBS_OK);
    cJSON *root = one_line(&out);
    const char *base = "response.body.choices.0.logprobs";
    char path[128];
    snprintf(path, sizeof path, "%s.token_logprobs.0", base);
    cr_assert(cJSON_IsNull(at(root, path)));
    snprintf(path, sizeof path, "%s.top_logprobs.0", base);
    cr_assert(cJSON_IsNull(at(root, path)));
    snprintf(path, sizeof path, "%s.token_logprobs.1", base);
    cr_assert_eq(at(root, path)->valuedouble, -3.5);
    snprintf(path, sizeof path, "%s.text_offset.2", base);
    cr_assert_eq(at(root, path)->valueint, 7);
    snprintf(path, sizeof path, "%s.tokens.2", base);
    cr_assert_str_eq(at(root, path)->valuestring, " sat");
    snprintf(path, sizeof path, "%s.top_logprobs.1", base);
    cr_assert_eq(cJSON_GetObjectItem(at(root, path), " dog")->valuedouble, -1.0);
    cJSON_Delete(root);
    mr_buf_free(&out);
}
