/*
 * Test fixtures: a scratch folder per test with a model folder and request
 * files in it, and a way to run the moerun binary as a user would.
 */
#ifndef MR_TEST_FIXTURE_H
#define MR_TEST_FIXTURE_H

#include <stddef.h>
#include <sys/types.h>

#include "engine/engine.h"
#include "jobs/jobs.h"

/* A new empty folder under $TMPDIR; removed by mr_test_rmtree. */
char *mr_test_tmpdir(void);
void mr_test_rmtree(const char *dir);

/* Write `len` bytes (strlen when len is (size_t)-1) to dir/name, creating
 * the folders on the way; returns the path, which the caller frees. */
char *mr_test_write(const char *dir, const char *name, const char *data, size_t len);
/* mr_test_write of printf-formatted text; frees the path. */
void mr_test_writef(const char *dir, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
char *mr_test_read(const char *path, size_t *len);

/* The tiny model `make test` made (MR_TINY_MODEL); fails the test when unset. */
const char *mr_test_tiny_model(void);
/* The tiny model loaded on the cpu backend with `threads`; fails the test
 * when it does not load. */
mr_model *mr_test_load_tiny_model(int threads);
/* dir/model: a link to the tiny model. */
void mr_test_make_model(const char *dir);

/* Write dir/job.ini with `ini` and load it; the message lands in err. */
int mr_test_load_job(mr_job *job, const char *dir, const char *ini,
                     const mr_job_override *overrides, size_t n_overrides, char *err,
                     size_t errlen);

/* Run $MOERUN with args (NULL-terminated) in `cwd`; stdout and stderr are
 * captured (each NUL-terminated).  Returns the exit code. */
int mr_test_moerun(const char *cwd, char **out, char **err, const char *arg, ...);
/* The same without waiting: stdout and stderr go to the file cwd/log.
 * Returns the pid. */
pid_t mr_test_spawn_moerun(const char *cwd, const char *log, const char *arg, ...);

#endif
