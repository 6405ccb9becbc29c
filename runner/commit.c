/*
 * The commit protocol: a shard's progress reaches a checkpoint only after
 * the lines it counts are durable.
 *
 * Every rank keeps the run state it loaded and updates, in its own copy,
 * the shards it serves: how far it has read each, the part files' lengths
 * and whether the shard is done.  A record is written to its part file as
 * soon as its request finishes, in any order, so what a checkpoint commits
 * is every line read, less the ones still in flight; those it lists, each
 * with the completion tokens generated so far, which a resumed run goes on
 * from.  A rank also carries the lines its shard's checkpoint had in
 * flight until it reads them again, so that a checkpoint between the two
 * still lists them.
 *
 * At a checkpoint every rank has already synced its open part files; the
 * ranks then allgather what changed since the last one (shards with lines
 * in flight always have), rank 0 merges it into its copy with the counters,
 * adds the placement and load window, and writes a generation; a last
 * allgather tells every rank whether that write is durable.  Every rank
 * makes the same collective calls in the same order, as the work loop
 * calls this between the same two steps everywhere.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/runner.h"

/* What a rank sends at a checkpoint: a head, then `bytes` of changed
 * shards, each a commit_shard and its in-flight lines (commit_line and
 * n_tokens token ids each). */
typedef struct {
    uint64_t bytes, ok, failed, tokens_in, tokens_out;
} commit_head;

typedef struct {
    uint64_t next_line, results_offset, errors_offset, n_in_flight;
    uint32_t index, done;
} commit_shard;

typedef struct {
    uint64_t line, n_tokens, choice;
} commit_line;

/* A generation of a line this rank read whose record is not written yet:
 * in the engine (live) or carried from the checkpoint until the line is
 * read again.  A line has one per choice still generating. */
typedef struct {
    uint32_t shard;
    uint32_t choice;
    bool live;
    uint64_t line_no;
    uint64_t handle;  /* live: the engine's generation */
    int32_t *tokens;  /* carried: the checkpoint's tokens */
    size_t n_tokens;
} open_line;

struct mr_runner_commit {
    const mr_job *job;
    mr_checkpoint_state *state; /* this rank's copy; rank 0's is written */
    mr_comm *comm;
    int rank, size;
    uint32_t *open_count; /* [n_shards]: lines in `open` */
    bool *read_all;       /* [n_shards] */
    bool *changed;        /* [n_shards]: since the last checkpoint */
    uint32_t *changed_list;
    size_t n_changed;
    open_line *open;
    size_t n_open, open_cap;
    /* Written by this rank in this attempt. */
    uint64_t ok, failed, tokens_in, tokens_out;
    mr_checkpoint_counters base; /* the state's counters when the attempt began */
    double started;              /* Unix time the attempt's processes started */
    double restart_lost;         /* rank seconds from that start to the first step */
    bool stepped;
    double last;                 /* monotonic time of the last checkpoint */
    /* Allgather buffers. */
    commit_head *heads;
    mr_buf mine;
    char *all;
    size_t all_cap;
    /* This attempt's checkpoints. */
    uint64_t written;
    double seconds, max_seconds;
};

int mr_runner_commit_new(const mr_job *job, mr_checkpoint_state *state, mr_comm *comm,
                         mr_runner_commit **out)
{
    mr_runner_commit *c = calloc(1, sizeof *c);
    *out = c;
    if (!c)
        return MR_EXIT_FAILED;
    size_t n = state->n_shards ? state->n_shards : 1;
    *c = (mr_runner_commit){.job = job, .state = state, .comm = comm,
                            .rank = mr_comm_rank(comm), .size = mr_comm_size(comm),
                            .base = state->counters, .started = mr_runner_start_time(),
                            .last = mr_engine_clock_seconds()};
    c->open_count = calloc(n, sizeof *c->open_count);
    c->read_all = calloc(n, sizeof *c->read_all);
    c->changed = calloc(n, sizeof *c->changed);
    c->changed_list = calloc(n, sizeof *c->changed_list);
    c->heads = calloc((size_t)c->size, sizeof *c->heads);
    if (!c->open_count || !c->read_all || !c->changed || !c->changed_list || !c->heads) {
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    return MR_EXIT_OK;
}

void mr_runner_commit_free(mr_runner_commit *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_open; i++)
        free(c->open[i].tokens);
    free(c->open);
    free(c->open_count);
    free(c->read_all);
    free(c->changed);
    free(c->changed_list);
    free(c->heads);
    mr_buf_free(&c->mine);
    free(c->all);
    free(c);
}

static void mark_changed(mr_runner_commit *c, uint32_t shard)
{
    if (!c->changed[shard]) {
        c->changed[shard] = true;
        c->changed_list[c->n_changed++] = shard;
    }
}

/* A shard is done once every line is read and written. */
static void check_done(mr_runner_commit *c, uint32_t shard)
{
    if (c->read_all[shard] && c->open_count[shard] == 0 && !c->state->shards[shard].done) {
        c->state->shards[shard].done = true;
        mark_changed(c, shard);
    }
}

static open_line *find_open(const mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                            uint32_t choice)
{
    for (size_t i = 0; i < c->n_open; i++)
        if (c->open[i].shard == shard && c->open[i].line_no == line_no &&
            c->open[i].choice == choice)
            return &c->open[i];
    return NULL;
}

static void drop_open(mr_runner_commit *c, open_line *o)
{
    c->open_count[o->shard]--;
    free(o->tokens);
    *o = c->open[--c->n_open];
}

static open_line *add_open(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                           uint32_t choice)
{
    if (c->n_open == c->open_cap) {
        size_t cap = c->open_cap ? 2 * c->open_cap : 64;
        open_line *grown = realloc(c->open, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "moerun run: out of memory\n");
            return NULL;
        }
        c->open = grown;
        c->open_cap = cap;
    }
    c->open_count[shard]++;
    open_line *o = &c->open[c->n_open++];
    *o = (open_line){.shard = shard, .line_no = line_no, .choice = choice};
    return o;
}

int mr_runner_commit_open(mr_runner_commit *c, uint32_t shard)
{
    const mr_checkpoint_shard *s = &c->state->shards[shard];
    mark_changed(c, shard);
    for (size_t i = 0; i < s->n_in_flight; i++) {
        const mr_checkpoint_in_flight *f = &s->in_flight[i];
        open_line *o = add_open(c, shard, f->line, f->choice);
        if (!o)
            return MR_EXIT_FAILED;
        o->n_tokens = f->n_tokens;
        if (f->n_tokens && !(o->tokens = malloc(f->n_tokens * sizeof *o->tokens))) {
            fprintf(stderr, "moerun run: out of memory\n");
            return MR_EXIT_FAILED;
        }
        if (f->n_tokens)
            memcpy(o->tokens, f->tokens, f->n_tokens * sizeof *o->tokens);
    }
    return MR_EXIT_OK;
}

bool mr_runner_commit_is_carried(const mr_runner_commit *c, uint32_t shard, uint64_t line_no)
{
    for (size_t i = 0; i < c->n_open; i++)
        if (c->open[i].shard == shard && c->open[i].line_no == line_no && !c->open[i].live)
            return true;
    return false;
}

bool mr_runner_commit_carried(const mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                              uint32_t choice, const int32_t **tokens, size_t *n)
{
    const open_line *o = find_open(c, shard, line_no, choice);
    if (!o || o->live)
        return false;
    *tokens = o->tokens;
    *n = o->n_tokens;
    return true;
}

void mr_runner_commit_read(mr_runner_commit *c, uint32_t shard, uint64_t line_no)
{
    mr_checkpoint_shard *s = &c->state->shards[shard];
    if (line_no >= s->next_line)
        s->next_line = line_no + 1;
    mark_changed(c, shard);
}

int mr_runner_commit_submitted(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                               uint32_t choice, uint64_t handle)
{
    open_line *o = find_open(c, shard, line_no, choice);
    if (!o && !(o = add_open(c, shard, line_no, choice)))
        return MR_EXIT_FAILED;
    free(o->tokens);
    *o = (open_line){.shard = shard, .choice = choice, .live = true, .line_no = line_no,
                     .handle = handle};
    return MR_EXIT_OK;
}

void mr_runner_commit_choice_done(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                                  uint32_t choice)
{
    open_line *o = find_open(c, shard, line_no, choice);
    if (o)
        drop_open(c, o);
}

void mr_runner_commit_read_all(mr_runner_commit *c, uint32_t shard)
{
    c->read_all[shard] = true;
    check_done(c, shard);
}

void mr_runner_commit_written(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                              bool is_error, size_t bytes, int64_t prompt_tokens,
                              int64_t completion_tokens)
{
    mr_checkpoint_shard *s = &c->state->shards[shard];
    for (size_t i = c->n_open; i-- > 0;)
        if (c->open[i].shard == shard && c->open[i].line_no == line_no)
            drop_open(c, &c->open[i]);
    if (is_error) {
        s->errors_offset += bytes;
        c->failed++;
    } else {
        s->results_offset += bytes;
        c->ok++;
        c->tokens_in += (uint64_t)prompt_tokens;
        c->tokens_out += (uint64_t)completion_tokens;
    }
    mark_changed(c, shard);
    check_done(c, shard);
}

bool mr_runner_commit_due(const mr_runner_commit *c)
{
    return mr_engine_clock_seconds() - c->last >= c->job->checkpoint_interval_seconds;
}

void mr_runner_commit_first_step(mr_runner_commit *c)
{
    if (c->stepped)
        return;
    c->stepped = true;
    double seconds = mr_runner_unix_seconds() - c->started;
    if (c->rank == 0 && c->base.attempts > 1)
        printf("job %s: resumed: %.2f s from process start to the first new step\n",
               c->job->job_name, seconds);
    if (c->base.attempts > 1 && !c->base.stopped_by_user)
        c->restart_lost = seconds * c->size;
    /* From here on this attempt's own end decides how the next resume counts. */
    c->base.stopped_by_user = 0;
}

void mr_runner_commit_stopping(mr_runner_commit *c, bool by_user)
{
    c->base.stopped_by_user = by_user;
}

static int gather(mr_runner_commit *c, const void *mine, size_t bytes, void *all)
{
    char err[512];
    if (mr_comm_ctrl_allgather(c->comm, mine, bytes, all, err, sizeof err) == MR_ENGINE_OK)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun run: rank %d: checkpoint: %s\n", c->rank, err);
    return MR_EXIT_FAILED;
}

static int by_shard_line_and_choice(const void *a, const void *b)
{
    const open_line *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    if (x->line_no != y->line_no)
        return x->line_no < y->line_no ? -1 : 1;
    return x->choice < y->choice ? -1 : x->choice > y->choice;
}

/* This rank's changed shards into c->mine, each with its generations in
 * flight in line and choice order; a live line's tokens are what the engine has generated. */
static int pack(mr_runner_commit *c, const mr_engine *engine)
{
    if (c->n_open)
        qsort(c->open, c->n_open, sizeof *c->open, by_shard_line_and_choice);
    for (size_t i = 0; i < c->n_open; i++)
        mark_changed(c, c->open[i].shard);
    c->mine.len = 0;
    int rc = MR_EXIT_OK;
    for (size_t i = 0; rc == MR_EXIT_OK && i < c->n_changed; i++) {
        const mr_checkpoint_shard *s = &c->state->shards[c->changed_list[i]];
        c->changed[s->index] = false;
        size_t first = 0, n = 0;
        while (first < c->n_open && c->open[first].shard != s->index)
            first++;
        while (first + n < c->n_open && c->open[first + n].shard == s->index)
            n++;
        commit_shard head = {s->next_line, s->results_offset, s->errors_offset, n, s->index,
                             s->done};
        rc = mr_buf_append(&c->mine, &head, sizeof head) == MR_JOBS_OK ? MR_EXIT_OK
                                                                       : MR_EXIT_FAILED;
        for (size_t k = first; rc == MR_EXIT_OK && k < first + n; k++) {
            const open_line *o = &c->open[k];
            const int32_t *tokens = o->tokens;
            size_t n_tokens = o->n_tokens;
            if (o->live && !mr_engine_generated(engine, o->handle, &tokens, &n_tokens)) {
                fprintf(stderr, "moerun run: rank %d: checkpoint: line %" PRIu64
                                " of shard %u is not in the engine\n",
                        c->rank, o->line_no, (unsigned)o->shard);
                return MR_EXIT_FAILED;
            }
            commit_line line = {o->line_no, n_tokens, o->choice};
            rc = mr_buf_append(&c->mine, &line, sizeof line) == MR_JOBS_OK &&
                         (n_tokens == 0 || mr_buf_append(&c->mine, tokens,
                                                         n_tokens * sizeof *tokens) == MR_JOBS_OK)
                     ? MR_EXIT_OK
                     : MR_EXIT_FAILED;
        }
    }
    c->n_changed = 0;
    if (rc != MR_EXIT_OK)
        fprintf(stderr, "moerun run: out of memory\n");
    return rc;
}

/* One rank's changed shards (`bytes` of them at p) into rank 0's state. */
static int unpack(mr_runner_commit *c, const char *p, size_t bytes)
{
    const char *end = p + bytes;
    while (p < end) {
        commit_shard head;
        memcpy(&head, p, sizeof head);
        p += sizeof head;
        mr_checkpoint_shard *s = &c->state->shards[head.index];
        mr_checkpoint_in_flight_free(s);
        *s = (mr_checkpoint_shard){.index = head.index, .next_line = head.next_line,
                                   .results_offset = head.results_offset,
                                   .errors_offset = head.errors_offset, .done = head.done != 0};
        if (head.n_in_flight && !(s->in_flight = calloc(head.n_in_flight, sizeof *s->in_flight)))
            return MR_EXIT_FAILED;
        s->n_in_flight = head.n_in_flight;
        for (uint64_t i = 0; i < head.n_in_flight; i++) {
            commit_line line;
            memcpy(&line, p, sizeof line);
            p += sizeof line;
            mr_checkpoint_in_flight *f = &s->in_flight[i];
            size_t size = line.n_tokens * sizeof *f->tokens;
            f->line = line.line;
            f->choice = (uint32_t)line.choice;
            f->n_tokens = line.n_tokens;
            if (size && !(f->tokens = malloc(size)))
                return MR_EXIT_FAILED;
            if (size)
                memcpy(f->tokens, p, size);
            p += size;
        }
    }
    return MR_EXIT_OK;
}

/* Every rank's changed shards and counts into rank 0's state. */
static int gather_progress(mr_runner_commit *c, const mr_engine *engine)
{
    int rc = pack(c, engine);
    commit_head mine = {c->mine.len, c->ok, c->failed, c->tokens_in, c->tokens_out};
    if (rc != MR_EXIT_OK || (rc = gather(c, &mine, sizeof mine, c->heads)) != MR_EXIT_OK)
        return rc;
    size_t most = 0;
    for (int r = 0; r < c->size; r++)
        most = c->heads[r].bytes > most ? (size_t)c->heads[r].bytes : most;
    /* Every rank sends `most` bytes: its own, then whatever follows. */
    size_t need = most * (size_t)c->size;
    if (mr_buf_reserve(&c->mine, most - c->mine.len) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    if (need > c->all_cap) {
        char *grown = realloc(c->all, need);
        if (!grown) {
            fprintf(stderr, "moerun run: out of memory\n");
            return MR_EXIT_FAILED;
        }
        c->all = grown;
        c->all_cap = need;
    }
    if (most > 0 && (rc = gather(c, c->mine.data, most, c->all)) != MR_EXIT_OK)
        return rc;
    if (c->rank != 0)
        return MR_EXIT_OK;
    mr_checkpoint_counters *k = &c->state->counters;
    *k = c->base;
    for (int r = 0; r < c->size; r++) {
        const commit_head *h = &c->heads[r];
        k->requests_ok += h->ok;
        k->requests_failed += h->failed;
        k->tokens_in += h->tokens_in;
        k->tokens_out += h->tokens_out;
        if (unpack(c, c->all + (size_t)r * most, (size_t)h->bytes) != MR_EXIT_OK) {
            fprintf(stderr, "moerun run: out of memory\n");
            return MR_EXIT_FAILED;
        }
    }
    double wall = mr_runner_unix_seconds() - c->started;
    k->wall_seconds += wall;
    k->rank_seconds += wall * c->size;
    k->preemption_lost_seconds += c->restart_lost;
    return MR_EXIT_OK;
}

int mr_runner_commit_checkpoint(mr_runner_commit *c, mr_runner_balancer *balancer,
                                const mr_engine *engine)
{
    double t0 = mr_engine_clock_seconds();
    int rc = gather_progress(c, engine);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_balancer_checkpoint(balancer, c->state);
    int32_t ok = rc == MR_EXIT_OK;
    if (ok && c->rank == 0) {
        char err[1024];
        char *dir = mr_runner_checkpoint_dir(c->job->job_run_dir);
        int w = dir ? mr_checkpoint_write(dir, c->state, (int)c->job->checkpoint_keep, err,
                                          sizeof err)
                    : MR_CHECKPOINT_ENOMEM;
        if (w != MR_CHECKPOINT_OK)
            fprintf(stderr, "moerun run: checkpoint: %s\n", dir ? err : "out of memory");
        ok = w == MR_CHECKPOINT_OK ? 1 : w == MR_CHECKPOINT_ENOSPC ? -1 : 0;
        free(dir);
    }
    /* Every rank learns whether the write is durable: a stop must not
     * report a checkpoint that failed. */
    int32_t *all = malloc((size_t)c->size * sizeof *all);
    if (!all || gather(c, &ok, sizeof ok, all) != MR_EXIT_OK) {
        free(all);
        return MR_EXIT_FAILED;
    }
    /* 1 everywhere: durable; a -1 (a full disk) says why it is not. */
    bool full = false;
    for (int r = 0; r < c->size; r++) {
        full = full || all[r] < 0;
        ok = ok > 0 && all[r] > 0;
    }
    free(all);
    double seconds = mr_engine_clock_seconds() - t0;
    c->last = mr_engine_clock_seconds();
    c->written++;
    c->seconds += seconds;
    c->max_seconds = seconds > c->max_seconds ? seconds : c->max_seconds;
    return ok ? MR_EXIT_OK : full ? MR_EXIT_DISK_FULL : MR_EXIT_FAILED;
}

void mr_runner_commit_report(const mr_runner_commit *c, double wall_seconds)
{
    if (c->rank != 0)
        return;
    double mean = c->written ? c->seconds / (double)c->written : 0;
    printf("checkpoints: %" PRIu64 " written (generation %" PRIu64 "), %.2f ms each on average, "
           "%.2f ms at most; %.3f%% of wall time; %.4f%% at one every %g s\n",
           c->written, c->state->generation, mean * 1e3, c->max_seconds * 1e3,
           wall_seconds > 0 ? 100.0 * c->seconds / wall_seconds : 0.0,
           100.0 * mean / c->job->checkpoint_interval_seconds,
           c->job->checkpoint_interval_seconds);
    const mr_checkpoint_counters *k = &c->state->counters;
    if (k->attempts > 1)
        printf("job %s over %" PRIu64 " attempts: %" PRIu64 " requests, %" PRIu64
               " failed; %.1f s wall, %.1f rank-seconds; %" PRIu64 " preemption%s cost %.1f "
               "rank-seconds\n",
               c->job->job_name, k->attempts, k->requests_ok, k->requests_failed,
               k->wall_seconds, k->rank_seconds, k->preemptions,
               k->preemptions == 1 ? "" : "s", k->preemption_lost_seconds);
}
