/*
 * Matmul, matmul per head (a weight slice each) and grouped expert FFN on
 * AVX-512: out = x · Wᵀ with W in the Linear layout, f32 or bf16.
 *
 * A tile is `rows` (4, 2 or 1) activation rows × 16/rows weight rows: 16
 * accumulators, each a dot product in the fixed order of
 * cpu_fast_internal.h, reduced together by mr_reduce16x16; AVX-512 also
 * has 6-row tiles of 4 weight rows (24 accumulators, of its 32 registers).
 * Per step of 16 along k a tile loads and widens its weight vectors once
 * for all its rows, so taller tiles reuse weights more and spend fewer
 * instructions widening bf16 per FMA; one-row tiles (one token sent to an
 * expert) waste no FMAs on padding.  A partial tile (the last columns)
 * repeats its last column, and 5 or 3 rows take a 6- or 4-row tile that
 * repeats its last row (one sweep of the weights rather than two); the
 * repeats are thrown away, so every output element comes out the same bits
 * in any tile, batch or thread.
 *
 * A work item is a block of columns (its weights sized to stay in L2) times
 * a block of rows; inside, each row tile stays in L1 while the block's
 * weights stream past it.  A thread claims its next item before it runs
 * the current one and prefetches the next item's weights over the current
 * block's tiles, so memory streams the next block while the FMAs work on
 * this one: with a few rows per expert (decode) a block had waited on
 * memory and then computed, one after the other.
 */
#include <omp.h>
#include <string.h>

#include "kernels/cpu_fast_internal.h"

#define TILE 16         /* accumulators of a 4-, 2- or 1-row tile: rows × cols */
#define MAX_TILE_OUT 24 /* a 6-row tile's: 6 rows × 4 cols (AVX-512 only) */
#define MAX_TILE_ROWS 6
#define BLOCK_WEIGHT_BYTES (128 * 1024)
#define BLOCK_ROWS 64
#define PREFETCH_AHEAD 512 /* bytes ahead in the same row, when no next block is known */

/* Weight rows a tile of `rows` activation rows reads at once. */
static inline int tile_cols_of(int rows)
{
    return rows == 6 ? 4 : TILE / rows;
}

MR_AVX512_INLINE void tile_step(__m512 acc[MAX_TILE_OUT], const float *const *x,
                                const void *const *w, const void *const *ahead, bool fetch,
                                int rows, mr_tensor_type type, int k, __mmask16 mask)
{
    size_t at = (size_t)k * mr_tensor_type_size(type);
    int cols = tile_cols_of(rows);
    __m512 xv[MAX_TILE_ROWS];
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++)
        xv[r] = _mm512_maskz_loadu_ps(mask, x[r] + k);
#pragma GCC unroll 16
    for (int c = 0; c < cols; c++) {
        if (fetch)
            _mm_prefetch((const char *)ahead[c] + at, _MM_HINT_T0);
        __m512 wv = mr_load16(w[c], type, k, mask);
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++)
            acc[r * cols + c] = _mm512_fmadd_ps(xv[r], wv, acc[r * cols + c]);
    }
}

/* out[r * cols + c] = x[r] · w[c] for the tile's rows × tile_cols_of(rows)
 * cols; as it reads element k of w[c] it prefetches the same bytes of
 * ahead[c], up to ahead_len bytes. */
MR_AVX512_INLINE void tile(float out[MAX_TILE_OUT], const float *const *x, const void *const *w,
                           const void *const *ahead, size_t ahead_len, int rows,
                           mr_tensor_type type, int k_len)
{
    __m512 acc[MAX_TILE_OUT];
    int n_acc = rows * tile_cols_of(rows);
#pragma GCC unroll 24
    for (int i = 0; i < n_acc; i++)
        acc[i] = _mm512_setzero_ps();
    /* Steps that prefetch, then steps that do not: no test in the loop. */
    size_t step_bytes = 16 * mr_tensor_type_size(type);
    int fetching = (int)((ahead_len + step_bytes - 1) / step_bytes * 16), k = 0;
    for (; k + 16 <= k_len && k < fetching; k += 16)
        tile_step(acc, x, w, ahead, true, rows, type, k, (__mmask16)0xffff);
    for (; k + 16 <= k_len; k += 16)
        tile_step(acc, x, w, ahead, false, rows, type, k, (__mmask16)0xffff);
    if (k < k_len)
        tile_step(acc, x, w, ahead, false, rows, type, k, mr_tail_mask(k_len - k));
    _mm512_storeu_ps(out, mr_reduce16x16(acc));
    if (n_acc > TILE) { /* a 6-row tile's last 8, by the same tree */
        __m512 rest[TILE];
#pragma GCC unroll 16
        for (int i = 0; i < TILE; i++)
            rest[i] = i < n_acc - TILE ? acc[TILE + i] : _mm512_setzero_ps();
        _mm256_storeu_ps(out + TILE, _mm512_castps512_ps256(mr_reduce16x16(rest)));
    }
}

/* One instance per tile height and weight type, so each is fully unrolled. */
MR_AVX512_INLINE void tile_of_height(float out[MAX_TILE_OUT], const float *const *x,
                                     const void *const *w, const void *const *ahead,
                                     size_t ahead_len, int rows, mr_tensor_type type, int k_len)
{
    if (rows == 6)
        tile(out, x, w, ahead, ahead_len, 6, type, k_len);
    else if (rows == 4)
        tile(out, x, w, ahead, ahead_len, 4, type, k_len);
    else if (rows == 2)
        tile(out, x, w, ahead, ahead_len, 2, type, k_len);
    else
        tile(out, x, w, ahead, ahead_len, 1, type, k_len);
}

MR_AVX512 static void avx512_tile(float out[MAX_TILE_OUT], const float *const *x,
                                  const void *const *w, const void *const *ahead,
                                  size_t ahead_len, int rows, mr_tensor_type type, int k_len)
{
    if (type == MR_TENSOR_BF16)
        tile_of_height(out, x, w, ahead, ahead_len, rows, MR_TENSOR_BF16, k_len);
    else
        tile_of_height(out, x, w, ahead, ahead_len, rows, MR_TENSOR_F32, k_len);
}

/* One tile of either ISA (cpu_avx2.c keeps the same lanes and tree). */
typedef void tile_fn(float out[MAX_TILE_OUT], const float *const *x, const void *const *w,
                     const void *const *ahead, size_t ahead_len, int rows, mr_tensor_type type,
                     int k_len);

/* A tile routine and the most rows its tiles take. */
typedef struct {
    tile_fn *run;
    int max_rows;
} tile_kind;

/* This CPU's tile for weights of `type`, or none (run NULL): the exact
 * backend's loops run (the same bits, slower).  f32 and bf16 have both
 * ISAs' tiles; FP8 blocks the AVX2 one (codes widened in integer steps),
 * which AVX-512 CPUs run too; f16 none yet.  Only AVX-512's 32 registers
 * hold a 6-row tile's 24 accumulators. */
static tile_kind tile_of(const mr_backend *be, mr_tensor_type type)
{
    tile_kind none = {NULL, 0}, avx2 = {mr_avx2_tile, 4}, avx512 = {avx512_tile, 6};
    if (type == MR_TENSOR_F8_BLOCKS)
        return mr_fast_has_avx2(be) ? avx2 : none;
    if (type != MR_TENSOR_F32 && type != MR_TENSOR_BF16)
        return none;
    return mr_fast_avx512(be) ? avx512 : mr_fast_avx2(be) ? avx2 : none;
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

static int blocks_of(int n, int block)
{
    return (n + block - 1) / block;
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

/* A tile's outputs t (rows × tile_cols) into out at rows stepping by
 * ld_out, of which only real_rows × real_cols are kept.  Whole rows of a
 * whole tile go in copies of a size known here, which compile to a vector
 * move each (an element at a time, the expert FFN at 128 rows an expert
 * ran 4-7% slower). */
static inline __attribute__((always_inline)) void copy_rows(float *out, size_t ld_out,
                                                             const float *t, int rows, int n)
{
    for (int i = 0; i < rows; i++)
        memcpy(out + (size_t)i * ld_out, t + i * n, (size_t)n * sizeof *t);
}

static void store_tile(float *out, size_t ld_out, const float *t, int real_rows, int real_cols,
                       int tile_cols)
{
    if (real_cols == tile_cols && tile_cols == 4)
        copy_rows(out, ld_out, t, real_rows, 4);
    else if (real_cols == tile_cols && tile_cols == 8)
        copy_rows(out, ld_out, t, real_rows, 8);
    else if (real_cols == tile_cols && tile_cols == 16)
        copy_rows(out, ld_out, t, real_rows, 16);
    else
        for (int i = 0; i < real_rows; i++)
            for (int j = 0; j < real_cols; j++)
                out[(size_t)i * ld_out + (size_t)j] = t[i * tile_cols + j];
}

/* The tile for `left` rows still to go: 5 take a 6-row tile and 3 a 4-row
 * one, each repeating its last row (one sweep of the block rather than
 * two). */
static int tile_height(const tile_kind *kind, int left)
{
    if (left >= 5 && kind->max_rows >= 6)
        return 6;
    return left >= 3 ? 4 : left;
}

/* out[r][c] = x[r] · w[c] for r < rows, c < cols; out steps by ld_out, w
 * by k_len.  Meanwhile it fetches `next` (next_bytes: the weights this
 * thread reads after this block, or NULL) into cache, spread evenly over
 * all its tiles, so memory works on the next block while the FMAs work on
 * this one (which the previous block fetched). */
static void matmul_block(const tile_kind *kind, float *out, size_t ld_out, const row_source *src,
                         int rows, const void *w, mr_tensor_type type, int cols, int k_len,
                         const void *next, size_t next_bytes)
{
    int tiles = 0;
    for (int r0 = 0; r0 < rows; r0 += tile_height(kind, rows - r0))
        tiles += blocks_of(cols, tile_cols_of(tile_height(kind, rows - r0)));
    size_t row_bytes = mr_tensor_row_bytes(type, k_len);
    int tile_index = 0;
    for (int r0 = 0; r0 < rows;) {
        int tile_rows = tile_height(kind, rows - r0), tile_cols = tile_cols_of(tile_rows);
        int real_rows = min_int(tile_rows, rows - r0);
        const float *xr[MAX_TILE_ROWS];
        for (int i = 0; i < tile_rows; i++)
            xr[i] = source_row(src, min_int(r0 + i, rows - 1));
        for (int c0 = 0; c0 < cols; c0 += tile_cols, tile_index++) {
            const void *wc[TILE], *ahead[TILE];
            /* This tile's share of next, [first, first + share), in one
             * stream per weight row it reads, each no longer than a row. */
            size_t first = next_bytes * (size_t)tile_index / (size_t)tiles;
            size_t share = next_bytes * (size_t)(tile_index + 1) / (size_t)tiles - first;
            size_t stream = (share + (size_t)tile_cols - 1) / (size_t)tile_cols;
            for (int j = 0; j < tile_cols; j++) {
                wc[j] = mr_exact_weight_row(w, type, (size_t)min_int(c0 + j, cols - 1), k_len);
                ahead[j] = next ? (const char *)next + first + (size_t)j * stream
                                : (const char *)wc[j] + PREFETCH_AHEAD;
            }
            float t[MAX_TILE_OUT];
            kind->run(t, xr, wc, ahead, next ? stream : row_bytes, tile_rows, type, k_len);
            store_tile(out + (size_t)r0 * ld_out + (size_t)c0, ld_out, t, real_rows,
                       min_int(tile_cols, cols - c0), tile_cols);
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

/* Work items are claimed from a shared counter, one ahead: a thread
 * claims the item it runs next before it runs the current one, so it
 * knows whose weights to fetch while it computes (OpenMP's dynamic
 * schedule never says).  With no more items than threads, claiming ahead
 * would leave a thread idle, so each claims one at a time.  Returns an
 * item; `items` or more means none is left. */
static int claim(int *counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

/* The item a thread runs after the current one, when claimed ahead. */
static int claim_ahead(int *counter, int items, int threads)
{
    return items > threads ? claim(counter) : items;
}

/* The item a thread runs after the current one. */
static int claim_after(int *counter, int next, int items, int threads)
{
    return items > threads ? next : claim(counter);
}

/* matmul_heads' item `item` of (row block, head, column block): its head
 * and the first of its columns. */
static void heads_item(int item, int col_blocks, int cols, int heads, int *h, int *c0)
{
    *c0 = item % col_blocks * cols;
    *h = item / col_blocks % heads;
}

/* matmul_heads' work (heads 1, stride 0: matmul's): per head h, out's
 * head h of each row = x's head h of the row times the weight rows from
 * h * head_stride_rows, in items of (row block, head, column block). */
static void matmul_heads(mr_backend *be, const tile_kind *kind, float *out, const float *x,
                         const void *w, mr_tensor_type type, int rows, int heads, int out_dim,
                         int in_dim, int head_stride_rows)
{
    int cols = block_cols(in_dim, type);
    int col_blocks = blocks_of(out_dim, cols), row_blocks = blocks_of(rows, BLOCK_ROWS);
    int items = col_blocks * heads * row_blocks, counter = 0;
    size_t ld_x = (size_t)heads * (size_t)in_dim, ld_out = (size_t)heads * (size_t)out_dim;
    size_t row_bytes = mr_tensor_row_bytes(type, in_dim);
#pragma omp parallel num_threads(be->threads)
    for (int item = claim(&counter), next; item < items;
         item = claim_after(&counter, next, items, be->threads)) {
        next = claim_ahead(&counter, items, be->threads);
        int h, c0, r0 = item / col_blocks / heads * BLOCK_ROWS;
        heads_item(item, col_blocks, cols, heads, &h, &c0);
        const void *next_w = NULL;
        size_t next_bytes = 0;
        if (next < items) {
            int next_h, next_c0;
            heads_item(next, col_blocks, cols, heads, &next_h, &next_c0);
            next_w = mr_exact_weight_row(
                w, type, (size_t)next_h * (size_t)head_stride_rows + (size_t)next_c0, in_dim);
            next_bytes = (size_t)min_int(cols, out_dim - next_c0) * row_bytes;
        }
        row_source src = {x + (size_t)r0 * ld_x + (size_t)h * (size_t)in_dim, ld_x, NULL};
        size_t w_row = (size_t)h * (size_t)head_stride_rows + (size_t)c0;
        matmul_block(kind, out + (size_t)r0 * ld_out + (size_t)h * (size_t)out_dim + (size_t)c0,
                     ld_out, &src, min_int(BLOCK_ROWS, rows - r0),
                     mr_exact_weight_row(w, type, w_row, in_dim), type,
                     min_int(cols, out_dim - c0), in_dim, next_w, next_bytes);
    }
}

int mr_fast_matmul(mr_backend *be, float *out, const float *x, const void *w, mr_tensor_type type,
                   int rows, int out_dim, int in_dim)
{
    tile_kind kind = tile_of(be, type);
    if (!kind.run)
        return mr_exact_matmul(be, out, x, w, type, rows, out_dim, in_dim);
    int rc = mr_kernels_check_matmul(be, rows, out_dim, in_dim);
    if (rc == MR_KERNELS_OK)
        matmul_heads(be, &kind, out, x, w, type, rows, 1, out_dim, in_dim, 0);
    return rc;
}

int mr_fast_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                         mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                         int head_stride_rows)
{
    tile_kind kind = tile_of(be, type);
    if (!kind.run)
        return mr_exact_matmul_heads(be, out, x, w, type, rows, heads, out_dim, in_dim,
                                     head_stride_rows);
    int rc = mr_kernels_check_matmul_heads(be, rows, heads, out_dim, in_dim, head_stride_rows);
    if (rc == MR_KERNELS_OK)
        matmul_heads(be, &kind, out, x, w, type, rows, heads, out_dim, in_dim,
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

/* An expert FFN item's weights in one of its matrices (gate, up or down,
 * each rows of k_len): item = (busy group, block of `cols` rows), NULL
 * past the last item.  *bytes, where asked, gets their size. */
static const void *item_weights(const mr_expert_groups *g, const void *const *matrices,
                                const int *busy, int item, int items, int blocks, int cols,
                                int rows, int k_len, size_t *bytes)
{
    int c0 = item % blocks * cols;
    if (bytes)
        *bytes = item < items ? (size_t)min_int(cols, rows - c0) *
                                    mr_tensor_row_bytes(g->type, k_len)
                              : 0;
    if (item >= items)
        return NULL;
    return mr_exact_weight_row(matrices[busy[item / blocks]], g->type, (size_t)c0, k_len);
}

/* Phase 1 fills gate and up ([rows][inter]) and turns gate into
 * silu(gate) * up; phase 2 multiplies that by down.  Items are (group,
 * column block) of the groups that have rows, so a group of one row still
 * spreads over the threads; each thread fetches the weights of its next
 * item while it computes the current one. */
int mr_fast_expert_ffn(mr_backend *be, float *out, const float *x, const mr_expert_groups *g)
{
    int rc = mr_kernels_check_groups(be, g);
    if (rc != MR_KERNELS_OK)
        return rc;
    int rows = g->offsets[g->groups], hidden = g->hidden, inter = g->inter;
    size_t h_len = (size_t)rows * (size_t)inter;
    mr_cpu_fast *fast = be->impl;
    tile_kind kind = tile_of(be, g->type);
    void (*silu)(float *, const float *, int) = fast->avx512 ? silu_mul : mr_avx2_silu_mul;
    float *gate = kind.run ? mr_cpu_scratch_get(&fast->expert, 2 * h_len * sizeof *gate +
                                                               (size_t)g->groups * sizeof(int) + 1)
                           : NULL;
    if (!gate) /* no vector ISA, or no memory: the exact loops need one row of scratch */
        return mr_exact_expert_ffn(be, out, x, g);
    float *up = gate + h_len;
    /* The groups with rows: items skip the empty ones, so the item a thread
     * claims ahead always has weights to fetch. */
    int *busy = (int *)(up + h_len), n_busy = 0;
    for (int e = 0; e < g->groups; e++)
        if (g->offsets[e + 1] > g->offsets[e])
            busy[n_busy++] = e;
    int cols1 = block_cols(hidden, g->type), cols2 = block_cols(inter, g->type);
    int blocks1 = blocks_of(inter, cols1), blocks2 = blocks_of(hidden, cols2);
    int items1 = n_busy * blocks1, items2 = n_busy * blocks2, counter1 = 0, counter2 = 0;
#pragma omp parallel num_threads(be->threads)
    {
        for (int item = claim(&counter1), next; item < items1;
             item = claim_after(&counter1, next, items1, be->threads)) {
            next = claim_ahead(&counter1, items1, be->threads);
            int e = busy[item / blocks1], c0 = item % blocks1 * cols1;
            int r0 = g->offsets[e], n = g->offsets[e + 1] - r0, nc = min_int(cols1, inter - c0);
            size_t up_bytes, next_bytes;
            const void *gate_w = item_weights(g, g->gate, busy, item, items1, blocks1, cols1,
                                              inter, hidden, NULL);
            const void *up_w = item_weights(g, g->up, busy, item, items1, blocks1, cols1, inter,
                                            hidden, &up_bytes);
            const void *next_w = item_weights(g, g->gate, busy, next, items1, blocks1, cols1,
                                              inter, hidden, &next_bytes);
            size_t at = (size_t)r0 * (size_t)inter + (size_t)c0;
            row_source src = {g->x_rows ? NULL : x + (size_t)r0 * (size_t)hidden,
                              (size_t)hidden, g->x_rows ? g->x_rows + r0 : NULL};
            matmul_block(&kind, gate + at, (size_t)inter, &src, n, gate_w, g->type, nc, hidden,
                         up_w, up_bytes);
            matmul_block(&kind, up + at, (size_t)inter, &src, n, up_w, g->type, nc, hidden,
                         next_w, next_bytes);
            for (int r = 0; r < n; r++)
                silu(gate + at + (size_t)r * (size_t)inter, up + at + (size_t)r * (size_t)inter,
                     nc);
        }
#pragma omp barrier
        for (int item = claim(&counter2), next; item < items2;
             item = claim_after(&counter2, next, items2, be->threads)) {
            next = claim_ahead(&counter2, items2, be->threads);
            int e = busy[item / blocks2], c0 = item % blocks2 * cols2;
            int r0 = g->offsets[e], n = g->offsets[e + 1] - r0;
            size_t next_bytes;
            const void *down_w = item_weights(g, g->down, busy, item, items2, blocks2, cols2,
                                              hidden, inter, NULL);
            const void *next_w = item_weights(g, g->down, busy, next, items2, blocks2, cols2,
                                              hidden, inter, &next_bytes);
            row_source src = {gate + (size_t)r0 * (size_t)inter, (size_t)inter, NULL};
            matmul_block(&kind, out + (size_t)r0 * (size_t)hidden + (size_t)c0, (size_t)hidden,
                         &src, n, down_w, g->type, min_int(cols2, hidden - c0), inter, next_w,
                         next_bytes);
        }
    }
    return MR_KERNELS_OK;
}
