/*
 * The machine's f32 FMA peak, measured rather than looked up: a loop of
 * independent fused multiply-adds, as wide as the CPU goes, on `threads`
 * threads.  Benchmarks print their GFLOP/s next to it.
 */
#ifndef MR_BENCH_FMA_PEAK_H
#define MR_BENCH_FMA_PEAK_H

#include <immintrin.h>
#include <omp.h>

#define MR_FMA_CHAINS 12 /* enough independent chains to hide FMA latency */

__attribute__((target("avx512f"))) static float mr_bench_fma_loop_avx512(long iters)
{
    __m512 acc[MR_FMA_CHAINS];
    for (int i = 0; i < MR_FMA_CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < MR_FMA_CHAINS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 sum = acc[0];
    for (int i = 1; i < MR_FMA_CHAINS; i++)
        sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

static double mr_bench_fma_peak_gflops(int threads)
{
    if (!__builtin_cpu_supports("avx512f"))
        return 0;
    const long iters = 20000000;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        volatile float sink = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
        {
            float s = mr_bench_fma_loop_avx512(iters);
#pragma omp atomic
            sink += s;
        }
        double t = omp_get_wtime() - t0;
        double gflops = (double)threads * iters * MR_FMA_CHAINS * 16 * 2 / t * 1e-9;
        best = gflops > best ? gflops : best;
        (void)sink;
    }
    return best;
}

#endif
