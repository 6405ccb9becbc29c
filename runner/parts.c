/*
 * Part files: each rank writes the results and errors of every shard it
 * serves into that shard's own pair of files under RUN_DIR/parts, so ranks
 * never share an output file; when every rank is done, the first rank joins
 * the parts in shard order, which is input order, into results.jsonl and
 * errors.jsonl.
 *
 * Only the bytes a checkpoint committed count: a resumed run cuts a shard's
 * parts back to its committed offsets before serving the shard again, and
 * the join copies exactly the committed bytes.  The parts are removed only
 * once both joined files are in place (the folder is first renamed away, so
 * that a kill while removing it leaves no half set of parts to join).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner/runner.h"

#define JOINED_DIR MR_RUN_PARTS ".joined"

static const char *const KINDS[2] = {"results", "errors"};

static char *part_path(const char *run_dir, uint32_t shard, const char *kind)
{
    char name[64];
    snprintf(name, sizeof name, MR_RUN_PARTS "/shard-%05u.%s.jsonl", shard, kind);
    return mr_runner_path(run_dir, name);
}

static uint64_t committed(const mr_checkpoint_shard *shard, int kind)
{
    return kind == 0 ? shard->results_offset : shard->errors_offset;
}

/* A part file's size; 0 when it does not exist. */
static int part_size(const char *path, uint64_t *size)
{
    struct stat st;
    *size = 0;
    if (stat(path, &st) == 0) {
        *size = (uint64_t)st.st_size;
        return MR_EXIT_OK;
    }
    if (errno == ENOENT)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun run: %s: %s\n", path, strerror(errno));
    return MR_EXIT_FAILED;
}

static int shorter_than_committed(const char *path, uint64_t size, uint64_t want)
{
    fprintf(stderr, "moerun run: %s holds %" PRIu64 " bytes, fewer than the %" PRIu64
                    " its checkpoint committed: the run folder is damaged; start over with "
                    "--force-new\n", path, size, want);
    return MR_EXIT_INVALID;
}

int mr_runner_parts_cut(const char *run_dir, const mr_checkpoint_shard *shard)
{
    int rc = MR_EXIT_OK;
    for (int k = 0; rc == MR_EXIT_OK && k < 2; k++) {
        char *path = part_path(run_dir, shard->index, KINDS[k]);
        uint64_t size, want = committed(shard, k);
        rc = path ? part_size(path, &size) : MR_EXIT_FAILED;
        if (rc == MR_EXIT_OK && size < want)
            rc = shorter_than_committed(path, size, want);
        else if (rc == MR_EXIT_OK && size > want && truncate(path, (off_t)want) != 0) {
            fprintf(stderr, "moerun run: cutting %s back to %" PRIu64 " bytes: %s\n", path,
                    want, strerror(errno));
            rc = MR_EXIT_FAILED;
        }
        free(path);
    }
    return rc;
}

int mr_runner_parts_open(const char *run_dir, uint32_t shard, FILE **results, FILE **errors)
{
    char err[512];
    char *dir = mr_runner_path(run_dir, MR_RUN_PARTS);
    if (!dir || mr_runner_mkdir_p(dir, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: %s\n", dir ? err : "out of memory");
        free(dir);
        return MR_EXIT_FAILED;
    }
    free(dir);
    FILE **files[2] = {results, errors};
    for (int i = 0; i < 2; i++) {
        char *path = part_path(run_dir, shard, KINDS[i]);
        *files[i] = path ? fopen(path, "ab") : NULL;
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

int mr_runner_parts_sync(FILE *f)
{
    if (fflush(f) == 0 && fsync(fileno(f)) == 0)
        return MR_EXIT_OK;
    perror("moerun run: syncing a part file");
    return MR_EXIT_FAILED;
}

int mr_runner_parts_close(FILE *f)
{
    int rc = mr_runner_parts_sync(f);
    if (fclose(f) != 0) {
        perror("moerun run: closing a part file");
        rc = MR_EXIT_FAILED;
    }
    return rc;
}

static bool parts_exist(const char *run_dir)
{
    char *dir = mr_runner_path(run_dir, MR_RUN_PARTS);
    bool exists = !dir || access(dir, F_OK) == 0;
    free(dir);
    return exists;
}

bool mr_runner_parts_joined(const char *run_dir)
{
    char *results = mr_runner_path(run_dir, MR_RUN_RESULTS);
    char *errors = mr_runner_path(run_dir, MR_RUN_ERRORS);
    bool joined = results && errors && access(results, F_OK) == 0 &&
                  access(errors, F_OK) == 0 && !parts_exist(run_dir);
    free(results);
    free(errors);
    return joined;
}

/* Appends the committed bytes of a shard's part (none: no file) to `to`. */
static int append_part(FILE *to, const char *run_dir, const mr_checkpoint_shard *shard, int kind)
{
    char *path = part_path(run_dir, shard->index, KINDS[kind]);
    uint64_t left = committed(shard, kind), size;
    int rc = path ? part_size(path, &size) : MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK && size < left)
        rc = shorter_than_committed(path, size, left);
    FILE *from = rc == MR_EXIT_OK && left ? fopen(path, "rb") : NULL;
    if (rc == MR_EXIT_OK && left && !from)
        rc = MR_EXIT_FAILED;
    char buf[1 << 16];
    while (rc == MR_EXIT_OK && left) {
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        size_t n = fread(buf, 1, want, from);
        if (n != want || fwrite(buf, 1, n, to) != n)
            rc = MR_EXIT_FAILED;
        left -= n;
    }
    if (from)
        fclose(from);
    if (rc == MR_EXIT_FAILED)
        fprintf(stderr, "moerun run: joining %s: %s\n", path ? path : "a part",
                strerror(errno));
    free(path);
    return rc;
}

/* RUN_DIR/NAME.tmp, joined from every shard's parts of one kind. */
static int join_kind(const char *run_dir, const mr_checkpoint_state *state, int kind,
                     const char *tmp)
{
    FILE *to = fopen(tmp, "wb");
    int rc = to ? MR_EXIT_OK : MR_EXIT_FAILED;
    if (!to)
        fprintf(stderr, "moerun run: %s: %s\n", tmp, strerror(errno));
    for (size_t i = 0; rc == MR_EXIT_OK && i < state->n_shards; i++)
        rc = append_part(to, run_dir, &state->shards[i], kind);
    if (to && mr_runner_parts_close(to) != MR_EXIT_OK)
        rc = MR_EXIT_FAILED;
    return rc;
}

static char *tmp_path(const char *path)
{
    char *tmp = path ? malloc(strlen(path) + 5) : NULL;
    if (tmp)
        sprintf(tmp, "%s.tmp", path);
    return tmp;
}

/* Renames `from` to `to`, naming both when it fails. */
static int rename_or_say(const char *from, const char *to)
{
    if (rename(from, to) == 0)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun run: renaming %s to %s: %s\n", from, to, strerror(errno));
    return MR_EXIT_FAILED;
}

int mr_runner_parts_join(const char *run_dir, const mr_checkpoint_state *state)
{
    static const char *const names[2] = {MR_RUN_RESULTS, MR_RUN_ERRORS};
    char *paths[2], *tmps[2];
    int rc = MR_EXIT_OK;
    for (int k = 0; k < 2; k++) {
        paths[k] = mr_runner_path(run_dir, names[k]);
        tmps[k] = tmp_path(paths[k]);
        if (!tmps[k])
            rc = MR_EXIT_FAILED;
    }
    for (int k = 0; rc == MR_EXIT_OK && k < 2; k++)
        rc = join_kind(run_dir, state, k, tmps[k]);
    for (int k = 0; rc == MR_EXIT_OK && k < 2; k++)
        rc = rename_or_say(tmps[k], paths[k]);
    if (rc == MR_EXIT_OK && mr_runner_sync_folder(run_dir) != 0) {
        fprintf(stderr, "moerun run: syncing %s: %s\n", run_dir, strerror(errno));
        rc = MR_EXIT_FAILED;
    }
    char *parts = mr_runner_path(run_dir, MR_RUN_PARTS);
    char *joined = mr_runner_path(run_dir, JOINED_DIR);
    if (rc == MR_EXIT_OK && (!parts || !joined))
        rc = MR_EXIT_FAILED;
    /* A leftover from a removal a kill cut short goes first. */
    if (rc == MR_EXIT_OK)
        rc = mr_runner_remove_tree(joined);
    if (rc == MR_EXIT_OK && access(parts, F_OK) == 0)
        rc = rename_or_say(parts, joined);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_remove_tree(joined);
    free(parts);
    free(joined);
    for (int k = 0; k < 2; k++) {
        free(paths[k]);
        free(tmps[k]);
    }
    return rc;
}
