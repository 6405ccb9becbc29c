/* Request lines: every shape, every refusal, and the bytes that break parsers. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"
#include "tests/common/fixture.h"

static char *dir;
static mr_job job;
static mr_request_parser *parser;
static mr_request req;
static mr_request_error error;

static void load(const char *extra)
{
    char err[4096], *ini = NULL;
    cr_assert(asprintf(&ini, "[model]\npath = model\n[input]\nfiles = r.jsonl\n%s", extra) > 0);
    cr_assert_eq(mr_test_load_job(&job, dir, ini, NULL, 0, err, sizeof err), MR_JOBS_OK, "%s",
                 err);
    free(ini);
    parser = mr_request_parser_new(&job);
    cr_assert(parser);
}

static void setup(void)
{
    dir = mr_test_tmpdir();
    mr_test_make_model(dir);
    free(mr_test_write(dir, "r.jsonl", "", 0));
    load("[generation]\nmax_tokens = 100\ntemperature = 0.5\ntop_k = 40\nseed = 7\n"
         "stop = [\"###\"]\n");
}

static void teardown(void)
{
    mr_request_parser_free(parser);
    mr_job_free(&job);
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(request, .init = setup, .fini = teardown);

static int parse(const char *line)
{
    return mr_request_parse(parser, line, strlen(line), "r.jsonl", 0, 12, &req, &error);
}

static void expect_error(const char *line, const char *code, const char *message)
{
    cr_assert_eq(parse(line), MR_JOBS_EINVAL, "accepted: %s", line);
    cr_assert_str_eq(error.code, code, "%s: %s", line, error.message);
    cr_assert(strncmp(error.message, "r.jsonl:12: ", 12) == 0, "%s", error.message);
    cr_assert(strstr(error.message, message), "want '%s' in '%s'", message, error.message);
}

#define BATCH(url, body)                                                                   \
    "{\"custom_id\": \"req-1\", \"method\": \"POST\", \"url\": \"" url "\", \"body\": " body \
    "}"

Test(request, completion_with_job_defaults)
{
    cr_assert_eq(parse(BATCH("/v1/completions", "{\"model\": \"q\", \"prompt\": \"Hello\"}")),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert_str_eq(req.custom_id, "req-1");
    cr_assert_eq(req.endpoint, MR_ENDPOINT_COMPLETIONS);
    cr_assert_str_eq(req.model, "q");
    cr_assert_str_eq(req.prompts[0].text, "Hello");
    cr_assert_eq(req.sampling.max_tokens, 100);
    cr_assert_float_eq(req.sampling.temperature, 0.5, 1e-12);
    cr_assert_float_eq(req.sampling.top_p, 1.0, 1e-12);
    cr_assert_eq(req.sampling.top_k, 40);
    cr_assert_eq(req.sampling.stop.count, 1);
    cr_assert_str_eq(req.sampling.stop.items[0], "###");
    cr_assert_eq(req.line_no, 12);
}

Test(request, request_values_override_the_job)
{
    cr_assert_eq(parse(BATCH("/v1/completions",
                             "{\"prompt\": [\"Hi\"], \"max_tokens\": 5, \"temperature\": 0, "
                             "\"top_p\": 0.9, \"top_k\": -1, \"seed\": 42, \"stop\": \"\\n\", "
                             "\"n\": 1, \"stream\": false, \"user\": \"u\"}")),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert_str_eq(req.prompts[0].text, "Hi");
    cr_assert_null(req.model);
    cr_assert_eq(req.sampling.max_tokens, 5);
    cr_assert_float_eq(req.sampling.temperature, 0, 1e-12);
    cr_assert_float_eq(req.sampling.top_p, 0.9, 1e-12);
    cr_assert_eq(req.sampling.top_k, 0);
    cr_assert_eq(req.sampling.seed, 42);
    cr_assert_str_eq(req.sampling.stop.items[0], "\n");
}

Test(request, seeds_derive_from_job_seed_and_custom_id)
{
    const char *a = BATCH("/v1/completions", "{\"prompt\": \"x\"}");
    const char *b = "{\"custom_id\": \"req-2\", \"method\": \"POST\", \"url\": "
                    "\"/v1/completions\", \"body\": {\"prompt\": \"x\"}}";
    cr_assert_eq(parse(a), MR_JOBS_OK);
    uint64_t seed_a = req.sampling.seed;
    cr_assert_eq(parse(b), MR_JOBS_OK);
    cr_assert_neq(req.sampling.seed, seed_a);
    cr_assert_eq(parse(a), MR_JOBS_OK);
    cr_assert_eq(req.sampling.seed, seed_a, "the same request gets the same seed");
    mr_request_parser_free(parser);
    mr_job_free(&job);
    load("[generation]\nseed = 8\n");
    cr_assert_eq(parse(a), MR_JOBS_OK);
    cr_assert_neq(req.sampling.seed, seed_a, "the job seed changes every request's seed");
}

Test(request, chat_with_string_and_part_contents)
{
    cr_assert_eq(parse(BATCH("/v1/chat/completions",
                             "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                             "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
                             "\"Hello, \"}, {\"type\": \"text\", \"text\": \"世界 🌍\"}]},"
                             "{\"role\": \"assistant\", \"content\": \"Hi\"},"
                             "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
                             "\"again\"}]}], \"max_completion_tokens\": 9}")),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert_eq(req.endpoint, MR_ENDPOINT_CHAT);
    cr_assert_eq(req.n_messages, 4);
    cr_assert_str_eq(req.messages[0].role, "system");
    cr_assert_str_eq(req.messages[0].content, "Be brief.");
    cr_assert_str_eq(req.messages[1].content, "Hello, 世界 🌍");
    cr_assert_str_eq(req.messages[3].content, "again");
    cr_assert_eq(req.sampling.max_tokens, 9);
}

Test(request, prompt_format_with_string_and_number_ids)
{
    mr_request_parser_free(parser);
    mr_job_free(&job);
    load("[input]\nformat = prompt\n");
    cr_assert_eq(parse("{\"id\": \"a-1\", \"prompt\": \"Hi\", \"max_tokens\": 3}"), MR_JOBS_OK,
                 "%s", error.message);
    cr_assert_str_eq(req.custom_id, "a-1");
    cr_assert_eq(req.sampling.max_tokens, 3);
    cr_assert_eq(parse("{\"id\": 17, \"prompt\": \"Hi\"}"), MR_JOBS_OK, "%s", error.message);
    cr_assert_str_eq(req.custom_id, "17");
    expect_error("{\"prompt\": \"Hi\"}", "missing_field", "id is missing");
    expect_error("{\"id\": true, \"prompt\": \"Hi\"}", "wrong_type", "id must be");
    expect_error("{\"id\": 1, \"prompt\": \"\"}", "empty_prompt", "prompt is empty");
    cr_assert_str_eq(error.custom_id, "1");
}

Test(request, malformed_json)
{
    expect_error("{\"custom_id\": \"x\", ", "invalid_json", "not valid JSON near byte");
    expect_error("not json at all", "invalid_json", "not valid JSON");
    expect_error("{} {}", "invalid_json", "text after the JSON value at byte 4");
    expect_error("[1, 2]", "wrong_type", "must be a JSON object, got an array");
    expect_error("\"text\"", "wrong_type", "got a string");
    expect_error("", "invalid_json", "the line is empty");
    cr_assert_null(error.custom_id);
}

Test(request, missing_fields_and_wrong_types)
{
    expect_error("{\"method\": \"POST\"}", "missing_field", "custom_id is missing");
    expect_error("{\"custom_id\": 5}", "wrong_type", "custom_id must be a string, got a number");
    expect_error("{\"custom_id\": \"\"}", "invalid_value", "custom_id is empty");
    expect_error("{\"custom_id\": \"a\", \"url\": \"/v1/completions\"}", "missing_field",
                 "method is missing");
    cr_assert_str_eq(error.custom_id, "a", "the id is known once read");
    expect_error("{\"custom_id\": \"a\", \"method\": \"GET\"}", "unsupported_method",
                 "method must be POST, got 'GET'");
    expect_error("{\"custom_id\": \"a\", \"method\": \"POST\", \"url\": \"/v1/embeddings\"}",
                 "unsupported_url", "got '/v1/embeddings'");
    expect_error("{\"custom_id\": \"a\", \"method\": \"POST\", \"url\": \"/v1/completions\"}",
                 "missing_field", "body is missing");
    expect_error(BATCH("/v1/completions", "[]"), "wrong_type", "body must be an object");
    expect_error(BATCH("/v1/completions", "{\"model\": 3, \"prompt\": \"x\"}"), "wrong_type",
                 "body.model must be a string");
    expect_error(BATCH("/v1/completions", "{}"), "missing_field", "body.prompt is missing");
    expect_error(BATCH("/v1/completions", "{\"prompt\": 3}"), "wrong_type",
                 "body.prompt must be a string, token ids or a list of them, got a number");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"\"}"), "empty_prompt",
                 "body.prompt is empty");
    expect_error(BATCH("/v1/completions", "{\"prompt\": []}"), "empty_prompt",
                 "body.prompt is an empty list");
    expect_error(BATCH("/v1/completions", "{\"prompt\": [\"a\", 3]}"), "wrong_type",
                 "body.prompt[1] must be a string or token ids, got a number");
    expect_error(BATCH("/v1/completions", "{\"prompt\": [5, -1]}"), "invalid_value",
                 "body.prompt[1] must be a token id");
    expect_error(BATCH("/v1/completions", "{\"prompt\": [[5], []]}"), "empty_prompt",
                 "body.prompt[1] is empty");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": -3}"),
                 "invalid_value", "body.max_tokens must be from 1 to");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 2.5}"),
                 "wrong_type", "body.max_tokens must be a whole number, got a fraction");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": \"9\"}"),
                 "wrong_type", "got a string");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"temperature\": 3}"),
                 "invalid_value", "body.temperature must be from 0 to 2, got 3");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"top_p\": 0}"),
                 "invalid_value", "top_p must be above 0");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"seed\": \"s\"}"),
                 "wrong_type", "body.seed");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"stop\": [\"a\", 1]}"),
                 "wrong_type", "body.stop[1] must be a string");
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"x\", \"stop\": 4}"), "wrong_type",
                 "body.stop must be a string or an array");
}

Test(request, chat_errors)
{
    expect_error(BATCH("/v1/chat/completions", "{\"prompt\": \"x\"}"), "missing_field",
                 "body.messages is missing");
    expect_error(BATCH("/v1/chat/completions", "{\"messages\": []}"), "empty_prompt",
                 "body.messages is empty");
    expect_error(BATCH("/v1/chat/completions", "{\"messages\": {}}"), "wrong_type",
                 "body.messages must be an array");
    expect_error(BATCH("/v1/chat/completions", "{\"messages\": [\"hi\"]}"), "wrong_type",
                 "body.messages[0] must be an object");
    expect_error(BATCH("/v1/chat/completions", "{\"messages\": [{\"content\": \"hi\"}]}"),
                 "missing_field", "body.messages[0].role is missing");
    expect_error(BATCH("/v1/chat/completions",
                       "{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}"),
                 "invalid_value", "got 'robot'");
    expect_error(BATCH("/v1/chat/completions",
                       "{\"messages\": [{\"role\": \"user\", \"content\": 1}]}"),
                 "wrong_type", "body.messages[0].content must be a string");
    expect_error(BATCH("/v1/chat/completions",
                       "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
                       "\"image_url\", \"image_url\": {}}]}]}"),
                 "unsupported_parameter", "only parts of type \"text\"");
}

Test(request, parameters_that_would_change_the_output_are_refused)
{
    static const char *const bodies[][2] = {
        {"{\"prompt\": \"x\", \"stream\": true}", "body.stream is not supported"},
        {"{\"prompt\": \"x\", \"logit_bias\": {\"1\": 5}}", "logit_bias is not supported"},
        {"{\"prompt\": \"x\", \"best_of\": 3}", "best_of must be 1"},
        {"{\"prompt\": \"x\", \"repetition_penalty\": 1.1}", "repetition_penalty is not supported"},
        {"{\"prompt\": \"x\", \"min_p\": 0.05}", "min_p is not supported"},
        {"{\"prompt\": \"x\", \"response_format\": {\"type\": \"json_object\"}}",
         "response_format"},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char *line = NULL;
        cr_assert(asprintf(&line, BATCH("/v1/completions", "%s"), bodies[i][0]) > 0);
        expect_error(line, "unsupported_parameter", bodies[i][1]);
        free(line);
    }
    cr_assert_eq(parse(BATCH("/v1/completions",
                             "{\"prompt\": \"x\", \"repetition_penalty\": 1, \"logprobs\": null, "
                             "\"response_format\": {\"type\": \"text\"}, \"logit_bias\": {}}")),
                 MR_JOBS_OK, "neutral values pass: %s", error.message);
}

Test(request, invalid_utf8_is_refused_with_its_offset)
{
    static const char *const bad[] = {
        "\xC0\xAF",         /* overlong '/' */
        "\xE0\x80\xAF",     /* overlong, 3 bytes */
        "\xED\xA0\x80",     /* a UTF-16 surrogate */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "\xE4\xB8",         /* truncated */
        "\x80",             /* a lone continuation byte */
        "\xFF",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *line = NULL;
        cr_assert(asprintf(&line, BATCH("/v1/completions", "{\"prompt\": \"ok %s\"}"), bad[i]) >
                  0);
        char *at = strstr(line, "ok ") + 3;
        char *want = NULL;
        cr_assert(asprintf(&want, "invalid UTF-8 at byte %zu", (size_t)(at - line) + 1) > 0);
        expect_error(line, "invalid_utf8", want);
        free(want);
        free(line);
    }
    cr_assert_eq(parse(BATCH("/v1/completions",
                             "{\"prompt\": \"é 中文 日本語 한국어 🎉 \\u00e9 \\ud83d\\ude00\"}")),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert_str_eq(req.prompts[0].text, "é 中文 日本語 한국어 🎉 é 😀");
}

Test(request, nul_escapes_are_refused_not_cut_short)
{
    expect_error(BATCH("/v1/completions", "{\"prompt\": \"before\\u0000after\"}"),
                 "invalid_value", "\\u0000 (a NUL character) in a string at byte");
    cr_assert_eq(parse(BATCH("/v1/completions", "{\"prompt\": \"a \\\\u0000 b\"}")),
                 MR_JOBS_OK, "an escaped backslash before u0000 is text: %s", error.message);
    cr_assert_str_eq(req.prompts[0].text, "a \\u0000 b");
}

Test(request, crlf_line_end_is_ignored)
{
    cr_assert_eq(parse(BATCH("/v1/completions", "{\"prompt\": \"x\"}") "\r"), MR_JOBS_OK, "%s",
                 error.message);
    cr_assert_str_eq(req.prompts[0].text, "x");
}

Test(request, huge_line_of_several_mebibytes)
{
    size_t n = 6 << 20;
    mr_buf line = {0};
    const char *head = "{\"custom_id\": \"big\", \"method\": \"POST\", \"url\": "
                       "\"/v1/completions\", \"body\": {\"prompt\": \"";
    cr_assert_eq(mr_buf_append(&line, head, strlen(head)), MR_JOBS_OK);
    cr_assert_eq(mr_buf_reserve(&line, n + 16), MR_JOBS_OK);
    for (size_t i = 0; i < n; i++)
        line.data[line.len++] = (char)('a' + i % 26);
    mr_buf_append(&line, "\"}}", 3);
    cr_assert_eq(mr_request_parse(parser, line.data, line.len, "r.jsonl", 0, 1, &req, &error),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert_eq(strlen(req.prompts[0].text), n);
    mr_buf_free(&line);
}

Test(request, error_helpers)
{
    cr_assert_eq(parse(BATCH("/v1/completions", "{\"prompt\": \"x\"}")), MR_JOBS_OK);
    mr_request_error_prompt_too_long(&error, &req, "r.jsonl", 5000, 4096);
    cr_assert_str_eq(error.code, "prompt_too_long");
    cr_assert_str_eq(error.custom_id, "req-1");
    cr_assert_str_eq(error.message, "r.jsonl:12: the prompt is 5000 tokens, more than "
                                    "input.max_prompt_tokens = 4096");
    mr_request_error_duplicate(&error, "req-1", "b.jsonl", 3, "a.jsonl", 9);
    cr_assert_str_eq(error.code, "duplicate_custom_id");
    cr_assert_str_eq(error.message, "b.jsonl:3: custom_id 'req-1' was already used at "
                                    "a.jsonl:9, which is served");
    mr_request_error_line_too_long(&error, "a.jsonl", 4, 1000, 64);
    cr_assert_str_eq(error.code, "line_too_long");
    cr_assert_null(error.custom_id);
    cr_assert(strstr(error.message, "a.jsonl:4: the line is 1000 bytes"));
}

/* The fields of offline evaluation and sampling many: token-id prompts and
 * lists of prompts, n, logprobs in each endpoint's shape, echo, penalties,
 * chat_template_kwargs. */
Test(request, choices_logprobs_echo_penalties_and_token_ids)
{
    cr_assert_eq(parse(BATCH("/v1/completions",
                             "{\"prompt\": [[1, 2, 3], \"two\"], \"n\": 3, \"logprobs\": 4, "
                             "\"echo\": true, \"presence_penalty\": 0.5, "
                             "\"frequency_penalty\": -1.25, \"seed\": 9}")),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert_eq(req.n_prompts, 2);
    cr_assert_eq(req.prompts[0].n_ids, 3);
    cr_assert_eq(req.prompts[0].ids[2], 3);
    cr_assert_null(req.prompts[0].text);
    cr_assert_str_eq(req.prompts[1].text, "two");
    cr_assert(req.n == 3 && req.logprobs && req.top_logprobs == 4 && req.echo);
    cr_assert(req.sampling.presence_penalty == 0.5 && req.sampling.frequency_penalty == -1.25);
    /* choice 0 keeps the request's seed; the others differ from it and each other */
    cr_assert_eq(mr_request_choice_seed(&req, 0), 9);
    cr_assert_neq(mr_request_choice_seed(&req, 1), 9);
    cr_assert_neq(mr_request_choice_seed(&req, 1), mr_request_choice_seed(&req, 2));

    cr_assert_eq(parse(BATCH("/v1/completions", "{\"prompt\": [7, 8]}")), MR_JOBS_OK, "%s",
                 error.message);
    cr_assert(req.n_prompts == 1 && req.prompts[0].n_ids == 2 && req.n == 1 && !req.logprobs);

    cr_assert_eq(parse(BATCH("/v1/chat/completions",
                             "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                             "\"logprobs\": true, \"top_logprobs\": 20, "
                             "\"chat_template_kwargs\": {\"enable_thinking\": false}}")),
                 MR_JOBS_OK, "%s", error.message);
    cr_assert(req.logprobs && req.top_logprobs == 20);
    cr_assert_str_eq(req.chat_template_kwargs, "{\"enable_thinking\":false}");

    static const char *const bad[][3] = {
        {"/v1/completions", "{\"prompt\": \"x\", \"n\": 0}", "body.n must be from 1 to 128"},
        {"/v1/completions", "{\"prompt\": \"x\", \"logprobs\": 21}",
         "body.logprobs must be from 0 to 20"},
        {"/v1/completions", "{\"prompt\": \"x\", \"logprobs\": true}",
         "body.logprobs must be a whole number"},
        {"/v1/completions", "{\"prompt\": \"x\", \"echo\": 1}", "body.echo must be true or false"},
        {"/v1/completions", "{\"prompt\": \"x\", \"presence_penalty\": 2.5}",
         "body.presence_penalty must be from -2 to 2"},
        {"/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_logprobs\": 2}",
         "body.top_logprobs needs logprobs: true"},
        {"/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"echo\": true}",
         "echo is for /v1/completions"},
        {"/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
         "\"chat_template_kwargs\": [1]}",
         "body.chat_template_kwargs must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *line = NULL;
        cr_assert(asprintf(&line, BATCH("%s", "%s"), bad[i][0], bad[i][1]) > 0);
        cr_assert_eq(parse(line), MR_JOBS_EINVAL, "accepted: %s", line);
        cr_assert(strstr(error.message, bad[i][2]), "want '%s' in '%s'", bad[i][2],
                  error.message);
        free(line);
    }
}
