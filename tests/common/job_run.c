#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

void mr_test_scratch_open(mr_test_scratch *t)
{
    *t = (mr_test_scratch){.dir = mr_test_tmpdir()};
    mr_test_make_model(t->dir);
}

void mr_test_scratch_close(mr_test_scratch *t)
{
    mr_test_rmtree(t->dir);
    free(t->dir);
    free(t->out);
    free(t->err);
    *t = (mr_test_scratch){0};
}

void mr_test_write_requests(const char *dir, int n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/requests.jsonl", getenv("MR_SOURCE_DIR"));
    size_t len;
    char *all = mr_test_read(path, &len);
    cr_assert(all, "cannot read %s", path);
    char *end = all;
    for (int i = 0; i < n && end; i++)
        end = strchr(end, '\n') + 1;
    mr_buf b = {0};
    size_t half = (size_t)(end - all) / 2;
    while (all[half] != '\n')
        half++;
    mr_buf_append(&b, all, half + 1);
    static const char bad[] = "{\"custom_id\": \"broken\", \"method\": \n";
    mr_buf_append(&b, bad, sizeof bad - 1);
    mr_buf_append(&b, all + half + 1, (size_t)(end - all) - half - 1);
    mr_buf_append(&b, all, (size_t)(strchr(all, '\n') - all) + 1);
    free(mr_test_write(dir, "requests.jsonl", b.data, b.len));
    mr_buf_free(&b);
    free(all);
}

void mr_test_write_job(const char *dir, const char *name, const char *extra)
{
    char file[256];
    snprintf(file, sizeof file, "%s.ini", name);
    mr_test_writef(dir, file,
                   "[job]\nname = same\nrun_dir = runs/%s\n[model]\npath = model\n[input]\n"
                   "files = requests.jsonl\n[generation]\nmax_tokens = 12\nseed = 3\n"
                   "[engine]\nmax_batch_tokens = 128\nmax_sequences = 16\n%s",
                   name, extra);
}

int mr_test_run_job(const char *dir, const char *name, const char *extra, char **out,
                    char **err)
{
    char file[256];
    snprintf(file, sizeof file, "%s.ini", name);
    mr_test_write_job(dir, name, extra);
    free(*out);
    free(*err);
    return mr_test_moerun(dir, out, err, "run", file, NULL);
}

int mr_test_children(pid_t parent, pid_t *kids, int cap)
{
    int n = 0;
    DIR *proc = opendir("/proc");
    struct dirent *e;
    while (proc && (e = readdir(proc)) && n < cap) {
        char path[300], text[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[len] = '\0';
        char *close = strrchr(text, ')');
        int ppid;
        if (close && sscanf(close + 2, "%*c %d", &ppid) == 1 && ppid == parent)
            kids[n++] = (pid_t)atoi(e->d_name);
    }
    if (proc)
        closedir(proc);
    return n;
}

double mr_test_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool mr_test_ended(pid_t pid, double limit, int *code)
{
    double until = mr_test_seconds() + limit;
    int status;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) {
            *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            return true;
        }
        if (mr_test_seconds() >= until)
            return false;
        usleep(5000);
    }
}

int mr_test_tree(pid_t pid, pid_t *pids, int cap)
{
    int n = 1;
    pids[0] = pid;
    for (int i = 0; i < n && n < cap; i++)
        n += mr_test_children(pids[i], pids + n, cap - n);
    return n;
}

void mr_test_kill_tree(pid_t pid)
{
    pid_t pids[64];
    int n = mr_test_tree(pid, pids, 64), code;
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    cr_assert(mr_test_ended(pid, 30, &code));
}

/* A run's output file with the digits of every "created" zeroed: the one
 * thing a rerun may change. */
static char *output_of(const char *dir, const char *name, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/runs/%s/%s", dir, name, file);
    size_t len;
    char *text = mr_test_read(path, &len);
    cr_assert(text, "no %s", path);
    for (char *at = text; (at = strstr(at, "\"created\":"));) {
        at += strlen("\"created\":");
        while (*at >= '0' && *at <= '9')
            *at++ = '0';
    }
    return text;
}

void mr_test_output_digest(const char *dir, const char *name, char hex[33])
{
    static const char *const files[] = {"results.jsonl", "errors.jsonl"};
    XXH3_state_t *state = XXH3_createState();
    cr_assert(state);
    XXH3_128bits_reset(state);
    size_t dir_len = strlen(dir);
    for (int i = 0; i < 2; i++) {
        char *text = output_of(dir, name, files[i]);
        /* Error lines name the input by its path and take their ids from
         * it: hash them without the test's scratch folder, which differs
         * from run to run. */
        for (char *at = text; (at = strstr(at, "\"id\":\"batch_req_"));)
            for (at += strlen("\"id\":\"batch_req_"); *at && *at != '"'; at++)
                *at = '0';
        const char *from = text;
        for (const char *at; (at = strstr(from, dir)); from = at + dir_len)
            XXH3_128bits_update(state, from, (size_t)(at - from));
        XXH3_128bits_update(state, from, strlen(from) + 1); /* the NUL parts the files */
        free(text);
    }
    XXH128_hash_t h = XXH3_128bits_digest(state);
    XXH3_freeState(state);
    snprintf(hex, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
}

void mr_test_assert_same_output(const char *dir, const char *a, const char *b)
{
    static const char *const files[] = {"results.jsonl", "errors.jsonl"};
    for (int i = 0; i < 2; i++) {
        char *x = output_of(dir, a, files[i]), *y = output_of(dir, b, files[i]);
        cr_assert_str_eq(x, y, "%s of %s and %s differ", files[i], a, b);
        free(x);
        free(y);
    }
}
