/*
 * The machine's f32 FMA peak, measured rather than looked up: a loop of
 * independent AVX-512 fused multiply-adds on `threads` threads, best of
 * three.  Benchmarks print their GFLOP/s next to it.
 */
#ifndef MR_BENCH_FMA_PEAK_H
#define MR_BENCH_FMA_PEAK_H

#include <immintrin.h>
#include <omp.h>

#define MR_FMA_CHAINS 16 /* independent accumulators: enough to hide FMA latency */
#define MR_FMA_ITERS (1 << 24)

__attribute__((target("avx512f"))) static float mr_bench_fma_loop(void)
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

/* GFLOP/s of `threads` threads each running the FMA loop; 0 without AVX-512. */
static double mr_bench_fma_peak_gflops(int threads)
{
    if (!__builtin_cpu_supports("avx512f"))
        return 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        volatile float sink = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
        {
            float s = mr_bench_fma_loop();
#pragma omp atomic
            sink += s;
        }
        double seconds = omp_get_wtime() - t0;
        double gflops = (double)threads * MR_FMA_ITERS * MR_FMA_CHAINS * 16 * 2 / seconds * 1e-9;
        best = gflops > best ? gflops : best;
        (void)sink;
    }
    return best;
}

#endif
