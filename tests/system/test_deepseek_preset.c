/*
 * `moerun make-model --preset deepseek-tiny`: a DeepSeek-V3 checkpoint as
 * Hugging Face lays it out (config.json as DeepseekV3Config writes it, the
 * tensors under transformers' names and shapes), in bf16, f16 and FP8, and
 * the NumPy reference that the engine's DeepSeek-V3 is checked against runs
 * on it and passes its worked cases.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

TestSuite(deepseek_preset, .init = setup, .fini = teardown, .timeout = 120);

static char *make(const char *name, mr_tensor_type dtype)
{
    char err[1024], *model_dir = NULL;
    cr_assert(asprintf(&model_dir, "%s/%s", dir, name) > 0);
    cr_assert_eq(mr_make_model(model_dir, MR_PRESET_DEEPSEEK_TINY, 0, dtype, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    return model_dir;
}

/* What the preset's config.json must say: DeepseekV3Config's keys, and
 * DeepSeek's own for the router and the MTP layers. */
Test(deepseek_preset, config_is_deepseek_v3s)
{
    char *model_dir = make("bf16", MR_TENSOR_BF16), *path = NULL;
    cr_assert(asprintf(&path, "%s/config.json", model_dir) > 0);
    char *text = mr_test_read(path, NULL);
    cJSON *c = cJSON_Parse(text);
    cr_assert(c, "config.json is not JSON");
    cJSON *arch = cJSON_GetObjectItem(c, "architectures");
    cr_assert_str_eq(cJSON_GetArrayItem(arch, 0)->valuestring, "DeepseekV3ForCausalLM");
    cr_assert_str_eq(cJSON_GetObjectItem(c, "model_type")->valuestring, "deepseek_v3");
    cr_assert_str_eq(cJSON_GetObjectItem(c, "scoring_func")->valuestring, "sigmoid");
    cr_assert_str_eq(cJSON_GetObjectItem(c, "topk_method")->valuestring, "noaux_tc");
    static const struct {
        const char *key;
        double value;
    } numbers[] = {
        {"hidden_size", 256},          {"num_hidden_layers", 3},      {"first_k_dense_replace", 1},
        {"n_routed_experts", 16},      {"n_group", 2},                {"topk_group", 1},
        {"num_experts_per_tok", 4},    {"n_shared_experts", 1},       {"moe_intermediate_size", 128},
        {"intermediate_size", 512},    {"num_attention_heads", 8},    {"num_key_value_heads", 8},
        {"q_lora_rank", 96},           {"kv_lora_rank", 64},          {"qk_nope_head_dim", 32},
        {"qk_rope_head_dim", 16},      {"v_head_dim", 32},            {"qk_head_dim", 48},
        {"head_dim", 16},              {"routed_scaling_factor", 2.5}, {"rope_theta", 10000},
        {"max_position_embeddings", 4096}, {"num_nextn_predict_layers", 0},
        {"rms_norm_eps", 1e-6},        {"vocab_size", 2048},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        cJSON *v = cJSON_GetObjectItem(c, numbers[i].key);
        cr_assert(cJSON_IsNumber(v), "%s is missing", numbers[i].key);
        cr_assert_eq(v->valuedouble, numbers[i].value, "%s is %g", numbers[i].key, v->valuedouble);
    }
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "norm_topk_prob")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "rope_interleave")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(c, "tie_word_embeddings")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(c, "rope_scaling")));
    cJSON_Delete(c);
    free(text);
    free(path);
    free(model_dir);
}

typedef struct {
    const char *name; /* after model.layers.N. */
    int64_t rows, cols; /* cols 0: a vector */
    bool projection;    /* FP8 in an FP8 checkpoint */
} tensor_shape;

/* A layer's tensors, by transformers' names: MLA in every layer, a dense
 * MLP in layer 0, the router, its bias, the shared and 16 routed experts
 * in layers 1 and 2. */
static const tensor_shape attention[] = {
    {"input_layernorm.weight", 256, 0, false},
    {"post_attention_layernorm.weight", 256, 0, false},
    {"self_attn.q_a_proj.weight", 96, 256, true},
    {"self_attn.q_a_layernorm.weight", 96, 0, false},
    {"self_attn.q_b_proj.weight", 8 * 48, 96, true},
    {"self_attn.kv_a_proj_with_mqa.weight", 64 + 16, 256, true},
    {"self_attn.kv_a_layernorm.weight", 64, 0, false},
    {"self_attn.kv_b_proj.weight", 8 * (32 + 32), 64, true},
    {"self_attn.o_proj.weight", 256, 8 * 32, true},
};
static const tensor_shape dense[] = {
    {"mlp.gate_proj.weight", 512, 256, true},
    {"mlp.up_proj.weight", 512, 256, true},
    {"mlp.down_proj.weight", 256, 512, true},
};
static const tensor_shape routed[] = {
    {"mlp.gate.weight", 16, 256, false},
    {"mlp.shared_experts.gate_proj.weight", 128, 256, true},
    {"mlp.shared_experts.up_proj.weight", 128, 256, true},
    {"mlp.shared_experts.down_proj.weight", 256, 128, true},
    {"mlp.experts.15.gate_proj.weight", 128, 256, true},
    {"mlp.experts.15.up_proj.weight", 128, 256, true},
    {"mlp.experts.0.down_proj.weight", 256, 128, true},
};

static void check_tensor(const mr_weights *w, const char *name, int64_t rows, int64_t cols,
                         mr_tensor_type type)
{
    const int64_t shape[2] = {rows, cols};
    mr_tensor t;
    char err[512];
    cr_assert_eq(mr_weights_get(w, name, cols ? 2 : 1, shape, &t, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    cr_assert_eq(t.type, type, "%s has type %d, not %d", name, (int)t.type, (int)type);
}

static void check_missing(const mr_weights *w, const char *name)
{
    const int64_t shape[1] = {256};
    mr_tensor t;
    char err[512];
    cr_assert_neq(mr_weights_get(w, name, 1, shape, &t, err, sizeof err), MR_ENGINE_OK,
                  "%s should not be there", name);
}

/* `low`: the dtype of norms and routers (bf16, or f16 in an f16 file);
 * `proj`: the projections'.  The correction bias is f32 in all three. */
static void check_layout(const char *model_dir, mr_tensor_type low, mr_tensor_type proj)
{
    mr_weights *w;
    char err[1024], name[128];
    cr_assert_eq(mr_weights_open(model_dir, &w, err, sizeof err), MR_ENGINE_OK, "%s", err);
    check_tensor(w, "model.embed_tokens.weight", 2048, 256, low);
    check_tensor(w, "lm_head.weight", 2048, 256, low);
    check_tensor(w, "model.norm.weight", 256, 0, low);
    for (int layer = 0; layer < 3; layer++) {
        for (size_t i = 0; i < sizeof attention / sizeof attention[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", layer, attention[i].name);
            check_tensor(w, name, attention[i].rows, attention[i].cols,
                         attention[i].projection ? proj : low);
        }
        const tensor_shape *mlp = layer == 0 ? dense : routed;
        size_t n = layer == 0 ? sizeof dense / sizeof dense[0] : sizeof routed / sizeof routed[0];
        for (size_t i = 0; i < n; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", layer, mlp[i].name);
            check_tensor(w, name, mlp[i].rows, mlp[i].cols, mlp[i].projection ? proj : low);
        }
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate.e_score_correction_bias", layer);
        if (layer == 0)
            check_missing(w, name);
        else
            check_tensor(w, name, 16, 0, MR_TENSOR_F32);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", layer);
        check_missing(w, name);
    }
    check_missing(w, "model.layers.3.input_layernorm.weight");
    /* 3 model-wide, 9 attention x 3, 3 dense, and per MoE layer the router,
     * its bias, 3 shared and 48 routed; FP8 adds a weight_scale_inv for
     * each of the 120 projections. */
    size_t count = 3 + 27 + 3 + 2 * (2 + 3 + 48);
    count += proj == MR_TENSOR_F8_BLOCKS ? 5 * 3 + 3 + 2 * (3 + 48) : 0;
    cr_assert_eq(mr_weights_count(w), count, "%zu tensors, not %zu", mr_weights_count(w), count);
    mr_weights_close(w);
}

Test(deepseek_preset, tensors_have_transformers_names_shapes_and_dtypes)
{
    char *bf16 = make("bf16", MR_TENSOR_BF16), *f16 = make("f16", MR_TENSOR_F16),
         *fp8 = make("fp8", MR_TENSOR_F8_BLOCKS);
    check_layout(bf16, MR_TENSOR_BF16, MR_TENSOR_BF16);
    check_layout(f16, MR_TENSOR_F16, MR_TENSOR_F16);
    check_layout(fp8, MR_TENSOR_BF16, MR_TENSOR_F8_BLOCKS);
    free(bf16);
    free(f16);
    free(fp8);
}

/* The reference's worked cases (router, YaRN, interleaved RoPE), and its
 * forward pass on the preset in bf16 and FP8: finite logits, and FP8 near
 * bf16 but not the same. */
Test(deepseek_preset, numpy_reference_runs_on_the_preset)
{
    const char *python = getenv("MR_PYTHON"), *src = getenv("MR_SOURCE_DIR");
    cr_assert(python && src, "MR_PYTHON and MR_SOURCE_DIR come from `make test`");
    char *cmd = NULL;
    cr_assert(asprintf(&cmd, "%s %s/tests/reference/moe_forward.py --self-test >/dev/null", python,
                       src) > 0);
    cr_assert_eq(system(cmd), 0, "the reference's self-test failed: %s", cmd);
    free(cmd);
    enum { N = 6, VOCAB = 2048 };
    float *logits[2];
    static const mr_tensor_type dtypes[2] = {MR_TENSOR_BF16, MR_TENSOR_F8_BLOCKS};
    for (int i = 0; i < 2; i++) {
        char *model_dir = make(i ? "fp8" : "bf16", dtypes[i]), *out = NULL;
        cr_assert(asprintf(&out, "%s/ref%d.f32", dir, i) > 0);
        cr_assert(asprintf(&cmd, "%s %s/tests/reference/moe_forward.py %s --tokens "
                                 "1,2,3,500,900,1200 --out %s",
                           python, src, model_dir, out) > 0);
        cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
        size_t bytes;
        logits[i] = (float *)mr_test_read(out, &bytes);
        cr_assert_eq(bytes, (size_t)N * VOCAB * sizeof(float));
        free(cmd);
        free(out);
        free(model_dir);
    }
    double worst = 0, scale = 0;
    for (size_t j = 0; j < (size_t)N * VOCAB; j++) {
        cr_assert(isfinite(logits[0][j]) && isfinite(logits[1][j]), "logit %zu is not finite", j);
        worst = fmax(worst, fabs((double)logits[0][j] - logits[1][j]));
        scale = fmax(scale, fabs((double)logits[0][j]));
    }
    cr_assert(scale > 1.0, "the logits are flat (largest %g)", scale);
    cr_assert(worst > 0 && worst < 0.1 * scale, "FP8 differs from bf16 by %g (scale %g)", worst,
              scale);
    free(logits[0]);
    free(logits[1]);
}

/* What MLA's attention costs a rank, every rank holding all of it: the
 * checkpoint's own bytes of each layer's self_attn tensors (FP8 as packed
 * rows with their scales), plus one copy of each head's W_UKᵀ
 * ([heads][kv_lora_rank][qk_nope_head_dim]) in kv_b_proj's type, and not
 * a byte more.  A formula rather than a figure, so that weights multiplied
 * out at load (f32 products of q_b_proj and o_proj with kv_b_proj: 2.3 GB
 * a layer at DeepSeek-V3's sizes) cannot come back unnoticed. */
Test(deepseek_preset, attention_costs_the_checkpoints_bytes_and_one_w_uk_transpose)
{
    static const mr_tensor_type dtypes[] = {MR_TENSOR_BF16, MR_TENSOR_F16, MR_TENSOR_F8_BLOCKS};
    static const char *const names[] = {"bf16", "f16", "fp8"};
    enum { HEADS = 8, LATENT = 64, NOPE = 32 };
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        char *model_dir = make(names[d], dtypes[d]), err[1024], name[128];
        mr_weights *w;
        cr_assert_eq(mr_weights_open(model_dir, &w, err, sizeof err), MR_ENGINE_OK, "%s", err);
        mr_model *model;
        mr_model_options mo = {.backend = "cpu", .threads = 2};
        cr_assert_eq(mr_model_load(model_dir, &mo, &model, err, sizeof err), MR_ENGINE_OK, "%s",
                     err);
        for (int layer = 0; layer < 3; layer++) {
            size_t checkpoint = 0;
            for (size_t i = 0; i < sizeof attention / sizeof attention[0]; i++) {
                if (strncmp(attention[i].name, "self_attn.", 10) != 0)
                    continue;
                snprintf(name, sizeof name, "model.layers.%d.%s", layer, attention[i].name);
                const int64_t shape[2] = {attention[i].rows, attention[i].cols};
                mr_tensor t;
                cr_assert_eq(mr_weights_get(w, name, attention[i].cols ? 2 : 1, shape, &t, err,
                                            sizeof err),
                             MR_ENGINE_OK, "%s", err);
                checkpoint += t.bytes;
            }
            size_t uk_t = (size_t)HEADS * LATENT * mr_tensor_row_bytes(dtypes[d], NOPE);
            cr_assert_eq(mr_model_attention_bytes(model, layer), checkpoint + uk_t,
                         "%s layer %d: %zu bytes of attention, not the checkpoint's %zu + "
                         "W_UKᵀ's %zu",
                         names[d], layer, mr_model_attention_bytes(model, layer), checkpoint,
                         uk_t);
        }
        mr_model_free(model);
        mr_weights_close(w);
        free(model_dir);
    }
}
