/* File system helpers the store and the bundles share. */
/* nftw is an X/Open function */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/checkpoint_internal.h"

int mr_checkpoint_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

int mr_checkpoint_fail_errno(char *err, size_t errlen, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < errlen)
        snprintf(err + n, errlen - (size_t)n, ": %s", strerror(saved));
    if (saved == ENOSPC || saved == EDQUOT) {
        size_t used = strlen(err);
        snprintf(err + used, errlen - used, " (the disk is full)");
        return MR_CHECKPOINT_ENOSPC;
    }
    return saved == ENOMEM ? MR_CHECKPOINT_ENOMEM : MR_CHECKPOINT_EIO;
}

void mr_checkpoint_vappendf(char *buf, size_t buflen, const char *fmt, va_list ap)
{
    size_t used = strlen(buf);
    if (used + 1 < buflen)
        vsnprintf(buf + used, buflen - used, fmt, ap);
}

void mr_checkpoint_appendf(char *buf, size_t buflen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mr_checkpoint_vappendf(buf, buflen, fmt, ap);
    va_end(ap);
}

char *mr_checkpoint_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *path = malloc(a + b + 2);
    if (path) {
        memcpy(path, dir, a);
        path[a] = '/';
        memcpy(path + a + 1, name, b + 1);
    }
    return path;
}

int mr_checkpoint_mkdir_p(const char *dir, char *err, size_t errlen)
{
    char *path = strdup(dir);
    if (!path)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    int rc = MR_CHECKPOINT_OK;
    for (char *p = path + 1; rc == MR_CHECKPOINT_OK; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            rc = mr_checkpoint_fail_errno(err, errlen, "cannot create folder %s", path);
        *p = c;
        if (c == '\0')
            break;
    }
    free(path);
    return rc;
}

int mr_checkpoint_fsync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot open folder %s", dir);
    int rc = MR_CHECKPOINT_OK;
    if (fsync(fd) != 0)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot sync folder %s", dir);
    close(fd);
    return rc;
}

int mr_checkpoint_read_file(const char *path, char **data, size_t *len, char *err,
                            size_t errlen)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot open %s", path);
    struct stat st;
    int rc = MR_CHECKPOINT_OK;
    if (fstat(fd, &st) != 0) {
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot stat %s", path);
    } else if (!(*data = malloc((size_t)st.st_size + 1))) {
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory reading %s",
                                path);
    }
    while (rc == MR_CHECKPOINT_OK && *len < (size_t)st.st_size) {
        ssize_t n = read(fd, *data + *len, (size_t)st.st_size - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? mr_checkpoint_fail_errno(err, errlen, "cannot read %s", path)
                       : mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EIO,
                                            "%s shrank while being read", path);
        else
            *len += (size_t)n;
    }
    close(fd);
    if (rc != MR_CHECKPOINT_OK) {
        free(*data);
        *data = NULL;
        *len = 0;
    } else {
        (*data)[*len] = '\0';
    }
    return rc;
}

int mr_checkpoint_split_path(const char *path, char **parent, char **name)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t cut = len;
    while (cut > 0 && path[cut - 1] != '/')
        cut--;
    *parent = cut == 0 ? strdup(".") : cut == 1 ? strdup("/") : strndup(path, cut - 1);
    *name = strndup(path + cut, len - cut);
    return *parent && *name ? MR_CHECKPOINT_OK : MR_CHECKPOINT_ENOMEM;
}

int mr_checkpoint_temp_open(const char *path, char **tmp, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (!(*tmp = malloc(strlen(path) + sizeof MR_CHECKPOINT_TMP)))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    sprintf(*tmp, "%s" MR_CHECKPOINT_TMP, path);
    *fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    return *fd < 0 ? mr_checkpoint_fail_errno(err, errlen, "cannot create %s", *tmp)
                   : MR_CHECKPOINT_OK;
}

int mr_checkpoint_temp_commit(int fd, char *tmp, const char *path, int rc, char *err,
                              size_t errlen)
{
    if (rc == MR_CHECKPOINT_OK && fsync(fd) != 0)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot sync %s", tmp);
    if (fd >= 0 && close(fd) != 0 && rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot close %s", tmp);
    if (rc == MR_CHECKPOINT_OK && rename(tmp, path) != 0)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot rename %s to %s", tmp, path);
    char *parent = NULL, *name = NULL;
    if (rc == MR_CHECKPOINT_OK && mr_checkpoint_split_path(path, &parent, &name) != 0)
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_fsync_dir(parent, err, errlen);
    else if (fd >= 0)
        unlink(tmp);
    free(parent);
    free(name);
    free(tmp);
    return rc;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void mr_checkpoint_rmtree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int not_dot(const struct dirent *d)
{
    return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

static int by_bytes(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int walk_below(const char *root, const char *rel, mr_checkpoint_walk_fn fn, void *user,
                      char *err, size_t errlen)
{
    char *dir = rel ? mr_checkpoint_join(root, rel) : strdup(root);
    if (!dir)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    struct dirent **names;
    int n = scandir(dir, &names, not_dot, by_bytes);
    int rc = n < 0 ? mr_checkpoint_fail_errno(err, errlen, "cannot read folder %s", dir)
                   : MR_CHECKPOINT_OK;
    for (int i = 0; i < n; i++) {
        if (rc == MR_CHECKPOINT_OK) {
            char *child = rel ? mr_checkpoint_join(rel, names[i]->d_name)
                              : strdup(names[i]->d_name);
            char *full = child ? mr_checkpoint_join(root, child) : NULL;
            struct stat st;
            if (!full)
                rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
            else if (lstat(full, &st) != 0)
                rc = mr_checkpoint_fail_errno(err, errlen, "cannot stat %s", full);
            else if ((rc = fn(child, full, &st, user, err, errlen)) == 0 && S_ISDIR(st.st_mode))
                rc = walk_below(root, child, fn, user, err, errlen);
            free(full);
            free(child);
        }
        free(names[i]);
    }
    if (n >= 0)
        free(names);
    free(dir);
    return rc;
}

int mr_checkpoint_walk(const char *root, mr_checkpoint_walk_fn fn, void *user, char *err,
                       size_t errlen)
{
    return walk_below(root, NULL, fn, user, err, errlen);
}
