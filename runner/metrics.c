/*
 * metrics.prom: the job's counters in the Prometheus text exposition
 * format (0.0.4) for a node exporter's textfile collector.  The collector
 * reads the file on every scrape, so it is replaced whole, never edited,
 * and its samples carry no timestamps (the collector rejects them).
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/report.h"
#include "runner/runner.h"

typedef struct {
    mr_buf *out;
    char *job;   /* the job name escaped for a label value */
    bool failed; /* sticky: one check at the end instead of one per line */
} exposition;

/* Prometheus gives every scraped series a `job` label of its own (the
 * scrape configuration's), so the job's name goes in a label of ours. */
#define JOB_LABEL "moerun_job"

static void appendf(exposition *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void appendf(exposition *x, const char *fmt, ...)
{
    if (x->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    x->failed = mr_buf_vprintf(x->out, fmt, ap) != MR_JOBS_OK;
    va_end(ap);
}

/* The format's escapes for a label value: \\, \" and \n. */
static char *escape_label_value(const char *value)
{
    char *escaped = malloc(2 * strlen(value) + 1), *p = escaped;
    if (!escaped)
        return NULL;
    for (; *value; value++) {
        if (*value == '\\' || *value == '"' || *value == '\n')
            *p++ = '\\';
        *p++ = *value == '\n' ? 'n' : *value;
    }
    *p = '\0';
    return escaped;
}

static void family(exposition *x, const char *name, const char *type, const char *help)
{
    appendf(x, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* labels: more labels after the job's, each starting with a comma, or "". */
static void sample_count(exposition *x, const char *name, const char *labels, uint64_t value)
{
    appendf(x, "%s{" JOB_LABEL "=\"%s\"%s} %" PRIu64 "\n", name, x->job, labels, value);
}

/* Not-finite values are written as 0: Prometheus would read NaN, but one
 * NaN turns every sum() and avg() over the job's series into NaN too.  The
 * shorter %.15g is used when it reads back as the same double, so 0.1 is
 * written 0.1 and not 0.10000000000000001. */
static void sample_real(exposition *x, const char *name, const char *labels, double value)
{
    if (!isfinite(value))
        value = 0;
    char text[32];
    snprintf(text, sizeof text, "%.15g", value);
    if (strtod(text, NULL) != value)
        snprintf(text, sizeof text, "%.17g", value);
    appendf(x, "%s{" JOB_LABEL "=\"%s\"%s} %s\n", name, x->job, labels, text);
}

static void per_layer_ratio(exposition *x, const mr_report_metrics *m, const char *name,
                            const char *help, const double *ratios)
{
    if (!ratios)
        return;
    family(x, name, "gauge", help);
    for (int l = 0; l < m->layers; l++) {
        char labels[32];
        snprintf(labels, sizeof labels, ",layer=\"%d\"", m->layer_ids[l]);
        sample_real(x, name, labels, ratios[l]);
    }
}

/* Each layer's `hot_experts` busiest experts so far (ties to the lower
 * id), by place: its share of the layer's tokens, and which it is.  A
 * handful of series per layer where one per expert would be thousands;
 * the expert is a value, not a label, so a new hottest expert makes no
 * new series. */
static void hot_expert_families(exposition *x, const mr_report_metrics *m)
{
    int n = m->hot_experts < m->experts ? m->hot_experts : m->experts;
    if (n <= 0)
        return;
    int *top = malloc((size_t)n * (size_t)m->layers * sizeof *top);
    if (!top) {
        x->failed = true;
        return;
    }
    for (int l = 0; l < m->layers; l++) {
        const uint64_t *tokens = m->expert_tokens + (size_t)l * (size_t)m->experts;
        int *best = top + (size_t)l * (size_t)n;
        for (int p = 0; p < n; p++) {
            int pick = -1;
            for (int e = 0; e < m->experts; e++) {
                bool taken = false;
                for (int q = 0; q < p; q++)
                    taken |= best[q] == e;
                if (!taken && (pick < 0 || tokens[e] > tokens[pick]))
                    pick = e;
            }
            best[p] = pick;
        }
    }
    static const char *const names[2] = {"moerun_layer_hot_expert_share",
                                          "moerun_layer_hot_expert"};
    family(x, names[0], "gauge",
           "Share of each MoE layer's routed tokens its busiest experts took, by place.");
    for (int l = 0; l < m->layers; l++) {
        const uint64_t *tokens = m->expert_tokens + (size_t)l * (size_t)m->experts;
        uint64_t total = 0;
        for (int e = 0; e < m->experts; e++)
            total += tokens[e];
        for (int p = 0; p < n; p++) {
            char labels[48];
            snprintf(labels, sizeof labels, ",layer=\"%d\",place=\"%d\"", m->layer_ids[l], p + 1);
            int e = top[(size_t)l * (size_t)n + (size_t)p];
            sample_real(x, names[0], labels, total ? (double)tokens[e] / (double)total : 0);
        }
    }
    family(x, names[1], "gauge", "Which expert (its id) is each MoE layer's busiest, by place.");
    for (int l = 0; l < m->layers; l++)
        for (int p = 0; p < n; p++) {
            char labels[48];
            snprintf(labels, sizeof labels, ",layer=\"%d\",place=\"%d\"", m->layer_ids[l], p + 1);
            sample_count(x, names[1], labels, (uint64_t)top[(size_t)l * (size_t)n + (size_t)p]);
        }
    free(top);
}

static void layer_families(exposition *x, const mr_report_metrics *m)
{
    per_layer_ratio(x, m, "moerun_layer_rank_imbalance_ratio",
                    "Busiest rank's expert tokens over the mean rank's, per MoE layer, lately.",
                    m->layer_rank_imbalance);
    per_layer_ratio(x, m, "moerun_layer_expert_imbalance_ratio",
                    "Busiest expert's tokens over the mean expert's, per MoE layer: routing skew.",
                    m->layer_expert_imbalance);
    if (!m->expert_tokens || m->experts <= 0)
        return;
    if (!m->expert_series) {
        hot_expert_families(x, m);
        return;
    }
    const char *name = "moerun_expert_tokens_total";
    family(x, name, "counter", "Tokens routed to each expert of each MoE layer.");
    for (int l = 0; l < m->layers; l++)
        for (int e = 0; e < m->experts; e++) {
            char labels[64];
            snprintf(labels, sizeof labels, ",layer=\"%d\",expert=\"%d\"", m->layer_ids[l], e);
            sample_count(x, name, labels, m->expert_tokens[(size_t)l * (size_t)m->experts + e]);
        }
}

static void rank_busy_family(exposition *x, const mr_report_metrics *m)
{
    if (!m->rank_busy || m->ranks <= 0)
        return;
    const char *name = "moerun_rank_busy_ratio";
    family(x, name, "gauge", "Share of the last progress interval each rank was busy.");
    for (int r = 0; r < m->ranks; r++) {
        char labels[32];
        snprintf(labels, sizeof labels, ",rank=\"%d\"", r);
        sample_real(x, name, labels, m->rank_busy[r]);
    }
}

int mr_report_metrics_format(const mr_report_metrics *m, mr_buf *out)
{
    exposition x = {.out = out, .job = escape_label_value(m->job)};
    if (!x.job)
        return -1;
    size_t start = out->len;

    if (m->version) {
        char *version = escape_label_value(m->version);
        char *backends = escape_label_value(m->backends ? m->backends : "");
        if (!version || !backends)
            x.failed = true;
        family(&x, "moerun_build_info", "gauge",
               "1, labelled with the moerun version and the backends built in.");
        appendf(&x, "moerun_build_info{" JOB_LABEL "=\"%s\",version=\"%s\",backends=\"%s\"} 1\n",
                x.job, version ? version : "", backends ? backends : "");
        free(version);
        free(backends);
    }
    family(&x, "moerun_requests_total", "counter", "Requests answered, by outcome.");
    sample_count(&x, "moerun_requests_total", ",status=\"ok\"", m->requests_ok);
    sample_count(&x, "moerun_requests_total", ",status=\"failed\"", m->requests_failed);
    family(&x, "moerun_requests_planned", "gauge", "Requests in the job's input.");
    sample_count(&x, "moerun_requests_planned", "", m->requests_planned);
    family(&x, "moerun_tokens_total", "counter", "Tokens processed, by kind.");
    sample_count(&x, "moerun_tokens_total", ",kind=\"prompt\"", m->tokens_prompt);
    sample_count(&x, "moerun_tokens_total", ",kind=\"completion\"", m->tokens_completion);
    family(&x, "moerun_tokens_per_second", "gauge",
           "Prompt and completion tokens per second over the last progress interval.");
    sample_real(&x, "moerun_tokens_per_second", "", m->tokens_per_second);
    family(&x, "moerun_wall_seconds_total", "counter", "Wall-clock time of every attempt.");
    sample_real(&x, "moerun_wall_seconds_total", "", m->wall_seconds);
    family(&x, "moerun_rank_seconds_total", "counter",
           "Wall-clock time times ranks of every attempt: the rank time the job is billed for.");
    sample_real(&x, "moerun_rank_seconds_total", "", m->rank_seconds);
    family(&x, "moerun_attempts_total", "counter",
           "Attempts of the job: the first run and every resume.");
    sample_count(&x, "moerun_attempts_total", "", m->attempts);
    family(&x, "moerun_preemptions_total", "counter",
           "Resumes of the job after a preemption notice or a crash.");
    sample_count(&x, "moerun_preemptions_total", "", m->preemptions);
    family(&x, "moerun_user_stops_total", "counter",
           "Resumes of the job after a user stopped it (SIGINT, moerun stop).");
    sample_count(&x, "moerun_user_stops_total", "", m->user_stops);
    family(&x, "moerun_ranks", "gauge", "Ranks of the current attempt.");
    sample_count(&x, "moerun_ranks", "", (uint64_t)m->ranks);
    family(&x, "moerun_eplb_rebalances_total", "counter",
           "Online EPLB rebalances that changed the expert placement.");
    sample_count(&x, "moerun_eplb_rebalances_total", "", m->eplb_rebalances);
    family(&x, "moerun_rank_imbalance_ratio", "gauge",
           "Busiest rank's expert tokens over the mean rank's, all MoE layers, lately.");
    sample_real(&x, "moerun_rank_imbalance_ratio", "", m->rank_imbalance);
    if (m->layers > 0)
        layer_families(&x, m);
    rank_busy_family(&x, m);
    family(&x, "moerun_last_update_timestamp_seconds", "gauge",
           "Unix time this file was written.");
    sample_real(&x, "moerun_last_update_timestamp_seconds", "", m->updated);

    free(x.job);
    if (x.failed) {
        /* The caller's text stays as it was, not cut off mid-line. */
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        return -1;
    }
    return 0;
}

int mr_report_metrics_write(const char *path, const mr_report_metrics *m, char *err,
                            size_t errlen)
{
    mr_buf text = {0};
    int rc = 0;
    if (mr_report_metrics_format(m, &text) != 0) {
        snprintf(err, errlen, "out of memory formatting %s", path);
        rc = -1;
    } else if (mr_runner_write_atomic(path, text.data, text.len, err, errlen) != MR_JOBS_OK) {
        rc = -1;
    }
    mr_buf_free(&text);
    return rc;
}
