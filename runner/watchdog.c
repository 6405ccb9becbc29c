/*
 * Stall detection.  A rank that stops making progress without dying (kill
 * -STOP, a kernel stall, a GPU stuck after an Xid, an NFS hang) leaves the
 * others waiting in the step's exchange for good; death is noticed by the
 * transports, a stall is not.  So every rank runs a watchdog thread:
 *
 *   1. The work loop counts each step and each gather before one that it
 *      gets through (mr_runner_watchdog_step); the watch starts at the
 *      first, once every rank has loaded the model.
 *   2. Once a second the thread writes the rank's heartbeat, a one-line
 *      file RUN_DIR/ranks/rank-NNNNN: its step count, host, pid and the
 *      time.  A rank that is stopped or frozen stops writing it, whatever
 *      the others are doing.
 *   3. When no step has finished for [parallel] stall_seconds, the thread
 *      reads every rank's heartbeat, names the ranks whose heartbeat is old
 *      (they did not arrive) or, if none is, says every rank is alive but
 *      stuck, and ends its rank with MR_EXIT_RANK_FAILED.  mpirun then ends
 *      the rest (SIGKILL reaches a stopped process too), the launcher sees
 *      a failed rank, and --max-restarts resumes from the last checkpoint.
 *
 * Only the lowest-numbered live rank prints, so the message comes once.
 *
 * Limits: the heartbeats live in the run folder, which every host sees;
 * on NFS a reader sees a heartbeat as fresh as the server's attribute and
 * close-to-open caching allows (seconds), far below stall_seconds.  A step
 * or checkpoint that legitimately takes longer than stall_seconds is taken
 * for a stall: stall_seconds must exceed the slowest step (a model load is
 * not watched).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runner/runner.h"

/* A heartbeat older than this many beats says its rank has stopped. */
#define STALE_BEATS 5.0
#define BEAT_SECONDS 1

struct mr_runner_watchdog {
    const mr_job *job;
    int rank, size;
    char *dir; /* RUN_DIR/ranks */
    char host[256];
    _Atomic uint64_t steps;
    _Atomic double last_step; /* mr_engine_clock_seconds() of the last step, 0 before the first */
    atomic_bool quit;
    pthread_t thread;
    bool running;
};

static char *heartbeat_path(const mr_runner_watchdog *w, int rank)
{
    char name[32];
    snprintf(name, sizeof name, "rank-%05d", rank);
    return mr_runner_path(w->dir, name);
}

/* Written in place (no rename): a reader that catches half a line ignores
 * it, and the next beat fixes it. */
static void beat(mr_runner_watchdog *w)
{
    char line[512], *path = heartbeat_path(w, w->rank);
    int n = snprintf(line, sizeof line, "%" PRIu64 " %.3f %d %s\n", atomic_load(&w->steps),
                     mr_runner_unix_seconds(), (int)getpid(), w->host);
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (fd >= 0) {
        ssize_t ignored = write(fd, line, (size_t)n);
        (void)ignored;
        close(fd);
    }
    free(path);
}

typedef struct {
    bool seen;
    uint64_t steps;
    double at;
    int pid;
    char host[256];
} heartbeat;

static heartbeat read_heartbeat(const mr_runner_watchdog *w, int rank)
{
    heartbeat h = {0};
    char *path = heartbeat_path(w, rank);
    FILE *f = path ? fopen(path, "r") : NULL;
    if (f) {
        h.seen = fscanf(f, "%" SCNu64 " %lf %d %255s", &h.steps, &h.at, &h.pid, h.host) == 4;
        fclose(f);
    }
    free(path);
    return h;
}

/* Names the ranks that did not arrive and ends this rank. */
static void report_stall(mr_runner_watchdog *w, double waited)
{
    double now = mr_runner_unix_seconds(), stale = STALE_BEATS * BEAT_SECONDS;
    int lowest_live = -1;
    mr_buf missing = {0};
    for (int r = 0; r < w->size; r++) {
        heartbeat h = r == w->rank ? (heartbeat){.seen = true, .at = now} : read_heartbeat(w, r);
        bool live = h.seen && now - h.at <= stale;
        if (live && lowest_live < 0)
            lowest_live = r;
        if (!live && !h.seen)
            mr_buf_printf(&missing, "%srank %d (no heartbeat)", missing.len ? ", " : "", r);
        else if (!live)
            mr_buf_printf(&missing, "%srank %d (pid %d on host %s, at step %" PRIu64
                                    ", silent for %.0f s)",
                          missing.len ? ", " : "", r, h.pid, h.host, h.steps, now - h.at);
    }
    if (lowest_live == w->rank) {
        if (missing.len)
            fprintf(stderr,
                    "moerun run: stall: no rank finished a step for %.0f s ([parallel] "
                    "stall_seconds = %g); these ranks did not arrive: %s\n",
                    waited, w->job->parallel_stall_seconds, missing.data);
        else
            fprintf(stderr,
                    "moerun run: stall: no rank finished a step for %.0f s ([parallel] "
                    "stall_seconds = %g), yet every rank is alive: a hang inside a step (an "
                    "exchange or the device)\n",
                    waited, w->job->parallel_stall_seconds);
        fflush(stderr);
    }
    mr_buf_free(&missing);
    _exit(MR_EXIT_RANK_FAILED);
}

static void *watch(void *arg)
{
    mr_runner_watchdog *w = arg;
    struct timespec tick = {BEAT_SECONDS, 0};
    while (!atomic_load(&w->quit)) {
        beat(w);
        double last = atomic_load(&w->last_step);
        if (last > 0 && mr_engine_clock_seconds() - last > w->job->parallel_stall_seconds)
            report_stall(w, mr_engine_clock_seconds() - last);
        nanosleep(&tick, NULL);
    }
    return NULL;
}

int mr_runner_watchdog_start(const mr_job *job, int rank, int size, mr_runner_watchdog **out)
{
    char err[512];
    mr_runner_watchdog *w = calloc(1, sizeof *w);
    *out = w;
    if (!w || !(w->dir = mr_runner_path(job->job_run_dir, MR_RUN_HEARTBEATS))) {
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    w->job = job;
    w->rank = rank;
    w->size = size;
    gethostname(w->host, sizeof w->host - 1);
    if (mr_runner_mkdir_p(w->dir, err, sizeof err) != MR_JOBS_OK)
        return mr_runner_write_failed(w->dir, errno);
    int rc = pthread_create(&w->thread, NULL, watch, w);
    if (rc != 0) {
        fprintf(stderr, "moerun run: cannot start the stall watchdog: %s\n", strerror(rc));
        return MR_EXIT_FAILED;
    }
    w->running = true;
    return MR_EXIT_OK;
}

void mr_runner_watchdog_step(mr_runner_watchdog *w)
{
    atomic_fetch_add(&w->steps, 1);
    atomic_store(&w->last_step, mr_engine_clock_seconds());
}

void mr_runner_watchdog_pause(mr_runner_watchdog *w)
{
    atomic_store(&w->last_step, 0.0);
}

void mr_runner_watchdog_stop(mr_runner_watchdog *w)
{
    if (!w)
        return;
    if (w->running) {
        atomic_store(&w->quit, true);
        pthread_join(w->thread, NULL);
    }
    free(w->dir);
    free(w);
}
