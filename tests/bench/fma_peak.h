/*
 * The machine's f32 FMA peak, measured rather than looked up: a loop of
 * independent fused multiply-adds on `threads` threads, best of three, in
 * AVX-512 where the CPU has it, else AVX2 (half the lanes).  Benchmarks
 * print their GFLOP/s next to it.
 */
#ifndef MR_BENCH_FMA_PEAK_H
#define MR_BENCH_FMA_PEAK_H

#include <immintrin.h>
#include <omp.h>

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

#endif
