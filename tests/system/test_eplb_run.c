/*
 * EPLB in a running job: online rebalancing on 4 ranks lowers the measured
 * rank imbalance of the tiny model's skewed routing and changes no result
 * byte; a static placement comes from a calibration trace, which a run
 * writes for the next.
 */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

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

TestSuite(eplb_run, .init = setup, .fini = teardown, .timeout = 300);

/* The records of runs/NAME/eplb.jsonl. */
static cJSON **read_records(const char *name, int *n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/runs/%s/eplb.jsonl", dir, name);
    size_t len;
    char *text = mr_test_read(path, &len);
    cr_assert(text, "no %s", path);
    cJSON **records = NULL;
    *n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        records = realloc(records, (size_t)(*n + 1) * sizeof *records);
        records[*n] = cJSON_Parse(line);
        cr_assert(records[*n], "%s: not JSON: %s", path, line);
        (*n)++;
    }
    free(text);
    return records;
}

static double number(const cJSON *record, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(record, key);
    cr_assert(cJSON_IsNumber(v), "no number %s", key);
    return v->valuedouble;
}

static const char *action(const cJSON *record)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(record, "action");
    cr_assert(cJSON_IsString(v));
    return v->valuestring;
}

Test(eplb_run, online_rebalancing_lowers_rank_imbalance_and_changes_no_result)
{
    mr_test_write_requests(dir, 48);
    cr_assert_eq(mr_test_run_job(dir, "off", "[parallel]\nranks = 4\n[eplb]\nmode = off\n", &out,
                                 &err),
                 0, "%s%s", out, err);
    cr_assert_eq(mr_test_run_job(dir, "online",
                                 "[parallel]\nranks = 4\n[eplb]\nmode = online\n"
                                 "step_interval = 4\nwindow_steps = 8\nmin_batch_tokens = 1\n"
                                 "redundant_experts = 8\nmax_moves_percent = 100\n",
                                 &out, &err),
                 0, "%s%s", out, err);
    mr_test_assert_same_output(dir, "off", "online");
    cr_assert(strstr(out, "eplb: step 4: "), "the first rebalance is logged:\n%s", out);

    int n;
    cJSON **records = read_records("online", &n);
    cr_assert_geq(n, 3, "decisions every 4 steps and a final measurement");
    cr_assert_str_eq(action(records[0]), "rebalanced");
    cr_assert_str_eq(action(records[n - 1]), "final");
    double before = number(records[0], "rank_imbalance_measured");
    double after = 0, steps = 0;
    for (int i = 1; i < n; i++) {
        after += number(records[i], "rank_imbalance_measured") * number(records[i], "steps");
        steps += number(records[i], "steps");
    }
    after /= steps;
    cr_assert_gt(before, 1.3, "the contiguous placement is unbalanced: %.3f", before);
    cr_assert_lt(after, before - 0.1, "measured rank imbalance %.3f before, %.3f after", before,
                 after);
    cr_assert_gt(number(records[0], "experts_moved"), 0);
    cr_assert_lt(number(records[0], "rank_imbalance_after"),
                 number(records[0], "rank_imbalance_before"));
    for (int i = 0; i < n; i++)
        cJSON_Delete(records[i]);
    free(records);
}

Test(eplb_run, a_static_placement_comes_from_the_trace_an_earlier_run_wrote)
{
    mr_test_write_requests(dir, 24);
    cr_assert_eq(mr_test_run_job(dir, "first", "[parallel]\nranks = 2\n[eplb]\nmode = off\n",
                                 &out, &err),
                 0, "%s%s", out, err);
    cr_assert_eq(mr_test_run_job(dir, "calibrated",
                                 "[parallel]\nranks = 2\n[eplb]\nmode = static\n"
                                 "redundant_experts = 4\n"
                                 "calibration = runs/first/expert_load.csv\n",
                                 &out, &err),
                 0, "%s%s", out, err);
    cr_assert(strstr(out, "eplb: static placement from /"), "%s", out);
    cr_assert(strstr(out, "/runs/first/expert_load.csv ("), "%s", out);
    mr_test_assert_same_output(dir, "first", "calibrated");
}

Test(eplb_run, a_trace_of_another_shape_is_refused_with_both_shapes)
{
    mr_test_write_requests(dir, 4);
    mr_test_writef(dir, "small.csv", "1,2,3\n4,5,6\n");
    cr_assert_eq(mr_test_run_job(dir, "bad",
                                 "[eplb]\nmode = static\ncalibration = small.csv\n", &out, &err),
                 3, "%s%s", out, err);
    cr_assert(strstr(err, "small.csv has 2 layers x 3 experts, but the model has 4 MoE layers x "
                          "64 experts"),
              "%s", err);
}
