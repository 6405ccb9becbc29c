/* metrics.prom: every file written is one promtool accepts without a lint
 * problem, with the samples the struct says, replaced whole. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/report.h"
#include "tests/common/fixture.h"
#include "tests/common/report_check.h"

static char err[512];
static char *dir, *path;

static void setup(void)
{
    dir = mr_test_tmpdir();
    cr_assert(asprintf(&path, "%s/%s", dir, MR_RUN_METRICS) > 0);
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(path);
}

TestSuite(metrics, .init = setup, .fini = teardown);

/* 3 MoE layers (model layers 1, 5 and 9) x 4 experts on 2 ranks, resumed
 * once after a preemption. */
static const int layer_ids[] = {1, 5, 9};
static const double layer_rank_imbalance[] = {1.25, 1.5, 1.0};
static const double layer_expert_imbalance[] = {2.0, 3.5, 1.125};
static const uint64_t expert_tokens[] = {100, 200, 300, 400,  /* layer 1 */
                                         10,  20,  30,  1234, /* layer 5 */
                                         0,   0,   0,   7};   /* layer 9 */
static const double rank_busy[] = {0.875, 0.5};
/* The job label of moe_job() as the file spells it. */
#define MOE_JOB "moerun_job=\"nightly \\\"eval\\\" C:\\\\runs\""

static mr_report_metrics moe_job(void)
{
    return (mr_report_metrics){
        .job = "nightly \"eval\" C:\\runs",
        .requests_ok = 950, .requests_failed = 3, .requests_planned = 1000,
        .tokens_prompt = 123456, .tokens_completion = 65432,
        .tokens_per_second = 812.5,
        .wall_seconds = 0.1, .rank_seconds = 1.0 / 3,
        .attempts = 2, .preemptions = 1, .ranks = 2, .eplb_rebalances = 4,
        .rank_imbalance = 1.25,
        .layers = 3, .experts = 4, .layer_ids = layer_ids,
        .layer_rank_imbalance = layer_rank_imbalance,
        .layer_expert_imbalance = layer_expert_imbalance,
        .expert_tokens = expert_tokens, .expert_series = true, .hot_experts = 3,
        .rank_busy = rank_busy, .version = "0.1.0", .backends = "cpu, ref",
        .updated = 1795000000.25};
}

static mr_report_metrics dense_job(void)
{
    return (mr_report_metrics){.job = "dense", .requests_ok = 10, .requests_planned = 10,
                               .tokens_prompt = 500, .tokens_completion = 200,
                               .wall_seconds = 12, .rank_seconds = 12, .attempts = 1,
                               .ranks = 1, .updated = 1795000000};
}

/* Writes the metrics to `path`, checks promtool has nothing to say about
 * the file and returns its text. */
static char *write_and_check(const mr_report_metrics *m)
{
    cr_assert_eq(mr_report_metrics_write(path, m, err, sizeof err), 0, "%s", err);
    mr_test_assert_promtool_accepts(path);
    char *text = mr_test_read(path, NULL);
    cr_assert(text);
    return text;
}

static void assert_line(const char *text, const char *line)
{
    char *want = NULL;
    cr_assert(asprintf(&want, "\n%s\n", line) > 0);
    cr_assert(strstr(text, want), "no line %s in:\n%s", line, text);
    free(want);
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(metrics, moe_job_passes_promtool_with_every_sample)
{
    mr_report_metrics m = moe_job();
    char *text = write_and_check(&m);
    assert_line(text, "moerun_requests_total{" MOE_JOB ",status=\"ok\"} 950");
    assert_line(text, "moerun_requests_total{" MOE_JOB ",status=\"failed\"} 3");
    assert_line(text, "moerun_requests_planned{" MOE_JOB "} 1000");
    assert_line(text, "moerun_tokens_total{" MOE_JOB ",kind=\"completion\"} 65432");
    assert_line(text, "moerun_expert_tokens_total{" MOE_JOB ",layer=\"5\",expert=\"3\"} 1234");
    assert_line(text, "moerun_expert_tokens_total{" MOE_JOB ",layer=\"9\",expert=\"0\"} 0");
    assert_line(text, "moerun_layer_expert_imbalance_ratio{" MOE_JOB ",layer=\"5\"} 3.5");
    assert_line(text, "moerun_layer_rank_imbalance_ratio{" MOE_JOB ",layer=\"1\"} 1.25");
    assert_line(text, "moerun_rank_busy_ratio{" MOE_JOB ",rank=\"1\"} 0.5");
    assert_line(text, "moerun_wall_seconds_total{" MOE_JOB "} 0.1");
    assert_line(text, "moerun_last_update_timestamp_seconds{" MOE_JOB "} 1795000000.25");
    assert_line(text, "moerun_build_info{" MOE_JOB ",version=\"0.1.0\",backends=\"cpu, ref\"} 1");
    assert_line(text, "# TYPE moerun_attempts_total counter");
    assert_line(text, "moerun_attempts_total{" MOE_JOB "} 2");
    cr_assert_null(strstr(text, "{job="), "no series has a label Prometheus sets itself");
    assert_line(text, "# TYPE moerun_expert_tokens_total counter");
    cr_assert_eq(count(text, "moerun_expert_tokens_total{"), 12);
    cr_assert_eq(count(text, "# TYPE moerun_expert_tokens_total "), 1);
    cr_assert_eq(count(text, "# HELP moerun_expert_tokens_total "), 1);
    /* 1/3 needs all 17 digits to read back as itself. */
    const char *rank_seconds = strstr(text, "moerun_rank_seconds_total{" MOE_JOB "} ");
    cr_assert(rank_seconds);
    cr_assert_eq(strtod(strchr(rank_seconds, '}') + 2, NULL), 1.0 / 3);

    mr_buf again = {0};
    cr_assert_eq(mr_report_metrics_format(&m, &again), 0);
    cr_assert_str_eq(again.data, text, "the same struct gives the same text");
    mr_buf_free(&again);
    free(text);
}

/* By default each layer's three busiest experts, not one series per
 * expert: layer 5's are expert 3 (1234 of 1294 tokens), then 2 and 1;
 * layer 9's 7 tokens all went to expert 3, and the empty places go to the
 * lowest ids. */
Test(metrics, by_default_each_layer_shows_its_busiest_experts_not_every_one)
{
    mr_report_metrics m = moe_job();
    m.expert_series = false;
    char *text = write_and_check(&m);
    cr_assert_null(strstr(text, "moerun_expert_tokens_total"));
    assert_line(text, "moerun_layer_hot_expert{" MOE_JOB ",layer=\"5\",place=\"1\"} 3");
    assert_line(text, "moerun_layer_hot_expert{" MOE_JOB ",layer=\"5\",place=\"2\"} 2");
    assert_line(text, "moerun_layer_hot_expert{" MOE_JOB ",layer=\"1\",place=\"1\"} 3");
    assert_line(text, "moerun_layer_hot_expert{" MOE_JOB ",layer=\"9\",place=\"1\"} 3");
    assert_line(text, "moerun_layer_hot_expert{" MOE_JOB ",layer=\"9\",place=\"2\"} 0");
    assert_line(text, "moerun_layer_hot_expert{" MOE_JOB ",layer=\"9\",place=\"3\"} 1");
    assert_line(text, "moerun_layer_hot_expert_share{" MOE_JOB ",layer=\"9\",place=\"1\"} 1");
    assert_line(text, "moerun_layer_hot_expert_share{" MOE_JOB ",layer=\"1\",place=\"1\"} 0.4");
    cr_assert_eq(count(text, "moerun_layer_hot_expert{"), 9);
    cr_assert_eq(count(text, "moerun_layer_hot_expert_share{"), 9);
    free(text);
}

Test(metrics, dense_model_has_no_expert_series)
{
    mr_report_metrics m = dense_job();
    char *text = write_and_check(&m);
    assert_line(text, "moerun_tokens_total{moerun_job=\"dense\",kind=\"prompt\"} 500");
    assert_line(text, "moerun_ranks{moerun_job=\"dense\"} 1");
    cr_assert_null(strstr(text, "moerun_expert_tokens_total"));
    cr_assert_null(strstr(text, "moerun_layer_"));
    cr_assert_null(strstr(text, "moerun_rank_busy_ratio"));
    free(text);
}

Test(metrics, a_value_that_is_not_finite_is_written_as_zero)
{
    double nan_ratio[] = {NAN, 1.5, -INFINITY};
    mr_report_metrics m = moe_job();
    m.tokens_per_second = NAN;
    m.rank_imbalance = INFINITY;
    m.layer_rank_imbalance = nan_ratio;
    char *text = write_and_check(&m);
    assert_line(text, "moerun_tokens_per_second{" MOE_JOB "} 0");
    assert_line(text, "moerun_rank_imbalance_ratio{" MOE_JOB "} 0");
    assert_line(text, "moerun_layer_rank_imbalance_ratio{" MOE_JOB ",layer=\"9\"} 0");
    cr_assert_null(strcasestr(text, "nan"));
    cr_assert_null(strcasestr(text, "} inf"));
    cr_assert_null(strcasestr(text, "} -inf"));
    free(text);
}

Test(metrics, a_long_job_name_with_a_newline_is_escaped_whole)
{
    char job[1001];
    memset(job, 'j', sizeof job - 1);
    job[sizeof job - 1] = '\0';
    job[500] = '\n';
    mr_report_metrics m = dense_job();
    m.job = job;
    char *text = write_and_check(&m);
    char *sample = NULL;
    cr_assert(asprintf(&sample, "moerun_requests_planned{moerun_job=\"%.500s\\n%s\"} 10", job,
                       job + 501) > 0);
    assert_line(text, sample);
    free(sample);
    free(text);
}

Test(metrics, a_write_replaces_the_file_and_leaves_nothing_else)
{
    mr_report_metrics m = dense_job();
    free(write_and_check(&m));
    m.requests_ok = 11;
    char *text = write_and_check(&m);
    assert_line(text, "moerun_requests_total{moerun_job=\"dense\",status=\"ok\"} 11");
    cr_assert_eq(count(text, "status=\"ok\"}"), 1);
    free(text);

    DIR *d = opendir(dir);
    cr_assert(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            cr_assert_str_eq(e->d_name, MR_RUN_METRICS, "left behind: %s", e->d_name);
            files++;
        }
    closedir(d);
    cr_assert_eq(files, 1);
}

Test(metrics, a_folder_that_is_not_there_is_an_error_naming_the_file)
{
    mr_report_metrics m = dense_job();
    char *missing = NULL;
    cr_assert(asprintf(&missing, "%s/gone/%s", dir, MR_RUN_METRICS) > 0);
    cr_assert_eq(mr_report_metrics_write(missing, &m, err, sizeof err), -1);
    cr_assert(strstr(err, "gone/metrics.prom"), "%s", err);
    free(missing);
}
