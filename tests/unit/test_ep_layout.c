/* The dispatch layout op against a naive count, in the cases that break
 * layouts: no tokens, every token to one expert, experts with no tokens,
 * all top-k experts on one rank; and the low-latency room rule, which
 * defers a token that does not fit one of its slots on a rank. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

typedef struct {
    mr_backend *be;
    mr_ep_send s;
    int32_t *tokens, *pairs, *first;
} layout;

static layout run_layout(const char *backend, const int32_t *slots, int n, int k, int ranks,
                         int per_rank, int ll_capacity)
{
    layout l = {0};
    char err[256];
    cr_assert_eq(mr_backend_create(backend, 1, &l.be, err, sizeof err), 0, "%s", err);
    size_t per_token = (size_t)(n ? n : 1) * ranks;
    l.s = (mr_ep_send){.n_tokens = n, .top_k = k, .hidden = 1, .n_ranks = ranks,
                       .slots_per_rank = per_rank, .ll_capacity = ll_capacity, .slots = slots,
                       .visits = malloc(per_token), .deferred = malloc(per_token),
                       .order = malloc(per_token * sizeof(int32_t)),
                       .room = malloc((size_t)ranks * per_rank * sizeof(int32_t)),
                       .counts = malloc(mr_ep_counts_len(ranks, per_rank) * sizeof(int32_t))};
    cr_assert_eq(l.be->ops->ep_layout(l.be, &l.s), MR_KERNELS_OK);
    l.tokens = l.s.counts;
    l.pairs = l.s.counts + ranks;
    l.first = l.s.counts + ranks + ranks * per_rank;
    return l;
}

static void free_layout(layout *l)
{
    free(l->s.visits);
    free(l->s.deferred);
    free(l->s.order);
    free(l->s.room);
    free(l->s.counts);
    mr_backend_free(l->be);
}

/* The naive rule: tokens in order; for each rank it visits, the token takes
 * one unit of room in each of its slots there if every one has room left,
 * else it is deferred and takes none. */
static void check(const int32_t *slots, int n, int k, int ranks, int per_rank, int ll_capacity)
{
    static const char *const backends[] = {"ref", "cpu"};
    for (int b = 0; b < 2; b++) {
        layout l = run_layout(backends[b], slots, n, k, ranks, per_rank, ll_capacity);
        int *room = malloc((size_t)ranks * per_rank * sizeof *room);
        for (int s = 0; s < ranks * per_rank; s++)
            room[s] = ll_capacity;
        for (int r = 0; r < ranks; r++) {
            int visiting = 0, first = 0;
            for (int t = 0; t < n; t++) {
                int visits = 0, fits = 1;
                for (int j = 0; j < k; j++)
                    if (slots[t * k + j] / per_rank == r) {
                        visits = 1;
                        fits &= room[slots[t * k + j]] > 0;
                    }
                cr_assert_eq(l.s.visits[t * ranks + r], visits, "token %d rank %d", t, r);
                if (!visits)
                    continue;
                cr_assert_eq(l.s.order[t * ranks + r], visiting, "order of token %d at rank %d",
                             t, r);
                visiting++;
                bool deferred = ll_capacity > 0 && !fits;
                cr_assert_eq(l.s.deferred[t * ranks + r], deferred, "token %d rank %d", t, r);
                for (int j = 0; ll_capacity > 0 && !deferred && j < k; j++)
                    if (slots[t * k + j] / per_rank == r)
                        room[slots[t * k + j]]--;
                first += !deferred;
            }
            cr_assert_eq(l.tokens[r], visiting, "%s: rank %d", backends[b], r);
            cr_assert_eq(l.first[r], first, "%s: rank %d", backends[b], r);
        }
        for (int s = 0; s < ranks * per_rank; s++) {
            int pairs = 0;
            for (int i = 0; i < n * k; i++)
                pairs += slots[i] == s;
            cr_assert_eq(l.pairs[s], pairs, "slot %d", s);
        }
        free(room);
        free_layout(&l);
    }
}

Test(ep_layout, random_routing_matches_a_naive_count)
{
    srand(7);
    for (int round = 0; round < 100; round++) {
        int ranks = 1 + rand() % 4, per_rank = 1 + rand() % 8, k = 1 + rand() % 4;
        if (k > ranks * per_rank)
            k = ranks * per_rank;
        int n = rand() % 40, ll_capacity = round % 2 ? 1 + rand() % 4 : 0;
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
        check(slots, n, k, ranks, per_rank, ll_capacity);
        free(slots);
    }
}

Test(ep_layout, edge_cases)
{
    check(NULL, 0, 2, 3, 4, 0); /* a rank with no tokens at all */
    const int32_t one_expert[] = {5, 5, 5, 5};
    check(one_expert, 4, 1, 3, 2, 0); /* every token to one expert; other slots empty */
    check(one_expert, 4, 1, 3, 2, 3); /* ... with room for three: the fourth waits */
    const int32_t same_rank[] = {4, 5, 4, 5, 5, 4};
    check(same_rank, 3, 2, 3, 2, 0); /* all top-k on one rank: one visit per token */
    layout l = run_layout("ref", one_expert, 4, 1, 3, 2, 3);
    cr_assert_eq(l.tokens[2], 4);
    cr_assert_eq(l.first[2], 3, "three fit the first message");
    cr_assert(l.s.deferred[3 * 3 + 2], "the fourth token is deferred");
    cr_assert_eq(l.s.order[3 * 3 + 2], 3, "and keeps its place in the order");
    free_layout(&l);
}
