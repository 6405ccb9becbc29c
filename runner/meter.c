/*
 * The job's meters while it runs.  Every [report] progress_seconds (rank
 * 0's clock decides, and says so in the per-step gather) the ranks gather
 * their request counts, stage times and expert load; rank 0 then appends a
 * record to timeline.jsonl, rewrites metrics.prom and expert_load.csv and
 * logs a progress line.  On a terminal a live line, redrawn from the
 * counts every step's gather already carries, replaces the log lines.
 *
 * Progress counts tokens as the engines run them (prompt rows and sampled
 * tokens of unfinished requests too), and its rates and ETA come from a
 * window of the last WINDOW_SECONDS, so a line means the same early on as
 * late, and a busy job never reads 0 tokens/s.  The live line, the log
 * line and timeline.jsonl (which `moerun status` reads) give the same
 * figures in the same words.
 *
 * The timeline is what the report sums stage times and draws busy shares
 * from, so an attempt that is killed loses at most one interval of them.
 * expert_load.csv holds the whole job's load: a resumed attempt adds its
 * own to what the file held, and it doubles as a calibration trace.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "runner/report.h"
#include "runner/runner.h"

/* What each rank sends at a sample, as doubles (counts stay exact far
 * beyond any job): its counters, then rows its slots ran per MoE layer,
 * then tokens it routed per (MoE layer, expert). */
enum {
    M_OK, M_FAILED, M_PROMPT, M_COMPLETION, M_STEPS, M_TOKENS, M_GENERATED, M_ATTENTION,
    M_DISPATCH, M_EXPERTS, M_COMBINE, M_WAIT, M_FIXED
};

/* The live line is redrawn at most this often. */
#define LIVE_SECONDS 0.5
/* Rates and the ETA look back this far: long enough to smooth the steps
 * of a batch, short enough to follow a job that speeds up or slows down. */
#define WINDOW_SECONDS 30.0
/* The window's points, one every WINDOW_STEP seconds at most: enough to
 * reach a little further back than the window. */
#define WINDOW_STEP 0.5
#define WINDOW_POINTS 64

/* The world's counts at one moment of this attempt. */
typedef struct {
    double at; /* monotonic seconds */
    double done, rows, generated;
} point;

struct mr_runner_meter {
    const mr_job *job;
    mr_engine *engine;
    const mr_runner_balancer *balancer;
    mr_comm *comm;
    int rank, ranks, layers, experts;
    int *moe_layer; /* [layers]: the model layer of each MoE layer */
    size_t msg_len;
    double *mine, *all, *prev; /* prev: rank 0's last gather, for rates */
    double last, started;      /* monotonic: the last sample, the meter's start */
    double process_start;      /* Unix time the attempt's processes started */
    double startup_seconds;    /* from then to the engine ready: launch, load, engine */
    bool tty;
    double last_live;
    /* Rank 0: the job before this attempt. */
    mr_checkpoint_counters base;
    uint64_t planned, base_rebalances;
    double *base_load;  /* [layers][experts]: expert_load.csv when resumed */
    double *job_load;   /* base plus this attempt's */
    double *layer_rank, *layer_expert, *busy;
    uint64_t *job_load_counts;
    double rank_imbalance; /* over the last interval */
    FILE *timeline;
    /* Rank 0: the window, oldest first from `head`; the first is the
     * attempt's start, at 0. */
    point window[WINDOW_POINTS];
    int head, points;
};

/* "rebalanced" records of an earlier attempt's eplb.jsonl. */
static uint64_t count_rebalances(const char *run_dir)
{
    FILE *f;
    char *path;
    uint64_t n = 0;
    if (mr_runner_open_run_file(run_dir, MR_RUN_EPLB_LOG, &f, &path) == MR_EXIT_OK && f) {
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0)
            n += strstr(line, "\"action\":\"rebalanced\"") != NULL;
        free(line);
        fclose(f);
    }
    free(path);
    return n;
}

/* A resumed job's earlier load, when expert_load.csv has the model's shape. */
static double *earlier_load(const char *run_dir, int layers, int experts)
{
    char err[512], *path = mr_runner_path(run_dir, MR_RUN_EXPERT_LOAD);
    double *load = NULL;
    int l, e;
    if (path && access(path, F_OK) == 0 &&
        mr_eplb_trace_read(path, &load, &l, &e, err, sizeof err) == MR_EPLB_OK &&
        (l != layers || e != experts)) {
        free(load);
        load = NULL;
    }
    free(path);
    return load;
}

static int open_rank0(mr_runner_meter *m, const mr_plan *plan, const mr_checkpoint_state *state)
{
    const char *dir = m->job->job_run_dir;
    bool resumed = state->counters.attempts > 1;
    size_t cells = (size_t)m->layers * m->experts;
    m->base = state->counters;
    m->planned = plan->n_requests + plan->n_invalid + plan->n_duplicates;
    m->base_rebalances = resumed ? count_rebalances(dir) : 0;
    m->base_load = resumed && cells ? earlier_load(dir, m->layers, m->experts) : NULL;
    m->prev = calloc(m->msg_len * (size_t)m->ranks, sizeof *m->prev);
    m->job_load = calloc(cells ? cells : 1, sizeof *m->job_load);
    m->job_load_counts = calloc(cells ? cells : 1, sizeof *m->job_load_counts);
    m->layer_rank = calloc(m->layers ? (size_t)m->layers : 1, sizeof *m->layer_rank);
    m->layer_expert = calloc(m->layers ? (size_t)m->layers : 1, sizeof *m->layer_expert);
    m->busy = calloc((size_t)m->ranks, sizeof *m->busy);
    char *path = mr_runner_path(dir, MR_RUN_TIMELINE);
    m->timeline = path ? fopen(path, resumed ? "a" : "w") : NULL;
    int rc = m->prev && m->job_load && m->job_load_counts && m->layer_rank && m->layer_expert &&
                     m->busy && path
                 ? MR_EXIT_OK
                 : MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK && !m->timeline)
        rc = mr_runner_write_failed(path, errno);
    free(path);
    return rc;
}

int mr_runner_meter_new(const mr_job *job, const mr_plan *plan, const mr_checkpoint_state *state,
                        mr_model *model, mr_engine *engine, const mr_runner_balancer *balancer,
                        mr_comm *comm, mr_runner_meter **out)
{
    const mr_model_config *cfg = mr_model_config_get(model);
    mr_runner_meter *m = calloc(1, sizeof *m);
    *out = m;
    if (!m)
        return MR_EXIT_FAILED;
    *m = (mr_runner_meter){.job = job, .engine = engine, .balancer = balancer, .comm = comm,
                           .rank = mr_comm_rank(comm), .ranks = mr_comm_size(comm),
                           .layers = mr_config_moe_layers(cfg), .experts = cfg->num_experts,
                           .last = mr_engine_clock_seconds(), .tty = mr_runner_progress_tty()};
    m->started = m->last;
    m->window[0] = (point){.at = m->last};
    m->points = 1;
    m->process_start = mr_runner_start_time();
    m->startup_seconds = mr_runner_unix_seconds() - m->process_start;
    if (m->layers == 0)
        m->experts = 0;
    m->msg_len = M_FIXED + (size_t)m->layers + (size_t)m->layers * m->experts;
    m->moe_layer = calloc(m->layers ? (size_t)m->layers : 1, sizeof *m->moe_layer);
    m->mine = calloc(m->msg_len, sizeof *m->mine);
    m->all = calloc(m->msg_len * (size_t)m->ranks, sizeof *m->all);
    if (!m->moe_layer || !m->mine || !m->all)
        return MR_EXIT_FAILED;
    for (int i = 0, l = 0; i < cfg->num_hidden_layers && l < m->layers; i++)
        if (mr_config_layer_is_moe(cfg, i))
            m->moe_layer[l++] = i;
    return m->rank == 0 ? open_rank0(m, plan, state) : MR_EXIT_OK;
}

void mr_runner_meter_free(mr_runner_meter *m)
{
    if (!m)
        return;
    if (m->timeline)
        fclose(m->timeline);
    free(m->moe_layer);
    free(m->mine);
    free(m->all);
    free(m->prev);
    free(m->base_load);
    free(m->job_load);
    free(m->job_load_counts);
    free(m->layer_rank);
    free(m->layer_expert);
    free(m->busy);
    free(m);
}

bool mr_runner_meter_due(const mr_runner_meter *m)
{
    return mr_engine_clock_seconds() - m->last >= m->job->report_progress_seconds;
}

static void fill_mine(mr_runner_meter *m, const mr_runner_progress *p)
{
    mr_engine_stats st;
    mr_engine_get_stats(m->engine, &st);
    double *v = m->mine;
    v[M_OK] = (double)p->ok;
    v[M_FAILED] = (double)p->failed;
    v[M_PROMPT] = (double)p->prompt_tokens;
    v[M_COMPLETION] = (double)p->completion_tokens;
    v[M_STEPS] = (double)st.steps;
    v[M_TOKENS] = (double)st.tokens;
    v[M_GENERATED] = (double)st.generated;
    v[M_ATTENTION] = st.attention_seconds;
    v[M_DISPATCH] = st.dispatch_seconds;
    v[M_EXPERTS] = st.experts_seconds;
    v[M_COMBINE] = st.combine_seconds;
    v[M_WAIT] = st.wait_seconds;
    for (int l = 0; l < m->layers; l++) {
        uint64_t rows = 0;
        for (int s = 0; s < st.slots_per_rank; s++)
            rows += st.slot_tokens[(size_t)l * st.slots_per_rank + s];
        v[M_FIXED + l] = (double)rows;
    }
    const uint64_t *routed = mr_engine_expert_counts(m->engine);
    double *load = v + M_FIXED + m->layers;
    for (int l = 0; l < m->layers; l++)
        for (int e = 0; e < m->experts; e++)
            load[(size_t)l * m->experts + e] =
                (double)routed[(size_t)m->moe_layer[l] * m->experts + e];
}

static double at(const double *all, const mr_runner_meter *m, int rank, size_t index)
{
    return all[(size_t)rank * m->msg_len + index];
}

static double sum_of(const mr_runner_meter *m, size_t index)
{
    double sum = 0;
    for (int r = 0; r < m->ranks; r++)
        sum += at(m->all, m, r, index);
    return sum;
}

static double ratio(double max, double mean)
{
    return mean > 0 ? max / mean : 1.0;
}

void mr_runner_meter_totals(const mr_runner_meter *m, mr_runner_progress *out)
{
    *out = (mr_runner_progress){(uint64_t)sum_of(m, M_OK), (uint64_t)sum_of(m, M_FAILED),
                                (uint64_t)sum_of(m, M_PROMPT),
                                (uint64_t)sum_of(m, M_COMPLETION)};
}

/* Rank 0: busy shares, imbalances and the job's load from the gather. */
static void derive(mr_runner_meter *m, double interval)
{
    static const size_t busy_parts[] = {M_ATTENTION, M_DISPATCH, M_EXPERTS, M_COMBINE};
    for (int r = 0; r < m->ranks; r++) {
        double busy = -(at(m->all, m, r, M_WAIT) - at(m->prev, m, r, M_WAIT));
        for (size_t i = 0; i < sizeof busy_parts / sizeof *busy_parts; i++)
            busy += at(m->all, m, r, busy_parts[i]) - at(m->prev, m, r, busy_parts[i]);
        m->busy[r] = interval > 0 ? fmin(fmax(busy / interval, 0), 1) : 0;
    }
    double sum_max = 0, sum_mean = 0;
    for (int l = 0; l < m->layers; l++) {
        double max = 0, total = 0;
        for (int r = 0; r < m->ranks; r++) {
            double rows = at(m->all, m, r, M_FIXED + l) - at(m->prev, m, r, M_FIXED + l);
            max = fmax(max, rows);
            total += rows;
        }
        m->layer_rank[l] = ratio(max, total / m->ranks);
        sum_max += max;
        sum_mean += total / m->ranks;
    }
    m->rank_imbalance = ratio(sum_max, sum_mean);
    size_t cells = (size_t)m->layers * m->experts;
    for (size_t i = 0; i < cells; i++) {
        double load = m->base_load ? m->base_load[i] : 0;
        for (int r = 0; r < m->ranks; r++)
            load += at(m->all, m, r, M_FIXED + m->layers + i);
        m->job_load[i] = load;
        m->job_load_counts[i] = (uint64_t)load;
    }
    for (int l = 0; l < m->layers; l++) {
        double max = 0, total = 0;
        for (int e = 0; e < m->experts; e++) {
            max = fmax(max, m->job_load[(size_t)l * m->experts + e]);
            total += m->job_load[(size_t)l * m->experts + e];
        }
        m->layer_expert[l] = ratio(max, total / m->experts);
    }
}

static cJSON *per_rank(const mr_runner_meter *m, size_t index)
{
    cJSON *a = cJSON_CreateArray();
    for (int r = 0; a && r < m->ranks; r++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(at(m->all, m, r, index)));
    return a;
}

static int append_timeline(mr_runner_meter *m, double elapsed, bool final,
                           const mr_runner_progress_line *p)
{
    static const struct {
        const char *name;
        size_t index;
    } fields[] = {{"steps", M_STEPS},       {"tokens", M_TOKENS},     {"generated", M_GENERATED},
                  {"attention", M_ATTENTION}, {"dispatch", M_DISPATCH}, {"experts", M_EXPERTS},
                  {"combine", M_COMBINE},     {"wait", M_WAIT}};
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "job", m->job->job_name);
    cJSON_AddNumberToObject(rec, "attempt", (double)m->base.attempts);
    cJSON_AddNumberToObject(rec, "time", (double)time(NULL));
    cJSON_AddNumberToObject(rec, "seconds", elapsed);
    cJSON_AddNumberToObject(rec, "job_seconds", m->base.wall_seconds + elapsed);
    cJSON_AddNumberToObject(rec, "startup_seconds", m->startup_seconds);
    cJSON_AddBoolToObject(rec, "final", final);
    cJSON_AddNumberToObject(rec, "requests_ok", (double)m->base.requests_ok + sum_of(m, M_OK));
    cJSON_AddNumberToObject(rec, "requests_failed",
                            (double)m->base.requests_failed + sum_of(m, M_FAILED));
    cJSON_AddNumberToObject(rec, "tokens_prompt", (double)m->base.tokens_in + sum_of(m, M_PROMPT));
    cJSON_AddNumberToObject(rec, "tokens_completion",
                            (double)m->base.tokens_out + sum_of(m, M_COMPLETION));
    cJSON_AddNumberToObject(rec, "requests_planned", (double)p->planned);
    cJSON_AddNumberToObject(rec, "requests_done", (double)p->done);
    cJSON_AddNumberToObject(rec, "window_seconds", p->window_seconds);
    cJSON_AddNumberToObject(rec, "tokens_per_second", p->tokens_per_second);
    cJSON_AddNumberToObject(rec, "generated_per_second", p->generated_per_second);
    cJSON_AddNumberToObject(rec, "requests_per_second", p->requests_per_second);
    if (p->eta_seconds >= 0)
        cJSON_AddNumberToObject(rec, "eta_seconds", p->eta_seconds);
    else
        cJSON_AddNullToObject(rec, "eta_seconds");
    cJSON_AddNumberToObject(rec, "rank_imbalance", m->rank_imbalance);
    cJSON *ranks = cJSON_AddObjectToObject(rec, "ranks");
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        cJSON_AddItemToObject(ranks, fields[i].name, per_rank(m, fields[i].index));
    char *line = cJSON_PrintUnformatted(rec);
    int rc = line ? MR_EXIT_OK : MR_EXIT_FAILED;
    if (line && (fprintf(m->timeline, "%s\n", line) < 0 || fflush(m->timeline) != 0)) {
        int err = errno;
        char *path = mr_runner_path(m->job->job_run_dir, MR_RUN_TIMELINE);
        rc = mr_runner_write_failed(path ? path : MR_RUN_TIMELINE, err);
        free(path);
    }
    free(line);
    cJSON_Delete(rec);
    return rc;
}

static int write_metrics(mr_runner_meter *m, double elapsed, double tokens_per_second)
{
    char err[1024], *path = mr_runner_path(m->job->job_run_dir, MR_RUN_METRICS);
    mr_report_metrics x = {
        .job = m->job->job_name,
        .requests_ok = m->base.requests_ok + (uint64_t)sum_of(m, M_OK),
        .requests_failed = m->base.requests_failed + (uint64_t)sum_of(m, M_FAILED),
        .requests_planned = m->planned,
        .tokens_prompt = m->base.tokens_in + (uint64_t)sum_of(m, M_PROMPT),
        .tokens_completion = m->base.tokens_out + (uint64_t)sum_of(m, M_COMPLETION),
        .tokens_per_second = tokens_per_second,
        .wall_seconds = m->base.wall_seconds + elapsed,
        .rank_seconds = m->base.rank_seconds + elapsed * m->ranks,
        .attempts = m->base.attempts,
        .preemptions = m->base.preemptions,
        .user_stops = m->base.user_stops,
        .ranks = m->ranks,
        .eplb_rebalances = m->base_rebalances + (uint64_t)mr_runner_balancer_rebalances(m->balancer),
        .rank_imbalance = m->rank_imbalance,
        .layers = m->layers,
        .experts = m->experts,
        .layer_ids = m->moe_layer,
        .layer_rank_imbalance = m->layer_rank,
        .layer_expert_imbalance = m->layer_expert,
        .expert_tokens = m->job_load_counts,
        .expert_series = m->job->report_expert_metrics == MR_EXPERT_METRICS_ON,
        .hot_experts = 3,
        .version = MR_VERSION,
        .backends = mr_backend_names(),
        .rank_busy = m->busy,
        .updated = (double)time(NULL)};
    int rc = path ? MR_EXIT_OK : MR_EXIT_FAILED;
    if (path && mr_report_metrics_write(path, &x, err, sizeof err) != 0) {
        rc = mr_runner_write_failed(path, errno);
        if (rc != MR_EXIT_DISK_FULL)
            fprintf(stderr, "moerun run: %s\n", err);
    }
    free(path);
    return rc;
}

static int write_load(const mr_runner_meter *m)
{
    if (m->layers == 0)
        return MR_EXIT_OK;
    char err[1024], *path = mr_runner_path(m->job->job_run_dir, MR_RUN_EXPERT_LOAD);
    bool ok = path && mr_eplb_trace_write(path, m->job_load, m->layers, m->experts, err,
                                          sizeof err) == MR_EPLB_OK;
    if (!ok)
        fprintf(stderr, "moerun run: %s\n", path ? err : "out of memory");
    free(path);
    return ok ? MR_EXIT_OK : MR_EXIT_FAILED;
}

/* "1:02:03", or "unknown" when nothing finished to go by. */
static const char *format_eta(double seconds, char *buf, size_t len)
{
    if (!(seconds >= 0) || seconds > 1e8)
        return "unknown";
    long s = lround(seconds);
    snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    return buf;
}

void mr_runner_progress_format(const mr_runner_progress_line *p, char *out, size_t len)
{
    char eta[32];
    int n = snprintf(out, len,
                     "%s: %" PRIu64 "/%" PRIu64 " requests done (%.1f%%), %.0f tokens/s (%.0f "
                     "generated/s) over the last %.*f s, ETA %s",
                     p->job, p->done, p->planned,
                     p->planned ? 100.0 * (double)p->done / (double)p->planned : 100.0,
                     p->tokens_per_second, p->generated_per_second,
                     p->window_seconds < 9.95 ? 1 : 0, p->window_seconds,
                     format_eta(p->eta_seconds, eta, sizeof eta));
    if (p->rank_imbalance > 0 && n > 0 && (size_t)n < len)
        snprintf(out + n, len - (size_t)n, ", rank imbalance %.2f", p->rank_imbalance);
}

/* Rank 0: the figures of a progress line at `now`, from the world's counts
 * then (this attempt's) and the window, which `now` joins. */
static void progress_at(mr_runner_meter *m, point now, mr_runner_progress_line *p)
{
    /* The newest point at least WINDOW_SECONDS old, else the oldest. */
    point from = m->window[m->head];
    for (int i = 1; i < m->points; i++) {
        const point *q = &m->window[(m->head + i) % WINDOW_POINTS];
        if (now.at - q->at < WINDOW_SECONDS)
            break;
        from = *q;
    }
    double span = now.at - from.at;
    uint64_t base = m->base.requests_ok + m->base.requests_failed;
    *p = (mr_runner_progress_line){.job = m->job->job_name,
                                   .done = base + (uint64_t)now.done,
                                   .planned = m->planned,
                                   .window_seconds = span,
                                   .rank_imbalance = m->rank_imbalance};
    if (span > 0) {
        p->tokens_per_second = (now.rows - from.rows) / span;
        p->generated_per_second = (now.generated - from.generated) / span;
        p->requests_per_second = (now.done - from.done) / span;
    }
    /* No request finished in the window (long generations finish in
     * waves): the attempt's rate stands in until one does. */
    double rate = p->requests_per_second;
    if (rate <= 0 && now.at > m->started)
        rate = now.done / (now.at - m->started);
    double left = m->planned > p->done ? (double)(m->planned - p->done) : 0;
    p->eta_seconds = left == 0 ? 0 : rate > 0 ? left / rate : -1;
    /* A point joins the window when the newest is old enough; the oldest
     * goes when the ring is full. */
    const point *newest = &m->window[(m->head + m->points - 1) % WINDOW_POINTS];
    if (now.at - newest->at < WINDOW_STEP)
        return;
    if (m->points == WINDOW_POINTS)
        m->head = (m->head + 1) % WINDOW_POINTS;
    else
        m->points++;
    m->window[(m->head + m->points - 1) % WINDOW_POINTS] = now;
}

void mr_runner_meter_live(mr_runner_meter *m, uint64_t done, uint64_t rows, uint64_t generated)
{
    double now = mr_engine_clock_seconds();
    if (m->rank != 0 || !m->tty || now - m->last_live < LIVE_SECONDS)
        return;
    m->last_live = now;
    char text[512];
    mr_runner_progress_line p;
    progress_at(m, (point){now, (double)done, (double)rows, (double)generated}, &p);
    mr_runner_progress_format(&p, text, sizeof text);
    /* Drawn on stderr and ended with \r: a line printed meanwhile starts
     * over it, and the next redraw clears what is left. */
    fprintf(stderr, "\r\033[K%s\r", text);
    fflush(stderr);
}

int mr_runner_meter_sample(mr_runner_meter *m, const mr_runner_progress *mine, bool final)
{
    char err[512];
    fill_mine(m, mine);
    if (mr_comm_ctrl_allgather(m->comm, m->mine, m->msg_len * sizeof *m->mine, m->all, err,
                          sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: progress: %s\n", m->rank, err);
        return MR_EXIT_FAILED;
    }
    double now = mr_engine_clock_seconds(), interval = now - m->last;
    m->last = now;
    if (m->rank != 0)
        return MR_EXIT_OK;
    mr_runner_progress_line p;
    progress_at(m,
                (point){now, sum_of(m, M_OK) + sum_of(m, M_FAILED), sum_of(m, M_TOKENS),
                        sum_of(m, M_GENERATED)},
                &p);
    derive(m, interval);
    p.rank_imbalance = m->rank_imbalance;
    /* Wall time counts from process start, as the checkpoint's does. */
    double elapsed = mr_runner_unix_seconds() - m->process_start;
    int rc = append_timeline(m, elapsed, final, &p);
    if (rc == MR_EXIT_OK)
        rc = write_metrics(m, elapsed, p.tokens_per_second);
    if (rc == MR_EXIT_OK)
        rc = write_load(m);
    memcpy(m->prev, m->all, m->msg_len * (size_t)m->ranks * sizeof *m->prev);
    if (!m->tty && !final) {
        char text[512];
        mr_runner_progress_format(&p, text, sizeof text);
        printf("progress: %s\n", text);
        fflush(stdout);
    } else if (m->tty && final) {
        fprintf(stderr, "\r\033[K");
    }
    return rc;
}
