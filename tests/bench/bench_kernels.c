/*
 * Kernel throughput against the machine's own FMA peak and memory bandwidth.
 *
 * The peak is a loop of independent AVX-512 FMAs (16 accumulators, so
 * latency never stalls it) on 1 and 2 threads; the bandwidth, 2 threads
 * summing a 512 MiB buffer front to back.  Then, on 2 threads of the "cpu"
 * backend with bf16 weights, the matmuls and the grouped expert FFN of the
 * `small` preset (hidden 1024, 16 query / 4 KV heads of 64, 128 experts of
 * moe_inter 512, top-8, vocab 2048) at 1, 16, 64 and 256 tokens, and decode
 * attention (each token its own sequence).  Each shows GFLOP/s and % of the
 * 2-thread peak, and GB/s of weights (or KV cache) read and % of that
 * bandwidth: small batches are bound by memory, not FMAs (kernels with many
 * streams in flight can read faster than the plain loop, above 100%).
 *
 * Expert rows are tokens * 8, each token sent to 8 distinct random experts;
 * then every expert given the same 1 to 16 rows (tokens = rows / 8).
 * Weights are never reused from one call to the next (see weight_pool), as
 * in a forward pass, and sit in the backend's weight memory.  Runs in well
 * under a minute.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "tests/bench/fma_peak.h"

#define THREADS 2

/* A benchmark of a failing op measures nothing: stop with the message. */
static void op_ok(mr_backend *be, int rc)
{
    if (rc == MR_KERNELS_OK)
        return;
    fprintf(stderr, "%s: %s\n", be->ops->name, mr_backend_error(be));
    exit(1);
}
#define HIDDEN 1024
#define HEADS 16
#define KV_HEADS 4
#define HEAD_DIM 64
#define EXPERTS 128
#define MOE_INTER 512
#define TOP_K 8
#define VOCAB 2048
#define MIN_SECONDS 0.25

static const int TOKENS[] = {1, 16, 64, 256};
#define N_TOKENS (sizeof TOKENS / sizeof TOKENS[0])

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static float uniform(void)
{
    return (float)next_random() / 4294967296.0f * 2.0f - 1.0f;
}

static float *random_f32(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = uniform();
    return p;
}

static uint16_t *random_bf16(size_t n)
{
    uint16_t *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = mr_f32_to_bf16(uniform() * 0.05f);
    return p;
}

typedef void (*bench_fn)(void *ctx);

/* Seconds per call: one warm-up, then calls until MIN_SECONDS have passed. */
static double time_per_call(bench_fn fn, void *ctx)
{
    fn(ctx);
    int calls = 0;
    double t0 = now(), elapsed;
    do {
        fn(ctx);
        calls++;
        elapsed = now() - t0;
    } while (elapsed < MIN_SECONDS);
    return elapsed / calls;
}

static double peak2, bandwidth2;

/* `bytes`: the weights or KV cache one call reads. */
static void report(const char *op, const char *shape, int tokens, double flops, double bytes,
                   double seconds)
{
    double gflops = flops / seconds * 1e-9, gbs = bytes / seconds * 1e-9;
    printf("%-11s %-22s %6d %10.1f %9.1f %7.1f%% %8.1f %7.1f%%\n", op, shape, tokens, seconds * 1e6,
           gflops, 100.0 * gflops / peak2, gbs, 100.0 * gbs / bandwidth2);
}

/* The bf16 weights every case reads: far larger than the caches, and each
 * call takes the next slice, so weights come from memory as they do when a
 * forward pass walks through distinct layers and experts. */
typedef struct {
    const uint16_t *data;
    size_t len, next;
} weight_pool;

static const uint16_t *pool_take(weight_pool *pool, size_t n)
{
    if (pool->next + n > pool->len)
        pool->next = 0;
    const uint16_t *w = pool->data + pool->next;
    pool->next += n;
    return w;
}

typedef struct {
    mr_backend *be;
    weight_pool *pool;
    float *out, *x;
    int rows, out_dim, in_dim;
} matmul_case;

static void run_matmul(void *ctx)
{
    matmul_case *c = ctx;
    const uint16_t *w = pool_take(c->pool, (size_t)c->out_dim * c->in_dim);
    op_ok(c->be, c->be->ops->matmul(c->be, c->out, c->x, w, MR_TENSOR_BF16, c->rows,
                                    c->out_dim, c->in_dim));
}

static void bench_matmuls(mr_backend *be, weight_pool *pool, int tokens)
{
    static const struct {
        const char *name;
        int out_dim, in_dim;
    } shapes[] = {
        {"q/o 1024x1024", HEADS * HEAD_DIM, HIDDEN},
        {"k/v 1024->256", KV_HEADS * HEAD_DIM, HIDDEN},
        {"router 1024->128", EXPERTS, HIDDEN},
        {"lm_head 1024->2048", VOCAB, HIDDEN},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s].out_dim, k = shapes[s].in_dim;
        matmul_case c = {be,
                         pool,
                         malloc((size_t)tokens * n * sizeof(float)),
                         random_f32((size_t)tokens * k),
                         tokens,
                         n,
                         k};
        double seconds = time_per_call(run_matmul, &c);
        report("matmul", shapes[s].name, tokens, 2.0 * tokens * n * k, 2.0 * n * k, seconds);
        free(c.out);
        free(c.x);
    }
}

/* Routings a case cycles through, so even one token's 8 experts change
 * from call to call. */
#define ROUTES 16

typedef struct {
    mr_backend *be;
    float *out, *x;
    int32_t offsets[ROUTES][EXPERTS + 1];
    int call;
    mr_expert_groups groups;
} expert_case;

static void run_experts(void *ctx)
{
    expert_case *c = ctx;
    c->groups.offsets = c->offsets[c->call++ % ROUTES];
    op_ok(c->be, c->be->ops->expert_ffn(c->be, c->out, c->x, &c->groups));
}

/* Rows per expert when each of `tokens` tokens picks TOP_K distinct random
 * experts, as offsets; returns how many experts got rows. */
static int route(int tokens, int32_t *offsets)
{
    int counts[EXPERTS] = {0};
    for (int t = 0; t < tokens; t++) {
        int picked[TOP_K];
        for (int j = 0; j < TOP_K; j++) {
            int e, dup;
            do {
                e = (int)(next_random() % EXPERTS);
                dup = 0;
                for (int i = 0; i < j; i++)
                    dup |= picked[i] == e;
            } while (dup);
            picked[j] = e;
            counts[e]++;
        }
    }
    int used = 0;
    offsets[0] = 0;
    for (int e = 0; e < EXPERTS; e++) {
        offsets[e + 1] = offsets[e] + counts[e];
        used += counts[e] > 0;
    }
    return used;
}

/* A case of `rows` rows over the EXPERTS experts; the caller routes them. */
static expert_case *expert_case_new(mr_backend *be, int rows, const void *const *gate,
                                    const void *const *up, const void *const *down)
{
    expert_case *c = malloc(sizeof *c);
    *c = (expert_case){.be = be,
                       .out = malloc((size_t)rows * HIDDEN * sizeof(float)),
                       .x = random_f32((size_t)rows * HIDDEN),
                       .groups = {.groups = EXPERTS, .gate = gate, .up = up, .down = down,
                                  .type = MR_TENSOR_BF16, .hidden = HIDDEN, .inter = MOE_INTER}};
    return c;
}

static void expert_case_free(expert_case *c)
{
    free(c->out);
    free(c->x);
    free(c);
}

static void bench_experts(mr_backend *be, const void *const *gate, const void *const *up,
                          const void *const *down)
{
    for (size_t i = 0; i < N_TOKENS; i++) {
        int tokens = TOKENS[i], rows = tokens * TOP_K;
        expert_case *c = expert_case_new(be, rows, gate, up, down);
        double used = 0;
        for (int r = 0; r < ROUTES; r++)
            used += (double)route(tokens, c->offsets[r]) / ROUTES;
        double seconds = time_per_call(run_experts, c);
        char shape[64];
        snprintf(shape, sizeof shape, "%d rows, ~%.0f experts", rows, used);
        report("expert_ffn", shape, tokens, 6.0 * rows * HIDDEN * MOE_INTER,
               6.0 * used * HIDDEN * MOE_INTER, seconds);
        expert_case_free(c);
    }
}

/* Every expert given the same rows: how a tile height and its repeats
 * (rows past the last full tile) stream the weights, apart from the mix
 * that random routing deals. */
static void bench_experts_even(mr_backend *be, const void *const *gate, const void *const *up,
                               const void *const *down)
{
    static const int EACH[] = {1, 2, 3, 4, 5, 6, 8, 16};
    for (size_t i = 0; i < sizeof EACH / sizeof EACH[0]; i++) {
        int each = EACH[i], rows = each * EXPERTS;
        expert_case *c = expert_case_new(be, rows, gate, up, down);
        for (int r = 0; r < ROUTES; r++)
            for (int e = 0; e <= EXPERTS; e++)
                c->offsets[r][e] = e * each;
        double seconds = time_per_call(run_experts, c);
        char shape[64];
        snprintf(shape, sizeof shape, "%d rows each, 128 experts", each);
        report("expert_ffn", shape, rows / TOP_K, 6.0 * rows * HIDDEN * MOE_INTER,
               6.0 * EXPERTS * HIDDEN * MOE_INTER, seconds);
        expert_case_free(c);
    }
}

typedef struct {
    mr_backend *be;
    float *out, *q, *k_cache, *v_cache;
    mr_attention_args args;
} attention_case;

static void run_attention(void *ctx)
{
    attention_case *c = ctx;
    op_ok(c->be, c->be->ops->attention(c->be, c->out, c->q, c->k_cache, c->v_cache, &c->args));
}

/* Decode: every token of its own sequence at position `context` - 1. */
static void bench_attention(mr_backend *be, int tokens, int context)
{
    enum { BLOCK = 16 };
    int max_blocks = context / BLOCK, n_blocks = tokens * max_blocks;
    size_t kv = (size_t)n_blocks * BLOCK * KV_HEADS * HEAD_DIM;
    int32_t *seq = malloc((size_t)tokens * sizeof *seq),
            *pos = malloc((size_t)tokens * sizeof *pos);
    int32_t *table = malloc((size_t)n_blocks * sizeof *table);
    for (int t = 0; t < tokens; t++) {
        seq[t] = t;
        pos[t] = context - 1;
    }
    for (int b = 0; b < n_blocks; b++)
        table[b] = b;
    attention_case c = {be,
                        malloc((size_t)tokens * HEADS * HEAD_DIM * sizeof(float)),
                        random_f32((size_t)tokens * HEADS * HEAD_DIM),
                        random_f32(kv),
                        random_f32(kv),
                        {tokens, HEADS, KV_HEADS, HEAD_DIM, BLOCK, max_blocks,
                         1.0f / sqrtf(HEAD_DIM), seq, pos, table, MR_TENSOR_F32}};
    double seconds = time_per_call(run_attention, &c);
    char shape[64];
    snprintf(shape, sizeof shape, "decode, context %d", context);
    report("attention", shape, tokens, 4.0 * tokens * HEADS * HEAD_DIM * context,
           8.0 * tokens * KV_HEADS * HEAD_DIM * context, seconds);
    free(c.out);
    free(c.q);
    free(c.k_cache);
    free(c.v_cache);
    free(seq);
    free(pos);
    free(table);
}

int main(void)
{
    double peak1 = mr_bench_fma_peak_gflops(1);
    peak2 = mr_bench_fma_peak_gflops(THREADS);
    bandwidth2 = mr_bench_read_bandwidth(THREADS);
    printf("FMA peak (%s, %d independent accumulators): 1 thread %.1f GFLOP/s, "
           "%d threads %.1f GFLOP/s\n",
           __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", MR_FMA_CHAINS, peak1, THREADS,
           peak2);
    printf("memory read bandwidth, %d threads: %.1f GB/s\n\n", THREADS, bandwidth2);

    char err[256];
    mr_backend *be;
    if (mr_backend_create("cpu", THREADS, &be, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    size_t expert_w = (size_t)MOE_INTER * HIDDEN;
    /* Into the backend's own weight memory (huge pages), as a model's
     * load puts them: malloc's 4 KiB pages read 5-15% slower.  Where the
     * backend has no room for a copy it reads host_weights itself, which
     * then lives to the end. */
    uint16_t *host_weights = random_bf16(3 * EXPERTS * expert_w);
    const void *mapped;
    op_ok(be, be->ops->map_weights(be, host_weights, 3 * EXPERTS * expert_w * sizeof *host_weights,
                                   &mapped));
    if (mapped != host_weights) {
        free(host_weights);
        host_weights = NULL;
    }
    const uint16_t *weights = mapped;
    const void *gate[EXPERTS], *up[EXPERTS], *down[EXPERTS];
    for (int e = 0; e < EXPERTS; e++) {
        gate[e] = weights + (3 * (size_t)e) * expert_w;
        up[e] = weights + (3 * (size_t)e + 1) * expert_w;
        down[e] = weights + (3 * (size_t)e + 2) * expert_w;
    }

    printf("backend \"cpu\", %d threads, bf16 weights\n", THREADS);
    printf("%-11s %-22s %6s %10s %9s %8s %8s %8s\n", "op", "shape", "tokens", "us/call", "GFLOP/s",
           "of peak", "GB/s", "of bw");
    weight_pool pool = {weights, 3 * EXPERTS * expert_w, 0};
    for (size_t i = 0; i < N_TOKENS; i++)
        bench_matmuls(be, &pool, TOKENS[i]);
    bench_experts(be, gate, up, down);
    bench_experts_even(be, gate, up, down);
    bench_attention(be, 64, 1024);
    bench_attention(be, 256, 256);
    mr_backend_free(be);
    free(host_weights);
    return 0;
}
