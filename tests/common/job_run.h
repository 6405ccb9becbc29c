/*
 * Running a small job on the tiny model the way a user would, and comparing
 * the output of two runs: for tests of parallel runs, EPLB and resume.
 */
#ifndef MR_TEST_JOB_RUN_H
#define MR_TEST_JOB_RUN_H

/* A test's scratch folder, with the tiny model linked in as dir/model, and
 * the output of the last moerun it ran: for a suite's .init and .fini. */
typedef struct {
    char *dir, *out, *err;
} mr_test_scratch;
void mr_test_scratch_open(mr_test_scratch *t);
void mr_test_scratch_close(mr_test_scratch *t);

/* dir/requests.jsonl: the first `n` bundled requests, a line that is not
 * JSON in the middle and a repeated custom_id at the end, so errors.jsonl
 * has lines from several shards too. */
void mr_test_write_requests(const char *dir, int n);

#include <stdbool.h>
#include <sys/types.h>

/* dir/NAME.ini: the job mr_test_run_job runs, with `extra` appended. */
void mr_test_write_job(const char *dir, const char *name, const char *extra);

/* Runs `moerun run NAME.ini` in dir for a job over requests.jsonl into
 * runs/NAME, with `extra` appended to the job file.  Every job has the same
 * [job] name, which result ids derive from.  *out and *err are
 * replaced by the run's output (freed first).  Returns the exit code. */
int mr_test_run_job(const char *dir, const char *name, const char *extra, char **out,
                    char **err);

/* Fails unless runs/A and runs/B have the same results.jsonl and
 * errors.jsonl, but for the "created" times. */
void mr_test_assert_same_output(const char *dir, const char *a, const char *b);

/* A digest (XXH3-128, 32 hex digits) of runs/NAME's results.jsonl and
 * errors.jsonl with every "created" and result id zeroed and the folder
 * `dir` left out where a message names a path: what a test pins a job's
 * output to across commits. */
void mr_test_output_digest(const char *dir, const char *name, char hex[33]);

/* The processes `parent` started, from /proc; at most cap. */
int mr_test_children(pid_t parent, pid_t *kids, int cap);
/* Seconds on the monotonic clock. */
double mr_test_seconds(void);
/* Waits up to `limit` seconds; true and its exit code once pid has ended. */
bool mr_test_ended(pid_t pid, double limit, int *code);
/* pid and every process below it, parents first; at most cap. */
int mr_test_tree(pid_t pid, pid_t *pids, int cap);
/* SIGKILL to pid and every process below it at once, as when a node is
 * taken back; waits for pid. */
void mr_test_kill_tree(pid_t pid);

#endif
