/*
 * The report in its three forms: report.json for programs, report.md for
 * people (with the pictures), and the few lines a terminal shows at the
 * end of a job.  docs/report.md describes every figure.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "runner/report.h"
#include "runner/runner.h"

/* The published rules of thumb for when wide EP with EPLB pays off: the
 * hottest expert's load over the mean, and tokens per rank per step.  And
 * ours: ranks that wait for each other for more than a quarter of their
 * step time have not been paid off, however well the experts balance (the
 * exchange, or a rank short of work, holds the others up). */
#define SKEW_RULE 2.5
#define BATCH_RULE 64.0
#define WAIT_RULE 0.25

static bool eplb_on(const mr_report *r)
{
    return r->eplb_mode[0] && strcmp(r->eplb_mode, "off") != 0;
}

static double tokens_per_second(const mr_report *r)
{
    return r->wall_seconds > 0
               ? (double)(r->tokens_prompt + r->tokens_completion) / r->wall_seconds
               : 0;
}

/* The rank imbalance EPLB left and would have started from: measured by
 * the ranks when online, else predicted from the job's load. */
static void imbalance_pair(const mr_report *r, double *without, double *with)
{
    *without = r->measured ? r->measured_before : r->predicted_without;
    *with = r->measured ? r->measured_after : r->predicted_with;
}

/* The share of step time ranks spent waiting for each other: the four
 * stages are timed without it, so step time is theirs plus the wait. */
double mr_report_wait_share(const mr_report *r)
{
    double step = r->stages.attention + r->stages.dispatch + r->stages.experts +
                  r->stages.combine + r->stages.wait;
    return step > 0 ? r->stages.wait / step : 0;
}

void mr_report_advise(mr_report *r)
{
    char *a = r->advice;
    size_t n = sizeof r->advice;
    double skew = r->expert_imbalance, batch = r->tokens_per_rank_step, without, with;
    double waiting = mr_report_wait_share(r);
    bool skewed = skew >= SKEW_RULE, big = batch >= BATCH_RULE;
    imbalance_pair(r, &without, &with);
    r->paid_off = false;
    if (!r->predicted || !r->timed) {
        snprintf(a, n, "%s", r->predicted || r->timed
                                 ? "Too little was measured to judge wide EP for this job."
                                 : "This job ran no routed experts (or its expert load was "
                                   "not recorded), so expert parallelism does not apply.");
        return;
    }
    if (r->ranks <= 1) {
        snprintf(a, n,
                 "The job ran on one rank, so expert parallelism did not come into it; with "
                 "expert load %.1fx max/mean and %.0f tokens per step, wide EP with EPLB %s.",
                 skew, batch,
                 skewed && big ? "would likely pay off on more ranks"
                 : !big ? "would likely not pay off (the rules of thumb want 64 or more "
                          "tokens per rank per step)"
                        : "would have little to balance (it pays off above about 2.5x)");
        return;
    }
    int k;
    if (!big)
        k = snprintf(a, n,
                     "Wide EP did not pay off: each rank stepped with only %.0f tokens (the rule "
                     "of thumb is 64 or more), so the all-to-all cost more than balancing saved; "
                     "run on fewer ranks or raise [engine] max_batch_tokens and max_sequences.",
                     batch);
    else if (!skewed)
        k = snprintf(a, n,
                     "Wide EP suited the batch (%.0f tokens per rank per step) but EPLB had "
                     "little to gain: expert load was only %.1fx max/mean, and it pays off above "
                     "about 2.5x.",
                     batch, skew);
    else if (!eplb_on(r))
        k = snprintf(a, n,
                     "Wide EP had work to balance but EPLB was off: expert load was %.1fx "
                     "max/mean with %.0f tokens per rank per step, so [eplb] mode = "
                     "static+online should lower the rank imbalance of %.2f.",
                     skew, batch, without);
    else if (waiting > WAIT_RULE) {
        snprintf(a, n,
                 "Wide EP did not pay off yet: EPLB took the rank imbalance from %.2f to %.2f "
                 "on expert load of %.1fx max/mean with %.0f tokens per rank per step, but "
                 "ranks spent %.0f%% of their step time waiting for each other (over %.0f%%): "
                 "the exchange or a rank short of work held the others up; try fewer ranks, "
                 "a larger batch, or dispatch = low-latency.",
                 without, with, skew, batch, 100.0 * waiting, 100.0 * WAIT_RULE);
        return;
    } else {
        r->paid_off = true;
        k = snprintf(a, n,
                     "Wide EP and EPLB paid off: expert load was %.1fx max/mean (above the "
                     "~2.5x rule of thumb) with %.0f tokens per rank per step (above ~64), and "
                     "EPLB took the rank imbalance from %.2f to %.2f.",
                     skew, batch, without, with);
    }
    if (k > 0 && (size_t)k < n && r->stages.attention + r->stages.dispatch + r->stages.experts +
                                       r->stages.combine + r->stages.wait >
                                   0)
        snprintf(a + k, n - (size_t)k,
                 " Ranks spent %.0f%% of their step time waiting for each other.",
                 100.0 * waiting);
}

/* ---- report.json ---- */

static void add_price(cJSON *cost, const char *name, const char *per_mtok,
                      const mr_report_price *p, bool split)
{
    cJSON_AddNumberToObject(cost, name, p->usd);
    cJSON *m = cJSON_AddObjectToObject(cost, per_mtok);
    cJSON_AddNumberToObject(m, "total", p->usd_per_mtok_total);
    if (split) {
        cJSON_AddNumberToObject(m, "input", p->usd_per_mtok_input);
        cJSON_AddNumberToObject(m, "output", p->usd_per_mtok_output);
    }
}

static cJSON *cost_json(const mr_report *r)
{
    cJSON *cost = cJSON_CreateObject();
    cJSON_AddNumberToObject(cost, "gpu_hour_usd", r->prices.gpu_hour_usd);
    cJSON_AddNumberToObject(cost, "spot_gpu_hour_usd", r->prices.spot_gpu_hour_usd);
    add_price(cost, "on_demand_usd", "on_demand_usd_per_mtok", &r->cost.on_demand, r->cost.split);
    add_price(cost, "spot_usd", "spot_usd_per_mtok", &r->cost.spot, r->cost.split);
    cJSON *split = cJSON_AddObjectToObject(cost, "split");
    cJSON_AddStringToObject(split, "method", r->cost.split ? "list_price_ratio" : "none");
    if (r->cost.split) {
        cJSON_AddNumberToObject(split, "input_usd_per_million", r->prices.input_usd_per_million);
        cJSON_AddNumberToObject(split, "output_usd_per_million",
                                r->prices.output_usd_per_million);
        cJSON_AddNumberToObject(split, "input_share", r->cost.input_share);
        cJSON_AddNumberToObject(split, "list_usd", r->cost.list_usd);
    }
    return cost;
}

static cJSON *eplb_json(const mr_report *r)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "mode", r->eplb_mode);
    cJSON_AddNumberToObject(e, "decisions", (double)r->eplb_decisions);
    cJSON_AddNumberToObject(e, "rebalances", (double)r->eplb_rebalances);
    cJSON_AddNumberToObject(e, "experts_moved", (double)r->experts_moved);
    cJSON_AddNumberToObject(e, "bytes_moved", r->bytes_moved);
    if (r->measured) {
        cJSON_AddNumberToObject(e, "rank_imbalance_before", r->measured_before);
        cJSON_AddNumberToObject(e, "rank_imbalance_after", r->measured_after);
    }
    if (r->predicted) {
        cJSON_AddNumberToObject(e, "expert_imbalance", r->expert_imbalance);
        cJSON_AddNumberToObject(e, "predicted_rank_imbalance_without", r->predicted_without);
        cJSON_AddNumberToObject(e, "predicted_rank_imbalance_with", r->predicted_with);
    }
    return e;
}

int mr_report_format_json(const mr_report *r, mr_buf *out)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "job", r->job);
    cJSON_AddStringToObject(j, "run_dir", r->run_dir);
    cJSON_AddBoolToObject(j, "finished", r->finished);
    cJSON *req = cJSON_AddObjectToObject(j, "requests");
    cJSON_AddNumberToObject(req, "ok", (double)r->requests_ok);
    cJSON_AddNumberToObject(req, "failed", (double)r->requests_failed);
    cJSON_AddNumberToObject(req, "planned", (double)r->requests_planned);
    cJSON *tok = cJSON_AddObjectToObject(j, "tokens");
    cJSON_AddNumberToObject(tok, "prompt", (double)r->tokens_prompt);
    cJSON_AddNumberToObject(tok, "completion", (double)r->tokens_completion);
    cJSON_AddNumberToObject(tok, "total", (double)(r->tokens_prompt + r->tokens_completion));
    cJSON_AddNumberToObject(j, "wall_seconds", r->wall_seconds);
    cJSON_AddNumberToObject(j, "startup_seconds", r->startup_seconds);
    cJSON_AddNumberToObject(j, "rank_seconds", r->rank_seconds);
    cJSON_AddNumberToObject(j, "rank_hours", r->cost.rank_hours);
    cJSON_AddNumberToObject(j, "ranks", r->ranks);
    cJSON_AddNumberToObject(j, "attempts", (double)r->attempts);
    cJSON_AddNumberToObject(j, "tokens_per_second", tokens_per_second(r));
    cJSON_AddNumberToObject(j, "tokens_per_second_per_rank",
                            r->ranks > 0 ? tokens_per_second(r) / r->ranks : 0);
    cJSON_AddItemToObject(j, "cost", cost_json(r));
    cJSON_AddNumberToObject(j, "preemptions", (double)r->preemptions);
    cJSON_AddNumberToObject(j, "user_stops", (double)r->user_stops);
    cJSON_AddNumberToObject(j, "preemption_lost_seconds", r->preemption_lost_seconds);
    if (r->timed) {
        cJSON *st = cJSON_AddObjectToObject(j, "step_seconds");
        cJSON_AddNumberToObject(st, "attention", r->stages.attention);
        cJSON_AddNumberToObject(st, "dispatch", r->stages.dispatch);
        cJSON_AddNumberToObject(st, "experts", r->stages.experts);
        cJSON_AddNumberToObject(st, "combine", r->stages.combine);
        cJSON_AddNumberToObject(st, "wait", r->stages.wait);
        cJSON_AddNumberToObject(j, "steps", (double)r->steps);
        cJSON_AddNumberToObject(j, "tokens_per_rank_step", r->tokens_per_rank_step);
    }
    cJSON_AddItemToObject(j, "eplb", eplb_json(r));
    cJSON *advice = cJSON_AddObjectToObject(j, "advice");
    cJSON_AddBoolToObject(advice, "wide_ep_paid_off", r->paid_off);
    cJSON_AddStringToObject(advice, "text", r->advice);
    char *text = cJSON_Print(j);
    int rc = text && mr_buf_append(out, text, strlen(text)) == MR_JOBS_OK &&
                     mr_buf_append(out, "\n", 1) == MR_JOBS_OK
                 ? 0
                 : -1;
    cJSON_free(text);
    cJSON_Delete(j);
    return rc;
}

/* ---- shared sentences ----
 * The writers below append unconditionally and report whether any append
 * failed: the only failure is running out of memory, and the caller then
 * throws the text away. */

/* Shares of step time that add up to 100%: the four stages are timed
 * without the waiting, which is the fifth share. */
static bool stage_line(const mr_report *r, mr_buf *out)
{
    const mr_report_stages *s = &r->stages;
    double step = s->attention + s->dispatch + s->experts + s->combine + s->wait;
    double all = step > 0 ? step : 1;
    return mr_buf_printf(out,
                         "attention %.0f%%, dispatch %.0f%%, experts %.0f%%, combine %.0f%%, "
                         "waiting for other ranks %.0f%% of %.1f rank-seconds in %" PRIu64
                         " steps",
                         100 * s->attention / all, 100 * s->dispatch / all,
                         100 * s->experts / all, 100 * s->combine / all, 100 * s->wait / all,
                         step, r->steps) != MR_JOBS_OK;
}

static bool eplb_line(const mr_report *r, mr_buf *out)
{
    bool failed = mr_buf_printf(out,
                                "%s; %" PRIu64 " rebalance%s of %" PRIu64 " decisions, %" PRIu64
                                " experts (%.1f MiB) moved",
                                r->eplb_mode, r->eplb_rebalances,
                                r->eplb_rebalances == 1 ? "" : "s", r->eplb_decisions,
                                r->experts_moved, r->bytes_moved / (1 << 20)) != MR_JOBS_OK;
    if (r->measured)
        failed |= mr_buf_printf(out, "; measured rank imbalance %.2f before, %.2f after",
                                r->measured_before, r->measured_after) != MR_JOBS_OK;
    if (r->predicted)
        failed |= mr_buf_printf(out,
                                "; on the job's load: rank imbalance %.2f without EPLB, %.2f "
                                "with (expert load %.2fx max/mean)",
                                r->predicted_without, r->predicted_with,
                                r->expert_imbalance) != MR_JOBS_OK;
    return failed;
}

/* The whole cost over all tokens, and with list prices its split between
 * input and output.  A price of 0 is one the job did not set. */
static bool price_line(const char *name, double per_hour, const mr_report_price *p, bool split,
                       mr_buf *out)
{
    if (per_hour <= 0)
        return mr_buf_printf(out, "%s: no price set ([cost] in the job)", name) != MR_JOBS_OK;
    bool failed = mr_buf_printf(out,
                                "%s $%.4f at $%.2f per GPU-hour: $%.4f per million tokens, "
                                "prompt and completion together",
                                name, p->usd, per_hour, p->usd_per_mtok_total) != MR_JOBS_OK;
    if (split)
        failed |= mr_buf_printf(out, "; split: $%.4f per million input, $%.4f per million output",
                                p->usd_per_mtok_input, p->usd_per_mtok_output) != MR_JOBS_OK;
    return failed;
}

/* How the per-million figures were made, in one sentence. */
static bool split_method(const mr_report *r, mr_buf *out)
{
    if (!r->cost.split)
        return mr_buf_printf(out,
                             "total only: moerun pays for GPU-hours, which serve input and "
                             "output tokens together; [cost] input_usd_per_million and "
                             "output_usd_per_million split it the way providers price") !=
               MR_JOBS_OK;
    return mr_buf_printf(out,
                         "in the ratio of the list prices $%.4g input : $%.4g output per "
                         "million, which puts %.0f%% of the cost on input tokens; at those list "
                         "prices the job's tokens would cost $%.4f",
                         r->prices.input_usd_per_million, r->prices.output_usd_per_million,
                         100.0 * r->cost.input_share, r->cost.list_usd) != MR_JOBS_OK;
}

static const char *state_of(const mr_report *r)
{
    return r->finished ? "finished" : "not finished: counts are the last checkpoint's";
}

/* ---- the terminal ---- */

int mr_report_format_text(const mr_report *r, mr_buf *out)
{
    double per_second = tokens_per_second(r);
    bool failed = mr_buf_printf(out, "report: job %s (%s; %" PRIu64 " attempt%s)\n", r->job,
                                state_of(r), r->attempts,
                                r->attempts == 1 ? "" : "s") != MR_JOBS_OK;
    failed |= mr_buf_printf(out,
                            "  requests:    %" PRIu64 " served, %" PRIu64 " failed, of %" PRIu64
                            "\n  tokens:      %" PRIu64 " prompt + %" PRIu64 " completion\n",
                            r->requests_ok, r->requests_failed, r->requests_planned,
                            r->tokens_prompt, r->tokens_completion) != MR_JOBS_OK;
    failed |= mr_buf_printf(out,
                            "  time:        %.1f s wall (%.1f s starting: launch, model load, "
                            "engine; %.1f s serving), %.4f rank-hours on %d rank%s; %.0f "
                            "tokens/s, %.0f per rank\n  cost:        ",
                            r->wall_seconds, r->startup_seconds,
                            fmax(r->wall_seconds - r->startup_seconds, 0), r->cost.rank_hours,
                            r->ranks,
                            r->ranks == 1 ? "" : "s", per_second,
                            r->ranks > 0 ? per_second / r->ranks : 0) != MR_JOBS_OK;
    failed |= price_line("on demand", r->prices.gpu_hour_usd, &r->cost.on_demand,
                         r->cost.split, out);
    failed |= mr_buf_printf(out, "\n               ") != MR_JOBS_OK;
    failed |= price_line("spot", r->prices.spot_gpu_hour_usd, &r->cost.spot, r->cost.split,
                         out);
    failed |= mr_buf_printf(out, "\n  cost split:  ") != MR_JOBS_OK;
    failed |= split_method(r, out);
    failed |= mr_buf_printf(out,
                            "\n  preemptions: %" PRIu64 ", costing %.1f rank-seconds; user "
                            "stops: %" PRIu64 "\n",
                            r->preemptions, r->preemption_lost_seconds,
                            r->user_stops) != MR_JOBS_OK;
    if (r->timed) {
        failed |= mr_buf_printf(out, "  step time:   ") != MR_JOBS_OK;
        failed |= stage_line(r, out);
        failed |= mr_buf_printf(out, "\n") != MR_JOBS_OK;
    }
    failed |= mr_buf_printf(out, "  eplb:        ") != MR_JOBS_OK;
    failed |= eplb_line(r, out);
    failed |= mr_buf_printf(out, "\n  advice:      %s\n  report:      %s/%s\n", r->advice,
                            r->run_dir, MR_RUN_REPORT_MD) != MR_JOBS_OK;
    return failed ? -1 : 0;
}

/* ---- report.md ---- */

static bool price_row(const char *name, double per_hour, const mr_report_price *p, bool split,
                      mr_buf *out)
{
    if (per_hour <= 0)
        return mr_buf_printf(out, "| %s | no price set | | |%s\n", name, split ? " | |" : "") !=
               MR_JOBS_OK;
    bool failed = mr_buf_printf(out, "| %s | $%.2f | $%.4f | $%.4f |", name, per_hour, p->usd,
                                p->usd_per_mtok_total) != MR_JOBS_OK;
    if (split)
        failed |= mr_buf_printf(out, " $%.4f | $%.4f |", p->usd_per_mtok_input,
                                p->usd_per_mtok_output) != MR_JOBS_OK;
    return failed | (mr_buf_printf(out, "\n") != MR_JOBS_OK);
}

int mr_report_format_markdown(const mr_report *r, mr_buf *out)
{
    double per_second = tokens_per_second(r);
    bool failed =
        mr_buf_printf(out,
                      "# Job report: %s\n\n%s; %" PRIu64 " attempt%s, %" PRIu64
                      " preemption%s, %" PRIu64 " user stop%s.  How each figure is computed: "
                      "moerun's docs/report.md.\n\n"
                      "## Summary\n\n> %s\n\n| | |\n|---|---|\n",
                      r->job,
                      r->finished ? "Finished" : "Not finished: counts are the last checkpoint's",
                      r->attempts, r->attempts == 1 ? "" : "s", r->preemptions,
                      r->preemptions == 1 ? "" : "s", r->user_stops,
                      r->user_stops == 1 ? "" : "s", r->advice) != MR_JOBS_OK;
    failed |= mr_buf_printf(out,
                            "| requests served | %" PRIu64 " of %" PRIu64 " |\n"
                            "| requests failed | %" PRIu64 " (errors.jsonl) |\n"
                            "| prompt tokens | %" PRIu64 " |\n"
                            "| completion tokens | %" PRIu64 " |\n",
                            r->requests_ok, r->requests_planned, r->requests_failed,
                            r->tokens_prompt, r->tokens_completion) != MR_JOBS_OK;
    failed |= mr_buf_printf(out,
                            "| wall time | %.1f s |\n| of it starting (launch, model load, "
                            "engine) | %.1f s |\n| ranks | %d |\n| rank-hours | %.4f |\n"
                            "| throughput | %.0f tokens/s (%.0f per rank) |\n"
                            "| time lost to preemptions | %.1f rank-seconds |\n\n",
                            r->wall_seconds, r->startup_seconds, r->ranks, r->cost.rank_hours, per_second,
                            r->ranks > 0 ? per_second / r->ranks : 0,
                            r->preemption_lost_seconds) != MR_JOBS_OK;
    failed |= mr_buf_printf(out,
                            "## Cost\n\nRank-hours × price per GPU-hour, idle and recovery time "
                            "included; per million tokens is the whole cost over prompt and "
                            "completion tokens together.  Input and output: ") != MR_JOBS_OK;
    failed |= split_method(r, out);
    failed |= mr_buf_printf(out, ".\n\n| price | per GPU-hour | job | per M tokens |%s\n"
                                 "|---|---|---|---|%s\n",
                            r->cost.split ? " per M input | per M output |" : "",
                            r->cost.split ? "---|---|" : "") != MR_JOBS_OK;
    failed |= price_row("on demand", r->prices.gpu_hour_usd, &r->cost.on_demand, r->cost.split,
                        out);
    failed |= price_row("spot", r->prices.spot_gpu_hour_usd, &r->cost.spot, r->cost.split, out);
    if (r->timed) {
        failed |= mr_buf_printf(out, "\n## Step time\n\n") != MR_JOBS_OK;
        failed |= stage_line(r, out);
        failed |= mr_buf_printf(out, "; %.1f tokens per rank per step.\n",
                                r->tokens_per_rank_step) != MR_JOBS_OK;
    }
    failed |= mr_buf_printf(out, "\n## Expert load and EPLB\n\n") != MR_JOBS_OK;
    failed |= eplb_line(r, out);
    failed |= mr_buf_printf(out, ".\n") != MR_JOBS_OK;
    if (r->heatmap)
        failed |= mr_buf_printf(out,
                                "\nTokens per rank and MoE layer, with the experts in order "
                                "and on EPLB's final placement (an even row is a balanced "
                                "layer):\n\n"
                                "![tokens per rank and MoE layer](%s)\n",
                                MR_RUN_HEATMAP_SVG) != MR_JOBS_OK;
    if (r->busy_map)
        failed |= mr_buf_printf(out,
                                "\n## Ranks over time\n\nShare of each interval every rank spent "
                                "computing rather than waiting or idle, each column as wide "
                                "as its interval, attempts marked:\n\n"
                                "![busy share per rank](%s)\n",
                                MR_RUN_BUSY_SVG) != MR_JOBS_OK;
    failed |= mr_buf_printf(out,
                            "\n## Files\n\nresults.jsonl, errors.jsonl, report.json, "
                            "metrics.prom, timeline.jsonl, expert_load.csv%s\n",
                            eplb_on(r) ? ", eplb.jsonl" : "") != MR_JOBS_OK;
    return failed ? -1 : 0;
}
