/* A job with no [engine] widths runs as wide as the machine allows (the
 * rule in engine/widths.c), says so, and gives the bytes it gives at any
 * width; a KV pool that leaves little memory narrows the step. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

static mr_test_scratch t;

static void setup(void)
{
    mr_test_scratch_open(&t);
    mr_test_write_requests(t.dir, 60);
}

static void teardown(void)
{
    mr_test_scratch_close(&t);
}

TestSuite(widths, .init = setup, .fini = teardown, .timeout = 180);

Test(widths, a_job_without_engine_keys_runs_wide_and_gives_the_same_bytes)
{
    mr_test_writef(t.dir, "wide.ini",
                   "[job]\nname = same\nrun_dir = runs/wide\n[model]\npath = model\n[input]\n"
                   "files = requests.jsonl\n[generation]\nmax_tokens = 12\nseed = 3\n"
                   "[parallel]\nranks = 2\n");
    int code = mr_test_moerun(t.dir, &t.out, &t.err, "run", "wide.ini", NULL);
    cr_assert_eq(code, 0, "%s", t.err);
    cr_assert(strstr(t.out, "256 sequences and 8192 tokens a step, sized to the memory left"),
              "%s", t.out);
    /* The old defaults, set by hand. */
    code = mr_test_run_job(t.dir, "narrow", "[parallel]\nranks = 2\n", &t.out, &t.err);
    cr_assert_eq(code, 0, "%s", t.err);
    cr_assert_null(strstr(t.out, "sized to the memory left"), "%s", t.out);
    mr_test_assert_same_output(t.dir, "wide", "narrow");
}

Test(widths, a_kv_pool_that_leaves_little_memory_narrows_the_step)
{
    char err[1024];
    mr_model *model = mr_test_load_tiny_model(1);
    const mr_model_config *c = mr_model_config_get(model);
    size_t block = mr_model_kv_bytes(c, MR_TENSOR_F32, 16, 1);
    size_t gib = (size_t)1 << 30;
    mr_engine_options o = {.kv_block_size = 16, .kv_blocks = 64};
    mr_engine_widths_fit(c, 64, 16 * gib, &o);
    cr_assert_eq(o.max_sequences, 256);
    cr_assert_eq(o.max_batch_tokens, 8192);
    /* A pool that leaves four times the step of 32 sequences and 1024
     * tokens (the steps' share is a quarter of what the pool leaves):
     * that rung, and with a little less the next one down. */
    size_t spare = 4 * mr_engine_step_bytes(c, 64, 1024, 32);
    o = (mr_engine_options){.kv_block_size = 16, .kv_blocks = 1000};
    mr_engine_widths_fit(c, 64, 1000 * block + spare, &o);
    cr_assert_eq(o.max_sequences, 32);
    cr_assert_eq(o.max_batch_tokens, 1024);
    o = (mr_engine_options){.kv_block_size = 16, .kv_blocks = 1000};
    mr_engine_widths_fit(c, 64, 1000 * block + spare - 64, &o);
    cr_assert_eq(o.max_sequences, 16);
    cr_assert_eq(o.max_batch_tokens, 512);
    /* kv_blocks = 0: the steps may have half. */
    o = (mr_engine_options){.kv_block_size = 16};
    mr_engine_widths_fit(c, 64, spare / 2, &o);
    cr_assert_eq(o.max_sequences, 32);
    /* A width set by hand wins, and the other follows it. */
    o = (mr_engine_options){.max_sequences = 512, .kv_block_size = 16, .kv_blocks = 64};
    mr_engine_widths_fit(c, 64, 16 * gib, &o);
    cr_assert_eq(o.max_sequences, 512);
    cr_assert_eq(o.max_batch_tokens, 8192);
    o = (mr_engine_options){.max_batch_tokens = 100, .kv_block_size = 16, .kv_blocks = 64};
    mr_engine_widths_fit(c, 64, 16 * gib, &o);
    cr_assert_eq(o.max_sequences, 100);
    cr_assert_eq(o.max_batch_tokens, 100);
    /* On the real backend, the tiny model on this machine fits the top. */
    o = (mr_engine_options){.kv_block_size = 16, .kv_blocks = 64};
    cr_assert_eq(mr_engine_auto_widths(model, &o, err, sizeof err), MR_ENGINE_OK, "%s", err);
    cr_assert_eq(o.max_sequences, 256);
    mr_model_free(model);
}
