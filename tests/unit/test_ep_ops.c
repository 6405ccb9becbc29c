/* The ops of expert parallelism's data path (ep_pack, ep_unpack,
 * ep_combine_partials, ep_combine_reduce) in one process: every rank's
 * messages are packed into plain buffers and handed to their receivers
 * here, with no communicator.  A hand-made case of two ranks checks the
 * bytes of a message and where the receiver puts each row; random routing
 * on one to four ranks, in both modes, checks the combined output against
 * the straightforward sum, bit for bit, on "ref" and "cpu" alike. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

enum { MAX_RANKS = 4 };

/* The "experts": slot s maps x to x * a(s) + b(s), exact to recompute. */
static float expert_a(int slot)
{
    return 0.5f + 0.125f * (float)(slot % 7);
}

static float expert_b(int slot)
{
    return -0.25f + 0.0625f * (float)(slot % 5);
}

typedef struct {
    int n, k, hidden, ranks, per_rank, ll_capacity;
    const int32_t *slots[MAX_RANKS]; /* each rank's [n][k] */
    const float *weights[MAX_RANKS];
    const float *x[MAX_RANKS];
} routing;

/* One rank's state through a layer. */
typedef struct {
    mr_ep_send s;
    mr_ep_recv r;
    int32_t base[MAX_RANKS], cursor[MAX_RANKS * 8], offsets[9], tokens, rows;
    void *dispatch[MAX_RANKS]; /* the messages this rank received, by source */
    void *deferred[MAX_RANKS]; /* and the deferred ones, in low-latency mode */
    void *combine[MAX_RANKS];  /* the combine messages this rank received */
    float *out;
} rank_state;

static size_t message_capacity(const routing *g)
{
    size_t dispatch = mr_ep_header_bytes(g->per_rank) +
                      (size_t)(g->n ? g->n : 1) * mr_ep_record_bytes(g->k, g->hidden);
    size_t combine = (size_t)(g->n ? g->n : 1) * g->hidden * sizeof(double);
    return dispatch > combine ? dispatch : combine;
}

static void send_side(mr_backend *be, const routing *g, int rank, rank_state *st)
{
    size_t per_token = (size_t)(g->n ? g->n : 1) * g->ranks;
    st->s = (mr_ep_send){.n_tokens = g->n, .top_k = g->k, .hidden = g->hidden,
                         .n_ranks = g->ranks, .slots_per_rank = g->per_rank,
                         .ll_capacity = g->ll_capacity, .slots = g->slots[rank],
                         .weights = g->weights[rank], .x = g->x[rank],
                         .visits = malloc(per_token), .deferred = malloc(per_token),
                         .order = malloc(per_token * sizeof(int32_t)),
                         .room = malloc((size_t)g->ranks * g->per_rank * sizeof(int32_t)),
                         .counts = malloc(mr_ep_counts_len(g->ranks, g->per_rank) *
                                          sizeof(int32_t))};
    cr_assert_eq(be->ops->ep_layout(be, &st->s), MR_KERNELS_OK);
}

/* The receiver's plan from the headers, as the engine makes it: sources'
 * tokens in rank order, rows by slot and within a slot by source. */
static void plan_rows(const routing *g, rank_state *st)
{
    int spr = g->per_rank;
    st->tokens = 0;
    for (int s = 0; s < g->ranks; s++) {
        st->base[s] = st->tokens;
        st->tokens += ((const mr_ep_header *)st->dispatch[s])->tokens;
    }
    st->rows = 0;
    for (int e = 0; e < spr; e++) {
        st->offsets[e] = st->rows;
        for (int s = 0; s < g->ranks; s++) {
            st->cursor[s * spr + e] = st->rows;
            st->rows += ((const mr_ep_header *)st->dispatch[s])->counts[e];
        }
    }
    st->offsets[spr] = st->rows;
    size_t tokens = (size_t)st->tokens + 1, rows = (size_t)st->rows + 1;
    st->r = (mr_ep_recv){.top_k = g->k, .hidden = g->hidden, .n_ranks = g->ranks,
                         .slots_per_rank = spr, .base = st->base, .cursor = st->cursor,
                         .n_local = malloc(tokens * sizeof(int32_t)),
                         .rows = malloc(tokens * g->k * sizeof(int32_t)),
                         .weight = malloc(tokens * g->k * sizeof(float)),
                         .x_rows = malloc(rows * sizeof(float *)),
                         .y = malloc(rows * g->hidden * sizeof(float))};
}

/* Every rank sends every other one `part` of its messages; each receiver
 * unpacks what came, sources in rank order. */
static void exchange(mr_backend *be, const routing *g, rank_state *st, mr_ep_pack_part part)
{
    size_t capacity = message_capacity(g);
    for (int src = 0; src < g->ranks; src++)
        for (int dst = 0; dst < g->ranks; dst++) {
            void *msg = calloc(1, capacity);
            cr_assert_eq(be->ops->ep_pack(be, msg, &st[src].s, dst, part), MR_KERNELS_OK);
            if (part == MR_EP_PACK_FIRST) {
                st[dst].dispatch[src] = msg;
                continue;
            }
            st[dst].deferred[src] = msg;
            cr_assert_eq(be->ops->ep_unpack(be, &st[dst].r, msg, src), MR_KERNELS_OK);
        }
    if (part != MR_EP_PACK_FIRST)
        return;
    for (int dst = 0; dst < g->ranks; dst++) {
        plan_rows(g, &st[dst]);
        for (int src = 0; src < g->ranks; src++)
            cr_assert_eq(be->ops->ep_unpack(be, &st[dst].r, st[dst].dispatch[src], src),
                         MR_KERNELS_OK);
    }
}

/* The experts on rank `rank`: every grouped row through its slot. */
static void run_experts(const routing *g, int rank, rank_state *st)
{
    for (int e = 0; e < g->per_rank; e++) {
        int slot = rank * g->per_rank + e;
        for (int row = st->offsets[e]; row < st->offsets[e + 1]; row++)
            for (int d = 0; d < g->hidden; d++)
                st->r.y[(size_t)row * g->hidden + d] =
                    st->r.x_rows[row][d] * expert_a(slot) + expert_b(slot);
    }
}

static void combine(mr_backend *be, const routing *g, rank_state *st)
{
    size_t capacity = message_capacity(g);
    for (int dst = 0; dst < g->ranks; dst++)
        for (int src = 0; src < g->ranks; src++) {
            int tokens = ((const mr_ep_header *)st[dst].dispatch[src])->tokens;
            if (tokens == 0)
                continue;
            st[src].combine[dst] = malloc(capacity);
            cr_assert_eq(be->ops->ep_combine_partials(be, st[src].combine[dst], &st[dst].r, src,
                                                      tokens),
                         MR_KERNELS_OK);
        }
    for (int src = 0; src < g->ranks; src++) {
        st[src].out = malloc(((size_t)g->n * g->hidden + 1) * sizeof(float));
        cr_assert_eq(be->ops->ep_combine_reduce(be, st[src].out,
                                                (const void *const *)st[src].combine,
                                                &st[src].s),
                     MR_KERNELS_OK);
    }
}

/* One layer on every rank: layout, the first messages, in low-latency
 * mode the deferred ones, the experts, and combine. */
static rank_state *run_layer(const char *backend, int threads, const routing *g)
{
    mr_backend *be;
    char err[256];
    cr_assert_eq(mr_backend_create(backend, threads, &be, err, sizeof err), 0, "%s", err);
    rank_state *st = calloc(MAX_RANKS, sizeof *st);
    for (int rank = 0; rank < g->ranks; rank++)
        send_side(be, g, rank, &st[rank]);
    exchange(be, g, st, MR_EP_PACK_FIRST);
    if (g->ll_capacity > 0)
        exchange(be, g, st, MR_EP_PACK_DEFERRED);
    for (int rank = 0; rank < g->ranks; rank++)
        run_experts(g, rank, &st[rank]);
    combine(be, g, st);
    mr_backend_free(be);
    return st;
}

static void free_layer(const routing *g, rank_state *st)
{
    for (int rank = 0; rank < g->ranks; rank++) {
        rank_state *s = &st[rank];
        void *all[] = {s->s.visits, s->s.deferred, s->s.order, s->s.room, s->s.counts,
                       s->r.n_local, s->r.rows, s->r.weight, (void *)s->r.x_rows, s->r.y,
                       s->out};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
        for (int r = 0; r < MAX_RANKS; r++) {
            free(s->dispatch[r]);
            free(s->deferred[r]);
            free(s->combine[r]);
        }
    }
    free(st);
}

/* What combine must give token t of `rank` at coordinate d: per rank the
 * token visits, in rank order, the double sum of its weighted picks there
 * in pick order, all added in double and rounded once. */
static float expected(const routing *g, int rank, int t, int d)
{
    const int32_t *slots = g->slots[rank] + (size_t)t * g->k;
    const float *w = g->weights[rank] + (size_t)t * g->k;
    float x = g->x[rank][(size_t)t * g->hidden + d];
    double total = 0;
    for (int r = 0; r < g->ranks; r++) {
        double part = 0;
        for (int j = 0; j < g->k; j++)
            if (slots[j] / g->per_rank == r)
                part += (double)(w[j] * (x * expert_a(slots[j]) + expert_b(slots[j])));
        total += part;
    }
    return (float)total;
}

/* What rank `at`'s combine message must hold for token t of `rank`: the
 * double sum, in pick order, of its weighted picks there. */
static double expected_partial(const routing *g, int rank, int t, int at, int d)
{
    const int32_t *slots = g->slots[rank] + (size_t)t * g->k;
    const float *w = g->weights[rank] + (size_t)t * g->k;
    float x = g->x[rank][(size_t)t * g->hidden + d];
    double part = 0;
    bool first = true;
    for (int j = 0; j < g->k; j++)
        if (slots[j] / g->per_rank == at) {
            double p = (double)(w[j] * (x * expert_a(slots[j]) + expert_b(slots[j])));
            part = first ? p : part + p;
            first = false;
        }
    return part;
}

static void check_partials(const routing *g, rank_state *st, const char *what)
{
    for (int rank = 0; rank < g->ranks; rank++)
        for (int t = 0; t < g->n; t++)
            for (int at = 0; at < g->ranks; at++) {
                if (!st[rank].s.visits[(size_t)t * g->ranks + at])
                    continue;
                const double *row = (const double *)st[rank].combine[at] +
                                    (size_t)st[rank].s.order[(size_t)t * g->ranks + at] * g->hidden;
                for (int d = 0; d < g->hidden; d++) {
                    double want = expected_partial(g, rank, t, at, d);
                    cr_assert_eq(memcmp(&row[d], &want, sizeof want), 0,
                                 "%s: rank %d token %d at rank %d coordinate %d: %a, want %a",
                                 what, rank, t, at, d, row[d], want);
                }
            }
}

static void check_outputs(const routing *g, rank_state *st, const char *what)
{
    check_partials(g, st, what);
    for (int rank = 0; rank < g->ranks; rank++)
        for (int t = 0; t < g->n; t++)
            for (int d = 0; d < g->hidden; d++) {
                float want = expected(g, rank, t, d);
                float got = st[rank].out[(size_t)t * g->hidden + d];
                cr_assert_eq(memcmp(&got, &want, sizeof got), 0,
                             "%s: rank %d token %d coordinate %d: %a, want %a", what, rank, t,
                             d, (double)got, (double)want);
            }
}

/* Two ranks of two slots, two picks, two floats per token.  Rank 0's
 * tokens: t0 picks slots 1 and 2, t1 slots 3 and 2, t2 slots 0 and 1;
 * rank 1's: u0 slots 2 and 0, u1 slots 3 and 1, u2 slots 0 and 1. */
static const int32_t HAND_SLOTS0[] = {1, 2, 3, 2, 0, 1}, HAND_SLOTS1[] = {2, 0, 3, 1, 0, 1};
static const float HAND_W0[] = {0.75f, 0.25f, 0.5f, 0.5f, 0.25f, 0.75f};
static const float HAND_W1[] = {0.5f, 0.5f, 0.375f, 0.625f, 0.125f, 0.875f};
static const float HAND_X0[] = {1, 2, 3, 4, 5, 6}, HAND_X1[] = {7, 8, 9, 10, 11, 12};

static routing hand_routing(int ll_capacity)
{
    return (routing){.n = 3, .k = 2, .hidden = 2, .ranks = 2, .per_rank = 2,
                     .ll_capacity = ll_capacity, .slots = {HAND_SLOTS0, HAND_SLOTS1},
                     .weights = {HAND_W0, HAND_W1}, .x = {HAND_X0, HAND_X1}};
}

/* The bytes of one record (kernels.h has the format). */
static void put_record(unsigned char **at, int32_t order, int32_t n_local, const int32_t *slots,
                       const float *weights, const float *x)
{
    int32_t head[2] = {order, n_local};
    int32_t picks[2] = {0, 0};
    float w[2] = {0, 0};
    memcpy(picks, slots, (size_t)n_local * sizeof(int32_t));
    memcpy(w, weights, (size_t)n_local * sizeof(float));
    memcpy(*at, head, sizeof head);
    memcpy(*at + 8, picks, sizeof picks);
    memcpy(*at + 16, w, sizeof w);
    memcpy(*at + 24, x, 2 * sizeof(float));
    *at += 32;
}

/* Rank 1's grouped rows in the hand-made case: t0, t1, u0, t1, u1, t1's
 * two rows reading the one copy of it. */
static void check_rows(const rank_state *r1)
{
    const float want[][2] = {{1, 2}, {3, 4}, {7, 8}, {3, 4}, {9, 10}};
    for (int row = 0; row < 5; row++)
        cr_assert_eq(memcmp(r1->r.x_rows[row], want[row], sizeof want[row]), 0, "row %d", row);
    cr_assert_eq(r1->r.x_rows[1], r1->r.x_rows[3], "one copy of t1");
}

Test(ep_ops, a_hand_made_message_and_where_its_rows_land)
{
    const char *const backends[] = {"ref", "cpu"};
    for (int b = 0; b < 2; b++) {
        routing g = hand_routing(0);
        rank_state *st = run_layer(backends[b], 1, &g);
        /* Rank 0 to rank 1: t0 (order 0) with its pick of slot 2, local 0;
         * t1 (order 1) with slot 3 then slot 2, locals 1 and 0. */
        unsigned char want[8 + 8 + 2 * 32] = {0}, *at = want + 16;
        int32_t header[4] = {2, 2, 2, 1}; /* records, tokens, pairs of local slots 0 and 1 */
        memcpy(want, header, sizeof header);
        put_record(&at, 0, 1, (const int32_t[]){0}, (const float[]){0.25f}, HAND_X0);
        put_record(&at, 1, 2, (const int32_t[]){1, 0}, (const float[]){0.5f, 0.5f}, HAND_X0 + 2);
        cr_assert_eq(memcmp(st[1].dispatch[0], want, sizeof want), 0, "%s", backends[b]);
        /* Rank 1 holds t0, t1 (from rank 0), u0, u1 (its own); local slot
         * 0 (slot 2) has rows t0, t1, u0, local slot 1 (slot 3) rows t1,
         * u1: sources in rank order within a slot. */
        const rank_state *r1 = &st[1];
        cr_assert_eq(r1->tokens, 4);
        cr_assert_eq(r1->rows, 5);
        check_rows(r1);
        const int32_t rows_t1[] = {3, 1};
        cr_assert_eq(r1->r.n_local[1], 2);
        cr_assert_eq(memcmp(r1->r.rows + 2, rows_t1, sizeof rows_t1), 0, "t1's picks, in order");
        /* Rank 1's partial for t1: 0.5 y(slot 3) + 0.5 y(slot 2), in double. */
        const double *partial = (const double *)st[0].combine[1] + 2;
        for (int d = 0; d < 2; d++) {
            float xd = HAND_X0[2 + d];
            double want_d = (double)(0.5f * (xd * expert_a(3) + expert_b(3))) +
                            (double)(0.5f * (xd * expert_a(2) + expert_b(2)));
            cr_assert_eq(memcmp(&partial[d], &want_d, sizeof want_d), 0, "coordinate %d", d);
        }
        check_outputs(&g, st, backends[b]);
        free_layer(&g, st);
    }
}

Test(ep_ops, low_latency_defers_what_does_not_fit_and_combines_the_same)
{
    routing g = hand_routing(1); /* room for one token per slot */
    rank_state *st = run_layer("ref", 1, &g);
    /* t1 finds slot 2 on rank 1 taken by t0: it waits for the second
     * message, but its rows land where the first message's counts said. */
    cr_assert_eq(((const mr_ep_header *)st[1].dispatch[0])->records, 1);
    cr_assert_eq(((const mr_ep_header *)st[1].dispatch[0])->tokens, 2);
    check_rows(&st[1]);
    check_outputs(&g, st, "low-latency");
    free_layer(&g, st);
}

/* Three ranks' partial sums that cancel: added in rank order they leave
 * the small one, in any other order they lose it. */
Test(ep_ops, the_reduction_adds_the_ranks_in_rank_order)
{
    const double rank0[] = {0x1p60, 5.0}, rank1[] = {-0x1p60}, rank2[] = {7.0, 1.0};
    const void *msgs[] = {rank0, rank1, rank2};
    /* Token 0 visits all three ranks (second of rank 2's tokens); token 1
     * ranks 0 (second there) and 2 (first). */
    uint8_t visits[] = {1, 1, 1, 1, 0, 1};
    int32_t order[] = {0, 0, 1, 1, 0, 0};
    mr_ep_send s = {.n_tokens = 2, .hidden = 1, .n_ranks = 3, .visits = visits, .order = order};
    const char *const backends[] = {"ref", "cpu"};
    for (int b = 0; b < 2; b++) {
        mr_backend *be;
        char err[256];
        cr_assert_eq(mr_backend_create(backends[b], 1, &be, err, sizeof err), 0, "%s", err);
        float out[2];
        cr_assert_eq(be->ops->ep_combine_reduce(be, out, msgs, &s), MR_KERNELS_OK);
        cr_assert_eq(out[0], 1.0f, "%s: %a", backends[b], (double)out[0]);
        cr_assert_eq(out[1], 12.0f, "%s: %a", backends[b], (double)out[1]);
        mr_backend_free(be);
    }
}

/* A record that would index outside its header (a peer's bug, a torn
 * message) is refused before anything is written, naming the record and
 * the source. */
Test(ep_ops, a_malformed_record_is_refused)
{
    routing g = hand_routing(0);
    rank_state *st = run_layer("cpu", 1, &g);
    mr_backend *be;
    char err[256];
    cr_assert_eq(mr_backend_create("cpu", 1, &be, err, sizeof err), 0, "%s", err);
    int32_t *first = (int32_t *)((unsigned char *)st[1].dispatch[0] + 16);
    /* order, local picks, first local slot; the message has 2 tokens, top-2, 2 slots */
    const int32_t bad[][3] = {{2, 1, 0}, {-1, 1, 0}, {0, 3, 0}, {0, 0, 0}, {0, 1, 2}, {0, 1, -1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(first, bad[i], sizeof bad[i]);
        cr_assert_eq(be->ops->ep_unpack(be, &st[1].r, st[1].dispatch[0], 0), MR_KERNELS_EINVAL);
        snprintf(err, sizeof err,
                 "record 0 of rank 0's dispatch message is malformed (order %d of 2 tokens, %d "
                 "local picks)", bad[i][0], bad[i][1]);
        cr_assert_str_eq(mr_backend_error(be), err);
    }
    mr_backend_free(be);
    free_layer(&g, st);
}

static uint32_t next_random(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* The sizes a random layer draws from: tokens in [min_n, max_n), floats a
 * token in [min_hidden, max_hidden], and whether it runs low-latency. */
typedef struct {
    int min_n, max_n, min_hidden, max_hidden;
    bool low_latency;
} layer_sizes;

/* One layer of random routing on `ranks` ranks, of sizes `z`, on "ref"
 * and on "cpu" with `threads` threads, each checked against the
 * straightforward sum. */
static void random_layer(uint32_t *rng, int ranks, layer_sizes z, int threads)
{
    routing g = {.ranks = ranks};
    g.per_rank = 1 + (int)(next_random(rng) % 8);
    g.n = z.min_n + (int)(next_random(rng) % (uint32_t)(z.max_n - z.min_n));
    g.hidden = z.min_hidden + (int)(next_random(rng) % (uint32_t)(z.max_hidden - z.min_hidden + 1));
    g.ll_capacity = z.low_latency ? 1 + (int)(next_random(rng) % 3) : 0;
    g.k = 1 + (int)(next_random(rng) % 4);
    if (g.k > g.ranks * g.per_rank)
        g.k = g.ranks * g.per_rank;
    int32_t *slots[MAX_RANKS];
    float *weights[MAX_RANKS], *x[MAX_RANKS];
    for (int r = 0; r < g.ranks; r++) {
        size_t picks = (size_t)g.n * g.k + 1, floats = (size_t)g.n * g.hidden + 1;
        slots[r] = malloc(picks * sizeof(int32_t));
        weights[r] = malloc(picks * sizeof(float));
        x[r] = malloc(floats * sizeof(float));
        for (int i = 0; i < g.n * g.k; i++) {
            bool again;
            do { /* distinct slots per token, as top-k gives */
                slots[r][i] = (int32_t)(next_random(rng) % (uint32_t)(g.ranks * g.per_rank));
                again = false;
                for (int j = i - i % g.k; j < i; j++)
                    again |= slots[r][j] == slots[r][i];
            } while (again);
            /* Either sign and magnitudes 2^40 apart: the double sums
             * cancel and round, so the order of every sum shows in the
             * bits. */
            float w = (float)(1 + next_random(rng) % 1000) / 997.0f;
            w = next_random(rng) % 2 ? -w : w;
            weights[r][i] = next_random(rng) % 2 ? ldexpf(w, -40) : w;
        }
        for (int i = 0; i < g.n * g.hidden; i++)
            x[r][i] = (float)(next_random(rng) % 2001) / 1000.0f - 1.0f;
        g.slots[r] = slots[r];
        g.weights[r] = weights[r];
        g.x[r] = x[r];
    }
    rank_state *ref = run_layer("ref", 1, &g), *cpu = run_layer("cpu", threads, &g);
    check_outputs(&g, ref, "ref");
    check_outputs(&g, cpu, "cpu");
    free_layer(&g, ref);
    free_layer(&g, cpu);
    for (int r = 0; r < g.ranks; r++) {
        free(slots[r]);
        free(weights[r]);
        free(x[r]);
    }
}

Test(ep_ops, random_routing_combines_to_the_straightforward_sum)
{
    uint32_t rng = 12345;
    for (int round = 0; round < 60; round++)
        random_layer(&rng, 1 + round % MAX_RANKS,
                     (layer_sizes){.max_n = 20, .min_hidden = 1, .max_hidden = 40,
                                   .low_latency = round % 3 != 0}, 1);
}

/* Layers of a prefill's size: combine then spreads its tokens over the
 * threads (cpu_ep.c forks from 64K values) and sums rows longer than its
 * chunk of coordinates; the bits must not move. */
Test(ep_ops, large_layers_combine_the_same_across_threads)
{
    uint32_t rng = 777;
    for (int round = 0; round < 8; round++)
        random_layer(&rng, 1 + round % MAX_RANKS,
                     (layer_sizes){.min_n = 200, .max_n = 400, .min_hidden = 350,
                                   .max_hidden = 700, .low_latency = round % 3 != 0},
                     2 + round % 2);
}
