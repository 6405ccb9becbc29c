/*
 * The job report (private to runner/): what a job did and what it cost,
 * the metrics file a node exporter scrapes while it runs, and the pictures
 * report.md links.  docs/report.md is the reference for every figure.
 *
 * Everything here is computed from files in the run folder (results,
 * errors, the checkpoint's counters, timeline.jsonl, eplb.jsonl,
 * expert_load.csv), so `moerun report RUN_DIR` after the job writes the
 * same report the job wrote at its end, and a resumed job's report covers
 * every attempt.
 */
#ifndef MR_RUNNER_REPORT_H
#define MR_RUNNER_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs/jobs.h"

/* Run-folder files the report reads or writes. */
#define MR_RUN_REPORT_JSON "report.json"
#define MR_RUN_REPORT_MD "report.md"
#define MR_RUN_METRICS "metrics.prom"
#define MR_RUN_TIMELINE "timeline.jsonl" /* one record of every rank's meters per sample */
#define MR_RUN_HEATMAP_SVG "expert_load.svg"
#define MR_RUN_BUSY_SVG "rank_busy.svg"

/* ------------------------------------------------------------------------
 * Cost (report_cost.c): rank-hours times the price, divided by tokens
 * ------------------------------------------------------------------------ */
typedef struct {
    double usd;                /* rank_hours * price per GPU hour */
    double usd_per_mtok_total; /* the whole cost over prompt and completion tokens */
    /* Split (mr_report_cost.split): the cost divided between input and
     * output tokens in the ratio of the list prices, per million of each
     * kind, so that input + output add up to the cost; else 0. */
    double usd_per_mtok_input, usd_per_mtok_output;
} mr_report_price;

/* The job's [cost] keys; 0 is a price not set. */
typedef struct {
    double gpu_hour_usd, spot_gpu_hour_usd;
    double input_usd_per_million, output_usd_per_million; /* a provider's list prices */
} mr_report_prices;

typedef struct {
    double rank_hours;
    /* Both list prices set: moerun's cost is split the way providers price. */
    bool split;
    double input_share; /* of the cost, the input tokens' under the split */
    double list_usd;    /* what the list prices charge for the job's tokens */
    mr_report_price on_demand, spot;
} mr_report_cost;

/* moerun pays for GPU-hours, not by kind of token: without both list
 * prices only the total per million is given; with them the cost is split
 * so that input and output per million stand in the list prices' ratio
 * and, times the tokens, add up to the cost.  0 for no tokens. */
void mr_report_cost_compute(double rank_seconds, const mr_report_prices *prices,
                            uint64_t prompt_tokens, uint64_t completion_tokens,
                            mr_report_cost *out);

/* ------------------------------------------------------------------------
 * The report itself (report.c gathers it, report_format.c writes it)
 * ------------------------------------------------------------------------ */

/* Seconds of rank time by stage, summed over ranks and attempts. */
typedef struct {
    double attention, dispatch, experts, combine, wait;
} mr_report_stages;

typedef struct {
    char job[256], run_dir[4096];
    bool finished; /* results.jsonl and errors.jsonl are joined */
    uint64_t requests_planned, requests_ok, requests_failed;
    uint64_t tokens_prompt, tokens_completion;
    /* Every attempt, from the checkpoint's counters. */
    double wall_seconds, rank_seconds;
    uint64_t attempts, preemptions, user_stops;
    double preemption_lost_seconds;
    int ranks; /* the last attempt's */
    mr_report_prices prices;
    mr_report_cost cost;
    /* From timeline.jsonl; steps and rows are the last attempt's world. */
    bool timed;
    mr_report_stages stages;
    uint64_t steps, rows;         /* forward steps; token rows over all ranks */
    double startup_seconds;       /* wall time before serving: launch, model load, engine */
    double tokens_per_rank_step;  /* rows / (ranks * steps) */
    /* EPLB. */
    char eplb_mode[32];
    uint64_t eplb_decisions, eplb_rebalances, experts_moved;
    double bytes_moved;
    bool measured; /* online: the ranks' measured imbalance, before and after */
    double measured_before, measured_after;
    bool predicted; /* from expert_load.csv and the final placement */
    double predicted_without, predicted_with, expert_imbalance;
    /* Planning advice, in plain sentences. */
    bool paid_off;
    char advice[1024];
    bool heatmap, busy_map; /* the SVGs were drawn */
} mr_report;

/* report_format.c */
void mr_report_advise(mr_report *r);
/* The share of step time the ranks spent waiting for each other (0 when
 * nothing was timed). */
double mr_report_wait_share(const mr_report *r);
/* Appends report.json's text / report.md's / the terminal's. */
int mr_report_format_json(const mr_report *r, mr_buf *out);
int mr_report_format_markdown(const mr_report *r, mr_buf *out);
int mr_report_format_text(const mr_report *r, mr_buf *out);

/* ------------------------------------------------------------------------
 * Pictures (report_svg.c)
 * ------------------------------------------------------------------------ */

/* One heatmap: rows x cols cells coloured by value. */
typedef struct {
    const char *title;     /* above the panel: "Before EPLB: ..." */
    const char *row_name;  /* "MoE layer", "rank": in tooltips and the axis label */
    const char *col_name;  /* "expert", "slot", "seconds" */
    int rows, cols;
    const double *values;  /* [rows][cols] */
    /* Optional [rows] / [cols] labels for ticks and tooltips; NULL: the
     * index from 0. */
    const double *row_labels, *col_labels;
    /* A vertical rule every col_group columns (a rank's slots); 0: none. */
    int col_group;
    /* Optional [cols + 1], rising: column c spans col_edges[c] to
     * col_edges[c + 1] on a continuous axis (seconds), drawn as wide as
     * that, with round tick values instead of col_labels. */
    const double *col_edges;
    /* Optional: n_marks labelled vertical lines at positions on that axis
     * (where each attempt starts). */
    const double *marks;
    const char *const *mark_labels;
    int n_marks;
} mr_report_heatmap;

/* An SVG file of n panels stacked top to bottom under one title, sharing
 * one colour scale from 0 to scale_max (<= 0: the largest value of all
 * panels rounded up to a round tick: 1, 2 or 5 times a power of ten), with
 * a legend saying `unit` whose ticks are round numbers.  Every cell is one
 * <rect class="cell"> with a <title> tooltip ("MoE layer 3, expert 17:
 * 1234 tokens").  A NULL title is left out; NULL names read "row" and
 * "column", a NULL unit is none.  Negative or non-finite values are
 * refused.  Written atomically.  Returns 0, or -1 with err set. */
int mr_report_svg_heatmaps(const char *path, const char *title, const mr_report_heatmap *panels,
                           int n_panels, double scale_max, const char *unit, char *err,
                           size_t errlen);

/* ------------------------------------------------------------------------
 * Metrics (metrics.c): the Prometheus text exposition format, written the
 * node-exporter textfile way (a temporary file renamed over the old one)
 * ------------------------------------------------------------------------ */
typedef struct {
    const char *job;                 /* the job name: the moerun_job label of every series */
    const char *version, *backends;  /* moerun_build_info's labels */
    uint64_t requests_ok, requests_failed, requests_planned;
    uint64_t tokens_prompt, tokens_completion;
    double tokens_per_second;        /* since the last sample */
    double wall_seconds, rank_seconds; /* the job so far, every attempt */
    uint64_t attempts, preemptions, user_stops;
    int ranks;
    uint64_t eplb_rebalances;
    double rank_imbalance;           /* busiest rank's expert tokens / mean, recent */
    /* Per MoE layer; layers 0: a dense model, no expert series.  Each of
     * the three arrays after layer_ids may be NULL: its family is left out. */
    int layers, experts;
    const int *layer_ids;            /* [layers]: the model layer index, the "layer" label */
    const double *layer_rank_imbalance;   /* [layers], recent */
    const double *layer_expert_imbalance; /* [layers]: max / mean tokens per expert */
    const uint64_t *expert_tokens;   /* [layers][experts]: tokens routed, the job so far */
    /* Series per (layer, expert) of expert_tokens ([report]
     * expert_metrics = on); else only each layer's hot_experts busiest. */
    bool expert_series;
    int hot_experts;
    const double *rank_busy;         /* [ranks]: busy share since the last sample, or NULL */
    double updated;                  /* Unix time of the sample */
} mr_report_metrics;

/* Appends the exposition text to out.  Returns 0, or -1 when out of memory
 * (out is then as it was).  A double that is not finite is written as 0. */
int mr_report_metrics_format(const mr_report_metrics *m, mr_buf *out);
/* Formats and writes it to path atomically.  Returns 0, or -1 with err set. */
int mr_report_metrics_write(const char *path, const mr_report_metrics *m, char *err,
                            size_t errlen);

#endif
