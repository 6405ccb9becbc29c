#define _GNU_SOURCE
#include "tests/common/fixture.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *mr_test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/moerun-test-XXXXXX", base && *base ? base : "/tmp") > 0);
    cr_assert(mkdtemp(path), "mkdtemp %s", path);
    return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void mr_test_rmtree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(path, 0777);
        *p = '/';
    }
}

char *mr_test_write(const char *dir, const char *name, const char *data, size_t len)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    make_parents(path);
    if (len == (size_t)-1)
        len = strlen(data);
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
    return path;
}

void mr_test_writef(const char *dir, const char *name, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&text, fmt, ap) >= 0);
    va_end(ap);
    free(mr_test_write(dir, name, text, (size_t)-1));
    free(text);
}

char *mr_test_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    mr_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        cr_assert_eq(mr_buf_append(&b, chunk, n), MR_JOBS_OK);
    fclose(f);
    if (len)
        *len = b.len;
    return b.data ? b.data : strdup("");
}

const char *mr_test_tiny_model(void)
{
    const char *path = getenv("MR_TINY_MODEL");
    cr_assert(path && *path, "MR_TINY_MODEL is not set: run the tests with `make test`, "
                             "which makes the tiny model");
    return path;
}

mr_model *mr_test_load_tiny_model(int threads)
{
    char err[1024];
    mr_model *model;
    mr_model_options mo = {.backend = "cpu", .threads = threads};
    cr_assert_eq(mr_model_load(mr_test_tiny_model(), &mo, &model, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    return model;
}

void mr_test_make_model(const char *dir)
{
    char *link = NULL;
    cr_assert(asprintf(&link, "%s/model", dir) > 0);
    cr_assert_eq(symlink(mr_test_tiny_model(), link), 0, "symlink %s: %s", link, strerror(errno));
    free(link);
}

int mr_test_load_job(mr_job *job, const char *dir, const char *ini,
                     const mr_job_override *overrides, size_t n_overrides, char *err,
                     size_t errlen)
{
    char *path = mr_test_write(dir, "job.ini", ini, (size_t)-1);
    int rc = mr_job_load(job, path, overrides, n_overrides, err, errlen);
    free(path);
    return rc;
}

/* Drain a pipe into a NUL-terminated string. */
static char *drain(int fd)
{
    mr_buf b = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        cr_assert_eq(mr_buf_append(&b, chunk, (size_t)n), MR_JOBS_OK);
    close(fd);
    return b.data ? b.data : strdup("");
}

/* Forks $MOERUN with `first` and the arguments after it in cwd, its
 * output into out_fd and err_fd and /dev/null as its input. */
static pid_t spawn(const char *cwd, int out_fd, int err_fd, const char *first, va_list ap)
{
    const char *moerun = getenv("MOERUN");
    cr_assert(moerun, "MOERUN must name the moerun binary (make test sets it)");
    const char *argv[64] = {moerun};
    size_t argc = 1;
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        cr_assert(argc < 63);
        argv[argc++] = a;
    }
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        int null_fd = open("/dev/null", O_RDONLY);
        dup2(null_fd, 0);
        if (cwd && chdir(cwd) != 0)
            _exit(127);
        execv(moerun, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int mr_test_moerun(const char *cwd, char **out, char **err, const char *arg, ...)
{
    char out_path[] = "/tmp/moerun-out-XXXXXX", err_path[] = "/tmp/moerun-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    cr_assert(out_fd >= 0 && err_fd >= 0);
    unlink(out_path);
    unlink(err_path);
    va_list ap;
    va_start(ap, arg);
    pid_t pid = spawn(cwd, out_fd, err_fd, arg, ap);
    va_end(ap);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    lseek(out_fd, 0, SEEK_SET);
    lseek(err_fd, 0, SEEK_SET);
    char *o = drain(out_fd), *e = drain(err_fd);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    cr_assert(WIFEXITED(status), "moerun died of signal %d", WTERMSIG(status));
    return WEXITSTATUS(status);
}

pid_t mr_test_spawn_moerun(const char *cwd, const char *log, const char *arg, ...)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", cwd, log) > 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0666);
    cr_assert(fd >= 0, "cannot create %s", path);
    free(path);
    va_list ap;
    va_start(ap, arg);
    pid_t pid = spawn(cwd, fd, fd, arg, ap);
    va_end(ap);
    close(fd);
    return pid;
}
