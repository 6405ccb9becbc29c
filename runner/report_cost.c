/*
 * What a job cost: every rank-hour it held, at the on-demand and the spot
 * price.  Idle ranks, restarts and work redone after a preemption are in
 * the rank-hours, because the user pays for them too.
 *
 * A GPU-hour serves prompt and completion tokens together, so moerun has
 * no split of its own.  Providers price the two apart (output several
 * times input); given their list prices, the cost is divided in that
 * ratio, which answers "what would my input and output prices be".
 */
#include "runner/report.h"

static mr_report_price price(double rank_hours, double gpu_hour_usd, const mr_report_cost *c,
                             const mr_report_prices *list, uint64_t prompt_tokens,
                             uint64_t completion_tokens)
{
    double usd = rank_hours * gpu_hour_usd;
    uint64_t tokens = prompt_tokens + completion_tokens;
    mr_report_price p = {.usd = usd, .usd_per_mtok_total = tokens ? usd * 1e6 / (double)tokens : 0};
    /* list_usd is the list prices' charge for these tokens: scaling both
     * prices by usd / list_usd makes them charge exactly usd. */
    if (c->split && c->list_usd > 0) {
        p.usd_per_mtok_input = usd * list->input_usd_per_million / c->list_usd;
        p.usd_per_mtok_output = usd * list->output_usd_per_million / c->list_usd;
    }
    return p;
}

void mr_report_cost_compute(double rank_seconds, const mr_report_prices *prices,
                            uint64_t prompt_tokens, uint64_t completion_tokens,
                            mr_report_cost *out)
{
    double input = (double)prompt_tokens * prices->input_usd_per_million / 1e6;
    double output = (double)completion_tokens * prices->output_usd_per_million / 1e6;
    *out = (mr_report_cost){
        .rank_hours = rank_seconds / 3600.0,
        .split = prices->input_usd_per_million > 0 && prices->output_usd_per_million > 0,
        .list_usd = input + output};
    out->input_share = out->split && out->list_usd > 0 ? input / out->list_usd : 0;
    out->on_demand = price(out->rank_hours, prices->gpu_hour_usd, out, prices, prompt_tokens,
                           completion_tokens);
    out->spot = price(out->rank_hours, prices->spot_gpu_hour_usd, out, prices, prompt_tokens,
                      completion_tokens);
}
