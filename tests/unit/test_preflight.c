/* The verdicts of moerun preflight that need no hardware: the memory margin,
 * whether a rank's share of a model fits its GPU, and ibstat's width and
 * speed codes. */
#include <criterion/criterion.h>
#include <string.h>

#include "runner/preflight.h"

#define GIB (UINT64_C(1) << 30)

Test(preflight, memory_verdict_keeps_half_the_weights_spare)
{
    cr_assert_eq(mr_preflight_memory_verdict(100 * GIB, 10 * GIB), MR_PREFLIGHT_OK);
    cr_assert_eq(mr_preflight_memory_verdict(15 * GIB, 10 * GIB), MR_PREFLIGHT_OK);
    cr_assert_eq(mr_preflight_memory_verdict(15 * GIB - 1, 10 * GIB), MR_PREFLIGHT_WARN);
    cr_assert_eq(mr_preflight_memory_verdict(10 * GIB, 10 * GIB), MR_PREFLIGHT_WARN);
    cr_assert_eq(mr_preflight_memory_verdict(10 * GIB - 1, 10 * GIB), MR_PREFLIGHT_FAIL);
    cr_assert_eq(mr_preflight_memory_verdict(0, 1), MR_PREFLIGHT_FAIL);
    cr_assert_eq(mr_preflight_memory_verdict(3, 2), MR_PREFLIGHT_OK, "1.5 x 2 is 3");
    cr_assert_eq(mr_preflight_memory_verdict(4, 3), MR_PREFLIGHT_WARN, "1.5 x 3 is 4.5");
    cr_assert_eq(mr_preflight_memory_verdict(UINT64_MAX, UINT64_MAX / 2), MR_PREFLIGHT_OK,
                 "no overflow");
}

/* Qwen3-30B-A3B in bf16: 48 MoE layers of 128 experts of hidden 2048 and
 * inter 768; 2 GiB of tensors besides the experts; the default KV cache of
 * 4096 blocks of 16 tokens, 4 KV heads of 128, f32, K and V in 48 layers. */
#define EXPERT (UINT64_C(48) * 3 * 2048 * 768 * 2)
#define DENSE (2 * GIB)
#define KV (UINT64_C(4096) * 16 * 4 * 128 * 4 * 2 * 48)

static mr_preflight_gpu_need qwen3_30b(uint64_t slots)
{
    return (mr_preflight_gpu_need){.weights = DENSE + 128 * EXPERT, .expert = EXPERT,
                                   .experts = 128, .slots = slots, .kv_cache = KV};
}

Test(preflight, gpu_fit_counts_the_rank_s_own_experts_and_kv_cache)
{
    uint64_t weights, bytes;
    /* One rank holds every expert: 60.1 GB of weights and 12 GiB of KV
     * cache fit an H200 (141 GB) but not a 48 GiB card. */
    mr_preflight_gpu_need one = qwen3_30b(128);
    cr_assert_eq(mr_preflight_gpu_fit(&one, 141 * UINT64_C(1000000000), &weights, &bytes),
                 MR_PREFLIGHT_OK);
    cr_assert_eq(weights, DENSE + 128 * EXPERT);
    cr_assert_eq(bytes, DENSE + 128 * EXPERT + KV);
    cr_assert_eq(mr_preflight_gpu_fit(&one, 48 * GIB, &weights, &bytes), MR_PREFLIGHT_FAIL);
    cr_assert_eq(bytes, DENSE + 128 * EXPERT + KV, "the figure comes with the FAIL");
    /* Eight ranks hold 16 slots each: 20.8 GiB fits the same card. */
    mr_preflight_gpu_need eight = qwen3_30b(16);
    cr_assert_eq(mr_preflight_gpu_fit(&eight, 48 * GIB, &weights, &bytes), MR_PREFLIGHT_OK);
    cr_assert_eq(weights, DENSE + 16 * EXPERT);
    cr_assert_eq(bytes, DENSE + 16 * EXPERT + KV);
    /* Redundant slots hold replicas, each a whole expert more. */
    mr_preflight_gpu_need replicas = qwen3_30b(18);
    cr_assert_eq(mr_preflight_gpu_fit(&replicas, 48 * GIB, &weights, &bytes), MR_PREFLIGHT_OK);
    cr_assert_eq(bytes, DENSE + 18 * EXPERT + KV);
    /* To the byte. */
    cr_assert_eq(mr_preflight_gpu_fit(&eight, DENSE + 16 * EXPERT + KV, &weights, &bytes),
                 MR_PREFLIGHT_OK);
    cr_assert_eq(mr_preflight_gpu_fit(&eight, DENSE + 16 * EXPERT + KV - 1, &weights, &bytes),
                 MR_PREFLIGHT_FAIL);
}

Test(preflight, gpu_fit_of_a_dense_model)
{
    uint64_t weights, bytes;
    mr_preflight_gpu_need dense = {.weights = 16 * GIB, .kv_cache = GIB};
    cr_assert_eq(mr_preflight_gpu_fit(&dense, 80 * GIB, &weights, &bytes), MR_PREFLIGHT_OK);
    cr_assert_eq(weights, 16 * GIB);
    cr_assert_eq(bytes, 17 * GIB);
    cr_assert_eq(mr_preflight_gpu_fit(&dense, 16 * GIB, &weights, &bytes), MR_PREFLIGHT_FAIL);
}

static void expect_link(unsigned width, unsigned speed, const char *w, const char *s,
                        uint64_t mbps)
{
    mr_preflight_link link;
    cr_assert_eq(mr_preflight_link_rate(width, speed, &link), 0, "%u %u", width, speed);
    cr_assert_str_eq(link.width, w);
    cr_assert_str_eq(link.speed, s);
    cr_assert_eq(link.mbps, mbps, "%s %s: %llu Mb/s", w, s, (unsigned long long)link.mbps);
}

/* Codes from ibv_port_attr: width 1/2/4/8 = 1x/4x/8x/12x, speed a bit each. */
Test(preflight, link_rates_as_ibstat_prints_them)
{
    expect_link(2, 128, "4x", "NDR", 400000);
    expect_link(2, 64, "4x", "HDR", 200000);
    expect_link(2, 32, "4x", "EDR", 100000);
    expect_link(2, 16, "4x", "FDR", 56000);
    expect_link(2, 4, "4x", "QDR", 40000);
    expect_link(1, 1, "1x", "SDR", 2500);
    expect_link(8, 64, "12x", "HDR", 600000);
    expect_link(16, 128, "2x", "NDR", 200000);
}

Test(preflight, unknown_link_codes)
{
    mr_preflight_link link;
    cr_assert_eq(mr_preflight_link_rate(3, 128, &link), -1);
    cr_assert_eq(mr_preflight_link_rate(2, 0, &link), -1);
    cr_assert_eq(mr_preflight_link_rate(0, 0, &link), -1);
    cr_assert_eq(mr_preflight_link_rate(2, 512, &link), -1);
    cr_assert_null(link.width);
    cr_assert_null(link.speed);
    cr_assert_eq(link.mbps, 0);
}
