/* The moerun command line, run as a user runs it. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "jobs/jobs.h"
#include "tests/common/fixture.h"

static char *dir;
static char *out, *err;

#define REQUEST(id, prompt)                                                               \
    "{\"custom_id\": \"" id "\", \"method\": \"POST\", \"url\": \"/v1/completions\", "    \
    "\"body\": {\"model\": \"m\", \"prompt\": \"" prompt "\", \"max_tokens\": 8}}\n"

static void setup(void)
{
    dir = mr_test_tmpdir();
    out = err = NULL;
    mr_test_make_model(dir);
    free(mr_test_write(dir, "requests.jsonl",
                       REQUEST("a", "one") REQUEST("b", "two") "{not json\n" REQUEST("a", "again")
                           REQUEST("c", "three"),
                       (size_t)-1));
    free(mr_test_write(dir, "job.ini",
                       "[job]\nname = cli\n[model]\npath = model\n[input]\n"
                       "files = requests.jsonl\n",
                       (size_t)-1));
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(out);
    free(err);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* Run moerun in the scratch folder; its output replaces the last one's. */
static int run_moerun(const char *arg, ...)
{
    free(out);
    free(err);
    const char *a[8] = {0};
    va_list ap;
    va_start(ap, arg);
    a[0] = arg;
    for (int i = 1; a[i - 1] && i < 7; i++)
        a[i] = va_arg(ap, const char *);
    va_end(ap);
    return mr_test_moerun(dir, &out, &err, a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
}
#define moerun(...) run_moerun(__VA_ARGS__, NULL)

Test(cli, version_and_help)
{
    cr_assert_eq(moerun("--version"), 0);
    cr_assert(strncmp(out, "moerun 0.", 9) == 0, "%s", out);
    cr_assert_eq(moerun("--help"), 0);
    static const char *const commands[] = {"run",  "validate",   "status",   "report",
                                           "help", "make-model", "preflight"};
    size_t n = sizeof commands / sizeof *commands;
    for (size_t i = 0; i < n; i++)
        cr_assert(strstr(out, commands[i]), "--help lacks %s", commands[i]);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(moerun(commands[i], "--help"), 0, "%s --help", commands[i]);
        char *usage = NULL;
        cr_assert(asprintf(&usage, "usage: moerun %s", commands[i]) > 0);
        cr_assert(strstr(out, usage), "%s --help: %s", commands[i], out);
        free(usage);
        cr_assert_eq(moerun("help", commands[i]), 0);
        cr_assert(strstr(out, "usage: moerun"), "%s", out);
    }
}

Test(cli, no_arguments_is_a_usage_error)
{
    cr_assert_eq(moerun(NULL), 2);
    cr_assert(strstr(err, "usage: moerun COMMAND"), "%s", err);
}

Test(cli, unknown_command_suggests)
{
    cr_assert_eq(moerun("valdate", "job.ini"), 2);
    cr_assert(strstr(err, "unknown command 'valdate'; did you mean 'validate'?"), "%s", err);
}

Test(cli, help_keys_lists_every_key)
{
    cr_assert_eq(moerun("help", "keys"), 0);
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        char *header = NULL;
        cr_assert(asprintf(&header, "[%s]", keys[i].section) > 0);
        const char *at = strstr(out, header);
        cr_assert(at && strstr(at, keys[i].key), "help keys lacks %s.%s", keys[i].section,
                  keys[i].key);
        free(header);
    }
}

Test(cli, usage_errors)
{
    cr_assert_eq(moerun("run"), 2);
    cr_assert(strstr(err, "missing JOB.ini: moerun run JOB.ini"), "%s", err);
    cr_assert_eq(moerun("run", "a.ini", "b.ini"), 2);
    cr_assert(strstr(err, "one JOB.ini at a time; also got 'b.ini'"), "%s", err);
    cr_assert_eq(moerun("run", "--frobnicate"), 2);
    cr_assert(strstr(err, "unknown option '--frobnicate'"), "%s", err);
    cr_assert_eq(moerun("run", "--set"), 2);
    cr_assert(strstr(err, "option '--set' needs a value"), "%s", err);
    cr_assert_eq(moerun("status"), 2);
    cr_assert_eq(moerun("help", "nothing"), 2);
}

/* The lines of a run file, each parsed. */
static cJSON *read_lines(const char *name)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/runs/cli/%s", dir, name) > 0);
    char *text = mr_test_read(path, NULL);
    cr_assert(text, "no %s", path);
    cJSON *lines = cJSON_CreateArray();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        cr_assert(o, "%s: not JSON: %s", path, line);
        cJSON_AddItemToArray(lines, o);
    }
    free(text);
    free(path);
    return lines;
}

static const char *field(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItem(o, a);
    return cJSON_GetStringValue(b ? cJSON_GetObjectItem(x, b) : x);
}

Test(cli, run_serves_valid_lines_and_records_the_rest)
{
    cr_assert_eq(moerun("run", "job.ini"), 0, "%s%s", out, err);
    cr_assert(strstr(out, "3 requests to serve; 1 invalid and 1 duplicate lines"), "%s", out);
    cr_assert(strstr(out, "served 3 requests, 2 failed"), "%s", out);
    char *plan_path = NULL;
    cr_assert(asprintf(&plan_path, "%s/runs/cli/plan.json", dir) > 0);
    size_t len;
    char *text = mr_test_read(plan_path, &len);
    cr_assert(text, "no %s", plan_path);
    mr_plan plan;
    char msg[512];
    cr_assert_eq(mr_plan_parse(&plan, text, len, msg, sizeof msg), MR_JOBS_OK, "%s", msg);
    cr_assert_eq(plan.n_requests, 3);
    cr_assert_eq(plan.n_duplicates, 1);
    cr_assert_eq(plan.duplicates[0].line_no, 4);
    mr_plan_free(&plan);
    free(text);
    free(plan_path);

    cJSON *results = read_lines("results.jsonl");
    static const char *const served[] = {"a", "b", "c"};
    cr_assert_eq(cJSON_GetArraySize(results), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *r = cJSON_GetArrayItem(results, i);
        cr_assert_str_eq(field(r, "custom_id", NULL), served[i]);
        const cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "response"), "body");
        int completion = cJSON_GetObjectItem(cJSON_GetObjectItem(body, "usage"),
                                             "completion_tokens")->valueint;
        cr_assert(completion >= 1 && completion <= 8, "max_tokens 8 gave %d", completion);
    }
    cJSON_Delete(results);
    cJSON *errors = read_lines("errors.jsonl");
    cr_assert_eq(cJSON_GetArraySize(errors), 2);
    cr_assert_str_eq(field(cJSON_GetArrayItem(errors, 0), "error", "code"), "invalid_json");
    cr_assert_str_eq(field(cJSON_GetArrayItem(errors, 1), "custom_id", NULL), "a");
    cJSON_Delete(errors);
}

Test(cli, run_with_an_invalid_job_names_the_line)
{
    free(mr_test_write(dir, "bad.ini",
                       "[model]\npath = model\n[input]\nfiles = requests.jsonl\n[eplb]\n"
                       "step_intervall = 5\n",
                       (size_t)-1));
    cr_assert_eq(moerun("run", "bad.ini"), 3);
    cr_assert(strstr(err, "bad.ini:6: unknown key 'step_intervall' in [eplb]; did you mean "
                          "'step_interval'?"),
              "%s", err);
}

Test(cli, overrides_reach_the_job)
{
    cr_assert_eq(moerun("validate", "job.ini", "--print", "--set",
                                "eplb.step_interval=7"),
                 0, "%s", err);
    cr_assert(strstr(out, "step_interval = 7\n"), "%s", out);
    cr_assert_eq(moerun("validate", "job.ini", "--set",
                                "eplb.step_interval=zero"),
                 3);
    cr_assert(strstr(err, "--set eplb.step_interval=zero: eplb.step_interval must be a whole "
                          "number"),
              "%s", err);
}

Test(cli, validate_lists_invalid_lines_and_duplicates)
{
    cr_assert_eq(moerun("validate", "job.ini"), 0, "%s", err);
    cr_assert(strstr(out, "job cli: valid"), "%s", out);
    cr_assert(strstr(out, "requests.jsonl:3:"), "%s", out);
    cr_assert(strstr(out, "[invalid_json]"), "%s", out);
    cr_assert(strstr(out, "requests.jsonl:4 repeats the id of"), "%s", out);
}

Test(cli, validate_checks_the_model_folder)
{
    mr_test_rmtree(dir);
    mkdir(dir, 0777);
    free(mr_test_write(dir, "requests.jsonl", REQUEST("a", "x"), (size_t)-1));
    free(mr_test_write(dir, "job.ini",
                       "[model]\npath = model\n[input]\nfiles = requests.jsonl\n", (size_t)-1));
    cr_assert_eq(moerun("validate", "job.ini"), 3);
    cr_assert(strstr(err, "[model] path"), "%s", err);
    free(mr_test_write(dir, "model/config.json", "[1, 2", (size_t)-1));
    cr_assert_eq(moerun("validate", "job.ini"), 3);
    cr_assert(strstr(err, "model/config.json:1: not valid JSON"), "%s", err);
}

Test(cli, status_of_a_run)
{
    cr_assert_eq(moerun("run", "job.ini"), 0, "%s", err);
    cr_assert_eq(moerun("status", "runs/cli"), 0, "%s", err);
    cr_assert(strstr(out, "finished"), "%s", out);
    cr_assert(strstr(out, "progress: cli: 5/5 requests done (100.0%), "), "%s", out);
    cr_assert(strstr(out, "joined: 3 results, 2 error records in results.jsonl and "
                          "errors.jsonl (5/5 requests done)"), "%s", out);
    cr_assert(strstr(out, "committed: 5/5 requests done (100.0%: 3 results, 2 error "
                          "records), 4 of 4 shards"), "%s", out);
    cr_assert(strstr(out, "attempts: 1, 0 preemptions"), "%s", out);
    cr_assert(strstr(out, "state-000002.ckpt.zst"), "%s", out);
    /* As before anything is served: no results, no checkpoint. */
    free(mr_test_write(dir, "runs/cli/results.jsonl", "", 0));
    free(mr_test_write(dir, "runs/cli/errors.jsonl", "", 0));
    char *ckpt = NULL, *timeline = NULL;
    cr_assert(asprintf(&ckpt, "%s/runs/cli/checkpoint", dir) > 0);
    cr_assert(asprintf(&timeline, "%s/runs/cli/timeline.jsonl", dir) > 0);
    mr_test_rmtree(ckpt);
    cr_assert_eq(unlink(timeline), 0);
    free(ckpt);
    free(timeline);
    cr_assert_eq(moerun("status", "runs/cli"), 0, "%s", err);
    cr_assert(strstr(out, "committed: no checkpoint yet"), "%s", out);
    cr_assert(strstr(out, "planned, nothing served yet"), "%s", out);
    cr_assert(strstr(out, "progress: no sample yet"), "%s", out);
    cr_assert_eq(moerun("status", "."), 3);
    cr_assert(strstr(err, "not a run folder"), "%s", err);
    cr_assert_eq(moerun("status", "nowhere"), 3);
}

/* report sums what the result lines say; write lines the way a run does. */
Test(cli, report_sums_result_lines)
{
    cr_assert_eq(moerun("run", "job.ini"), 0, "%s", err);
    mr_job job;
    char msg[4096];
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  "[job]\nname = cli\n[model]\npath = model\n[input]\n"
                                  "files = requests.jsonl\n",
                                  NULL, 0, msg, sizeof msg),
                 MR_JOBS_OK, "%s", msg);
    mr_request_parser *parser = mr_request_parser_new(&job);
    mr_buf results = {0}, errors = {0};
    static const char *const lines[] = {REQUEST("a", "one"), REQUEST("b", "two")};
    for (int i = 0; i < 2; i++) {
        mr_request req;
        mr_request_error e;
        cr_assert_eq(mr_request_parse(parser, lines[i], strlen(lines[i]) - 1, "requests.jsonl",
                                      0, (uint64_t)i + 1, &req, &e),
                     MR_JOBS_OK, "%s", e.message);
        mr_completion c = {.text = "out", .text_len = 3, .finish_reason = "length",
                           .prompt_tokens = 10 + i, .completion_tokens = 8};
        cr_assert_eq(mr_result_format(&results, "cli", "m", &req, &c, 1, 1700000000), MR_JOBS_OK);
    }
    mr_request req;
    mr_request_error e;
    cr_assert_eq(mr_request_parse(parser, "{not json", 9, "requests.jsonl", 0, 3, &req, &e),
                 MR_JOBS_EINVAL);
    cr_assert_eq(mr_error_format(&errors, "cli", "requests.jsonl", 3, &e), MR_JOBS_OK);
    free(mr_test_write(dir, "runs/cli/results.jsonl", results.data, results.len));
    free(mr_test_write(dir, "runs/cli/errors.jsonl", errors.data, errors.len));

    cr_assert_eq(moerun("report", "runs/cli"), 0, "%s", err);
    cr_assert(strstr(out, "requests:    2 served, 1 failed"), "%s", out);
    cr_assert(strstr(out, "tokens:      21 prompt + 16 completion"), "%s", out);
    cr_assert_eq(moerun("report", "runs/cli", "--json"), 0);
    cJSON *json = cJSON_Parse(out);
    cr_assert(json, "%s", out);
    cJSON *tokens = cJSON_GetObjectItem(json, "tokens");
    cr_assert_eq(cJSON_GetObjectItem(tokens, "total")->valueint, 37);
    cJSON_Delete(json);

    free(mr_test_write(dir, "runs/cli/results.jsonl", "{\"x\": 1}\n", (size_t)-1));
    cr_assert_eq(moerun("report", "runs/cli"), 3);
    cr_assert(strstr(err, "results.jsonl:1: not a result line"), "%s", err);
    mr_request_parser_free(parser);
    mr_buf_free(&results);
    mr_buf_free(&errors);
    mr_job_free(&job);
}
