/*
 * The shard plan.  One pass over every input checks each line as a request
 * (so the plan knows how many lines will become error records), finds
 * repeated custom_ids, and samples line starts; shards are then cut at the
 * sampled line starts nearest to equal byte sizes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/internal.h"

#define AUTO_SHARDS_PER_RANK 4
#define AUTO_SHARD_BYTES (256ULL << 20)
/* Line starts kept per file as cut candidates; when full, every other one
 * is dropped and the spacing doubles, so the samples stay even. */
#define MAX_CANDIDATES 65536

typedef struct {
    uint64_t offset, line_no;
} line_start;

typedef struct {
    line_start *items;
    size_t count;
    uint64_t spacing;
} candidates;

/* Open-addressing set of custom_ids with where each was first seen. */
typedef struct {
    char *id;
    uint32_t file_index;
    uint64_t line_no;
} id_slot;

typedef struct {
    id_slot *slots;
    size_t cap, count;
} id_set;

static int id_set_grow(id_set *set)
{
    size_t cap = set->cap ? set->cap * 2 : 1024;
    id_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return MR_JOBS_ENOMEM;
    for (size_t i = 0; i < set->cap; i++) {
        if (!set->slots[i].id)
            continue;
        size_t j = mr_hash64(set->slots[i].id, strlen(set->slots[i].id), 0) & (cap - 1);
        while (slots[j].id)
            j = (j + 1) & (cap - 1);
        slots[j] = set->slots[i];
    }
    free(set->slots);
    set->slots = slots;
    set->cap = cap;
    return MR_JOBS_OK;
}

/* Add id; when it was there, *first is its first sighting. */
static int id_set_add(id_set *set, const char *id, uint32_t file_index, uint64_t line_no,
                      const id_slot **first)
{
    *first = NULL;
    if ((set->count + 1) * 2 > set->cap && id_set_grow(set) != MR_JOBS_OK)
        return MR_JOBS_ENOMEM;
    size_t j = mr_hash64(id, strlen(id), 0) & (set->cap - 1);
    for (; set->slots[j].id; j = (j + 1) & (set->cap - 1)) {
        if (strcmp(set->slots[j].id, id) == 0) {
            *first = &set->slots[j];
            return MR_JOBS_OK;
        }
    }
    if (!(set->slots[j].id = strdup(id)))
        return MR_JOBS_ENOMEM;
    set->slots[j].file_index = file_index;
    set->slots[j].line_no = line_no;
    set->count++;
    return MR_JOBS_OK;
}

static void id_set_free(id_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i].id);
    free(set->slots);
}

static int add_candidate(candidates *c, uint64_t offset, uint64_t line_no)
{
    if (c->count && offset < c->items[c->count - 1].offset + c->spacing)
        return MR_JOBS_OK;
    if (c->count == MAX_CANDIDATES) {
        for (size_t i = 0; i < c->count / 2; i++)
            c->items[i] = c->items[2 * i];
        c->count /= 2;
        c->spacing = c->spacing ? c->spacing * 2 : offset / c->count;
        return add_candidate(c, offset, line_no);
    }
    if (!c->items && !(c->items = malloc(MAX_CANDIDATES * sizeof *c->items)))
        return MR_JOBS_ENOMEM;
    c->items[c->count++] = (line_start){offset, line_no};
    return MR_JOBS_OK;
}

typedef struct {
    mr_plan *plan;
    const mr_job *job;
    mr_request_parser *parser;
    id_set ids;
    candidates *cands; /* one per file */
    char *err;
    size_t errlen;
} builder;

static int push_duplicate(mr_plan *plan, uint32_t file_index, uint64_t line_no,
                          const id_slot *first)
{
    if ((plan->n_duplicates & (plan->n_duplicates - 1)) == 0) {
        size_t cap = plan->n_duplicates ? plan->n_duplicates * 2 : 16;
        mr_duplicate *d = realloc(plan->duplicates, cap * sizeof *d);
        if (!d)
            return MR_JOBS_ENOMEM;
        plan->duplicates = d;
    }
    plan->duplicates[plan->n_duplicates++] =
        (mr_duplicate){file_index, line_no, first->file_index, first->line_no};
    return MR_JOBS_OK;
}

/* Classify one line: blank, invalid, duplicate or a request to serve. */
static int scan_line(builder *b, uint32_t file_index, const mr_line *line)
{
    mr_plan *plan = b->plan;
    const char *path = plan->files[file_index].path;
    if (line->too_long) {
        plan->n_invalid++;
        return MR_JOBS_OK;
    }
    if (mr_line_is_blank(line->data, line->len))
        return MR_JOBS_OK;
    mr_request req;
    mr_request_error error;
    if (mr_request_parse(b->parser, line->data, line->len, path, file_index, line->line_no,
                         &req, &error) != MR_JOBS_OK) {
        plan->n_invalid++;
        return MR_JOBS_OK;
    }
    const id_slot *first;
    if (id_set_add(&b->ids, req.custom_id, file_index, line->line_no, &first) != MR_JOBS_OK)
        return MR_JOBS_ENOMEM;
    if (first)
        return push_duplicate(plan, file_index, line->line_no, first);
    plan->n_requests++;
    return MR_JOBS_OK;
}

static int scan_file(builder *b, uint32_t file_index)
{
    mr_plan_file *file = &b->plan->files[file_index];
    mr_line_reader *reader = NULL;
    int rc = mr_line_reader_open(&reader, file->path, 0, UINT64_MAX, 1,
                                 (size_t)b->job->input_max_line_bytes, b->err, b->errlen);
    if (reader)
        file->compressed = mr_line_reader_compressed(reader);
    mr_line line;
    while (rc == MR_JOBS_OK && (rc = mr_line_reader_next(reader, &line, b->err, b->errlen)) == 1) {
        rc = add_candidate(&b->cands[file_index], line.offset, line.line_no);
        if (rc == MR_JOBS_OK)
            rc = scan_line(b, file_index, &line);
        file->lines = line.line_no;
    }
    if (reader)
        file->bytes = mr_line_reader_position(reader);
    mr_line_reader_close(reader);
    if (rc == MR_JOBS_ENOMEM)
        snprintf(b->err, b->errlen, "%s: out of memory while planning", file->path);
    b->plan->n_lines += file->lines;
    return rc < 0 ? rc : MR_JOBS_OK;
}

/* How many shards each file gets: at least one per file with lines, the
 * rest in proportion to bytes (largest remainder first). */
static void share_shards(const mr_plan *plan, const candidates *cands, size_t total,
                         size_t *share)
{
    uint64_t bytes = 0;
    size_t given = 0, files_with_lines = 0;
    for (size_t i = 0; i < plan->n_files; i++)
        if (cands[i].count) {
            bytes += plan->files[i].bytes;
            files_with_lines++;
        }
    if (total < files_with_lines)
        total = files_with_lines;
    double *rest = calloc(plan->n_files, sizeof *rest);
    for (size_t i = 0; i < plan->n_files; i++) {
        share[i] = 0;
        if (!cands[i].count)
            continue;
        double exact = bytes ? (double)total * (double)plan->files[i].bytes / (double)bytes : 1;
        share[i] = exact < 1 ? 1 : (size_t)exact;
        if (share[i] > cands[i].count)
            share[i] = cands[i].count;
        if (rest)
            rest[i] = exact - (double)share[i];
        given += share[i];
    }
    while (given < total && rest) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < plan->n_files; i++)
            if (share[i] < cands[i].count && (best == SIZE_MAX || rest[i] > rest[best]))
                best = i;
        if (best == SIZE_MAX)
            break;
        share[best]++;
        rest[best] -= 1;
        given++;
    }
    free(rest);
}

/* Cut one file into k shards at the candidates nearest to equal sizes;
 * every shard keeps at least one candidate, so none is empty. */
static void cut_file(mr_plan *plan, uint32_t file_index, const candidates *c, size_t k)
{
    const mr_plan_file *file = &plan->files[file_index];
    size_t prev = 0;
    for (size_t s = 0; s < k; s++) {
        size_t next = c->count;
        if (s + 1 < k) {
            double ideal = (double)file->bytes * (double)(s + 1) / (double)k;
            size_t last = c->count - (k - 1 - s);
            next = prev + 1;
            while (next < last && (double)c->items[next + 1].offset <= ideal)
                next++;
            if (next < last && fabs((double)c->items[next + 1].offset - ideal) <
                                   fabs((double)c->items[next].offset - ideal))
                next++;
        }
        mr_shard *shard = &plan->shards[plan->n_shards];
        shard->id = (uint32_t)plan->n_shards++;
        shard->file_index = file_index;
        shard->begin = c->items[prev].offset;
        shard->first_line = c->items[prev].line_no;
        shard->end = next < c->count ? c->items[next].offset : file->bytes;
        uint64_t last_line = next < c->count ? c->items[next].line_no : file->lines + 1;
        shard->n_lines = last_line - shard->first_line;
        prev = next;
    }
}

static size_t auto_shards(const mr_job *job, uint64_t bytes)
{
    uint64_t by_size = (bytes + AUTO_SHARD_BYTES - 1) / AUTO_SHARD_BYTES;
    uint64_t by_ranks = (uint64_t)job->parallel_ranks * AUTO_SHARDS_PER_RANK;
    return (size_t)(by_size > by_ranks ? by_size : by_ranks);
}

static int cut_shards(builder *b, size_t n_shards)
{
    mr_plan *plan = b->plan;
    uint64_t bytes = 0;
    for (size_t i = 0; i < plan->n_files; i++)
        bytes += plan->files[i].bytes;
    if (!n_shards)
        n_shards = auto_shards(b->job, bytes);
    size_t *share = calloc(plan->n_files, sizeof *share);
    if (!share)
        return MR_JOBS_ENOMEM;
    share_shards(plan, b->cands, n_shards, share);
    size_t total = 0;
    for (size_t i = 0; i < plan->n_files; i++)
        total += share[i];
    plan->shards = calloc(total ? total : 1, sizeof *plan->shards);
    if (!plan->shards) {
        free(share);
        return MR_JOBS_ENOMEM;
    }
    for (size_t i = 0; i < plan->n_files; i++)
        if (share[i])
            cut_file(plan, (uint32_t)i, &b->cands[i], share[i]);
    free(share);
    return MR_JOBS_OK;
}

int mr_plan_build(mr_plan *plan, const mr_job *job, size_t n_shards, char *err,
                  size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    builder b = {.plan = plan, .job = job, .err = err, .errlen = errlen};
    size_t n = job->input_files.count;
    plan->files = calloc(n ? n : 1, sizeof *plan->files);
    b.cands = calloc(n ? n : 1, sizeof *b.cands);
    b.parser = mr_request_parser_new(job);
    int rc = plan->files && b.cands && b.parser ? MR_JOBS_OK : MR_JOBS_ENOMEM;
    for (size_t i = 0; rc == MR_JOBS_OK && i < n; i++) {
        plan->n_files++;
        if (!(plan->files[i].path = strdup(job->input_files.items[i])))
            rc = MR_JOBS_ENOMEM;
        else
            rc = scan_file(&b, (uint32_t)i);
    }
    if (rc == MR_JOBS_OK)
        rc = cut_shards(&b, n_shards);
    if (rc == MR_JOBS_ENOMEM && !*err)
        snprintf(err, errlen, "out of memory while planning");
    for (size_t i = 0; b.cands && i < n; i++)
        free(b.cands[i].items);
    free(b.cands);
    id_set_free(&b.ids);
    mr_request_parser_free(b.parser);
    if (rc != MR_JOBS_OK)
        mr_plan_free(plan);
    return rc;
}

void mr_plan_free(mr_plan *plan)
{
    for (size_t i = 0; plan->files && i < plan->n_files; i++)
        free(plan->files[i].path);
    free(plan->files);
    free(plan->shards);
    free(plan->duplicates);
    memset(plan, 0, sizeof *plan);
}
