/*
 * Loading a model folder that is broken in one way at a time: each gives
 * one clear message naming the file and the tensor or field, and no crash.
 * The folders are the tiny model with one file replaced.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"

static char *dir;
static char err[2048];

static void setup(void)
{
    dir = mr_test_tmpdir();
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                        "tokenizer_config.json"};
    for (size_t i = 0; i < 4; i++) {
        char *from = NULL, *to = NULL;
        cr_assert(asprintf(&from, "%s/%s", mr_test_tiny_model(), files[i]) > 0);
        cr_assert(asprintf(&to, "%s/%s", dir, files[i]) > 0);
        cr_assert_eq(symlink(from, to), 0, "%s", to);
        free(from);
        free(to);
    }
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(model_load, .init = setup, .fini = teardown);

static void remove_file(const char *name)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    unlink(path);
    free(path);
}

static void replace(const char *name, const char *data, size_t len)
{
    remove_file(name);
    free(mr_test_write(dir, name, data, len));
}

/* config.json of the tiny model with one field set to `value` (JSON). */
static void config_with(const char *field, const char *value)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/config.json", mr_test_tiny_model()) > 0);
    char *text = mr_test_read(path, NULL);
    cJSON *config = cJSON_Parse(text);
    cJSON_ReplaceItemInObject(config, field, cJSON_Parse(value));
    char *changed = cJSON_Print(config);
    replace("config.json", changed, (size_t)-1);
    free(changed);
    cJSON_Delete(config);
    free(text);
    free(path);
}

static void expect_error(const char *file, const char *what)
{
    mr_model *model = NULL;
    mr_model_options options = {.backend = "ref", .threads = 1};
    int rc = mr_model_load(dir, &options, &model, err, sizeof err);
    cr_assert_neq(rc, MR_ENGINE_OK, "the broken folder loaded");
    cr_assert_null(model);
    cr_assert(strstr(err, file), "the message should name %s: %s", file, err);
    cr_assert(strstr(err, what), "expected '%s' in: %s", what, err);
    cr_log_info("%s", err);
}

Test(model_load, the_intact_copy_loads)
{
    mr_model *model = NULL;
    mr_model_options options = {.backend = "ref", .threads = 1};
    cr_assert_eq(mr_model_load(dir, &options, &model, err, sizeof err), MR_ENGINE_OK, "%s", err);
    mr_model_free(model);
}

/* What preflight weighs a rank's experts by, read from the headers alone,
 * is what a loaded model holds; a missing expert is named. */
Test(model_load, expert_bytes_from_the_headers)
{
    mr_model *model = NULL;
    mr_model_options options = {.backend = "ref", .threads = 1};
    cr_assert_eq(mr_model_load(dir, &options, &model, err, sizeof err), MR_ENGINE_OK, "%s", err);
    const mr_model_config *cfg = mr_model_config_get(model);
    mr_weights *w = NULL;
    cr_assert_eq(mr_weights_open(dir, &w, err, sizeof err), MR_ENGINE_OK, "%s", err);
    uint64_t bytes;
    cr_assert_eq(mr_weights_expert_bytes(w, cfg, &bytes, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    cr_assert_gt(mr_config_moe_layers(cfg), 0);
    cr_assert_eq(bytes, (uint64_t)mr_config_moe_layers(cfg) * mr_model_expert_bytes(model));
    mr_model_config more = *cfg;
    more.num_hidden_layers++;
    cr_assert_eq(mr_weights_expert_bytes(w, &more, &bytes, err, sizeof err), MR_ENGINE_EINVAL);
    cr_assert(strstr(err, "no tensor \"model.layers.4.mlp.experts.0.gate_proj.weight\""), "%s",
              err);
    mr_weights_close(w);
    mr_model_free(model);
}

Test(model_load, truncated_weights)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/model.safetensors", mr_test_tiny_model()) > 0);
    size_t len;
    char *data = mr_test_read(path, &len);
    replace("model.safetensors", data, len / 2);
    free(data);
    free(path);
    expect_error("model.safetensors", "truncated");
}

Test(model_load, no_weights_at_all)
{
    remove_file("model.safetensors");
    expect_error("model.safetensors", "cannot open");
}

Test(model_load, a_missing_tensor)
{
    config_with("num_hidden_layers", "5");
    expect_error("model.safetensors", "model.layers.4.");
}

Test(model_load, a_wrong_shape)
{
    config_with("num_experts", "65");
    expect_error("model.safetensors", "model.layers.0.mlp.gate.weight\" has shape [64, 256], "
                                      "expected [65, 256]");
}

Test(model_load, a_vocabulary_larger_than_the_config_says)
{
    config_with("vocab_size", "1000");
    expect_error("tokenizer.json", "has 2048 tokens but config.json's vocab_size is 1000");
}

Test(model_load, a_missing_tokenizer)
{
    remove_file("tokenizer.json");
    expect_error("tokenizer.json", "cannot open");
}

Test(model_load, a_tokenizer_that_is_not_byte_level)
{
    replace("tokenizer.json",
            "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}, \"pre_tokenizer\": null}",
            (size_t)-1);
    expect_error("tokenizer.json", "model type \"Unigram\" is not supported");
}

Test(model_load, a_config_of_another_architecture)
{
    config_with("architectures", "[\"LlamaForCausalLM\"]");
    expect_error("config.json", "Qwen3MoeForCausalLM");
}
