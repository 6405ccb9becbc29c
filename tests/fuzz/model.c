/*
 * Fuzz target: what a model folder holds besides the tokenizer
 * (engine/config.c, engine/safetensors.c).  The first byte says which file
 * the rest of the input is:
 *   0  config.json, read and checked by mr_config_load;
 *   1  model.safetensors: the 8-byte header length, the JSON header and the
 *      data, opened (and every header checked) by mr_weights_open;
 *   2  model.safetensors.index.json, naming the two shards written at
 *      start (or others, or none).
 * Mapped tensors are looked up, which walks the lookup table and checks
 * dtype, shape and alignment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/testmodel/testmodel.h"
#include "tests/fuzz/fuzz.h"

static const char *dir;

/* The tensors the shards hold, and the names a lookup tries. */
static const float shard_data[6] = {1, 2, 3, 4, 5, 6};
static const char *const names[] = {"model.norm.weight", "lm_head.weight", "a", ""};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dir = mr_fuzz_tmpdir();
    char err[512];
    for (int i = 0; i < 2; i++) {
        char name[64], *path;
        snprintf(name, sizeof name, "model-0000%d-of-00002.safetensors", i + 1);
        mr_tensor_spec spec = {names[i], MR_TENSOR_F32, 1, {3}, shard_data + 3 * i};
        path = mr_fuzz_write(dir, name, "", 0);
        int rc = mr_safetensors_write(path, &spec, 1, err, sizeof err);
        free(path);
        mr_fuzz_check(rc == MR_ENGINE_OK, err);
    }
    return 0;
}

static void fuzz_weights(void)
{
    char err[1024];
    mr_weights *w;
    if (mr_weights_open(dir, &w, err, sizeof err) != MR_ENGINE_OK) {
        mr_fuzz_check(err[0], "a refused model says why");
        return;
    }
    mr_fuzz_check(w != NULL, "mr_weights_open gives weights");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        static const int64_t shape[2] = {3, 1};
        mr_tensor t;
        for (int ndim = 0; ndim <= 2; ndim++)
            if (mr_weights_get(w, names[i], ndim, shape, &t, err, sizeof err) == MR_ENGINE_OK)
                mr_fuzz_check(t.data && t.ndim == ndim, "a tensor found has its shape");
    }
    (void)mr_weights_count(w);
    mr_weights_close(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const files[] = {"config.json", "model.safetensors",
                                        "model.safetensors.index.json"};
    int which = data[0] % 3;
    char *path = mr_fuzz_write(dir, files[which], data + 1, size - 1);
    if (which == 0) {
        mr_model_config cfg;
        char err[1024];
        if (mr_config_load(path, &cfg, err, sizeof err) == MR_ENGINE_OK)
            mr_fuzz_check(mr_config_moe_layers(&cfg) <= cfg.num_hidden_layers,
                          "MoE layers are layers");
        else
            mr_fuzz_check(err[0], "a refused config says why");
    } else {
        fuzz_weights();
    }
    /* The index, when there, would turn the next single-file run into a
     * sharded one. */
    unlink(path);
    free(path);
    return 0;
}
