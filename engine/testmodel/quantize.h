/*
 * The bundled model's weights in the other checkpoint dtypes moerun reads
 * (make-model --dtype): f16, and FP8 e4m3 with a scale per 128 x 128 tile
 * (weight_scale_inv), the layout DeepSeek-V3 and Qwen3-FP8 ship.  Private
 * to engine/testmodel.
 */
#ifndef MR_ENGINE_TESTMODEL_QUANTIZE_H
#define MR_ENGINE_TESTMODEL_QUANTIZE_H

#include "engine/testmodel/testmodel.h"

/* A bf16 tensor's values as f16 (rounded to nearest even), in place. */
int mr_quantize_f16(mr_tensor_spec *t);

/* A bf16 matrix [rows][cols] as FP8: *values its e4m3 codes (named as t),
 * *scales its weight_scale_inv, f32 [ceil(rows/128)][ceil(cols/128)],
 * each tile's largest magnitude over 448 (e4m3's largest).  The caller
 * frees both specs' names and data. */
int mr_quantize_fp8(const mr_tensor_spec *t, mr_tensor_spec *values, mr_tensor_spec *scales);

/* Whether make-model quantises this tensor to FP8: the projections of
 * attention, the experts and dense MLPs; not the embeddings, the head, the
 * routers or the norms (which block-scaled checkpoints keep in bf16). */
bool mr_quantize_fp8_wanted(const mr_tensor_spec *t);

#endif
