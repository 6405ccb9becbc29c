/*
 * Files of the run folder.  Everything moerun writes there is written
 * whole or not at all: a reader (or a resumed run) never sees half a file.
 */
/* nftw is an X/Open function */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner/runner.h"

int mr_runner_mkdir_p(const char *path, char *err, size_t errlen)
{
    char *copy = strdup(path);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return MR_JOBS_ENOMEM;
    }
    int rc = MR_JOBS_OK;
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create folder %s: %s", copy, strerror(errno));
            rc = MR_JOBS_EIO;
            break;
        }
        *p = saved;
        if (!saved)
            break;
    }
    struct stat st;
    if (rc == MR_JOBS_OK && (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(err, errlen, "%s exists and is not a folder", path);
        rc = MR_JOBS_EIO;
    }
    free(copy);
    return rc;
}

int mr_runner_sync_folder(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* The rename is durable only once the folder that holds the name is
 * synced too. */
static int sync_parent(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int rc = mr_runner_sync_folder(slash ? dir : ".");
    free(dir);
    return rc;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int mr_runner_remove_tree(const char *path)
{
    /* FTW_PHYS: a link is removed, never followed. */
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 || errno == ENOENT)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun: removing %s: %s\n", path, strerror(errno));
    return MR_EXIT_FAILED;
}

int mr_runner_write_atomic(const char *path, const void *data, size_t len, char *err,
                           size_t errlen)
{
    size_t tmp_len = strlen(path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        snprintf(err, errlen, "out of memory");
        return MR_JOBS_ENOMEM;
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    const char *what = "create";
    if (fd >= 0) {
        what = "write";
        const char *p = data;
        size_t left = len;
        while (left) {
            ssize_t n = write(fd, p, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            p += n;
            left -= (size_t)n;
        }
        if (!left) {
            what = "sync";
            if (fsync(fd) == 0)
                what = NULL;
        }
        if (close(fd) != 0 && !what)
            what = "close";
    }
    if (!what) {
        what = "rename";
        if (rename(tmp, path) == 0)
            what = sync_parent(path) == 0 ? NULL : "sync the folder of";
    }
    int rc = MR_JOBS_OK;
    if (what) {
        snprintf(err, errlen, "cannot %s %s: %s", what, what[0] == 'r' ? tmp : path,
                 strerror(errno));
        unlink(tmp);
        rc = MR_JOBS_EIO;
    }
    free(tmp);
    return rc;
}

int mr_runner_read_file(const char *path, mr_buf *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return MR_JOBS_EIO;
    }
    char chunk[1 << 16];
    size_t n;
    int rc = MR_JOBS_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (mr_buf_append(out, chunk, n) != MR_JOBS_OK) {
            snprintf(err, errlen, "out of memory reading %s", path);
            rc = MR_JOBS_ENOMEM;
            break;
        }
    if (rc == MR_JOBS_OK && ferror(f)) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = MR_JOBS_EIO;
    }
    fclose(f);
    return rc;
}

int mr_runner_write_failed(const char *path, int err)
{
    if (err != ENOSPC && err != EDQUOT) {
        fprintf(stderr, "moerun run: cannot write %s: %s\n", path, strerror(err));
        return MR_EXIT_FAILED;
    }
    const char *slash = strrchr(path, '/');
    int folder = slash ? (int)(slash - path) : 1;
    fprintf(stderr,
            "moerun run: cannot write %s: %s: the disk that holds %.*s is full%s.  Nothing "
            "committed is lost: free space there, then resume the run (moerun resume).\n",
            path, strerror(err), folder, slash ? path : ".",
            err == EDQUOT ? " (over quota)" : "");
    return MR_EXIT_DISK_FULL;
}
