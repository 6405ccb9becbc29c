/* Serving requests end to end with the tiny model, through `moerun run`. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/common/fixture.h"

static char *dir, *out, *err;

static void setup(void)
{
    dir = mr_test_tmpdir();
    out = err = NULL;
    mr_test_make_model(dir);
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(out);
    free(err);
}

TestSuite(serve, .init = setup, .fini = teardown, .timeout = 240);

static const char *const topics[] = {
    "How long should I simmer a tomato sauce with garlic and basil?",
    "Write a C function that reverses a linked list in place.",
    "What should I pack for a week of hiking in the Alps in June?",
    "Explain why bread dough needs to rest before baking.",
    "How do I find a memory leak in a program that uses malloc?",
};

/* Request i of a mixed set: chat and completions, greedy and sampled. */
static void append_request(mr_buf *b, int i)
{
    char line[1024];
    const char *text = topics[i % 5];
    int max_tokens = 4 + (i * 7) % 21;
    if (i % 3 == 0)
        snprintf(line, sizeof line,
                 "{\"custom_id\": \"r%02d\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
                 "\"body\": {\"model\": \"tiny\", \"prompt\": \"%s (%d)\", \"max_tokens\": %d, "
                 "\"temperature\": 0}}\n",
                 i, text, i, max_tokens);
    else
        snprintf(line, sizeof line,
                 "{\"custom_id\": \"r%02d\", \"method\": \"POST\", \"url\": "
                 "\"/v1/chat/completions\", \"body\": {\"model\": \"tiny\", \"messages\": "
                 "[{\"role\": \"system\", \"content\": \"Answer briefly.\"}, {\"role\": \"user\", "
                 "\"content\": \"%s (%d)\"}], \"max_tokens\": %d, \"temperature\": %.1f, "
                 "\"top_p\": %.2f, \"top_k\": %d}}\n",
                 i, text, i, max_tokens, 0.3 * (i % 4), i % 2 ? 0.9 : 1.0, i % 5 ? 0 : 40);
    mr_buf_append(b, line, strlen(line));
}

static void write_requests(const char *name, int from, int to)
{
    mr_buf b = {0};
    for (int i = from; i < to; i++)
        append_request(&b, i);
    free(mr_test_write(dir, name, b.data, b.len));
    mr_buf_free(&b);
}

static void write_job(const char *name, const char *requests, const char *extra)
{
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[job]\nname = serve\nrun_dir = runs/%s\n[model]\npath = model\n[input]\n"
             "files = %s\n[generation]\nseed = 7\n%s",
             name, requests, extra);
    char file[256];
    snprintf(file, sizeof file, "%s.ini", name);
    free(mr_test_write(dir, file, ini, (size_t)-1));
}

static int run_job(const char *name)
{
    free(out);
    free(err);
    char file[256];
    snprintf(file, sizeof file, "%s.ini", name);
    return mr_test_moerun(dir, &out, &err, "run", file, NULL);
}

/* The lines of a run's results.jsonl, each with `created` taken out: the
 * one field a rerun may change. */
static cJSON *results_of(const char *name, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/runs/%s/%s", dir, name, file);
    size_t len;
    char *text = mr_test_read(path, &len);
    cr_assert(text, "no %s", path);
    cJSON *lines = cJSON_CreateObject();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        cr_assert(o, "not JSON: %s", line);
        cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body");
        cJSON_DeleteItemFromObject(body, "created");
        const char *id = cJSON_GetObjectItem(o, "custom_id")->valuestring;
        cr_assert_null(cJSON_GetObjectItem(lines, id), "%s appears twice", id);
        cJSON_AddItemToObject(lines, id, o);
    }
    free(text);
    return lines;
}

static void assert_same_line(cJSON *a, cJSON *b, const char *id)
{
    char *x = cJSON_PrintUnformatted(cJSON_GetObjectItem(a, id));
    char *y = cJSON_PrintUnformatted(cJSON_GetObjectItem(b, id));
    cr_assert(x && y, "%s missing", id);
    cr_assert_str_eq(x, y, "%s differs", id);
    free(x);
    free(y);
}

Test(serve, a_request_alone_and_in_a_batch_of_37_gives_the_same_line)
{
    write_requests("all.jsonl", 0, 37);
    write_requests("one.jsonl", 11, 12);
    write_requests("two.jsonl", 30, 31);
    write_job("batch", "all.jsonl",
              "[engine]\nmax_batch_tokens = 96\nmax_sequences = 24\nkv_blocks = 256\n");
    write_job("alone", "one.jsonl two.jsonl", "[engine]\nmax_batch_tokens = 512\n");
    cr_assert_eq(run_job("batch"), 0, "%s%s", out, err);
    cr_assert(strstr(out, "served 37 requests, 0 failed"), "%s", out);
    cr_assert_eq(run_job("alone"), 0, "%s%s", out, err);
    cJSON *batch = results_of("batch", "results.jsonl");
    cJSON *alone = results_of("alone", "results.jsonl");
    cr_assert_eq(cJSON_GetArraySize(batch), 37);
    assert_same_line(batch, alone, "r11");
    assert_same_line(batch, alone, "r30");
    cJSON_Delete(batch);
    cJSON_Delete(alone);
}

Test(serve, results_follow_input_order_and_count_usage)
{
    write_requests("all.jsonl", 0, 12);
    write_job("order", "all.jsonl", "[engine]\nmax_batch_tokens = 64\nmax_sequences = 8\n");
    cr_assert_eq(run_job("order"), 0, "%s%s", out, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/runs/order/results.jsonl", dir);
    char *text = mr_test_read(path, NULL);
    int expect = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), expect++) {
        cJSON *o = cJSON_Parse(line);
        char id[16];
        snprintf(id, sizeof id, "r%02d", expect);
        cr_assert_str_eq(cJSON_GetObjectItem(o, "custom_id")->valuestring, id);
        cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body");
        cJSON *usage = cJSON_GetObjectItem(body, "usage");
        int prompt = cJSON_GetObjectItem(usage, "prompt_tokens")->valueint;
        int completion = cJSON_GetObjectItem(usage, "completion_tokens")->valueint;
        int max_tokens = 4 + (expect * 7) % 21;
        const char *finish = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0),
                                                 "finish_reason")->valuestring;
        cr_assert(prompt > 5 && completion >= 1 && completion <= max_tokens, "%s", line);
        cr_assert_eq(cJSON_GetObjectItem(usage, "total_tokens")->valueint, prompt + completion);
        /* At max_tokens the last token may also have been EOS. */
        cr_assert(strcmp(finish, "stop") == 0 ||
                      (completion == max_tokens && strcmp(finish, "length") == 0),
                  "%s", line);
        cJSON_Delete(o);
    }
    cr_assert_eq(expect, 12);
    free(text);
}

Test(serve, a_prompt_that_cannot_fit_becomes_an_error_record)
{
    mr_buf b = {0};
    append_request(&b, 0);
    const char *huge_head = "{\"custom_id\": \"huge\", \"method\": \"POST\", \"url\": "
                            "\"/v1/completions\", \"body\": {\"prompt\": \"";
    mr_buf_append(&b, huge_head, strlen(huge_head));
    for (int i = 0; i < 200; i++)
        mr_buf_append(&b, "garlic onion ", 13);
    mr_buf_append(&b, "\"}}\n", 4);
    append_request(&b, 1);
    free(mr_test_write(dir, "r.jsonl", b.data, b.len));
    mr_buf_free(&b);
    write_job("fit", "r.jsonl", "[engine]\nkv_block_size = 16\nkv_blocks = 8\n");
    cr_assert_eq(run_job("fit"), 0, "%s%s", out, err);
    cr_assert(strstr(out, "served 2 requests, 1 failed"), "%s", out);
    cJSON *errors = results_of("fit", "errors.jsonl");
    cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(errors, "huge"), "error");
    cr_assert_str_eq(cJSON_GetObjectItem(e, "code")->valuestring, "prompt_too_long");
    cr_assert(strstr(cJSON_GetObjectItem(e, "message")->valuestring, "r.jsonl:2"));
    cr_assert(strstr(cJSON_GetObjectItem(e, "message")->valuestring, "128 per sequence"));
    cJSON_Delete(errors);
}

/* A stop string cuts the text before it: take a greedy answer, stop it at
 * a piece from its middle, and expect exactly the text before the piece. */
Test(serve, stop_strings_cut_the_text)
{
    const char *req = "{\"custom_id\": \"s\", \"url\": \"/v1/completions\", \"method\": \"POST\", "
                      "\"body\": {\"prompt\": \"Knead the dough\", \"max_tokens\": 24, "
                      "\"temperature\": 0";
    char line[512];
    snprintf(line, sizeof line, "%s}}\n", req);
    free(mr_test_write(dir, "free.jsonl", line, (size_t)-1));
    write_job("free", "free.jsonl", "");
    cr_assert_eq(run_job("free"), 0, "%s%s", out, err);
    cJSON *r = results_of("free", "results.jsonl");
    cJSON *choice = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "s"), "response"), "body"),
                            "choices"),
        0);
    char *text = strdup(cJSON_GetObjectItem(choice, "text")->valuestring);
    cJSON_Delete(r);
    size_t n = strlen(text);
    cr_assert(n >= 12, "greedy text too short to cut: '%s'", text);
    /* A stop piece of plain ASCII letters, so it is easy to put in JSON. */
    size_t at = n / 2;
    while (at < n && !((text[at] >= 'a' && text[at] <= 'z') || (text[at] >= 'A' && text[at] <= 'Z')))
        at++;
    cr_assert(at + 2 <= n && ((text[at + 1] | 32) >= 'a' && (text[at + 1] | 32) <= 'z'),
              "no letters to stop at in '%s'", text);
    char stop[3] = {text[at], text[at + 1], 0};
    size_t first = (size_t)(strstr(text, stop) - text);
    char extra[128];
    snprintf(extra, sizeof extra, ", \"stop\": [\"%s\"]", stop);
    snprintf(line, sizeof line, "%s%s}}\n", req, extra);
    free(mr_test_write(dir, "stop.jsonl", line, (size_t)-1));
    write_job("stop", "stop.jsonl", "");
    cr_assert_eq(run_job("stop"), 0, "%s%s", out, err);
    r = results_of("stop", "results.jsonl");
    choice = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "s"), "response"), "body"),
                            "choices"),
        0);
    cr_assert_str_eq(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "stop");
    char *cut = cJSON_GetObjectItem(choice, "text")->valuestring;
    cr_assert_eq(strlen(cut), first, "stop '%s' in '%s' gave '%s'", stop, text, cut);
    cr_assert(strncmp(cut, text, first) == 0);
    cJSON_Delete(r);
    free(text);
}

Test(serve, a_broken_model_folder_is_named)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/broken", dir) > 0);
    free(mr_test_write(dir, "broken/config.json", "{\"architectures\": [\"LlamaForCausalLM\"]}",
                       (size_t)-1));
    write_requests("r.jsonl", 0, 1);
    free(mr_test_write(dir, "b.ini", "[model]\npath = broken\n[input]\nfiles = r.jsonl\n",
                       (size_t)-1));
    free(out);
    free(err);
    cr_assert_eq(mr_test_moerun(dir, &out, &err, "run", "b.ini", NULL), 3, "%s", err);
    cr_assert(strstr(err, "config.json"), "%s", err);
    free(path);
}

/* A model whose chat template refuses a chat (raise_exception, as Gemma's
 * does for a system prompt) still serves completions; those chat requests
 * become error records with the template's message. */
Test(serve, a_chat_template_that_refuses_fails_only_those_chats)
{
    static const char *const linked[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (size_t i = 0; i < 3; i++) {
        char *from = NULL, *to = NULL;
        cr_assert(asprintf(&from, "%s/%s", mr_test_tiny_model(), linked[i]) > 0);
        cr_assert(asprintf(&to, "%s/llama3/%s", dir, linked[i]) > 0);
        free(mr_test_write(dir, "llama3/.keep", "", 0));
        cr_assert_eq(symlink(from, to), 0, "%s", to);
        free(from);
        free(to);
    }
    free(mr_test_write(dir, "llama3/tokenizer_config.json",
                       "{\"eos_token\": \"<|im_end|>\", \"chat_template\": \"{% if messages[0]"
                       "['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                       "{% endif %}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
                       "<|end_header_id|>\\n\\n{{ m['content'] }}<|eot_id|>{% endfor %}\"}",
                       (size_t)-1));
    write_requests("r.jsonl", 0, 3); /* r00 is a completion, r01 and r02 chats */
    free(mr_test_write(dir, "t.ini",
                       "[job]\nrun_dir = runs/t\n[model]\npath = llama3\n[input]\nfiles = r.jsonl\n",
                       (size_t)-1));
    free(out);
    free(err);
    cr_assert_eq(mr_test_moerun(dir, &out, &err, "run", "t.ini", NULL), 0, "%s%s", out, err);
    cr_assert(strstr(out, "served 1 request, 2 failed"), "%s", out);
    cJSON *results = results_of("t", "results.jsonl");
    cr_assert_not_null(cJSON_GetObjectItem(results, "r00"));
    cJSON_Delete(results);
    cJSON *errors = results_of("t", "errors.jsonl");
    cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(errors, "r01"), "error");
    cr_assert_str_eq(cJSON_GetObjectItem(e, "code")->valuestring, "unsupported_chat_template");
    cr_assert(strstr(cJSON_GetObjectItem(e, "message")->valuestring,
                     "the chat template refused the chat: System role not supported"),
              "%s", cJSON_GetObjectItem(e, "message")->valuestring);
    cJSON_Delete(errors);
}
