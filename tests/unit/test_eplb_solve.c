/* EPLB solvers: valid and deterministic placements for every policy on
 * random and adversarial loads, the bound never beaten (by any placement
 * of small layers, enumerated), DeepSeek's README example reproduced,
 * global near the bound, migration within its move budget. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"

static char err[512];

static const mr_eplb_policy policies[] = {MR_EPLB_POLICY_AUTO, MR_EPLB_POLICY_GLOBAL,
                                          MR_EPLB_POLICY_HIERARCHICAL, MR_EPLB_POLICY_DEEPSEEK};
#define N_POLICIES (sizeof policies / sizeof policies[0])

static uint64_t rng = 1;

static double uniform(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static int scale(void)
{
    const char *s = getenv("MR_TEST_SCALE");
    int n = s ? atoi(s) : 1;
    return n > 0 ? n : 1;
}

/* Zipf(s) popularity over a random order of the experts, times `total`. */
static void zipf(double *load, int layers, int experts, double s, double total)
{
    for (int l = 0; l < layers; l++) {
        double *row = load + (size_t)l * experts, sum = 0;
        for (int i = 0; i < experts; i++)
            sum += pow(i + 1, -s);
        for (int i = 0; i < experts; i++)
            row[i] = -1;
        for (int i = 0; i < experts; i++) {
            int e = (int)(uniform() * experts);
            while (row[e] >= 0)
                e = (e + 1) % experts;
            row[e] = round(total * pow(i + 1, -s) / sum);
        }
    }
}

/* A solver's placement is one mr_eplb_placement_from_phy2log would make:
 * every expert has a slot and log2phy, logcnt agree with phy2log. */
static void check_placement(const mr_eplb_placement *p, int layers, int experts, int physical,
                            int ranks)
{
    cr_assert_eq(p->n_layers, layers);
    cr_assert_eq(p->n_logical, experts);
    cr_assert_eq(p->n_physical, physical);
    cr_assert_eq(p->n_ranks, ranks);
    mr_eplb_placement again;
    cr_assert_eq(mr_eplb_placement_from_phy2log(&again, layers, experts, physical, ranks,
                                                p->phy2log, err, sizeof err),
                 MR_EPLB_OK, "%s", err);
    cr_assert_eq(again.max_replicas, p->max_replicas);
    size_t rows = (size_t)layers * experts;
    cr_assert_eq(memcmp(again.logcnt, p->logcnt, rows * sizeof *p->logcnt), 0);
    cr_assert_eq(memcmp(again.log2phy, p->log2phy, rows * p->max_replicas * sizeof *p->log2phy),
                 0);
    for (size_t i = 0; i < rows; i++)
        cr_assert_geq(p->logcnt[i], 1);
    mr_eplb_placement_free(&again);
}

typedef struct {
    int experts, physical, ranks, nodes, groups;
} shape;

static mr_eplb_solve_options options_for(const shape *s, mr_eplb_policy policy)
{
    return (mr_eplb_solve_options){.policy = policy,
                                   .n_physical = s->physical,
                                   .n_ranks = s->ranks,
                                   .n_nodes = s->nodes,
                                   .n_groups = s->groups,
                                   .max_moves = -1};
}

/* Every policy: a valid placement, the same one twice, balancedness within
 * (0, bound]; auto no less balanced than global. */
static void solve_all(const double *load, int layers, const shape *s)
{
    double global_balance = 0, auto_balance = 0;
    for (size_t i = 0; i < N_POLICIES; i++) {
        mr_eplb_solve_options o = options_for(s, policies[i]);
        mr_eplb_placement a, b;
        mr_eplb_solve_result r;
        cr_assert_eq(mr_eplb_solve(load, layers, s->experts, &o, &a, &r, err, sizeof err),
                     MR_EPLB_OK, "%s", err);
        check_placement(&a, layers, s->experts, s->physical, s->ranks);
        cr_assert_eq(mr_eplb_solve(load, layers, s->experts, &o, &b, NULL, err, sizeof err),
                     MR_EPLB_OK, "%s", err);
        cr_assert_eq(memcmp(a.phy2log, b.phy2log,
                            (size_t)layers * s->physical * sizeof *a.phy2log),
                     0, "%s is not deterministic", mr_eplb_policy_name(policies[i]));
        cr_assert(r.after.balancedness > 0 && r.after.balancedness <= 1 + 1e-12);
        cr_assert_leq(r.after.balancedness, r.after.bound * (1 + 1e-9),
                      "%s beat the bound: %.9f > %.9f", mr_eplb_policy_name(policies[i]),
                      r.after.balancedness, r.after.bound);
        cr_assert_geq(r.after.max_over_mean, 1 - 1e-12);
        if (policies[i] == MR_EPLB_POLICY_GLOBAL)
            global_balance = r.after.balancedness;
        if (policies[i] == MR_EPLB_POLICY_AUTO)
            auto_balance = r.after.balancedness;
        mr_eplb_placement_free(&a);
        mr_eplb_placement_free(&b);
    }
    cr_assert_geq(auto_balance, global_balance * (1 - 1e-9));
}

static const shape shapes[] = {
    {8, 8, 4, 1, 1},     {8, 12, 4, 2, 2},   {12, 16, 8, 2, 4},  {16, 24, 6, 3, 4},
    {32, 40, 8, 2, 8},   {64, 64, 16, 4, 8}, {64, 72, 24, 4, 8}, {60, 72, 12, 3, 6},
    {64, 96, 32, 8, 16}, {5, 7, 7, 7, 5},    {3, 3, 1, 1, 3},    {128, 144, 16, 2, 8},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

Test(eplb_solve, random_loads_give_valid_deterministic_bounded_placements)
{
    rng = 11;
    int rounds = 2 * scale();
    for (int round = 0; round < rounds; round++)
        for (size_t i = 0; i < N_SHAPES; i++) {
            const shape *s = &shapes[i];
            int layers = 3;
            double *load = malloc((size_t)layers * s->experts * sizeof *load);
            if (round % 2)
                zipf(load, layers, s->experts, 0.8 + uniform(), 1e5);
            else
                for (int j = 0; j < layers * s->experts; j++)
                    load[j] = uniform() < 0.2 ? 0 : floor(uniform() * 1000);
            solve_all(load, layers, s);
            free(load);
        }
}

Test(eplb_solve, adversarial_loads)
{
    const shape s = {16, 24, 8, 2, 4};
    double load[16];
    /* One expert takes everything. */
    memset(load, 0, sizeof load);
    load[5] = 1e6;
    solve_all(load, 1, &s);
    /* Nothing at all: every placement is perfectly balanced. */
    memset(load, 0, sizeof load);
    solve_all(load, 1, &s);
    for (size_t i = 0; i < N_POLICIES; i++) {
        mr_eplb_solve_options o = options_for(&s, policies[i]);
        mr_eplb_placement p;
        mr_eplb_solve_result r;
        cr_assert_eq(mr_eplb_solve(load, 1, 16, &o, &p, &r, err, sizeof err), MR_EPLB_OK);
        cr_assert_eq(r.after.balancedness, 1.0);
        cr_assert_eq(r.after.bound, 1.0);
        cr_assert_eq(r.after.max_over_mean, 1.0);
        mr_eplb_placement_free(&p);
    }
    /* All equal: 16 experts in 24 slots; 8 get two replicas, so 3 slots of
     * 1, 1/2, 1/2 on every rank balance exactly. */
    for (int e = 0; e < 16; e++)
        load[e] = 100;
    solve_all(load, 1, &s);
    mr_eplb_solve_options o = options_for(&s, MR_EPLB_POLICY_GLOBAL);
    mr_eplb_placement p;
    mr_eplb_solve_result r;
    cr_assert_eq(mr_eplb_solve(load, 1, 16, &o, &p, &r, err, sizeof err), MR_EPLB_OK);
    cr_assert_float_eq(r.after.balancedness, 1.0, 1e-12);
    mr_eplb_placement_free(&p);
}

/* deepseek-ai/EPLB's README: two layers of 12 experts, 16 replicas on 2
 * nodes of 4 GPUs, 4 groups; the phy2log it prints. */
static const double readme_weight[] = {90, 132, 40, 61, 104, 165, 39,  4,   73,  56, 183, 86,
                                       20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16,  27};
static const int32_t readme_phy2log[] = {5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1,
                                         7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1};

Test(eplb_solve, deepseek_readme_example)
{
    const shape s = {12, 16, 8, 2, 4};
    mr_eplb_placement readme, ours, best;
    cr_assert_eq(mr_eplb_placement_from_phy2log(&readme, 2, 12, 16, 8, readme_phy2log, err,
                                                sizeof err),
                 MR_EPLB_OK, "%s", err);
    mr_eplb_score reference;
    cr_assert_eq(mr_eplb_evaluate(&readme, readme_weight, &reference, err, sizeof err),
                 MR_EPLB_OK);
    mr_eplb_solve_options o = options_for(&s, MR_EPLB_POLICY_DEEPSEEK);
    mr_eplb_solve_result r;
    cr_assert_eq(mr_eplb_solve(readme_weight, 2, 12, &o, &ours, &r, err, sizeof err),
                 MR_EPLB_OK, "%s", err);
    cr_assert_geq(r.after.balancedness, reference.balancedness);
    /* Ties broken by the lower index reproduce it exactly. */
    cr_assert_eq(memcmp(ours.phy2log, readme_phy2log, sizeof readme_phy2log), 0);
    o.policy = MR_EPLB_POLICY_AUTO;
    mr_eplb_solve_result d;
    cr_assert_eq(mr_eplb_solve(readme_weight, 2, 12, &o, &best, &d, err, sizeof err),
                 MR_EPLB_OK);
    cr_assert_geq(d.after.balancedness, r.after.balancedness, "auto %.4f < deepseek %.4f",
                  d.after.balancedness, r.after.balancedness);
    cr_assert_eq(d.chosen, MR_EPLB_POLICY_HIERARCHICAL, "a tie across nodes goes hierarchical");
    mr_eplb_placement_free(&readme);
    mr_eplb_placement_free(&ours);
    mr_eplb_placement_free(&best);
}

Test(eplb_solve, global_is_within_two_percent_of_a_reachable_bound)
{
    rng = 5;
    enum { LAYERS = 8, EXPERTS = 256 };
    static double load[LAYERS * EXPERTS];
    zipf(load, LAYERS, EXPERTS, 1.1, 8192.0 * 8 * 100);
    const shape shapes_reachable[] = {{256, 288, 16, 2, 8}, {256, 320, 64, 8, 8}};
    for (size_t i = 0; i < 2; i++) {
        mr_eplb_solve_options o = options_for(&shapes_reachable[i], MR_EPLB_POLICY_GLOBAL);
        mr_eplb_placement p;
        mr_eplb_solve_result r;
        cr_assert_eq(mr_eplb_solve(load, LAYERS, EXPERTS, &o, &p, &r, err, sizeof err),
                     MR_EPLB_OK, "%s", err);
        cr_assert_geq(r.after.balancedness, 0.98 * r.after.bound, "%d ranks: %.4f vs bound %.4f",
                      o.n_ranks, r.after.balancedness, r.after.bound);
        cr_assert_gt(r.after.balancedness, r.before.balancedness);
        mr_eplb_placement_free(&p);
    }
}

/* The best balancedness of one layer over every placement (every phy2log
 * that gives each expert a slot), by enumeration: small shapes only. */
static double best_by_enumeration(const double *load, int experts, int physical, int ranks)
{
    int32_t phy2log[16], cnt[16];
    double rank_load[16], total = 0, best_max = HUGE_VAL;
    for (int e = 0; e < experts; e++)
        total += load[e];
    memset(phy2log, 0, sizeof phy2log);
    for (;;) {
        memset(cnt, 0, sizeof cnt);
        for (int i = 0; i < physical; i++)
            cnt[phy2log[i]]++;
        bool every = true;
        for (int e = 0; e < experts; e++)
            every = every && cnt[e] > 0;
        if (every) {
            double max = 0;
            for (int r = 0; r < ranks; r++) {
                rank_load[r] = 0;
                for (int i = r * (physical / ranks); i < (r + 1) * (physical / ranks); i++)
                    rank_load[r] += load[phy2log[i]] / cnt[phy2log[i]];
                max = rank_load[r] > max ? rank_load[r] : max;
            }
            best_max = max < best_max ? max : best_max;
        }
        int i = 0;
        while (i < physical && ++phy2log[i] == experts)
            phy2log[i++] = 0;
        if (i == physical)
            break;
    }
    return best_max > 0 ? total / ranks / best_max : 1.0;
}

/* The bound is a bound: no placement at all beats it, checked against
 * every placement of small random layers (uniform, skewed, with zeros). */
Test(eplb_solve, no_placement_beats_the_bound)
{
    rng = 23;
    static const struct {
        int experts, physical, ranks;
    } small[] = {{4, 6, 2}, {4, 6, 3}, {3, 6, 3}, {5, 6, 3}, {4, 8, 4}, {6, 6, 2}, {5, 8, 2}};
    int rounds = 12 * scale();
    for (int round = 0; round < rounds; round++)
        for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
            int E = small[i].experts, P = small[i].physical, R = small[i].ranks;
            double load[8];
            if (round % 3 == 0)
                zipf(load, 1, E, 0.5 + 2 * uniform(), 1e4);
            else
                for (int e = 0; e < E; e++)
                    load[e] = uniform() < 0.2 ? 0 : floor(uniform() * 1000);
            mr_eplb_placement p;
            mr_eplb_score score;
            cr_assert_eq(mr_eplb_placement_round_robin(&p, 1, E, P, R, err, sizeof err),
                         MR_EPLB_OK, "%s", err);
            cr_assert_eq(mr_eplb_evaluate(&p, load, &score, err, sizeof err), MR_EPLB_OK);
            double best = best_by_enumeration(load, E, P, R);
            cr_assert_leq(best, score.bound * (1 + 1e-9),
                          "%d experts, %d slots, %d ranks: %.9f reachable, bound %.9f", E, P,
                          R, best, score.bound);
            mr_eplb_placement_free(&p);
        }
}

/* A fifth of each layer's experts trade load with one up to 4 places away
 * in popularity. */
static void drift(double *load, int layers, int experts)
{
    int *order = malloc((size_t)experts * sizeof *order);
    for (int l = 0; l < layers; l++) {
        double *row = load + (size_t)l * experts;
        for (int e = 0; e < experts; e++)
            order[e] = e;
        for (int i = 1; i < experts; i++)
            for (int j = i; j > 0 && row[order[j - 1]] < row[order[j]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        for (int p = 0; p < experts / 10; p++) {
            int i = (int)(uniform() * experts), j = i + 1 + (int)(uniform() * 4);
            j = j < experts ? j : experts - 1;
            double t = row[order[i]];
            row[order[i]] = row[order[j]];
            row[order[j]] = t;
        }
    }
    free(order);
}

Test(eplb_solve, migration_stays_within_its_moves_and_near_a_fresh_solve)
{
    rng = 9;
    enum { LAYERS = 8, EXPERTS = 256 };
    static double load[LAYERS * EXPERTS];
    zipf(load, LAYERS, EXPERTS, 1.1, 8192.0 * 8 * 100);
    const shape s = {EXPERTS, 288, 16, 2, 8};
    mr_eplb_solve_options o = options_for(&s, MR_EPLB_POLICY_AUTO);
    mr_eplb_placement current, fresh, moved;
    mr_eplb_solve_result fr, mr;
    cr_assert_eq(mr_eplb_solve(load, LAYERS, EXPERTS, &o, &current, NULL, err, sizeof err),
                 MR_EPLB_OK, "%s", err);
    drift(load, LAYERS, EXPERTS);
    cr_assert_eq(mr_eplb_solve(load, LAYERS, EXPERTS, &o, &fresh, &fr, err, sizeof err),
                 MR_EPLB_OK);
    o.current = &current;
    o.max_moves = LAYERS * s.physical / 10;
    o.expert_bytes = 1000;
    cr_assert_eq(mr_eplb_solve(load, LAYERS, EXPERTS, &o, &moved, &mr, err, sizeof err),
                 MR_EPLB_OK, "%s", err);
    check_placement(&moved, LAYERS, EXPERTS, s.physical, s.ranks);
    cr_assert_leq(mr.experts_moved, o.max_moves);
    cr_assert_eq(mr.experts_moved, mr_eplb_moves(&current, &moved, NULL));
    cr_assert_eq(mr.bytes_moved, (uint64_t)mr.experts_moved * 1000);
    cr_assert_geq(mr.after.balancedness, 0.99 * fr.after.balancedness, "%.4f vs fresh %.4f",
                  mr.after.balancedness, fr.after.balancedness);
    cr_assert_gt(mr.after.balancedness, mr.before.balancedness);
    cr_assert_lt(mr.experts_moved, mr_eplb_moves(&current, &fresh, NULL) / 4,
                 "moves far fewer experts than a fresh solve");
    /* No moves allowed: nothing moves. */
    o.max_moves = 0;
    mr_eplb_placement_free(&moved);
    cr_assert_eq(mr_eplb_solve(load, LAYERS, EXPERTS, &o, &moved, &mr, err, sizeof err),
                 MR_EPLB_OK);
    cr_assert_eq(mr.experts_moved, 0);
    cr_assert_eq(mr.layers_changed, 0);
    cr_assert_eq(memcmp(moved.phy2log, current.phy2log,
                        (size_t)LAYERS * s.physical * sizeof *moved.phy2log),
                 0);
    mr_eplb_placement_free(&current);
    mr_eplb_placement_free(&fresh);
    mr_eplb_placement_free(&moved);
}

Test(eplb_solve, bad_options_say_why)
{
    double load[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    mr_eplb_placement p;
    const struct {
        shape s;
        const char *message;
    } cases[] = {
        {{8, 6, 2, 1, 1}, "6 physical slots cannot hold 8 experts"},
        {{8, 10, 4, 1, 1}, "10 physical slots do not divide evenly over 4 ranks; 2 more would"},
        {{8, 12, 4, 3, 1}, "4 ranks do not divide evenly over 3 nodes"},
        {{8, 12, 4, 2, 3}, "8 experts do not make 3 groups of equal size"},
        {{8, 8, 0, 1, 1}, "at least one rank"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mr_eplb_solve_options o = options_for(&cases[i].s, MR_EPLB_POLICY_AUTO);
        cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &p, NULL, err, sizeof err), MR_EPLB_EINVAL);
        cr_assert(strstr(err, cases[i].message), "%s", err);
    }
    const shape ok = {8, 8, 4, 1, 1};
    mr_eplb_solve_options o = options_for(&ok, MR_EPLB_POLICY_GLOBAL);
    load[3] = -1;
    cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &p, NULL, err, sizeof err), MR_EPLB_EINVAL);
    cr_assert(strstr(err, "layer 0, expert 3: -1 is not a token count"), "%s", err);
    load[3] = NAN;
    cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &p, NULL, err, sizeof err), MR_EPLB_EINVAL);
    load[3] = 4;
    mr_eplb_placement other;
    cr_assert_eq(mr_eplb_placement_contiguous(&other, 2, 8, 4, err, sizeof err), MR_EPLB_OK);
    o.current = &other;
    cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &p, NULL, err, sizeof err), MR_EPLB_EINVAL);
    cr_assert(strstr(err, "the current placement has 2 layers"), "%s", err);
    mr_eplb_placement_free(&other);
    o.current = NULL;
    o.policy = (mr_eplb_policy)42;
    cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &p, NULL, err, sizeof err), MR_EPLB_EINVAL);
}

Test(eplb_solve, policy_names)
{
    for (size_t i = 0; i < N_POLICIES; i++) {
        mr_eplb_policy back;
        const char *name = mr_eplb_policy_name(policies[i]);
        cr_assert(name);
        cr_assert_eq(mr_eplb_policy_parse(name, &back), MR_EPLB_OK);
        cr_assert_eq(back, policies[i]);
    }
    mr_eplb_policy p;
    cr_assert_eq(mr_eplb_policy_parse("greedy", &p), MR_EPLB_EINVAL);
    cr_assert_null(mr_eplb_policy_name((mr_eplb_policy)-1));
    cr_assert_str_eq(mr_eplb_policy_name(MR_EPLB_POLICY_DEEPSEEK), "deepseek");
}

Test(eplb_solve, scores_moves_and_locality_by_hand)
{
    /* 4 experts, 6 slots on 3 ranks: [0 1] [0 2] [3 0]; expert 0 has three
     * replicas, each carrying a third of its 90 tokens. */
    static const int32_t phy2log[] = {0, 1, 0, 2, 3, 0};
    static const double load[] = {90, 10, 20, 60};
    mr_eplb_placement p;
    cr_assert_eq(mr_eplb_placement_from_phy2log(&p, 1, 4, 6, 3, phy2log, err, sizeof err),
                 MR_EPLB_OK);
    double rank_load[3];
    mr_eplb_rank_loads(&p, load, 0, rank_load);
    cr_assert_float_eq(rank_load[0], 40, 1e-9);
    cr_assert_float_eq(rank_load[1], 50, 1e-9);
    cr_assert_float_eq(rank_load[2], 90, 1e-9);
    mr_eplb_score sc;
    cr_assert_eq(mr_eplb_evaluate(&p, load, &sc, err, sizeof err), MR_EPLB_OK);
    cr_assert_float_eq(sc.balancedness, 60.0 / 90, 1e-12);
    cr_assert_float_eq(sc.max_over_mean, 90.0 / 60, 1e-12);
    /* The floor is the mean: the heaviest replica can be 45 (expert 0 in
     * two, expert 3 in two), and with its partner at least 45 + 10/3. */
    cr_assert_float_eq(sc.bound, 1.0, 1e-12);
    /* Groups {0,1} and {2,3} on three nodes of one rank: group 0 serves
     * 30 + 10 on node 0 and 30 on each other, group 1 serves 60 on node 2. */
    double locality;
    cr_assert_eq(mr_eplb_group_locality(&p, load, 3, 2, &locality, err, sizeof err),
                 MR_EPLB_OK);
    cr_assert_float_eq(locality, (40 + 60) / 180.0, 1e-12);
    /* Rank 2 trades expert 3 for expert 1: it loads 1 (new), rank 0 loads
     * 3 (new). */
    static const int32_t swapped[] = {0, 3, 0, 2, 1, 0};
    mr_eplb_placement q;
    cr_assert_eq(mr_eplb_placement_from_phy2log(&q, 1, 4, 6, 3, swapped, err, sizeof err),
                 MR_EPLB_OK);
    int changed;
    cr_assert_eq(mr_eplb_moves(&p, &q, &changed), 2);
    cr_assert_eq(changed, 1);
    cr_assert_eq(mr_eplb_moves(&p, &p, &changed), 0);
    cr_assert_eq(changed, 0);
    mr_eplb_placement_free(&q);
    cr_assert_eq(mr_eplb_placement_contiguous(&q, 2, 4, 3, err, sizeof err), MR_EPLB_OK);
    cr_assert_eq(mr_eplb_moves(&p, &q, NULL), -1, "shapes differ");
    mr_eplb_placement_free(&p);
    mr_eplb_placement_free(&q);
}

Test(eplb_solve, before_is_the_current_or_the_contiguous_placement)
{
    static const double load[] = {100, 1, 1, 1, 1, 1, 1, 1};
    const shape s = {8, 12, 4, 1, 1};
    mr_eplb_solve_options o = options_for(&s, MR_EPLB_POLICY_GLOBAL);
    mr_eplb_placement p, contiguous;
    mr_eplb_solve_result r;
    cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &p, &r, err, sizeof err), MR_EPLB_OK);
    cr_assert_eq(mr_eplb_placement_contiguous(&contiguous, 1, 8, 4, err, sizeof err),
                 MR_EPLB_OK);
    mr_eplb_score sc;
    cr_assert_eq(mr_eplb_evaluate(&contiguous, load, &sc, err, sizeof err), MR_EPLB_OK);
    cr_assert_float_eq(r.before.balancedness, sc.balancedness, 1e-12);
    cr_assert_eq(r.chosen, MR_EPLB_POLICY_GLOBAL);
    cr_assert_geq(r.seconds, 0);
    o.current = &p;
    o.max_moves = -1;
    mr_eplb_placement q;
    cr_assert_eq(mr_eplb_solve(load, 1, 8, &o, &q, &r, err, sizeof err), MR_EPLB_OK);
    cr_assert_eq(r.experts_moved, 0, "a placement already best stays");
    mr_eplb_placement_free(&p);
    mr_eplb_placement_free(&q);
    mr_eplb_placement_free(&contiguous);
}
