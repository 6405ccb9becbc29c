/*
 * moerun's hierarchical solver: nodes first, then ranks inside them, for
 * models whose router keeps a token within a few expert groups (DeepSeek's
 * group-limited routing): a group whose experts share a node costs its
 * tokens one inter-node transfer instead of several.
 *
 * DeepSeek's hierarchical policy puts whole groups on nodes and gives every
 * node the same number of logical experts and replicas, so a node that
 * draws hot groups is hot and its ranks cannot be balanced from inside it.
 * Here balance comes first and locality takes what balance leaves free:
 *   1. solve the layer with the global solver; its largest rank load M is
 *      the cap nothing below may exceed, so this policy is never less
 *      balanced than global;
 *   2. give each group a home node: heaviest group first, to the node with
 *      the least load among those with slots left for all its replicas
 *      (else to the one with most slots left: the group will split); groups
 *      need not divide over nodes, and a node takes as many replicas as its
 *      slots hold, not a fixed share;
 *   3. place the global solution's ranks on nodes (whole ranks, so no load
 *      changes), each on the node whose home groups it holds most load of,
 *      as far as nodes have room;
 *   4. one pass over the slots away from home: swap each with the replica
 *      on its home node that brings most load home, as long as both ranks
 *      stay at or under M and no rank gets two replicas of an expert (more
 *      passes bring home a few percent more, for as much time again).
 * Without groups (or with one node) there is nothing to keep together and
 * the global solution stands.
 */
#include <string.h>

#include "eplb/eplb_internal.h"

typedef struct {
    int32_t *cnt;             /* [experts] */
    double *w;                /* [experts]: load per replica */
    double *group_load;       /* [groups] */
    int32_t *group_items;     /* [groups]: replicas */
    int32_t *by_load;         /* [groups] */
    mr_eplb_sort_entry *sort; /* [2 max(groups, ranks)] */
    int32_t *home;            /* [groups] */
    int32_t *expert_home;     /* [experts]: its group's home, looked up without a division */
    double *node_load;        /* [nodes] */
    int32_t *node_room;       /* [nodes]: slots not yet promised to a group */
    double *affinity;         /* [ranks * nodes]: home load a rank holds per node */
    double *strongest;        /* [ranks]: its most */
    int32_t *pairs;           /* [ranks]: ranks by it */
    int32_t *node_of;         /* [ranks] */
    int32_t *placed;          /* [nodes]: ranks placed on each */
    int32_t *relabelled;      /* [n_physical] */
    double *slot_w;           /* [n_physical]: the weight of the replica in each slot */
    int32_t *by_weight;       /* [n_physical]: each node's slots, heaviest first */
    mr_eplb_bins bins;
} locality_work;

static void carve(void *work, mr_eplb_arena *a, const mr_eplb_shape *s)
{
    locality_work *w = work;
    int pairs = s->n_ranks * s->n_nodes;
    MR_EPLB_TAKE(a, w->cnt, s->experts);
    MR_EPLB_TAKE(a, w->w, s->experts);
    MR_EPLB_TAKE(a, w->group_load, s->n_groups);
    MR_EPLB_TAKE(a, w->group_items, s->n_groups);
    MR_EPLB_TAKE(a, w->by_load, s->n_groups);
    int sorted = s->n_ranks > s->n_groups ? s->n_ranks : s->n_groups;
    sorted = sorted > s->n_physical / s->n_nodes ? sorted : s->n_physical / s->n_nodes;
    MR_EPLB_TAKE(a, w->sort, 2 * sorted);
    MR_EPLB_TAKE(a, w->home, s->n_groups);
    MR_EPLB_TAKE(a, w->expert_home, s->experts);
    MR_EPLB_TAKE(a, w->node_load, s->n_nodes);
    MR_EPLB_TAKE(a, w->node_room, s->n_nodes);
    MR_EPLB_TAKE(a, w->affinity, pairs);
    MR_EPLB_TAKE(a, w->strongest, s->n_ranks);
    MR_EPLB_TAKE(a, w->pairs, s->n_ranks);
    MR_EPLB_TAKE(a, w->node_of, s->n_ranks);
    MR_EPLB_TAKE(a, w->placed, s->n_nodes);
    MR_EPLB_TAKE(a, w->relabelled, s->n_physical);
    MR_EPLB_TAKE(a, w->slot_w, s->n_physical);
    MR_EPLB_TAKE(a, w->by_weight, s->n_physical);
    mr_eplb_bins_carve(&w->bins, a, s->n_ranks, s->per_rank, s->experts);
}

static int group_of(const mr_eplb_shape *s, int32_t expert)
{
    return expert / (s->experts / s->n_groups);
}

static void choose_homes(locality_work *w, const mr_eplb_shape *s, const int32_t *phy2log)
{
    memset(w->group_load, 0, (size_t)s->n_groups * sizeof *w->group_load);
    memset(w->group_items, 0, (size_t)s->n_groups * sizeof *w->group_items);
    for (int i = 0; i < s->n_physical; i++) {
        w->group_load[group_of(s, phy2log[i])] += w->w[phy2log[i]];
        w->group_items[group_of(s, phy2log[i])]++;
    }
    for (int n = 0; n < s->n_nodes; n++) {
        w->node_load[n] = 0;
        w->node_room[n] = s->n_physical / s->n_nodes;
    }
    mr_eplb_sort_desc(w->group_load, s->n_groups, w->by_load, w->sort);
    for (int i = 0; i < s->n_groups; i++) {
        int g = w->by_load[i], fit = -1, roomiest = 0;
        for (int n = 0; n < s->n_nodes; n++) {
            if (w->node_room[n] >= w->group_items[g] &&
                (fit < 0 || w->node_load[n] < w->node_load[fit]))
                fit = n;
            if (w->node_room[n] > w->node_room[roomiest])
                roomiest = n;
        }
        int n = fit >= 0 ? fit : roomiest;
        w->home[g] = n;
        w->node_load[n] += w->group_load[g];
        w->node_room[n] -= w->group_items[g];
    }
    for (int e = 0; e < s->experts; e++)
        w->expert_home[e] = w->home[group_of(s, e)];
}

/* Step 3: rewrites phy2log with its ranks in their new places.  Ranks
 * holding most home load choose first, each the node it holds most for
 * among those with room. */
static void place_ranks(locality_work *w, const mr_eplb_shape *s, int32_t *phy2log)
{
    int nodes = s->n_nodes, per_node = s->n_ranks / nodes;
    memset(w->affinity, 0, (size_t)s->n_ranks * (size_t)nodes * sizeof *w->affinity);
    for (int i = 0; i < s->n_physical; i++)
        w->affinity[(size_t)(i / s->per_rank) * nodes + (size_t)w->expert_home[phy2log[i]]] +=
            w->w[phy2log[i]];
    for (int r = 0; r < s->n_ranks; r++) {
        w->strongest[r] = 0;
        for (int n = 0; n < nodes; n++)
            if (w->affinity[r * nodes + n] > w->strongest[r])
                w->strongest[r] = w->affinity[r * nodes + n];
    }
    mr_eplb_sort_desc(w->strongest, s->n_ranks, w->pairs, w->sort);
    memset(w->placed, 0, (size_t)nodes * sizeof *w->placed);
    for (int i = 0; i < s->n_ranks; i++) {
        int r = w->pairs[i], best = -1;
        for (int n = 0; n < nodes; n++)
            if (w->placed[n] < per_node &&
                (best < 0 || w->affinity[r * nodes + n] > w->affinity[r * nodes + best]))
                best = n;
        w->node_of[r] = best;
        w->placed[best]++;
    }
    /* Ranks keep their relative order inside a node. */
    memset(w->placed, 0, (size_t)nodes * sizeof *w->placed);
    for (int r = 0; r < s->n_ranks; r++) {
        int to = w->node_of[r] * per_node + w->placed[w->node_of[r]]++;
        memcpy(w->relabelled + (size_t)to * s->per_rank, phy2log + (size_t)r * s->per_rank,
               (size_t)s->per_rank * sizeof *phy2log);
    }
    memcpy(phy2log, w->relabelled, (size_t)s->n_physical * sizeof *phy2log);
}

/* Whether slot a comes before slot b in a node's by_weight: heavier, or
 * as heavy and lower. */
static bool slot_before(const locality_work *w, int a, int b)
{
    return w->slot_w[a] > w->slot_w[b] || (w->slot_w[a] == w->slot_w[b] && a < b);
}

/* Each node's slots by weight, for step 4 to look only at those whose
 * weight could trade with a replica without breaking the cap. */
static void sort_node_slots(locality_work *w, const mr_eplb_shape *s)
{
    int per_node = s->n_physical / s->n_nodes;
    for (int i = 0; i < s->n_physical; i++)
        w->slot_w[i] = w->w[w->bins.item[i]];
    for (int n = 0; n < s->n_nodes; n++) {
        int32_t *list = w->by_weight + (size_t)n * per_node;
        mr_eplb_sort_desc(w->slot_w + (size_t)n * per_node, per_node, list, w->sort);
        for (int i = 0; i < per_node; i++)
            list[i] += n * per_node;
    }
}

/* After a swap, `slot` takes its new weight and its place in its node's
 * list. */
static void resort_slot(locality_work *w, const mr_eplb_shape *s, int slot)
{
    int per_node = s->n_physical / s->n_nodes;
    int32_t *list = w->by_weight + (size_t)(slot / per_node) * per_node;
    w->slot_w[slot] = w->w[w->bins.item[slot]];
    int i = 0;
    while (list[i] != slot)
        i++;
    for (; i > 0 && slot_before(w, slot, list[i - 1]); i--)
        list[i] = list[i - 1];
    for (; i < per_node - 1 && slot_before(w, list[i + 1], slot); i++)
        list[i] = list[i + 1];
    list[i] = slot;
}

/* Step 4 for the replica in `slot`, away from its home: the swap with a
 * replica on its home node that brings the most load home under the cap
 * (ties: the lower slot).  A swap keeps both ranks under the cap only if
 * the replica taken weighs within the slack of either rank of x's weight,
 * so only that window of the home node's slots is looked at: after the
 * global solve the ranks are near the cap and the window is narrow. */
static void bring_home(locality_work *w, const mr_eplb_shape *s, int slot, double cap)
{
    mr_eplb_bins *b = &w->bins;
    int per_node = s->n_ranks / s->n_nodes, node_slots = per_node * s->per_rank;
    int r1 = slot / s->per_rank, n1 = r1 / per_node;
    int32_t x = b->item[slot];
    int h = w->expert_home[x];
    double wx = w->w[x];
    if (h == n1 || wx <= 0)
        return;
    double lightest = b->load[h * per_node];
    for (int r2 = h * per_node + 1; r2 < (h + 1) * per_node; r2++)
        lightest = b->load[r2] < lightest ? b->load[r2] : lightest;
    /* Widened by a rounding's worth: the exact tests come below. */
    double margin = cap * 1e-9;
    double lo = wx - (cap - lightest) - margin, hi = wx + (cap - b->load[r1]) + margin;
    const int32_t *list = w->by_weight + (size_t)h * node_slots;
    int first = 0, end = node_slots;
    while (first < end) {
        int mid = (first + end) / 2;
        if (w->slot_w[list[mid]] > hi)
            first = mid + 1;
        else
            end = mid;
    }
    double best = 0;
    int best_slot = -1;
    for (int i = first; i < node_slots && w->slot_w[list[i]] >= lo; i++) {
        int j = list[i], r2 = j / s->per_rank;
        int32_t y = b->item[j];
        int home_y = w->expert_home[y];
        double gain = wx + w->w[y] * ((home_y == n1) - (home_y == h));
        double d = wx - w->w[y];
        if ((gain > best || (gain == best && j < best_slot)) && b->load[r1] - d <= cap &&
            b->load[r2] + d <= cap && !b->holds[(size_t)r2 * s->experts + (size_t)x] &&
            !b->holds[(size_t)r1 * s->experts + (size_t)y]) {
            best = gain;
            best_slot = j;
        }
    }
    if (best_slot >= 0 && best > wx * 1e-12) {
        mr_eplb_bins_swap(b, slot, best_slot);
        resort_slot(w, s, slot);
        resort_slot(w, s, best_slot);
    }
}

static void localize_layer(void *work, const mr_eplb_shape *s, const double *load,
                           int32_t *phy2log)
{
    locality_work *w = work;
    mr_eplb_count_replicas(phy2log, s->n_physical, s->experts, w->cnt);
    mr_eplb_replica_weights(load, w->cnt, s->experts, w->w);
    choose_homes(w, s, phy2log);
    place_ranks(w, s, phy2log);
    mr_eplb_bins_load(&w->bins, phy2log, w->w);
    sort_node_slots(w, s);
    double cap = w->bins.load[mr_eplb_bins_max(&w->bins)];
    for (int slot = 0; slot < s->n_physical; slot++)
        bring_home(w, s, slot, cap);
    memcpy(phy2log, w->bins.item, (size_t)s->n_physical * sizeof *phy2log);
}

int mr_eplb_localize_groups(const mr_eplb_shape *s, const double *load, int layers,
                            int32_t *phy2log, char *err, size_t errlen)
{
    if (s->n_groups <= 1 || s->n_nodes <= 1)
        return MR_EPLB_OK;
    locality_work w;
    return mr_eplb_each_layer(s, load, layers, phy2log, &w, carve, localize_layer, err,
                              errlen);
}
