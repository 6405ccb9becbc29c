/*
 * The model families and weight formats beside the bundled Qwen3-MoE in a
 * whole job: a Mixtral (8 experts, top-2) and a Qwen3-MoE with FP8 block-
 * scaled weights give the same bytes in a batch of 1 and of 16, and on 1
 * and 4 ranks with online EPLB and redundant experts.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/testmodel/testmodel.h"
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

TestSuite(families, .init = setup, .fini = teardown, .timeout = 300);

/* runs/NAME: the job over requests.jsonl on the model in folder `model`. */
static int run(const char *name, const char *model, int max_sequences, int ranks)
{
    char ini[64];
    snprintf(ini, sizeof ini, "%s.ini", name);
    mr_test_writef(t.dir, ini,
                   "[job]\nname = families\nrun_dir = runs/%s\n[model]\npath = %s\n[input]\n"
                   "files = requests.jsonl\n[generation]\nmax_tokens = 6\nseed = 3\n"
                   "[engine]\nmax_batch_tokens = 128\nmax_sequences = %d\n[parallel]\n"
                   "ranks = %d\n[eplb]\nmode = static+online\nredundant_experts = 2\n"
                   "step_interval = 4\nmin_batch_tokens = 1\n",
                   name, model, max_sequences, ranks);
    free(t.out);
    free(t.err);
    return mr_test_moerun(t.dir, &t.out, &t.err, "run", ini, NULL);
}

static void same_bytes_in_any_batch_and_on_four_ranks(mr_model_preset preset,
                                                      mr_tensor_type dtype)
{
    char err[1024], *model = NULL;
    cr_assert(asprintf(&model, "%s/made", t.dir) > 0);
    cr_assert_eq(mr_make_model(model, preset, 0, dtype, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    free(model);
    mr_test_write_requests(t.dir, 12);
    cr_assert_eq(run("one", "made", 1, 1), 0, "%s%s", t.out, t.err);
    cr_assert_eq(run("batch", "made", 16, 1), 0, "%s%s", t.out, t.err);
    mr_test_assert_same_output(t.dir, "one", "batch");
    cr_assert_eq(run("four", "made", 16, 4), 0, "%s%s", t.out, t.err);
    cr_assert(strstr(t.out, "rebalance"), "%s", t.out);
    mr_test_assert_same_output(t.dir, "one", "four");
}

Test(families, mixtral_gives_the_same_bytes_in_any_batch_and_on_four_ranks)
{
    same_bytes_in_any_batch_and_on_four_ranks(MR_PRESET_MIXTRAL_TINY, MR_TENSOR_BF16);
}

Test(families, fp8_weights_give_the_same_bytes_in_any_batch_and_on_four_ranks)
{
    same_bytes_in_any_batch_and_on_four_ranks(MR_PRESET_TINY, MR_TENSOR_F8_BLOCKS);
}

Test(families, deepseek_v3_gives_the_same_bytes_in_any_batch_and_on_four_ranks)
{
    same_bytes_in_any_batch_and_on_four_ranks(MR_PRESET_DEEPSEEK_TINY, MR_TENSOR_BF16);
}
