/* One owner per run folder, stops at any moment of a run, user stops told
 * from preemptions, and the exit codes docs/cli.md gives: each driven
 * through the moerun binary as a user's cluster would, and compared with a
 * run that never stopped. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

TestSuite(owner, .init = setup, .fini = teardown, .timeout = 300);

#define RANKS(n) "[parallel]\nranks = " #n "\n"

static int moerun(const char *arg, ...)
{
    const char *a[8] = {arg};
    va_list ap;
    va_start(ap, arg);
    for (int i = 1; a[i - 1] && i < 7; i++)
        a[i] = va_arg(ap, const char *);
    va_end(ap);
    free(t.out);
    free(t.err);
    return mr_test_moerun(t.dir, &t.out, &t.err, a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
}

static char *log_of(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", t.dir, name);
    char *text = mr_test_read(path, NULL);
    return text ? text : strdup("");
}

/* The uninterrupted run every test compares with: one rank, no mpirun. */
static void run_reference(int requests)
{
    mr_test_write_requests(t.dir, requests);
    cr_assert_eq(mr_test_run_job(t.dir, "ref", RANKS(1), &t.out, &t.err), 0, "%s%s", t.out,
                 t.err);
}

/* Waits for pid; fails the test (and kills it) after `limit` seconds. */
static int finish(pid_t pid, double limit, const char *log)
{
    int code;
    if (!mr_test_ended(pid, limit, &code)) {
        mr_test_kill_tree(pid);
        char *text = log_of(log);
        cr_assert_fail("still running after %.0f s:\n%s", limit, text);
    }
    return code;
}

/* Waits until runs/NAME serves: its part files appear. */
static void wait_serving(const char *name, pid_t pid, const char *log)
{
    char parts[4096];
    snprintf(parts, sizeof parts, "%s/runs/%s/parts", t.dir, name);
    double until = mr_test_seconds() + 120;
    int code;
    while (access(parts, F_OK) != 0 && mr_test_seconds() < until) {
        if (mr_test_ended(pid, 0, &code)) {
            char *text = log_of(log);
            cr_assert_fail("%s ended (exit %d) before serving:\n%s", name, code, text);
        }
        usleep(5000);
    }
    cr_assert_eq(access(parts, F_OK), 0, "%s never started serving", name);
}

Test(owner, a_second_run_of_a_folder_is_refused_and_the_first_finishes_the_same)
{
    run_reference(60);
    mr_test_write_job(t.dir, "twice", RANKS(2));
    /* Started together, then again while the winner serves: what Slurm's
     * --requeue or a restarted pod does. */
    const char *logs[2] = {"first.log", "second.log"};
    pid_t pids[2];
    for (int i = 0; i < 2; i++)
        pids[i] = mr_test_spawn_moerun(t.dir, logs[i], "run", "twice.ini", NULL);
    int loser = -1, code = 0;
    for (double until = mr_test_seconds() + 120; loser < 0 && mr_test_seconds() < until;)
        for (int i = 0; i < 2 && loser < 0; i++)
            if (mr_test_ended(pids[i], 0.01, &code))
                loser = i;
    cr_assert_geq(loser, 0, "neither run ended");
    char *log = log_of(logs[loser]);
    cr_assert_eq(code, 3, "exit %d:\n%s", code, log);
    cr_assert(strstr(log, "is in use by another moerun: pid "), "%s", log);
    cr_assert(strstr(log, "on host "), "%s", log);
    free(log);
    int winner = 1 - loser;
    wait_serving("twice", pids[winner], logs[winner]);
    cr_assert_eq(moerun("run", "twice.ini", NULL), 3, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "is in use by another moerun: pid "), "%s", t.err);
    cr_assert_eq(moerun("resume", "runs/twice", NULL), 3, "%s%s", t.out, t.err);
    cr_assert_eq(moerun("status", "runs/twice", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "owner: pid "), "%s", t.out);
    code = finish(pids[winner], 240, logs[winner]);
    log = log_of(logs[winner]);
    cr_assert_eq(code, 0, "exit %d:\n%s", code, log);
    free(log);
    mr_test_assert_same_output(t.dir, "ref", "twice");
    cr_assert_eq(moerun("status", "runs/twice", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "owner: none"), "%s", t.out);
}

Test(owner, a_killed_owner_leaves_the_folder_free_to_resume)
{
    run_reference(60);
    mr_test_write_job(t.dir, "killed", RANKS(2) "[checkpoint]\ninterval_seconds = 0.2\n");
    pid_t pid = mr_test_spawn_moerun(t.dir, "killed.log", "run", "killed.ini", NULL);
    wait_serving("killed", pid, "killed.log");
    mr_test_kill_tree(pid);
    cr_assert_eq(moerun("resume", "runs/killed", NULL), 0, "%s%s", t.out, t.err);
    mr_test_assert_same_output(t.dir, "ref", "killed");
}

Test(owner, moerun_stop_is_a_user_stop_not_a_preemption)
{
    run_reference(60);
    mr_test_write_job(t.dir, "user", RANKS(2));
    pid_t pid = mr_test_spawn_moerun(t.dir, "user.log", "run", "user.ini", NULL);
    wait_serving("user", pid, "user.log");
    cr_assert_eq(moerun("stop", "runs/user", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "stopped; `moerun resume"), "%s", t.out);
    int code = finish(pid, 60, "user.log");
    char *log = log_of("user.log");
    cr_assert_eq(code, 4, "exit %d:\n%s", code, log);
    cr_assert(strstr(log, "a user's stop"), "%s", log);
    free(log);
    cr_assert_eq(moerun("stop", "runs/user", NULL), 3, "nothing runs it now: %s%s", t.out,
                 t.err);
    cr_assert_eq(moerun("resume", "runs/user", NULL), 0, "%s%s", t.out, t.err);
    mr_test_assert_same_output(t.dir, "ref", "user");
    char run[4096];
    snprintf(run, sizeof run, "%s/runs/user", t.dir);
    cJSON *report = mr_test_check_report(run);
    cr_assert_eq(mr_test_json_number(report, "user_stops"), 1);
    cr_assert_eq(mr_test_json_number(report, "preemptions"), 0);
    cJSON_Delete(report);
}

/* A stop at any moment of the start-up ends in a stop, never in a full
 * run; each stopped run resumes to the same bytes. */
Test(owner, sigterm_in_the_first_half_second_is_never_swallowed)
{
    run_reference(60);
    unsigned seed = (unsigned)time(NULL);
    if (getenv("MR_FAULT_SEED"))
        seed = (unsigned)strtoul(getenv("MR_FAULT_SEED"), NULL, 10);
    fprintf(stderr, "early stop test: seed %u (MR_FAULT_SEED=%u replays it)\n", seed, seed);
    mr_test_write_job(t.dir, "early", RANKS(2));
    for (int i = 0; i < 4; i++) {
        /* One try in each eighth of a second of the first half. */
        double delay = (i + (double)rand_r(&seed) / RAND_MAX) * 0.125;
        pid_t pid = mr_test_spawn_moerun(t.dir, "early.log", "run", "early.ini", "--force-new",
                                         NULL);
        usleep((useconds_t)(delay * 1e6));
        kill(pid, SIGTERM);
        int code = finish(pid, 120, "early.log");
        char *log = log_of("early.log");
        /* Before moerun's main runs (the loader is still mapping its
         * libraries) SIGTERM ends it as it ends any program, having written
         * nothing; from main on it is a stop. */
        bool unstarted = code == 128 + SIGTERM && !strstr(log, "job same");
        cr_assert(code == 4 || unstarted, "seed %u, SIGTERM after %.3f s: exit %d\n%s", seed,
                  delay, code, log);
        cr_assert(unstarted || strstr(log, "stopped by SIGTERM"), "%s", log);
        free(log);
        cr_assert_eq(moerun("run", "early.ini", NULL), 0, "%s%s", t.out, t.err);
        mr_test_assert_same_output(t.dir, "ref", "early");
    }
}

Test(owner, exit_codes_are_the_documented_ones)
{
    mr_test_write_requests(t.dir, 8);
    mr_test_write_job(t.dir, "codes", RANKS(1));
    cr_assert_eq(moerun("run", "codes.ini", "--set", "foo", NULL), 2, "%s", t.err);
    cr_assert(strstr(t.err, "SECTION.KEY=VALUE"), "%s", t.err);
    cr_assert_eq(moerun("run", "missing.ini", NULL), 1, "%s", t.err);
    cr_assert(strstr(t.err, "missing.ini"), "%s", t.err);
    cr_assert_eq(moerun("run", "codes.ini", "--set", "parallel.nope=1", NULL), 3, "%s", t.err);
    /* A rank count no host starts is refused before mpirun could hang on it. */
    cr_assert_eq(moerun("validate", "codes.ini", "--set", "parallel.ranks=65536", NULL), 3, "%s",
                 t.err);
    cr_assert(strstr(t.err, "[parallel] ranks = 65536 is more than this host can start"), "%s",
              t.err);
    cr_assert_eq(moerun("run", "codes.ini", "--set", "parallel.ranks=65536", NULL), 3, "%s",
                 t.err);

    /* The bundled requests hold two lines that fail (a broken line and a
     * repeated custom_id): above a 1% limit, the job fails with 7 after
     * writing every record. */
    cr_assert_eq(moerun("run", "codes.ini", "--set", "job.max_error_ratio=0.01", NULL), 7,
                 "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "2 of 10 requests failed"), "%s", t.err);
    char *errors = log_of("runs/codes/errors.jsonl"), *results = log_of("runs/codes/results.jsonl");
    int n_errors = 0, n_results = 0;
    for (char *p = errors; (p = strchr(p, '\n')); p++)
        n_errors++;
    for (char *p = results; (p = strchr(p, '\n')); p++)
        n_results++;
    cr_assert_eq(n_errors, 2);
    cr_assert_eq(n_results, 8);
    free(errors);
    free(results);
    /* By default only a job where every request failed fails. */
    cr_assert_eq(moerun("run", "codes.ini", "--force-new", NULL), 0, "%s%s", t.out, t.err);
    mr_test_writef(t.dir, "requests.jsonl", "not json\n{\"custom_id\": 1}\n");
    cr_assert_eq(moerun("run", "codes.ini", "--force-new", NULL), 7, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "2 of 2 requests failed"), "%s", t.err);
}
