/*
 * moerun report: what a run served, summed from the lines it wrote.  The
 * result lines are the record the user keeps, so the report is computed
 * from them rather than from counters that could disagree.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "runner/runner.h"

typedef struct {
    uint64_t ok, failed, prompt_tokens, completion_tokens;
} totals;

static int64_t number_at(const cJSON *obj, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n && obj; i++)
        obj = cJSON_GetObjectItemCaseSensitive(obj, names[i]);
    return cJSON_IsNumber(obj) && obj->valuedouble >= 0 ? (int64_t)obj->valuedouble : -1;
}

/* One line of results.jsonl; false when it is not a result line. */
static bool add_result(totals *t, const char *text, size_t len)
{
    static const char *const status[] = {"response", "status_code"};
    static const char *const prompt[] = {"response", "body", "usage", "prompt_tokens"};
    static const char *const completion[] = {"response", "body", "usage",
                                             "completion_tokens"};
    cJSON *root = cJSON_ParseWithLength(text, len);
    int64_t code = number_at(root, status, 2);
    int64_t p = number_at(root, prompt, 4), c = number_at(root, completion, 4);
    bool valid = code >= 0;
    if (code == 200 && p >= 0 && c >= 0) {
        t->ok++;
        t->prompt_tokens += (uint64_t)p;
        t->completion_tokens += (uint64_t)c;
    } else if (valid) {
        t->failed++;
    }
    cJSON_Delete(root);
    return valid;
}

static int read_results(const char *dir, totals *t)
{
    FILE *f;
    char *path;
    int rc = mr_runner_open_run_file(dir, MR_RUN_RESULTS, &f, &path);
    if (!f) {
        free(path);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (uint64_t line_no = 1; (len = getline(&line, &cap, f)) > 0; line_no++) {
        if (!add_result(t, line, (size_t)len)) {
            fprintf(stderr, "%s:%" PRIu64 ": not a result line\n", path, line_no);
            rc = MR_EXIT_INVALID;
            break;
        }
    }
    if (rc == MR_EXIT_OK && ferror(f)) {
        fprintf(stderr, "cannot read %s: %s\n", path, strerror(errno));
        rc = MR_EXIT_FAILED;
    }
    free(line);
    fclose(f);
    free(path);
    return rc;
}

static void print_totals(const totals *t, bool json)
{
    uint64_t total = t->prompt_tokens + t->completion_tokens;
    if (json) {
        printf("{\"requests\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 "},"
               "\"tokens\":{\"prompt\":%" PRIu64 ",\"completion\":%" PRIu64
               ",\"total\":%" PRIu64 "}}\n",
               t->ok, t->failed, t->prompt_tokens, t->completion_tokens, total);
        return;
    }
    printf("requests: %" PRIu64 " served, %" PRIu64 " failed\n", t->ok, t->failed);
    printf("tokens:   %" PRIu64 " prompt + %" PRIu64 " completion = %" PRIu64 "\n",
           t->prompt_tokens, t->completion_tokens, total);
}

int mr_runner_report(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_JSON, "RUN_DIR", &args);
    const char *dir = args.operand;
    mr_plan plan = {0};
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    totals t = {0};
    uint64_t errors = 0;
    rc = mr_runner_load_plan(dir, &plan);
    if (rc == MR_EXIT_OK)
        rc = read_results(dir, &t);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(dir, MR_RUN_ERRORS, &errors);
    if (rc == MR_EXIT_OK) {
        t.failed += errors;
        print_totals(&t, args.json);
    }
    mr_plan_free(&plan);
    mr_runner_free_args(&args);
    return rc;
}
