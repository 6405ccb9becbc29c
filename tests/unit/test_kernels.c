/* Kernels: the fast "cpu" backend against the "ref" definition and naive
 * formulas, on awkward sizes, f32 and bf16 weights; bf16 conversion; and
 * batch invariance: a row's bits do not depend on the call's other rows, its
 * place in the call or the thread count. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"
#include "kernels/cpu_internal.h"
#include "kernels/kernels.h"
#include "tests/common/kernel_data.h"

/* ---- helpers ---- */

static mr_backend *backend(const char *name, int threads)
{
    char err[256];
    mr_backend *be = NULL;
    cr_assert_eq(mr_backend_create(name, threads, &be, err, sizeof err), 0, "%s", err);
    return be;
}

/* |got - want| <= tol * (1 + |want|) everywhere. */
static void assert_close(const float *got, const float *want, size_t n, float tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(fabsf(got[i] - want[i]) <= tol * (1.0f + fabsf(want[i])),
                  "%s[%zu]: got %.9g, want %.9g", what, i, got[i], want[i]);
}

static void assert_same_bits(const float *got, const float *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(memcmp(&got[i], &want[i], sizeof got[i]) == 0, "%s[%zu]: %.9g != %.9g bitwise",
                  what, i, got[i], want[i]);
}

static const mr_tensor_type TYPES[] = {MR_TENSOR_F32, MR_TENSOR_BF16};
static const int ROWS[] = {1, 3, 17, 64};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- batch invariance, for any op that maps rows to rows ----
 * `run` computes the rows row_ids[0..n) of the op's 37-row problem (its
 * inputs in ctx) in one call on `be`, into out[n][width]. */
typedef void (*rows_op)(mr_backend *be, float *out, const int *row_ids, int n, void *ctx);

#define BATCH 37

static void assert_batch_invariant(rows_op run, void *ctx, int width, const char *what)
{
    mr_backend *two = backend("cpu", 2), *one = backend("cpu", 1);
    int ids[BATCH];
    for (int i = 0; i < BATCH; i++)
        ids[i] = i;
    float *full = malloc(sizeof(float) * BATCH * (size_t)width);
    float *other = malloc(sizeof(float) * BATCH * (size_t)width);
    run(two, full, ids, BATCH, ctx);
    run(one, other, ids, BATCH, ctx);
    assert_same_bits(other, full, (size_t)BATCH * (size_t)width, what);
    for (int i = 0; i < BATCH; i++) {
        run(two, other, &i, 1, ctx); /* alone */
        assert_same_bits(other, full + (size_t)i * (size_t)width, (size_t)width, what);
        int shuffled[5] = {(i + 5) % BATCH, (i + 11) % BATCH, (i + 2) % BATCH, i, (i + 30) % BATCH};
        run(two, other, shuffled, 5, ctx); /* fourth of five, among other rows */
        assert_same_bits(other + 3 * (size_t)width, full + (size_t)i * (size_t)width, (size_t)width,
                         what);
    }
    free(full);
    free(other);
    mr_backend_free(two);
    mr_backend_free(one);
}

/* ---- bf16, types, backends ---- */

static uint16_t bf16_of_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return mr_f32_to_bf16(f);
}

Test(kernels, bf16_rounds_to_nearest_even)
{
    cr_assert_eq(mr_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(bf16_of_bits(0x3f808000u), 0x3f80, "halfway, even below: down");
    cr_assert_eq(bf16_of_bits(0x3f818000u), 0x3f82, "halfway, odd below: up");
    cr_assert_eq(bf16_of_bits(0x3f808001u), 0x3f81, "above halfway: up");
    cr_assert_eq(bf16_of_bits(0x3f807fffu), 0x3f80, "below halfway: down");
    cr_assert_eq(bf16_of_bits(0xbf818000u), 0xbf82, "negative halfway");
    cr_assert_eq(bf16_of_bits(0x7f7fffffu), 0x7f80, "FLT_MAX rounds to infinity");
    cr_assert_eq(mr_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(mr_f32_to_bf16(-INFINITY), 0xff80);
    cr_assert(isnan(mr_bf16_to_f32(mr_f32_to_bf16(NAN))));
    cr_assert(isnan(mr_bf16_to_f32(bf16_of_bits(0x7f800001u))), "low-payload NaN stays NaN");
    cr_assert(isnan(mr_bf16_to_f32(bf16_of_bits(0xff80ffffu))), "NaN that would round to inf");
    cr_assert_eq(mr_bf16_to_f32(0x4049), 3.140625f);
    cr_assert_eq(mr_bf16_to_f32(0x0001), 0x1p-133f, "denormals widen exactly");
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = mr_bf16_to_f32((uint16_t)h);
        if (!isnan(f))
            cr_assert_eq(mr_f32_to_bf16(f), h, "bf16 %#x does not round-trip", h);
    }
}

Test(kernels, type_sizes_and_names)
{
    cr_assert_eq(mr_tensor_type_size(MR_TENSOR_F32), 4);
    cr_assert_eq(mr_tensor_type_size(MR_TENSOR_BF16), 2);
    cr_assert_str_eq(mr_tensor_type_name(MR_TENSOR_F32), "f32");
    cr_assert_str_eq(mr_tensor_type_name(MR_TENSOR_BF16), "bf16");
}

Test(kernels, backends_by_name)
{
    mr_backend *be = backend("cpu", 0);
    cr_assert_str_eq(be->ops->name, "cpu");
    cr_assert_eq(be->threads, omp_get_num_procs());
    mr_backend_free(be);
    be = backend("ref", 8);
    cr_assert_str_eq(be->ops->name, "ref");
    cr_assert_eq(be->threads, 1, "the reference runs on one thread");
    float host[3] = {1, 2, 3}, back[3];
    void *dev;
    const void *mapped;
    cr_assert_eq(be->ops->alloc(be, sizeof host, &dev), MR_KERNELS_OK);
    cr_assert_eq(be->ops->upload(be, dev, host, sizeof host), MR_KERNELS_OK);
    cr_assert_eq(be->ops->download(be, back, dev, sizeof back), MR_KERNELS_OK);
    cr_assert_eq(be->ops->sync(be), MR_KERNELS_OK);
    cr_assert_eq(memcmp(host, back, sizeof host), 0);
    cr_assert_eq(be->ops->map_weights(be, host, sizeof host, &mapped), MR_KERNELS_OK);
    cr_assert_eq(mapped, host, "weights are used in place");
    cr_assert_eq(be->ops->free(be, dev), MR_KERNELS_OK);
    cr_assert_str_eq(mr_backend_error(be), "", "no op has failed");
    mr_backend_free(be);
    char err[128] = "";
    cr_assert_eq(mr_backend_create("gpu9", 1, &be, err, sizeof err), -1);
    cr_assert_null(be);
    cr_assert(strstr(err, "gpu9") && strstr(err, "cpu"), "%s", err);
}

/* ---- matmul ---- */

Test(kernels, matmul_matches_reference)
{
    static const int shapes[][2] = {{1, 1}, {16, 16}, {33, 70}, {100, 1024}, {21, 129}};
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    for (size_t t = 0; t < COUNT(TYPES); t++)
        for (size_t s = 0; s < COUNT(shapes); s++)
            for (size_t r = 0; r < COUNT(ROWS); r++) {
                int rows = ROWS[r], n = shapes[s][0], k = shapes[s][1];
                float *x = mr_test_random_floats((size_t)rows * k, 1.0f);
                void *w = mr_test_random_weights(TYPES[t], (size_t)n * k, 0.1f);
                float *want = malloc(sizeof(float) * rows * n),
                      *got = malloc(sizeof(float) * rows * n);
                cr_assert_eq(ref->ops->matmul(ref, want, x, w, TYPES[t], rows, n, k),
                             MR_KERNELS_OK);
                cr_assert_eq(cpu->ops->matmul(cpu, got, x, w, TYPES[t], rows, n, k), MR_KERNELS_OK);
                assert_close(got, want, (size_t)rows * n, 1e-5f, "matmul");
                free(x);
                free(w);
                free(want);
                free(got);
            }
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

Test(kernels, matmul_reference_is_the_plain_sum)
{
    mr_backend *ref = backend("ref", 1);
    float x[2][3] = {{1, 2, 3}, {-1, 0.5f, 2}}, w[2][3] = {{1, 0, -1}, {2, 2, 2}}, out[2][2];
    cr_assert_eq(ref->ops->matmul(ref, &out[0][0], &x[0][0], w, MR_TENSOR_F32, 2, 2, 3),
                 MR_KERNELS_OK);
    cr_assert_eq(out[0][0], -2.0f);
    cr_assert_eq(out[0][1], 12.0f);
    cr_assert_eq(out[1][0], -3.0f);
    cr_assert_eq(out[1][1], 3.0f);
    mr_backend_free(ref);
}

typedef struct {
    const float *x;
    const void *w;
    mr_tensor_type type;
    int n, k;
} matmul_ctx;

static float *gather_rows(const float *x, int width, const int *row_ids, int n)
{
    float *g = malloc(sizeof(float) * (size_t)n * (size_t)width);
    for (int i = 0; i < n; i++)
        memcpy(g + (size_t)i * width, x + (size_t)row_ids[i] * width, sizeof(float) * width);
    return g;
}

static void run_matmul(mr_backend *be, float *out, const int *row_ids, int n, void *ctx)
{
    matmul_ctx *c = ctx;
    float *x = gather_rows(c->x, c->k, row_ids, n);
    cr_assert_eq(be->ops->matmul(be, out, x, c->w, c->type, n, c->n, c->k), MR_KERNELS_OK);
    free(x);
}

Test(kernels, matmul_is_batch_invariant)
{
    for (size_t t = 0; t < COUNT(TYPES); t++) {
        matmul_ctx c = {mr_test_random_floats(BATCH * 300, 1.0f), mr_test_random_weights(TYPES[t], 45 * 300, 0.1f),
                        TYPES[t], 45, 300};
        assert_batch_invariant(run_matmul, &c, c.n, "matmul");
        free((void *)c.x);
        free((void *)c.w);
    }
}

/* ---- rmsnorm ---- */

Test(kernels, rmsnorm_matches_reference_and_formula)
{
    static const int dims[] = {4, 64, 100, 1024};
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    for (size_t t = 0; t < COUNT(TYPES); t++)
        for (size_t d = 0; d < COUNT(dims); d++)
            for (size_t r = 0; r < COUNT(ROWS); r++) {
                int rows = ROWS[r], dim = dims[d];
                size_t n = (size_t)rows * dim;
                float *x = mr_test_random_floats(n, 3.0f), *want = malloc(sizeof(float) * n);
                void *w = mr_test_random_weights(TYPES[t], (size_t)dim, 1.0f);
                cr_assert_eq(ref->ops->rmsnorm(ref, want, x, w, TYPES[t], rows, dim, 1e-6f),
                             MR_KERNELS_OK);
                for (int i = 0; i < rows; i++) { /* the formula, in double */
                    double sq = 0;
                    for (int j = 0; j < dim; j++)
                        sq += (double)x[i * dim + j] * x[i * dim + j];
                    double inv = 1.0 / sqrt(sq / dim + 1e-6);
                    for (int j = 0; j < dim; j++) {
                        float expect = (float)(x[i * dim + j] * inv *
                                               mr_exact_weight(w, TYPES[t], (size_t)j));
                        cr_assert_float_eq(want[i * dim + j], expect, 1e-5f * (1 + fabsf(expect)));
                    }
                }
                cr_assert_eq(cpu->ops->rmsnorm(cpu, x, x, w, TYPES[t], rows, dim, 1e-6f),
                             MR_KERNELS_OK); /* in place */
                assert_close(x, want, n, 1e-5f, "rmsnorm");
                free(x);
                free(w);
                free(want);
            }
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

typedef struct {
    const float *x;
    const float *w;
    int dim;
} rmsnorm_ctx;

static void run_rmsnorm(mr_backend *be, float *out, const int *row_ids, int n, void *ctx)
{
    rmsnorm_ctx *c = ctx;
    float *x = gather_rows(c->x, c->dim, row_ids, n);
    cr_assert_eq(be->ops->rmsnorm(be, out, x, c->w, MR_TENSOR_F32, n, c->dim, 1e-6f),
                 MR_KERNELS_OK);
    free(x);
}

Test(kernels, rmsnorm_is_batch_invariant)
{
    rmsnorm_ctx c = {mr_test_random_floats(BATCH * 200, 2.0f), mr_test_random_floats(200, 1.0f), 200};
    assert_batch_invariant(run_rmsnorm, &c, c.dim, "rmsnorm");
    free((void *)c.x);
    free((void *)c.w);
}

/* ---- rope ---- */

Test(kernels, rope_rotates_pairs_half_a_head_apart)
{
    enum { HEADS = 3, DIM = 10 };
    const int32_t pos[2] = {0, 37};
    const float theta = 10000.0f;
    float *x = mr_test_random_floats(2 * HEADS * DIM, 1.0f), *y = malloc(sizeof(float) * 2 * HEADS * DIM);
    float table[38 * DIM];
    mr_rope_table(table, 38, DIM, theta);
    memcpy(y, x, sizeof(float) * 2 * HEADS * DIM);
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    cr_assert_eq(ref->ops->rope_neox(ref, y, pos, 2, HEADS, DIM, table), MR_KERNELS_OK);
    assert_same_bits(y, x, HEADS * DIM, "position 0 is the identity");
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < DIM / 2; i++) {
            double angle = 37.0 * pow(theta, -2.0 * i / DIM);
            const float *in = x + (HEADS + h) * DIM;
            const float *out = y + (HEADS + h) * DIM;
            double a = in[i] * cos(angle) - in[i + DIM / 2] * sin(angle);
            double b = in[i + DIM / 2] * cos(angle) + in[i] * sin(angle);
            cr_assert_float_eq(out[i], a, 1e-5, "head %d pair %d", h, i);
            cr_assert_float_eq(out[i + DIM / 2], b, 1e-5, "head %d pair %d", h, i);
        }
    cr_assert_eq(cpu->ops->rope_neox(cpu, x, pos, 2, HEADS, DIM, table), MR_KERNELS_OK);
    assert_same_bits(x, y, 2 * HEADS * DIM, "rope");
    free(x);
    free(y);
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

/* ---- attention ---- */

/* Sequences of different lengths in shuffled blocks of 4 positions. */
typedef struct {
    int n_seq, max_blocks, n_blocks;
    int32_t *block_table;
    float *k_cache, *v_cache;
    mr_attention_args args; /* rows, seq, pos and q filled per test */
    float *q;
} paged_kv;

#define BLOCK 4

static void paged_kv_init(paged_kv *kv, int n_seq, int max_len, int q_heads, int kv_heads, int dim)
{
    kv->n_seq = n_seq;
    kv->max_blocks = (max_len + BLOCK - 1) / BLOCK;
    kv->n_blocks = n_seq * kv->max_blocks;
    kv->block_table = malloc(sizeof(int32_t) * (size_t)kv->n_blocks);
    for (int b = 0; b < kv->n_blocks; b++) /* a permutation: blocks interleave */
        kv->block_table[b] = (int32_t)((b * 7 + 3) % kv->n_blocks);
    cr_assert(kv->n_blocks % 7 != 0);
    size_t floats = (size_t)kv->n_blocks * BLOCK * kv_heads * dim;
    kv->k_cache = mr_test_random_floats(floats, 1.0f);
    kv->v_cache = mr_test_random_floats(floats, 1.0f);
    kv->args = (mr_attention_args){.n_q_heads = q_heads,
                                   .n_kv_heads = kv_heads,
                                   .head_dim = dim,
                                   .block_size = BLOCK,
                                   .max_blocks = kv->max_blocks,
                                   .scale = 1.0f / sqrtf((float)dim),
                                   .block_table = kv->block_table};
}

static void paged_kv_free(paged_kv *kv)
{
    free(kv->block_table);
    free(kv->k_cache);
    free(kv->v_cache);
}

/* softmax(q k / sqrt(d)) v in double, finding K and V through the block
 * table by hand. */
static void naive_attention(const paged_kv *kv, const float *q, int seq, int pos, float *out)
{
    const mr_attention_args *a = &kv->args;
    int group = a->n_q_heads / a->n_kv_heads, d = a->head_dim;
    double *scores = malloc(sizeof(double) * (size_t)(pos + 1));
    for (int h = 0; h < a->n_q_heads; h++) {
        double max = -INFINITY, total = 0;
        for (int p = 0; p <= pos; p++) {
            int block = kv->block_table[seq * kv->max_blocks + p / BLOCK];
            const float *k =
                kv->k_cache +
                (((size_t)block * BLOCK + p % BLOCK) * a->n_kv_heads + (size_t)(h / group)) * d;
            double s = 0;
            for (int i = 0; i < d; i++)
                s += (double)q[h * d + i] * k[i];
            scores[p] = s / sqrt(d);
            max = fmax(max, scores[p]);
        }
        for (int p = 0; p <= pos; p++)
            total += exp(scores[p] - max);
        for (int i = 0; i < d; i++) {
            double acc = 0;
            for (int p = 0; p <= pos; p++) {
                int block = kv->block_table[seq * kv->max_blocks + p / BLOCK];
                const float *v =
                    kv->v_cache +
                    (((size_t)block * BLOCK + p % BLOCK) * a->n_kv_heads + (size_t)(h / group)) * d;
                acc += exp(scores[p] - max) / total * v[i];
            }
            out[h * d + i] = (float)acc;
        }
    }
    free(scores);
}

Test(kernels, attention_matches_naive_with_gqa_and_paging)
{
    static const struct {
        int q_heads, kv_heads, dim;
    } shapes[] = {{8, 2, 40}, {8, 2, 64}, {18, 1, 32}, {3, 3, 16}};
    static const int32_t seqs[] = {0, 2, 1, 2, 3, 0, 1};
    static const int32_t positions[] = {0, 150, 64, 63, 5, 17, 129};
    enum { ROWS_N = 7 };
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    for (size_t si = 0; si < COUNT(shapes); si++) {
        int d = shapes[si].dim, width = shapes[si].q_heads * d;
        paged_kv kv;
        paged_kv_init(&kv, 4, 151, shapes[si].q_heads, shapes[si].kv_heads, d);
        float *q = mr_test_random_floats((size_t)ROWS_N * width, 2.0f);
        float *want = malloc(sizeof(float) * ROWS_N * width);
        float *got = malloc(sizeof(float) * ROWS_N * width);
        for (int r = 0; r < ROWS_N; r++)
            naive_attention(&kv, q + r * width, seqs[r], positions[r], want + r * width);
        kv.args.rows = ROWS_N;
        kv.args.seq = seqs;
        kv.args.pos = positions;
        cr_assert_eq(ref->ops->attention(ref, got, q, kv.k_cache, kv.v_cache, &kv.args),
                     MR_KERNELS_OK);
        assert_close(got, want, (size_t)ROWS_N * width, 1e-5f, "ref attention");
        cr_assert_eq(cpu->ops->attention(cpu, got, q, kv.k_cache, kv.v_cache, &kv.args),
                     MR_KERNELS_OK);
        assert_close(got, want, (size_t)ROWS_N * width, 1e-5f, "cpu attention");
        free(q);
        free(want);
        free(got);
        paged_kv_free(&kv);
    }
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

typedef struct {
    paged_kv kv;
    int32_t seq[BATCH], pos[BATCH];
} attention_ctx;

static void run_attention(mr_backend *be, float *out, const int *row_ids, int n, void *ctx)
{
    attention_ctx *c = ctx;
    int width = c->kv.args.n_q_heads * c->kv.args.head_dim;
    int32_t seq[BATCH], pos[BATCH];
    for (int i = 0; i < n; i++) {
        seq[i] = c->seq[row_ids[i]];
        pos[i] = c->pos[row_ids[i]];
    }
    float *q = gather_rows(c->kv.q, width, row_ids, n);
    mr_attention_args a = c->kv.args;
    a.rows = n;
    a.seq = seq;
    a.pos = pos;
    cr_assert_eq(be->ops->attention(be, out, q, c->kv.k_cache, c->kv.v_cache, &a), MR_KERNELS_OK);
    free(q);
}

Test(kernels, attention_is_batch_invariant)
{
    attention_ctx c;
    paged_kv_init(&c.kv, 5, 200, 6, 3, 48);
    c.kv.q = mr_test_random_floats(BATCH * 6 * 48, 2.0f);
    for (int i = 0; i < BATCH; i++) {
        c.seq[i] = i % 5;
        c.pos[i] = (i * 37) % 200;
    }
    assert_batch_invariant(run_attention, &c, 6 * 48, "attention");
    free(c.kv.q);
    paged_kv_free(&c.kv);
}

Test(kernels, kv_store_writes_the_slots)
{
    enum { KV_DIM = 6 };
    float k[2 * KV_DIM], v[2 * KV_DIM], kc[5 * KV_DIM] = {0}, vc[5 * KV_DIM] = {0};
    for (int i = 0; i < 2 * KV_DIM; i++) {
        k[i] = (float)i + 1;
        v[i] = -(float)i - 1;
    }
    const int32_t slot[2] = {4, 1};
    mr_backend *cpu = backend("cpu", 2);
    cr_assert_eq(cpu->ops->kv_store(cpu, kc, vc, MR_TENSOR_F32, k, v, slot, 2, KV_DIM),
                 MR_KERNELS_OK);
    cr_assert_eq(memcmp(kc + 4 * KV_DIM, k, sizeof(float) * KV_DIM), 0);
    cr_assert_eq(memcmp(vc + 1 * KV_DIM, v + KV_DIM, sizeof(float) * KV_DIM), 0);
    cr_assert_eq(kc[0], 0.0f, "other slots untouched");
    cr_assert_eq(vc[3 * KV_DIM], 0.0f, "other slots untouched");
    mr_backend_free(cpu);
}

/* ---- router ---- */

/* One route call with identity maps (expert e in slot e, one replica), so
 * slots are logical ids; up to 8 rows and 8 experts. */
static int route_identity(mr_backend *be, int32_t *slots, float *weights, const float *logits,
                          int rows, int n_experts, int k, int renormalize, uint64_t *counts)
{
    int32_t log2phy[8], logcnt[8], pos[8] = {0};
    cr_assert(rows <= 8 && n_experts <= 8, "route_identity has room for 8 rows and experts");
    for (int e = 0; e < n_experts; e++) {
        log2phy[e] = e;
        logcnt[e] = 1;
    }
    mr_route_args a = {.rows = rows, .n_experts = n_experts, .k = k,
                       .renormalize = renormalize, .max_replicas = 1, .logits = logits,
                       .pos = pos, .log2phy = log2phy, .logcnt = logcnt, .counts = counts,
                       .slots = slots, .weights = weights};
    return be->ops->route(be, &a);
}

Test(kernels, route_ties_order_and_renormalization)
{
    const float logits[2][5] = {{1, 3, 3, 2, 3}, {0.5f, -1, 4, 0.25f, 2}};
    int32_t ids[2][3];
    float w[2][3];
    uint64_t counts[5] = {0};
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    cr_assert_eq(route_identity(ref, &ids[0][0], &w[0][0], &logits[0][0], 2, 5, 3, 0, counts),
                 MR_KERNELS_OK);
    cr_assert(ids[0][0] == 1 && ids[0][1] == 2 && ids[0][2] == 4, "ties go to the lower id");
    cr_assert(ids[1][0] == 2 && ids[1][1] == 4 && ids[1][2] == 0, "descending");
    for (int r = 0; r < 2; r++) {
        double total = 0;
        for (int e = 0; e < 5; e++)
            total += exp(logits[r][e]);
        for (int j = 0; j < 3; j++)
            cr_assert_float_eq(w[r][j], exp(logits[r][ids[r][j]]) / total, 1e-6,
                               "softmax over all experts");
    }
    const uint64_t once[5] = {1, 1, 2, 0, 2};
    cr_assert_eq(memcmp(counts, once, sizeof counts), 0, "a pick counts once");
    int32_t ids2[2][3];
    float w2[2][3];
    cr_assert_eq(route_identity(cpu, &ids2[0][0], &w2[0][0], &logits[0][0], 2, 5, 3, 1, counts),
                 MR_KERNELS_OK);
    cr_assert_eq(memcmp(ids, ids2, sizeof ids), 0);
    for (int e = 0; e < 5; e++)
        cr_assert_eq(counts[e], 2 * once[e], "counts add up across calls");
    for (int r = 0; r < 2; r++) {
        cr_assert_float_eq(w2[r][0] + w2[r][1] + w2[r][2], 1.0f, 1e-6, "renormalised");
        cr_assert_float_eq(w2[r][1] / w2[r][0], w[r][1] / w[r][0], 1e-6, "ratios kept");
    }
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

/* Replicas are chosen by the token's position, as mr_eplb_pick_slot
 * chooses them: 3 experts in 6 slots over 2 layers, expert 0 with three
 * replicas in layer 1. */
Test(kernels, route_picks_the_replica_of_mr_eplb_pick_slot)
{
    enum { LAYERS = 2, EXPERTS = 3, SLOTS = 6, N_ROWS = 7, K = 2 };
    const int32_t phy2log[LAYERS * SLOTS] = {0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 0, 2};
    mr_eplb_placement p;
    char err[128];
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, LAYERS, EXPERTS, SLOTS, 2, phy2log, err,
                                                sizeof err), MR_EPLB_OK, "%s", err);
    float logits[N_ROWS * EXPERTS];
    int32_t pos[N_ROWS];
    for (int r = 0; r < N_ROWS; r++) {
        pos[r] = 5 * r + 3;
        for (int e = 0; e < EXPERTS; e++)
            logits[r * EXPERTS + e] = mr_test_uniform();
    }
    const char *names[] = {"ref", "cpu"};
    for (int b = 0; b < 2; b++)
        for (int layer = 0; layer < LAYERS; layer++) {
            mr_backend *be = backend(names[b], 2);
            size_t row = (size_t)layer * EXPERTS;
            int32_t slots[N_ROWS * K], ids[N_ROWS * K];
            float w[N_ROWS * K], w_ids[N_ROWS * K];
            uint64_t counts[EXPERTS] = {0}, id_counts[EXPERTS] = {0};
            mr_route_args a = {.rows = N_ROWS, .n_experts = EXPERTS, .k = K,
                               .max_replicas = p.max_replicas, .logits = logits, .pos = pos,
                               .log2phy = p.log2phy + row * (size_t)p.max_replicas,
                               .logcnt = p.logcnt + row, .counts = counts, .slots = slots,
                               .weights = w};
            cr_assert_eq(be->ops->route(be, &a), MR_KERNELS_OK, "%s", mr_backend_error(be));
            cr_assert_eq(route_identity(be, ids, w_ids, logits, N_ROWS, EXPERTS, K, 0, id_counts),
                         MR_KERNELS_OK);
            for (int i = 0; i < N_ROWS * K; i++)
                cr_assert_eq(slots[i], mr_eplb_pick_slot(&p, layer, ids[i], (uint64_t)pos[i / K]),
                             "%s layer %d pick %d", names[b], layer, i);
            cr_assert_eq(memcmp(w, w_ids, sizeof w), 0, "the maps move slots, not weights");
            cr_assert_eq(memcmp(counts, id_counts, sizeof counts), 0, "counts are per expert");
            mr_backend_free(be);
        }
    mr_eplb_placement_free(&p);
}

/* ---- failing ops ---- */

Test(kernels, an_invalid_argument_fails_with_a_message)
{
    const char *names[] = {"ref", "cpu"};
    for (int b = 0; b < 2; b++) {
        mr_backend *be = backend(names[b], 2);
        const float logits[3] = {1, 2, 3};
        int32_t slots[4];
        float w[4];
        uint64_t counts[3] = {0};
        cr_assert_eq(route_identity(be, slots, w, logits, 1, 3, 4, 0, counts), MR_KERNELS_EINVAL,
                     "top 4 of 3 experts");
        cr_assert(strstr(mr_backend_error(be), "route"), "%s", mr_backend_error(be));
        int32_t log2phy[3] = {0, 1, 2}, no_slot[3] = {1, 0, 1}, pos = 0;
        mr_route_args bad = {.rows = 1, .n_experts = 3, .k = 2, .max_replicas = 1,
                             .logits = logits, .pos = &pos, .log2phy = log2phy,
                             .logcnt = no_slot, .counts = counts, .slots = slots, .weights = w};
        cr_assert_eq(be->ops->route(be, &bad), MR_KERNELS_EINVAL, "an expert without a slot");
        cr_assert(strstr(mr_backend_error(be), "expert 1"), "%s", mr_backend_error(be));
        cr_assert(counts[0] == 0 && counts[1] == 0 && counts[2] == 0,
                  "a failed route counts nothing");
        float x[4] = {0}, out[4];
        cr_assert_eq(be->ops->matmul(be, out, x, x, MR_TENSOR_F32, -1, 2, 2), MR_KERNELS_EINVAL);
        cr_assert(strstr(mr_backend_error(be), "matmul") && strstr(mr_backend_error(be), "-1"),
                  "%s", mr_backend_error(be));
        mr_backend_free(be);
    }
}

/* ---- experts ---- */

typedef struct {
    int groups, hidden, inter;
    mr_tensor_type type;
    void **gate, **up, **down;
    const float *x;
    int group_of[BATCH]; /* for the batch-invariance rows */
} experts;

static void experts_init(experts *e, int groups, int hidden, int inter, mr_tensor_type type)
{
    *e = (experts){groups,
                   hidden,
                   inter,
                   type,
                   malloc(sizeof(void *) * groups),
                   malloc(sizeof(void *) * groups),
                   malloc(sizeof(void *) * groups),
                   NULL,
                   {0}};
    for (int g = 0; g < groups; g++) {
        e->gate[g] = mr_test_random_weights(type, (size_t)inter * hidden, 0.2f);
        e->up[g] = mr_test_random_weights(type, (size_t)inter * hidden, 0.2f);
        e->down[g] = mr_test_random_weights(type, (size_t)hidden * inter, 0.2f);
    }
}

static void experts_free(experts *e)
{
    for (int g = 0; g < e->groups; g++) {
        free(e->gate[g]);
        free(e->up[g]);
        free(e->down[g]);
    }
    free(e->gate);
    free(e->up);
    free(e->down);
}

static mr_expert_groups as_groups(const experts *e, const int32_t *offsets)
{
    return (mr_expert_groups){.groups = e->groups,
                              .offsets = offsets,
                              .gate = (const void *const *)e->gate,
                              .up = (const void *const *)e->up,
                              .down = (const void *const *)e->down,
                              .type = e->type,
                              .hidden = e->hidden,
                              .inter = e->inter};
}

/* Rows read through x_rows, from anywhere, give the bits of the same rows
 * laid out one after another: what expert parallelism relies on. */
Test(kernels, expert_rows_read_in_place_give_the_same_bits)
{
    const int32_t offsets[] = {0, 5, 5, 19, 40};
    const char *names[] = {"ref", "cpu"};
    for (size_t b = 0; b < COUNT(names); b++)
        for (size_t t = 0; t < COUNT(TYPES); t++) {
            mr_backend *be = backend(names[b], 2);
            experts e;
            experts_init(&e, 4, 96, 48, TYPES[t]);
            mr_expert_groups g = as_groups(&e, offsets);
            size_t n = 40 * (size_t)e.hidden;
            float *x = mr_test_random_floats(n, 1.0f), *scattered = mr_test_random_floats(3 * n, 1.0f);
            const float *rows[40];
            for (int r = 0; r < 40; r++) { /* backwards, with gaps */
                float *at = scattered + (size_t)(39 - r) * 3 * e.hidden + 7;
                memcpy(at, x + (size_t)r * e.hidden, sizeof(float) * e.hidden);
                rows[r] = at;
            }
            float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
            cr_assert_eq(be->ops->expert_ffn(be, want, x, &g), MR_KERNELS_OK);
            g.x_rows = rows;
            cr_assert_eq(be->ops->expert_ffn(be, got, NULL, &g), MR_KERNELS_OK);
            cr_assert_eq(memcmp(want, got, sizeof(float) * n), 0, "%s", names[b]);
            free(x);
            free(scattered);
            free(want);
            free(got);
            experts_free(&e);
            mr_backend_free(be);
        }
}

Test(kernels, expert_ffn_matches_reference)
{
    static const int sizes[][2] = {{70, 40}, {128, 64}, {33, 17}};
    const int32_t offsets[] = {0, 0, 1, 4, 21, 21, 64}; /* groups of 0, 1, 3, 17, 0, 43 */
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    for (size_t t = 0; t < COUNT(TYPES); t++)
        for (size_t s = 0; s < COUNT(sizes); s++) {
            experts e;
            experts_init(&e, 6, sizes[s][0], sizes[s][1], TYPES[t]);
            mr_expert_groups g = as_groups(&e, offsets);
            size_t n = 64 * (size_t)e.hidden;
            float *x = mr_test_random_floats(n, 1.0f), *want = malloc(sizeof(float) * n),
                  *got = malloc(sizeof(float) * n);
            cr_assert_eq(ref->ops->expert_ffn(ref, want, x, &g), MR_KERNELS_OK);
            cr_assert_eq(cpu->ops->expert_ffn(cpu, got, x, &g), MR_KERNELS_OK);
            assert_close(got, want, n, 1e-5f, "expert_ffn");
            for (int j = 0; j < e.hidden; j++) { /* row 0 belongs to group 1: by hand */
                double acc = 0;
                for (int i = 0; i < e.inter; i++) {
                    double gate = 0, up = 0;
                    for (int k = 0; k < e.hidden; k++) {
                        size_t at = (size_t)i * e.hidden + k;
                        gate += x[k] * mr_exact_weight(e.gate[1], e.type, at);
                        up += x[k] * mr_exact_weight(e.up[1], e.type, at);
                    }
                    acc += gate / (1 + exp(-gate)) * up *
                           mr_exact_weight(e.down[1], e.type, (size_t)j * e.inter + i);
                }
                cr_assert_float_eq(want[j], acc, 1e-5 * (1 + fabs(acc)));
            }
            free(x);
            free(want);
            free(got);
            experts_free(&e);
        }
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

/* The rows sorted by group (stably) into one grouped call. */
static void run_experts(mr_backend *be, float *out, const int *row_ids, int n, void *ctx)
{
    experts *e = ctx;
    int32_t offsets[BATCH + 1] = {0};
    int order[BATCH], placed = 0;
    for (int g = 0; g < e->groups; g++) {
        for (int i = 0; i < n; i++)
            if (e->group_of[row_ids[i]] == g)
                order[placed++] = i;
        offsets[g + 1] = placed;
    }
    int sorted_ids[BATCH];
    for (int i = 0; i < n; i++)
        sorted_ids[i] = row_ids[order[i]];
    float *x = gather_rows(e->x, e->hidden, sorted_ids, n);
    float *y = malloc(sizeof(float) * (size_t)n * e->hidden);
    mr_expert_groups g = as_groups(e, offsets);
    cr_assert_eq(be->ops->expert_ffn(be, y, x, &g), MR_KERNELS_OK);
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)order[i] * e->hidden, y + (size_t)i * e->hidden,
               sizeof(float) * e->hidden);
    free(x);
    free(y);
}

Test(kernels, expert_ffn_is_batch_invariant)
{
    for (size_t t = 0; t < COUNT(TYPES); t++) {
        experts e;
        experts_init(&e, 4, 90, 50, TYPES[t]);
        e.x = mr_test_random_floats(BATCH * 90, 1.0f);
        for (int i = 0; i < BATCH; i++)
            e.group_of[i] = i < 25 ? 2 : i % 4; /* one big group, three small */
        assert_batch_invariant(run_experts, &e, e.hidden, "expert_ffn");
        free((void *)e.x);
        experts_free(&e);
    }
}

/* ---- add, embed ---- */

Test(kernels, add_embed)
{
    enum { DIM = 19 };
    float *rows = mr_test_random_floats(6 * DIM, 1.0f), out[2 * DIM], again[2 * DIM];
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    memcpy(out, rows + 3 * DIM, sizeof out);
    memcpy(again, out, sizeof again);
    cr_assert_eq(cpu->ops->add(cpu, again, rows, 2 * DIM), MR_KERNELS_OK);
    for (int i = 0; i < 2 * DIM; i++)
        cr_assert_eq(again[i], out[i] + rows[i]);

    uint16_t table16[3 * DIM];
    for (int i = 0; i < 3 * DIM; i++)
        table16[i] = mr_f32_to_bf16(rows[i]);
    const int32_t ids[2] = {2, 0};
    cr_assert_eq(cpu->ops->embed(cpu, out, table16, MR_TENSOR_BF16, ids, 2, DIM), MR_KERNELS_OK);
    for (int i = 0; i < DIM; i++) {
        cr_assert_eq(out[i], mr_bf16_to_f32(table16[2 * DIM + i]));
        cr_assert_eq(out[DIM + i], mr_bf16_to_f32(table16[i]));
    }
    cr_assert_eq(ref->ops->embed(ref, out, rows, MR_TENSOR_F32, ids, 2, DIM), MR_KERNELS_OK);
    cr_assert_eq(memcmp(out, rows + 2 * DIM, sizeof(float) * DIM), 0);
    free(rows);
    mr_backend_free(ref);
    mr_backend_free(cpu);
}

/* ---- the fallback without AVX-512: the reference ops across threads ---- */

Test(kernels, reference_ops_across_threads_give_the_same_bits)
{
    mr_backend *ref = backend("ref", 1), *cpu = backend("cpu", 2);
    experts e;
    experts_init(&e, 3, 40, 24, MR_TENSOR_BF16);
    const int32_t offsets[] = {0, 5, 5, 17};
    mr_expert_groups g = as_groups(&e, offsets);
    float *x = mr_test_random_floats(17 * 40, 1.0f), one[17 * 40], two[17 * 40];
    mr_ref_expert_ffn(ref, one, x, &g);
    mr_ref_expert_ffn(cpu, two, x, &g);
    assert_same_bits(two, one, 17 * 40, "expert_ffn");
    mr_ref_matmul(ref, one, x, e.gate[0], MR_TENSOR_BF16, 17, 24, 40);
    mr_ref_matmul(cpu, two, x, e.gate[0], MR_TENSOR_BF16, 17, 24, 40);
    assert_same_bits(two, one, 17 * 24, "matmul");
    free(x);
    experts_free(&e);
    mr_backend_free(ref);
    mr_backend_free(cpu);
}
