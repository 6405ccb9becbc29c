/*
 * The KV cache a job asks for: [engine] kv_dtype = bf16 gives the same
 * bytes whatever the rank count, the batching and the backend (cpu or
 * exact, as cuda's exact mode), and a checkpoint of one KV type is not
 * resumed with the other; kv_blocks = 0 sizes the pool to the memory left
 * and says how big it made it.
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

TestSuite(kv_cache, .init = setup, .fini = teardown, .timeout = 300);

static void run(const char *name, const char *extra)
{
    cr_assert_eq(mr_test_run_job(t.dir, name, extra, &t.out, &t.err), 0, "%s: %s%s", name, t.out,
                 t.err);
    cr_assert(strstr(t.out, "served 30 requests, 2 failed"), "%s: %s", name, t.out);
}

/* Each rank count batches the requests differently (a rank's share). */
Test(kv_cache, bf16_results_do_not_depend_on_ranks_batching_or_backend)
{
    mr_test_write_requests(t.dir, 30);
    run("one", "kv_dtype = bf16\n");
    run("two", "kv_dtype = bf16\n[parallel]\nranks = 2\n");
    run("three", "kv_dtype = bf16\n[parallel]\nranks = 3\ndispatch = low-latency\n"
                 "ll_capacity = 2\n");
    run("exact", "kv_dtype = bf16\nbackend = exact\n");
    run("fenced", "kv_dtype = bf16\nbackend = fenced\n[parallel]\nranks = 2\n");
    mr_test_assert_same_output(t.dir, "one", "two");
    mr_test_assert_same_output(t.dir, "one", "three");
    mr_test_assert_same_output(t.dir, "one", "exact");
    mr_test_assert_same_output(t.dir, "one", "fenced");
}

Test(kv_cache, a_checkpoint_of_the_other_type_is_refused)
{
    mr_test_write_requests(t.dir, 30);
    run("job", "kv_dtype = bf16\n");
    int code = mr_test_run_job(t.dir, "job", "kv_dtype = f32\n", &t.out, &t.err);
    cr_assert_eq(code, 3, "%s%s", t.out, t.err);
    cr_assert(strstr(t.err, "[engine] kv_dtype changed bf16 → f32"), "%s", t.err);
}

Test(kv_cache, kv_blocks_0_sizes_the_pool_to_the_memory_left)
{
    mr_test_write_requests(t.dir, 30);
    run("fixed", "");
    run("sized", "kv_blocks = 0\nbackend = fenced\n");
    mr_test_assert_same_output(t.dir, "fixed", "sized");
    const char *line = strstr(t.out, "KV pool of rank 0: ");
    cr_assert(line, "%s", t.out);
    int blocks = 0;
    cr_assert_eq(sscanf(line, "KV pool of rank 0: %d blocks of 16 tokens", &blocks), 1, "%s",
                 line);
    /* The tiny model's longest sequence times max_sequences caps it. */
    cr_assert_gt(blocks, 16, "%s", line);
    cr_assert(strstr(line, "sized to the memory left (kv_blocks = 0)"), "%s", line);
}
