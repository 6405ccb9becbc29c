/* Committing what finished, in any order: a stop while short requests
 * have finished behind long ones commits the short ones and carries the
 * long ones' tokens, so the resume serves no finished request again and
 * goes on with the long ones where they were, to the same bytes as a run
 * that never stopped (in the engine: a generation given its earlier tokens
 * ends as if it never stopped); the join refuses parts that miss or repeat
 * a line's record; a max_tokens that cannot fit the context is an error
 * record. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "checkpoint/checkpoint.h"
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

TestSuite(commit, .init = setup, .fini = teardown, .timeout = 120);

/* One shard, so that records finish out of input order within it; one
 * thread, as two tests run at once on two cores; a timeline record every
 * 0.1 s to watch it by. */
#define MIXED "[input]\nshards = 1\n[engine]\nthreads = 1\n[report]\nprogress_seconds = 0.1\n"
#define REQUESTS 6
#define LONG 2 /* the first lines ask for LONG_TOKENS, the others for 1 */
#define LONG_TOKENS 1000

static void write_mixed_requests(void)
{
    mr_buf b = {0};
    for (int i = 1; i <= REQUESTS; i++)
        mr_buf_printf(&b,
                      "{\"custom_id\": \"mix-%d\", \"method\": \"POST\", \"url\": "
                      "\"/v1/completions\", \"body\": {\"prompt\": \"Stock %d: "
                      "how long?\", \"max_tokens\": %d}}\n",
                      i, i, i <= LONG ? LONG_TOKENS : 1);
    free(mr_test_write(t.dir, "requests.jsonl", b.data, b.len));
    mr_buf_free(&b);
}

static char *in_dir(const char *rel)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", t.dir, rel) > 0);
    return path;
}

static int moerun(const char *a, const char *b, const char *c)
{
    free(t.out);
    free(t.err);
    return mr_test_moerun(t.dir, &t.out, &t.err, a, b, c, NULL);
}

/* requests_ok in the last record of runs/NAME/timeline.jsonl (0: none
 * yet), and whether it is its attempt's last. */
static double timeline_ok(const char *name, bool *final)
{
    char rel[128];
    snprintf(rel, sizeof rel, "runs/%s/timeline.jsonl", name);
    char *path = in_dir(rel), *text = mr_test_read(path, NULL), *last = NULL;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n"))
        last = line;
    cJSON *j = last ? cJSON_Parse(last) : NULL, *ok = cJSON_GetObjectItem(j, "requests_ok");
    double n = cJSON_IsNumber(ok) ? ok->valuedouble : 0;
    *final = cJSON_IsTrue(cJSON_GetObjectItem(j, "final"));
    cJSON_Delete(j);
    free(text);
    free(path);
    return n;
}

static size_t count_lines(const char *rel)
{
    char *path = in_dir(rel), *text = mr_test_read(path, NULL);
    size_t n = 0;
    for (const char *p = text; p && (p = strchr(p, '\n')); p++)
        n++;
    free(text);
    free(path);
    return n;
}

/* Runs the mixed job as runs/NAME and stops it with SIGTERM once the short
 * requests have finished, while the long ones still generate. */
static void stop_mixed(const char *name)
{
    char ini[64], log[64];
    snprintf(ini, sizeof ini, "%s.ini", name);
    snprintf(log, sizeof log, "%s.log", name);
    mr_test_write_job(t.dir, name, MIXED);
    pid_t pid = mr_test_spawn_moerun(t.dir, log, "run", ini, NULL);
    double until = mr_test_seconds() + 60;
    bool final = false;
    while (timeline_ok(name, &final) < REQUESTS - LONG && mr_test_seconds() < until)
        usleep(2000);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    char *path = in_dir(log), *text = mr_test_read(path, NULL);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 4, "not stopped:\n%s", text);
    free(text);
    free(path);
}

static void load_newest(const char *name, mr_checkpoint_state *st)
{
    char rel[128], warning[512], msg[1024];
    snprintf(rel, sizeof rel, "runs/%s/checkpoint", name);
    char *dir = in_dir(rel);
    cr_assert_eq(mr_checkpoint_load_latest(dir, st, warning, sizeof warning, msg, sizeof msg),
                 MR_CHECKPOINT_OK, "%s", msg);
    free(dir);
}

static void write_generation(const char *name, mr_checkpoint_state *st)
{
    char rel[128], msg[1024];
    snprintf(rel, sizeof rel, "runs/%s/checkpoint", name);
    char *dir = in_dir(rel);
    cr_assert_eq(mr_checkpoint_write(dir, st, 3, msg, sizeof msg), MR_CHECKPOINT_OK, "%s", msg);
    free(dir);
}

/* The number after `key` in the last output. */
static unsigned long long number_after(const char *key)
{
    const char *at = strstr(t.out, key);
    cr_assert(at, "no '%s' in:\n%s", key, t.out);
    return strtoull(at + strlen(key), NULL, 10);
}

Test(commit, a_stop_commits_what_finished_behind_long_requests_and_resume_serves_it_never_again)
{
    write_mixed_requests();
    cr_assert_eq(mr_test_run_job(t.dir, "ref", MIXED, &t.out, &t.err), 0, "%s%s", t.out, t.err);
    stop_mixed("mix");

    mr_checkpoint_state st = {0};
    load_newest("mix", &st);
    const mr_checkpoint_shard *shard = &st.shards[0];
    uint64_t committed = st.counters.requests_ok, carried = 0;
    /* The long requests were still generating, with records behind them. */
    cr_assert_eq(shard->n_in_flight, LONG, "%zu lines in flight", shard->n_in_flight);
    cr_assert_eq(shard->in_flight[0].line, 1);
    cr_assert_eq(committed, REQUESTS - LONG);
    for (size_t i = 0; i < shard->n_in_flight; i++)
        carried += shard->in_flight[i].n_tokens;
    cr_assert(carried > 0 && carried < LONG * LONG_TOKENS, "%llu tokens carried",
              (unsigned long long)carried);
    /* Every request that had finished when the run stopped (its last
     * timeline record says) is committed. */
    bool final;
    cr_assert_eq(timeline_ok("mix", &final), (double)committed);
    cr_assert(final);
    mr_checkpoint_state_free(&st);

    cr_assert_eq(moerun("resume", "runs/mix", NULL), 0, "%s%s", t.out, t.err);
    cr_assert_eq(number_after("records committed, "), LONG, "%s", t.out);
    cr_assert_eq(number_after("go on from the "), carried, "%s", t.out);
    /* Served again: only what was in flight. */
    cr_assert_eq(number_after("\nserved "), REQUESTS - committed, "%s", t.out);
    mr_test_assert_same_output(t.dir, "ref", "mix");
}

/* RUN_DIR/results.jsonl does not exist and status does not call the run
 * finished. */
static void assert_not_finished(const char *run_dir)
{
    char rel[128];
    snprintf(rel, sizeof rel, "%s/results.jsonl", run_dir);
    char *results = in_dir(rel);
    cr_assert_neq(access(results, F_OK), 0, "%s was written", results);
    free(results);
    cr_assert_eq(moerun("status", run_dir, NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, ": stopped"), "%s", t.out);
    cr_assert(strstr(t.out, "joined: not yet"), "%s", t.out);
}

Test(commit, the_join_refuses_a_line_with_no_record_or_two)
{
    write_mixed_requests();
    stop_mixed("mix");
    char *from = in_dir("runs/mix"), *to = in_dir("runs/dup"), *command = NULL;
    cr_assert(asprintf(&command, "cp -a %s %s", from, to) > 0);
    cr_assert_eq(system(command), 0);

    /* A committed record written twice. */
    char *part = in_dir("runs/dup/parts/shard-00000.results.jsonl");
    size_t len;
    char *text = mr_test_read(part, &len);
    size_t first = (size_t)(strchr(text, '\n') + 1 - text);
    unsigned long long line = strtoull(text, NULL, 10);
    FILE *f = fopen(part, "ab");
    cr_assert(f && fwrite(text, 1, first, f) == first && fclose(f) == 0);
    mr_checkpoint_state st = {0};
    load_newest("dup", &st);
    st.shards[0].results_offset += first;
    write_generation("dup", &st);
    mr_checkpoint_state_free(&st);
    cr_assert_eq(moerun("resume", "runs/dup", NULL), 3, "%s%s", t.out, t.err);
    char want[128];
    snprintf(want, sizeof want, "requests.jsonl:%llu has 2 records in shard 0's parts", line);
    cr_assert(strstr(t.err, want), "%s", t.err);
    cr_assert(strstr(t.err, "the run is not finished"), "%s", t.err);
    assert_not_finished("runs/dup");

    /* A line in flight forgotten. */
    load_newest("mix", &st);
    cr_assert_eq(st.shards[0].in_flight[0].line, 1);
    mr_checkpoint_in_flight_free(&st.shards[0]);
    write_generation("mix", &st);
    mr_checkpoint_state_free(&st);
    cr_assert_eq(moerun("resume", "runs/mix", NULL), 3, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "requests.jsonl:1 has no result or error record in shard 0's parts"),
              "%s", t.err);
    assert_not_finished("runs/mix");
    free(text);
    free(part);
    free(command);
    free(to);
    free(from);
}

Test(commit, a_max_tokens_beyond_the_context_is_an_error_record)
{
    /* 4 blocks of 16: 64 tokens for the prompt and the completion. */
    mr_test_writef(t.dir, "requests.jsonl",
                   "{\"custom_id\": \"fits\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
                   "\"body\": {\"prompt\": \"Plan a trip\", \"max_tokens\": 8}}\n"
                   "{\"custom_id\": \"too-long\", \"method\": \"POST\", \"url\": "
                   "\"/v1/completions\", \"body\": {\"prompt\": \"Plan a trip\", "
                   "\"max_tokens\": 64}}\n");
    cr_assert_eq(mr_test_run_job(t.dir, "ctx",
                                 "kv_blocks = 4\nkv_block_size = 16\nthreads = 1\n", &t.out,
                                 &t.err),
                 0, "%s%s", t.out, t.err);
    char *path = in_dir("runs/ctx/errors.jsonl"), *text = mr_test_read(path, NULL);
    cr_assert(text && strchr(text, '\n') == strrchr(text, '\n'), "%s", text);
    cJSON *j = cJSON_Parse(text), *error = cJSON_GetObjectItem(j, "error");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "custom_id")->valuestring, "too-long");
    cr_assert_str_eq(cJSON_GetObjectItem(error, "code")->valuestring, "context_length_exceeded");
    const char *message = cJSON_GetObjectItem(error, "message")->valuestring;
    cr_assert(strstr(message, "requests.jsonl:2: ") && strstr(message, " prompt tokens and "
                                                                       "max_tokens 64 make ") &&
                  strstr(message, "this engine holds at most 64 per sequence"),
              "%s", message);
    cr_assert_eq(count_lines("runs/ctx/results.jsonl"), 1);
    cJSON_Delete(j);
    free(text);
    free(path);
}

/* ------------------------------------------------------------------------
 * In the engine
 * ------------------------------------------------------------------------ */
static mr_engine *new_engine(mr_model *model)
{
    char err[512];
    mr_engine *engine;
    mr_engine_options eo = {.max_batch_tokens = 64, .max_sequences = 4, .kv_block_size = 16,
                            .kv_blocks = 16};
    cr_assert_eq(mr_engine_create(model, &eo, &engine, err, sizeof err), MR_ENGINE_OK, "%s", err);
    return engine;
}

/* Steps until generation 0 finishes; its completion. */
static mr_completion_out run_to_the_end(mr_engine *engine)
{
    char err[512];
    mr_completion_out done[4];
    size_t n = 0;
    while (n == 0)
        cr_assert_eq(mr_engine_step(engine, done, 4, &n, err, sizeof err), MR_ENGINE_OK, "%s",
                     err);
    return done[0];
}

Test(commit, a_generation_goes_on_from_its_earlier_tokens_to_the_same_text)
{
    char err[512];
    mr_model *model = mr_test_load_tiny_model(1);
    static const char prompt[] = "Simmer the stock with thyme, then";
    mr_tokens tokens = {0};
    cr_assert_eq(mr_tokenizer_encode(mr_model_tokenizer(model), prompt, sizeof prompt - 1,
                                     &tokens, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    mr_generation g = {.prompt = tokens.ids, .n_prompt = tokens.count,
                       .sampling = {.max_tokens = 12, .temperature = 0.8, .top_p = 0.9,
                                    .seed = 7, .ignore_eos = true}};
    mr_engine *engine = new_engine(model);
    cr_assert_eq(mr_engine_submit(engine, &g, err, sizeof err), MR_ENGINE_OK, "%s", err);
    mr_completion_out whole = run_to_the_end(engine);
    cr_assert_eq(whole.completion_tokens, 12);
    mr_engine_free(engine);

    /* Stopped after its first token (the one prefill samples), half way,
     * and one token before the end. */
    static const size_t stops[] = {1, 6, 11};
    for (size_t i = 0; i < sizeof stops / sizeof *stops; i++) {
        engine = new_engine(model);
        cr_assert_eq(mr_engine_submit(engine, &g, err, sizeof err), MR_ENGINE_OK, "%s", err);
        const int32_t *so_far;
        size_t n = 0;
        mr_completion_out none[4];
        size_t n_done;
        for (;;) {
            cr_assert(mr_engine_generated(engine, 0, &so_far, &n));
            if (n >= stops[i])
                break;
            cr_assert_eq(mr_engine_step(engine, none, 4, &n_done, err, sizeof err), MR_ENGINE_OK,
                         "%s", err);
        }
        int32_t earlier[32];
        memcpy(earlier, so_far, n * sizeof *earlier);
        mr_engine_free(engine);

        engine = new_engine(model);
        mr_generation again = g;
        again.generated = earlier;
        again.n_generated = n;
        cr_assert_eq(mr_engine_submit(engine, &again, err, sizeof err), MR_ENGINE_OK, "%s", err);
        cr_assert(mr_engine_generated(engine, 0, &so_far, &n) && n == stops[i]);
        mr_completion_out rest = run_to_the_end(engine);
        cr_assert_str_eq(rest.text, whole.text, "stopped after %zu tokens", stops[i]);
        cr_assert(rest.completion_tokens == whole.completion_tokens &&
                  rest.prompt_tokens == whole.prompt_tokens && rest.finish == whole.finish);
        mr_completion_out_free(&rest);
        mr_engine_free(engine);
    }

    /* Tokens it could not have generated without finishing are refused. */
    engine = new_engine(model);
    int32_t too_many[12] = {0}, outside[1] = {2048};
    mr_generation bad = g;
    bad.generated = too_many;
    bad.n_generated = 12;
    cr_assert_eq(mr_engine_submit(engine, &bad, err, sizeof err), MR_ENGINE_EINVAL);
    cr_assert(strstr(err, "comes with 12 earlier completion tokens"), "%s", err);
    bad.generated = outside;
    bad.n_generated = 1;
    cr_assert_eq(mr_engine_submit(engine, &bad, err, sizeof err), MR_ENGINE_EINVAL);
    cr_assert(strstr(err, "is 2048, not in the vocabulary"), "%s", err);
    mr_engine_free(engine);
    mr_completion_out_free(&whole);
    mr_tokens_free(&tokens);
    mr_model_free(model);
}
