/*
 * The verdicts of moerun preflight that need no hardware; the unit tests
 * link this file alone.
 */
#include <stddef.h>

#include "runner/preflight.h"

mr_preflight_level mr_preflight_memory_verdict(uint64_t available, uint64_t weights)
{
    if (available < weights)
        return MR_PREFLIGHT_FAIL;
    /* The KV cache, activations and page cache need room beside the
     * weights; half their size again is the margin operators keep.
     * (available - weights < weights / 2 in integers, without overflow.) */
    if (available - weights < weights - weights / 2)
        return MR_PREFLIGHT_WARN;
    return MR_PREFLIGHT_OK;
}

mr_preflight_level mr_preflight_gpu_fit(const mr_preflight_gpu_need *need, uint64_t device,
                                        uint64_t *weights, uint64_t *bytes)
{
    /* The file holds every expert once; the rank loads its slots' only. */
    uint64_t all = need->experts * need->expert, dense = need->weights > all
                                                            ? need->weights - all
                                                            : 0;
    *weights = dense + need->slots * need->expert;
    *bytes = *weights + need->kv_cache;
    return *bytes > device ? MR_PREFLIGHT_FAIL : MR_PREFLIGHT_OK;
}

int mr_preflight_link_rate(unsigned width_code, unsigned speed_code, mr_preflight_link *link)
{
    /* The IB_WIDTH and IB_SPEED codes of the InfiniBand specification, as
     * libibverbs reports them; lanes and per-lane data rate (FDR10 and
     * later are 64b/66b coded, so their data rate is the round figure). */
    static const struct {
        unsigned code, lanes;
        const char *name;
    } widths[] = {{1, 1, "1x"}, {16, 2, "2x"}, {2, 4, "4x"}, {4, 8, "8x"}, {8, 12, "12x"}};
    static const struct {
        unsigned code;
        uint64_t lane_mbps;
        const char *name;
    } speeds[] = {{1, 2500, "SDR"},   {2, 5000, "DDR"},    {4, 10000, "QDR"},
                  {8, 10000, "FDR10"}, {16, 14000, "FDR"},  {32, 25000, "EDR"},
                  {64, 50000, "HDR"},  {128, 100000, "NDR"}, {256, 200000, "XDR"}};
    *link = (mr_preflight_link){0};
    size_t w = 0, s = 0;
    while (w < sizeof widths / sizeof *widths && widths[w].code != width_code)
        w++;
    while (s < sizeof speeds / sizeof *speeds && speeds[s].code != speed_code)
        s++;
    if (w == sizeof widths / sizeof *widths || s == sizeof speeds / sizeof *speeds)
        return -1;
    link->width = widths[w].name;
    link->speed = speeds[s].name;
    link->mbps = widths[w].lanes * speeds[s].lane_mbps;
    return 0;
}
