/* moerun status: the plan of a run folder, how far the run has got and
 * the checkpoint generations it can resume from. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "runner/runner.h"

/* What the newest good checkpoint committed. */
static void print_committed(const mr_checkpoint_state *st, uint64_t total)
{
    const mr_checkpoint_counters *k = &st->counters;
    size_t done = 0;
    for (size_t i = 0; i < st->n_shards; i++)
        done += st->shards[i].done;
    uint64_t lines = k->requests_ok + k->requests_failed;
    printf("  committed: %" PRIu64 " results, %" PRIu64 " error records (%.1f%% of the "
           "lines); %zu of %zu shards done (checkpoint generation %" PRIu64 ")\n",
           k->requests_ok, k->requests_failed,
           total ? 100.0 * (double)lines / (double)total : 100.0, done, st->n_shards,
           st->generation);
    printf("  attempts: %" PRIu64 ", %" PRIu64 " preemption%s costing %.1f rank-seconds, %" PRIu64
           " user stop%s; %.1f s wall, %.1f rank-seconds in all\n",
           k->attempts, k->preemptions, k->preemptions == 1 ? "" : "s",
           k->preemption_lost_seconds, k->user_stops, k->user_stops == 1 ? "" : "s",
           k->wall_seconds, k->rank_seconds);
}

static void print_generations(const char *dir)
{
    char err[1024];
    mr_checkpoint_info *list = NULL;
    size_t n = 0;
    if (mr_checkpoint_list(dir, &list, &n, err, sizeof err) != MR_CHECKPOINT_OK) {
        printf("  checkpoints: %s\n", err);
        return;
    }
    printf("  checkpoints in %s: %zu\n", dir, n);
    double now = mr_runner_unix_seconds();
    for (size_t i = 0; i < n; i++) {
        printf("    %-24s %8.1f KiB  written %.1f s ago  %s%s\n", list[i].name,
               (double)list[i].bytes / 1024, now - list[i].written,
               list[i].good ? "good" : "damaged: ", list[i].good ? "" : list[i].problem);
    }
    free(list);
}

/* The newest good checkpoint; rc as mr_checkpoint_load_latest, the
 * message or warning in `note`. */
static int load_checkpoint(const char *dir, mr_checkpoint_state *st, char *note, size_t len)
{
    static char err[4096];
    note[0] = '\0';
    int rc = mr_checkpoint_load_latest(dir, st, note, len, err, sizeof err);
    if (rc != MR_CHECKPOINT_OK)
        snprintf(note, len, "%s", err);
    return rc;
}

int mr_runner_status(int argc, char **argv)
{
    static char note[4096];
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, 0, "RUN_DIR", &args);
    const char *dir = args.operand;
    mr_plan plan = {0};
    mr_checkpoint_state st = {0};
    char *ckpt = NULL;
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    uint64_t results = 0, errors = 0;
    rc = mr_runner_load_plan(dir, &plan);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(dir, MR_RUN_RESULTS, &results);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(dir, MR_RUN_ERRORS, &errors);
    if (rc == MR_EXIT_OK && !(ckpt = mr_runner_checkpoint_dir(dir)))
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK) {
        int got = load_checkpoint(ckpt, &st, note, sizeof note);
        uint64_t total = plan.n_requests + plan.n_invalid + plan.n_duplicates;
        uint64_t done = results + errors;
        uint64_t committed = st.counters.requests_ok + st.counters.requests_failed;
        const char *state = done >= total && done > 0 ? "finished"
                            : done == 0 && committed == 0 ? "planned, nothing served yet"
                                                          : "in progress or stopped";
        printf("run %s: %s\n", dir, state);
        char owner[1024];
        int pid;
        if (mr_runner_lock_owner(dir, &pid, owner, sizeof owner))
            printf("  owner: %s\n", owner[0] ? owner : "a moerun whose record is not written yet");
        else
            printf("  owner: none (no moerun is running this folder)\n");
        mr_runner_print_plan(stdout, &plan);
        printf("  written: %llu results, %llu error records (%llu of %llu lines, %.1f%%)\n",
               (unsigned long long)results, (unsigned long long)errors,
               (unsigned long long)done, (unsigned long long)total,
               total ? 100.0 * (double)done / (double)total : 100.0);
        if (got == MR_CHECKPOINT_OK)
            print_committed(&st, total);
        if (got == MR_CHECKPOINT_ENOENT)
            printf("  committed: no checkpoint yet\n");
        else if (note[0])
            printf("  %s: %s\n", got == MR_CHECKPOINT_OK ? "warning" : "committed", note);
        if (got != MR_CHECKPOINT_ENOENT)
            print_generations(ckpt);
    }
    free(ckpt);
    mr_checkpoint_state_free(&st);
    mr_plan_free(&plan);
    mr_runner_free_args(&args);
    return rc;
}
