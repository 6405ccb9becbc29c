/* Cost arithmetic of the report on cases worked by hand. */
#include <criterion/criterion.h>
#include <math.h>

#include "runner/report.h"

static void assert_close(double got, double want)
{
    cr_assert(fabs(got - want) <= 1e-9 * (fabs(want) + 1), "got %.12g, want %.12g", got, want);
}

Test(report_cost, two_ranks_for_half_an_hour_is_one_rank_hour)
{
    mr_report_cost c;
    /* 2 ranks x 1800 s = 1 rank-hour; $2.50 on demand, $0.90 spot;
     * 1,000,000 prompt + 250,000 completion tokens; no list prices. */
    mr_report_prices prices = {.gpu_hour_usd = 2.50, .spot_gpu_hour_usd = 0.90};
    mr_report_cost_compute(3600, &prices, 1000000, 250000, &c);
    assert_close(c.rank_hours, 1.0);
    cr_assert_not(c.split);
    assert_close(c.on_demand.usd, 2.50);
    assert_close(c.on_demand.usd_per_mtok_total, 2.00);
    assert_close(c.spot.usd, 0.90);
    assert_close(c.spot.usd_per_mtok_total, 0.72);
    /* No split without list prices: nothing per kind of token. */
    assert_close(c.on_demand.usd_per_mtok_input, 0);
    assert_close(c.on_demand.usd_per_mtok_output, 0);
}

Test(report_cost, list_prices_split_the_cost_in_their_ratio)
{
    mr_report_cost c;
    /* The same job with list prices $0.15 input and $0.60 output per
     * million: they charge 0.15 + 0.25 x 0.60 = $0.30 for its tokens, half
     * of it for input.  Scaled to $2.50: $1.25 per million input and
     * $5.00 per million output (1.25 x 1 + 5.00 x 0.25 = 2.50). */
    mr_report_prices prices = {.gpu_hour_usd = 2.50,
                               .spot_gpu_hour_usd = 0.90,
                               .input_usd_per_million = 0.15,
                               .output_usd_per_million = 0.60};
    mr_report_cost_compute(3600, &prices, 1000000, 250000, &c);
    cr_assert(c.split);
    assert_close(c.list_usd, 0.30);
    assert_close(c.input_share, 0.5);
    assert_close(c.on_demand.usd_per_mtok_input, 1.25);
    assert_close(c.on_demand.usd_per_mtok_output, 5.00);
    assert_close(c.on_demand.usd_per_mtok_total, 2.00);
    /* Spot: 0.90 / 0.30 = 3 times the list prices. */
    assert_close(c.spot.usd_per_mtok_input, 0.45);
    assert_close(c.spot.usd_per_mtok_output, 1.80);
    /* The split adds up to the cost, whatever the ratio. */
    prices.input_usd_per_million = 3;
    prices.output_usd_per_million = 15;
    mr_report_cost_compute(3600, &prices, 123456, 7890, &c);
    assert_close(c.on_demand.usd_per_mtok_input * 0.123456 +
                     c.on_demand.usd_per_mtok_output * 0.007890,
                 2.50);
    assert_close(c.on_demand.usd_per_mtok_output / c.on_demand.usd_per_mtok_input, 5);
}

Test(report_cost, idle_and_recovery_time_is_paid_for)
{
    mr_report_cost c;
    /* 8 ranks for 90 minutes plus 8 ranks x 15 min lost to a preemption:
     * 12 + 2 = 14 rank-hours at $3.20 = $44.80 for 7,000,000 tokens. */
    mr_report_prices prices = {.gpu_hour_usd = 3.20, .spot_gpu_hour_usd = 1.10};
    mr_report_cost_compute(8 * 90 * 60 + 8 * 15 * 60, &prices, 5600000, 1400000, &c);
    assert_close(c.rank_hours, 14.0);
    assert_close(c.on_demand.usd, 44.80);
    assert_close(c.on_demand.usd_per_mtok_total, 6.40);
    assert_close(c.spot.usd, 15.40);
    assert_close(c.spot.usd_per_mtok_total, 2.20);
}

Test(report_cost, no_tokens_or_no_price_costs_nothing_per_token)
{
    mr_report_cost c;
    mr_report_prices prices = {.gpu_hour_usd = 2.0,
                               .input_usd_per_million = 1,
                               .output_usd_per_million = 4};
    mr_report_cost_compute(7200, &prices, 0, 0, &c);
    assert_close(c.on_demand.usd, 4.0);
    assert_close(c.on_demand.usd_per_mtok_total, 0);
    assert_close(c.on_demand.usd_per_mtok_input, 0);
    assert_close(c.on_demand.usd_per_mtok_output, 0);
    assert_close(c.spot.usd, 0);
    prices = (mr_report_prices){0};
    mr_report_cost_compute(7200, &prices, 100, 100, &c);
    assert_close(c.on_demand.usd_per_mtok_total, 0);
    cr_assert_not(c.split);
}
