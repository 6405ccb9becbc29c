/*
 * bf16 to f16 and to block-scaled FP8, for make-model --dtype.  The
 * conversions are written here from the formats' definitions (IEEE 754
 * binary16; OCP FP8 e4m3 "fn": bias 7, no infinities, 448 the largest),
 * independently of the kernels' decoders in kernels/exact.h, so that a
 * mistake on one side shows up in the reference test.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/testmodel/quantize.h"

#define TILE 128
#define E4M3_MAX 448.0

/* Nearest binary16, ties to even; beyond 65504 it saturates (the weights
 * are small: this never happens, but must not wrap). */
static uint16_t to_f16(float f)
{
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    double a = fabs((double)f);
    if (a >= 65504.0)
        return sign | 0x7bffu;
    if (a < 0x1p-14) /* subnormal: steps of 2^-24 */
        return sign | (uint16_t)nearbyint(a * 0x1p24);
    int e;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    double q = nearbyint(m * 2048.0); /* 11 significant bits */
    if (q == 2048.0) {
        q = 1024.0;
        e++;
    }
    return sign | (uint16_t)((unsigned)(e + 14) << 10 | ((unsigned)q - 1024u));
}

/* Nearest e4m3 code, ties to even; beyond 448 it saturates. */
static uint8_t to_e4m3(double x)
{
    uint8_t sign = signbit(x) ? 0x80u : 0;
    double a = fabs(x);
    if (a >= E4M3_MAX)
        return sign | 0x7eu;
    if (a < 0x1p-6) /* subnormal: steps of 2^-9 (8 steps reach the first normal) */
        return sign | (uint8_t)nearbyint(a * 0x1p9);
    int e;
    double m = frexp(a, &e);
    double q = nearbyint(m * 16.0); /* 4 significant bits */
    if (q == 16.0) {
        q = 8.0;
        e++;
    }
    unsigned code = (unsigned)(e + 6) << 3 | ((unsigned)q - 8u);
    return sign | (uint8_t)(code > 0x7eu ? 0x7eu : code);
}

int mr_quantize_f16(mr_tensor_spec *t)
{
    size_t n = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    uint16_t *data = (uint16_t *)t->data;
    for (size_t i = 0; i < n; i++)
        data[i] = to_f16(mr_bf16_to_f32(data[i]));
    t->type = MR_TENSOR_F16;
    return 0;
}

bool mr_quantize_fp8_wanted(const mr_tensor_spec *t)
{
    return t->ndim == 2 && (strstr(t->name, ".self_attn.") || strstr(t->name, ".experts.") ||
                            strstr(t->name, "_proj.weight"));
}

int mr_quantize_fp8(const mr_tensor_spec *t, mr_tensor_spec *values, mr_tensor_spec *scales)
{
    int64_t rows = t->shape[0], cols = t->shape[1];
    int64_t tr = (rows + TILE - 1) / TILE, tc = (cols + TILE - 1) / TILE;
    const uint16_t *w = t->data;
    uint8_t *codes = malloc((size_t)(rows * cols));
    float *scale = malloc((size_t)(tr * tc) * sizeof *scale);
    size_t len = strlen(t->name);
    char *scale_name = malloc(len + sizeof "_scale_inv");
    char *name = strdup(t->name);
    if (!codes || !scale || !scale_name || !name) {
        free(codes);
        free(scale);
        free(scale_name);
        free(name);
        return -1;
    }
    memcpy(scale_name, t->name, len);
    memcpy(scale_name + len, "_scale_inv", sizeof "_scale_inv");
    for (int64_t bi = 0; bi < tr; bi++)
        for (int64_t bj = 0; bj < tc; bj++) {
            double amax = 0;
            for (int64_t r = bi * TILE; r < rows && r < (bi + 1) * TILE; r++)
                for (int64_t c = bj * TILE; c < cols && c < (bj + 1) * TILE; c++)
                    amax = fmax(amax, fabs((double)mr_bf16_to_f32(w[r * cols + c])));
            float s = amax > 0 ? (float)(amax / E4M3_MAX) : 1.0f;
            scale[bi * tc + bj] = s;
            for (int64_t r = bi * TILE; r < rows && r < (bi + 1) * TILE; r++)
                for (int64_t c = bj * TILE; c < cols && c < (bj + 1) * TILE; c++)
                    codes[r * cols + c] = to_e4m3((double)mr_bf16_to_f32(w[r * cols + c]) / s);
        }
    *values = (mr_tensor_spec){.name = name, .type = MR_TENSOR_F8_BLOCKS, .ndim = 2,
                               .shape = {rows, cols}, .data = codes};
    *scales = (mr_tensor_spec){.name = scale_name, .type = MR_TENSOR_F32, .ndim = 2,
                               .shape = {tr, tc}, .data = scale};
    return 0;
}
