/*
 * Synthetic weights: a folder with config.json and a tokenizer but no
 * safetensors loads with mr_model_options.synthetic_seed, its weights made
 * on the backend; the same seed gives the same logits on cpu, exact (as on
 * cuda, whose exact mode is checked against cpu on a GPU) and fenced (made
 * where the host cannot see them, as on a device), another seed
 * other logits, and the values keep activations finite at depth.  The
 * same for DeepSeek-V3's structure (deepseek-tiny's config.json): MLA's
 * weights copied and transposed at load from values made on the backend.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/testmodel/testmodel.h"
#include "tests/common/fixture.h"
#include "tests/common/kernel_data.h"

TestSuite(synthetic, .timeout = 120);

static char dir[] = "/tmp/moerun-synthetic-XXXXXX";

/* The tiny model's config.json and tokenizer, no weights. */
static void make_folder(void)
{
    cr_assert(mkdtemp(dir), "mkdtemp");
    const char *files[] = {"config.json", "tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char from[4096], *text;
        size_t len;
        snprintf(from, sizeof from, "%s/%s", mr_test_tiny_model(), files[i]);
        text = mr_test_read(from, &len);
        cr_assert(text, "no %s", from);
        free(mr_test_write(dir, files[i], text, len));
        free(text);
    }
}

static float *logits(const char *backend, uint64_t seed, const int32_t *ids, int n, int vocab)
{
    char err[1024];
    mr_model *model;
    mr_model_options mo = {.backend = backend, .threads = 2, .synthetic_seed = seed};
    cr_assert_eq(mr_model_load(dir, &mo, &model, err, sizeof err), MR_ENGINE_OK, "%s", err);
    float *out = malloc((size_t)n * vocab * sizeof *out);
    cr_assert_eq(mr_model_logits(model, ids, n, out, err, sizeof err), MR_ENGINE_OK, "%s", err);
    mr_model_free(model);
    return out;
}

/* The logits of the model in `dir` on cpu, exact and fenced alike, finite
 * and not all the same, and another seed's differ. */
static void check_backends_agree(void)
{
    char err[1024], config[4200];
    mr_model_config cfg;
    snprintf(config, sizeof config, "%s/config.json", dir);
    cr_assert_eq(mr_config_load(config, &cfg, err, sizeof err), MR_ENGINE_OK, "%s", err);
    enum { N = 20 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 37 + 5) % cfg.vocab_size);
    size_t n = (size_t)N * cfg.vocab_size;
    float *cpu = logits("cpu", 7, ids, N, cfg.vocab_size);
    float *exact = logits("exact", 7, ids, N, cfg.vocab_size);
    float *fenced = logits("fenced", 7, ids, N, cfg.vocab_size); /* device-made, as on a GPU */
    float *other = logits("cpu", 8, ids, N, cfg.vocab_size);
    cr_assert_eq(mr_test_first_difference(cpu, exact, n), -1, "cpu and exact differ");
    cr_assert_eq(mr_test_first_difference(cpu, fenced, n), -1, "cpu and fenced differ");
    cr_assert_neq(mr_test_first_difference(cpu, other, n), -1, "another seed, the same logits");
    double spread = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(cpu[i]), "logit %zu is %g", i, cpu[i]);
        spread += fabs(cpu[i] - cpu[0]);
    }
    cr_assert_gt(spread, 0, "every logit the same");
    free(cpu), free(exact), free(fenced), free(other);
}

Test(synthetic, weights_made_on_the_backend_are_the_same_bits_on_cpu_and_exact)
{
    make_folder();
    check_backends_agree();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(synthetic, deepseek_v3_weights_made_on_the_backend_are_the_same_bits_everywhere)
{
    cr_assert(mkdtemp(dir), "mkdtemp");
    char err[1024], path[4200];
    cr_assert_eq(mr_make_model(dir, MR_PRESET_DEEPSEEK_TINY, 0, MR_TENSOR_BF16, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(unlink(path), 0, "%s", path);
    check_backends_agree();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
