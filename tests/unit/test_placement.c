/* Expert placement maps: derived consistently, checked, replicas picked
 * evenly and deterministically. */
#include <criterion/criterion.h>
#include <string.h>

#include "eplb/eplb.h"

static char err[512];

Test(placement, contiguous_puts_expert_e_in_slot_e)
{
    mr_eplb_placement p;
    cr_assert_eq(mr_eplb_placement_contiguous(&p, 2, 8, 4, err, sizeof err), MR_EPLB_OK, "%s",
                 err);
    cr_assert_eq(p.max_replicas, 1);
    for (int l = 0; l < 2; l++)
        for (int e = 0; e < 8; e++) {
            cr_assert_eq(p.phy2log[l * 8 + e], e);
            cr_assert_eq(p.logcnt[l * 8 + e], 1);
            cr_assert_eq(mr_eplb_pick_slot(&p, l, e, 12345), e);
            cr_assert_eq(mr_eplb_slot_rank(&p, e), e / 2);
        }
    mr_eplb_placement_free(&p);
}

Test(placement, replicas_are_derived_and_picked_evenly)
{
    /* 4 experts in 6 slots on 3 ranks: expert 0 three times, expert 2 twice. */
    static const int32_t phy2log[] = {0, 1, 0, 2, 3, 0, /* layer 1: */ 3, 2, 1, 0, 2, 1};
    mr_eplb_placement p;
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, 2, 4, 6, 3, phy2log, err, sizeof err),
                 MR_EPLB_OK, "%s", err);
    cr_assert_eq(p.max_replicas, 3);
    cr_assert_eq(p.logcnt[0], 3);
    cr_assert_eq(p.logcnt[1], 1);
    static const int32_t zero_slots[] = {0, 2, 5};
    cr_assert_eq(memcmp(p.log2phy, zero_slots, sizeof zero_slots), 0);
    cr_assert_eq(p.log2phy[1 * 3 + 1], -1, "rows are padded with -1");
    int hits[6] = {0};
    for (uint64_t key = 0; key < 300; key++) {
        int32_t slot = mr_eplb_pick_slot(&p, 0, 0, key);
        cr_assert_eq(p.phy2log[slot], 0);
        cr_assert_eq(slot, mr_eplb_pick_slot(&p, 0, 0, key), "the same key, the same slot");
        hits[slot]++;
    }
    cr_assert(hits[0] == 100 && hits[2] == 100 && hits[5] == 100);
    cr_assert_eq(p.logcnt[4 + 1], 2, "layer 1 has expert 1 twice");
    cr_assert_eq(mr_eplb_slot_rank(&p, 5), 2);
    mr_eplb_placement_free(&p);
}

Test(placement, contiguous_fills_uneven_ranks_with_replicas_of_the_first_experts)
{
    mr_eplb_placement p;
    cr_assert_eq(mr_eplb_placement_contiguous(&p, 4, 64, 3, err, sizeof err), MR_EPLB_OK, "%s",
                 err);
    cr_assert_eq(p.n_physical, 66);
    cr_assert_eq(p.phy2log[3 * 66 + 64], 0);
    cr_assert_eq(p.phy2log[3 * 66 + 65], 1);
    cr_assert_eq(p.logcnt[3 * 64 + 0], 2);
    cr_assert_eq(p.logcnt[3 * 64 + 2], 1);
    cr_assert_eq(mr_eplb_slot_rank(&p, 65), 2);
    mr_eplb_placement_free(&p);
}

Test(placement, impossible_placements_say_why)
{
    mr_eplb_placement p;
    static const int32_t uneven[] = {0, 1, 2, 0, 1};
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, 1, 3, 5, 2, uneven, err, sizeof err),
                 MR_EPLB_EINVAL);
    cr_assert(strstr(err, "5 physical expert slots do not divide evenly over 2 ranks"), "%s",
              err);
    static const int32_t missing[] = {0, 1, 1, 0};
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, 1, 3, 4, 2, missing, err, sizeof err),
                 MR_EPLB_EINVAL);
    cr_assert(strstr(err, "layer 0: expert 2 has no slot"), "%s", err);
    static const int32_t outside[] = {0, 1, 7, 2};
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, 1, 3, 4, 2, outside, err, sizeof err),
                 MR_EPLB_EINVAL);
    cr_assert(strstr(err, "slot 2 holds expert 7"), "%s", err);
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, 1, 4, 2, 2, outside, err, sizeof err),
                 MR_EPLB_EINVAL);
    cr_assert(strstr(err, "2 physical slots cannot hold 4 experts"), "%s", err);
}
