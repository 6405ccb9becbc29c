/* Model folders: config.json read with its defaults and every error, and
 * safetensors written, read back, sharded, damaged in every way we know of
 * and randomly. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/engine.h"
#include "engine/testmodel/testmodel.h"
#include "tests/common/fixture.h"

static char *dir, *model;
static char err[4096];

static void setup(void)
{
    dir = mr_test_tmpdir();
    cr_assert(asprintf(&model, "%s/model", dir) > 0);
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(model);
}

TestSuite(config, .init = setup, .fini = teardown);
TestSuite(weights, .init = setup, .fini = teardown);

static int scale(void)
{
    const char *s = getenv("MR_TEST_SCALE");
    return s && atoi(s) > 0 ? atoi(s) : 1;
}

/* Every needle (NULL-terminated list) must be in the message. */
static void expect_message(const char *needle, ...)
{
    va_list ap;
    va_start(ap, needle);
    for (const char *n = needle; n; n = va_arg(ap, const char *))
        cr_expect(strstr(err, n), "message lacks \"%s\": %s", n, err);
    va_end(ap);
}

/* ---- config.json ---- */

/* The shape fields moerun requires, nothing else. */
#define MINIMAL_CONFIG                                                                   \
    "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"vocab_size\": 1000,"              \
    " \"hidden_size\": 64, \"num_hidden_layers\": 4, \"num_attention_heads\": 8,"       \
    " \"num_key_value_heads\": 2, \"intermediate_size\": 96,"                           \
    " \"moe_intermediate_size\": 32, \"num_experts\": 8, \"num_experts_per_tok\": 2}"

static char *config_path(void)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/config.json", model) > 0);
    return path;
}

static int load_config_text(const char *json, mr_model_config *cfg)
{
    free(mr_test_write(model, "config.json", json, (size_t)-1));
    char *path = config_path();
    int rc = mr_config_load(path, cfg, err, sizeof err);
    free(path);
    return rc;
}

/* MINIMAL_CONFIG with `key` set to the JSON `value`, or removed when
 * value is NULL. */
static int load_config_with(const char *key, const char *value, mr_model_config *cfg)
{
    cJSON *root = cJSON_Parse(MINIMAL_CONFIG);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        cr_assert(v, "bad test value %s", value);
        cJSON_AddItemToObject(root, key, v);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    int rc = load_config_text(text, cfg);
    free(text);
    return rc;
}

Test(config, real_qwen3_30b_config_with_its_extra_keys)
{
    mr_model_config cfg;
    const char *json =
        "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"attention_bias\": false,"
        " \"attention_dropout\": 0.0, \"bos_token_id\": 151643, \"decoder_sparse_step\": 1,"
        " \"eos_token_id\": 151645, \"head_dim\": 128, \"hidden_act\": \"silu\","
        " \"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 6144,"
        " \"max_position_embeddings\": 40960, \"max_window_layers\": 48,"
        " \"mlp_only_layers\": [], \"model_type\": \"qwen3_moe\","
        " \"moe_intermediate_size\": 768, \"norm_topk_prob\": true,"
        " \"num_attention_heads\": 32, \"num_experts\": 128, \"num_experts_per_tok\": 8,"
        " \"num_hidden_layers\": 48, \"num_key_value_heads\": 4,"
        " \"output_router_logits\": false, \"rms_norm_eps\": 1e-06, \"rope_scaling\": null,"
        " \"rope_theta\": 1000000.0, \"router_aux_loss_coef\": 0.001,"
        " \"sliding_window\": null, \"tie_word_embeddings\": false,"
        " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.51.0\","
        " \"use_cache\": true, \"use_sliding_window\": false, \"vocab_size\": 151936}";
    cr_assert_eq(load_config_text(json, &cfg), MR_ENGINE_OK, "%s", err);
    cr_expect_str_eq(cfg.architecture, "Qwen3MoeForCausalLM");
    cr_expect_eq(cfg.vocab_size, 151936);
    cr_expect_eq(cfg.hidden_size, 2048);
    cr_expect_eq(cfg.num_hidden_layers, 48);
    cr_expect_eq(cfg.num_attention_heads, 32);
    cr_expect_eq(cfg.num_key_value_heads, 4);
    cr_expect_eq(cfg.head_dim, 128);
    cr_expect_eq(cfg.intermediate_size, 6144);
    cr_expect_eq(cfg.moe_intermediate_size, 768);
    cr_expect_eq(cfg.num_experts, 128);
    cr_expect_eq(cfg.num_experts_per_tok, 8);
    cr_expect_eq(cfg.decoder_sparse_step, 1);
    cr_expect(cfg.norm_topk_prob);
    cr_expect(!cfg.tie_word_embeddings);
    cr_expect_float_eq(cfg.rms_norm_eps, 1e-6f, 1e-12);
    cr_expect_float_eq(cfg.rope_theta, 1e6f, 1e-3);
    cr_expect_eq(cfg.max_position_embeddings, 40960);
    cr_expect_eq(cfg.bos_token_id, 151643);
    cr_expect_eq(cfg.eos_token_id, 151645);
    for (int i = 0; i < 48; i++)
        cr_expect(mr_config_layer_is_moe(&cfg, i), "layer %d", i);
}

Test(config, optional_fields_take_transformers_defaults)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_text(MINIMAL_CONFIG, &cfg), MR_ENGINE_OK, "%s", err);
    cr_expect_eq(cfg.head_dim, 64 / 8);
    cr_expect_eq(cfg.decoder_sparse_step, 1);
    cr_expect(!cfg.norm_topk_prob);
    cr_expect(!cfg.tie_word_embeddings);
    cr_expect_float_eq(cfg.rms_norm_eps, 1e-6f, 1e-12);
    cr_expect_float_eq(cfg.rope_theta, 10000.0f, 1e-3);
    cr_expect_eq(cfg.max_position_embeddings, 32768);
    cr_expect_eq(cfg.bos_token_id, -1);
    cr_expect_eq(cfg.eos_token_id, -1);
    for (int i = 0; i < 4; i++)
        cr_expect(!cfg.mlp_only[i]);
}

Test(config, null_means_default)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_with("head_dim", "null", &cfg), MR_ENGINE_OK, "%s", err);
    cr_expect_eq(cfg.head_dim, 8);
    cr_assert_eq(load_config_with("mlp_only_layers", "null", &cfg), MR_ENGINE_OK, "%s", err);
}

Test(config, token_ids_as_integer_list_or_null)
{
    static const struct {
        const char *value;
        int id;
    } cases[] = {{"7", 7}, {"[151645, 151643]", 151645}, {"[]", -1}, {"null", -1}, {"[null]", -1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mr_model_config cfg;
        cr_assert_eq(load_config_with("eos_token_id", cases[i].value, &cfg), MR_ENGINE_OK, "%s",
                     err);
        cr_expect_eq(cfg.eos_token_id, cases[i].id, "eos_token_id %s", cases[i].value);
    }
}

Test(config, rope_theta_under_rope_parameters)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_with("rope_parameters",
                                  "{\"rope_type\": \"default\", \"rope_theta\": 500000}", &cfg),
                 MR_ENGINE_OK, "%s", err);
    cr_expect_float_eq(cfg.rope_theta, 500000.0f, 1e-3);
}

Test(config, num_local_experts_is_an_alias)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_with("num_experts", NULL, &cfg), MR_ENGINE_EINVAL);
    expect_message("\"num_experts\"", "missing", NULL);
    cr_assert_eq(load_config_text("{\"model_type\": \"qwen3_moe\", \"vocab_size\": 10,"
                                  " \"hidden_size\": 8, \"num_hidden_layers\": 1,"
                                  " \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
                                  " \"intermediate_size\": 8, \"moe_intermediate_size\": 4,"
                                  " \"num_local_experts\": 4, \"num_experts_per_tok\": 2}",
                                  &cfg),
                 MR_ENGINE_OK, "%s", err);
    cr_expect_eq(cfg.num_experts, 4);
    cr_expect_str_eq(cfg.architecture, "Qwen3MoeForCausalLM");
}

Test(config, sparse_step_and_mlp_only_layers_choose_moe_layers)
{
    mr_model_config cfg;
    const char *json =
        "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"vocab_size\": 10, \"hidden_size\": 8,"
        " \"num_hidden_layers\": 8, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
        " \"intermediate_size\": 8, \"moe_intermediate_size\": 4, \"num_experts\": 4,"
        " \"num_experts_per_tok\": 2, \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3, 4]}";
    cr_assert_eq(load_config_text(json, &cfg), MR_ENGINE_OK, "%s", err);
    /* (i + 1) % 2 == 0 picks 1, 3, 5, 7; 3 is forced dense. */
    static const bool moe[8] = {false, true, false, false, false, true, false, true};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(mr_config_layer_is_moe(&cfg, i), moe[i], "layer %d", i);
    cr_expect(!mr_config_layer_is_moe(&cfg, -1));
    cr_expect(!mr_config_layer_is_moe(&cfg, 8));
}

Test(config, every_required_field_is_checked_present)
{
    static const char *const required[] = {
        "vocab_size",        "hidden_size",          "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "intermediate_size",
        "moe_intermediate_size", "num_experts",       "num_experts_per_tok"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        mr_model_config cfg;
        cr_expect_eq(load_config_with(required[i], NULL, &cfg), MR_ENGINE_EINVAL, "%s",
                     required[i]);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", required[i]);
        expect_message("config.json: ", quoted, "missing", NULL);
    }
}

Test(config, every_bad_value_is_named)
{
    static const struct {
        const char *key, *value, *message;
    } cases[] = {
        {"hidden_size", "\"2048\"", "\"hidden_size\" must be an integer, not a string"},
        {"vocab_size", "[1]", "\"vocab_size\" must be an integer, not an array"},
        {"num_hidden_layers", "2.5", "\"num_hidden_layers\" (2.5) is not an integer"},
        {"num_hidden_layers", "1e12", "\"num_hidden_layers\" (1e+12) is not an integer"},
        {"num_attention_heads", "0", "\"num_attention_heads\" (0) must be at least 1"},
        {"num_key_value_heads", "-2", "\"num_key_value_heads\" (-2) must be at least 1"},
        {"num_key_value_heads", "3", "\"num_attention_heads\" (8) is not a multiple of "
                                     "\"num_key_value_heads\" (3)"},
        {"num_experts_per_tok", "9", "\"num_experts_per_tok\" (9) exceeds \"num_experts\" (8)"},
        {"num_hidden_layers", "257", "\"num_hidden_layers\" (257) exceeds the 256 layers"},
        {"head_dim", "true", "\"head_dim\" must be an integer, not a boolean"},
        {"decoder_sparse_step", "0", "\"decoder_sparse_step\" (0) must be at least 1"},
        {"mlp_only_layers", "4", "\"mlp_only_layers\" must be a list"},
        {"mlp_only_layers", "[0, 4]", "\"mlp_only_layers\" names layer 4, but "
                                      "\"num_hidden_layers\" is 4"},
        {"mlp_only_layers", "[-1]", "\"mlp_only_layers\" (-1) must be at least 0"},
        {"norm_topk_prob", "\"yes\"", "\"norm_topk_prob\" must be true or false, not a string"},
        {"tie_word_embeddings", "1", "\"tie_word_embeddings\" must be true or false"},
        {"rms_norm_eps", "-1e-6", "\"rms_norm_eps\" (-1e-06) must be a positive number"},
        {"rope_theta", "\"big\"", "\"rope_theta\" must be a number, not a string"},
        {"rope_parameters", "[]", "\"rope_parameters\" must be an object"},
        {"max_position_embeddings", "0", "\"max_position_embeddings\" (0) must be at least 1"},
        {"eos_token_id", "\"</s>\"", "\"eos_token_id\" must be an integer, not a string"},
        {"bos_token_id", "[-5]", "\"bos_token_id\" (-5) must be at least 0"},
        {"architectures", "[\"LlamaForCausalLM\"]",
         "architecture \"LlamaForCausalLM\" is not supported; moerun runs Qwen3MoeForCausalLM"},
        {"architectures", "\"Qwen3MoeForCausalLM\"", "\"architectures\" must be a list"},
        {"architectures", "[]", "\"architectures\" must be a list"},
        {"model_type", "\"llama\"", "\"model_type\" must be \"qwen3_moe\""},
        {"model_type", "\"mixtral\"", "\"model_type\" must be \"qwen3_moe\" (architecture "
                                      "Qwen3MoeForCausalLM)"},
        {"quantization_config", "{\"quant_method\": \"awq\"}",
         "quantization_config.quant_method \"awq\" is not supported"},
        {"quantization_config", "{\"quant_method\": \"mxfp4\"}",
         "quantization_config.quant_method \"mxfp4\" is not supported"},
        {"quantization_config",
         "{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"weight_block_size\": [64, 64]}",
         "quantization_config.weight_block_size must be [128, 128]"},
        {"quantization_config", "{\"quant_method\": \"fp8\", \"fmt\": \"e5m2\"}",
         "quantization_config.fmt must be \"e4m3\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mr_model_config cfg;
        cr_expect_eq(load_config_with(cases[i].key, cases[i].value, &cfg), MR_ENGINE_EINVAL,
                     "%s = %s accepted", cases[i].key, cases[i].value);
        expect_message("model/config.json: ", cases[i].message, NULL);
    }
}

Test(config, head_dim_cannot_be_derived_from_uneven_heads)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_with("hidden_size", "60", &cfg), MR_ENGINE_EINVAL);
    expect_message("\"head_dim\" is missing", "\"hidden_size\" (60)", NULL);
}

Test(config, no_architecture_at_all)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_with("architectures", NULL, &cfg), MR_ENGINE_EINVAL);
    expect_message("config.json: names no architecture", "Qwen3MoeForCausalLM", NULL);
}

Test(config, missing_file)
{
    mr_model_config cfg;
    char *path = config_path();
    cr_assert_eq(mr_config_load(path, &cfg, err, sizeof err), MR_ENGINE_EIO);
    free(path);
    expect_message("model/config.json: cannot open", NULL);
}

Test(config, not_json_names_the_line)
{
    mr_model_config cfg;
    cr_assert_eq(load_config_text("{\n\"vocab_size\": 10,\n\"hidden_size\": ]\n}", &cfg),
                 MR_ENGINE_EINVAL);
    expect_message("model/config.json:3: not valid JSON", NULL);
    cr_assert_eq(load_config_text("[1, 2]", &cfg), MR_ENGINE_EINVAL);
    expect_message("model/config.json: must hold a JSON object, not an array", NULL);
    cr_assert_eq(load_config_text("", &cfg), MR_ENGINE_EINVAL);
    expect_message("model/config.json:1: not valid JSON", NULL);
}

/* ---- safetensors ---- */

#define N_SAMPLE 5

/* Odd sizes and mixed types, so the writer's layout must keep alignment. */
static float f32_a[3 * 5], f32_scalar[1];
static uint16_t bf16_a[7], bf16_b[2 * 3 * 2 * 2];

static void fill_samples(void)
{
    for (size_t i = 0; i < sizeof f32_a / sizeof *f32_a; i++)
        f32_a[i] = (float)i * 0.5f - 3.0f;
    f32_scalar[0] = 42.0f;
    for (size_t i = 0; i < sizeof bf16_a / sizeof *bf16_a; i++)
        bf16_a[i] = (uint16_t)(0x3f80 + i);
    for (size_t i = 0; i < sizeof bf16_b / sizeof *bf16_b; i++)
        bf16_b[i] = (uint16_t)(0xbf00 + 3 * i);
}

static const mr_tensor_spec samples[N_SAMPLE] = {
    {"odd.bf16", MR_TENSOR_BF16, 1, {7}, bf16_a},
    {"matrix.f32", MR_TENSOR_F32, 2, {3, 5}, f32_a},
    {"rank4.bf16", MR_TENSOR_BF16, 4, {2, 3, 2, 2}, bf16_b},
    {"scalar", MR_TENSOR_F32, 0, {0}, f32_scalar},
    {"empty", MR_TENSOR_F32, 2, {0, 4}, NULL},
};

static void write_st(const char *name, const mr_tensor_spec *specs, size_t n)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", model, name) > 0);
    free(mr_test_write(model, ".keep", "", 0));
    cr_assert_eq(mr_safetensors_write(path, specs, n, err, sizeof err), MR_ENGINE_OK, "%s", err);
    free(path);
}

static mr_weights *open_ok(void)
{
    mr_weights *w = NULL;
    cr_assert_eq(mr_weights_open(model, &w, err, sizeof err), MR_ENGINE_OK, "%s", err);
    return w;
}

static void expect_open_fails(const char *needle, ...)
{
    mr_weights *w = (mr_weights *)1;
    cr_assert_neq(mr_weights_open(model, &w, err, sizeof err), MR_ENGINE_OK,
                  "opened; expected %s", needle);
    cr_expect_null(w);
    va_list ap;
    va_start(ap, needle);
    for (const char *n = needle; n; n = va_arg(ap, const char *))
        cr_expect(strstr(err, n), "message lacks \"%s\": %s", n, err);
    va_end(ap);
}

static void expect_tensor(const mr_weights *w, const mr_tensor_spec *spec, const char *file)
{
    mr_tensor t;
    cr_assert_eq(mr_weights_get(w, spec->name, spec->ndim, spec->shape, &t, err, sizeof err),
                 MR_ENGINE_OK, "%s", err);
    size_t bytes = spec->type == MR_TENSOR_F32 ? 4 : 2;
    for (int d = 0; d < spec->ndim; d++)
        bytes *= (size_t)spec->shape[d];
    cr_expect_str_eq(t.name, spec->name);
    cr_expect_eq(t.type, spec->type);
    cr_expect_eq(t.ndim, spec->ndim);
    cr_expect_eq(t.bytes, bytes, "%s: %zu bytes", spec->name, t.bytes);
    cr_expect(strstr(t.file, file), "%s lives in %s", spec->name, t.file);
    cr_expect_eq((uintptr_t)t.data % (spec->type == MR_TENSOR_F32 ? 4 : 2), 0);
    cr_expect(bytes == 0 || memcmp(t.data, spec->data, bytes) == 0, "%s differs", spec->name);
}

Test(weights, single_file_reads_back_what_was_written)
{
    fill_samples();
    write_st("model.safetensors", samples, N_SAMPLE);
    mr_weights *w = open_ok();
    cr_expect_eq(mr_weights_count(w), N_SAMPLE);
    for (int i = 0; i < N_SAMPLE; i++)
        expect_tensor(w, &samples[i], "/model/model.safetensors");
    mr_weights_close(w);
}

static void write_index(const char *weight_map)
{
    mr_test_writef(model, "model.safetensors.index.json",
                   "{\"metadata\": {\"total_size\": 0}, \"weight_map\": %s}", weight_map);
}

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define TWO_SHARDS_MAP                                                                    \
    "{\"odd.bf16\": \"" SHARD1 "\", \"matrix.f32\": \"" SHARD1 "\", \"rank4.bf16\": \"" SHARD2 \
    "\", \"scalar\": \"" SHARD2 "\", \"empty\": \"" SHARD2 "\"}"

static void write_two_shards(void)
{
    fill_samples();
    write_st(SHARD1, samples, 2);
    write_st(SHARD2, samples + 2, N_SAMPLE - 2);
}

Test(weights, sharded_reads_back_from_every_shard)
{
    write_two_shards();
    write_index(TWO_SHARDS_MAP);
    mr_weights *w = open_ok();
    cr_expect_eq(mr_weights_count(w), N_SAMPLE);
    for (int i = 0; i < N_SAMPLE; i++)
        expect_tensor(w, &samples[i], i < 2 ? SHARD1 : SHARD2);
    mr_weights_close(w);
}

Test(weights, many_tensors_all_found)
{
    enum { LAYERS = 8, EXPERTS = 128 };
    static mr_tensor_spec specs[LAYERS * EXPERTS * 3];
    static char names[LAYERS * EXPERTS * 3][64];
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    static uint16_t row[4];
    size_t n = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int e = 0; e < EXPERTS; e++)
            for (int p = 0; p < 3; p++, n++) {
                snprintf(names[n], sizeof names[n], "model.layers.%d.mlp.experts.%d.%s.weight",
                         l, e, proj[p]);
                specs[n] = (mr_tensor_spec){names[n], MR_TENSOR_BF16, 2, {2, 2}, row};
            }
    write_st("model.safetensors", specs, n);
    mr_weights *w = open_ok();
    cr_assert_eq(mr_weights_count(w), n);
    for (size_t i = 0; i < n; i++) {
        mr_tensor t;
        cr_assert_eq(mr_weights_get(w, names[i], 2, specs[i].shape, &t, err, sizeof err),
                     MR_ENGINE_OK, "%s", err);
        cr_assert_str_eq(t.name, names[i]);
    }
    mr_weights_close(w);
}

/* The file as bytes: its 8-byte length, then the header. */
static char *read_st(const char *name, size_t *len, uint64_t *header_len)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", model, name) > 0);
    char *bytes = mr_test_read(path, len);
    free(path);
    cr_assert(bytes && *len >= 8);
    *header_len = 0;
    for (int i = 7; i >= 0; i--)
        *header_len = *header_len << 8 | (unsigned char)bytes[i];
    return bytes;
}

Test(weights, writer_pads_the_header_and_leaves_no_temporary_file)
{
    fill_samples();
    write_st("model.safetensors", samples, N_SAMPLE);
    size_t len;
    uint64_t header_len;
    char *bytes = read_st("model.safetensors", &len, &header_len);
    cr_expect_eq(header_len % 8, 0);
    cr_expect_eq(len, 8 + header_len + sizeof f32_a + sizeof f32_scalar + sizeof bf16_a +
                          sizeof bf16_b);
    cJSON *header = cJSON_ParseWithLength(bytes + 8, header_len);
    cr_assert(header);
    cJSON *format = cJSON_GetObjectItem(cJSON_GetObjectItem(header, "__metadata__"), "format");
    cr_expect(cJSON_IsString(format) && strcmp(format->valuestring, "pt") == 0);
    cJSON_Delete(header);
    free(bytes);

    DIR *d = opendir(model);
    cr_assert(d);
    for (struct dirent *e; (e = readdir(d));)
        cr_expect(!strstr(e->d_name, "tmp"), "left behind: %s", e->d_name);
    closedir(d);
}

Test(weights, writer_refuses_bad_specs)
{
    static float x[4];
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/bad.safetensors", dir) > 0);
    const mr_tensor_spec twice[2] = {{"a", MR_TENSOR_F32, 1, {4}, x},
                                     {"a", MR_TENSOR_F32, 1, {4}, x}};
    cr_expect_eq(mr_safetensors_write(path, twice, 2, err, sizeof err), MR_ENGINE_EINVAL);
    expect_message("bad.safetensors: tensor \"a\" given twice", NULL);
    const mr_tensor_spec negative = {"n", MR_TENSOR_F32, 2, {2, -2}, x};
    cr_expect_eq(mr_safetensors_write(path, &negative, 1, err, sizeof err), MR_ENGINE_EINVAL);
    expect_message("tensor \"n\": dimension 1 (-2)", NULL);
    const mr_tensor_spec rank5 = {"r", MR_TENSOR_F32, 5, {1, 1, 1, 1}, x};
    cr_expect_eq(mr_safetensors_write(path, &rank5, 1, err, sizeof err), MR_ENGINE_EINVAL);
    const mr_tensor_spec reserved = {"__metadata__", MR_TENSOR_F32, 1, {4}, x};
    cr_expect_eq(mr_safetensors_write(path, &reserved, 1, err, sizeof err), MR_ENGINE_EINVAL);
    cr_expect(!mr_test_read(path, NULL), "a refused write left a file");
    free(path);
}

/* A safetensors file with the header text given (padded to 8 bytes, so the
 * data area is aligned) and data_len bytes after. */
static void write_raw(const char *name, const char *header, size_t data_len)
{
    size_t header_len = (strlen(header) + 7) / 8 * 8, len = 8 + header_len + data_len;
    char *bytes = calloc(1, len);
    for (int i = 0; i < 8; i++)
        bytes[i] = (char)((uint64_t)header_len >> (8 * i));
    memset(bytes + 8, ' ', header_len);
    memcpy(bytes + 8, header, strlen(header));
    char *path = NULL;
    cr_assert(asprintf(&path, "model/%s", name) > 0);
    free(mr_test_write(dir, path, bytes, len));
    free(path);
    free(bytes);
}

Test(weights, missing_file)
{
    free(mr_test_write(model, "config.json", "{}", (size_t)-1));
    expect_open_fails("model/model.safetensors: cannot open", NULL);
}

Test(weights, truncated_anywhere_is_an_error_naming_the_file)
{
    fill_samples();
    write_st("model.safetensors", samples, N_SAMPLE);
    size_t len;
    uint64_t header_len;
    char *bytes = read_st("model.safetensors", &len, &header_len);
    const size_t cuts[] = {0, 4, 7, 8, 8 + header_len / 2, 8 + header_len - 1,
                           8 + header_len + 1, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        free(mr_test_write(model, "model.safetensors", bytes, cuts[i]));
        expect_open_fails("model.safetensors: ", cuts[i] > 8 + header_len ? "tensor \"" : "",
                          cuts[i] > 8 + header_len ? "truncated" : "", NULL);
    }
    free(bytes);
}

Test(weights, header_length_beyond_the_file)
{
    write_raw("model.safetensors", "{}", 0);
    size_t len;
    uint64_t header_len;
    char *bytes = read_st("model.safetensors", &len, &header_len);
    bytes[0] = 100;
    free(mr_test_write(model, "model.safetensors", bytes, len));
    free(bytes);
    expect_open_fails("model.safetensors: header length 100 exceeds the file (16 bytes)", NULL);
}

Test(weights, damaged_headers_are_named)
{
    static const struct {
        const char *header;
        size_t data_len;
        const char *message;
    } cases[] = {
        {"{\"a\": {\"dtype\": \"F32\"", 16, "the header is not a valid JSON object"},
        {"[1, 2]", 16, "the header is not a valid JSON object"},
        {"{\"a\": 5}", 16, "tensor \"a\": header entry is a number, not an object"},
        {"{\"a\": {\"shape\": [4], \"data_offsets\": [0, 16]}}", 16,
         "tensor \"a\": \"dtype\" missing"},
        {"{\"a\": {\"dtype\": \"Q4\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 16,
         "tensor \"a\": unknown dtype \"Q4\""},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 4], \"data_offsets\": [0, 16]}}",
         16, "tensor \"a\": \"shape\" must be a list of at most 4"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}", 16,
         "tensor \"a\": \"shape\""},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4.5], \"data_offsets\": [0, 16]}}", 16,
         "tensor \"a\": \"shape\""},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 0]}}", 16,
         "tensor \"a\": \"data_offsets\" must be [begin, end]"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0]}}", 16,
         "tensor \"a\": \"data_offsets\" must be [begin, end]"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 1000]}}", 16,
         "tensor \"a\": data_offsets [0, 1000] run past the end of the data (16 bytes)"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 8]}}", 16,
         "tensor \"a\": data_offsets [0, 8] hold 8 bytes, but shape [2, 2] of F32 needs a "
         "different number of bytes"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], "
         "\"data_offsets\": [0, 8]}}",
         16, "needs more than 2^64 bytes"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
         " \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}",
         24, "tensors \"a\" and \"b\" overlap (bytes 0-16 and 8-24)"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
         " \"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 32]}}",
         32, "tensor \"a\" appears twice"},
        {"{\"__metadata__\": 3}", 0, "\"__metadata__\" must be an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw("model.safetensors", cases[i].header, cases[i].data_len);
        expect_open_fails("model/model.safetensors: ", cases[i].message, NULL);
    }
}

Test(weights, missing_tensor_and_wrong_shape_are_named)
{
    fill_samples();
    write_st("model.safetensors", samples, N_SAMPLE);
    mr_weights *w = open_ok();
    mr_tensor t;
    const int64_t transposed[2] = {5, 3};
    cr_expect_eq(mr_weights_get(w, "lm_head.weight", 2, transposed, &t, err, sizeof err),
                 MR_ENGINE_EINVAL);
    expect_message("model/model.safetensors: no tensor \"lm_head.weight\"", NULL);
    cr_expect_eq(mr_weights_get(w, "matrix.f32", 2, transposed, &t, err, sizeof err),
                 MR_ENGINE_EINVAL);
    expect_message("model/model.safetensors: tensor \"matrix.f32\" has shape [3, 5], "
                   "expected [5, 3]",
                   NULL);
    cr_expect_eq(mr_weights_get(w, "matrix.f32", 1, transposed, &t, err, sizeof err),
                 MR_ENGINE_EINVAL);
    expect_message("has shape [3, 5], expected [5]", NULL);
    mr_weights_close(w);
}

Test(weights, unsupported_dtype_fails_only_when_asked_for)
{
    write_raw("model.safetensors",
              "{\"e5m2\": {\"dtype\": \"F8_E5M2\", \"shape\": [4], \"data_offsets\": [0, 4]},"
              " \"steps\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [8, 16]},"
              " \"ok\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [4, 8]},"
              " \"fp8.weight\": {\"dtype\": \"F8_E4M3\", \"shape\": [2, 4], "
              "\"data_offsets\": [16, 24]}}",
              24);
    mr_weights *w = open_ok();
    mr_tensor t;
    const int64_t two[1] = {2}, four[1] = {4}, fp8[2] = {2, 4};
    cr_expect_eq(mr_weights_get(w, "ok", 1, two, &t, err, sizeof err), MR_ENGINE_OK, "%s", err);
    cr_expect_eq(t.type, MR_TENSOR_BF16);
    cr_expect_eq(mr_weights_get(w, "e5m2", 1, four, &t, err, sizeof err), MR_ENGINE_EINVAL);
    expect_message("model/model.safetensors: tensor \"e5m2\" has unsupported dtype F8_E5M2", NULL);
    /* FP8 e4m3 only with its block scales beside it */
    cr_expect_eq(mr_weights_get(w, "fp8.weight", 2, fp8, &t, err, sizeof err), MR_ENGINE_EINVAL);
    expect_message("tensor \"fp8.weight\" is F8_E4M3 without \"fp8.weight_scale_inv\"", NULL);
    cr_expect_eq(mr_weights_get(w, "steps", 0, NULL, &t, err, sizeof err), MR_ENGINE_EINVAL);
    expect_message("tensor \"steps\" has unsupported dtype I64", NULL);
    mr_weights_close(w);
}

Test(weights, misaligned_data_is_an_error)
{
    write_raw("model.safetensors",
              "{\"f\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [2, 6]}}", 8);
    mr_weights *w = open_ok();
    mr_tensor t;
    const int64_t one[1] = {1};
    cr_expect_eq(mr_weights_get(w, "f", 1, one, &t, err, sizeof err), MR_ENGINE_EINVAL);
    expect_message("model/model.safetensors: tensor \"f\" starts at byte ",
                   "not a multiple of its 4-byte elements", NULL);
    mr_weights_close(w);
}

Test(weights, index_naming_a_missing_shard)
{
    write_two_shards();
    write_index("{\"odd.bf16\": \"" SHARD1 "\", \"matrix.f32\": \"model-00003.safetensors\"}");
    expect_open_fails("model/model-00003.safetensors: cannot open",
                      "model.safetensors.index.json", NULL);
}

Test(weights, index_naming_a_tensor_its_shard_lacks)
{
    write_two_shards();
    write_index("{\"odd.bf16\": \"" SHARD1 "\", \"scalar\": \"" SHARD1 "\", \"empty\": \"" SHARD2
                "\"}");
    expect_open_fails("model/model.safetensors.index.json: tensor \"scalar\" is mapped to " SHARD1
                      ", which does not hold it",
                      NULL);
    write_index("{\"odd.bf16\": \"" SHARD1 "\", \"lm_head.weight\": \"" SHARD2 "\"}");
    expect_open_fails("tensor \"lm_head.weight\" is mapped to " SHARD2, NULL);
}

Test(weights, damaged_index)
{
    write_two_shards();
    write_index("[]");
    expect_open_fails("model.safetensors.index.json: \"weight_map\" missing or not an object",
                      NULL);
    write_index("{\"a\": 3}");
    expect_open_fails("\"weight_map\" entry \"a\" is a number, not a file name", NULL);
    write_index("{\"a\": \"../secret.safetensors\"}");
    expect_open_fails("\"weight_map\" names \"../secret.safetensors\", not a file name", NULL);
    free(mr_test_write(model, "model.safetensors.index.json", "{\"weight_map\": {", (size_t)-1));
    expect_open_fails("model/model.safetensors.index.json:1: not valid JSON", NULL);
}

Test(weights, a_tensor_in_two_shards)
{
    fill_samples();
    write_st(SHARD1, samples, 2);
    write_st(SHARD2, samples + 1, 2);
    write_index("{\"odd.bf16\": \"" SHARD1 "\", \"rank4.bf16\": \"" SHARD2 "\"}");
    expect_open_fails("tensor \"matrix.f32\" appears twice", SHARD1, SHARD2, NULL);
}

/* Random damage to the header must end in an error or a load whose every
 * tensor can be read in full, never in a crash. */
Test(weights, random_header_damage_never_crashes)
{
    fill_samples();
    write_st("model.safetensors", samples, N_SAMPLE);
    size_t len;
    uint64_t header_len;
    char *good = read_st("model.safetensors", &len, &header_len);
    char *bytes = malloc(len);
    unsigned seed = 12345;
    int loaded = 0, rounds = 200 * scale();
    for (int round = 0; round < rounds; round++) {
        memcpy(bytes, good, len);
        for (int flips = 1 + rand_r(&seed) % 3; flips > 0; flips--)
            bytes[rand_r(&seed) % (8 + header_len)] ^= (char)(1 + rand_r(&seed) % 255);
        free(mr_test_write(model, "model.safetensors", bytes, len));
        mr_weights *w = NULL;
        if (mr_weights_open(model, &w, err, sizeof err) != MR_ENGINE_OK) {
            cr_assert(strstr(err, "model.safetensors"), "%s", err);
            continue;
        }
        loaded++;
        for (int i = 0; i < N_SAMPLE; i++) {
            mr_tensor t;
            if (mr_weights_get(w, samples[i].name, samples[i].ndim, samples[i].shape, &t, err,
                               sizeof err) != MR_ENGINE_OK)
                continue;
            volatile unsigned sum = 0;
            for (size_t b = 0; b < t.bytes; b++)
                sum += ((const unsigned char *)t.data)[b];
        }
        mr_weights_close(w);
    }
    cr_log_info("random header damage: %d of %d loaded", loaded, rounds);
    free(bytes);
    free(good);
}

/* Mixtral's config: num_local_experts of intermediate_size, every layer
 * routed and renormalised, no q/k norm, MixtralConfig's defaults; a
 * sliding window shorter than the context is refused. */
Test(config, mixtral_fields_and_defaults)
{
    static const char json[] =
        "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": \"mixtral\", "
        "\"vocab_size\": 32000, \"hidden_size\": 4096, \"num_hidden_layers\": 32, "
        "\"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"intermediate_size\": 14336, "
        "\"num_local_experts\": 8, \"num_experts_per_tok\": 2, \"sliding_window\": null, "
        "\"router_aux_loss_coef\": 0.02}";
    mr_model_config cfg;
    cr_assert_eq(load_config_text(json, &cfg), MR_ENGINE_OK, "%s", err);
    cr_expect_eq(cfg.family, MR_FAMILY_MIXTRAL);
    cr_expect_str_eq(cfg.architecture, "MixtralForCausalLM");
    cr_expect(!cfg.qk_norm && cfg.norm_topk_prob);
    cr_expect_eq(cfg.num_experts, 8);
    cr_expect_eq(cfg.moe_intermediate_size, 14336);
    cr_expect_eq(cfg.head_dim, 128);
    cr_expect_eq(cfg.rms_norm_eps, 1e-5f);
    cr_expect_eq(cfg.rope_theta, 1e6f);
    cr_expect_eq(cfg.max_position_embeddings, 131072);
    cr_expect_eq(mr_config_moe_layers(&cfg), 32);
    char *windowed = strdup(json);
    char *at = strstr(windowed, "null");
    memcpy(at, "4096", 4);
    cr_assert_eq(load_config_text(windowed, &cfg), MR_ENGINE_EINVAL);
    expect_message("\"sliding_window\" (4096) is shorter than \"max_position_embeddings\" "
                   "(131072): sliding-window attention is not supported", NULL);
    free(windowed);
}
