/*
 * EPLB moves experts between two steps: a model switched to another
 * placement computes the same logits, bit for bit, as before the switch,
 * and a placement that does not fit is refused without harm.  Also on the
 * "fenced" backend, where the host faults on backend memory outside ops:
 * moving experts and their route maps goes through upload alone.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"

TestSuite(move_experts, .timeout = 120);

static const int32_t prompt[] = {1, 17, 300, 42, 9, 250, 77, 5, 123, 64, 31, 200};
#define N_PROMPT ((int)(sizeof prompt / sizeof prompt[0]))

/* 64 experts in 72 slots: slot s holds (s * stride + shift) mod 64, so
 * several experts are replicated and their slots change between calls. */
static void make_placement(mr_eplb_placement *p, int layers, int experts, int slots,
                           int stride, int shift)
{
    char err[256];
    int32_t *phy2log = malloc((size_t)layers * slots * sizeof *phy2log);
    cr_assert_not_null(phy2log);
    for (int l = 0; l < layers; l++)
        for (int s = 0; s < slots; s++)
            phy2log[l * slots + s] = (int32_t)((s * stride + shift + l) % experts);
    cr_assert_eq(mr_eplb_placement_from_phy2log(p, layers, experts, slots, 1, phy2log, err,
                                                sizeof err),
                 MR_EPLB_OK, "%s", err);
    free(phy2log);
}

static void logits_are_identical_after_a_switch(const char *backend)
{
    char err[1024];
    mr_model *model;
    mr_model_config cfg;
    char *config = malloc(strlen(mr_test_tiny_model()) + 16);
    sprintf(config, "%s/config.json", mr_test_tiny_model());
    cr_assert_eq(mr_config_load(config, &cfg, err, sizeof err), MR_ENGINE_OK, "%s", err);
    free(config);
    int layers = mr_config_moe_layers(&cfg), experts = cfg.num_experts, slots = experts + 8;
    mr_eplb_placement first, second;
    make_placement(&first, layers, experts, slots, 1, 0);
    make_placement(&second, layers, experts, slots, 5, 3);
    mr_model_options mo = {.backend = backend, .threads = 2, .placement = &first};
    cr_assert_eq(mr_model_load(mr_test_tiny_model(), &mo, &model, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    size_t n = (size_t)N_PROMPT * cfg.vocab_size;
    float *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
    cr_assert_eq(mr_model_logits(model, prompt, N_PROMPT, before, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);

    int loaded = -1;
    cr_assert_eq(mr_model_set_placement(model, &second, &loaded, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    cr_assert_gt(loaded, 0, "a new placement loads experts the slots did not hold");
    cr_assert_lt(loaded, layers * slots, "slots that keep an expert load nothing");
    cr_assert_eq(memcmp(mr_model_placement(model)->phy2log, second.phy2log,
                        (size_t)layers * slots * sizeof(int32_t)), 0);
    cr_assert_eq(mr_model_logits(model, prompt, N_PROMPT, after, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    cr_assert_eq(memcmp(before, after, n * sizeof *before), 0, "logits changed with placement");

    cr_assert_eq(mr_model_set_placement(model, &second, &loaded, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    cr_assert_eq(loaded, 0, "the same placement again moves nothing");

    mr_eplb_placement narrow;
    make_placement(&narrow, layers, experts, experts, 1, 0);
    cr_assert_eq(mr_model_set_placement(model, &narrow, &loaded, err, sizeof err),
                 MR_ENGINE_EINVAL);
    cr_assert(strstr(err, "64 slots") && strstr(err, "72 slots"), "%s", err);
    cr_assert_eq(mr_model_logits(model, prompt, N_PROMPT, after, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    cr_assert_eq(memcmp(before, after, n * sizeof *before), 0, "a refused switch changed nothing");

    mr_eplb_placement_free(&first);
    mr_eplb_placement_free(&second);
    mr_eplb_placement_free(&narrow);
    free(before);
    free(after);
    mr_model_free(model);
}

Test(move_experts, logits_are_identical_after_a_switch)
{
    logits_are_identical_after_a_switch("cpu");
}

Test(move_experts, logits_are_identical_after_a_switch_on_the_fenced_backend)
{
    logits_are_identical_after_a_switch("fenced");
}
