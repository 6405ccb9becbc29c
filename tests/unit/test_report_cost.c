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
     * 1,000,000 prompt + 250,000 completion tokens. */
    mr_report_cost_compute(3600, 2.50, 0.90, 1000000, 250000, &c);
    assert_close(c.rank_hours, 1.0);
    assert_close(c.on_demand.usd, 2.50);
    assert_close(c.on_demand.usd_per_mtok_input, 2.50);
    assert_close(c.on_demand.usd_per_mtok_output, 10.00);
    assert_close(c.on_demand.usd_per_mtok_total, 2.00);
    assert_close(c.spot.usd, 0.90);
    assert_close(c.spot.usd_per_mtok_input, 0.90);
    assert_close(c.spot.usd_per_mtok_output, 3.60);
    assert_close(c.spot.usd_per_mtok_total, 0.72);
}

Test(report_cost, idle_and_recovery_time_is_paid_for)
{
    mr_report_cost c;
    /* 8 ranks for 90 minutes plus 8 ranks x 15 min lost to a preemption:
     * 12 + 2 = 14 rank-hours at $3.20 = $44.80 for 7,000,000 tokens. */
    mr_report_cost_compute(8 * 90 * 60 + 8 * 15 * 60, 3.20, 1.10, 5600000, 1400000, &c);
    assert_close(c.rank_hours, 14.0);
    assert_close(c.on_demand.usd, 44.80);
    assert_close(c.on_demand.usd_per_mtok_total, 6.40);
    assert_close(c.on_demand.usd_per_mtok_input, 8.00);
    assert_close(c.on_demand.usd_per_mtok_output, 32.00);
    assert_close(c.spot.usd, 15.40);
    assert_close(c.spot.usd_per_mtok_total, 2.20);
}

Test(report_cost, no_tokens_or_no_price_costs_nothing_per_token)
{
    mr_report_cost c;
    mr_report_cost_compute(7200, 2.0, 0, 0, 0, &c);
    assert_close(c.on_demand.usd, 4.0);
    assert_close(c.on_demand.usd_per_mtok_input, 0);
    assert_close(c.on_demand.usd_per_mtok_total, 0);
    assert_close(c.spot.usd, 0);
    mr_report_cost_compute(7200, 0, 0, 100, 100, &c);
    assert_close(c.on_demand.usd_per_mtok_total, 0);
}
