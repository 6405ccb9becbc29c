/* Resuming a job: kills at random moments, a stop signal, another number
 * of ranks, a changed job, damaged checkpoints and bundles; each time the
 * same bytes as a run that never stopped. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "checkpoint/checkpoint.h"
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

TestSuite(resume, .init = setup, .fini = teardown, .timeout = 900);

#define RANKS(n) "[parallel]\nranks = " #n "\n"
/* Checkpoints often, so that kills land between them. */
#define OFTEN "[checkpoint]\ninterval_seconds = 0.2\n"

/* A path in the scratch folder, from a format; the caller frees it. */
static char *in_dir(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *in_dir(const char *fmt, ...)
{
    char *rel = NULL, *path = NULL;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&rel, fmt, ap) >= 0);
    va_end(ap);
    cr_assert(asprintf(&path, "%s/%s", t.dir, rel) >= 0);
    free(rel);
    return path;
}

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

/* The uninterrupted run every test compares with: one rank, no mpirun. */
static void run_reference(int requests)
{
    mr_test_write_requests(t.dir, requests);
    cr_assert_eq(mr_test_run_job(t.dir, "ref", RANKS(1), &t.out, &t.err), 0, "%s%s", t.out, t.err);
}

/* SIGKILL to one rank; false when no rank runs yet. */
static bool kill_a_rank(pid_t pid, unsigned *seed)
{
    pid_t pids[64];
    int n = mr_test_tree(pid, pids, 64);
    /* parent, mpirun, then the ranks */
    if (n < 3)
        return false;
    return kill(pids[2 + rand_r(seed) % (unsigned)(n - 2)], SIGKILL) == 0;
}

static double uniform(unsigned *seed, double lo, double hi)
{
    return lo + (hi - lo) * ((double)rand_r(seed) / RAND_MAX);
}

static char *log_of(const char *log)
{
    char *path = in_dir("%s", log), *text = mr_test_read(path, NULL);
    free(path);
    return text ? text : strdup("");
}

/* Every custom_id once in runs/NAME: `results` result lines with distinct
 * ids, and `errors` error lines. */
static void assert_each_id_once(const char *name, int results, int errors)
{
    static const char *const files[2] = {"results.jsonl", "errors.jsonl"};
    const int want[2] = {results, errors};
    for (int f = 0; f < 2; f++) {
        char *path = in_dir("runs/%s/%s", name, files[f]), *text = mr_test_read(path, NULL);
        cr_assert(text, "no %s", path);
        char **ids = calloc((size_t)want[f] + 1, sizeof *ids);
        int n = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            cr_assert_lt(n, want[f], "%s has more than %d lines", path, want[f]);
            cJSON *j = cJSON_Parse(line);
            cJSON *id = cJSON_GetObjectItem(j, "custom_id");
            ids[n] = cJSON_IsString(id) ? strdup(id->valuestring) : strdup("");
            for (int i = 0; f == 0 && i < n; i++)
                cr_assert_str_neq(ids[i], ids[n], "%s: custom_id %s twice", path, ids[n]);
            n++;
            cJSON_Delete(j);
        }
        cr_assert_eq(n, want[f], "%s has %d lines, not %d", path, n, want[f]);
        for (int i = 0; i < n; i++)
            free(ids[i]);
        free(ids);
        free(text);
        free(path);
    }
}

/* mr_test_write_requests(n): n requests, a broken line and a repeated id. */
static void assert_complete(const char *name, int requests)
{
    mr_test_assert_same_output(t.dir, "ref", name);
    assert_each_id_once(name, requests, 2);
}

/* The completion tokens the run logging to `log` went on from, when it
 * resumed requests that were in flight at its checkpoint. */
static unsigned long long tokens_carried(const char *log)
{
    static const char key[] = " requests in flight go on from the ";
    char *text = log_of(log), *at = strstr(text, key);
    unsigned long long n = at ? strtoull(at + sizeof key - 1, NULL, 10) : 0;
    free(text);
    return n;
}

Test(resume, sigkill_at_random_moments_then_resume_gives_the_same_bytes)
{
    const char *given = getenv("MR_FAULT_SEED"), *scale = getenv("MR_TEST_SCALE");
    unsigned seed = given ? (unsigned)strtoul(given, NULL, 10)
                          : (unsigned)time(NULL) ^ (unsigned)getpid() << 8;
    unsigned rng = seed;
    /* check-long's scale of 50 would be 1000 kills, some 20 minutes; 10 gives the
     * 200 it asks for. */
    int factor = scale && atoi(scale) > 0 ? atoi(scale) : 1;
    int target = 20 * (factor < 10 ? factor : 10);
    fprintf(stderr, "resume fault test: seed %u (MR_FAULT_SEED=%u replays it), %d kills\n",
            seed, seed, target);
    /* A killed mpirun leaves its session folder (8 MB) and shared memory
     * files behind: they go with the scratch folder, not /tmp and /dev/shm. */
    setenv("OMPI_MCA_orte_tmpdir_base", t.dir, 1);
    setenv("OMPI_MCA_btl_vader_backing_directory", t.dir, 1);
    run_reference(120);
    /* A rank killed inside MPI_Init can leave mpirun waiting for good:
     * start_seconds ends such an attempt. */
    mr_test_write_job(t.dir, "fault", RANKS(4) "start_seconds = 10\n" OFTEN);
    int kills = 0, cycles = 0, carried = 0;
    while (kills < target) {
        /* One cycle: the job from scratch, killed a few times, then let
         * finish.  Kills land from start-up (mpirun, MPI_Init, the model
         * load) to well into serving, with generations in flight. */
        int last = kills + 3 + rand_r(&rng) % 6;
        last = last < target ? last : target;
        for (bool first = true;; first = false) {
            pid_t pid = mr_test_spawn_moerun(t.dir, "fault.log", "run", "fault.ini",
                                             first ? "--force-new" : NULL, NULL);
            int code;
            bool done = mr_test_ended(pid, kills < last ? uniform(&rng, 0.1, 3.0) : 120, &code);
            /* A kill mid-generation: the resume goes on from its tokens. */
            carried += tokens_carried("fault.log") > 0;
            if (done) {
                char *log = log_of("fault.log");
                cr_assert_eq(code, 0, "seed %u, kill %d: exit %d\n%s", seed, kills, code, log);
                free(log);
                break;
            }
            /* A rank at any moment, start-up included, or the whole job. */
            if (rand_r(&rng) % 2 && kill_a_rank(pid, &rng)) {
                /* mpirun takes the job down when a rank dies. */
                if (!mr_test_ended(pid, 30, &code)) {
                    mr_test_kill_tree(pid);
                    char *log = log_of("fault.log");
                    cr_assert_fail("seed %u: the job ran on 30 s after a rank died:\n%s", seed,
                                   log);
                }
            } else {
                mr_test_kill_tree(pid);
            }
            kills++;
        }
        cycles++;
        mr_test_assert_same_output(t.dir, "ref", "fault");
        assert_each_id_once("fault", 120, 2);
    }
    fprintf(stderr, "resume fault test: seed %u: %d kills in %d runs, all the same bytes; %d "
                    "resumes went on from the tokens of requests in flight\n",
            seed, kills, cycles, carried);
}

/* Waits until runs/NAME is serving: its part files appear. */
static void wait_serving(const char *name, pid_t pid)
{
    char *parts = in_dir("runs/%s/parts", name);
    double until = mr_test_seconds() + 60;
    int code;
    while (access(parts, F_OK) != 0 && mr_test_seconds() < until) {
        cr_assert(!mr_test_ended(pid, 0, &code), "%s ended (exit %d) before serving", name, code);
        usleep(5000);
    }
    cr_assert_eq(access(parts, F_OK), 0, "%s never started serving", name);
    free(parts);
}

/* Runs the job with `extra` as NAME and stops it with SIGTERM once it
 * serves; returns the seconds from the signal to the end. */
static double stop_a_run(const char *name, const char *extra)
{
    char ini[256], log[256];
    snprintf(ini, sizeof ini, "%s.ini", name);
    snprintf(log, sizeof log, "%s.log", name);
    mr_test_write_job(t.dir, name, extra);
    pid_t pid = mr_test_spawn_moerun(t.dir, log, "run", ini, NULL);
    wait_serving(name, pid);
    usleep(150000);
    double t0 = mr_test_seconds();
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int code;
    bool done = mr_test_ended(pid, 60, &code);
    double took = mr_test_seconds() - t0;
    char *text = log_of(log);
    if (!done)
        mr_test_kill_tree(pid);
    cr_assert(done, "%s ran on 60 s after SIGTERM:\n%s", name, text);
    cr_assert_eq(code, 4, "%s: exit %d after SIGTERM, not 4:\n%s", name, code, text);
    cr_assert(strstr(text, "stopped by SIGTERM"), "%s", text);
    free(text);
    return took;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

Test(resume, sigterm_stops_within_the_grace_and_loses_no_completed_request)
{
    run_reference(240);
    /* The default interval: the stop's is the only checkpoint mid-run. */
    double took = stop_a_run("term", RANKS(4) "[checkpoint]\ngrace_seconds = 5\n");
    cr_assert_lt(took, 5.0, "the stop took %.2f s, beyond the 5 s grace", took);
    /* Every line written to a part file before the stop is committed. */
    char *ckpt = in_dir("runs/term/checkpoint"), warning[512], msg[1024];
    mr_checkpoint_state st = {0};
    cr_assert_eq(mr_checkpoint_load_latest(ckpt, &st, warning, sizeof warning, msg, sizeof msg),
                 MR_CHECKPOINT_OK, "%s", msg);
    cr_assert_gt(st.counters.requests_ok, 0, "nothing was committed before the stop");
    cr_assert_lt(st.counters.requests_ok, 240, "the job finished before the stop");
    for (size_t i = 0; i < st.n_shards; i++) {
        char *results = in_dir("runs/term/parts/shard-%05zu.results.jsonl", i);
        char *errors = in_dir("runs/term/parts/shard-%05zu.errors.jsonl", i);
        cr_assert_eq(file_size(results), st.shards[i].results_offset, "%s", results);
        cr_assert_eq(file_size(errors), st.shards[i].errors_offset, "%s", errors);
        free(results);
        free(errors);
    }
    mr_checkpoint_state_free(&st);
    free(ckpt);
    cr_assert_eq(moerun("resume", "runs/term", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "resuming from checkpoint"), "%s", t.out);
    assert_complete("term", 240);
}

Test(resume, a_4_rank_run_resumes_on_2_ranks_and_a_2_rank_run_on_3)
{
    run_reference(120);
    stop_a_run("four", RANKS(4));
    cr_assert_eq(moerun("resume", "runs/four", "--set", "parallel.ranks=2", NULL), 0, "%s%s",
                 t.out, t.err);
    cr_assert(strstr(t.out, "starting 2 ranks"), "%s", t.out);
    cr_assert(strstr(t.out, "eplb: static placement from the checkpoint's load window"), "%s",
              t.out);
    assert_complete("four", 120);

    stop_a_run("two", RANKS(2));
    cr_assert_eq(moerun("resume", "runs/two", "--set", "parallel.ranks=3", NULL), 0, "%s%s",
                 t.out, t.err);
    cr_assert(strstr(t.out, "starting 3 ranks"), "%s", t.out);
    assert_complete("two", 120);
}

/* On the "fenced" backend, where the host faults on backend memory outside
 * ops: a stopped run resumes on another number of ranks (experts placed
 * anew, the checkpoint's counts restored) and gives the cpu backend's
 * bytes. */
Test(resume, a_fenced_run_resumes_on_3_ranks_with_the_same_bytes)
{
    run_reference(120);
    stop_a_run("fenced", RANKS(2) "[engine]\nbackend = fenced\n");
    cr_assert_eq(moerun("resume", "runs/fenced", "--set", "parallel.ranks=3", NULL), 0, "%s%s",
                 t.out, t.err);
    cr_assert(strstr(t.out, "starting 3 ranks"), "%s", t.out);
    char *path = in_dir("runs/fenced/job.ini"), *job = mr_test_read(path, NULL);
    cr_assert(job && strstr(job, "\nbackend = fenced\n"), "%s: %s", path, job);
    free(job);
    free(path);
    assert_complete("fenced", 120);
}

Test(resume, a_rank_that_dies_is_restarted_from_the_last_checkpoint)
{
    run_reference(120);
    mr_test_write_job(t.dir, "sup", RANKS(4) OFTEN);
    pid_t pid = mr_test_spawn_moerun(t.dir, "sup.log", "run", "sup.ini", "--max-restarts", "2",
                                     NULL);
    wait_serving("sup", pid);
    usleep(300000);
    unsigned seed = 1;
    cr_assert(kill_a_rank(pid, &seed));
    int code;
    bool done = mr_test_ended(pid, 120, &code);
    char *log = log_of("sup.log");
    if (!done)
        mr_test_kill_tree(pid);
    cr_assert(done && code == 0, "exit %d:\n%s", code, log);
    cr_assert(strstr(log, "a rank failed; restarting from the last checkpoint (restart 1 of 2)"),
              "%s", log);
    cr_assert(strstr(log, "resuming from checkpoint"), "%s", log);
    free(log);
    assert_complete("sup", 120);
}

Test(resume, a_changed_job_is_refused_with_what_changed_and_force_new_starts_over)
{
    mr_test_write_requests(t.dir, 6);
    cr_assert_eq(mr_test_run_job(t.dir, "job", RANKS(1), &t.out, &t.err), 0, "%s%s", t.out, t.err);
    cr_assert_eq(moerun("run", "job.ini", "--set", "generation.max_tokens=13", NULL), 3,
                 "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "holds a checkpoint of another job; what changed:"), "%s", t.err);
    cr_assert(strstr(t.err, "job key [generation] max_tokens changed 12 → 13"), "%s", t.err);
    cr_assert(strstr(t.err, "--force-new"), "%s", t.err);
    /* Keys that do not change results may. */
    cr_assert_eq(moerun("run", "job.ini", "--set", "parallel.ranks=2", NULL), 0, "%s%s", t.out,
                 t.err);
    cr_assert(strstr(t.out, "already finished"), "%s", t.out);
    cr_assert_eq(moerun("run", "job.ini", "--set", "generation.max_tokens=13", "--force-new",
                        NULL),
                 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "planned into"), "%s", t.out);
    cr_assert(strstr(t.out, "served 6 requests"), "%s", t.out);
}

/* The newest generation in runs/NAME/checkpoint, read whole. */
static char *newest_generation(const char *name, size_t *len, char **path)
{
    char *ckpt = in_dir("runs/%s/checkpoint", name), msg[256];
    mr_checkpoint_info *list;
    size_t n;
    cr_assert_eq(mr_checkpoint_list(ckpt, &list, &n, msg, sizeof msg), MR_CHECKPOINT_OK, "%s",
                 msg);
    cr_assert_gt(n, 0);
    *path = in_dir("runs/%s/checkpoint/%s", name, list[0].name);
    free(list);
    free(ckpt);
    char *bytes = mr_test_read(*path, len);
    cr_assert(bytes);
    return bytes;
}

static void write_bytes(const char *path, const char *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

Test(resume, damaged_and_foreign_checkpoints_are_named_through_the_cli)
{
    mr_test_write_requests(t.dir, 6);
    cr_assert_eq(mr_test_run_job(t.dir, "job", RANKS(1), &t.out, &t.err), 0, "%s%s", t.out, t.err);
    char *results = in_dir("runs/job/results.jsonl"), *before = mr_test_read(results, NULL);
    /* A flipped bit: the older generation is used, with a warning. */
    size_t len;
    char *path, *bytes = newest_generation("job", &len, &path);
    bytes[len / 2] ^= 0x10;
    write_bytes(path, bytes, len);
    free(bytes);
    free(path);
    cr_assert_eq(moerun("status", "runs/job", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "damaged: "), "%s", t.out);
    cr_assert_eq(moerun("run", "job.ini", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "is damaged ("), "%s", t.err);
    cr_assert(strstr(t.err, "progress after it will be redone"), "%s", t.err);
    char *after = mr_test_read(results, NULL);
    cr_assert_str_eq(after, before, "the results changed when served again");
    free(after);
    free(before);
    free(results);
    /* Another format version: refused, naming both. */
    bytes = newest_generation("job", &len, &path);
    bytes[8] = MR_CHECKPOINT_VERSION + 1;
    uint32_t crc = (uint32_t)crc32(0, (const unsigned char *)bytes, 52);
    for (int i = 0; i < 4; i++)
        bytes[52 + i] = (char)(crc >> (8 * i));
    write_bytes(path, bytes, len);
    free(bytes);
    free(path);
    cr_assert_eq(moerun("run", "job.ini", NULL), 3, "%s%s", t.out, t.err);
    char want[128];
    snprintf(want, sizeof want, "was written in format version %d, but this moerun reads "
             "version %d", MR_CHECKPOINT_VERSION + 1, MR_CHECKPOINT_VERSION);
    cr_assert(strstr(t.err, want), "%s", t.err);
    /* Every generation truncated: nothing to resume from, each named. */
    char *ckpt = in_dir("runs/job/checkpoint"), msg[256];
    mr_checkpoint_info *list;
    size_t n;
    cr_assert_eq(mr_checkpoint_list(ckpt, &list, &n, msg, sizeof msg), MR_CHECKPOINT_OK);
    for (size_t i = 0; i < n; i++) {
        char *gen = in_dir("runs/job/checkpoint/%s", list[i].name);
        cr_assert_eq(truncate(gen, 10), 0);
        free(gen);
    }
    free(list);
    free(ckpt);
    cr_assert_eq(moerun("resume", "runs/job", NULL), 3, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "no usable checkpoint in"), "%s", t.err);
    cr_assert(strstr(t.err, "truncated to 10 bytes"), "%s", t.err);
    cr_assert_eq(moerun("run", "job.ini", "--force-new", NULL), 0, "%s%s", t.out, t.err);
}

Test(resume, a_stopped_run_moves_through_a_bundle_and_a_malicious_bundle_is_refused)
{
    run_reference(120);
    stop_a_run("move", RANKS(2));
    cr_assert_eq(moerun("checkpoint", "export", "runs/move", "move.tar.zst", NULL), 0, "%s%s",
                 t.out, t.err);
    cr_assert_eq(moerun("checkpoint", "import", "move.tar.zst", "runs/moved", NULL), 0, "%s%s",
                 t.out, t.err);
    cr_assert_eq(moerun("resume", "runs/moved", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "resuming from checkpoint"), "%s", t.out);
    assert_complete("moved", 120);

    /* A bundle whose `parts` is a link out of the run folder. */
    mr_test_writef(t.dir, "evil/plan.json", "{}");
    char *evil = in_dir("evil"), *link = in_dir("evil/parts"), *command = NULL;
    cr_assert_eq(symlink("/etc", link), 0);
    cr_assert(asprintf(&command, "tar --zstd -cf %s/evil.tar.zst -C %s plan.json parts", t.dir,
                       evil) > 0);
    cr_assert_eq(system(command), 0, "%s", command);
    cr_assert_eq(moerun("checkpoint", "import", "evil.tar.zst", "runs/evil", NULL), 3, "%s%s",
                 t.out, t.err);
    cr_assert(strstr(t.err, "entry 'parts' is a symbolic link (to '/etc')"), "%s", t.err);
    char *target = in_dir("runs/evil");
    cr_assert_neq(access(target, F_OK), 0, "a refused bundle left %s", target);
    free(target);
    free(command);
    free(link);
    free(evil);
}

/* requests.jsonl with every line padded to LINE_BYTES by an ignored
 * `metadata` field: 122 lines, 183 KiB, any two of them swappable. */
#define LINE_BYTES 1536
static char *pad_requests(size_t *len)
{
    char *path = in_dir("requests.jsonl"), *text = mr_test_read(path, NULL);
    cr_assert(text);
    mr_buf out = {0};
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        static const char head[] = "{\"metadata\": {\"pad\": \"", tail[] = "\"}, ";
        size_t rest = strlen(line + 1), fill = LINE_BYTES - 1 - (sizeof head - 1) -
                                                (sizeof tail - 1) - rest;
        cr_assert_lt(rest, LINE_BYTES / 2);
        mr_buf_append(&out, head, sizeof head - 1);
        for (size_t i = 0; i < fill; i++)
            mr_buf_append(&out, "x", 1);
        mr_buf_append(&out, tail, sizeof tail - 1);
        mr_buf_append(&out, line + 1, rest);
        mr_buf_append(&out, "\n", 1);
    }
    cr_assert_eq(out.len % LINE_BYTES, 0);
    free(mr_test_write(t.dir, "requests.jsonl", out.data, out.len));
    free(text);
    free(path);
    *len = out.len;
    return out.data;
}

/* "shard N (lines A–B)" for the shard of runs/NAME/plan.json holding `line`. */
static void shard_of_line(const char *name, int line, char *buf, size_t len)
{
    char *path = in_dir("runs/%s/plan.json", name), *text = mr_test_read(path, NULL);
    cJSON *plan = cJSON_Parse(text), *shard;
    cJSON_ArrayForEach(shard, cJSON_GetObjectItem(plan, "shards"))
    {
        int first = cJSON_GetObjectItem(shard, "first_line")->valueint;
        int lines = cJSON_GetObjectItem(shard, "lines")->valueint;
        if (first <= line && line < first + lines)
            snprintf(buf, len, "requests.jsonl changed in shard %d (lines %d–%d)",
                     cJSON_GetObjectItem(shard, "id")->valueint, first, first + lines - 1);
    }
    cJSON_Delete(plan);
    free(text);
    free(path);
}

Test(resume, a_same_size_edit_in_the_middle_of_an_input_is_refused_naming_the_shard)
{
    mr_test_write_requests(t.dir, 120);
    size_t len;
    char *original = pad_requests(&len);
    cr_assert_gt(len, 128 * 1024);
    cr_assert_eq(mr_test_run_job(t.dir, "ref", RANKS(1), &t.out, &t.err), 0, "%s%s", t.out, t.err);
    stop_a_run("edit", RANKS(2));
    /* Lines 70 and 75 swapped: same size, far from both ends (the old
     * fingerprint read only the first and last 64 KiB). */
    char *swapped = malloc(len);
    memcpy(swapped, original, len);
    memcpy(swapped + 69 * LINE_BYTES, original + 74 * LINE_BYTES, LINE_BYTES);
    memcpy(swapped + 74 * LINE_BYTES, original + 69 * LINE_BYTES, LINE_BYTES);
    cr_assert_lt(74 * LINE_BYTES, (int)len - 65536);
    free(mr_test_write(t.dir, "requests.jsonl", swapped, len));
    cr_assert_eq(moerun("resume", "runs/edit", NULL), 3, "%s%s", t.out, t.err);
    char want[256] = "";
    shard_of_line("edit", 70, want, sizeof want);
    cr_assert(strstr(t.err, "holds a checkpoint of another job; what changed:"), "%s", t.err);
    cr_assert(strstr(t.err, want), "no '%s' in:\n%s", want, t.err);
    /* Put back, it goes on to the same bytes as a run that never stopped. */
    free(mr_test_write(t.dir, "requests.jsonl", original, len));
    cr_assert_eq(moerun("resume", "runs/edit", NULL), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "resuming from checkpoint"), "%s", t.out);
    assert_complete("edit", 120);
    free(swapped);
    free(original);
}
