/*
 * exact.h is the bit-level definition of the cpu backend, and the CUDA
 * backend's exact mode runs the same functions: here the `exact` backend
 * (exact.h in plain loops) and `cpu` must agree by memcmp on every op, on
 * this CPU's vector path and on the AVX2 one, at awkward sizes and both
 * weight types.  Also the pieces themselves: e^x within 2 ulp of libm's,
 * the lane tree as written, and RoPE's table.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/exact.h"
#include "kernels/kernels.h"
#include "tests/common/kernel_data.h"

TestSuite(exact, .timeout = 120);

static const mr_tensor_type TYPES[] = {MR_TENSOR_F32, MR_TENSOR_BF16};
static const int ROWS[] = {1, 3, 17, 64};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static mr_backend *backend(const char *name, int threads)
{
    char err[256];
    mr_backend *be = NULL;
    cr_assert_eq(mr_backend_create(name, threads, &be, err, sizeof err), 0, "%s", err);
    return be;
}

static void assert_same(const float *got, const float *want, size_t n, const char *what)
{
    long at = mr_test_first_difference(got, want, n);
    cr_assert_eq(at, -1, "%s: cpu differs from exact at %ld: %.9g != %.9g", what, at,
                 at >= 0 ? got[at] : 0.0, at >= 0 ? want[at] : 0.0);
}

/* The cpu backend on the ISA `isa` names (NULL: the best this CPU has). */
static mr_backend *cpu_on(const char *isa)
{
    if (isa)
        setenv("MR_CPU_ISA", isa, 1);
    else
        unsetenv("MR_CPU_ISA");
    return backend("cpu", 2);
}

static const char *const ISAS[] = {NULL, "avx2", "ref"};

Test(exact, matmul_and_rmsnorm_equal_cpu)
{
    const int dims[][2] = {{1, 1}, {7, 33}, {48, 128}, {21, 200}};
    mr_backend *exact = backend("exact", 2);
    for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
        mr_backend *cpu = cpu_on(ISAS[isa]);
        for (size_t t = 0; t < COUNT(TYPES); t++)
            for (size_t d = 0; d < COUNT(dims); d++)
                for (size_t r = 0; r < COUNT(ROWS); r++) {
                    int rows = ROWS[r], out_dim = dims[d][0], in_dim = dims[d][1];
                    float *x = mr_test_random_floats((size_t)rows * in_dim, 2.0f);
                    void *w = mr_test_random_weights(TYPES[t], (size_t)out_dim * in_dim, 1.0f);
                    size_t n = (size_t)rows * out_dim;
                    float *a = malloc(n * sizeof *a + 1), *b = malloc(n * sizeof *b + 1);
                    cr_assert_eq(cpu->ops->matmul(cpu, a, x, w, TYPES[t], rows, out_dim, in_dim),
                                 0);
                    cr_assert_eq(
                        exact->ops->matmul(exact, b, x, w, TYPES[t], rows, out_dim, in_dim), 0);
                    assert_same(a, b, n, "matmul");
                    float *c = malloc((size_t)rows * in_dim * sizeof *c + 1);
                    float *e = malloc((size_t)rows * in_dim * sizeof *e + 1);
                    void *g = mr_test_random_weights(TYPES[t], (size_t)in_dim, 1.0f);
                    cr_assert_eq(cpu->ops->rmsnorm(cpu, c, x, g, TYPES[t], rows, in_dim, 1e-6f),
                                 0);
                    cr_assert_eq(
                        exact->ops->rmsnorm(exact, e, x, g, TYPES[t], rows, in_dim, 1e-6f), 0);
                    assert_same(c, e, (size_t)rows * in_dim, "rmsnorm");
                    free(x), free(w), free(a), free(b), free(c), free(e), free(g);
                }
        mr_backend_free(cpu);
    }
    mr_backend_free(exact);
}

/* matmul_heads on every weight type (FP8 blocks and f16 too: MLA keeps
 * kv_b_proj as the checkpoint has it), heads' slices apart, adjoining or
 * one shared (stride 0): cpu gives exact's bits, and each head's values
 * are, bit for bit, matmul's over that head's inputs and weight rows. */
Test(exact, matmul_heads_equals_cpu_and_matmul_per_head)
{
    static const mr_tensor_type types[] = {MR_TENSOR_F32, MR_TENSOR_BF16, MR_TENSOR_F16,
                                           MR_TENSOR_F8_BLOCKS};
    /* heads, out_dim, in_dim, head_stride_rows */
    static const int shapes[][4] = {{1, 1, 1, 0},    {3, 7, 33, 9},   {4, 16, 32, 20},
                                    {2, 21, 200, 30}, {3, 5, 17, 0},  {8, 64, 32, 64},
                                    {4, 32, 64, 64}};
    mr_backend *exact = backend("exact", 2);
    for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
        mr_backend *cpu = cpu_on(ISAS[isa]);
        for (size_t t = 0; t < COUNT(types); t++)
            for (size_t d = 0; d < COUNT(shapes); d++)
                for (size_t r = 0; r < COUNT(ROWS); r++) {
                    int rows = ROWS[r], heads = shapes[d][0], out_dim = shapes[d][1];
                    int in_dim = shapes[d][2], stride = shapes[d][3];
                    int w_rows = (heads - 1) * stride + out_dim;
                    float *x = mr_test_random_floats((size_t)rows * heads * in_dim, 2.0f);
                    void *w = mr_test_random_weight_rows(types[t], w_rows, in_dim, 1.0f);
                    size_t n = (size_t)rows * heads * out_dim;
                    float *a = malloc(n * sizeof *a + 1), *b = malloc(n * sizeof *b + 1);
                    cr_assert_eq(cpu->ops->matmul_heads(cpu, a, x, w, types[t], rows, heads,
                                                        out_dim, in_dim, stride),
                                 0);
                    cr_assert_eq(exact->ops->matmul_heads(exact, b, x, w, types[t], rows, heads,
                                                          out_dim, in_dim, stride),
                                 0);
                    assert_same(a, b, n, "matmul_heads");
                    float *xh = malloc((size_t)rows * in_dim * sizeof *xh + 1);
                    float *one = malloc((size_t)rows * out_dim * sizeof *one + 1);
                    for (int h = 0; h < heads; h++) {
                        for (int i = 0; i < rows; i++)
                            memcpy(xh + (size_t)i * in_dim, x + ((size_t)i * heads + h) * in_dim,
                                   (size_t)in_dim * sizeof *xh);
                        size_t row_bytes = mr_tensor_row_bytes(types[t], in_dim);
                        const char *slice = (const char *)w + (size_t)h * stride * row_bytes;
                        cr_assert_eq(cpu->ops->matmul(cpu, one, xh, slice, types[t], rows, out_dim,
                                                      in_dim),
                                     0);
                        for (int i = 0; i < rows; i++)
                            assert_same(a + ((size_t)i * heads + h) * out_dim,
                                        one + (size_t)i * out_dim, (size_t)out_dim,
                                        "matmul_heads against matmul of one head");
                    }
                    free(x), free(w), free(a), free(b), free(xh), free(one);
                }
        mr_backend_free(cpu);
    }
    mr_backend_free(exact);
}

/* A matmul_heads whose sizes make no sense is refused, naming the op. */
Test(exact, matmul_heads_refuses_bad_sizes)
{
    static const char *const names[] = {"cpu", "exact", "ref"};
    float x[4] = {0}, w[4] = {0}, out[4];
    for (size_t i = 0; i < COUNT(names); i++) {
        mr_backend *be = backend(names[i], 1);
        cr_assert_eq(be->ops->matmul_heads(be, out, x, w, MR_TENSOR_F32, 1, 0, 1, 1, 1),
                     MR_KERNELS_EINVAL);
        cr_assert(strstr(mr_backend_error(be), "matmul_heads"), "%s", mr_backend_error(be));
        cr_assert_eq(be->ops->matmul_heads(be, out, x, w, MR_TENSOR_F32, 1, 1, 1, 1, -1),
                     MR_KERNELS_EINVAL);
        cr_assert_eq(be->ops->matmul_heads(be, out, x, w, MR_TENSOR_F32, 0, 2, 2, 2, 2), 0);
        mr_backend_free(be);
    }
}

Test(exact, expert_ffn_equals_cpu)
{
    enum { HIDDEN = 40, INTER = 24, GROUPS = 7, ROWS_IN_ALL = 38 };
    mr_backend *exact = backend("exact", 2);
    for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
        mr_backend *cpu = cpu_on(ISAS[isa]);
        for (size_t t = 0; t < COUNT(TYPES); t++) {
            const void *gate[GROUPS], *up[GROUPS], *down[GROUPS];
            for (int g = 0; g < GROUPS; g++) {
                gate[g] = mr_test_random_weights(TYPES[t], (size_t)INTER * HIDDEN, 1.0f);
                up[g] = mr_test_random_weights(TYPES[t], (size_t)INTER * HIDDEN, 1.0f);
                down[g] = mr_test_random_weights(TYPES[t], (size_t)HIDDEN * INTER, 1.0f);
            }
            /* One group empty; the others take every tile height, whole
             * (4, 6) and with repeated rows (3, 5, 11), and leave 1 or 2
             * rows after a full tile (7, 8). */
            int32_t offsets[GROUPS + 1] = {0, 5, 5, 8, 19, 27, 34, 38};
            int rows = offsets[GROUPS];
            float *x = mr_test_random_floats((size_t)rows * HIDDEN, 3.0f);
            const float *x_rows[ROWS_IN_ALL];
            for (int r = 0; r < rows; r++) /* rows read out of order, as dispatch delivers */
                x_rows[r] = x + (size_t)((r * 7) % rows) * HIDDEN;
            for (int by_pointer = 0; by_pointer < 2; by_pointer++) {
                mr_expert_groups eg = {GROUPS, offsets, by_pointer ? x_rows : NULL, gate, up, down,
                                       TYPES[t], HIDDEN, INTER};
                float a[ROWS_IN_ALL * HIDDEN], b[ROWS_IN_ALL * HIDDEN];
                cr_assert_eq(cpu->ops->expert_ffn(cpu, a, x, &eg), 0);
                cr_assert_eq(exact->ops->expert_ffn(exact, b, x, &eg), 0);
                assert_same(a, b, (size_t)rows * HIDDEN, "expert_ffn");
            }
            for (int g = 0; g < GROUPS; g++)
                free((void *)gate[g]), free((void *)up[g]), free((void *)down[g]);
            free(x);
        }
        mr_backend_free(cpu);
    }
    mr_backend_free(exact);
}

/* Contexts of 1 to 150 positions (up to three chunks, tails of every
 * length mod 16), GQA of 4 query heads per kv head, blocks of 16, caches
 * of f32 and of bf16. */
Test(exact, attention_equals_cpu)
{
    enum { KV = 2, Q = 8, DIM = 40, BLOCK = 16, MAX_BLOCKS = 10, SEQS = 3 };
    int32_t seq[] = {0, 1, 2, 0, 1, 2, 0}, pos[] = {0, 15, 16, 63, 64, 129, 149};
    int rows = (int)COUNT(seq);
    int32_t table[SEQS * MAX_BLOCKS];
    for (int i = 0; i < SEQS * MAX_BLOCKS; i++) /* blocks scattered over the cache */
        table[i] = (i * 7) % (SEQS * MAX_BLOCKS);
    size_t cache = (size_t)SEQS * MAX_BLOCKS * BLOCK * KV * DIM;
    float *q = mr_test_random_floats((size_t)rows * Q * DIM, 4.0f);
    mr_backend *exact = backend("exact", 2), *ref = backend("ref", 1);
    float *want = malloc((size_t)rows * Q * DIM * sizeof *want);
    float *got = malloc((size_t)rows * Q * DIM * sizeof *got);
    for (size_t t = 0; t < COUNT(TYPES); t++) {
        void *k = mr_test_random_weights(TYPES[t], cache, 1.0f);
        void *v = mr_test_random_weights(TYPES[t], cache, 1.0f);
        mr_attention_args args = {rows, Q,   KV,    DIM, BLOCK, MAX_BLOCKS, 1.0f / sqrtf(DIM),
                                  seq,  pos, table, TYPES[t]};
        cr_assert_eq(exact->ops->attention(exact, want, q, k, v, &args), 0);
        for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
            mr_backend *cpu = cpu_on(ISAS[isa]);
            cr_assert_eq(cpu->ops->attention(cpu, got, q, k, v, &args), 0);
            assert_same(got, want, (size_t)rows * Q * DIM, ISAS[isa] ? ISAS[isa] : "attention");
            mr_backend_free(cpu);
        }
        /* And it is attention: close to the reference's double sums. */
        cr_assert_eq(ref->ops->attention(ref, got, q, k, v, &args), 0);
        for (size_t i = 0; i < (size_t)rows * Q * DIM; i++)
            cr_assert(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(got[i])), "%zu: %g vs %g",
                      i, want[i], got[i]);
        free(k), free(v);
    }
    mr_backend_free(ref);
    mr_backend_free(exact);
    free(q), free(want), free(got);
}

/* kv_store rounds to the cache's type: bf16 to nearest even, the same on
 * every backend. */
Test(exact, kv_store_rounds_to_the_cache_type)
{
    enum { N_ROWS = 3, DIM = 20 };
    float *k = mr_test_random_floats(N_ROWS * DIM, 3.0f), *v = mr_test_random_floats(N_ROWS * DIM, 3.0f);
    int32_t slot[N_ROWS] = {4, 0, 2};
    const char *names[] = {"cpu", "ref", "exact"};
    for (size_t b = 0; b < COUNT(names); b++) {
        mr_backend *be = backend(names[b], 1);
        uint16_t kc[5 * DIM], vc[5 * DIM];
        cr_assert_eq(be->ops->kv_store(be, kc, vc, MR_TENSOR_BF16, k, v, slot, N_ROWS, DIM), 0);
        for (int r = 0; r < N_ROWS; r++)
            for (int i = 0; i < DIM; i++) {
                cr_assert_eq(kc[slot[r] * DIM + i], mr_f32_to_bf16(k[r * DIM + i]), "%s", names[b]);
                cr_assert_eq(vc[slot[r] * DIM + i], mr_f32_to_bf16(v[r * DIM + i]), "%s", names[b]);
            }
        mr_backend_free(be);
    }
    free(k), free(v);
}

/* Within 2 ulp of libm's expf over the range a softmax uses, exact at 0,
 * denormals rounded once, the clamp's floor below -104 and infinity above
 * 89. */
Test(exact, exp_is_within_two_ulp)
{
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
        float got = mr_exact_exp(x), want = expf(x);
        float ulp = nextafterf(want, INFINITY) - want;
        cr_assert(fabsf(got - want) <= 2 * ulp, "e^%.9g: %.9g vs libm %.9g", x, got, want);
    }
    cr_assert_eq(mr_exact_exp(0.0f), 1.0f);
    cr_assert_eq(mr_exact_exp(-1000.0f), mr_exact_exp(-104.0f));
    float tiny = mr_exact_exp(-100.0f); /* 3.7e-44: a denormal, rounded once */
    cr_assert(tiny > 3.6e-44f && tiny < 3.9e-44f, "e^-100 = %g", tiny);
    cr_assert(isinf(mr_exact_exp(1000.0f)));
    cr_assert(isnan(mr_exact_exp(NAN)));
}

/* The tree is the one written: halves first.  Values chosen so any other
 * order rounds differently. */
Test(exact, reduce16_adds_halves_first)
{
    float v[16] = {1e8f, 1, 1, 1, 1, 1, 1, 1, -1e8f, 1, 1, 1, 1, 1, 1, 1};
    cr_assert_eq(mr_exact_reduce16(v), 14.0f, "1e8 and -1e8 meet first");
    float in_order = 0;
    for (int i = 0; i < 16; i++)
        in_order += v[i];
    cr_assert_neq(in_order, 14.0f, "a left-to-right sum loses the ones");
    float x[33], w[33];
    for (int i = 0; i < 33; i++)
        x[i] = 1.0f + (float)i / 64, w[i] = 1.0f - (float)i / 128;
    float lanes[16] = {0};
    for (int i = 0; i < 33; i++)
        lanes[i % 16] = fmaf(x[i], w[i], lanes[i % 16]);
    cr_assert_eq(mr_exact_dot(x, w, MR_TENSOR_F32, 33), mr_exact_reduce16(lanes));
}

/* Position 0 is the identity; pairs half a head apart rotate by angles
 * that are the f32 inv_freq times the position. */
Test(exact, rope_table_holds_cos_and_sin_of_each_angle)
{
    enum { POSITIONS = 50, DIM = 12 };
    float table[POSITIONS * DIM];
    mr_rope_table(table, POSITIONS, DIM, 10000.0f);
    for (int p = 0; p < POSITIONS; p++)
        for (int i = 0; i < DIM / 2; i++) {
            double angle = p * pow(10000.0, -2.0 * i / DIM);
            cr_assert_float_eq(table[(p * DIM / 2 + i) * 2], cos(angle), 2e-5);
            cr_assert_float_eq(table[(p * DIM / 2 + i) * 2 + 1], sin(angle), 2e-5);
        }
    cr_assert_eq(table[0], 1.0f);
    cr_assert_eq(table[1], 0.0f);
}

/* Without a GPU (CUDA_VISIBLE_DEVICES empty hides every one, so this holds
 * on any host): "cuda" is refused with the reason, "auto" takes cpu and
 * keeps the reason for the caller to show. */
Test(exact, cuda_without_a_gpu_is_refused_and_auto_falls_back)
{
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    char err[256] = "";
    mr_backend *be = NULL;
    cr_assert_eq(mr_backend_create("cuda", 1, &be, err, sizeof err), -1);
    cr_assert_null(be);
    cr_assert(strstr(err, MR_HAVE_CUDA ? "no usable GPU" : "no CUDA backend"), "%s", err);
    cr_assert_eq(mr_backend_create("auto", 1, &be, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(be->ops->name, "cpu");
    if (MR_HAVE_CUDA)
        cr_assert(strstr(err, "no usable GPU"), "auto says why not cuda: %s", err);
    else
        cr_assert_str_eq(err, "");
    mr_backend_free(be);
    cr_assert(strstr(mr_backend_names(), MR_HAVE_CUDA ? "cuda" : "exact"), "%s",
              mr_backend_names());
}

/* The decoders of f16 and FP8 e4m3 on the values that pin their formats:
 * one, the smallest subnormal, the first normal, the largest, signs, NaN. */
Test(exact, f16_and_e4m3_widen_exactly)
{
    cr_assert_eq(mr_exact_f16(0x3c00), 1.0f);
    cr_assert_eq(mr_exact_f16(0xc000), -2.0f);
    cr_assert_eq(mr_exact_f16(0x0001), 0x1p-24f);
    cr_assert_eq(mr_exact_f16(0x0400), 0x1p-14f);
    cr_assert_eq(mr_exact_f16(0x7bff), 65504.0f);
    cr_assert(isinf(mr_exact_f16(0xfc00)) && mr_exact_f16(0xfc00) < 0);
    cr_assert(isnan(mr_exact_f16(0x7e00)));
    cr_assert_eq(mr_exact_e4m3(0x38), 1.0f);
    cr_assert_eq(mr_exact_e4m3(0xb8), -1.0f);
    cr_assert_eq(mr_exact_e4m3(0x01), 0x1p-9f);
    cr_assert_eq(mr_exact_e4m3(0x08), 0x1p-6f);
    cr_assert_eq(mr_exact_e4m3(0x7e), 448.0f);
    cr_assert_eq(mr_exact_e4m3(0x3d), 1.625f);
    cr_assert(isnan(mr_exact_e4m3(0x7f)) && isnan(mr_exact_e4m3(0xff)));
}

/* A matmul over f16 or FP8-block weights is, bit for bit, the matmul over
 * f32 weights holding the values they decode to (e4m3 x scale, rounded to
 * f32 once), on cpu (its ISAs) and ref's dispatch alike: the layout of
 * blocks, their scales and a padded last block are read where they are. */
Test(exact, f16_and_fp8_blocks_are_the_values_they_decode_to)
{
    const int out_dim = 5, in_dim = 300, rows = 3; /* 3 blocks a row, the last of 44 */
    size_t row_bytes = mr_tensor_row_bytes(MR_TENSOR_F8_BLOCKS, in_dim);
    cr_assert_eq(row_bytes, 3 * MR_F8_BLOCK_BYTES);
    unsigned char *f8 = calloc((size_t)out_dim, row_bytes);
    uint16_t *f16 = malloc((size_t)out_dim * in_dim * sizeof *f16);
    float *wide8 = malloc((size_t)out_dim * in_dim * sizeof *wide8);
    float *wide16 = malloc((size_t)out_dim * in_dim * sizeof *wide16);
    uint64_t state = 12345;
    for (int r = 0; r < out_dim; r++) {
        for (int b = 0; b < 3; b++) {
            float scale = 0.001f * (float)(1 + r + 7 * b);
            memcpy(f8 + (size_t)r * row_bytes + (size_t)b * MR_F8_BLOCK_BYTES, &scale, 4);
        }
        for (int k = 0; k < in_dim; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            unsigned char code = (unsigned char)(state >> 56);
            if ((code & 0x7f) == 0x7f)
                code ^= 1; /* not NaN */
            f8[(size_t)r * row_bytes + (size_t)(k / MR_F8_BLOCK) * MR_F8_BLOCK_BYTES + 4 +
               (size_t)(k % MR_F8_BLOCK)] = code;
            f16[(size_t)r * in_dim + k] = (uint16_t)((state >> 40) & 0x3bff); /* finite, < 1 */
        }
    }
    for (int r = 0; r < out_dim; r++)
        for (int k = 0; k < in_dim; k++) {
            const void *row8 = mr_exact_weight_row(f8, MR_TENSOR_F8_BLOCKS, (size_t)r, in_dim);
            wide8[(size_t)r * in_dim + k] = mr_exact_weight(row8, MR_TENSOR_F8_BLOCKS, (size_t)k);
            wide16[(size_t)r * in_dim + k] = mr_exact_f16(f16[(size_t)r * in_dim + k]);
        }
    float *x = mr_test_random_floats((size_t)rows * in_dim, 2.0f);
    float a[15], b[15];
    for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
        mr_backend *cpu = cpu_on(ISAS[isa]);
        cr_assert_eq(cpu->ops->matmul(cpu, a, x, f8, MR_TENSOR_F8_BLOCKS, rows, out_dim, in_dim), 0);
        cr_assert_eq(cpu->ops->matmul(cpu, b, x, wide8, MR_TENSOR_F32, rows, out_dim, in_dim), 0);
        assert_same(a, b, 15, "fp8 matmul");
        cr_assert_eq(cpu->ops->matmul(cpu, a, x, f16, MR_TENSOR_F16, rows, out_dim, in_dim), 0);
        cr_assert_eq(cpu->ops->matmul(cpu, b, x, wide16, MR_TENSOR_F32, rows, out_dim, in_dim), 0);
        assert_same(a, b, 15, "f16 matmul");
        mr_backend_free(cpu);
    }
    free(f8), free(f16), free(wide8), free(wide16), free(x);
}

/* MLA's absorbed attention against the formula in double: for each row
 * and head, softmax over positions 0..pos of (q_lat · c_t + q_rope · k_t) *
 * scale, then the weighted sum of the c_t; through a block table that
 * scatters the sequence's positions, past one chunk of 64 keys. */
Test(exact, mla_attention_is_the_softmax_over_latent_and_rope_scores)
{
    enum { HEADS = 3, LATENT = 40, ROPE = 8, BLOCK = 4, BLOCKS = 32, NROWS = 2 };
    const int positions[NROWS] = {70, 5};
    int32_t seq[NROWS] = {0, 0}, table[BLOCKS];
    for (int b = 0; b < BLOCKS; b++)
        table[b] = (b * 7) % BLOCKS; /* 7 is coprime with 32: a permutation */
    float *latent = mr_test_random_floats((size_t)BLOCKS * BLOCK * LATENT, 1.0f);
    float *rope = mr_test_random_floats((size_t)BLOCKS * BLOCK * ROPE, 1.0f);
    float *q_lat = mr_test_random_floats((size_t)NROWS * HEADS * LATENT, 0.5f);
    float *q_rope = mr_test_random_floats((size_t)NROWS * HEADS * ROPE, 0.5f);
    float out[NROWS * HEADS * LATENT];
    mr_mla_args a = {.rows = NROWS, .n_heads = HEADS, .latent = LATENT, .rope = ROPE,
                     .block_size = BLOCK, .max_blocks = BLOCKS, .scale = 0.125f, .seq = seq,
                     .pos = positions, .block_table = table, .kv_type = MR_TENSOR_F32};
    mr_backend *cpu = cpu_on(NULL);
    cr_assert_eq(cpu->ops->mla_attention(cpu, out, q_lat, q_rope, latent, rope, &a), 0);
    for (int r = 0; r < NROWS; r++)
        for (int h = 0; h < HEADS; h++) {
            const float *ql = q_lat + ((size_t)r * HEADS + h) * LATENT;
            const float *qr = q_rope + ((size_t)r * HEADS + h) * ROPE;
            double scores[128], max = -INFINITY, sum = 0;
            for (int p = 0; p <= positions[r]; p++) {
                size_t slot = (size_t)table[p / BLOCK] * BLOCK + (size_t)(p % BLOCK);
                double s = 0;
                for (int i = 0; i < LATENT; i++)
                    s += (double)ql[i] * latent[slot * LATENT + i];
                for (int i = 0; i < ROPE; i++)
                    s += (double)qr[i] * rope[slot * ROPE + i];
                scores[p] = s * 0.125;
                max = fmax(max, scores[p]);
            }
            for (int p = 0; p <= positions[r]; p++)
                sum += exp(scores[p] - max);
            for (int i = 0; i < LATENT; i++) {
                double want = 0;
                for (int p = 0; p <= positions[r]; p++) {
                    size_t slot = (size_t)table[p / BLOCK] * BLOCK + (size_t)(p % BLOCK);
                    want += exp(scores[p] - max) / sum * latent[slot * LATENT + i];
                }
                double got = out[((size_t)r * HEADS + h) * LATENT + i];
                cr_assert(fabs(got - want) <= 1e-5 * fmax(1, fabs(want)),
                          "row %d head %d [%d]: %.8f, the formula %.8f", r, h, i, got, want);
            }
        }
    mr_backend_free(cpu);
    /* cpu's vector kernel gives exact's bits on every ISA, f32 and bf16
     * caches (LATENT 40: a partial group of 8 coordinates and of 16 lanes). */
    mr_backend *exact = backend("exact", 2);
    void *latent16 = mr_test_random_weights(MR_TENSOR_BF16, (size_t)BLOCKS * BLOCK * LATENT, 1.0f);
    void *rope16 = mr_test_random_weights(MR_TENSOR_BF16, (size_t)BLOCKS * BLOCK * ROPE, 1.0f);
    for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
        cpu = cpu_on(ISAS[isa]);
        for (int bf16 = 0; bf16 < 2; bf16++) {
            a.kv_type = bf16 ? MR_TENSOR_BF16 : MR_TENSOR_F32;
            const void *c = bf16 ? latent16 : (const void *)latent;
            const void *k = bf16 ? rope16 : (const void *)rope;
            float want[NROWS * HEADS * LATENT];
            cr_assert_eq(exact->ops->mla_attention(exact, want, q_lat, q_rope, c, k, &a), 0);
            cr_assert_eq(cpu->ops->mla_attention(cpu, out, q_lat, q_rope, c, k, &a), 0);
            assert_same(out, want, COUNT(out), bf16 ? "mla_attention bf16" : "mla_attention");
        }
        mr_backend_free(cpu);
    }
    mr_backend_free(exact);
    free(latent16), free(rope16);
    free(latent), free(rope), free(q_lat), free(q_rope);
}

/* The softmax router, cpu against exact: logits from a few units to
 * eighty apart (e^x near its underflow), ties, expert counts off the
 * vector width and beyond the vector row's stack (1100: exact.h's row),
 * k 1 to 8, renormalised or not; picks, weights, slots and counts by
 * memcmp. */
Test(exact, softmax_router_equals_cpu)
{
    const int experts[] = {1, 7, 16, 60, 128, 130, 1100};
    enum { N_ROWS = 9, MAX_EXPERTS = 1100, K = 8 };
    mr_backend *exact = backend("exact", 2);
    static float logits[N_ROWS * MAX_EXPERTS];
    static int32_t log2phy[MAX_EXPERTS], logcnt[MAX_EXPERTS];
    int32_t pos[N_ROWS];
    for (int e = 0; e < MAX_EXPERTS; e++)
        log2phy[e] = e, logcnt[e] = 1;
    for (int r = 0; r < N_ROWS; r++)
        pos[r] = r;
    for (size_t isa = 0; isa < COUNT(ISAS); isa++) {
        mr_backend *cpu = cpu_on(ISAS[isa]);
        for (size_t x = 0; x < COUNT(experts); x++)
            for (int k = 1; k <= K && k <= experts[x]; k += 3)
                for (int renormalize = 0; renormalize < 2; renormalize++) {
                    int n = experts[x];
                    float scale = 1.0f + 40.0f * (float)(k % 3);
                    for (int i = 0; i < N_ROWS * n; i++)
                        logits[i] = mr_test_uniform() * scale;
                    for (int i = 0; i < n; i += 5) /* ties */
                        logits[i] = logits[0];
                    int32_t slots[2][N_ROWS * K];
                    float weights[2][N_ROWS * K];
                    static uint64_t counts[2][MAX_EXPERTS];
                    memset(counts, 0, sizeof counts);
                    for (int b = 0; b < 2; b++) {
                        mr_route_args a = {.rows = N_ROWS, .n_experts = n, .k = k,
                                           .renormalize = renormalize,
                                           .scoring = MR_ROUTE_SOFTMAX, .max_replicas = 1,
                                           .logits = logits, .pos = pos, .log2phy = log2phy,
                                           .logcnt = logcnt, .counts = counts[b],
                                           .slots = slots[b], .weights = weights[b]};
                        mr_backend *be = b ? exact : cpu;
                        cr_assert_eq(be->ops->route(be, &a), 0, "%s", mr_backend_error(be));
                    }
                    cr_assert_eq(memcmp(slots[0], slots[1], sizeof(int32_t) * N_ROWS * k), 0,
                                 "slots differ: %d experts, k %d", n, k);
                    assert_same(weights[0], weights[1], (size_t)N_ROWS * k, "route weights");
                    cr_assert_eq(memcmp(counts[0], counts[1], sizeof(uint64_t) * n), 0);
                }
        mr_backend_free(cpu);
    }
    mr_backend_free(exact);
}

/* DeepSeek-V3's router on a hand-made case: 8 experts in 2 groups, the
 * bias moving the choice but not the weights, the losing group's experts
 * out however strong, weights renormalised and scaled. */
Test(exact, grouped_sigmoid_router_keeps_the_best_group)
{
    /* sigmoid scores before the bias: group 0 = experts 0..3, group 1 = 4..7 */
    const float logits[8] = {2.0f, 1.0f, -1.0f, 0.5f, 3.0f, -2.0f, -2.0f, -3.0f};
    /* with the bias, group 0's best two beat group 1's (4 and 5) */
    const float bias[8] = {0.0f, 0.3f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int32_t pos[1] = {0}, log2phy[8] = {0, 1, 2, 3, 4, 5, 6, 7}, logcnt[8];
    uint64_t counts[8] = {0};
    int32_t slots[2];
    float weights[2];
    for (int e = 0; e < 8; e++)
        logcnt[e] = 1;
    mr_route_args a = {.rows = 1, .n_experts = 8, .k = 2, .renormalize = 1,
                       .scoring = MR_ROUTE_SIGMOID_GROUPED, .bias = bias, .n_group = 2,
                       .topk_group = 1, .scaling = 2.5f, .max_replicas = 1, .logits = logits,
                       .pos = pos, .log2phy = log2phy, .logcnt = logcnt, .counts = counts,
                       .slots = slots, .weights = weights};
    double s[8];
    for (int e = 0; e < 8; e++)
        s[e] = 1 / (1 + exp(-(double)logits[e]));
    /* group 0: choice 0.881 and 0.731 + 0.3 = 1.031: 1.912; group 1: 0.953 + 0.119 */
    cr_assert_gt(s[0] + s[1] + 0.3, s[4] + s[5]);
    mr_backend *cpu = cpu_on(NULL);
    cr_assert_eq(cpu->ops->route(cpu, &a), 0);
    /* expert 1 ranks first by its choice score (1.031 > 0.881), expert 4
     * (the strongest) is out with its group */
    cr_assert(slots[0] == 1 && slots[1] == 0, "picked %d and %d", slots[0], slots[1]);
    double sum = s[1] + s[0];
    cr_assert_float_eq(weights[0], (float)(s[1] / sum * 2.5), 1e-6);
    cr_assert_float_eq(weights[1], (float)(s[0] / sum * 2.5), 1e-6);
    cr_assert(counts[0] == 1 && counts[1] == 1 && counts[4] == 0);
    mr_backend_free(cpu);
}
