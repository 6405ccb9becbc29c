#define _GNU_SOURCE
#include "tests/common/report_check.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/fixture.h"

static const cJSON *at_path(const cJSON *root, const char *path)
{
    char *copy = strdup(path), *save = NULL;
    const cJSON *node = root;
    for (char *name = strtok_r(copy, ".", &save); node && name; name = strtok_r(NULL, ".", &save))
        node = cJSON_GetObjectItemCaseSensitive(node, name);
    free(copy);
    return node;
}

double mr_test_json_number(const cJSON *root, const char *path)
{
    const cJSON *v = at_path(root, path);
    cr_assert(cJSON_IsNumber(v), "report.json has no number at %s", path);
    return v->valuedouble;
}

static void assert_close(double got, double want, const char *what)
{
    cr_assert(fabs(got - want) <= 1e-9 * fmax(fabs(want), 1), "%s is %.12g, not %.12g", what,
              got, want);
}

static char *run_file(const char *run_dir, const char *name)
{
    char *path, *text;
    cr_assert(asprintf(&path, "%s/%s", run_dir, name) > 0);
    text = mr_test_read(path, NULL);
    free(path);
    return text;
}

/* The lines of results.jsonl and errors.jsonl, added up as a user would. */
static void assert_matches_result_files(const char *run_dir, const cJSON *report)
{
    char *results = run_file(run_dir, "results.jsonl"), *errors = run_file(run_dir, "errors.jsonl");
    cr_assert(results && errors, "%s has no joined result files", run_dir);
    double ok = 0, failed = 0, prompt = 0, completion = 0;
    for (char *line = strtok(results, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *usage = at_path(j, "response.body.usage");
        cr_assert(usage, "a result line has no usage: %s", line);
        ok++;
        prompt += cJSON_GetObjectItem(usage, "prompt_tokens")->valuedouble;
        completion += cJSON_GetObjectItem(usage, "completion_tokens")->valuedouble;
        cJSON_Delete(j);
    }
    for (char *line = strtok(errors, "\n"); line; line = strtok(NULL, "\n"))
        failed++;
    assert_close(mr_test_json_number(report, "requests.ok"), ok, "requests.ok");
    assert_close(mr_test_json_number(report, "requests.failed"), failed, "requests.failed");
    assert_close(mr_test_json_number(report, "tokens.prompt"), prompt, "tokens.prompt");
    assert_close(mr_test_json_number(report, "tokens.completion"), completion,
                 "tokens.completion");
    free(results);
    free(errors);
}

/* The total over all tokens; input and output only with both list prices
 * (cost.split), in their ratio and adding up to the cost. */
static void assert_price(const cJSON *report, const char *usd, const char *per_mtok,
                         const char *price, double rank_hours, double prompt, double completion)
{
    char path[128];
    double cost = rank_hours * mr_test_json_number(report, price);
    assert_close(mr_test_json_number(report, usd), cost, usd);
    snprintf(path, sizeof path, "%s.total", per_mtok);
    assert_close(mr_test_json_number(report, path),
                 prompt + completion > 0 ? cost * 1e6 / (prompt + completion) : 0, path);
    const char *method = cJSON_GetStringValue(at_path(report, "cost.split.method"));
    cr_assert(method, "report.json lacks cost.split.method");
    snprintf(path, sizeof path, "%s.input", per_mtok);
    const cJSON *input = at_path(report, path);
    snprintf(path, sizeof path, "%s.output", per_mtok);
    const cJSON *output = at_path(report, path);
    if (strcmp(method, "list_price_ratio") != 0) {
        cr_assert_str_eq(method, "none");
        cr_assert(!input && !output, "%s: input and output per million without list prices",
                  per_mtok);
        return;
    }
    double in = mr_test_json_number(report, "cost.split.input_usd_per_million");
    double out = mr_test_json_number(report, "cost.split.output_usd_per_million");
    cr_assert(cJSON_IsNumber(input) && cJSON_IsNumber(output), "%s lacks the split", per_mtok);
    /* No tokens (a job stopped before its first commit): nothing to split. */
    assert_close((input->valuedouble * prompt + output->valuedouble * completion) / 1e6,
                 prompt + completion > 0 ? cost : 0, "the split's sum");
    assert_close(input->valuedouble * out, output->valuedouble * in, "the split's ratio");
}

static double rebalances_in_log(const char *run_dir)
{
    char *log = run_file(run_dir, "eplb.jsonl");
    double n = 0;
    for (char *at = log; at && (at = strstr(at, "\"action\":\"rebalanced\"")); at++)
        n++;
    free(log);
    return n;
}

static void assert_advice_follows_the_rules(const cJSON *report)
{
    const cJSON *paid = at_path(report, "advice.wide_ep_paid_off");
    const char *text = cJSON_GetStringValue(at_path(report, "advice.text"));
    cr_assert(cJSON_IsBool(paid) && text && *text, "report.json lacks the advice");
    const cJSON *skew = at_path(report, "eplb.expert_imbalance");
    const cJSON *batch = at_path(report, "tokens_per_rank_step");
    const char *mode = cJSON_GetStringValue(at_path(report, "eplb.mode"));
    /* Step time is the four stages and the wait; ranks that waited more
     * than a quarter of it were not paid off. */
    double step = 0, wait = 0;
    if (at_path(report, "step_seconds")) {
        static const char *const stages[] = {"attention", "dispatch", "experts", "combine",
                                             "wait"};
        char path[64];
        for (int i = 0; i < 5; i++) {
            snprintf(path, sizeof path, "step_seconds.%s", stages[i]);
            step += mr_test_json_number(report, path);
        }
        wait = mr_test_json_number(report, "step_seconds.wait");
    }
    bool want = cJSON_IsNumber(skew) && cJSON_IsNumber(batch) && skew->valuedouble >= 2.5 &&
                batch->valuedouble >= 64 && mr_test_json_number(report, "ranks") > 1 && mode &&
                strcmp(mode, "off") != 0 && wait <= 0.25 * step;
    cr_assert_eq(cJSON_IsTrue(paid), want, "wide_ep_paid_off is wrong for: %s", text);
    cr_assert_eq(strstr(text, "Wide EP and EPLB paid off") != NULL, want, "%s", text);
}

cJSON *mr_test_check_report(const char *run_dir)
{
    static const char *const required[] = {
        "requests.ok", "requests.failed", "tokens.prompt", "tokens.completion", "wall_seconds",
        "startup_seconds",
        "rank_hours", "tokens_per_second", "cost.on_demand_usd", "cost.spot_usd",
        "cost.on_demand_usd_per_mtok.total", "cost.spot_usd_per_mtok.total", "preemptions",
        "eplb.rebalances"};
    char *text = run_file(run_dir, "report.json");
    cr_assert(text, "%s has no report.json", run_dir);
    cJSON *report = cJSON_Parse(text);
    free(text);
    cr_assert(report, "%s/report.json is not JSON", run_dir);
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        mr_test_json_number(report, required[i]);
    if (cJSON_IsTrue(at_path(report, "finished")))
        assert_matches_result_files(run_dir, report);
    double prompt = mr_test_json_number(report, "tokens.prompt");
    double completion = mr_test_json_number(report, "tokens.completion");
    double wall = mr_test_json_number(report, "wall_seconds");
    double rank_hours = mr_test_json_number(report, "rank_seconds") / 3600;
    cr_assert_gt(wall, 0);
    /* Start-up (launch, model load, engine) is part of the wall time, and
     * a job that ran a step had some. */
    double startup = mr_test_json_number(report, "startup_seconds");
    cr_assert(startup >= 0 && startup <= wall, "startup_seconds %g of %g wall", startup, wall);
    if (at_path(report, "steps") && mr_test_json_number(report, "steps") > 0)
        cr_assert_gt(startup, 0);
    assert_close(mr_test_json_number(report, "rank_hours"), rank_hours, "rank_hours");
    assert_close(mr_test_json_number(report, "tokens_per_second"), (prompt + completion) / wall,
                 "tokens_per_second");
    assert_price(report, "cost.on_demand_usd", "cost.on_demand_usd_per_mtok",
                 "cost.gpu_hour_usd", rank_hours, prompt, completion);
    assert_price(report, "cost.spot_usd", "cost.spot_usd_per_mtok", "cost.spot_gpu_hour_usd",
                 rank_hours, prompt, completion);
    assert_close(mr_test_json_number(report, "eplb.rebalances"), rebalances_in_log(run_dir),
                 "eplb.rebalances");
    assert_advice_follows_the_rules(report);
    return report;
}

char *mr_test_command_output(const char *command, int *status)
{
    FILE *p = popen(command, "r");
    cr_assert(p, "cannot run %s", command);
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(mem);
    *status = pclose(p);
    return out;
}

void mr_test_assert_promtool_accepts(const char *path)
{
    char *command;
    int status;
    cr_assert(asprintf(&command, "promtool check metrics < '%s' 2>&1", path) > 0);
    char *out = mr_test_command_output(command, &status);
    cr_assert(status == 0 && out[0] == '\0', "promtool rejects %s (status %d):\n%s", path, status,
              out);
    free(out);
    free(command);
}

int mr_test_svg_cells(const char *path)
{
    char *command;
    int status;
    cr_assert(asprintf(&command, "xmllint --noout '%s' 2>&1", path) > 0);
    char *out = mr_test_command_output(command, &status);
    cr_assert(status == 0 && out[0] == '\0', "xmllint: %s is not well-formed:\n%s", path, out);
    free(out);
    free(command);
    cr_assert(asprintf(&command,
                       "xmllint --xpath 'count(//*[local-name()=\"rect\"][@class=\"cell\"])' "
                       "'%s'",
                       path) > 0);
    out = mr_test_command_output(command, &status);
    cr_assert_eq(status, 0, "xmllint --xpath on %s: %s", path, out);
    int cells = atoi(out);
    free(out);
    free(command);
    return cells;
}
