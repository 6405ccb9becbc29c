/*
 * Resuming: what the run folder holds decides whether a job starts afresh
 * or goes on.  No checkpoint: plan the job and start.  A checkpoint of the
 * same job (the same fingerprint: the job without the keys that may change
 * on resume, the model's config, the inputs' content shard by shard): reuse
 * its plan.json and go on from its committed progress.  A checkpoint of
 * another job is refused, listing what changed, unless --force-new, which
 * removes the old run's state and starts over.
 *
 * Either way the planning rank writes job.ini (the job as this attempt runs
 * it) and a first checkpoint generation, so that a kill at any moment
 * leaves a run folder that resumes.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "runner/report.h"
#include "runner/runner.h"

char *mr_runner_checkpoint_dir(const char *run_dir)
{
    return mr_runner_path(run_dir, MR_CHECKPOINT_DIR);
}

/* Each input with the shards the plan cut from it: what its fingerprint
 * hashes.  Both arrays are malloc'd; the paths point into the plan. */
static mr_checkpoint_input *inputs_of_plan(const mr_plan *plan, mr_checkpoint_input_shard **all)
{
    mr_checkpoint_input *in = calloc(plan->n_files + 1, sizeof *in);
    mr_checkpoint_input_shard *shards = *all = calloc(plan->n_shards + 1, sizeof *shards);
    if (!in || !shards) {
        free(in);
        return NULL;
    }
    /* Shards are in file order, a file's in byte order (jobs.h). */
    for (size_t i = 0, s = 0; i < plan->n_files; i++) {
        in[i] = (mr_checkpoint_input){.path = plan->files[i].path,
                                      .compressed = plan->files[i].compressed,
                                      .shards = shards + s};
        for (; s < plan->n_shards && plan->shards[s].file_index == i; s++, in[i].n_shards++) {
            const mr_shard *from = &plan->shards[s];
            shards[s] = (mr_checkpoint_input_shard){from->id, from->begin, from->end,
                                                    from->first_line, from->n_lines, 0};
        }
    }
    return in;
}

/* The job's inputs with the shards the checkpoint hashed (by path; a new
 * input has none).  The array, malloc'd, points into the job and `then`. */
static mr_checkpoint_input *inputs_like(const mr_job *job, const mr_checkpoint_fingerprint *then)
{
    mr_checkpoint_input *in = calloc(job->input_files.count + 1, sizeof *in);
    for (size_t i = 0; in && i < job->input_files.count; i++) {
        in[i].path = job->input_files.items[i];
        for (size_t j = 0; j < then->n_inputs; j++)
            if (strcmp(then->inputs[j].path, in[i].path) == 0) {
                in[i] = then->inputs[j];
                break;
            }
    }
    return in;
}

/* What a resumed run must share with the run it continues: the job
 * without the keys that may change, the model's config, and the inputs
 * (read whole when `hash`; only their sizes otherwise). */
static int make_fingerprint(const mr_job *job, const mr_checkpoint_input *inputs, bool hash,
                            mr_checkpoint_fingerprint *fp)
{
    char err[1024];
    mr_buf text = {0}, config = {0};
    char *config_path = mr_runner_path(job->model_path, "config.json");
    int rc = inputs && config_path && mr_job_format_fingerprint(job, &text) == MR_JOBS_OK &&
                     mr_buf_append(&text, "", 1) == MR_JOBS_OK
                 ? MR_EXIT_OK
                 : MR_EXIT_FAILED;
    /* A model folder without a config is the model loader's to report. */
    if (rc == MR_EXIT_OK &&
        (mr_runner_read_file(config_path, &config, err, sizeof err) != MR_JOBS_OK ||
         mr_buf_append(&config, "", 1) != MR_JOBS_OK)) {
        mr_buf_free(&config);
        config = (mr_buf){0};
    }
    if (rc == MR_EXIT_OK &&
        mr_checkpoint_fingerprint_make(fp, text.data, config.data, inputs,
                                       job->input_files.count, hash, err, sizeof err) !=
            MR_CHECKPOINT_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        rc = MR_EXIT_FAILED;
    } else if (rc != MR_EXIT_OK) {
        fprintf(stderr, "moerun run: out of memory\n");
    }
    free(config_path);
    mr_buf_free(&text);
    mr_buf_free(&config);
    return rc;
}

#define REMOVED_DIR MR_CHECKPOINT_DIR ".removed"

static int remove_in(const char *run_dir, const char *name)
{
    char *path = mr_runner_path(run_dir, name);
    int rc = path ? mr_runner_remove_tree(path) : MR_EXIT_FAILED;
    free(path);
    return rc;
}

/* --force-new: everything an earlier run wrote into the run folder.  The
 * checkpoints go first, in one rename, so that a kill half way leaves the
 * old run whole or a folder that starts afresh, never old progress without
 * the parts it counts. */
static int remove_run_state(const char *run_dir)
{
    static const char *const names[] = {
        REMOVED_DIR,      MR_RUN_PARTS,       MR_RUN_PARTS ".joined", MR_RUN_RESULTS,
        MR_RUN_ERRORS,    MR_RUN_EPLB_LOG,    MR_RUN_EXPERT_LOAD,     MR_RUN_TIMELINE,
        MR_RUN_METRICS,   MR_RUN_REPORT_JSON, MR_RUN_REPORT_MD,       MR_RUN_HEATMAP_SVG,
        MR_RUN_BUSY_SVG,  MR_RUN_PLAN,        MR_RUN_JOB,             MR_RUN_HEARTBEATS};
    char *ckpt = mr_runner_checkpoint_dir(run_dir), *removed = mr_runner_path(run_dir, REMOVED_DIR);
    int rc = ckpt && removed ? remove_in(run_dir, REMOVED_DIR) : MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK && rename(ckpt, removed) != 0 && errno != ENOENT) {
        fprintf(stderr, "moerun run: renaming %s: %s\n", ckpt, strerror(errno));
        rc = MR_EXIT_FAILED;
    }
    for (size_t i = 0; rc == MR_EXIT_OK && i < sizeof names / sizeof names[0]; i++)
        rc = remove_in(run_dir, names[i]);
    free(ckpt);
    free(removed);
    return rc;
}

static void refuse_changed(const mr_job *job, const char *what)
{
    fprintf(stderr, "moerun run: %s holds a checkpoint of another job; what changed:\n",
            job->job_run_dir);
    for (const char *line = what; *line;) {
        size_t len = strcspn(line, "\n");
        fprintf(stderr, "  %.*s\n", (int)len, line);
        line += len + (line[len] == '\n');
    }
    fprintf(stderr, "Undo the change, give the job another [job] run_dir, or start over with "
                    "--force-new (which removes the old run's results).\n");
}

/*
 * Loads the run folder's newest good checkpoint and compares its
 * fingerprint with the job's (*now, made with the checkpoint's shards;
 * the inputs are read whole when `hash`).  *loaded when it is this job's
 * (then *state holds it).  A changed job, or a checkpoint that cannot be
 * read, is refused unless force_new, which removes the old run's state
 * without reading the inputs.
 */
static int check(const mr_job *job, bool force_new, bool quiet, bool hash,
                 mr_checkpoint_fingerprint *now, mr_checkpoint_state *state, bool *loaded)
{
    static char warning[4096], err[4096], what[8192];
    *loaded = false;
    char *dir = mr_runner_checkpoint_dir(job->job_run_dir);
    if (!dir)
        return MR_EXIT_FAILED;
    int got = mr_checkpoint_load_latest(dir, state, warning, sizeof warning, err, sizeof err);
    free(dir);
    int rc = MR_EXIT_OK;
    if (got == MR_CHECKPOINT_OK && !force_new) {
        if (warning[0] && !quiet)
            fprintf(stderr, "moerun run: warning: %s\n", warning);
        mr_checkpoint_input *inputs = inputs_like(job, &state->fingerprint);
        rc = make_fingerprint(job, inputs, hash, now);
        free(inputs);
        if (rc == MR_EXIT_OK &&
            mr_checkpoint_fingerprint_diff(&state->fingerprint, now, what, sizeof what) == 0)
            *loaded = true;
        else if (rc == MR_EXIT_OK) {
            refuse_changed(job, what);
            rc = MR_EXIT_INVALID;
        }
    } else if (got != MR_CHECKPOINT_OK && got != MR_CHECKPOINT_ENOENT &&
               !(force_new && (got == MR_CHECKPOINT_EINVAL || got == MR_CHECKPOINT_EVERSION))) {
        fprintf(stderr, "moerun run: %s\n", err);
        if (got == MR_CHECKPOINT_EINVAL || got == MR_CHECKPOINT_EVERSION)
            fprintf(stderr, "Start over with --force-new (which removes the old run's "
                            "results), or give the job another [job] run_dir.\n");
        rc = got == MR_CHECKPOINT_EINVAL || got == MR_CHECKPOINT_EVERSION ? MR_EXIT_INVALID
                                                                           : MR_EXIT_FAILED;
    }
    if (!*loaded)
        mr_checkpoint_state_free(state);
    if (rc == MR_EXIT_OK && force_new)
        rc = remove_run_state(job->job_run_dir);
    return rc;
}

/* Before the ranks start: refuses what the planning rank would, but for an
 * input changed at the same size, which only reading it shows; the
 * planning rank reads the inputs, once per start. */
int mr_runner_resume_check(const mr_job *job, bool force_new)
{
    mr_checkpoint_fingerprint fp = {0};
    mr_checkpoint_state state = {0};
    bool loaded;
    int rc = check(job, force_new, true, false, &fp, &state, &loaded);
    mr_checkpoint_state_free(&state);
    mr_checkpoint_fingerprint_free(&fp);
    return rc;
}

static int write_buf(const char *dir, const char *name, const mr_buf *buf)
{
    char err[512];
    char *path = mr_runner_path(dir, name);
    int rc = path ? mr_runner_write_atomic(path, buf->data, buf->len, err, sizeof err)
                  : MR_JOBS_ENOMEM;
    int exit_code = rc == MR_JOBS_OK ? MR_EXIT_OK : MR_EXIT_FAILED;
    if (rc == MR_JOBS_EIO)
        exit_code = mr_runner_write_failed(path, errno);
    else if (rc != MR_JOBS_OK)
        fprintf(stderr, "moerun run: %s\n", path ? err : "out of memory");
    free(path);
    return exit_code;
}

/* RUN_DIR/job.ini: the job as this attempt runs it. */
static int write_job(const mr_job *job)
{
    char err[512];
    if (mr_runner_mkdir_p(job->job_run_dir, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: [job] run_dir: %s\n", err);
        return MR_EXIT_FAILED;
    }
    mr_buf text = {0};
    int rc = mr_job_format(job, &text) == MR_JOBS_OK ? write_buf(job->job_run_dir, MR_RUN_JOB,
                                                                 &text)
                                                     : MR_EXIT_FAILED;
    mr_buf_free(&text);
    return rc;
}

/* Plans the job, writes plan.json and shows the plan. */
static int plan_job(const mr_job *job, mr_plan *plan)
{
    mr_buf text = {0};
    int rc = mr_runner_build_plan(job, plan);
    if (rc == MR_EXIT_OK)
        rc = write_job(job);
    if (rc == MR_EXIT_OK)
        rc = mr_plan_format(plan, &text) == MR_JOBS_OK
                 ? write_buf(job->job_run_dir, MR_RUN_PLAN, &text)
                 : MR_EXIT_FAILED;
    mr_buf_free(&text);
    if (rc == MR_EXIT_OK) {
        printf("job %s: planned into %s/%s\n", job->job_name, job->job_run_dir, MR_RUN_PLAN);
        mr_runner_print_plan(stdout, plan);
        fflush(stdout);
    }
    return rc;
}

static int fresh_state(const mr_job *job, mr_plan *plan, mr_checkpoint_state *state)
{
    char err[512];
    /* What a --force-new that was cut short left. */
    int rc = remove_in(job->job_run_dir, REMOVED_DIR);
    if (rc == MR_EXIT_OK)
        rc = plan_job(job, plan);
    if (rc == MR_EXIT_OK && mr_checkpoint_state_init(state, plan->n_shards, err, sizeof err) !=
                                MR_CHECKPOINT_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        rc = MR_EXIT_FAILED;
    }
    if (rc == MR_EXIT_OK) {
        state->created = (int64_t)time(NULL);
        state->counters.attempts = 1;
    }
    return rc;
}

static double modified(const char *path)
{
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return 0;
    return (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9;
}

/* When the last attempt was last seen working: the newest write to a part
 * file or to the meters' files (rewritten every progress_seconds).  The
 * work after the last checkpoint, which a resume redoes, ended about then. */
static double last_seen(const char *run_dir)
{
    static const char *const meters[] = {MR_RUN_TIMELINE, MR_RUN_METRICS};
    char *dir = mr_runner_path(run_dir, MR_RUN_PARTS);
    DIR *d = dir ? opendir(dir) : NULL;
    double newest = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *path = e->d_name[0] != '.' ? mr_runner_path(dir, e->d_name) : NULL;
        newest = fmax(newest, modified(path));
        free(path);
    }
    if (d)
        closedir(d);
    free(dir);
    for (size_t i = 0; i < sizeof meters / sizeof *meters; i++) {
        char *path = mr_runner_path(run_dir, meters[i]);
        newest = fmax(newest, modified(path));
        free(path);
    }
    return newest;
}

static bool all_done(const mr_checkpoint_state *state)
{
    for (size_t i = 0; i < state->n_shards; i++)
        if (!state->shards[i].done)
            return false;
    return true;
}

static int resumed_state(const mr_job *job, mr_plan *plan, mr_checkpoint_state *state,
                         bool *finished)
{
    int rc = mr_runner_load_plan(job->job_run_dir, plan);
    if (rc == MR_EXIT_OK && plan->n_shards != state->n_shards) {
        fprintf(stderr, "moerun run: %s/%s has %zu shards but its checkpoint %zu: the run folder "
                        "is damaged; start over with --force-new\n",
                job->job_run_dir, MR_RUN_PLAN, plan->n_shards, state->n_shards);
        rc = MR_EXIT_INVALID;
    }
    if (rc != MR_EXIT_OK)
        return rc;
    uint64_t done = 0, lines = state->counters.requests_ok + state->counters.requests_failed;
    /* The parts are removed only once both joined files are in place, and
     * joined only once every shard is done: no parts but the joined files
     * and some progress is a finished run, even when a damaged newest
     * generation left an older one to load. */
    *finished = (all_done(state) || lines > 0) && mr_runner_parts_joined(job->job_run_dir);
    for (size_t i = 0; i < state->n_shards; i++)
        done += state->shards[i].done;
    if (*finished) {
        printf("job %s: already finished in %s (%" PRIu64 " results, %" PRIu64
               " error records); --force-new runs it again\n",
               job->job_name, job->job_run_dir, state->counters.requests_ok,
               state->counters.requests_failed);
        return MR_EXIT_OK;
    }
    uint64_t in_flight = 0, generations = 0, tokens = 0;
    for (size_t i = 0; i < state->n_shards; i++) {
        const mr_checkpoint_shard *sh = &state->shards[i];
        generations += sh->n_in_flight;
        for (size_t k = 0; k < sh->n_in_flight; k++) {
            /* a line's generations (n > 1) are next to each other */
            in_flight += k == 0 || sh->in_flight[k].line != sh->in_flight[k - 1].line;
            tokens += sh->in_flight[k].n_tokens;
        }
    }
    double ago = (double)time(NULL) - state->written;
    printf("job %s: resuming from checkpoint generation %" PRIu64 " in %s/%s, written %.0f s ago: "
           "%" PRIu64 " of %zu shards done, %" PRIu64 " records committed, %" PRIu64
           " requests in flight go on from the %" PRIu64 " tokens they had generated",
           job->job_name, state->generation, job->job_run_dir, MR_CHECKPOINT_DIR,
           ago > 0 ? ago : 0, done, state->n_shards, lines, in_flight, tokens);
    if (generations > in_flight)
        printf(" (in %" PRIu64 " generations of their choices)", generations);
    printf("\n");
    fflush(stdout);
    mr_checkpoint_counters *k = &state->counters;
    /* The stopped attempt held its ranks past its last checkpoint: that
     * time is paid for, and its work is done again.  A user's stop is no
     * preemption: its time counts, not as lost to one. */
    double redone = fmax(last_seen(job->job_run_dir) - state->written, 0);
    k->attempts++;
    k->wall_seconds += redone;
    k->rank_seconds += redone * (double)job->parallel_ranks;
    if (k->stopped_by_user) {
        k->user_stops++;
    } else {
        k->preemptions++;
        k->preemption_lost_seconds += redone * (double)job->parallel_ranks;
    }
    return MR_EXIT_OK;
}

int mr_runner_prepare(const mr_job *job, bool force_new, mr_plan *plan,
                      mr_checkpoint_state *state, bool *finished)
{
    char err[1024];
    mr_checkpoint_fingerprint fp = {0};
    bool loaded = false;
    *finished = false;
    int rc = check(job, force_new, false, true, &fp, state, &loaded);
    if (rc == MR_EXIT_OK)
        rc = loaded ? resumed_state(job, plan, state, finished) : fresh_state(job, plan, state);
    /* A fresh run's inputs are hashed once planned, shard by shard. */
    if (rc == MR_EXIT_OK && !loaded) {
        mr_checkpoint_input_shard *shards = NULL;
        mr_checkpoint_input *inputs = inputs_of_plan(plan, &shards);
        rc = make_fingerprint(job, inputs, true, &fp);
        free(inputs);
        free(shards);
    }
    if (rc == MR_EXIT_OK) {
        mr_checkpoint_fingerprint_free(&state->fingerprint);
        state->fingerprint = fp;
        fp = (mr_checkpoint_fingerprint){0};
    }
    if (rc == MR_EXIT_OK && loaded && !*finished)
        rc = write_job(job);
    char *dir = mr_runner_checkpoint_dir(job->job_run_dir);
    int written = !dir ? MR_CHECKPOINT_ENOMEM
                       : rc == MR_EXIT_OK && !*finished
                             ? mr_checkpoint_write(dir, state, (int)job->checkpoint_keep, err,
                                                   sizeof err)
                             : MR_CHECKPOINT_OK;
    if (rc == MR_EXIT_OK && written != MR_CHECKPOINT_OK) {
        fprintf(stderr, "moerun run: checkpoint: %s\n", dir ? err : "out of memory");
        rc = written == MR_CHECKPOINT_ENOSPC ? MR_EXIT_DISK_FULL : MR_EXIT_FAILED;
    }
    free(dir);
    mr_checkpoint_fingerprint_free(&fp);
    return rc;
}

int mr_runner_load_state(const mr_job *job, mr_checkpoint_state *state)
{
    static char warning[4096], err[4096];
    char *dir = mr_runner_checkpoint_dir(job->job_run_dir);
    int got = dir ? mr_checkpoint_load_latest(dir, state, warning, sizeof warning, err,
                                              sizeof err)
                  : MR_CHECKPOINT_ENOMEM;
    free(dir);
    if (got == MR_CHECKPOINT_OK)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun run: %s\n", got == MR_CHECKPOINT_ENOMEM ? "out of memory" : err);
    return MR_EXIT_FAILED;
}
