/*
 * The forward pass against an independent reference: tests/reference/
 * moe_forward.py computes Hugging Face's Qwen3-MoE and Mixtral in NumPy
 * from the same files.  Any change to routing, RoPE, norms or attention
 * moves the logits far beyond the tolerance.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/engine.h"
#include "engine/testmodel/testmodel.h"
#include "tests/common/fixture.h"

static char *dir;

static void setup(void)
{
    dir = mr_test_tmpdir();
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(reference, .init = setup, .fini = teardown, .timeout = 240);

static float *reference_logits(const char *model_dir, const int32_t *ids, int n, int vocab)
{
    const char *python = getenv("MR_PYTHON"), *src = getenv("MR_SOURCE_DIR");
    cr_assert(python && src, "MR_PYTHON and MR_SOURCE_DIR come from `make test`");
    mr_buf cmd = {0};
    char part[64], *head = NULL;
    cr_assert(asprintf(&head, "%s %s/tests/reference/moe_forward.py %s --out %s/ref.f32 --tokens ",
                       python, src, model_dir, dir) > 0);
    mr_buf_append(&cmd, head, strlen(head));
    free(head);
    for (int i = 0; i < n; i++) {
        int len = snprintf(part, sizeof part, "%s%d", i ? "," : "", ids[i]);
        mr_buf_append(&cmd, part, (size_t)len);
    }
    mr_buf_append(&cmd, "", 1);
    cr_assert_eq(system(cmd.data), 0, "reference failed: %s", cmd.data);
    mr_buf_free(&cmd);
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/ref.f32", dir) > 0);
    size_t bytes;
    float *logits = (float *)mr_test_read(path, &bytes);
    cr_assert_eq(bytes, (size_t)n * vocab * sizeof(float), "%s has %zu bytes", path, bytes);
    free(path);
    return logits;
}

/* Worst |ours - ref| over a row, relative to the row's largest |ref|. */
static void assert_close(const float *ours, const float *ref, int n, int vocab,
                         const char *what)
{
    for (int t = 0; t < n; t++) {
        double worst = 0, scale = 0;
        for (int v = 0; v < vocab; v++) {
            double d = fabs((double)ours[(size_t)t * vocab + v] - ref[(size_t)t * vocab + v]);
            worst = d > worst ? d : worst;
            double r = fabs(ref[(size_t)t * vocab + v]);
            scale = r > scale ? r : scale;
        }
        cr_assert(worst <= 1e-4 * scale, "%s: position %d differs by %g (scale %g)", what, t,
                  worst, scale);
    }
}

static void check_prompt(mr_model *model, const char *model_dir, const char *text,
                         const char *what)
{
    const mr_model_config *cfg = mr_model_config_get(model);
    mr_tokens tokens = {0};
    char err[512];
    cr_assert_eq(mr_tokenizer_encode(mr_model_tokenizer(model), text, strlen(text), &tokens,
                                     err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    int n = (int)tokens.count;
    float *ours = malloc((size_t)n * cfg->vocab_size * sizeof(float));
    cr_assert_eq(mr_model_logits(model, tokens.ids, n, ours, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    float *ref = reference_logits(model_dir, tokens.ids, n, cfg->vocab_size);
    assert_close(ours, ref, n, cfg->vocab_size, what);
    free(ours);
    free(ref);
    mr_tokens_free(&tokens);
}

static void check_backend(const char *model_dir, const char *backend)
{
    mr_model *model;
    char err[1024];
    mr_model_options options = {.backend = backend, .threads = 2};
    cr_assert_eq(mr_model_load(model_dir, &options, &model, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    check_prompt(model, model_dir, "Hi", "two tokens");
    check_prompt(model, model_dir,
                 "<|im_start|>user\nHow long do I simmer a sauce with garlic?<|im_end|>\n"
                 "<|im_start|>assistant\n",
                 "a chat turn");
    check_prompt(model, model_dir,
                 "int main(void) { for (int i = 0; i < 10; i++) printf(\"%d\\n\", i); } "
                 "Pack light for the Alps: boots, a rain jacket, and 2 liters of water.",
                 "code and travel, 40+ tokens");
    mr_model_free(model);
}

Test(reference, cpu_backend_matches_the_numpy_reference)
{
    check_backend(mr_test_tiny_model(), "cpu");
}

Test(reference, ref_backend_matches_the_numpy_reference)
{
    check_backend(mr_test_tiny_model(), "ref");
}

/* Mixtral's structure: Llama attention without q/k norm, block_sparse_moe
 * experts, renormalised top-2 of 8. */
Test(reference, mixtral_matches_the_numpy_reference_on_cpu_and_ref)
{
    char err[1024], *model_dir = NULL;
    cr_assert(asprintf(&model_dir, "%s/mixtral", dir) > 0);
    cr_assert_eq(mr_make_model(model_dir, MR_PRESET_MIXTRAL_TINY, 0, MR_TENSOR_BF16, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    check_backend(model_dir, "cpu");
    check_backend(model_dir, "ref");
    free(model_dir);
}

/* Checkpoints in f16, and with FP8 projections and their tile scales
 * (make-model --dtype): the reference dequantises the same files. */
Test(reference, f16_and_fp8_checkpoints_match_the_numpy_reference)
{
    static const mr_tensor_type dtypes[] = {MR_TENSOR_F16, MR_TENSOR_F8_BLOCKS};
    for (size_t i = 0; i < 2; i++) {
        char err[1024], *model_dir = NULL;
        cr_assert(asprintf(&model_dir, "%s/dtype%zu", dir, i) > 0);
        cr_assert_eq(mr_make_model(model_dir, MR_PRESET_TINY, 0, dtypes[i], err, sizeof err),
                     MR_ENGINE_OK, "%s", err);
        check_backend(model_dir, "cpu");
        check_backend(model_dir, "ref");
        free(model_dir);
    }
}

/* DeepSeek-V3's structure (make-model --preset deepseek-tiny): MLA, a
 * dense first layer, grouped sigmoid routing with its bias, shared
 * experts; in bf16 and with FP8 projections. */
Test(reference, deepseek_v3_matches_the_numpy_reference_on_cpu_and_ref)
{
    static const mr_tensor_type dtypes[] = {MR_TENSOR_BF16, MR_TENSOR_F8_BLOCKS};
    for (size_t i = 0; i < 2; i++) {
        char err[1024], *model_dir = NULL;
        cr_assert(asprintf(&model_dir, "%s/deepseek%zu", dir, i) > 0);
        cr_assert_eq(mr_make_model(model_dir, MR_PRESET_DEEPSEEK_TINY, 0, dtypes[i], err,
                                   sizeof err),
                     MR_ENGINE_OK, "%s", err);
        check_backend(model_dir, "cpu");
        check_backend(model_dir, "ref");
        free(model_dir);
    }
}

/* The KV cache of an MLA model holds each token's latent and rope key:
 * (kv_lora_rank + qk_rope_head_dim) values per layer, not K and V of
 * every head. */
Test(reference, deepseek_v3_kv_cache_holds_the_latent)
{
    char err[1024], *model_dir = NULL, *config = NULL;
    cr_assert(asprintf(&model_dir, "%s/deepseek", dir) > 0);
    cr_assert(asprintf(&config, "%s/config.json", model_dir) > 0);
    cr_assert_eq(mr_make_model(model_dir, MR_PRESET_DEEPSEEK_TINY, 0, MR_TENSOR_BF16, err,
                               sizeof err),
                 MR_ENGINE_OK, "%s", err);
    mr_model_config cfg;
    cr_assert_eq(mr_config_load(config, &cfg, err, sizeof err), MR_ENGINE_OK, "%s", err);
    size_t per_token = (size_t)cfg.num_hidden_layers *
                       (size_t)(cfg.mla.kv_lora_rank + cfg.mla.qk_rope_head_dim) * sizeof(float);
    cr_assert_eq(mr_model_kv_bytes(&cfg, MR_TENSOR_F32, 16, 10), per_token * 160);
    cr_assert_eq(mr_model_kv_bytes(&cfg, MR_TENSOR_BF16, 16, 10), per_token * 80);
    size_t expanded = (size_t)cfg.num_hidden_layers * (size_t)cfg.num_attention_heads *
                      (size_t)(cfg.mla.qk_nope_head_dim + cfg.mla.qk_rope_head_dim +
                               cfg.mla.v_head_dim) * sizeof(float);
    cr_assert_lt(per_token, expanded, "the latent is what MLA saves");
    free(config);
    free(model_dir);
}

/* DeepSeek-V3's YaRN, as its published configs carry it but stretched
 * over a short original context so that the tiny model's prompts reach
 * the blended pairs, and with mscale apart from mscale_all_dim so that
 * both the RoPE's magnitude and the softmax scale are corrected. */
Test(reference, deepseek_v3_with_yarn_matches_the_numpy_reference)
{
    char err[1024], *model_dir = NULL;
    cr_assert(asprintf(&model_dir, "%s/yarn", dir) > 0);
    cr_assert_eq(mr_make_model(model_dir, MR_PRESET_DEEPSEEK_TINY, 0, MR_TENSOR_BF16, err,
                               sizeof err),
                 MR_ENGINE_OK, "%s", err);
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/config.json", model_dir) > 0);
    char *text = mr_test_read(path, NULL);
    cJSON *config = cJSON_Parse(text);
    cJSON_ReplaceItemInObject(
        config, "rope_scaling",
        cJSON_Parse("{\"type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": "
                    "16, \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, "
                    "\"mscale_all_dim\": 1.0}"));
    char *edited = cJSON_Print(config);
    free(mr_test_write(model_dir, "config.json", edited, (size_t)-1));
    check_backend(model_dir, "cpu");
    free(edited);
    cJSON_Delete(config);
    free(text);
    free(path);
    free(model_dir);
}
