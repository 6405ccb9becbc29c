#include <stdlib.h>
#include <string.h>

#include "tests/common/kernel_data.h"

static uint64_t rng = 0x243f6a8885a308d3ull;

float mr_test_uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) / 8388608.0f - 1.0f;
}

float *mr_test_random_floats(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p + 1);
    if (p)
        for (size_t i = 0; i < n; i++)
            p[i] = mr_test_uniform() * scale;
    return p;
}

void *mr_test_random_weights(mr_tensor_type type, size_t n, float scale)
{
    if (type == MR_TENSOR_F32)
        return mr_test_random_floats(n, scale);
    uint16_t *p = malloc(n * sizeof *p + 1);
    if (p)
        for (size_t i = 0; i < n; i++)
            p[i] = mr_f32_to_bf16(mr_test_uniform() * scale);
    return p;
}

static uint32_t random_bits(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

void *mr_test_random_weight_rows(mr_tensor_type type, int rows, int cols, float scale)
{
    size_t n = (size_t)rows * (size_t)cols, row_bytes = mr_tensor_row_bytes(type, cols);
    if (type == MR_TENSOR_F32 || type == MR_TENSOR_BF16)
        return mr_test_random_weights(type, n, scale);
    unsigned char *p = calloc((size_t)rows * row_bytes + 1, 1);
    if (!p)
        return NULL;
    if (type == MR_TENSOR_F16) {
        /* exponents up to 14: below 1; then the sign */
        for (size_t i = 0; i < n; i++) {
            uint16_t code = (uint16_t)((random_bits() & 0x3bffu) | (random_bits() & 0x8000u));
            memcpy(p + 2 * i, &code, 2);
        }
        return p;
    }
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            unsigned char *block =
                p + (size_t)r * row_bytes + (size_t)(k / MR_F8_BLOCK) * MR_F8_BLOCK_BYTES;
            if (k % MR_F8_BLOCK == 0) {
                float block_scale = scale / 448.0f * (0.5f + 0.5f * (mr_test_uniform() + 1.0f));
                memcpy(block, &block_scale, sizeof block_scale);
            }
            unsigned char code = (unsigned char)random_bits();
            if ((code & 0x7f) == 0x7f)
                code ^= 1; /* not NaN */
            block[4 + k % MR_F8_BLOCK] = code;
        }
    return p;
}

long mr_test_first_difference(const void *a, const void *b, size_t n_floats)
{
    const uint32_t *x = a, *y = b;
    for (size_t i = 0; i < n_floats; i++)
        if (x[i] != y[i])
            return (long)i;
    return -1;
}
