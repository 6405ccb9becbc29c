/*
 * [engine] kv_dtype = bf16: a job's results are the same bytes whatever
 * the rank count, the batching and the backend (cpu or exact, as cuda's
 * exact mode), and a checkpoint of one KV type is not resumed with the
 * other.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

static mr_test_scratch t;

static void setup(void)
{
    mr_test_scratch_open(&t);
}

static void teardown(void)
{
    mr_test_scratch_close(&t);
}

TestSuite(kv_dtype, .init = setup, .fini = teardown, .timeout = 300);

static void run(const char *name, const char *extra)
{
    cr_assert_eq(mr_test_run_job(t.dir, name, extra, &t.out, &t.err), 0, "%s: %s%s", name, t.out,
                 t.err);
    cr_assert(strstr(t.out, "served 30 requests, 2 failed"), "%s: %s", name, t.out);
}

/* Each rank count batches the requests differently (a rank's share). */
Test(kv_dtype, bf16_results_do_not_depend_on_ranks_batching_or_backend)
{
    mr_test_write_requests(t.dir, 30);
    run("one", "kv_dtype = bf16\n");
    run("two", "kv_dtype = bf16\n[parallel]\nranks = 2\n");
    run("three", "kv_dtype = bf16\n[parallel]\nranks = 3\ndispatch = low-latency\n"
                 "ll_capacity = 2\n");
    run("exact", "kv_dtype = bf16\nbackend = exact\n");
    mr_test_assert_same_output(t.dir, "one", "two");
    mr_test_assert_same_output(t.dir, "one", "three");
    mr_test_assert_same_output(t.dir, "one", "exact");
}

Test(kv_dtype, a_checkpoint_of_the_other_type_is_refused)
{
    mr_test_write_requests(t.dir, 30);
    run("job", "kv_dtype = bf16\n");
    int code = mr_test_run_job(t.dir, "job", "kv_dtype = f32\n", &t.out, &t.err);
    cr_assert_eq(code, 3, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "[engine] kv_dtype changed bf16 → f32"), "%s", t.err);
}
