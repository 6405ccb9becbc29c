/*
 * The job report, gathered from the run folder alone, so the job's own
 * report at its end and `moerun report` later are the same:
 *
 *   requests, tokens     results.jsonl and errors.jsonl (the record the
 *                        user keeps); the checkpoint's counters while the
 *                        job is unfinished
 *   time, attempts       the checkpoint's counters, summed over attempts
 *   stage times, busy    timeline.jsonl: each attempt's last record
 *   EPLB                 eplb.jsonl, and expert_load.csv with the
 *                        checkpoint's placement
 *
 * A file that is missing leaves its part of the report out; one that is
 * damaged is named in a warning.  Writing the report never fails the job:
 * its results are already complete.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <ini.h>

#include "runner/report.h"
#include "runner/runner.h"

/* At most this many time columns in rank_busy.svg: consecutive samples
 * are merged beyond it. */
#define BUSY_COLUMNS 240

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "moerun report: warning: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- job.ini: the few keys the report prices and labels by ---- */

static int on_job_key(void *user, const char *section, const char *key, const char *value)
{
    mr_report *r = user;
    if (!strcmp(section, "job") && !strcmp(key, "name"))
        snprintf(r->job, sizeof r->job, "%s", value);
    else if (!strcmp(section, "parallel") && !strcmp(key, "ranks"))
        r->ranks = atoi(value);
    else if (!strcmp(section, "eplb") && !strcmp(key, "mode"))
        snprintf(r->eplb_mode, sizeof r->eplb_mode, "%s", value);
    else if (!strcmp(section, "cost")) {
        static const struct {
            const char *key;
            size_t offset;
        } prices[] = {{"gpu_hour_usd", offsetof(mr_report_prices, gpu_hour_usd)},
                      {"spot_gpu_hour_usd", offsetof(mr_report_prices, spot_gpu_hour_usd)},
                      {"input_usd_per_million", offsetof(mr_report_prices, input_usd_per_million)},
                      {"output_usd_per_million",
                       offsetof(mr_report_prices, output_usd_per_million)}};
        for (size_t i = 0; i < sizeof prices / sizeof *prices; i++)
            if (!strcmp(key, prices[i].key))
                *(double *)((char *)&r->prices + prices[i].offset) = strtod(value, NULL);
    }
    return 1;
}

static int read_job(const char *dir, mr_report *r)
{
    char *path = mr_runner_path(dir, MR_RUN_JOB);
    if (!path)
        return MR_EXIT_FAILED;
    int line = ini_parse(path, on_job_key, r);
    if (line > 0)
        fprintf(stderr, "%s:%d: not a job file line\n", path, line);
    else if (line < 0)
        fprintf(stderr, "cannot read %s: %s\n", path, line == -1 ? strerror(errno) : "out of memory");
    free(path);
    return line == 0 ? MR_EXIT_OK : MR_EXIT_INVALID;
}

/* ---- results.jsonl and errors.jsonl ---- */

static int64_t number_at(const cJSON *obj, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n && obj; i++)
        obj = cJSON_GetObjectItemCaseSensitive(obj, names[i]);
    return cJSON_IsNumber(obj) && obj->valuedouble >= 0 ? (int64_t)obj->valuedouble : -1;
}

/* One line of results.jsonl; false when it is not a result line. */
static bool add_result(mr_report *r, const char *text, size_t len)
{
    static const char *const status[] = {"response", "status_code"};
    static const char *const prompt[] = {"response", "body", "usage", "prompt_tokens"};
    static const char *const completion[] = {"response", "body", "usage",
                                             "completion_tokens"};
    cJSON *root = cJSON_ParseWithLength(text, len);
    int64_t code = number_at(root, status, 2);
    int64_t p = number_at(root, prompt, 4), c = number_at(root, completion, 4);
    if (code == 200 && p >= 0 && c >= 0) {
        r->requests_ok++;
        r->tokens_prompt += (uint64_t)p;
        r->tokens_completion += (uint64_t)c;
    } else if (code >= 0) {
        r->requests_failed++;
    }
    cJSON_Delete(root);
    return code >= 0;
}

static int read_results(const char *dir, mr_report *r)
{
    FILE *f;
    char *path;
    int rc = mr_runner_open_run_file(dir, MR_RUN_RESULTS, &f, &path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (uint64_t line_no = 1; f && (len = getline(&line, &cap, f)) > 0; line_no++) {
        if (!add_result(r, line, (size_t)len)) {
            fprintf(stderr, "%s:%" PRIu64 ": not a result line\n", path, line_no);
            rc = MR_EXIT_INVALID;
            break;
        }
    }
    if (f && rc == MR_EXIT_OK && ferror(f)) {
        fprintf(stderr, "cannot read %s: %s\n", path, strerror(errno));
        rc = MR_EXIT_FAILED;
    }
    free(line);
    if (f)
        fclose(f);
    free(path);
    uint64_t errors = 0;
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(dir, MR_RUN_ERRORS, &errors);
    r->requests_failed += errors;
    return rc;
}

/* ---- JSON lines files: timeline.jsonl and eplb.jsonl ---- */

static double num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Every record of a run-folder JSON lines file as one array (NULL when
 * the file is missing); a line that does not parse ends the reading with
 * a warning (a killed attempt may leave half a line). */
static cJSON *read_records(const char *dir, const char *name)
{
    FILE *f;
    char *path;
    mr_runner_open_run_file(dir, name, &f, &path);
    cJSON *all = f ? cJSON_CreateArray() : NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (uint64_t line_no = 1; f && (len = getline(&line, &cap, f)) > 0; line_no++) {
        cJSON *rec = cJSON_ParseWithLength(line, (size_t)len);
        if (!cJSON_IsObject(rec)) {
            warn("%s:%" PRIu64 ": not a JSON record; the lines after it are left out", path,
                 line_no);
            cJSON_Delete(rec);
            break;
        }
        cJSON_AddItemToArray(all, rec);
    }
    free(line);
    if (f)
        fclose(f);
    free(path);
    return all;
}

/* The per-rank arrays of a timeline record, in the order read_ranks
 * fills them. */
enum { F_STEPS, F_TOKENS, F_ATTENTION, F_DISPATCH, F_EXPERTS, F_COMBINE, F_WAIT, F_COUNT };

static const cJSON *rank_array(const cJSON *rec, const char *field)
{
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rec, "ranks"), field);
}

static int rank_count(const cJSON *rec)
{
    return cJSON_GetArraySize(rank_array(rec, "steps"));
}

static int most_ranks(const cJSON *timeline)
{
    int most = 0;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, timeline)
    {
        int ranks = rank_count(rec);
        most = ranks > most ? ranks : most;
    }
    return most;
}

/* v[field * cap + rank]: a record's per-rank values, each array walked
 * once (cJSON arrays are lists); 0 past the record's own ranks. */
static void read_ranks(const cJSON *rec, double *v, int cap)
{
    static const char *const fields[F_COUNT] = {"steps",    "tokens",  "attention", "dispatch",
                                                "experts",  "combine", "wait"};
    memset(v, 0, (size_t)F_COUNT * cap * sizeof *v);
    for (int f = 0; f < F_COUNT; f++) {
        const cJSON *item;
        int k = 0;
        cJSON_ArrayForEach(item, rank_array(rec, fields[f]))
        {
            if (k >= cap)
                break;
            v[(size_t)f * cap + k++] = cJSON_IsNumber(item) ? item->valuedouble : 0;
        }
    }
}

/* Seconds rank k computed: its stages less the waiting inside dispatch
 * and combine. */
static double busy_seconds(const double *v, int cap, int k)
{
    return v[F_ATTENTION * cap + k] + v[F_DISPATCH * cap + k] + v[F_EXPERTS * cap + k] +
           v[F_COMBINE * cap + k] - v[F_WAIT * cap + k];
}

static bool same_attempt(const cJSON *a, const cJSON *b)
{
    return a && b && num(a, "attempt") == num(b, "attempt");
}

/* Stage times and batch size: each attempt's last record holds its totals. */
static void add_stages(mr_report *r, const cJSON *timeline)
{
    int cap = most_ranks(timeline);
    double *v = calloc((size_t)F_COUNT * (cap ? cap : 1), sizeof *v), rank_steps = 0;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, timeline)
    {
        if (!v || same_attempt(rec, rec->next))
            continue;
        read_ranks(rec, v, cap);
        for (int k = 0; k < cap; k++) {
            r->stages.attention += v[F_ATTENTION * cap + k];
            r->stages.dispatch += v[F_DISPATCH * cap + k];
            r->stages.experts += v[F_EXPERTS * cap + k];
            r->stages.combine += v[F_COMBINE * cap + k];
            r->stages.wait += v[F_WAIT * cap + k];
            r->rows += (uint64_t)v[F_TOKENS * cap + k];
            rank_steps += v[F_STEPS * cap + k];
        }
        r->steps += cap > 0 ? (uint64_t)v[F_STEPS * cap] : 0;
        r->startup_seconds += num(rec, "startup_seconds");
        r->timed = true;
    }
    free(v);
    r->tokens_per_rank_step = rank_steps > 0 ? (double)r->rows / rank_steps : 0;
}

/* rank_busy.svg: busy share of every rank in every interval between
 * samples, merged into at most BUSY_COLUMNS columns, each as wide as the
 * time it covers, and a marked line where each attempt after the first
 * starts.  The axis is the job's time: the attempts' intervals end to
 * end, without the time between attempts, when no rank was held. */
static bool draw_busy(const char *dir, const mr_report *r, const cJSON *timeline)
{
    int n = cJSON_GetArraySize(timeline), ranks = most_ranks(timeline);
    if (n == 0 || ranks == 0)
        return false;
    int per_column = (n + BUSY_COLUMNS - 1) / BUSY_COLUMNS, cols = (n + per_column - 1) / per_column;
    double *busy = calloc((size_t)ranks * cols, sizeof *busy);
    double *span = calloc((size_t)cols, sizeof *span), *at = calloc((size_t)cols, sizeof *at);
    double *edges = calloc((size_t)cols + 1, sizeof *edges);
    double *now = calloc((size_t)F_COUNT * ranks, sizeof *now);
    double *before = calloc((size_t)F_COUNT * ranks, sizeof *before);
    /* Attempts are few; one mark each at most. */
    double *marks = calloc((size_t)n, sizeof *marks);
    char(*labels)[32] = calloc((size_t)n, sizeof *labels);
    const char **mark_labels = calloc((size_t)n, sizeof *mark_labels);
    bool ok = busy && span && at && edges && now && before && marks && labels && mark_labels;
    const cJSON *rec, *prev = NULL;
    int i = 0, n_marks = 0;
    double start = 0, elapsed = 0; /* the axis: the first interval's start, and time since */
    cJSON_ArrayForEach(rec, timeline)
    {
        if (!ok)
            break;
        /* An attempt's first interval starts at its process start, from 0. */
        bool continues = same_attempt(prev, rec);
        int col = i++ / per_column;
        double interval = fmax(num(rec, "seconds") - (continues ? num(prev, "seconds") : 0), 0);
        if (!prev)
            start = num(rec, "job_seconds") - interval;
        else if (!continues) {
            marks[n_marks] = start + elapsed;
            snprintf(labels[n_marks], sizeof labels[n_marks], "attempt %.0f",
                     num(rec, "attempt"));
            mark_labels[n_marks] = labels[n_marks];
            n_marks++;
        }
        read_ranks(rec, now, ranks);
        span[col] += interval;
        elapsed += interval;
        /* Tenths of a second are all a tooltip needs. */
        at[col] = round((start + elapsed) * 10) / 10;
        for (int k = 0; k < ranks; k++)
            busy[(size_t)k * cols + col] += busy_seconds(now, ranks, k) -
                                            (continues ? busy_seconds(before, ranks, k) : 0);
        double *swap = before;
        before = now;
        now = swap;
        prev = rec;
    }
    for (int c = 0; ok && c < cols; c++)
        edges[c + 1] = (c ? edges[c] : (edges[0] = start)) + span[c];
    for (int k = 0; ok && k < ranks; k++)
        for (int c = 0; c < cols; c++) {
            double *b = &busy[(size_t)k * cols + c];
            *b = span[c] > 0 ? fmin(fmax(*b / span[c], 0), 1) : 0;
        }
    char err[1024], title[512], *path = mr_runner_path(dir, MR_RUN_BUSY_SVG);
    snprintf(title, sizeof title, "%s: share of time each rank computed", r->job);
    /* Equal edges (a job that never sampled time) leave no axis to draw on. */
    bool timed = ok && edges[cols] > edges[0];
    mr_report_heatmap panel = {.title = "Busy share per rank over the job (each column as long "
                                        "as its interval)",
                               .row_name = "rank",
                               .col_name = "seconds of the job (attempts end to end)",
                               .rows = ranks,
                               .cols = cols,
                               .values = busy,
                               .col_labels = at,
                               .col_edges = timed ? edges : NULL,
                               .marks = marks,
                               .mark_labels = mark_labels,
                               .n_marks = timed ? n_marks : 0};
    ok = ok && path;
    if (ok && mr_report_svg_heatmaps(path, title, &panel, 1, 1.0, "busy share", err,
                                     sizeof err) != 0) {
        warn("%s", err);
        ok = false;
    }
    free(path);
    free(busy);
    free(span);
    free(at);
    free(edges);
    free(now);
    free(before);
    free(marks);
    free(labels);
    free(mark_labels);
    return ok;
}

/* Token-weighted measured imbalance of the records from `from` up to
 * `to` (not included; NULL: the end); -1 when none. */
static double measured_mean(const cJSON *from, const cJSON *to)
{
    double sum = 0, weight = 0;
    for (const cJSON *rec = from; rec && rec != to; rec = rec->next) {
        double w = num(rec, "steps") * num(rec, "tokens_per_rank_step");
        sum += w * num(rec, "rank_imbalance_measured");
        weight += w;
    }
    return weight > 0 ? sum / weight : -1;
}

static void add_eplb(mr_report *r, const cJSON *eplb)
{
    const cJSON *rec, *first = NULL;
    cJSON_ArrayForEach(rec, eplb)
    {
        const char *action = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "action"));
        if (!action || !strcmp(action, "final"))
            continue;
        r->eplb_decisions++;
        if (strcmp(action, "rebalanced"))
            continue;
        first = first ? first : rec;
        r->eplb_rebalances++;
        r->experts_moved += (uint64_t)num(rec, "experts_moved");
        r->bytes_moved += num(rec, "bytes_moved");
    }
    /* A rebalance record measured the interval before it switched. */
    const cJSON *head = eplb ? eplb->child : NULL;
    double before = measured_mean(head, first ? first->next : NULL);
    double after = first ? measured_mean(first->next, NULL) : before;
    r->measured = before > 0 && after > 0;
    r->measured_before = before;
    r->measured_after = after;
}

/* ---- expert_load.csv with the placement: predicted balance, heatmap ---- */

/* Tokens per rank and layer on placement `p`, [layers][ranks]: its slots'
 * tokens, a replicated expert's split evenly, as dispatch picks its
 * replicas. */
static double *rank_load(const mr_eplb_placement *p, const double *load)
{
    int per_rank = p->n_physical / p->n_ranks;
    double *v = calloc((size_t)p->n_layers * p->n_ranks, sizeof *v);
    for (int l = 0; v && l < p->n_layers; l++)
        for (int s = 0; s < p->n_physical; s++) {
            int e = p->phy2log[(size_t)l * p->n_physical + s];
            v[(size_t)l * p->n_ranks + s / per_rank] +=
                load[(size_t)l * p->n_logical + e] / p->logcnt[(size_t)l * p->n_logical + e];
        }
    return v;
}

static double imbalance_of(const mr_eplb_placement *p, const double *load)
{
    char err[256];
    mr_eplb_score score;
    if (mr_eplb_evaluate(p, load, &score, err, sizeof err) != MR_EPLB_OK ||
        score.balancedness <= 0)
        return 1.0;
    return 1.0 / score.balancedness;
}

/* The sum over layers of the hottest expert's tokens over the sum of the
 * mean: what one GPU per expert would see. */
static double expert_imbalance(const double *load, int layers, int experts)
{
    double sum_max = 0, sum_mean = 0;
    for (int l = 0; l < layers; l++) {
        double max = 0, total = 0;
        for (int e = 0; e < experts; e++) {
            max = fmax(max, load[(size_t)l * experts + e]);
            total += load[(size_t)l * experts + e];
        }
        sum_max += max;
        sum_mean += total / experts;
    }
    return sum_mean > 0 ? sum_max / sum_mean : 1.0;
}

/* expert_load.svg: each rank's tokens per MoE layer with the experts in
 * order and on the final placement, on one scale: what placement changed
 * is how even each row is. */
static bool draw_heatmap(const char *dir, const mr_report *r, const mr_eplb_placement *without,
                         const mr_eplb_placement *with, const double *load, bool changed)
{
    char err[1024], title[512], before_title[200], after_title[200];
    double *before = rank_load(without, load), *after = rank_load(with, load);
    char *path = mr_runner_path(dir, MR_RUN_HEATMAP_SVG);
    snprintf(title, sizeof title, "%s: tokens per rank and MoE layer, %d rank%s", r->job,
             with->n_ranks, with->n_ranks == 1 ? "" : "s");
    snprintf(before_title, sizeof before_title,
             "Before: experts in order, %d per rank (rank imbalance %.2f)",
             without->n_physical / without->n_ranks, r->predicted_without);
    snprintf(after_title, sizeof after_title,
             "After: EPLB's final placement, %d slots per rank (rank imbalance %.2f)",
             with->n_physical / with->n_ranks, r->predicted_with);
    mr_report_heatmap panels[2] = {
        {.title = before_title, .row_name = "MoE layer", .col_name = "rank",
         .rows = without->n_layers, .cols = without->n_ranks, .values = before},
        {.title = after_title, .row_name = "MoE layer", .col_name = "rank",
         .rows = with->n_layers, .cols = with->n_ranks, .values = after}};
    if (!changed)
        panels[1].title = "The placement never changed: experts in order";
    bool ok = before && after && path &&
              mr_report_svg_heatmaps(path, title, changed ? panels : panels + 1, changed ? 2 : 1,
                                     0, "tokens", err, sizeof err) == 0;
    if (!ok && before && after && path)
        warn("%s", err);
    free(path);
    free(before);
    free(after);
    return ok;
}

static void add_expert_load(const char *dir, mr_report *r, const mr_checkpoint_placement *final)
{
    char err[1024], *path = mr_runner_path(dir, MR_RUN_EXPERT_LOAD);
    double *load = NULL;
    int layers, experts;
    bool have = path && access(path, F_OK) == 0;
    if (have && mr_eplb_trace_read(path, &load, &layers, &experts, err, sizeof err) != MR_EPLB_OK) {
        warn("%s", err);
        have = false;
    }
    free(path);
    mr_eplb_placement without = {0}, with = {0};
    have = have && final->n_layers == layers && final->n_logical == experts &&
           mr_eplb_placement_contiguous(&without, layers, experts, final->n_ranks, err,
                                        sizeof err) == MR_EPLB_OK &&
           mr_eplb_placement_from_phy2log(&with, layers, experts, final->n_physical,
                                          final->n_ranks, final->phy2log, err,
                                          sizeof err) == MR_EPLB_OK;
    if (have) {
        bool changed = without.n_physical != with.n_physical ||
                       memcmp(without.phy2log, with.phy2log,
                              (size_t)layers * with.n_physical * sizeof *with.phy2log) != 0;
        r->predicted = true;
        r->predicted_without = imbalance_of(&without, load);
        r->predicted_with = imbalance_of(&with, load);
        r->expert_imbalance = expert_imbalance(load, layers, experts);
        r->heatmap = draw_heatmap(dir, r, &without, &with, load, changed);
    }
    mr_eplb_placement_free(&without);
    mr_eplb_placement_free(&with);
    free(load);
}

/* ---- the whole report ---- */

static int gather(const char *dir, mr_report *r)
{
    char warning[4096], err[4096], where[PATH_MAX];
    snprintf(r->run_dir, sizeof r->run_dir, "%s", realpath(dir, where) ? where : dir);
    mr_plan plan = {0};
    int rc = mr_runner_load_plan(dir, &plan);
    if (rc == MR_EXIT_OK)
        rc = read_job(dir, r);
    r->requests_planned = plan.n_requests + plan.n_invalid + plan.n_duplicates;
    mr_plan_free(&plan);
    if (rc != MR_EXIT_OK)
        return rc;
    mr_checkpoint_state state = {0};
    char *ckpt = mr_runner_checkpoint_dir(dir);
    int got = ckpt ? mr_checkpoint_load_latest(ckpt, &state, warning, sizeof warning, err,
                                               sizeof err)
                   : MR_CHECKPOINT_ENOMEM;
    free(ckpt);
    if (got != MR_CHECKPOINT_OK && got != MR_CHECKPOINT_ENOENT)
        warn("%s: time, cost and EPLB figures are left out", err);
    else if (warning[0] && got == MR_CHECKPOINT_OK)
        warn("%s", warning);
    const mr_checkpoint_counters *k = &state.counters;
    r->wall_seconds = k->wall_seconds;
    r->rank_seconds = k->rank_seconds;
    r->attempts = k->attempts;
    r->preemptions = k->preemptions;
    r->user_stops = k->user_stops;
    r->preemption_lost_seconds = k->preemption_lost_seconds;
    r->finished = mr_runner_parts_joined(dir);
    if (r->finished) {
        rc = read_results(dir, r);
    } else {
        r->requests_ok = k->requests_ok;
        r->requests_failed = k->requests_failed;
        r->tokens_prompt = k->tokens_in;
        r->tokens_completion = k->tokens_out;
    }
    mr_report_cost_compute(r->rank_seconds, &r->prices, r->tokens_prompt, r->tokens_completion,
                           &r->cost);
    cJSON *timeline = read_records(dir, MR_RUN_TIMELINE), *eplb = read_records(dir, MR_RUN_EPLB_LOG);
    add_stages(r, timeline);
    add_eplb(r, eplb);
    r->busy_map = rc == MR_EXIT_OK && draw_busy(dir, r, timeline);
    if (rc == MR_EXIT_OK && state.placement.n_layers > 0)
        add_expert_load(dir, r, &state.placement);
    cJSON_Delete(timeline);
    cJSON_Delete(eplb);
    mr_checkpoint_state_free(&state);
    mr_report_advise(r);
    return rc;
}

static void save(const char *dir, const char *name, const mr_buf *text)
{
    char err[1024], *path = mr_runner_path(dir, name);
    if (!path || mr_runner_write_atomic(path, text->data, text->len, err, sizeof err) != 0)
        warn("%s", path ? err : "out of memory");
    free(path);
}

int mr_runner_report_write(const char *run_dir, FILE *to, bool json_to)
{
    mr_report *r = calloc(1, sizeof *r);
    if (!r)
        return MR_EXIT_FAILED;
    int rc = gather(run_dir, r);
    mr_buf json = {0}, md = {0}, text = {0};
    if (rc == MR_EXIT_OK && (mr_report_format_json(r, &json) != 0 ||
                             mr_report_format_markdown(r, &md) != 0 ||
                             mr_report_format_text(r, &text) != 0))
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK) {
        save(run_dir, MR_RUN_REPORT_JSON, &json);
        save(run_dir, MR_RUN_REPORT_MD, &md);
        const mr_buf *shown = json_to ? &json : &text;
        if (to && fwrite(shown->data, 1, shown->len, to) != shown->len)
            rc = MR_EXIT_FAILED;
    }
    mr_buf_free(&json);
    mr_buf_free(&md);
    mr_buf_free(&text);
    free(r);
    return rc;
}
