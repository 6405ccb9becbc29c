/*
 * EPLB solvers on synthetic traces shaped like a large MoE model's: 58 MoE
 * layers of 256 experts (DeepSeek-V3's), 8 expert groups, each layer's
 * popularity a Zipf law (exponent 1.0 to 1.2) over a random order of the
 * experts, sampled as 100 steps of 8192 tokens x top-8.  For 8 to 72 ranks
 * (8 per node), with no redundant slots and with about 32 (the fewest that
 * fill the ranks evenly), it prints DeepSeek's EPLB next to moerun's
 * default (auto): balancedness of the contiguous placement and of the
 * solve, the bound, the gap to it, balancedness on a fresh sample of the
 * same popularity (out of sample), group locality and solve time for all
 * layers on one core (best of 5).  Then, after a drift (a fifth of the
 * experts trade popularity), the migration-aware re-solve allowed 10% of
 * the physical slots of all layers as moves, against a fresh re-solve.
 * Targets are marked PASS or MISS; none fails the benchmark.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"

#define LAYERS 58
#define EXPERTS 256
#define GROUPS 8
#define RANKS_PER_NODE 8
#define PICKS (8192.0 * 8 * 100)
#define REPEATS 5

static uint64_t rng_state = 0x5eedULL;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(void)
{
    return (double)(next_u64() >> 11) * 0x1.0p-53;
}

static double normal(void)
{
    double u = uniform(), v = uniform();
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

/* Per layer, each expert's share of the picks; rank[l][i] is the expert
 * i-th in popularity. */
static void popularity(double *share, int *rank)
{
    for (int l = 0; l < LAYERS; l++) {
        int *order = rank + l * EXPERTS;
        double s = 1.0 + 0.2 * uniform(), sum = 0;
        for (int e = 0; e < EXPERTS; e++)
            order[e] = e;
        for (int e = EXPERTS - 1; e > 0; e--) {
            int j = (int)(next_u64() % (uint64_t)(e + 1)), t = order[e];
            order[e] = order[j];
            order[j] = t;
        }
        for (int i = 0; i < EXPERTS; i++)
            sum += pow(i + 1, -s);
        for (int i = 0; i < EXPERTS; i++)
            share[l * EXPERTS + order[i]] = pow(i + 1, -s) / sum;
    }
}

/* Counts drawn around share * PICKS (the normal approximation of a
 * multinomial's marginals). */
static void sample(const double *share, double *load)
{
    for (int i = 0; i < LAYERS * EXPERTS; i++) {
        double mean = share[i] * PICKS;
        double v = round(mean + sqrt(mean) * normal());
        load[i] = v > 0 ? v : 0;
    }
}

/* A fifth of each layer's experts trade shares in pairs: with a neighbour
 * up to 4 places away in popularity (gradual drift, as between online
 * re-solves) or with any other expert (a shift of workload). */
static void drift(double *share, int *rank, bool anywhere)
{
    for (int l = 0; l < LAYERS; l++) {
        int *order = rank + l * EXPERTS;
        for (int p = 0; p < EXPERTS / 10; p++) {
            int i = (int)(next_u64() % EXPERTS);
            int j = anywhere ? (int)(next_u64() % EXPERTS) : i + 1 + (int)(next_u64() % 4);
            j = j < EXPERTS ? j : EXPERTS - 1;
            double *a = &share[l * EXPERTS + order[i]], *b = &share[l * EXPERTS + order[j]];
            double t = *a;
            *a = *b;
            *b = t;
            int o = order[i];
            order[i] = order[j];
            order[j] = o;
        }
    }
}

static void check(int rc, const char *err)
{
    if (rc != MR_EPLB_OK) {
        fprintf(stderr, "bench_eplb: %s\n", err);
        exit(1);
    }
}

typedef struct {
    mr_eplb_placement p;
    mr_eplb_solve_result r;
    double oos, locality, best_seconds;
} solved;

static void solve(const double *load, const double *out_of_sample,
                  const mr_eplb_solve_options *o, solved *s)
{
    char err[512];
    s->best_seconds = 1e9;
    for (int i = 0; i < REPEATS; i++) {
        if (i)
            mr_eplb_placement_free(&s->p);
        check(mr_eplb_solve(load, LAYERS, EXPERTS, o, &s->p, &s->r, err, sizeof err), err);
        s->best_seconds = s->r.seconds < s->best_seconds ? s->r.seconds : s->best_seconds;
    }
    mr_eplb_score oos;
    check(mr_eplb_evaluate(&s->p, out_of_sample, &oos, err, sizeof err), err);
    s->oos = oos.balancedness;
    check(mr_eplb_group_locality(&s->p, load, o->n_nodes, o->n_groups, &s->locality, err,
                                 sizeof err),
          err);
}

static const char *mark(int ok)
{
    return ok ? "PASS" : "MISS";
}

static void print_row(int ranks, int redundant, const char *policy, const solved *s)
{
    const mr_eplb_score *a = &s->r.after;
    printf("%5d %4d  %-9s %6.4f  %6.4f  %6.4f  %5.2f%%  %6.4f  %6.2f  %6.3f", ranks, redundant,
           policy, s->r.before.balancedness, a->balancedness, a->bound,
           100 * (a->bound - a->balancedness) / a->bound, s->oos, 1e3 * s->best_seconds,
           s->locality);
}

/* The migration-aware re-solve after a drift, from the auto placement. */
static void migration(const char *what, const double *drifted, const mr_eplb_solve_options *base,
                      const solved *current)
{
    char err[512];
    mr_eplb_solve_options o = *base;
    mr_eplb_placement fresh, moved;
    mr_eplb_solve_result fr, mr;
    check(mr_eplb_solve(drifted, LAYERS, EXPERTS, &o, &fresh, &fr, err, sizeof err), err);
    o.current = &current->p;
    o.max_moves = LAYERS * o.n_physical / 10;
    check(mr_eplb_solve(drifted, LAYERS, EXPERTS, &o, &moved, &mr, err, sizeof err), err);
    int fresh_moves = mr_eplb_moves(&current->p, &fresh, NULL);
    bool ok = mr.experts_moved <= o.max_moves &&
              mr.after.balancedness >= 0.99 * fr.after.balancedness;
    printf("      %-8s was %6.4f; fresh %6.4f, %5d moves; migration-aware %6.4f, %4d moves "
           "(%d allowed), %5.1f ms  %s\n",
           what, mr.before.balancedness, fr.after.balancedness, fresh_moves,
           mr.after.balancedness, mr.experts_moved, o.max_moves, 1e3 * mr.seconds, mark(ok));
    mr_eplb_placement_free(&fresh);
    mr_eplb_placement_free(&moved);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    size_t n = (size_t)LAYERS * EXPERTS;
    double *share = malloc(n * sizeof *share), *load = malloc(n * sizeof *load);
    double *oos = malloc(n * sizeof *oos), *drifted = malloc(n * sizeof *drifted);
    double *shifted = malloc(n * sizeof *shifted), *moved_share = malloc(n * sizeof *moved_share);
    int *rank = malloc(n * sizeof *rank), *moved_rank = malloc(n * sizeof *moved_rank);
    if (!share || !load || !oos || !drifted || !shifted || !moved_share || !rank || !moved_rank)
        return 1;
    popularity(share, rank);
    sample(share, load);
    sample(share, oos);
    memcpy(moved_share, share, n * sizeof *share);
    memcpy(moved_rank, rank, n * sizeof *rank);
    drift(moved_share, moved_rank, false);
    sample(moved_share, drifted);
    drift(share, rank, true);
    sample(share, shifted);

    printf("bench_eplb: %d layers x %d experts, %d groups, %d ranks per node; Zipf 1.0-1.2, "
           "%.0f picks per layer\n",
           LAYERS, EXPERTS, GROUPS, RANKS_PER_NODE, PICKS);
    printf("ranks  red  policy    before  after   bound   gap     oos     ms      local   "
           "targets\n");
    static const int rank_counts[] = {8, 16, 32, 64, 72};
    static const int asked[] = {0, 32};
    for (size_t i = 0; i < sizeof rank_counts / sizeof *rank_counts; i++) {
        int ranks = rank_counts[i], last = -1;
        for (size_t j = 0; j < sizeof asked / sizeof *asked; j++) {
            int redundant = asked[j];
            while ((EXPERTS + redundant) % ranks)
                redundant++;
            if (redundant == last)
                continue;
            last = redundant;
            mr_eplb_solve_options o = {.n_physical = EXPERTS + redundant,
                                       .n_ranks = ranks,
                                       .n_nodes = ranks / RANKS_PER_NODE,
                                       .n_groups = GROUPS,
                                       .max_moves = -1};
            solved ds, def;
            o.policy = MR_EPLB_POLICY_DEEPSEEK;
            solve(load, oos, &o, &ds);
            print_row(ranks, redundant, "deepseek", &ds);
            printf("\n");
            o.policy = MR_EPLB_POLICY_AUTO;
            solve(load, oos, &o, &def);
            print_row(ranks, redundant, "auto", &def);
            const mr_eplb_score *a = &def.r.after;
            printf("  >=deepseek %s  gap<=2%% %s", mark(a->balancedness >= ds.r.after.balancedness),
                   mark(a->balancedness >= 0.98 * a->bound));
            if (ranks == 64)
                printf("  <10ms %s", mark(def.best_seconds < 0.010));
            printf("\n");
            migration("drift", drifted, &o, &def);
            migration("shift", shifted, &o, &def);
            mr_eplb_placement_free(&ds.p);
            mr_eplb_placement_free(&def.p);
        }
    }
    free(share);
    free(load);
    free(oos);
    free(drifted);
    free(shifted);
    free(moved_share);
    free(rank);
    free(moved_rank);
    return 0;
}
