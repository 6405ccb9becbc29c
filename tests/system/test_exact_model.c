/*
 * The whole forward pass on the `exact` backend (exact.h in plain loops)
 * gives the `cpu` backend's logits bit for bit: every op of the model has
 * its bits written down in exact.h, which the CUDA backend's exact mode
 * runs too.  A 150-token prompt crosses attention's chunks of 64.  The
 * same for DeepSeek-V3's MLA (matmul_heads on slices of kv_b_proj, bf16
 * and FP8), and on `fenced` too, whose checks see every slice an op is
 * handed stay inside its weight.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/testmodel/testmodel.h"
#include "tests/common/fixture.h"
#include "tests/common/kernel_data.h"

TestSuite(exact_model, .timeout = 120);

static float *model_logits(const char *dir, const char *backend, const int32_t *prompt, int n,
                           int vocab)
{
    char err[1024];
    mr_model *model;
    mr_model_options mo = {.backend = backend, .threads = 2};
    cr_assert_eq(mr_model_load(dir, &mo, &model, err, sizeof err), MR_ENGINE_OK, "%s", err);
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    cr_assert_eq(mr_model_logits(model, prompt, n, logits, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    mr_model_free(model);
    return logits;
}

static float *logits_on(const char *backend, const int32_t *prompt, int n, int vocab)
{
    return model_logits(mr_test_tiny_model(), backend, prompt, n, vocab);
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

Test(exact_model, deepseek_v3_logits_equal_cpu_on_exact_and_fenced)
{
    enum { N = 70 };
    static const mr_tensor_type dtypes[] = {MR_TENSOR_BF16, MR_TENSOR_F8_BLOCKS};
    static const char *const others[] = {"exact", "fenced"};
    char *tmp = mr_test_tmpdir(), err[1024];
    int32_t prompt[N];
    for (int i = 0; i < N; i++)
        prompt[i] = (int32_t)((i * 7919 + 13) % 2000); /* below the preset's vocab */
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        char *dir = NULL;
        cr_assert(asprintf(&dir, "%s/deepseek%zu", tmp, d) > 0);
        cr_assert_eq(mr_make_model(dir, MR_PRESET_DEEPSEEK_TINY, 0, dtypes[d], err, sizeof err),
                     MR_ENGINE_OK, "%s", err);
        char config[4200];
        mr_model_config cfg;
        snprintf(config, sizeof config, "%s/config.json", dir);
        cr_assert_eq(mr_config_load(config, &cfg, err, sizeof err), MR_ENGINE_OK, "%s", err);
        int vocab = cfg.vocab_size;
        float *cpu = model_logits(dir, "cpu", prompt, N, vocab);
        for (size_t o = 0; o < sizeof others / sizeof others[0]; o++) {
            float *other = model_logits(dir, others[o], prompt, N, vocab);
            long at = mr_test_first_difference(cpu, other, (size_t)N * vocab);
            cr_assert_eq(at, -1, "%s, %s: logit %ld: cpu %.9g, %s %.9g",
                         mr_tensor_type_name(dtypes[d]), others[o], at, at >= 0 ? cpu[at] : 0.0,
                         others[o], at >= 0 ? other[at] : 0.0);
            free(other);
        }
        free(cpu);
        free(dir);
    }
    mr_test_rmtree(tmp);
    free(tmp);
}
