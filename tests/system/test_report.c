/* The job report as a user meets it: printed at the end of `moerun run`,
 * written into the run folder with metrics.prom and two pictures, again by
 * `moerun report`, and over every attempt of a resumed job. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"
#include "tests/common/report_check.h"

static mr_test_scratch t;

static void setup(void)
{
    mr_test_scratch_open(&t);
}

static void teardown(void)
{
    mr_test_scratch_close(&t);
}

TestSuite(report, .init = setup, .fini = teardown, .timeout = 300);

/* Two ranks, online EPLB that rebalances early, prices (GPU-hours, and a
 * provider's list prices to split the cost by), and a sample every tenth
 * of a second. */
#define JOB                                                                                 \
    "[parallel]\nranks = 2\n"                                                               \
    "[eplb]\nmode = online\nredundant_experts = 2\nstep_interval = 4\nmin_batch_tokens = 0\n" \
    "[cost]\ngpu_hour_usd = 3.60\nspot_gpu_hour_usd = 1.20\n"                               \
    "input_usd_per_million = 0.20\noutput_usd_per_million = 0.80\n"                         \
    "[report]\nprogress_seconds = 0.1\nexpert_metrics = on\n"

/* t.dir/runs/RUN/FILE, or the run folder when file is NULL. */
static char *in_run(const char *run, const char *file)
{
    char *path;
    cr_assert(asprintf(&path, "%s/runs/%s%s%s", t.dir, run, file ? "/" : "", file ? file : "") >
              0);
    return path;
}

static int moerun(const char *a, const char *b, const char *c)
{
    free(t.out);
    free(t.err);
    return mr_test_moerun(t.dir, &t.out, &t.err, a, b, c, NULL);
}

static bool file_has(const char *path, const char *text)
{
    char *data = mr_test_read(path, NULL);
    bool found = data && strstr(data, text);
    free(data);
    return found;
}

static int count_lines(const char *path)
{
    char *text = mr_test_read(path, NULL);
    int n = 0;
    for (char *c = text; c && *c; c++)
        n += *c == '\n';
    free(text);
    return n;
}

/* MoE layers and experts, from the header comment of expert_load.csv. */
static void load_shape(const char *run, int *layers, int *experts)
{
    char *path = in_run(run, "expert_load.csv"), *text = mr_test_read(path, NULL);
    cr_assert(text && sscanf(text, "# moerun expert load trace: tokens per expert, %d MoE "
                                   "layers x %d experts",
                             layers, experts) == 2,
              "%s", text ? text : path);
    free(text);
    free(path);
}

static double expert_load_total(const char *run)
{
    char *path = in_run(run, "expert_load.csv"), *text = mr_test_read(path, NULL);
    double sum = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] >= '0' && line[0] <= '9')
            for (char *field = line; field; field = strchr(field, ','), field = field ? field + 1 : NULL)
                sum += strtod(field, NULL);
    free(text);
    free(path);
    return sum;
}

/* The expert series of metrics.prom: how many, and their sum. */
static int expert_series(const char *path, double *sum)
{
    char *text = mr_test_read(path, NULL);
    int n = 0;
    *sum = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (!strncmp(line, "moerun_expert_tokens_total{", 27)) {
            n++;
            *sum += strtod(strrchr(line, ' ') + 1, NULL);
        }
    free(text);
    return n;
}

Test(report, a_two_rank_job_reports_what_its_result_files_hold)
{
    mr_test_write_requests(t.dir, 40);
    cr_assert_eq(mr_test_run_job(t.dir, "two", JOB, &t.out, &t.err), 0, "%s%s", t.out, t.err);
    char *run = in_run("two", NULL);
    cJSON *report = mr_test_check_report(run);
    cr_assert_eq(mr_test_json_number(report, "requests.ok"), 40);
    cr_assert_eq(mr_test_json_number(report, "requests.failed"), 2);
    cr_assert_eq(mr_test_json_number(report, "ranks"), 2);
    cr_assert_eq(mr_test_json_number(report, "attempts"), 1);
    cr_assert_eq(mr_test_json_number(report, "preemptions"), 0);
    cr_assert_geq(mr_test_json_number(report, "eplb.rebalances"), 1, "%s", t.out);
    /* One attempt: rank time is its wall time on both ranks. */
    cr_assert_float_eq(mr_test_json_number(report, "rank_seconds"),
                       2 * mr_test_json_number(report, "wall_seconds"), 1e-9);
    cr_assert(strstr(t.out, "report: job same (finished; 1 attempt)"), "%s", t.out);
    cr_assert(strstr(t.out, "per million tokens, prompt and completion together; split: $"),
              "%s", t.out);
    cr_assert(strstr(t.out, "cost split:  in the ratio of the list prices $0.2 input : $0.8 "
                            "output per million"),
              "%s", t.out);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(
                         cJSON_GetObjectItem(cJSON_GetObjectItem(report, "cost"), "split"),
                         "method")),
                     "list_price_ratio");
    cr_assert(strstr(t.out, "progress: same: "), "no progress line in a log:\n%s", t.out);

    /* `moerun report` writes and prints the same report again. */
    char *printed = strdup(strstr(t.out, "report: job same"));
    cr_assert_eq(moerun("report", "runs/two", NULL), 0, "%s", t.err);
    cr_assert_str_eq(t.out, printed);
    char *json_path = in_run("two", "report.json"), *json = mr_test_read(json_path, NULL);
    cr_assert_eq(moerun("report", "runs/two", "--json"), 0, "%s", t.err);
    cr_assert_str_eq(t.out, json);

    /* The step count is every rank's, and the timeline's last record is final. */
    char *timeline = in_run("two", "timeline.jsonl");
    int samples = count_lines(timeline);
    cr_assert_geq(samples, 2);

    char *metrics = in_run("two", "metrics.prom");
    mr_test_assert_promtool_accepts(metrics);
    int layers, experts;
    double routed;
    load_shape("two", &layers, &experts);
    cr_assert_eq(expert_series(metrics, &routed), layers * experts);
    cr_assert_float_eq(routed, expert_load_total("two"), 0.5);

    /* Tokens per rank and layer, experts in order and on the final
     * placement; one busy cell per rank and sample, on a time axis. */
    char *heatmap = in_run("two", "expert_load.svg");
    char *busy = in_run("two", "rank_busy.svg");
    cr_assert_eq(mr_test_svg_cells(heatmap), 2 * layers * 2);
    cr_assert(file_has(heatmap, "<title>MoE layer 0, rank 1: "));
    cr_assert(file_has(heatmap, "Before: experts in order"));
    cr_assert(file_has(heatmap, "After: EPLB&apos;s final placement"));
    cr_assert_eq(mr_test_svg_cells(busy), 2 * samples);
    cr_assert(file_has(busy, "seconds of the job"));
    char *md_path = in_run("two", "report.md"), *md = mr_test_read(md_path, NULL);
    cr_assert(strstr(md, "](expert_load.svg)") && strstr(md, "](rank_busy.svg)"), "%s", md);
    /* Priced: per million tokens over both kinds, and split in the list
     * prices' ratio, with the method said. */
    cr_assert(strstr(md, "| on demand | $3.60 | $"), "%s", md);
    cr_assert(strstr(md, "over prompt and completion tokens together"), "%s", md);
    cr_assert(strstr(md, "| per M input | per M output |"), "%s", md);
    cr_assert(strstr(md, "% of the cost on input tokens"), "%s", md);

    /* A person can look at it: it renders. */
    char *command;
    cr_assert(asprintf(&command, "rsvg-convert -o '%s/heatmap.png' '%s'", t.dir, heatmap) > 0);
    cr_assert_eq(system(command), 0, "%s", command);
    char *png;
    cr_assert(asprintf(&png, "%s/heatmap.png", t.dir) > 0);
    size_t png_len = 0;
    free(mr_test_read(png, &png_len));
    cr_assert_gt(png_len, 1000);
    free(png);
    free(command);
    free(md);
    free(md_path);
    free(heatmap);
    free(busy);
    free(metrics);
    free(timeline);
    free(json);
    free(json_path);
    free(printed);
    cJSON_Delete(report);
    free(run);
}

static const char *advice_of(const cJSON *report)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(report, "advice"), "text"));
}

Test(report, the_advice_follows_the_measured_batch)
{
    /* The test job decodes 16 sequences per rank at most: small steps. */
    mr_test_write_requests(t.dir, 240);
    cr_assert_eq(mr_test_run_job(t.dir, "small", "[parallel]\nranks = 2\n", &t.out, &t.err), 0,
                 "%s%s", t.out, t.err);
    char *run = in_run("small", NULL);
    cJSON *report = mr_test_check_report(run);
    cr_assert_lt(mr_test_json_number(report, "tokens_per_rank_step"), 64);
    cr_assert(strstr(advice_of(report), "Wide EP did not pay off"), "%s", advice_of(report));
    /* No prices: the cost is 0, not a division by nothing, and what is
     * printed says no price was set rather than $0.0000. */
    cr_assert_eq(mr_test_json_number(report, "cost.on_demand_usd"), 0);
    cr_assert_eq(mr_test_json_number(report, "cost.spot_usd_per_mtok.total"), 0);
    cr_assert(strstr(t.out, "on demand: no price set"), "%s", t.out);
    cr_assert(strstr(t.out, "spot: no price set"), "%s", t.out);
    cr_assert_null(strstr(t.out, "$0.0000"), "%s", t.out);
    /* No list prices: the total only, and why. */
    cr_assert(strstr(t.out, "cost split:  total only: moerun pays for GPU-hours"), "%s", t.out);
    cr_assert_null(strstr(t.out, "per million input"), "%s", t.out);
    cJSON_Delete(report);
    free(run);

    /* 64 sequences per rank, and the tiny model's skewed router. */
    mr_test_writef(t.dir, "big.ini",
                   "[job]\nname = same\nrun_dir = runs/big\n[model]\npath = model\n"
                   "[input]\nfiles = requests.jsonl\n[generation]\nmax_tokens = 24\n"
                   "[engine]\nmax_batch_tokens = 512\nmax_sequences = 64\n"
                   "[parallel]\nranks = 2\n[eplb]\nmode = online\nstep_interval = 10\n");
    cr_assert_eq(moerun("run", "big.ini", NULL), 0, "%s%s", t.out, t.err);
    run = in_run("big", NULL);
    report = mr_test_check_report(run);
    cr_assert_geq(mr_test_json_number(report, "tokens_per_rank_step"), 64);
    cr_assert_geq(mr_test_json_number(report, "eplb.expert_imbalance"), 2.5);
    /* Big batch, skewed load, EPLB on: paid off, unless the ranks (sharing
     * this machine's cores) spent over a quarter of their steps waiting. */
    double busy = 0;
    const char *stages[] = {"step_seconds.attention", "step_seconds.dispatch",
                            "step_seconds.experts", "step_seconds.combine"};
    for (int i = 0; i < 4; i++)
        busy += mr_test_json_number(report, stages[i]);
    double wait = mr_test_json_number(report, "step_seconds.wait");
    bool waited = wait > 0.25 * (busy + wait);
    cr_assert(strstr(advice_of(report), waited ? "Wide EP did not pay off yet"
                                               : "Wide EP and EPLB paid off"),
              "%s", advice_of(report));
    cJSON_Delete(report);
    free(run);
}

/* Waits for `pid`; its exit code. */
static int wait_exit(pid_t pid)
{
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The job's time as its attempts' last timeline records saw it. */
static double attempts_seconds(const char *path, int *attempts, double *steps)
{
    char *text = mr_test_read(path, NULL);
    double seconds = 0;
    *attempts = 0;
    *steps = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *rec = cJSON_Parse(line);
        if (cJSON_IsTrue(cJSON_GetObjectItem(rec, "final"))) {
            (*attempts)++;
            seconds += cJSON_GetObjectItem(rec, "seconds")->valuedouble;
            cJSON *ranks = cJSON_GetObjectItem(rec, "ranks");
            *steps += cJSON_GetArrayItem(cJSON_GetObjectItem(ranks, "steps"), 0)->valuedouble;
        }
        cJSON_Delete(rec);
    }
    free(text);
    return seconds;
}

Test(report, a_resumed_job_counts_every_attempt_once)
{
    mr_test_write_requests(t.dir, 240);
    mr_test_write_job(t.dir, "resumed", JOB);
    double t0 = mr_test_seconds();
    pid_t pid = mr_test_spawn_moerun(t.dir, "first.log", "run", "resumed.ini", NULL);
    /* Stop it once it has sampled a few times. */
    char *timeline = in_run("resumed", "timeline.jsonl");
    while (count_lines(timeline) < 3 && mr_test_seconds() - t0 < 60)
        usleep(10000);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    cr_assert_eq(wait_exit(pid), 4, "the first attempt did not stop on SIGTERM");
    double first = mr_test_seconds() - t0;

    /* A stopped job reports what its checkpoint committed. */
    cr_assert_eq(moerun("report", "runs/resumed", NULL), 0, "%s", t.err);
    cr_assert(strstr(t.out, "not finished"), "%s", t.out);
    char *run = in_run("resumed", NULL);
    cJSON *stopped = mr_test_check_report(run);
    cr_assert_lt(mr_test_json_number(stopped, "requests.ok"), 240);

    double t1 = mr_test_seconds();
    cr_assert_eq(moerun("resume", "runs/resumed", NULL), 0, "%s%s", t.out, t.err);
    double second = mr_test_seconds() - t1;
    cJSON *report = mr_test_check_report(run);
    cr_assert_eq(mr_test_json_number(report, "requests.ok"), 240);
    cr_assert_eq(mr_test_json_number(report, "attempts"), 2);
    cr_assert_eq(mr_test_json_number(report, "preemptions"), 1);
    /* Each attempt's time once: no more than the two processes lived, and
     * at least what their meters saw. */
    int attempts;
    double steps, seen = attempts_seconds(timeline, &attempts, &steps);
    double wall = mr_test_json_number(report, "wall_seconds");
    cr_assert_eq(attempts, 2);
    cr_assert_leq(wall, first + second, "wall %.2f s, the processes lived %.2f s", wall,
                  first + second);
    cr_assert_geq(wall, seen - 0.05, "wall %.2f s, the attempts saw %.2f s", wall, seen);
    cr_assert_float_eq(mr_test_json_number(report, "rank_seconds"), 2 * wall, 1e-9);
    cr_assert_eq(mr_test_json_number(report, "steps"), steps);
    /* rank_busy.svg marks where the second attempt starts. */
    char *busy = in_run("resumed", "rank_busy.svg");
    cr_assert(file_has(busy, ">attempt 2</text>"));
    cr_assert_eq(mr_test_svg_cells(busy), 2 * count_lines(timeline));
    free(busy);
    cJSON_Delete(stopped);
    cJSON_Delete(report);
    free(run);
    free(timeline);
}

Test(report, a_terminal_gets_one_live_line)
{
    mr_test_write_requests(t.dir, 40);
    mr_test_write_job(t.dir, "tty", JOB);
    /* script(1) gives moerun a terminal, as a user's shell would. */
    char *command;
    cr_assert(asprintf(&command, "cd '%s' && script -qefc '%s run tty.ini' /dev/null", t.dir,
                       getenv("MOERUN")) > 0);
    int status;
    char *out = mr_test_command_output(command, &status);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "\r\033[Ksame: "), "no live line:\n%s", out);
    cr_assert_null(strstr(out, "progress: "), "log lines on a terminal:\n%s", out);
    free(out);
    free(command);
}

Test(report, damaged_meter_files_are_named_and_the_rest_reported)
{
    mr_test_write_requests(t.dir, 12);
    cr_assert_eq(mr_test_run_job(t.dir, "hurt", "[parallel]\nranks = 1\n", &t.out, &t.err), 0,
                 "%s%s", t.out, t.err);
    char *timeline = in_run("hurt", "timeline.jsonl");
    int lines = count_lines(timeline);
    FILE *f = fopen(timeline, "a");
    fputs("{\"attempt\": 1, \"seco\n", f);
    fclose(f);
    cr_assert_eq(moerun("report", "runs/hurt", NULL), 0, "%s", t.err);
    char want[64];
    snprintf(want, sizeof want, "timeline.jsonl:%d: not a JSON record", lines + 1);
    cr_assert(strstr(t.err, want), "%s", t.err);
    cr_assert(strstr(t.out, "requests:    12 served, 2 failed"), "%s", t.out);
    cr_assert_eq(moerun("report", "nowhere", NULL), 3);
    cr_assert(strstr(t.err, "nowhere"), "%s", t.err);
    free(timeline);
}

/* The numbers of a line "JOB: D/P requests done (...), T tokens/s (G
 * generated/s) ..."; false when `line` is not one. */
static bool progress_numbers(const char *line, double *done, double *per_second,
                             double *generated)
{
    const char *at = strstr(line, ": ");
    return at && sscanf(at, ": %lf/%*f requests done (%*f%%), %lf tokens/s (%lf generated/s)",
                        done, per_second, generated) == 3;
}

static cJSON *status_json(void)
{
    cr_assert_eq(moerun("status", "runs/busy", "--json"), 0, "%s", t.err);
    cJSON *status = cJSON_Parse(t.out);
    cr_assert(status, "status --json is not JSON:\n%s", t.out);
    return status;
}

Test(report, progress_counts_tokens_while_ranks_are_busy_and_status_agrees)
{
    /* Completions that each generate 96 tokens: every rank is busy for
     * several samples before a request finishes, and 48 of them keep the
     * job serving for several more.  (Under seed 4 none meets the end of
     * text early; under the seed 3 this had, one stopped after 13 tokens,
     * and with a faster engine finished before the first sample, and 16
     * requests of 48 tokens before the second.) */
    enum { BUSY_REQUESTS = 48 };
    mr_buf lines = {0};
    for (int i = 0; i < BUSY_REQUESTS; i++)
        mr_buf_printf(&lines,
                      "{\"custom_id\": \"r%d\", \"method\": \"POST\", \"url\": "
                      "\"/v1/completions\", \"body\": {\"model\": \"tiny\", \"prompt\": "
                      "\"Tell me about soup number %d and the spices that go in it\"}}\n",
                      i, i);
    free(mr_test_write(t.dir, "requests.jsonl", lines.data, lines.len));
    mr_buf_free(&lines);
    mr_test_writef(t.dir, "busy.ini",
                   "[job]\nname = busy\nrun_dir = runs/busy\n[model]\npath = model\n[input]\n"
                   "files = requests.jsonl\n[generation]\nmax_tokens = 96\nseed = 4\n"
                   "[engine]\nmax_batch_tokens = 64\nmax_sequences = 8\n"
                   "[parallel]\nranks = 2\n[report]\nprogress_seconds = 0.1\n");
    pid_t pid = mr_test_spawn_moerun(t.dir, "busy.log", "run", "busy.ini", NULL);
    char *log_path, *log = NULL;
    cr_assert(asprintf(&log_path, "%s/busy.log", t.dir) > 0);
    /* Mid-run, status shows a sample of the job's own progress lines. */
    double t0 = mr_test_seconds();
    while (!(log && strstr(log, "progress: busy: ")) && mr_test_seconds() - t0 < 60) {
        free(log);
        usleep(20000);
        log = mr_test_read(log_path, NULL);
    }
    cJSON *running = status_json();
    cr_assert_eq(wait_exit(pid), 0, "the job failed");
    free(log);
    log = mr_test_read(log_path, NULL);

    /* Tokens count as they are generated: before the first request
     * finished, ranks were busy and the line said so. */
    bool busy_seen = false;
    int samples = 0;
    for (char *line = strstr(log, "progress: busy: "); line;
         line = strstr(line + 1, "progress: busy: ")) {
        double done, per_second, generated;
        cr_assert(progress_numbers(line + strlen("progress: busy"), &done, &per_second,
                                   &generated),
                  "%.200s", line);
        busy_seen |= done == 0 && per_second > 0 && generated > 0;
        samples++;
    }
    cr_assert(busy_seen, "no progress line counted tokens before a request finished:\n%s", log);
    cr_assert_geq(samples, 2, "%s", log);

    /* The status taken mid-run gave a line the job printed (when its
     * sample was not the final one, which prints none). */
    const cJSON *progress = cJSON_GetObjectItem(running, "progress");
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(progress, "text"));
    cr_assert(text, "status --json had no progress while the job ran: %s", t.out);
    if (!cJSON_IsTrue(cJSON_GetObjectItem(progress, "final"))) {
        char *want;
        cr_assert(asprintf(&want, "progress: %s\n", text) > 0);
        cr_assert(strstr(log, want), "status said \"%s\", the job never did:\n%s", text, log);
        free(want);
    }

    /* At the end status agrees with the job's own counts and the files. */
    cJSON *status = status_json();
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(status, "state")), "finished");
    progress = cJSON_GetObjectItem(status, "progress");
    const cJSON *joined = cJSON_GetObjectItem(status, "joined");
    double ok, failed, prompt, completion;
    const char *served = strstr(log, "served ");
    cr_assert(served && sscanf(served,
                               "served %lf requests, %lf failed; %lf prompt + %lf completion",
                               &ok, &failed, &prompt, &completion) == 4,
              "%s", log);
    cr_assert_eq(mr_test_json_number(progress, "requests_done"), ok + failed);
    cr_assert_eq(mr_test_json_number(progress, "requests_done"),
                 mr_test_json_number(joined, "results") + mr_test_json_number(joined, "errors"));
    cr_assert_eq(mr_test_json_number(progress, "requests_planned"), BUSY_REQUESTS);
    cr_assert_eq(mr_test_json_number(progress, "tokens_prompt"), prompt);
    cr_assert_eq(mr_test_json_number(progress, "tokens_completion"), completion);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(progress, "final")));
    cr_assert_eq(mr_test_json_number(status, "committed.requests_done"), ok + failed);
    /* The text form says the same in the same words. */
    text = cJSON_GetStringValue(cJSON_GetObjectItem(progress, "text"));
    cr_assert(strstr(text, "busy: 48/48 requests done (100.0%), "), "%s", text);
    cr_assert_eq(moerun("status", "runs/busy", NULL), 0, "%s", t.err);
    cr_assert(strstr(t.out, text), "%s\nlacks\n%s", t.out, text);
    cJSON_Delete(status);
    cJSON_Delete(running);
    free(log);
    free(log_path);
}
