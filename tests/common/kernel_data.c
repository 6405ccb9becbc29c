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

long mr_test_first_difference(const void *a, const void *b, size_t n_floats)
{
    const uint32_t *x = a, *y = b;
    for (size_t i = 0; i < n_floats; i++)
        if (x[i] != y[i])
            return (long)i;
    return -1;
}
