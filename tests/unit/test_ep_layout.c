/* The dispatch layout against a naive count, in the cases that break
 * layouts: no tokens, every token to one expert, experts with no tokens,
 * all top-k experts on one rank. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ep.h"

static void check(const int32_t *slots, int n, int k, int ranks, int per_rank)
{
    mr_ep_layout l = {0};
    cr_assert_eq(mr_ep_layout_build(&l, slots, n, k, ranks, per_rank), 0);
    for (int r = 0; r < ranks; r++) {
        int visiting = 0;
        for (int t = 0; t < n; t++) {
            int visits = 0;
            for (int j = 0; j < k; j++)
                visits |= slots[t * k + j] / per_rank == r;
            cr_assert_eq(l.in_rank[t * ranks + r], visits, "token %d rank %d", t, r);
            visiting += visits;
        }
        cr_assert_eq(l.tokens_per_rank[r], visiting, "rank %d", r);
    }
    for (int s = 0; s < ranks * per_rank; s++) {
        int pairs = 0;
        for (int i = 0; i < n * k; i++)
            pairs += slots[i] == s;
        cr_assert_eq(l.tokens_per_slot[s], pairs, "slot %d", s);
    }
    mr_ep_layout_free(&l);
}

Test(ep_layout, random_routing_matches_a_naive_count)
{
    srand(7);
    for (int round = 0; round < 50; round++) {
        int ranks = 1 + rand() % 4, per_rank = 1 + rand() % 8, k = 1 + rand() % 4;
        if (k > ranks * per_rank)
            k = ranks * per_rank;
        int n = rand() % 40;
        int32_t *slots = malloc(((size_t)n * k + 1) * sizeof *slots);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++) {
                int32_t s;
                bool again;
                do { /* distinct slots per token, as top-k gives */
                    s = rand() % (ranks * per_rank);
                    again = false;
                    for (int i = 0; i < j; i++)
                        again |= slots[t * k + i] == s;
                } while (again);
                slots[t * k + j] = s;
            }
        check(slots, n, k, ranks, per_rank);
        free(slots);
    }
}

Test(ep_layout, edge_cases)
{
    check(NULL, 0, 2, 3, 4); /* a rank with no tokens at all */
    const int32_t one_expert[] = {5, 5, 5, 5};
    check(one_expert, 4, 1, 3, 2); /* every token to one expert; other slots empty */
    const int32_t same_rank[] = {4, 5, 4, 5, 5, 4};
    check(same_rank, 3, 2, 3, 2); /* all top-k on one rank: one visit per token */
    mr_ep_layout l = {0};
    cr_assert_eq(mr_ep_layout_build(&l, same_rank, 3, 2, 3, 2), 0);
    cr_assert_eq(l.tokens_per_rank[2], 3, "three tokens visit rank 2 once each");
    cr_assert_eq(l.tokens_per_rank[0], 0);
    cr_assert_eq(mr_ep_layout_build(&l, one_expert, 4, 1, 3, 2), 0, "buffers are reused");
    cr_assert_eq(l.tokens_per_slot[5], 4);
    mr_ep_layout_free(&l);
}
