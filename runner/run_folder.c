/* Reading back what `moerun run` left in a run folder. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner/runner.h"

int mr_runner_load_plan(const char *dir, mr_plan *plan)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return MR_EXIT_INVALID;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: not a folder\n", dir);
        return MR_EXIT_INVALID;
    }
    char *path = mr_runner_path(dir, MR_RUN_PLAN);
    if (!path)
        return MR_EXIT_FAILED;
    mr_buf text = {0};
    char err[1024];
    int rc = MR_EXIT_OK;
    if (access(path, F_OK) != 0) {
        fprintf(stderr, "%s: not a run folder: it has no %s (moerun run writes one)\n", dir,
                MR_RUN_PLAN);
        rc = MR_EXIT_INVALID;
    } else if (mr_runner_read_file(path, &text, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "%s\n", err);
        rc = MR_EXIT_FAILED;
    } else if (mr_plan_parse(plan, text.data, text.len, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "%s: %s\n", path, err);
        rc = MR_EXIT_INVALID;
    }
    mr_buf_free(&text);
    free(path);
    return rc;
}

int mr_runner_open_run_file(const char *dir, const char *name, FILE **f, char **path)
{
    *f = NULL;
    *path = mr_runner_path(dir, name);
    if (!*path)
        return MR_EXIT_FAILED;
    *f = fopen(*path, "rb");
    if (!*f && errno != ENOENT) {
        fprintf(stderr, "cannot open %s: %s\n", *path, strerror(errno));
        return MR_EXIT_FAILED;
    }
    return MR_EXIT_OK;
}

int mr_runner_count_lines(const char *dir, const char *name, uint64_t *lines)
{
    *lines = 0;
    FILE *f;
    char *path;
    int rc = mr_runner_open_run_file(dir, name, &f, &path);
    if (f) {
        char chunk[1 << 16];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
            for (const char *p = chunk; (p = memchr(p, '\n', (size_t)(chunk + n - p))); p++)
                (*lines)++;
        if (ferror(f)) {
            fprintf(stderr, "cannot read %s: %s\n", path, strerror(errno));
            rc = MR_EXIT_FAILED;
        }
        fclose(f);
    }
    free(path);
    return rc;
}
