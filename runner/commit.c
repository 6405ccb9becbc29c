/*
 * The commit protocol: a shard's progress reaches a checkpoint only after
 * the lines it counts are durable.
 *
 * Every rank keeps the run state it loaded and updates, in its own copy,
 * the shards it serves: lines read but not yet written (the reorder window
 * holds them), the next line to write and the part files' lengths.  At a
 * checkpoint every rank has already synced its open part files; the ranks
 * then allgather what changed since the last one, rank 0 merges it into its
 * copy with the counters, adds the placement and load window, and writes a
 * generation; a last allgather tells every rank whether that write is
 * durable.  Every rank makes the same collective calls in the same order,
 * as the work loop calls this between the same two steps everywhere.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "runner/runner.h"

/* What a rank sends at a checkpoint: a head, then its changed shards. */
typedef struct {
    uint64_t n_changed, ok, failed, tokens_in, tokens_out;
} commit_head;

typedef struct {
    uint64_t next_line, results_offset, errors_offset;
    uint32_t index, done;
} commit_shard;

struct mr_runner_commit {
    const mr_job *job;
    mr_checkpoint_state *state; /* this rank's copy; rank 0's is written */
    mr_comm *comm;
    int rank, size;
    uint32_t *pending; /* [n_shards]: lines read, not yet written */
    bool *read_all;    /* [n_shards] */
    bool *changed;     /* [n_shards]: since the last checkpoint */
    uint32_t *changed_list;
    size_t n_changed;
    /* Written by this rank in this attempt. */
    uint64_t ok, failed, tokens_in, tokens_out;
    mr_checkpoint_counters base; /* the state's counters when the attempt began */
    double started;              /* Unix time the attempt's processes started */
    double restart_lost;         /* rank seconds from that start to the first step */
    bool stepped;
    double last;                 /* monotonic time of the last checkpoint */
    /* Allgather buffers. */
    commit_head *heads;
    commit_shard *shards;
    size_t shards_cap;
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
                            .last = mr_clock_seconds()};
    c->pending = calloc(n, sizeof *c->pending);
    c->read_all = calloc(n, sizeof *c->read_all);
    c->changed = calloc(n, sizeof *c->changed);
    c->changed_list = calloc(n, sizeof *c->changed_list);
    c->heads = calloc((size_t)c->size, sizeof *c->heads);
    if (!c->pending || !c->read_all || !c->changed || !c->changed_list || !c->heads) {
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    return MR_EXIT_OK;
}

void mr_runner_commit_free(mr_runner_commit *c)
{
    if (!c)
        return;
    free(c->pending);
    free(c->read_all);
    free(c->changed);
    free(c->changed_list);
    free(c->heads);
    free(c->shards);
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
    if (c->read_all[shard] && c->pending[shard] == 0 && !c->state->shards[shard].done) {
        c->state->shards[shard].done = true;
        mark_changed(c, shard);
    }
}

void mr_runner_commit_read(mr_runner_commit *c, uint32_t shard)
{
    c->pending[shard]++;
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
    s->next_line = line_no + 1;
    if (is_error) {
        s->errors_offset += bytes;
        c->failed++;
    } else {
        s->results_offset += bytes;
        c->ok++;
        c->tokens_in += (uint64_t)prompt_tokens;
        c->tokens_out += (uint64_t)completion_tokens;
    }
    c->pending[shard]--;
    mark_changed(c, shard);
    check_done(c, shard);
}

bool mr_runner_commit_due(const mr_runner_commit *c)
{
    return mr_clock_seconds() - c->last >= c->job->checkpoint_interval_seconds;
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
    if (mr_comm_allgather(c->comm, mine, bytes, all, err, sizeof err) == MR_ENGINE_OK)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun run: rank %d: checkpoint: %s\n", c->rank, err);
    return MR_EXIT_FAILED;
}

/* Every rank's changed shards and counts into rank 0's state. */
static int gather_progress(mr_runner_commit *c)
{
    commit_head mine = {c->n_changed, c->ok, c->failed, c->tokens_in, c->tokens_out};
    int rc = gather(c, &mine, sizeof mine, c->heads);
    if (rc != MR_EXIT_OK)
        return rc;
    size_t most = 0;
    for (int r = 0; r < c->size; r++)
        most = c->heads[r].n_changed > most ? (size_t)c->heads[r].n_changed : most;
    size_t need = most * ((size_t)c->size + 1);
    if (need > c->shards_cap) {
        commit_shard *grown = realloc(c->shards, need * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "moerun run: out of memory\n");
            return MR_EXIT_FAILED;
        }
        c->shards = grown;
        c->shards_cap = need;
    }
    /* This rank's entries go after the gathered ones: [size * most | most]. */
    commit_shard *own = c->shards + (size_t)c->size * most;
    if (most > 0)
        memset(own, 0, most * sizeof *own);
    for (size_t i = 0; i < c->n_changed; i++) {
        const mr_checkpoint_shard *s = &c->state->shards[c->changed_list[i]];
        own[i] = (commit_shard){s->next_line, s->results_offset, s->errors_offset, s->index,
                                s->done};
        c->changed[s->index] = false;
    }
    c->n_changed = 0;
    if (most > 0 && (rc = gather(c, own, most * sizeof *own, c->shards)) != MR_EXIT_OK)
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
        for (uint64_t i = 0; r > 0 && i < h->n_changed; i++) {
            const commit_shard *e = &c->shards[(size_t)r * most + i];
            c->state->shards[e->index] = (mr_checkpoint_shard){
                .index = e->index, .next_line = e->next_line,
                .results_offset = e->results_offset, .errors_offset = e->errors_offset,
                .done = e->done != 0};
        }
    }
    double wall = mr_runner_unix_seconds() - c->started;
    k->wall_seconds += wall;
    k->rank_seconds += wall * c->size;
    k->preemption_lost_seconds += c->restart_lost;
    return MR_EXIT_OK;
}

int mr_runner_commit_checkpoint(mr_runner_commit *c, mr_runner_balancer *balancer)
{
    double t0 = mr_clock_seconds();
    int rc = gather_progress(c);
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
    double seconds = mr_clock_seconds() - t0;
    c->last = mr_clock_seconds();
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
