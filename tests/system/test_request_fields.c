/*
 * The request fields of offline evaluation and sampling many, through
 * `moerun run` on the tiny model: n, lists of prompts and token-id prompts,
 * echo, log-probabilities in both endpoints' shapes, penalties; their
 * log-probabilities against the NumPy reference (tests/reference), and the
 * same bytes in any batch, on 4 ranks and across a stop and resume.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

static mr_test_scratch t;

static void setup(void)
{
    mr_test_scratch_open(&t);
}

static void teardown(void)
{
    mr_test_scratch_close(&t);
}

TestSuite(fields, .init = setup, .fini = teardown, .timeout = 300);

static const char PROMPT[] = "Simmer the stock with thyme";

/* The tiny model's ids of `text`, as "1,2,3"; *n of them. */
static char *ids_of(const char *text, int32_t *ids, size_t *n)
{
    char err[512];
    mr_tokenizer *tok;
    cr_assert_eq(mr_tokenizer_load(mr_test_tiny_model(), &tok, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    mr_tokens got = {0};
    cr_assert_eq(mr_tokenizer_encode(tok, text, strlen(text), &got, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    mr_buf list = {0};
    for (size_t i = 0; i < got.count; i++) {
        mr_buf_printf(&list, "%s%d", i ? "," : "", got.ids[i]);
        if (ids)
            ids[i] = got.ids[i];
    }
    mr_buf_append(&list, "", 1);
    *n = got.count;
    mr_tokens_free(&got);
    mr_tokenizer_free(tok);
    return list.data;
}

/* runs/NAME/results.jsonl by custom_id, the response bodies. */
static cJSON *bodies_of(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/runs/%s/results.jsonl", t.dir, name);
    char *text = mr_test_read(path, NULL);
    cr_assert(text, "no %s", path);
    cJSON *all = cJSON_CreateObject();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        cr_assert(o, "not JSON: %s", line);
        const char *id = cJSON_GetObjectItem(o, "custom_id")->valuestring;
        cJSON_AddItemToObject(all, id,
                              cJSON_DetachItemFromObject(cJSON_GetObjectItem(o, "response"),
                                                         "body"));
        cJSON_Delete(o);
    }
    free(text);
    return all;
}

static cJSON *choice(cJSON *bodies, const char *id, int k)
{
    cJSON *body = cJSON_GetObjectItem(bodies, id);
    cr_assert(body, "no result for %s", id);
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), k);
    cr_assert(c, "%s has no choice %d", id, k);
    return c;
}

static const char *text_of(cJSON *bodies, const char *id, int k)
{
    cJSON *c = choice(bodies, id, k), *message = cJSON_GetObjectItem(c, "message");
    return cJSON_GetObjectItem(message ? message : c, message ? "content" : "text")->valuestring;
}

static int usage(cJSON *bodies, const char *id, const char *what)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(bodies, id), "usage"),
                               what)
        ->valueint;
}

static cJSON *tokens_of(cJSON *bodies, const char *id)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(choice(bodies, id, 0), "logprobs"), "tokens");
}

/* How many of a completion's tokens repeat one before them. */
static int repeats(cJSON *tokens)
{
    int n = cJSON_GetArraySize(tokens), same = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(cJSON_GetArrayItem(tokens, i)->valuestring,
                        cJSON_GetArrayItem(tokens, j)->valuestring)) {
                same++;
                break;
            }
    return same;
}

/* NAME.ini: a job over requests.jsonl into runs/NAME, with the same job
 * name and seed for every run, so that their output can be compared. */
static void write_job(const char *name, int max_tokens, int max_batch_tokens,
                      int max_sequences, int ranks)
{
    char ini[64];
    snprintf(ini, sizeof ini, "%s.ini", name);
    mr_test_writef(t.dir, ini,
                   "[job]\nname = fields\nrun_dir = runs/%s\n[model]\npath = model\n[input]\n"
                   "files = requests.jsonl\n[generation]\nmax_tokens = %d\nseed = 3\n"
                   "[engine]\nmax_batch_tokens = %d\nmax_sequences = %d\n[parallel]\n"
                   "ranks = %d\n[checkpoint]\ninterval_seconds = 0.2\n",
                   name, max_tokens, max_batch_tokens, max_sequences, ranks);
}

static int run(const char *name, int max_tokens, int max_batch_tokens, int max_sequences,
               int ranks)
{
    char ini[64];
    snprintf(ini, sizeof ini, "%s.ini", name);
    write_job(name, max_tokens, max_batch_tokens, max_sequences, ranks);
    free(t.out);
    free(t.err);
    return mr_test_moerun(t.dir, &t.out, &t.err, "run", ini, NULL);
}

#define LINE(id, url, body)                                                                 \
    "{\"custom_id\": \"" id "\", \"method\": \"POST\", \"url\": \"/v1/" url "\", \"body\": " \
    body "}\n"

Test(fields, n_lists_token_ids_echo_logprobs_and_penalties_through_moerun_run)
{
    size_t n_ids;
    char *ids = ids_of(PROMPT, NULL, &n_ids);
    mr_test_writef(
        t.dir, "requests.jsonl",
        LINE("plain", "completions", "{\"prompt\": \"%s\", \"temperature\": 0.8, \"seed\": 5}")
        LINE("three", "completions",
             "{\"prompt\": \"%s\", \"temperature\": 0.8, \"seed\": 5, \"n\": 3}")
        LINE("ids", "completions", "{\"prompt\": [%s], \"temperature\": 0.8, \"seed\": 5}")
        LINE("list", "completions",
             "{\"prompt\": [\"%s\", [%s]], \"temperature\": 0.8, \"seed\": 5, \"n\": 2}")
        LINE("echo", "completions",
             "{\"prompt\": \"%s\", \"echo\": true, \"logprobs\": 2, \"temperature\": 0}")
        LINE("greedy", "completions",
             "{\"prompt\": \"%s\", \"max_tokens\": 40, \"temperature\": 0, \"logprobs\": 0}")
        LINE("again", "completions",
             "{\"prompt\": \"%s\", \"max_tokens\": 40, \"temperature\": 0, \"logprobs\": 0, "
             "\"presence_penalty\": -2}")
        LINE("less", "completions",
             "{\"prompt\": \"%s\", \"max_tokens\": 40, \"temperature\": 0, \"logprobs\": 0, "
             "\"presence_penalty\": -2, \"frequency_penalty\": 1.5}")
        LINE("chat", "chat/completions",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"%s?\"}], \"n\": 2, "
             "\"logprobs\": true, \"top_logprobs\": 3, \"temperature\": 0.7}"),
        PROMPT, PROMPT, ids, PROMPT, ids, PROMPT, PROMPT, PROMPT, PROMPT, PROMPT);
    free(ids);
    cr_assert_eq(run("fields", 12, 128, 16, 1), 0, "%s%s", t.out, t.err);
    cJSON *b = bodies_of("fields");

    /* n: choice 0 is the n = 1 completion, the others sample their own */
    const char *plain = text_of(b, "plain", 0);
    cr_assert_str_eq(text_of(b, "three", 0), plain);
    cr_assert(strcmp(text_of(b, "three", 1), plain) || strcmp(text_of(b, "three", 2), plain),
              "three choices, all '%s'", plain);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "three"),
                                                        "choices")),
                 3);
    cr_assert_eq(usage(b, "three", "prompt_tokens"), usage(b, "plain", "prompt_tokens"),
                 "a prompt shared by n choices counts once");
    cr_assert_eq(usage(b, "three", "prompt_tokens"), (int)n_ids);

    /* token ids: the same prompt as its text */
    cr_assert_str_eq(text_of(b, "ids", 0), plain);
    /* a list of prompts: choice k = prompt k / n, with choice k's seed */
    for (int k = 0; k < 3; k++)
        cr_assert_str_eq(text_of(b, "list", k), text_of(b, "three", k), "choice %d", k);
    cr_assert_eq(usage(b, "list", "prompt_tokens"), 2 * (int)n_ids);

    /* echo with logprobs: the prompt first, its first token unscored */
    cJSON *echo = cJSON_GetObjectItem(choice(b, "echo", 0), "logprobs");
    cr_assert(!strncmp(text_of(b, "echo", 0), PROMPT, strlen(PROMPT)), "%s",
              text_of(b, "echo", 0));
    cJSON *lp = cJSON_GetObjectItem(echo, "token_logprobs");
    cJSON *tops = cJSON_GetObjectItem(echo, "top_logprobs");
    int prompt = usage(b, "echo", "prompt_tokens"), all = cJSON_GetArraySize(lp);
    cr_assert_eq(all, prompt + usage(b, "echo", "completion_tokens"));
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(lp, 0)) && cJSON_IsNull(cJSON_GetArrayItem(tops, 0)));
    for (int i = 1; i < all; i++) {
        double own = cJSON_GetArrayItem(lp, i)->valuedouble, best = -INFINITY;
        cJSON *alt;
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetArrayItem(tops, i)), 2, "token %d", i);
        cJSON_ArrayForEach(alt, cJSON_GetArrayItem(tops, i))
        {
            best = alt->valuedouble > best ? alt->valuedouble : best;
        }
        cr_assert(own <= 0 && own <= best, "token %d: %g above the best %g", i, own, best);
        if (i >= prompt) /* greedy: every completion token is the most likely */
            cr_assert_eq(own, best, "completion token %d", i - prompt);
    }

    /* penalties: the tiny model's greedy text never repeats a token, so a
     * negative presence penalty (a bonus) makes it repeat, and a frequency
     * penalty on top of it, which grows with each use, repeats less */
    int greedy = repeats(tokens_of(b, "greedy"));
    int again = repeats(tokens_of(b, "again")), less = repeats(tokens_of(b, "less"));
    cr_assert_gt(again, greedy, "presence_penalty -2: %d repeats, greedy %d", again, greedy);
    cr_assert_lt(less, again, "frequency_penalty 1.5 on top: %d repeats, without %d", less,
                 again);

    /* chat: logprobs.content per choice, top_logprobs alternatives each */
    for (int k = 0; k < 2; k++) {
        cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(choice(b, "chat", k), "logprobs"),
                                             "content");
        cr_assert_gt(cJSON_GetArraySize(content), 0);
        cJSON *first = cJSON_GetArrayItem(content, 0);
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(first, "token")));
        cr_assert(cJSON_IsArray(cJSON_GetObjectItem(first, "bytes")));
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(first, "top_logprobs")), 3);
    }
    cJSON_Delete(b);
}

/* A chat's chat_template_kwargs reach the model's template: a model folder
 * of the tiny model's files whose template takes enable_thinking as
 * Qwen3's does, served one chat with it off and one without. */
Test(fields, chat_template_kwargs_reach_the_template_in_moerun_run)
{
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json"};
    char from[4096], to[4096];
    snprintf(to, sizeof to, "%s/thinking", t.dir);
    cr_assert_eq(mkdir(to, 0777), 0);
    for (size_t i = 0; i < 3; i++) {
        snprintf(from, sizeof from, "%s/%s", mr_test_tiny_model(), files[i]);
        snprintf(to, sizeof to, "%s/thinking/%s", t.dir, files[i]);
        cr_assert_eq(symlink(from, to), 0, "%s", to);
    }
    mr_test_writef(t.dir, "thinking/tokenizer_config.json",
                   "{\"eos_token\": \"<|im_end|>\", \"chat_template\": \"{%% for m in messages "
                   "%%}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{%% endfor %%}"
                   "<|im_start|>assistant\\n{%% if enable_thinking is defined and "
                   "enable_thinking is false %%}<think>\\n\\n</think>\\n\\n{%% endif %%}\"}");
    mr_test_writef(t.dir, "requests.jsonl",
                   LINE("on", "chat/completions",
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"Soup?\"}]}")
                   LINE("off", "chat/completions",
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"Soup?\"}], "
                        "\"chat_template_kwargs\": {\"enable_thinking\": false}}"));
    mr_test_writef(t.dir, "think.ini",
                   "[job]\nname = think\n[model]\npath = thinking\n[input]\n"
                   "files = requests.jsonl\n[generation]\nmax_tokens = 4\n");
    cr_assert_eq(mr_test_moerun(t.dir, &t.out, &t.err, "run", "think.ini", NULL), 0, "%s%s",
                 t.out, t.err);
    cJSON *b = bodies_of("think");
    int on = usage(b, "on", "prompt_tokens"), off = usage(b, "off", "prompt_tokens");
    cr_assert_gt(off, on, "the empty think block adds tokens: %d with it, %d without", off, on);
    cJSON_Delete(b);
}

/* Lines of every field, for runs compared byte for byte. */
static void write_mixed_requests(int lines)
{
    mr_buf all = {0};
    static const char *const prompts[] = {
        "How long should I simmer a tomato sauce?", "Write a C function that reverses a list.",
        "What should I pack for a week of hiking?", "Why does bread dough need to rest?"};
    for (int i = 0; i < lines; i++) {
        const char *p = prompts[i % 4];
        switch (i % 4) {
        case 0:
            mr_buf_printf(&all, LINE("m%d", "completions",
                                     "{\"prompt\": \"%s\", \"echo\": true, \"logprobs\": 3, "
                                     "\"n\": 2, \"temperature\": 0.9}"),
                          i, p);
            break;
        case 1:
            mr_buf_printf(&all, LINE("m%d", "chat/completions",
                                     "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}], "
                                     "\"logprobs\": true, \"top_logprobs\": 2, "
                                     "\"presence_penalty\": 1}"),
                          i, p);
            break;
        case 2:
            mr_buf_printf(&all, LINE("m%d", "completions",
                                     "{\"prompt\": [\"%s\", [%d, %d, %d]], \"logprobs\": 1, "
                                     "\"frequency_penalty\": 0.5, \"temperature\": 0.5}"),
                          i, p, 3 + i, 40 + i, 700 + i);
            break;
        default:
            mr_buf_printf(&all, LINE("m%d", "completions", "{\"prompt\": \"%s\", \"n\": 3}"), i,
                          p);
        }
    }
    free(mr_test_write(t.dir, "requests.jsonl", all.data, all.len));
    mr_buf_free(&all);
}

Test(fields, the_same_bytes_alone_in_any_batch_and_on_four_ranks)
{
    write_mixed_requests(16);
    cr_assert_eq(run("wide", 12, 128, 16, 1), 0, "%s%s", t.out, t.err);
    /* 4 sequences and 8 tokens a step: prompts whose every position is
     * scored go in 4 rows, or fewer, at a time */
    cr_assert_eq(run("narrow", 12, 8, 4, 1), 0, "%s%s", t.out, t.err);
    mr_test_assert_same_output(t.dir, "wide", "narrow");
    cr_assert_eq(run("four", 12, 128, 16, 4), 0, "%s%s", t.out, t.err);
    mr_test_assert_same_output(t.dir, "wide", "four");
    /* each of the first four lines alone in its job: the same line */
    cJSON *batch = bodies_of("wide");
    char path[4096];
    snprintf(path, sizeof path, "%s/requests.jsonl", t.dir);
    char *all = mr_test_read(path, NULL);
    for (int i = 0; i < 4; i++) {
        char *line = all;
        for (int k = 0; k < i; k++)
            line = strchr(line, '\n') + 1;
        free(mr_test_write(t.dir, "requests.jsonl", line, (size_t)(strchr(line, '\n') - line + 1)));
        char name[32], id[32];
        snprintf(name, sizeof name, "alone%d", i);
        snprintf(id, sizeof id, "m%d", i);
        cr_assert_eq(run(name, 12, 128, 16, 1), 0, "%s%s", t.out, t.err);
        cJSON *alone = bodies_of(name);
        cJSON_DeleteItemFromObject(cJSON_GetObjectItem(alone, id), "created");
        cJSON *in_batch = cJSON_Duplicate(cJSON_GetObjectItem(batch, id), true);
        cJSON_DeleteItemFromObject(in_batch, "created");
        char *x = cJSON_PrintUnformatted(cJSON_GetObjectItem(alone, id));
        char *y = cJSON_PrintUnformatted(in_batch);
        cr_assert_str_eq(x, y, "%s alone and in a batch differ", id);
        free(x);
        free(y);
        cJSON_Delete(in_batch);
        cJSON_Delete(alone);
    }
    free(all);
    cJSON_Delete(batch);
}

/* A stop while lines with several generations are in flight, some of
 * them finished: the resumed run writes the same bytes. */
Test(fields, a_stopped_run_resumes_lines_of_many_choices_to_the_same_bytes)
{
    write_mixed_requests(24);
    cr_assert_eq(run("whole", 24, 64, 6, 1), 0, "%s%s", t.out, t.err);
    write_job("stopped", 24, 64, 6, 1);
    pid_t pid = mr_test_spawn_moerun(t.dir, "stopped.log", "run", "stopped.ini", NULL);
    char parts[4096];
    snprintf(parts, sizeof parts, "%s/runs/stopped/parts", t.dir);
    double start = mr_test_seconds();
    while (access(parts, F_OK) != 0 && mr_test_seconds() - start < 60)
        usleep(20000);
    usleep(300000);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int code;
    cr_assert(mr_test_ended(pid, 60, &code), "the run did not stop");
    char log[4096];
    snprintf(log, sizeof log, "%s/stopped.log", t.dir);
    char *text = mr_test_read(log, NULL);
    cr_assert_eq(code, 4, "exit %d, not stopped:\n%s", code, text);
    free(text);
    cr_assert_eq(mr_test_moerun(t.dir, &t.out, &t.err, "resume", "runs/stopped", NULL), 0,
                 "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, " requests in flight go on from the "),
              "nothing was in flight at the stop:\n%s", t.out);
    mr_test_assert_same_output(t.dir, "whole", "stopped");
}

/* log_softmax of a row, in double. */
static void log_softmax(const float *logits, int vocab, double *out)
{
    double max = logits[0], sum = 0;
    for (int v = 1; v < vocab; v++)
        max = logits[v] > max ? logits[v] : max;
    for (int v = 0; v < vocab; v++)
        sum += exp((double)logits[v] - max);
    for (int v = 0; v < vocab; v++)
        out[v] = (double)logits[v] - max - log(sum);
}

/* The id whose bytes a result's token string spells ("bytes:\xNN..." for
 * one that is not UTF-8 by itself). */
static int32_t id_of(const mr_tokenizer *tok, int vocab, const char *token)
{
    char bytes[256];
    size_t len = 0;
    if (!strncmp(token, "bytes:", 6)) {
        for (const char *p = token + 6; p[0] == '\\' && p[1] == 'x' && len < sizeof bytes; p += 4)
            bytes[len++] = (char)strtol((char[3]){p[2], p[3], 0}, NULL, 16);
    } else {
        len = strlen(token);
        memcpy(bytes, token, len < sizeof bytes ? len : sizeof bytes);
    }
    for (int32_t id = 0; id < vocab; id++) {
        size_t n;
        const char *b = mr_tokenizer_token_bytes(tok, id, &n);
        if (b && n == len && !memcmp(b, bytes, len))
            return id;
    }
    cr_assert_fail("no token spells '%s'", token);
    return -1;
}

/* The float64 NumPy forward of tests/reference gives the logits of every
 * position; each logprob and top_logprobs entry moerun wrote must be
 * their log_softmax within 1e-4, and the alternatives the 5 most likely. */
Test(fields, logprobs_and_top_logprobs_match_the_numpy_reference, .timeout = 600)
{
    static const char *const texts[] = {"Simmer the stock with thyme, then strain it.",
                                        "A linked list reversed in place"};
    int32_t ids[2][64];
    size_t n[2];
    for (int i = 0; i < 2; i++)
        free(ids_of(texts[i], ids[i], &n[i]));
    mr_buf lines = {0};
    for (int i = 0; i < 2; i++) {
        mr_buf_printf(&lines, "{\"custom_id\": \"r%d\", \"method\": \"POST\", \"url\": "
                              "\"/v1/completions\", \"body\": {\"prompt\": [",
                      i);
        for (size_t k = 0; k < n[i]; k++) {
            mr_buf_printf(&lines, "%s%d", k ? ", " : "", ids[i][k]);
            }
        mr_buf_printf(&lines, "], \"echo\": true, \"logprobs\": 5, \"max_tokens\": 1}}\n");
    }
    free(mr_test_write(t.dir, "requests.jsonl", lines.data, lines.len));
    mr_buf_free(&lines);
    cr_assert_eq(run("ref", 1, 128, 16, 1), 0, "%s%s", t.out, t.err);
    cJSON *b = bodies_of("ref");

    char err[512];
    mr_tokenizer *tok;
    cr_assert_eq(mr_tokenizer_load(mr_test_tiny_model(), &tok, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    int vocab = mr_tokenizer_vocab_size(tok);
    for (int i = 0; i < 2; i++) {
        char id[16], cmd[8192];
        snprintf(id, sizeof id, "r%d", i);
        int at = snprintf(cmd, sizeof cmd, "%s %s/tests/reference/moe_forward.py %s --out %s/ref.f32 "
                                           "--tokens ",
                          getenv("MR_PYTHON"), getenv("MR_SOURCE_DIR"), mr_test_tiny_model(),
                          t.dir);
        for (size_t k = 0; k < n[i]; k++)
            at += snprintf(cmd + at, sizeof cmd - (size_t)at, "%s%d", k ? "," : "", ids[i][k]);
        cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
        char path[4096];
        snprintf(path, sizeof path, "%s/ref.f32", t.dir);
        size_t bytes;
        float *logits = (float *)mr_test_read(path, &bytes);
        cr_assert_eq(bytes, n[i] * (size_t)vocab * sizeof(float));
        double *ref = malloc((size_t)vocab * sizeof *ref);
        cJSON *lp = cJSON_GetObjectItem(choice(b, id, 0), "logprobs");
        /* token k + 1 (the completion's first at k + 1 = n) from position k */
        for (size_t k = 0; k < n[i]; k++) {
            log_softmax(logits + k * (size_t)vocab, vocab, ref);
            cJSON *own = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "token_logprobs"), (int)k + 1);
            cJSON *token = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "tokens"), (int)k + 1);
            int32_t next = k + 1 < n[i] ? ids[i][k + 1] : id_of(tok, vocab, token->valuestring);
            cr_assert(fabs(own->valuedouble - ref[next]) <= 1e-4 * fmax(1, fabs(ref[next])),
                      "%s token %zu: %.7f, the reference %.7f", id, k + 1, own->valuedouble,
                      ref[next]);
            /* the reference's fifth most likely, to check the alternatives are the top 5 */
            double fifth = -INFINITY, top[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                                                 -INFINITY};
            for (int v = 0; v < vocab; v++)
                for (int s = 0; s < 5; s++)
                    if (ref[v] > top[s]) {
                        memmove(top + s + 1, top + s, (size_t)(4 - s) * sizeof *top);
                        top[s] = ref[v];
                        break;
                    }
            fifth = top[4];
            cJSON *alts = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), (int)k + 1);
            cr_assert_eq(cJSON_GetArraySize(alts), 5, "%s token %zu", id, k + 1);
            cJSON *alt;
            cJSON_ArrayForEach(alt, alts)
            {
                int32_t v = id_of(tok, vocab, alt->string);
                cr_assert(fabs(alt->valuedouble - ref[v]) <= 1e-4 * fmax(1, fabs(ref[v])),
                          "%s token %zu, alternative '%s': %.7f, the reference %.7f", id, k + 1,
                          alt->string, alt->valuedouble, ref[v]);
                cr_assert_geq(ref[v], fifth - 1e-4, "'%s' is not among the 5 most likely",
                              alt->string);
            }
        }
        free(ref);
        free(logits);
    }
    mr_tokenizer_free(tok);
    cJSON_Delete(b);
}
