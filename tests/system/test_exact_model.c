/*
 * The whole forward pass on the `exact` backend (exact.h in plain loops)
 * gives the `cpu` backend's logits bit for bit: every op of the model has
 * its bits written down in exact.h, which the CUDA backend's exact mode
 * runs too.  A 150-token prompt crosses attention's chunks of 64.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"
#include "tests/common/kernel_data.h"

TestSuite(exact_model, .timeout = 120);

static float *logits_on(const char *backend, const int32_t *prompt, int n, int vocab)
{
    char err[1024];
    mr_model *model;
    mr_model_options mo = {.backend = backend, .threads = 2};
    cr_assert_eq(mr_model_load(mr_test_tiny_model(), &mo, &model, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    cr_assert_eq(mr_model_logits(model, prompt, n, logits, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    mr_model_free(model);
    return logits;
}

Test(exact_model, logits_equal_cpu_bit_for_bit)
{
    enum { N = 150 };
    char err[1024];
    mr_model_config cfg;
    char config[4096];
    snprintf(config, sizeof config, "%s/config.json", mr_test_tiny_model());
    cr_assert_eq(mr_config_load(config, &cfg, err, sizeof err), MR_ENGINE_OK, "%s", err);
    int32_t prompt[N];
    for (int i = 0; i < N; i++)
        prompt[i] = (int32_t)((i * 7919 + 13) % cfg.vocab_size);
    float *cpu = logits_on("cpu", prompt, N, cfg.vocab_size);
    float *exact = logits_on("exact", prompt, N, cfg.vocab_size);
    long at = mr_test_first_difference(cpu, exact, (size_t)N * cfg.vocab_size);
    cr_assert_eq(at, -1, "logit %ld (position %ld): cpu %.9g, exact %.9g", at,
                 at / cfg.vocab_size, at >= 0 ? cpu[at] : 0.0, at >= 0 ? exact[at] : 0.0);
    free(cpu);
    free(exact);
}
