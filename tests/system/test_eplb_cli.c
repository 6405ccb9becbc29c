/* moerun eplb plan, run as a user runs it: the table, the JSON report read
 * back, out-of-sample scoring, re-solving from a plan, and the messages
 * for bad traces and options. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tests/common/fixture.h"

static char *dir;
static char *out, *err;

enum { LAYERS = 3, EXPERTS = 32 };

/* A skewed trace: in each layer expert (e * step + shift) % 32 is the
 * e-th most popular, with 1000 / (e + 1) tokens. */
static void write_trace(const char *name, int step, int shift)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f, "# tokens per expert\n");
    for (int e = 0; e < EXPERTS; e++)
        fprintf(f, "%se%d", e ? "," : "", e);
    fputc('\n', f);
    for (int l = 0; l < LAYERS; l++) {
        int tokens[EXPERTS];
        for (int e = 0; e < EXPERTS; e++)
            tokens[(e * step + shift + l) % EXPERTS] = 1000 / (e + 1);
        for (int e = 0; e < EXPERTS; e++)
            fprintf(f, "%d%c", tokens[e], e + 1 < EXPERTS ? ',' : '\n');
    }
    fclose(f);
    free(mr_test_write(dir, name, text, len));
    free(text);
}

static void setup(void)
{
    dir = mr_test_tmpdir();
    out = err = NULL;
    write_trace("trace.csv", 5, 0);
    write_trace("next.csv", 5, 1);
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(out);
    free(err);
}

TestSuite(eplb_cli, .init = setup, .fini = teardown);

static int run_moerun(const char *arg, ...)
{
    free(out);
    free(err);
    const char *a[16] = {0};
    va_list ap;
    va_start(ap, arg);
    a[0] = arg;
    for (int i = 1; a[i - 1] && i < 15; i++)
        a[i] = va_arg(ap, const char *);
    va_end(ap);
    return mr_test_moerun(dir, &out, &err, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                          a[9], a[10], a[11], a[12], a[13], a[14], NULL);
}
#define moerun(...) run_moerun(__VA_ARGS__, NULL)

Test(eplb_cli, help)
{
    cr_assert_eq(moerun("--help"), 0);
    cr_assert(strstr(out, "eplb"), "%s", out);
    cr_assert_eq(moerun("eplb", "--help"), 0);
    cr_assert(strstr(out, "usage: moerun eplb plan TRACE --ranks N"), "%s", out);
    cr_assert_eq(moerun("eplb", "plan", "--help"), 0);
    cr_assert(strstr(out, "--redundant R"), "%s", out);
    cr_assert_eq(moerun("help", "eplb"), 0);
}

Test(eplb_cli, plan_prints_a_line_per_policy)
{
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "8", "--nodes", "2",
                        "--redundant", "8", "--groups", "4", "--policy", "all"),
                 0, "%s", err);
    cr_assert(strstr(out, "trace.csv: 3 layers x 32 experts; 8 ranks on 2 nodes, 40 slots (8 "
                          "redundant), 4 groups"),
              "%s", out);
    static const char *const lines[] = {"contiguous", "deepseek", "global", "hierarchical",
                                        "auto"};
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        char *at = strstr(out, lines[i]);
        cr_assert(at, "no %s line: %s", lines[i], out);
        double balance, max_over_mean, bound, gap;
        cr_assert_eq(sscanf(at + strlen(lines[i]), "%lf %lf %lf %lf%%", &balance,
                            &max_over_mean, &bound, &gap),
                     4, "%s", at);
        cr_assert(balance > 0 && balance <= bound + 1e-4 && bound <= 1, "%s", at);
    }
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "8"), 0, "%s", err);
    cr_assert(strstr(out, "\nauto "), "auto is the default: %s", out);
    cr_assert_null(strstr(out, "deepseek"), "%s", out);
}

static const cJSON *item(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(x, "no \"%s\"", key);
    return x;
}

Test(eplb_cli, json_report_reads_back)
{
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "8", "--redundant", "8",
                        "--policy", "deepseek,auto", "--json", "plan.json", "--eval",
                        "next.csv"),
                 0, "%s", err);
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/plan.json", dir) > 0);
    char *text = mr_test_read(path, NULL);
    cr_assert(text, "no %s", path);
    cJSON *root = cJSON_Parse(text);
    cr_assert(root, "not JSON: %s", text);
    cr_assert_eq(item(root, "layers")->valueint, LAYERS);
    cr_assert_eq(item(root, "physical_slots")->valueint, 40);
    cr_assert_str_eq(item(item(root, "baseline"), "policy")->valuestring, "contiguous");
    const cJSON *plans = item(root, "plans");
    cr_assert_eq(cJSON_GetArraySize(plans), 2);
    static const char *const names[] = {"deepseek", "auto"};
    for (int i = 0; i < 2; i++) {
        const cJSON *p = cJSON_GetArrayItem(plans, i);
        cr_assert_str_eq(item(p, "policy")->valuestring, names[i]);
        double balance = item(p, "balancedness")->valuedouble;
        cr_assert(balance > 0 && balance <= item(p, "bound")->valuedouble + 1e-12);
        cr_assert(item(item(p, "eval"), "balancedness")->valuedouble > 0);
        item(p, "solve_ms");
        item(p, "gap_percent");
        const cJSON *phy2log = item(p, "phy2log"), *logcnt = item(p, "logcnt");
        cr_assert_eq(cJSON_GetArraySize(phy2log), LAYERS);
        cr_assert_eq(cJSON_GetArraySize(logcnt), LAYERS);
        for (int l = 0; l < LAYERS; l++) {
            const cJSON *row = cJSON_GetArrayItem(phy2log, l);
            const cJSON *counts = cJSON_GetArrayItem(logcnt, l);
            cr_assert_eq(cJSON_GetArraySize(row), 40);
            cr_assert_eq(cJSON_GetArraySize(counts), EXPERTS);
            int seen[EXPERTS] = {0};
            const cJSON *slot;
            cJSON_ArrayForEach(slot, row)
            {
                cr_assert(slot->valueint >= 0 && slot->valueint < EXPERTS);
                seen[slot->valueint]++;
            }
            for (int e = 0; e < EXPERTS; e++) {
                cr_assert_geq(seen[e], 1, "expert %d has no slot", e);
                cr_assert_eq(seen[e], cJSON_GetArrayItem(counts, e)->valueint);
            }
        }
    }
    /* The report's first plan is a placement to re-solve from. */
    cr_assert_eq(moerun("eplb", "plan", "next.csv", "--ranks", "8", "--redundant", "8",
                        "--current", "plan.json", "--max-moves", "6"),
                 0, "%s", err);
    cr_assert(strstr(out, "moved"), "%s", out);
    char *at = strstr(out, "\nauto ");
    cr_assert(at, "%s", out);
    double figures[5];
    int moved = -1;
    cr_assert_eq(sscanf(at + 6, "%lf %lf %lf %lf%% %lf %d", &figures[0], &figures[1],
                        &figures[2], &figures[3], &figures[4], &moved),
                 6, "%s", at);
    cr_assert(moved >= 0 && moved <= 6, "%d experts moved", moved);
    cJSON_Delete(root);
    free(text);
    free(path);
}

Test(eplb_cli, eval_scores_another_trace)
{
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--eval", "next.csv"), 0,
                 "%s", err);
    cr_assert(strstr(out, "eval bal"), "%s", out);
    free(mr_test_write(dir, "small.csv", "1,2,3\n4,5,6\n", (size_t)-1));
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--eval", "small.csv"), 3);
    cr_assert(strstr(err, "small.csv has 2 layers x 3 experts, but trace.csv has 3 x 32"), "%s",
              err);
}

Test(eplb_cli, bad_traces_name_the_line)
{
    free(mr_test_write(dir, "bad.csv", "e0,e1,e2,e3\n1,2,3,4\n5,x7,6,8\n", (size_t)-1));
    cr_assert_eq(moerun("eplb", "plan", "bad.csv", "--ranks", "2"), 3);
    cr_assert(strstr(err, "bad.csv:3: column 2: 'x7' is not a token count"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "missing.csv", "--ranks", "2"), 1);
    cr_assert(strstr(err, "missing.csv"), "%s", err);
    free(mr_test_write(dir, "current.json", "{\"phy2log\": [[0, 1]]}", (size_t)-1));
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--current", "current.json"),
                 3);
    cr_assert(strstr(err, "current.json: \"phy2log\" has another number of layers"), "%s", err);
}

Test(eplb_cli, bad_options)
{
    cr_assert_eq(moerun("eplb"), 2);
    cr_assert(strstr(err, "missing subcommand"), "%s", err);
    cr_assert_eq(moerun("eplb", "apply", "trace.csv"), 2);
    cr_assert(strstr(err, "unknown subcommand 'apply'"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv"), 2);
    cr_assert(strstr(err, "--ranks is required"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "many"), 2);
    cr_assert(strstr(err, "--ranks wants a whole number of at least 1, not 'many'"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--policy", "best"), 2);
    cr_assert(strstr(err, "unknown policy 'best'"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--frobnicate"), 2);
    cr_assert(strstr(err, "unknown option '--frobnicate'"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "--ranks", "4"), 2);
    cr_assert(strstr(err, "missing TRACE"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "6"), 3);
    cr_assert(strstr(err, "--ranks 6: 32 experts and 0 redundant slots (32) do not divide evenly "
                          "over 6 ranks; --redundant 4 would"),
              "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--nodes", "3"), 3);
    cr_assert(strstr(err, "--nodes 3 does not divide --ranks 4"), "%s", err);
    cr_assert_eq(moerun("eplb", "plan", "trace.csv", "--ranks", "4", "--groups", "5"), 3);
    cr_assert(strstr(err, "--groups 5 does not divide the 32 experts of trace.csv"), "%s", err);
}
