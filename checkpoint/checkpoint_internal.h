/* Shared by the checkpoint module's files; not part of its API. */
#ifndef MR_CHECKPOINT_INTERNAL_H
#define MR_CHECKPOINT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include "checkpoint/checkpoint.h"

/* What temporary files' names end with: never read, never bundled. */
#define MR_CHECKPOINT_TMP ".tmp"

/* Writes the message into err and returns `code`, so failures are one line. */
int mr_checkpoint_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* fail() with ": strerror(errno)" appended; MR_CHECKPOINT_EIO, or ENOMEM when
 * errno says so. */
int mr_checkpoint_fail_errno(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends to the message in buf, keeping what fits. */
void mr_checkpoint_appendf(char *buf, size_t buflen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mr_checkpoint_vappendf(char *buf, size_t buflen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* dir/name, malloc'd; NULL when out of memory. */
char *mr_checkpoint_join(const char *dir, const char *name);
int mr_checkpoint_mkdir_p(const char *dir, char *err, size_t errlen);
/* Makes a rename or unlink in dir durable. */
int mr_checkpoint_fsync_dir(const char *dir, char *err, size_t errlen);
/* The part of `path` before its last name ("." when there is none) and
 * that name, without trailing slashes; both malloc'd. */
int mr_checkpoint_split_path(const char *path, char **parent, char **name);

/* An atomic, durable write of `path` in two calls: temp_open creates
 * path.tmp (*tmp, malloc'd); temp_commit syncs and closes it, renames it to
 * path and syncs the folder, so path holds the old content or the new, even
 * after a power cut.  Given a failed rc, or failing itself, temp_commit
 * removes the temporary file instead.  It frees *tmp either way. */
int mr_checkpoint_temp_open(const char *path, char **tmp, int *fd, char *err, size_t errlen);
int mr_checkpoint_temp_commit(int fd, char *tmp, const char *path, int rc, char *err,
                              size_t errlen);

/* The whole file, malloc'd (NUL-terminated for convenience). */
int mr_checkpoint_read_file(const char *path, char **data, size_t *len, char *err,
                            size_t errlen);
/* Removes dir and everything below it, not following links; best effort,
 * for cleaning up after a failure. */
void mr_checkpoint_rmtree(const char *dir);

/* Calls fn for every entry below root, parents before children and names
 * in byte order (so bundles come out the same every time), without
 * following links.  `rel` is the path below root.  A non-zero return from fn
 * stops the walk and is returned. */
typedef int (*mr_checkpoint_walk_fn)(const char *rel, const char *full, const struct stat *st,
                                     void *user, char *err, size_t errlen);
int mr_checkpoint_walk(const char *root, mr_checkpoint_walk_fn fn, void *user, char *err,
                       size_t errlen);

/* The state as the JSON payload of a generation (docs/checkpoint-format.md),
 * and back.  *json is malloc'd. */
int mr_checkpoint_state_to_json(const mr_checkpoint_state *state, char **json, size_t *len,
                                char *err, size_t errlen);
int mr_checkpoint_state_from_json(mr_checkpoint_state *state, const char *json, size_t len,
                                  char *err, size_t errlen);

#endif
