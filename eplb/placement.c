/*
 * Placement maps.  phy2log is the primary form (it is what a solver
 * produces and what a checkpoint stores); log2phy and logcnt are derived
 * from it so the three can never disagree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"

void mr_eplb_placement_free(mr_eplb_placement *p)
{
    free(p->phy2log);
    free(p->log2phy);
    free(p->logcnt);
    memset(p, 0, sizeof *p);
}

static int check_shape(int layers, int n_logical, int n_physical, int ranks, char *err,
                       size_t errlen)
{
    if (layers < 1 || n_logical < 1 || ranks < 1) {
        snprintf(err, errlen, "a placement needs at least one layer, expert and rank "
                              "(got %d, %d, %d)", layers, n_logical, ranks);
        return MR_EPLB_EINVAL;
    }
    if (n_physical < n_logical) {
        snprintf(err, errlen, "%d physical slots cannot hold %d experts", n_physical,
                 n_logical);
        return MR_EPLB_EINVAL;
    }
    if (n_physical % ranks != 0) {
        snprintf(err, errlen,
                 "%d physical expert slots do not divide evenly over %d ranks; use a rank "
                 "count that divides %d, or redundant slots to make up the difference",
                 n_physical, ranks, n_physical);
        return MR_EPLB_EINVAL;
    }
    return MR_EPLB_OK;
}

int mr_eplb_placement_from_phy2log(mr_eplb_placement *p, int layers, int n_logical,
                                   int n_physical, int ranks, const int32_t *phy2log,
                                   char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    int rc = check_shape(layers, n_logical, n_physical, ranks, err, errlen);
    if (rc != MR_EPLB_OK)
        return rc;
    size_t slots = (size_t)layers * (size_t)n_physical;
    size_t experts = (size_t)layers * (size_t)n_logical;
    int max_replicas = 0;
    p->logcnt = calloc(experts, sizeof *p->logcnt);
    p->phy2log = malloc(slots * sizeof *p->phy2log);
    if (!p->logcnt || !p->phy2log)
        goto oom;
    memcpy(p->phy2log, phy2log, slots * sizeof *p->phy2log);
    for (int l = 0; l < layers; l++)
        for (int s = 0; s < n_physical; s++) {
            int32_t e = phy2log[(size_t)l * n_physical + s];
            if (e < 0 || e >= n_logical) {
                snprintf(err, errlen, "layer %d slot %d holds expert %d, outside 0..%d", l, s,
                         e, n_logical - 1);
                mr_eplb_placement_free(p);
                return MR_EPLB_EINVAL;
            }
            int32_t n = ++p->logcnt[(size_t)l * n_logical + e];
            max_replicas = n > max_replicas ? n : max_replicas;
        }
    for (int l = 0; l < layers; l++)
        for (int e = 0; e < n_logical; e++)
            if (p->logcnt[(size_t)l * n_logical + e] == 0) {
                snprintf(err, errlen, "layer %d: expert %d has no slot", l, e);
                mr_eplb_placement_free(p);
                return MR_EPLB_EINVAL;
            }
    p->log2phy = malloc(experts * (size_t)max_replicas * sizeof *p->log2phy);
    if (!p->log2phy)
        goto oom;
    for (size_t i = 0; i < experts * (size_t)max_replicas; i++)
        p->log2phy[i] = -1;
    for (int l = 0; l < layers; l++)
        for (int s = 0; s < n_physical; s++) {
            size_t row = (size_t)l * n_logical + (size_t)phy2log[(size_t)l * n_physical + s];
            int32_t *replicas = p->log2phy + row * (size_t)max_replicas;
            int r = 0;
            while (replicas[r] >= 0)
                r++;
            replicas[r] = s;
        }
    p->n_layers = layers;
    p->n_logical = n_logical;
    p->n_physical = n_physical;
    p->n_ranks = ranks;
    p->max_replicas = max_replicas;
    return MR_EPLB_OK;
oom:
    mr_eplb_placement_free(p);
    snprintf(err, errlen, "out of memory for the expert placement");
    return MR_EPLB_ENOMEM;
}

int mr_eplb_placement_round_robin(mr_eplb_placement *p, int layers, int experts, int n_physical,
                                  int ranks, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    int rc = check_shape(layers, experts, n_physical, ranks, err, errlen);
    if (rc != MR_EPLB_OK)
        return rc;
    int32_t *phy2log = malloc((size_t)layers * (size_t)n_physical * sizeof *phy2log);
    if (!phy2log) {
        snprintf(err, errlen, "out of memory for the expert placement");
        return MR_EPLB_ENOMEM;
    }
    for (int l = 0; l < layers; l++)
        for (int s = 0; s < n_physical; s++)
            phy2log[(size_t)l * n_physical + s] = s % experts;
    rc = mr_eplb_placement_from_phy2log(p, layers, experts, n_physical, ranks, phy2log, err,
                                        errlen);
    free(phy2log);
    return rc;
}

int mr_eplb_placement_contiguous(mr_eplb_placement *p, int layers, int experts, int ranks,
                                 char *err, size_t errlen)
{
    if (ranks < 1 || experts < 1) {
        memset(p, 0, sizeof *p);
        return check_shape(layers, experts, experts, ranks, err, errlen);
    }
    int n_physical = mr_eplb_contiguous_slots_per_rank(experts, ranks) * ranks;
    return mr_eplb_placement_round_robin(p, layers, experts, n_physical, ranks, err, errlen);
}
