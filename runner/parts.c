/*
 * Part files: each rank writes the results and errors of every shard it
 * serves into that shard's own pair of files under RUN_DIR/parts, so ranks
 * never share an output file; when every rank is done, the first rank joins
 * the parts in shard order, which is input order, into results.jsonl and
 * errors.jsonl.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner/runner.h"

#define PARTS_DIR "parts"

static char *part_path(const char *run_dir, uint32_t shard, const char *kind)
{
    char name[64];
    snprintf(name, sizeof name, PARTS_DIR "/shard-%05u.%s.jsonl", shard, kind);
    return mr_runner_path(run_dir, name);
}

int mr_runner_parts_open(const char *run_dir, uint32_t shard, FILE **results, FILE **errors)
{
    char err[512];
    char *dir = mr_runner_path(run_dir, PARTS_DIR);
    if (!dir || mr_runner_mkdir_p(dir, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: %s\n", dir ? err : "out of memory");
        free(dir);
        return MR_EXIT_FAILED;
    }
    free(dir);
    FILE **files[2] = {results, errors};
    const char *kinds[2] = {"results", "errors"};
    for (int i = 0; i < 2; i++) {
        char *path = part_path(run_dir, shard, kinds[i]);
        *files[i] = path ? fopen(path, "wb") : NULL;
        if (!*files[i]) {
            fprintf(stderr, "moerun run: %s: %s\n", path ? path : "out of memory",
                    strerror(errno));
            free(path);
            return MR_EXIT_FAILED;
        }
        free(path);
    }
    return MR_EXIT_OK;
}

int mr_runner_parts_close(FILE *f)
{
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok)
        perror("moerun run: closing a part file");
    return ok ? MR_EXIT_OK : MR_EXIT_FAILED;
}

/* Appends the part file (if the shard had one) to `to`, then removes it. */
static int append_part(FILE *to, const char *run_dir, uint32_t shard, const char *kind)
{
    char *path = part_path(run_dir, shard, kind);
    if (!path)
        return MR_EXIT_FAILED;
    FILE *from = fopen(path, "rb");
    int rc = MR_EXIT_OK;
    if (from) {
        char buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, from)) > 0)
            if (fwrite(buf, 1, n, to) != n)
                rc = MR_EXIT_FAILED;
        if (ferror(from))
            rc = MR_EXIT_FAILED;
        fclose(from);
        if (rc == MR_EXIT_OK)
            unlink(path);
    } else if (errno != ENOENT) {
        rc = MR_EXIT_FAILED;
    }
    if (rc != MR_EXIT_OK)
        fprintf(stderr, "moerun run: joining %s: %s\n", path, strerror(errno));
    free(path);
    return rc;
}

static int join_kind(const char *run_dir, size_t n_shards, const char *kind, const char *name)
{
    char err[512];
    char *path = mr_runner_path(run_dir, name);
    char *tmp = path ? malloc(strlen(path) + 5) : NULL;
    if (!tmp) {
        free(path);
        return MR_EXIT_FAILED;
    }
    sprintf(tmp, "%s.tmp", path);
    FILE *to = fopen(tmp, "wb");
    int rc = to ? MR_EXIT_OK : MR_EXIT_FAILED;
    if (!to)
        fprintf(stderr, "moerun run: %s: %s\n", tmp, strerror(errno));
    for (size_t i = 0; rc == MR_EXIT_OK && i < n_shards; i++)
        rc = append_part(to, run_dir, (uint32_t)i, kind);
    if (to && mr_runner_parts_close(to) != MR_EXIT_OK)
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK && rename(tmp, path) != 0) {
        snprintf(err, sizeof err, "renaming %s: %s", tmp, strerror(errno));
        fprintf(stderr, "moerun run: %s\n", err);
        rc = MR_EXIT_FAILED;
    }
    free(tmp);
    free(path);
    return rc;
}

int mr_runner_parts_join(const char *run_dir, size_t n_shards)
{
    int rc = join_kind(run_dir, n_shards, "results", MR_RUN_RESULTS);
    if (rc == MR_EXIT_OK)
        rc = join_kind(run_dir, n_shards, "errors", MR_RUN_ERRORS);
    char *dir = mr_runner_path(run_dir, PARTS_DIR);
    if (rc == MR_EXIT_OK && dir)
        rmdir(dir);
    free(dir);
    return rc;
}
