/*
 * Matmul, matmul per head (a weight slice each) and grouped expert FFN on
 * AVX-512: out = x · Wᵀ with W in the Linear layout, f32 or bf16.
 *
 * A tile is `rows` (4, 2 or 1) activation rows × 16/rows weight rows: 16
 * accumulators, each a dot product in the fixed order of
 * cpu_fast_internal.h, reduced together by mr_reduce16x16.  Per step of 16
 * along k a tile loads its weight vectors once for all its rows, so taller
 * tiles reuse weights more; one-row tiles (one token sent to an expert)
 * waste no FMAs on padding.  A partial tile (the last columns) repeats its
 * last column and throws the repeats away, so every output element comes out
 * the same bits in any tile, batch or thread.
 *
 * A work item is a block of columns (its weights sized to stay in L2) times
 * a block of rows; inside, each row tile stays in L1 while the block's
 * weights stream past it.
 */
#include <omp.h>

#include "kernels/cpu_fast_internal.h"

#define TILE 16 /* accumulators per tile: rows × cols */
#define MAX_TILE_ROWS 4
#define BLOCK_WEIGHT_BYTES (128 * 1024)
#define BLOCK_ROWS 64
#define PREFETCH_AHEAD 256 /* elements: 512 bytes of bf16 ahead */

MR_AVX512_INLINE void tile_step(__m512 acc[TILE], const float *const *x, const void *const *w,
                                int rows, mr_tensor_type type, int k, __mmask16 mask)
{
    int cols = TILE / rows;
    __m512 xv[MAX_TILE_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        xv[r] = _mm512_maskz_loadu_ps(mask, x[r] + k);
#pragma GCC unroll 16
    for (int c = 0; c < cols; c++) {
        /* Weights are read once per token group: fetch them early enough
         * that a decode step, which reads little else, is not left waiting
         * on memory.  A prefetch past the row's end is harmless. */
        _mm_prefetch((const char *)w[c] + (size_t)(k + PREFETCH_AHEAD) * mr_tensor_type_size(type),
                     _MM_HINT_T0);
        __m512 wv = mr_load16(w[c], type, k, mask);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
            acc[r * cols + c] = _mm512_fmadd_ps(xv[r], wv, acc[r * cols + c]);
    }
}

/* out[r * cols + c] = x[r] · w[c] for the tile's rows × (16 / rows) cols. */
MR_AVX512_INLINE void tile(float out[TILE], const float *const *x, const void *const *w, int rows,
                           mr_tensor_type type, int k_len)
{
    __m512 acc[TILE];
#pragma GCC unroll 16
    for (int i = 0; i < TILE; i++)
        acc[i] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= k_len; k += 16)
        tile_step(acc, x, w, rows, type, k, (__mmask16)0xffff);
    if (k < k_len)
        tile_step(acc, x, w, rows, type, k, mr_tail_mask(k_len - k));
    _mm512_storeu_ps(out, mr_reduce16x16(acc));
}

/* One instance per tile height and weight type, so each is fully unrolled. */
MR_AVX512_INLINE void tile_of_height(float out[TILE], const float *const *x, const void *const *w,
                                     int rows, mr_tensor_type type, int k_len)
{
    if (rows == 4)
        tile(out, x, w, 4, type, k_len);
    else if (rows == 2)
        tile(out, x, w, 2, type, k_len);
    else
        tile(out, x, w, 1, type, k_len);
}

MR_AVX512 static void avx512_tile(float out[TILE], const float *const *x, const void *const *w,
                                  int rows, mr_tensor_type type, int k_len)
{
    if (type == MR_TENSOR_BF16)
        tile_of_height(out, x, w, rows, MR_TENSOR_BF16, k_len);
    else
        tile_of_height(out, x, w, rows, MR_TENSOR_F32, k_len);
}

/* One tile of either ISA (cpu_avx2.c keeps the same lanes and tree). */
typedef void tile_fn(float out[TILE], const float *const *x, const void *const *w, int rows,
                     mr_tensor_type type, int k_len);

/* This CPU's tile for weights of `type`, or NULL: the exact backend's
 * loops run (the same bits, slower).  f32 and bf16 have both ISAs' tiles;
 * FP8 blocks the AVX2 one (codes widened in integer steps), which AVX-512
 * CPUs run too; f16 none yet. */
static tile_fn *tile_of(const mr_backend *be, mr_tensor_type type)
{
    if (type == MR_TENSOR_F8_BLOCKS)
        return mr_fast_has_avx2(be) ? mr_avx2_tile : NULL;
    if (type != MR_TENSOR_F32 && type != MR_TENSOR_BF16)
        return NULL;
    return mr_fast_avx512(be) ? avx512_tile : mr_fast_avx2(be) ? mr_avx2_tile : NULL;
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

/* Where a block's input rows are: x stepping by ld_x, or one pointer each. */
typedef struct {
    const float *x;
    size_t ld_x;
    const float *const *rows;
} row_source;

static const float *source_row(const row_source *src, int r)
{
    return src->rows ? src->rows[r] : src->x + (size_t)r * src->ld_x;
}

/* out[r][c] = x[r] · w[c] for r < rows, c < cols; out steps by ld_out, w
 * by k_len. */
static void matmul_block(tile_fn *run_tile, float *out, size_t ld_out, const row_source *src,
                         int rows, const void *w, mr_tensor_type type, int cols, int k_len)
{
    for (int r0 = 0; r0 < rows;) {
        int tile_rows = rows - r0 >= 4 ? 4 : rows - r0 >= 2 ? 2 : 1, tile_cols = TILE / tile_rows;
        const float *xr[MAX_TILE_ROWS];
        for (int i = 0; i < tile_rows; i++)
            xr[i] = source_row(src, r0 + i);
        for (int c0 = 0; c0 < cols; c0 += tile_cols) {
            const void *wc[TILE];
            for (int j = 0; j < tile_cols; j++)
                wc[j] = mr_exact_weight_row(w, type, (size_t)min_int(c0 + j, cols - 1), k_len);
            float t[TILE];
            run_tile(t, xr, wc, tile_rows, type, k_len);
            for (int i = 0; i < tile_rows; i++)
                for (int j = 0; j < min_int(tile_cols, cols - c0); j++)
                    out[(size_t)(r0 + i) * ld_out + (size_t)(c0 + j)] = t[i * tile_cols + j];
        }
        r0 += tile_rows;
    }
}

/* Columns per work item: as many widest tiles as keep the item's weights within
 * BLOCK_WEIGHT_BYTES, at least one tile. */
static int block_cols(int k_len, mr_tensor_type type)
{
    size_t row_bytes = (size_t)k_len * mr_tensor_type_size(type);
    size_t tiles = BLOCK_WEIGHT_BYTES / (row_bytes * TILE);
    return (int)(tiles ? tiles : 1) * TILE;
}

static int blocks_of(int n, int block)
{
    return (n + block - 1) / block;
}

/* matmul_heads' work (heads 1, stride 0: matmul's): per head h, out's
 * head h of each row = x's head h of the row times the weight rows from
 * h * head_stride_rows, in items of (row block, head, column block). */
static void matmul_heads(mr_backend *be, tile_fn *run_tile, float *out, const float *x,
                         const void *w, mr_tensor_type type, int rows, int heads, int out_dim,
                         int in_dim, int head_stride_rows)
{
    int cols = block_cols(in_dim, type);
    int col_blocks = blocks_of(out_dim, cols), row_blocks = blocks_of(rows, BLOCK_ROWS);
    size_t ld_x = (size_t)heads * (size_t)in_dim, ld_out = (size_t)heads * (size_t)out_dim;
#pragma omp parallel for num_threads(be->threads) schedule(dynamic)
    for (int item = 0; item < col_blocks * heads * row_blocks; item++) {
        int c0 = item % col_blocks * cols, h = item / col_blocks % heads;
        int r0 = item / col_blocks / heads * BLOCK_ROWS;
        row_source src = {x + (size_t)r0 * ld_x + (size_t)h * (size_t)in_dim, ld_x, NULL};
        size_t w_row = (size_t)h * (size_t)head_stride_rows + (size_t)c0;
        matmul_block(run_tile, out + (size_t)r0 * ld_out + (size_t)h * (size_t)out_dim + (size_t)c0,
                     ld_out, &src, min_int(BLOCK_ROWS, rows - r0),
                     mr_exact_weight_row(w, type, w_row, in_dim), type,
                     min_int(cols, out_dim - c0), in_dim);
    }
}

int mr_fast_matmul(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                   int rows, int out_dim, int in_dim)
{
    tile_fn *run_tile = tile_of(be, type);
    if (!run_tile)
        return mr_exact_matmul(be, out, x, w, type, rows, out_dim, in_dim);
    int rc = mr_kernels_check_matmul(be, rows, out_dim, in_dim);
    if (rc == MR_KERNELS_OK)
        matmul_heads(be, run_tile, out, x, w, type, rows, 1, out_dim, in_dim, 0);
    return rc;
}

int mr_fast_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                         mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                         int head_stride_rows)
{
    tile_fn *run_tile = tile_of(be, type);
    if (!run_tile)
        return mr_exact_matmul_heads(be, out, x, w, type, rows, heads, out_dim, in_dim,
                                     head_stride_rows);
    int rc = mr_kernels_check_matmul_heads(be, rows, heads, out_dim, in_dim, head_stride_rows);
    if (rc == MR_KERNELS_OK)
        matmul_heads(be, run_tile, out, x, w, type, rows, heads, out_dim, in_dim,
                     head_stride_rows);
    return rc;
}

/* gate = silu(gate) * up = gate / (1 + e^-gate) * up, lane by lane. */
MR_AVX512 static void silu_mul(float *gate, const float *up, int n)
{
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : mr_tail_mask(n - j);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + j);
        __m512 e = mr_exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(gate + j, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + j)));
    }
}

/* Phase 1 fills gate and up ([rows][inter]) and turns gate into
 * silu(gate) * up; phase 2 multiplies that by down.  Items are (group,
 * column block), so a group of one row still spreads over the threads. */
int mr_fast_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g)
{
    int rc = mr_kernels_check_groups(be, g);
    if (rc != MR_KERNELS_OK)
        return rc;
    int rows = g->offsets[g->groups], hidden = g->hidden, inter = g->inter;
    size_t h_len = (size_t)rows * (size_t)inter;
    mr_cpu_fast *fast = be->impl;
    tile_fn *run_tile = tile_of(be, g->type);
    void (*silu)(float *, const float *, int) = fast->avx512 ? silu_mul : mr_avx2_silu_mul;
    float *gate = run_tile ? mr_cpu_scratch_get(&fast->expert, 2 * h_len * sizeof *gate + 1) : NULL;
    if (!gate) /* no vector ISA, or no memory: the exact loops need one row of scratch */
        return mr_exact_expert_ffn(be, out, x, g);
    float *up = gate + h_len;
    int cols1 = block_cols(hidden, g->type), cols2 = block_cols(inter, g->type);
    int blocks1 = blocks_of(inter, cols1), blocks2 = blocks_of(hidden, cols2);
#pragma omp parallel num_threads(be->threads)
    {
#pragma omp for schedule(dynamic)
        for (int item = 0; item < g->groups * blocks1; item++) {
            int e = item / blocks1, c0 = item % blocks1 * cols1;
            int r0 = g->offsets[e], n = g->offsets[e + 1] - r0, nc = min_int(cols1, inter - c0);
            if (n == 0)
                continue;
            size_t at = (size_t)r0 * (size_t)inter + (size_t)c0;
            row_source src = {g->x_rows ? NULL : x + (size_t)r0 * (size_t)hidden,
                              (size_t)hidden, g->x_rows ? g->x_rows + r0 : NULL};
            matmul_block(run_tile, gate + at, (size_t)inter, &src, n,
                         mr_exact_weight_row(g->gate[e], g->type, (size_t)c0, hidden), g->type, nc,
                         hidden);
            matmul_block(run_tile, up + at, (size_t)inter, &src, n,
                         mr_exact_weight_row(g->up[e], g->type, (size_t)c0, hidden), g->type, nc,
                         hidden);
            for (int r = 0; r < n; r++)
                silu(gate + at + (size_t)r * (size_t)inter, up + at + (size_t)r * (size_t)inter,
                     nc);
        }
#pragma omp for schedule(dynamic)
        for (int item = 0; item < g->groups * blocks2; item++) {
            int e = item / blocks2, c0 = item % blocks2 * cols2;
            int r0 = g->offsets[e], n = g->offsets[e + 1] - r0;
            if (n == 0)
                continue;
            row_source src = {gate + (size_t)r0 * (size_t)inter, (size_t)inter, NULL};
            matmul_block(run_tile, out + (size_t)r0 * (size_t)hidden + (size_t)c0, (size_t)hidden, &src,
                         n,
                         mr_exact_weight_row(g->down[e], g->type, (size_t)c0, inter), g->type,
                         min_int(cols2, hidden - c0), inter);
        }
    }
    return MR_KERNELS_OK;
}
