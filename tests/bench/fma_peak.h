/*
 * The machine's f32 FMA peak and memory read bandwidth, measured rather
 * than looked up.  The peak: a loop of independent fused multiply-adds on
 * `threads` threads, best of three, in AVX-512 where the CPU has it, else
 * AVX2 (half the lanes).  The bandwidth: `threads` threads summing halves
 * of a 512 MiB buffer, best of three.  Benchmarks print their GFLOP/s and
 * GB/s next to these.
 */
#ifndef MR_BENCH_FMA_PEAK_H
#define MR_BENCH_FMA_PEAK_H

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>

#define MR_FMA_CHAINS 16 /* independent accumulators: enough to hide FMA latency */
#define MR_FMA_ITERS (1 << 24)

__attribute__((target("avx512f"))) static float mr_bench_fma_loop512(void)
{
    __m512 acc[MR_FMA_CHAINS];
    for (int i = 0; i < MR_FMA_CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
    for (int it = 0; it < MR_FMA_ITERS; it++)
#pragma GCC unroll 16
        for (int i = 0; i < MR_FMA_CHAINS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
    __m512 sum = acc[0];
    for (int i = 1; i < MR_FMA_CHAINS; i++)
        sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float mr_bench_fma_loop256(void)
{
    __m256 acc[MR_FMA_CHAINS];
    for (int i = 0; i < MR_FMA_CHAINS; i++)
        acc[i] = _mm256_set1_ps((float)i);
    const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
    for (int it = 0; it < MR_FMA_ITERS; it++)
#pragma GCC unroll 16
        for (int i = 0; i < MR_FMA_CHAINS; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
    __m256 sum = acc[0];
    for (int i = 1; i < MR_FMA_CHAINS; i++)
        sum = _mm256_add_ps(sum, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    return lanes[0] + lanes[7];
}

/* GFLOP/s of `threads` threads each running the FMA loop; 0 without
 * AVX-512 or AVX2 and FMA. */
static double mr_bench_fma_peak_gflops(int threads)
{
    int lanes = __builtin_cpu_supports("avx512f")                                     ? 16
                : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 8
                                                                                  : 0;
    if (!lanes)
        return 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        volatile float sink = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
        {
            float s = lanes == 16 ? mr_bench_fma_loop512() : mr_bench_fma_loop256();
#pragma omp atomic
            sink += s;
        }
        double seconds = omp_get_wtime() - t0;
        double gflops =
            (double)threads * MR_FMA_ITERS * MR_FMA_CHAINS * lanes * 2 / seconds * 1e-9;
        best = gflops > best ? gflops : best;
        (void)sink;
    }
    return best;
}

#define MR_BW_BYTES ((size_t)512 << 20)

/* Four 8-lane sums in flight: AVX2, which every CPU the cpu backend
 * vectorises on has, reads at memory speed as well as AVX-512 does. */
__attribute__((target("avx2"))) static float mr_bench_sum_floats(const float *p, size_t n)
{
    __m256 acc[4];
    for (int i = 0; i < 4; i++)
        acc[i] = _mm256_setzero_ps();
    for (size_t i = 0; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(p + i + 8 * j));
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]),
                                          _mm256_add_ps(acc[2], acc[3])));
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

/* GB/s of `threads` threads reading halves of a buffer far larger than
 * the caches; 0 without the memory for it. */
static double mr_bench_read_bandwidth(int threads)
{
    size_t n = MR_BW_BYTES / sizeof(float);
    float *buf = malloc(MR_BW_BYTES);
    if (!buf)
        return 0;
    for (size_t i = 0; i < n; i++)
        buf[i] = 1.0f;
    volatile float sink = 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
#pragma omp parallel for num_threads(threads)
        for (int part = 0; part < threads; part++) {
            float s = mr_bench_sum_floats(buf + n / threads * part, n / threads);
#pragma omp atomic
            sink += s;
        }
        double gbs = MR_BW_BYTES / (omp_get_wtime() - t0) * 1e-9;
        best = gbs > best ? gbs : best;
    }
    (void)sink;
    free(buf);
    return best;
}

#endif
