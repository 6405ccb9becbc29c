/* The planning advice of a job's report: wide EP "paid off" only with a
 * skewed load, a big enough batch, EPLB on and ranks that did not spend
 * their steps waiting for each other. */
#include <criterion/criterion.h>
#include <string.h>

#include "runner/report.h"

/* Two ranks, expert load 4x max/mean, 128 tokens per rank per step, online
 * EPLB taking the rank imbalance from 1.8 to 1.1; 90 rank-seconds in the
 * four stages and `wait` more waiting. */
static mr_report job(double wait)
{
    mr_report r = {.ranks = 2, .timed = true, .predicted = true, .measured = true,
                   .expert_imbalance = 4.0, .tokens_per_rank_step = 128,
                   .measured_before = 1.8, .measured_after = 1.1,
                   .stages = {.attention = 30, .dispatch = 15, .experts = 35, .combine = 10,
                              .wait = wait}};
    strcpy(r.eplb_mode, "static+online");
    return r;
}

Test(report_advice, a_balanced_busy_job_paid_off)
{
    mr_report r = job(10);
    mr_report_advise(&r);
    cr_assert(r.paid_off);
    cr_assert(strstr(r.advice, "Wide EP and EPLB paid off"), "%s", r.advice);
    cr_assert(strstr(r.advice, "from 1.80 to 1.10"), "%s", r.advice);
    cr_assert(strstr(r.advice, "Ranks spent 10% of their step time waiting"), "%s", r.advice);
    cr_assert_float_eq(mr_report_wait_share(&r), 0.10, 1e-12);
}

Test(report_advice, ranks_that_mostly_wait_did_not_pay_off)
{
    mr_report r = job(60); /* 60 of 150 rank-seconds */
    mr_report_advise(&r);
    cr_assert_not(r.paid_off);
    cr_assert_null(strstr(r.advice, "paid off:"), "%s", r.advice);
    cr_assert(strstr(r.advice, "did not pay off yet"), "%s", r.advice);
    cr_assert(strstr(r.advice, "40% of their step time waiting"), "%s", r.advice);
    cr_assert(strstr(r.advice, "(over 25%)"), "%s", r.advice);
}

Test(report_advice, the_batch_and_the_skew_come_before_the_waiting)
{
    mr_report r = job(60);
    r.tokens_per_rank_step = 16;
    mr_report_advise(&r);
    cr_assert_not(r.paid_off);
    cr_assert(strstr(r.advice, "only 16 tokens"), "%s", r.advice);
    r = job(5);
    r.expert_imbalance = 1.5;
    mr_report_advise(&r);
    cr_assert_not(r.paid_off);
    cr_assert(strstr(r.advice, "EPLB had little to gain"), "%s", r.advice);
    r = job(5);
    strcpy(r.eplb_mode, "off");
    mr_report_advise(&r);
    cr_assert(strstr(r.advice, "EPLB was off"), "%s", r.advice);
}
