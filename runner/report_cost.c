/*
 * What a job cost: every rank-hour it held, at the on-demand and the spot
 * price.  Idle ranks, restarts and work redone after a preemption are in
 * the rank-hours, because the user pays for them too.
 */
#include "runner/report.h"

static double per_million(double usd, uint64_t tokens)
{
    return tokens ? usd * 1e6 / (double)tokens : 0.0;
}

static mr_report_price price(double rank_hours, double gpu_hour_usd, uint64_t prompt_tokens,
                             uint64_t completion_tokens)
{
    double usd = rank_hours * gpu_hour_usd;
    return (mr_report_price){
        .usd = usd,
        .usd_per_mtok_input = per_million(usd, prompt_tokens),
        .usd_per_mtok_output = per_million(usd, completion_tokens),
        .usd_per_mtok_total = per_million(usd, prompt_tokens + completion_tokens)};
}

void mr_report_cost_compute(double rank_seconds, double gpu_hour_usd, double spot_gpu_hour_usd,
                            uint64_t prompt_tokens, uint64_t completion_tokens,
                            mr_report_cost *out)
{
    out->rank_hours = rank_seconds / 3600.0;
    out->on_demand = price(out->rank_hours, gpu_hour_usd, prompt_tokens, completion_tokens);
    out->spot = price(out->rank_hours, spot_gpu_hour_usd, prompt_tokens, completion_tokens);
}
