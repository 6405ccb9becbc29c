/*
 * Part files: each rank writes the results and errors of every shard it
 * serves into that shard's own pair of files under RUN_DIR/parts, so ranks
 * never share an output file.  A record is written as soon as its request
 * finishes, in whatever order requests finish, behind its input line
 * number ("17 {...}\n"); when every rank is done, the first rank joins the
 * parts into results.jsonl and errors.jsonl in input order, without the
 * numbers, so the joined files are the same bytes whatever the finishing
 * order, rank count or stops.
 *
 * Only the bytes a checkpoint committed count: a resumed run cuts a shard's
 * parts back to its committed offsets before serving the shard again, and
 * the join reads exactly the committed bytes.  The join also reads the
 * inputs again, to check that every line but a blank one has exactly one
 * record, and writes nothing when one has none or several.  The parts are
 * removed only once both joined files are in place (the folder is first
 * renamed away, so that a kill while removing it leaves no half set of
 * parts to join).
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

/* A write to `f` failed with `err`: the message names the file (found
 * from its descriptor), and a full disk is told apart. */
static int file_failed(FILE *f, int err)
{
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fileno(f));
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
    return mr_runner_write_failed(n > 0 ? path : "a part file", err);
}

int mr_runner_parts_sync(FILE *f)
{
    if (fflush(f) == 0 && fsync(fileno(f)) == 0)
        return MR_EXIT_OK;
    return file_failed(f, errno);
}

int mr_runner_parts_close(FILE *f)
{
    int rc = mr_runner_parts_sync(f);
    if (fclose(f) != 0 && rc == MR_EXIT_OK)
        rc = mr_runner_write_failed("a part file", errno);
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

int mr_runner_parts_write(FILE *f, uint64_t line_no, const char *record, size_t len,
                          size_t *bytes)
{
    int key = fprintf(f, "%" PRIu64 " ", line_no);
    if (key < 0 || fwrite(record, 1, len, f) != len)
        return file_failed(f, errno);
    *bytes = (size_t)key + len;
    return MR_EXIT_OK;
}

/* A record in a shard's parts: its input line, and where it lies in the
 * part of its kind (after the line number; its newline included). */
typedef struct {
    uint64_t line, offset, len;
    int kind;
} record;

typedef struct {
    record *items;
    size_t n, cap;
} records;

static int add_record(records *list, record r)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 1024;
        record *grown = realloc(list->items, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "moerun run: out of memory\n");
            return MR_EXIT_FAILED;
        }
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->n++] = r;
    return MR_EXIT_OK;
}

static int damaged_part(const char *path, uint64_t offset, const char *what)
{
    fprintf(stderr, "moerun run: %s: byte %" PRIu64 ": %s: the run folder is damaged; start "
                    "over with --force-new\n", path, offset, what);
    return MR_EXIT_INVALID;
}

/* Lists the committed records of one part of a shard (none: no file).
 * *f is left open for copying. */
static int index_part(const char *path, uint64_t committed, int kind, records *list, FILE **f)
{
    uint64_t size, at = 0;
    int rc = part_size(path, &size);
    if (rc == MR_EXIT_OK && size < committed)
        rc = shorter_than_committed(path, size, committed);
    if (rc != MR_EXIT_OK || committed == 0)
        return rc;
    if (!(*f = fopen(path, "rb"))) {
        fprintf(stderr, "moerun run: %s: %s\n", path, strerror(errno));
        return MR_EXIT_FAILED;
    }
    while (rc == MR_EXIT_OK && at < committed) {
        uint64_t line = 0, digits = 0;
        int ch;
        while ((ch = getc(*f)) >= '0' && ch <= '9' && digits < 19) {
            line = line * 10 + (uint64_t)(ch - '0');
            digits++;
        }
        if (ch != ' ' || digits == 0)
            return damaged_part(path, at, "a record without its line number");
        uint64_t start = at + digits + 1, end = start;
        while ((ch = getc(*f)) != EOF && ch != '\n')
            end++;
        if (ch != '\n' || end + 1 > committed)
            return damaged_part(path, start, "a record cut short");
        rc = add_record(list, (record){line, start, end + 1 - start, kind});
        at = end + 1;
    }
    return rc;
}

static int by_line(const void *a, const void *b)
{
    const record *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->kind - y->kind;
}

/* Copies a record from its part to the joined file of its kind. */
static int copy_record(FILE *from, FILE *to, const record *r)
{
    char buf[1 << 16];
    if (fseeko(from, (off_t)r->offset, SEEK_SET) != 0)
        return MR_EXIT_FAILED;
    for (uint64_t left = r->len; left;) {
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        if (fread(buf, 1, want, from) != want || fwrite(buf, 1, want, to) != want)
            return MR_EXIT_FAILED;
        left -= want;
    }
    return MR_EXIT_OK;
}

static int missing_or_twice(const char *file, uint64_t line_no, uint32_t shard, size_t have,
                            bool blank)
{
    if (blank)
        fprintf(stderr, "moerun run: %s:%" PRIu64 " is blank, yet shard %u's parts hold a "
                        "record for it", file, line_no, (unsigned)shard);
    else if (have == 0)
        fprintf(stderr, "moerun run: %s:%" PRIu64 " has no result or error record in shard "
                        "%u's parts", file, line_no, (unsigned)shard);
    else
        fprintf(stderr, "moerun run: %s:%" PRIu64 " has %zu records in shard %u's parts",
                file, line_no, have, (unsigned)shard);
    fprintf(stderr, "; the run is not finished and results.jsonl and errors.jsonl are not "
                    "written: the run folder is damaged; start over with --force-new\n");
    return MR_EXIT_INVALID;
}

/* Walks a shard's input lines and its records (sorted by line) together:
 * every line but a blank one has exactly one record, which goes to the
 * joined file of its kind. */
static int join_shard(const mr_job *job, const mr_plan *plan, const mr_shard *shard,
                      const records *list, FILE *const parts[2], FILE *const to[2])
{
    char err[1024];
    const char *file = plan->files[shard->file_index].path;
    mr_line_reader *reader;
    if (mr_line_reader_open(&reader, file, shard->begin, shard->end, shard->first_line,
                            (size_t)job->input_max_line_bytes, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    int rc = MR_EXIT_OK, got;
    size_t j = 0;
    mr_line line;
    while (rc == MR_EXIT_OK && (got = mr_line_reader_next(reader, &line, err, sizeof err)) == 1) {
        if (j < list->n && list->items[j].line < line.line_no)
            break; /* a record for no line of the shard: said below */
        size_t have = 0;
        while (j + have < list->n && list->items[j + have].line == line.line_no)
            have++;
        bool blank = !line.too_long && mr_line_is_blank(line.data, line.len);
        if (blank ? have != 0 : have != 1) {
            rc = missing_or_twice(file, line.line_no, shard->id, have, blank);
        } else if (have == 1) {
            const record *r = &list->items[j++];
            if (copy_record(parts[r->kind], to[r->kind], r) != MR_EXIT_OK)
                rc = file_failed(to[r->kind], errno);
        }
    }
    if (rc == MR_EXIT_OK && got < 0) {
        fprintf(stderr, "moerun run: %s\n", err);
        rc = MR_EXIT_FAILED;
    }
    if (rc == MR_EXIT_OK && j < list->n) {
        fprintf(stderr, "moerun run: shard %u's parts hold a record for line %" PRIu64
                        " of %s, which is not one of its lines (%" PRIu64 " to %" PRIu64
                        "): the run folder is damaged; start over with --force-new\n",
                (unsigned)shard->id, list->items[j].line, file, shard->first_line,
                shard->first_line + shard->n_lines - 1);
        rc = MR_EXIT_INVALID;
    }
    mr_line_reader_close(reader);
    return rc;
}

/* RUN_DIR/results.jsonl.tmp and errors.jsonl.tmp, joined from every shard's
 * parts. */
static int join_all(const mr_job *job, const mr_plan *plan, const mr_checkpoint_state *state,
                    char *const tmps[2])
{
    FILE *to[2] = {NULL, NULL};
    int rc = MR_EXIT_OK;
    for (int k = 0; rc == MR_EXIT_OK && k < 2; k++)
        if (!(to[k] = fopen(tmps[k], "wb")))
            rc = mr_runner_write_failed(tmps[k], errno);
    records list = {0};
    for (size_t i = 0; rc == MR_EXIT_OK && i < state->n_shards; i++) {
        FILE *parts[2] = {NULL, NULL};
        list.n = 0;
        for (int k = 0; rc == MR_EXIT_OK && k < 2; k++) {
            char *path = part_path(job->job_run_dir, (uint32_t)i, KINDS[k]);
            rc = path ? index_part(path, committed(&state->shards[i], k), k, &list, &parts[k])
                      : MR_EXIT_FAILED;
            free(path);
        }
        if (list.n)
            qsort(list.items, list.n, sizeof *list.items, by_line);
        if (rc == MR_EXIT_OK)
            rc = join_shard(job, plan, &plan->shards[i], &list, parts, to);
        for (int k = 0; k < 2; k++)
            if (parts[k])
                fclose(parts[k]);
    }
    free(list.items);
    for (int k = 0; k < 2; k++) {
        int closed = to[k] ? mr_runner_parts_close(to[k]) : MR_EXIT_OK;
        rc = rc == MR_EXIT_OK ? closed : rc;
    }
    if (rc != MR_EXIT_OK)
        for (int k = 0; k < 2; k++)
            unlink(tmps[k]);
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

int mr_runner_parts_join(const mr_job *job, const mr_plan *plan,
                         const mr_checkpoint_state *state)
{
    static const char *const names[2] = {MR_RUN_RESULTS, MR_RUN_ERRORS};
    const char *run_dir = job->job_run_dir;
    char *paths[2], *tmps[2];
    int rc = MR_EXIT_OK;
    for (int k = 0; k < 2; k++) {
        paths[k] = mr_runner_path(run_dir, names[k]);
        tmps[k] = tmp_path(paths[k]);
        if (!tmps[k])
            rc = MR_EXIT_FAILED;
    }
    if (rc == MR_EXIT_OK)
        rc = join_all(job, plan, state, tmps);
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
