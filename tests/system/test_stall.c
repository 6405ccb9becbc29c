/* A rank that stops without dying (SIGSTOP, as a frozen node would): the
 * job ends within stall_seconds and a few more, naming the rank and its
 * host, and with --max-restarts it finishes with the same bytes as a run
 * that never stalled. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

TestSuite(stall, .init = setup, .fini = teardown, .timeout = 300);

static char *log_of(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", t.dir, name);
    char *text = mr_test_read(path, NULL);
    return text ? text : strdup("");
}

/* The last rank of the run `pid` launched, once it serves (its part files
 * appear); 0 if it never does. */
static pid_t serving_rank(pid_t pid, const char *name)
{
    char parts[4096];
    snprintf(parts, sizeof parts, "%s/runs/%s/parts", t.dir, name);
    int code;
    for (double until = mr_test_seconds() + 120; mr_test_seconds() < until; usleep(5000)) {
        cr_assert(!mr_test_ended(pid, 0, &code), "ended (exit %d) before serving", code);
        pid_t pids[64];
        /* moerun, mpirun, then the ranks */
        int n = mr_test_tree(pid, pids, 64);
        if (access(parts, F_OK) == 0 && n >= 4)
            return pids[n - 1];
    }
    return 0;
}

static void stall_a_rank(const char *name, const char *restarts, int want_code)
{
    char ini[256];
    snprintf(ini, sizeof ini, "%s.ini", name);
    pid_t pid = mr_test_spawn_moerun(t.dir, "stall.log", "run", ini, "--max-restarts", restarts,
                                     NULL);
    pid_t rank = serving_rank(pid, name);
    cr_assert_gt(rank, 0, "no rank to stop");
    cr_assert_eq(kill(rank, SIGSTOP), 0);
    double stopped = mr_test_seconds();
    int code;
    /* Ends within stall_seconds (5) + 10 s, or, restarted, finishes. */
    bool ended = mr_test_ended(pid, want_code == 0 ? 240 : 15, &code);
    double took = mr_test_seconds() - stopped;
    char *log = log_of("stall.log");
    if (!ended) {
        kill(rank, SIGCONT);
        mr_test_kill_tree(pid);
        cr_assert_fail("still running %.0f s after a rank stalled:\n%s", took, log);
    }
    cr_assert_eq(code, want_code, "exit %d:\n%s", code, log);
    cr_assert(strstr(log, "stall: no rank finished a step for"), "%s", log);
    cr_assert(strstr(log, "did not arrive: rank "), "%s", log);
    cr_assert(strstr(log, "on host "), "%s", log);
    fprintf(stderr, "stall test: the job noticed a stalled rank and ended %.1f s after it "
                    "stopped (stall_seconds = 5)\n", took);
    free(log);
}

Test(stall, a_stopped_rank_ends_the_job_and_a_restart_finishes_it)
{
    mr_test_write_requests(t.dir, 120);
    cr_assert_eq(mr_test_run_job(t.dir, "ref", "[parallel]\nranks = 1\n", &t.out, &t.err), 0,
                 "%s%s", t.out, t.err);
    mr_test_write_job(t.dir, "stall", "[parallel]\nranks = 2\nstall_seconds = 5\n"
                                      "[checkpoint]\ninterval_seconds = 0.5\n");
    stall_a_rank("stall", "0", 5);

    /* Again over the MPI transport, restarted: the same bytes. */
    mr_test_write_job(t.dir, "again", "[parallel]\nranks = 2\nstall_seconds = 5\n"
                                      "transport = mpi\n[checkpoint]\ninterval_seconds = 0.5\n");
    stall_a_rank("again", "1", 0);
    char *log = log_of("stall.log");
    cr_assert(strstr(log, "a rank failed; restarting from the last checkpoint"), "%s", log);
    free(log);
    mr_test_assert_same_output(t.dir, "ref", "again");
}
