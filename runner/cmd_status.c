/* moerun status: the plan of a run folder, how far the run has got and
 * the checkpoint generations it can resume from; with --json, the same as
 * one JSON object.
 *
 * How far the run has got is the last sample of timeline.jsonl: the
 * figures of the progress line the job printed then, in its words, so
 * that status and the progress line never disagree.  What the newest
 * checkpoint committed (what a resume starts from) and the joined result
 * files come after it, each said for what it is. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "runner/report.h"
#include "runner/runner.h"

typedef struct {
    const char *dir;
    mr_plan plan;
    uint64_t planned;
    char owner[1024];
    int pid;
    bool owned;
    cJSON *sample; /* timeline.jsonl's last record, or NULL */
    bool joined;   /* results.jsonl and errors.jsonl are the job's */
    uint64_t results, errors;
    int got; /* mr_checkpoint_load_latest's verdict */
    char note[4096];
    mr_checkpoint_state st;
    char *ckpt;
} status;

static double num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* The last line of timeline.jsonl that is a record (a killed attempt may
 * leave half a line after it). */
static cJSON *last_sample(const char *dir)
{
    FILE *f;
    char *path, *line = NULL;
    size_t cap = 0;
    cJSON *last = NULL;
    mr_runner_open_run_file(dir, MR_RUN_TIMELINE, &f, &path);
    for (ssize_t len; f && (len = getline(&line, &cap, f)) > 0;) {
        cJSON *rec = cJSON_ParseWithLength(line, (size_t)len);
        if (!cJSON_IsObject(rec)) {
            cJSON_Delete(rec);
            continue;
        }
        cJSON_Delete(last);
        last = rec;
    }
    free(line);
    if (f)
        fclose(f);
    free(path);
    return last;
}

/* The progress line of a timeline record, as the job printed it then. */
static void sample_line(const status *s, const cJSON *rec, mr_runner_progress_line *p)
{
    const cJSON *eta = cJSON_GetObjectItemCaseSensitive(rec, "eta_seconds");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(rec, "job");
    *p = (mr_runner_progress_line){
        .job = cJSON_IsString(name) ? name->valuestring : "",
        .done = (uint64_t)(num(rec, "requests_ok") + num(rec, "requests_failed")),
        .planned = s->planned,
        .window_seconds = num(rec, "window_seconds"),
        .tokens_per_second = num(rec, "tokens_per_second"),
        .generated_per_second = num(rec, "generated_per_second"),
        .requests_per_second = num(rec, "requests_per_second"),
        .eta_seconds = cJSON_IsNumber(eta) ? eta->valuedouble : -1,
        .rank_imbalance = num(rec, "rank_imbalance")};
}

static const char *state_of(const status *s)
{
    uint64_t lines = s->results + s->errors;
    if (s->joined && (lines >= s->planned))
        return "finished";
    if (s->owned)
        return "running";
    bool committed = s->got == MR_CHECKPOINT_OK &&
                     s->st.counters.requests_ok + s->st.counters.requests_failed > 0;
    return !s->sample && !committed && lines == 0 ? "planned, nothing served yet" : "stopped";
}

static double share(uint64_t done, uint64_t total)
{
    return total ? 100.0 * (double)done / (double)total : 100.0;
}

static size_t shards_done(const mr_checkpoint_state *st)
{
    size_t done = 0;
    for (size_t i = 0; i < st->n_shards; i++)
        done += st->shards[i].done;
    return done;
}

/* ---- text ---- */

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

static void print_text(const status *s)
{
    printf("run %s: %s\n", s->dir, state_of(s));
    if (s->owned)
        printf("  owner: %s\n", s->owner[0] ? s->owner : "a moerun whose record is not written yet");
    else
        printf("  owner: none (no moerun is running this folder)\n");
    mr_runner_print_plan(stdout, &s->plan);
    if (s->sample) {
        char text[512];
        mr_runner_progress_line p;
        sample_line(s, s->sample, &p);
        mr_runner_progress_format(&p, text, sizeof text);
        printf("  progress: %s (the %s sample of attempt %.0f, %.1f s ago)\n", text,
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s->sample, "final")) ? "final"
                                                                                 : "last",
               num(s->sample, "attempt"), mr_runner_unix_seconds() - num(s->sample, "time"));
    } else {
        printf("  progress: no sample yet (timeline.jsonl)\n");
    }
    if (s->joined)
        printf("  joined: %" PRIu64 " results, %" PRIu64 " error records in results.jsonl and "
               "errors.jsonl (%" PRIu64 "/%" PRIu64 " requests done)\n",
               s->results, s->errors, s->results + s->errors, s->planned);
    else
        printf("  joined: not yet: records wait in parts/ until the job ends\n");
    if (s->got == MR_CHECKPOINT_OK) {
        const mr_checkpoint_counters *k = &s->st.counters;
        uint64_t done = k->requests_ok + k->requests_failed;
        printf("  committed: %" PRIu64 "/%" PRIu64 " requests done (%.1f%%: %" PRIu64
               " results, %" PRIu64 " error records), %zu of %zu shards, in checkpoint "
               "generation %" PRIu64 "\n",
               done, s->planned, share(done, s->planned), k->requests_ok, k->requests_failed,
               shards_done(&s->st), s->st.n_shards, s->st.generation);
        printf("  attempts: %" PRIu64 ", %" PRIu64 " preemption%s costing %.1f rank-seconds, "
               "%" PRIu64 " user stop%s; %.1f s wall, %.1f rank-seconds in all\n",
               k->attempts, k->preemptions, k->preemptions == 1 ? "" : "s",
               k->preemption_lost_seconds, k->user_stops, k->user_stops == 1 ? "" : "s",
               k->wall_seconds, k->rank_seconds);
    }
    if (s->got == MR_CHECKPOINT_ENOENT)
        printf("  committed: no checkpoint yet\n");
    else if (s->note[0])
        printf("  %s: %s\n", s->got == MR_CHECKPOINT_OK ? "warning" : "committed", s->note);
    if (s->got != MR_CHECKPOINT_ENOENT)
        print_generations(s->ckpt);
}

/* ---- JSON ---- */

static cJSON *plan_json(const status *s)
{
    const mr_plan *plan = &s->plan;
    cJSON *j = cJSON_CreateObject(), *files = cJSON_AddArrayToObject(j, "files");
    for (size_t i = 0; i < plan->n_files; i++) {
        const mr_plan_file *f = &plan->files[i];
        size_t shards = 0;
        for (size_t k = 0; k < plan->n_shards; k++)
            shards += plan->shards[k].file_index == i;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", f->path);
        cJSON_AddNumberToObject(o, "lines", (double)f->lines);
        cJSON_AddNumberToObject(o, "bytes", (double)f->bytes);
        cJSON_AddBoolToObject(o, "compressed", f->compressed);
        cJSON_AddNumberToObject(o, "shards", (double)shards);
        cJSON_AddItemToArray(files, o);
    }
    cJSON_AddNumberToObject(j, "requests", (double)plan->n_requests);
    cJSON_AddNumberToObject(j, "invalid", (double)plan->n_invalid);
    cJSON_AddNumberToObject(j, "duplicates", (double)plan->n_duplicates);
    cJSON_AddNumberToObject(j, "planned", (double)s->planned);
    cJSON_AddNumberToObject(j, "shards", (double)plan->n_shards);
    return j;
}

static cJSON *progress_json(const status *s)
{
    if (!s->sample)
        return cJSON_CreateNull();
    static const char *const copied[] = {"attempt",           "time",
                                         "seconds",           "job_seconds",
                                         "requests_ok",       "requests_failed",
                                         "tokens_prompt",     "tokens_completion",
                                         "window_seconds",    "tokens_per_second",
                                         "generated_per_second", "requests_per_second",
                                         "rank_imbalance"};
    char text[512];
    mr_runner_progress_line p;
    sample_line(s, s->sample, &p);
    mr_runner_progress_format(&p, text, sizeof text);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "final",
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s->sample, "final")));
    cJSON_AddNumberToObject(j, "requests_done", (double)p.done);
    cJSON_AddNumberToObject(j, "requests_planned", (double)p.planned);
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++)
        cJSON_AddNumberToObject(j, copied[i], num(s->sample, copied[i]));
    if (p.eta_seconds >= 0)
        cJSON_AddNumberToObject(j, "eta_seconds", p.eta_seconds);
    else
        cJSON_AddNullToObject(j, "eta_seconds");
    cJSON_AddStringToObject(j, "text", text);
    return j;
}

static cJSON *committed_json(const status *s)
{
    if (s->got != MR_CHECKPOINT_OK)
        return cJSON_CreateNull();
    const mr_checkpoint_counters *k = &s->st.counters;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "generation", (double)s->st.generation);
    cJSON_AddNumberToObject(j, "requests_done", (double)(k->requests_ok + k->requests_failed));
    cJSON_AddNumberToObject(j, "requests_ok", (double)k->requests_ok);
    cJSON_AddNumberToObject(j, "requests_failed", (double)k->requests_failed);
    cJSON_AddNumberToObject(j, "tokens_prompt", (double)k->tokens_in);
    cJSON_AddNumberToObject(j, "tokens_completion", (double)k->tokens_out);
    cJSON_AddNumberToObject(j, "shards_done", (double)shards_done(&s->st));
    cJSON_AddNumberToObject(j, "shards", (double)s->st.n_shards);
    return j;
}

static cJSON *attempts_json(const status *s)
{
    const mr_checkpoint_counters *k = &s->st.counters;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "attempts", (double)k->attempts);
    cJSON_AddNumberToObject(j, "preemptions", (double)k->preemptions);
    cJSON_AddNumberToObject(j, "user_stops", (double)k->user_stops);
    cJSON_AddNumberToObject(j, "preemption_lost_seconds", k->preemption_lost_seconds);
    cJSON_AddNumberToObject(j, "wall_seconds", k->wall_seconds);
    cJSON_AddNumberToObject(j, "rank_seconds", k->rank_seconds);
    return j;
}

static cJSON *generations_json(const status *s)
{
    char err[1024];
    mr_checkpoint_info *list = NULL;
    size_t n = 0;
    cJSON *a = cJSON_CreateArray();
    if (s->got == MR_CHECKPOINT_ENOENT ||
        mr_checkpoint_list(s->ckpt, &list, &n, err, sizeof err) != MR_CHECKPOINT_OK)
        return a;
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", list[i].name);
        cJSON_AddNumberToObject(o, "generation", (double)list[i].generation);
        cJSON_AddNumberToObject(o, "bytes", (double)list[i].bytes);
        cJSON_AddNumberToObject(o, "written", list[i].written);
        cJSON_AddBoolToObject(o, "good", list[i].good);
        if (!list[i].good)
            cJSON_AddStringToObject(o, "problem", list[i].problem);
        cJSON_AddItemToArray(a, o);
    }
    free(list);
    return a;
}

static int print_json(const status *s)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "run_dir", s->dir);
    cJSON_AddStringToObject(j, "state", state_of(s));
    if (s->owned) {
        cJSON *o = cJSON_AddObjectToObject(j, "owner");
        cJSON_AddNumberToObject(o, "pid", s->pid);
        cJSON_AddStringToObject(o, "record", s->owner);
    } else {
        cJSON_AddNullToObject(j, "owner");
    }
    cJSON_AddItemToObject(j, "plan", plan_json(s));
    cJSON_AddItemToObject(j, "progress", progress_json(s));
    cJSON *joined = cJSON_AddObjectToObject(j, "joined");
    cJSON_AddBoolToObject(joined, "joined", s->joined);
    cJSON_AddNumberToObject(joined, "results", (double)(s->joined ? s->results : 0));
    cJSON_AddNumberToObject(joined, "errors", (double)(s->joined ? s->errors : 0));
    cJSON_AddItemToObject(j, "committed", committed_json(s));
    cJSON_AddItemToObject(j, "attempts", attempts_json(s));
    cJSON_AddItemToObject(j, "generations", generations_json(s));
    if (s->note[0])
        cJSON_AddStringToObject(j, s->got == MR_CHECKPOINT_OK ? "warning" : "checkpoint_problem",
                                s->note);
    char *text = cJSON_Print(j);
    int rc = text && printf("%s\n", text) > 0 ? MR_EXIT_OK : MR_EXIT_FAILED;
    cJSON_free(text);
    cJSON_Delete(j);
    return rc;
}

/* ---- the command ---- */

/* The newest good checkpoint; rc as mr_checkpoint_load_latest, the
 * message or warning in s->note. */
static void load_checkpoint(status *s)
{
    static char err[4096];
    s->note[0] = '\0';
    s->got = mr_checkpoint_load_latest(s->ckpt, &s->st, s->note, sizeof s->note, err, sizeof err);
    if (s->got != MR_CHECKPOINT_OK)
        snprintf(s->note, sizeof s->note, "%s", err);
}

int mr_runner_status(int argc, char **argv)
{
    static status s;
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_JSON, "RUN_DIR", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    s = (status){.dir = args.operand};
    rc = mr_runner_load_plan(s.dir, &s.plan);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(s.dir, MR_RUN_RESULTS, &s.results);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(s.dir, MR_RUN_ERRORS, &s.errors);
    if (rc == MR_EXIT_OK && !(s.ckpt = mr_runner_checkpoint_dir(s.dir)))
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK) {
        s.planned = s.plan.n_requests + s.plan.n_invalid + s.plan.n_duplicates;
        s.owned = mr_runner_lock_owner(s.dir, &s.pid, s.owner, sizeof s.owner);
        s.joined = mr_runner_parts_joined(s.dir);
        s.sample = last_sample(s.dir);
        load_checkpoint(&s);
        if (args.json)
            rc = print_json(&s);
        else
            print_text(&s);
    }
    cJSON_Delete(s.sample);
    free(s.ckpt);
    mr_checkpoint_state_free(&s.st);
    mr_plan_free(&s.plan);
    mr_runner_free_args(&args);
    return rc;
}
