/*
 * Bundles: a run folder as one tar + zstd file (libarchive), so a run can
 * move to another cluster.  Import trusts nothing in the bundle: every
 * entry is checked before it is written, and everything is unpacked into a
 * temporary folder that is renamed into place only when all went well.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/checkpoint_internal.h"

#define CHUNK (1 << 16)

/* A bundle unpacks to at most MAX_EXPANSION times its own size, plus
 * EXPANSION_SLACK for small ones.  A run folder compresses a few times
 * (its JSONL) or not at all (generations are zstd already); a
 * decompression bomb, thousands of times. */
#define MAX_EXPANSION 1000
#define EXPANSION_SLACK (16ULL << 20)

static bool is_temporary(const char *path)
{
    size_t len = strlen(path), tmp = strlen(MR_CHECKPOINT_TMP);
    return len >= tmp && strcmp(path + len - tmp, MR_CHECKPOINT_TMP) == 0;
}

/* What a file type is called in messages; NULL for the two a bundle holds. */
static const char *unbundled_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR: return NULL;
    case S_IFLNK: return "a symbolic link";
    case S_IFCHR:
    case S_IFBLK: return "a device";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    default: return "a special file";
    }
}

/* ------------------------------------------------------------------------
 * Export
 * ------------------------------------------------------------------------ */
typedef struct {
    struct archive *a;
    const char *bundle;
    dev_t skip_dev; /* the bundle file itself, when it lies in the run folder */
    ino_t skip_ino;
    char *buf;
} exporter;

/* libarchive's message for a failure on `a`, returning `code`. */
static int archive_failed(struct archive *a, const char *bundle, int code, char *err,
                          size_t errlen)
{
    return mr_checkpoint_fail(err, errlen, code, "bundle %s: %s", bundle,
                              archive_error_string(a) ? archive_error_string(a)
                                                      : "libarchive failed");
}

static int copy_into(exporter *x, const char *full, char *err, size_t errlen)
{
    int fd = open(full, O_RDONLY);
    if (fd < 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot open %s", full);
    int rc = MR_CHECKPOINT_OK;
    for (;;) {
        ssize_t n = read(fd, x->buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = mr_checkpoint_fail_errno(err, errlen, "cannot read %s", full);
        else if (n > 0 && archive_write_data(x->a, x->buf, (size_t)n) != n)
            rc = archive_failed(x->a, x->bundle, MR_CHECKPOINT_EIO, err, errlen);
        if (n <= 0 || rc != MR_CHECKPOINT_OK)
            break;
    }
    close(fd);
    return rc;
}

static int export_entry(const char *rel, const char *full, const struct stat *st, void *user,
                        char *err, size_t errlen)
{
    exporter *x = user;
    const char *kind = unbundled_kind(st->st_mode);
    if (kind)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s is %s: a bundle holds only files and folders, so move "
                                  "it out of the run folder",
                                  full, kind);
    if (S_ISREG(st->st_mode) &&
        (is_temporary(rel) || (st->st_dev == x->skip_dev && st->st_ino == x->skip_ino)))
        return MR_CHECKPOINT_OK;
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    archive_entry_set_pathname(e, rel);
    archive_entry_set_filetype(e, S_ISDIR(st->st_mode) ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, st->st_mode & 0777);
    archive_entry_set_size(e, S_ISREG(st->st_mode) ? st->st_size : 0);
    archive_entry_set_mtime(e, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    int rc = archive_write_header(x->a, e) == ARCHIVE_OK
                 ? MR_CHECKPOINT_OK
                 : archive_failed(x->a, x->bundle, MR_CHECKPOINT_EIO, err, errlen);
    archive_entry_free(e);
    if (rc == MR_CHECKPOINT_OK && S_ISREG(st->st_mode))
        rc = copy_into(x, full, err, errlen);
    return rc;
}

int mr_checkpoint_export(const char *run_dir, const char *bundle, char *err, size_t errlen)
{
    struct stat st;
    if (stat(run_dir, &st) != 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot export %s", run_dir);
    if (!S_ISDIR(st.st_mode))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "cannot export %s: not a folder", run_dir);
    exporter x = {.bundle = bundle};
    if (stat(bundle, &st) == 0) {
        x.skip_dev = st.st_dev;
        x.skip_ino = st.st_ino;
    }
    x.buf = malloc(CHUNK);
    x.a = archive_write_new();
    if (!x.buf || !x.a) {
        free(x.buf);
        archive_write_free(x.a);
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    }
    char *tmp;
    int fd;
    int rc = mr_checkpoint_temp_open(bundle, &tmp, &fd, err, errlen);
    if (rc == MR_CHECKPOINT_OK &&
        (archive_write_set_format_pax_restricted(x.a) != ARCHIVE_OK ||
         archive_write_add_filter_zstd(x.a) != ARCHIVE_OK ||
         archive_write_open_fd(x.a, fd) != ARCHIVE_OK))
        rc = archive_failed(x.a, bundle, MR_CHECKPOINT_EIO, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_walk(run_dir, export_entry, &x, err, errlen);
    if (archive_write_close(x.a) != ARCHIVE_OK && rc == MR_CHECKPOINT_OK)
        rc = archive_failed(x.a, bundle, MR_CHECKPOINT_EIO, err, errlen);
    archive_write_free(x.a);
    free(x.buf);
    return mr_checkpoint_temp_commit(fd, tmp, bundle, rc, err, errlen);
}

/* ------------------------------------------------------------------------
 * Import
 * ------------------------------------------------------------------------ */

/* Why the entry may not be unpacked, or NULL.  *name is its path with any
 * leading "./" taken off. */
static const char *refusal(struct archive_entry *e, const char **name, char *why,
                           size_t whylen)
{
    const char *path = archive_entry_pathname(e);
    if (!path || !*path)
        return "has no name";
    if (path[0] == '/')
        return "has an absolute path";
    for (const char *p = path; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return "climbs out of the target with '..'";
        p += len;
        p += *p == '/';
    }
    if (archive_entry_hardlink(e)) {
        snprintf(why, whylen, "is a hard link (to '%s')", archive_entry_hardlink(e));
        return why;
    }
    const char *kind = unbundled_kind(archive_entry_filetype(e));
    if (kind && archive_entry_symlink(e))
        snprintf(why, whylen, "is %s (to '%s')", kind, archive_entry_symlink(e));
    else if (kind)
        snprintf(why, whylen, "is %s", kind);
    if (kind)
        return why;
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    *name = strcmp(path, ".") == 0 ? "" : path;
    return NULL;
}

typedef struct {
    const char *bundle;
    const char *dir; /* the temporary folder, an absolute path without links */
    struct archive *in, *out;
    uint64_t limit;    /* bytes the bundle may unpack to */
    uint64_t declared; /* sizes the entries so far declare */
    uint64_t written;  /* bytes written so far */
} importer;

/* A bundle that cannot be read is bad input; a folder that cannot be
 * written is the system's failure. */
static int read_failed(const importer *im, char *err, size_t errlen)
{
    return archive_failed(im->in, im->bundle, MR_CHECKPOINT_EINVAL, err, errlen);
}

static int write_failed(const importer *im, char *err, size_t errlen)
{
    return archive_failed(im->out, im->bundle, MR_CHECKPOINT_EIO, err, errlen);
}

static int too_big(const importer *im, const char *path, char *err, size_t errlen)
{
    return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                              "bundle %s refused: entry '%s' takes it past %" PRIu64
                              " bytes unpacked, %d times its size plus %llu MiB; a run folder "
                              "compresses far less (a decompression bomb?)",
                              im->bundle, path, im->limit, MAX_EXPANSION,
                              EXPANSION_SLACK >> 20);
}

static int unpack_entry(importer *im, struct archive_entry *e, char *err, size_t errlen)
{
    const char *name = NULL;
    char why[PATH_MAX + 64];
    const char *no = refusal(e, &name, why, sizeof why);
    const char *path = archive_entry_pathname(e);
    if (no)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "bundle %s refused: entry '%s' %s; a bundle holds only files "
                                  "and folders inside the run folder",
                                  im->bundle, path ? path : "", no);
    if (!*name)
        return MR_CHECKPOINT_OK; /* the run folder itself */
    /* Refused by the size its header declares, before a byte of it is
     * written; and by what is written, should libarchive hand out more. */
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0)
        im->declared += (uint64_t)archive_entry_size(e);
    if (im->declared > im->limit)
        return too_big(im, path, err, errlen);
    char *full = mr_checkpoint_join(im->dir, name);
    if (!full)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    archive_entry_set_pathname(e, full);
    free(full);
    /* Whatever the bundle says, the owner can read and clean up the run. */
    bool dir = archive_entry_filetype(e) == AE_IFDIR;
    archive_entry_set_perm(e, (archive_entry_perm(e) & 0777) | (dir ? 0700 : 0600));
    if (archive_write_header(im->out, e) != ARCHIVE_OK)
        return write_failed(im, err, errlen);
    const void *block;
    size_t size;
    int64_t offset;
    int r;
    while ((r = archive_read_data_block(im->in, &block, &size, &offset)) == ARCHIVE_OK) {
        if ((im->written += size) > im->limit)
            return too_big(im, path, err, errlen);
        if (archive_write_data_block(im->out, block, size, offset) != ARCHIVE_OK)
            return write_failed(im, err, errlen);
    }
    if (r != ARCHIVE_EOF)
        return read_failed(im, err, errlen);
    return archive_write_finish_entry(im->out) == ARCHIVE_OK
               ? MR_CHECKPOINT_OK
               : write_failed(im, err, errlen);
}

static int unpack(importer *im, char *err, size_t errlen)
{
    if (archive_read_support_filter_all(im->in) != ARCHIVE_OK ||
        archive_read_support_format_tar(im->in) != ARCHIVE_OK ||
        archive_read_open_filename(im->in, im->bundle, CHUNK) != ARCHIVE_OK)
        return read_failed(im, err, errlen);
    struct stat st;
    if (stat(im->bundle, &st) != 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot read bundle %s", im->bundle);
    im->limit = (uint64_t)st.st_size * MAX_EXPANSION + EXPANSION_SLACK;
    /* libarchive's own guards back ours up.  Its absolute-path guard cannot
     * be used: every name is rewritten under the absolute temporary folder,
     * and our check refuses absolute names before that. */
    archive_write_disk_set_options(im->out, ARCHIVE_EXTRACT_TIME |
                                                ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                ARCHIVE_EXTRACT_SECURE_SYMLINKS);
    struct archive_entry *e;
    int r, rc = MR_CHECKPOINT_OK;
    while (rc == MR_CHECKPOINT_OK && (r = archive_read_next_header(im->in, &e)) != ARCHIVE_EOF)
        rc = r == ARCHIVE_OK ? unpack_entry(im, e, err, errlen)
                             : read_failed(im, err, errlen);
    if (rc == MR_CHECKPOINT_OK && archive_write_close(im->out) != ARCHIVE_OK)
        rc = write_failed(im, err, errlen);
    return rc;
}

/* libarchive does not sync what it writes. */
static int sync_entry(const char *rel, const char *full, const struct stat *st, void *user,
                      char *err, size_t errlen)
{
    (void)rel;
    (void)user;
    int fd = open(full, O_RDONLY | (S_ISDIR(st->st_mode) ? O_DIRECTORY : 0));
    int rc = fd >= 0 && fsync(fd) == 0
                 ? MR_CHECKPOINT_OK
                 : mr_checkpoint_fail_errno(err, errlen, "cannot sync %s", full);
    if (fd >= 0)
        close(fd);
    return rc;
}

static bool is_empty_dir(const char *path)
{
    DIR *d = opendir(path);
    int entries = 0;
    if (!d)
        return false;
    for (struct dirent *e; (e = readdir(d));)
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return entries == 0;
}

/* The target may be missing or an empty folder (rename replaces that). */
static int check_target(const char *target, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(target, &st) != 0)
        return errno == ENOENT ? MR_CHECKPOINT_OK
                               : mr_checkpoint_fail_errno(err, errlen, "cannot stat %s", target);
    if (!S_ISDIR(st.st_mode))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "cannot import into %s: it exists and is not a folder",
                                  target);
    return is_empty_dir(target) ? MR_CHECKPOINT_OK
                                : mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                                     "cannot import into %s: it is not empty",
                                                     target);
}

/* A new hidden folder beside the target, on its file system so that the
 * final rename is atomic; made with mkdir so the umask applies as it
 * would to the target. */
static int make_beside(const char *parent, const char *name, char **out, char *err,
                       size_t errlen)
{
    size_t len = strlen(parent) + strlen(name) + 64;
    if (!(*out = malloc(len)))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    for (unsigned n = 0; n < 1000; n++) {
        snprintf(*out, len, "%s/.%s.import-%ld-%u", strcmp(parent, "/") ? parent : "", name,
                 (long)getpid(), n);
        if (mkdir(*out, 0777) == 0)
            return MR_CHECKPOINT_OK;
        if (errno != EEXIST)
            break;
    }
    int rc = mr_checkpoint_fail_errno(err, errlen, "cannot create %s", *out);
    free(*out);
    *out = NULL;
    return rc;
}

int mr_checkpoint_import(const char *bundle, const char *target_dir, char *err, size_t errlen)
{
    int rc = check_target(target_dir, err, errlen);
    if (rc != MR_CHECKPOINT_OK)
        return rc;
    char *parent = NULL, *name = NULL, *real = NULL, *tmp = NULL;
    if (mr_checkpoint_split_path(target_dir, &parent, &name) != MR_CHECKPOINT_OK)
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    else if (!(real = realpath(parent, NULL)))
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot import into %s", target_dir);
    else
        rc = make_beside(real, name, &tmp, err, errlen);
    bool made = rc == MR_CHECKPOINT_OK;
    importer im = {.bundle = bundle, .dir = tmp, .in = archive_read_new(),
                   .out = archive_write_disk_new()};
    if (rc == MR_CHECKPOINT_OK && (!im.in || !im.out))
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    if (rc == MR_CHECKPOINT_OK)
        rc = unpack(&im, err, errlen);
    archive_read_free(im.in);
    archive_write_free(im.out);
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_walk(tmp, sync_entry, NULL, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_fsync_dir(tmp, err, errlen);
    if (rc == MR_CHECKPOINT_OK && rename(tmp, target_dir) != 0)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot rename %s to %s", tmp, target_dir);
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_fsync_dir(real, err, errlen);
    else if (made)
        mr_checkpoint_rmtree(tmp);
    free(tmp);
    free(real);
    free(parent);
    free(name);
    return rc;
}
