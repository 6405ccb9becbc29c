/* Inputs for kernel tests, criterion-free so the GPU check (tests/gpu/)
 * builds them too: seeded random floats and weights, and a bitwise
 * comparison that says where two outputs first differ. */
#ifndef MR_TESTS_KERNEL_DATA_H
#define MR_TESTS_KERNEL_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Uniform in [-1, 1) from one xorshift stream per process. */
float mr_test_uniform(void);
/* n values uniform in [-scale, scale), malloc'd (freed by the caller). */
float *mr_test_random_floats(size_t n, float scale);
/* The same as f32, or rounded to bf16. */
void *mr_test_random_weights(mr_tensor_type type, size_t n, float scale);
/* A weight of rows x cols of any type as the kernels take it: f32 and
 * bf16 as mr_test_random_weights; f16 finite codes of magnitude < scale
 * (scale <= 1); FP8 rows in blocks (MR_TENSOR_F8_BLOCKS), each block a
 * scale near scale / 448 and random e4m3 codes, NaN's left out. */
void *mr_test_random_weight_rows(mr_tensor_type type, int rows, int cols, float scale);
/* The first index where a and b differ bit for bit, or -1. */
long mr_test_first_difference(const void *a, const void *b, size_t n_floats);

#endif
