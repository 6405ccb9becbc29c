/* The verdicts of moerun preflight that need no hardware: the memory margin
 * and ibstat's width and speed codes. */
#include <criterion/criterion.h>
#include <string.h>

#include "runner/preflight.h"

#define GIB (UINT64_C(1) << 30)

Test(preflight, memory_verdict_keeps_half_the_weights_spare)
{
    cr_assert_eq(mr_preflight_memory_verdict(100 * GIB, 10 * GIB), MR_PREFLIGHT_OK);
    cr_assert_eq(mr_preflight_memory_verdict(15 * GIB, 10 * GIB), MR_PREFLIGHT_OK);
    cr_assert_eq(mr_preflight_memory_verdict(15 * GIB - 1, 10 * GIB), MR_PREFLIGHT_WARN);
    cr_assert_eq(mr_preflight_memory_verdict(10 * GIB, 10 * GIB), MR_PREFLIGHT_WARN);
    cr_assert_eq(mr_preflight_memory_verdict(10 * GIB - 1, 10 * GIB), MR_PREFLIGHT_FAIL);
    cr_assert_eq(mr_preflight_memory_verdict(0, 1), MR_PREFLIGHT_FAIL);
    cr_assert_eq(mr_preflight_memory_verdict(3, 2), MR_PREFLIGHT_OK, "1.5 x 2 is 3");
    cr_assert_eq(mr_preflight_memory_verdict(4, 3), MR_PREFLIGHT_WARN, "1.5 x 3 is 4.5");
    cr_assert_eq(mr_preflight_memory_verdict(UINT64_MAX, UINT64_MAX / 2), MR_PREFLIGHT_OK,
                 "no overflow");
}

static void expect_link(unsigned width, unsigned speed, const char *w, const char *s,
                        uint64_t mbps)
{
    mr_preflight_link link;
    cr_assert_eq(mr_preflight_link_rate(width, speed, &link), 0, "%u %u", width, speed);
    cr_assert_str_eq(link.width, w);
    cr_assert_str_eq(link.speed, s);
    cr_assert_eq(link.mbps, mbps, "%s %s: %llu Mb/s", w, s, (unsigned long long)link.mbps);
}

/* Codes from ibv_port_attr: width 1/2/4/8 = 1x/4x/8x/12x, speed a bit each. */
Test(preflight, link_rates_as_ibstat_prints_them)
{
    expect_link(2, 128, "4x", "NDR", 400000);
    expect_link(2, 64, "4x", "HDR", 200000);
    expect_link(2, 32, "4x", "EDR", 100000);
    expect_link(2, 16, "4x", "FDR", 56000);
    expect_link(2, 4, "4x", "QDR", 40000);
    expect_link(1, 1, "1x", "SDR", 2500);
    expect_link(8, 64, "12x", "HDR", 600000);
    expect_link(16, 128, "2x", "NDR", 200000);
}

Test(preflight, unknown_link_codes)
{
    mr_preflight_link link;
    cr_assert_eq(mr_preflight_link_rate(3, 128, &link), -1);
    cr_assert_eq(mr_preflight_link_rate(2, 0, &link), -1);
    cr_assert_eq(mr_preflight_link_rate(0, 0, &link), -1);
    cr_assert_eq(mr_preflight_link_rate(2, 512, &link), -1);
    cr_assert_null(link.width);
    cr_assert_null(link.speed);
    cr_assert_eq(link.mbps, 0);
}
