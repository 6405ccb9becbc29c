/*
 * engine/testmodel: the bundled test models (`moerun make-model`).  Random
 * Qwen3-MoE, Mixtral and DeepSeek-V3 models in the Hugging Face layout,
 * with a tokenizer trained on a built-in corpus, so tests and benchmarks
 * run without downloading a checkpoint.  Serving never uses this folder: it only writes what
 * engine/engine.h loads.
 */
#ifndef MR_ENGINE_TESTMODEL_H
#define MR_ENGINE_TESTMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef enum {
    MR_PRESET_TINY,
    MR_PRESET_SMALL,
    MR_PRESET_MIXTRAL_TINY,
    MR_PRESET_DEEPSEEK_TINY,
    MR_PRESET_DEEPSEEK_SMALL
} mr_model_preset;

/* The preset's name on the command line ("tiny", "small", "mixtral-tiny",
 * "deepseek-tiny", "deepseek-small"). */
const char *mr_make_model_preset_name(mr_model_preset preset);

/* Writes a random-initialised Qwen3-MoE (or Mixtral, or DeepSeek-V3) model
 * in the Hugging Face layout into `dir`: config.json, model.safetensors
 * (bf16; or f16; or FP8 e4m3 projections with 128 x 128 tile scales,
 * MR_TENSOR_F8_BLOCKS; DeepSeek-V3's e_score_correction_bias is f32 in
 * all three), tokenizer.json, tokenizer_config.json.  Expert popularity is skewed and depends on the
 * topic of the text, as in trained MoE models. */
int mr_make_model(const char *dir, mr_model_preset preset, uint64_t seed, mr_tensor_type dtype,
                  char *err, size_t errlen);

/* Writes one safetensors file (for make-model and tests); the header's
 * "__metadata__" carries the format transformers asks for. */
typedef struct {
    const char *name;
    mr_tensor_type type;
    int ndim;
    int64_t shape[4];
    const void *data; /* bytes: product(shape) * type size */
} mr_tensor_spec;

int mr_safetensors_write(const char *path, const mr_tensor_spec *tensors, size_t count,
                         char *err, size_t errlen);

/* Trains a byte-level BPE vocabulary of `vocab_size` tokens (256 bytes +
 * merges + `specials`) on `corpus` and writes it as tokenizer.json text
 * into *json (malloc'd), with Qwen2's pre-tokenizer.  Deterministic. */
int mr_tokenizer_train(const char *corpus, size_t len, int vocab_size,
                       const char *const *specials, size_t n_specials, char **json,
                       char *err, size_t errlen);

#endif
