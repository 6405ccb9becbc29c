/*
 * deepseek-ai/EPLB's eplb.py in C (policy "deepseek"), kept faithful so
 * moerun can be compared with what vLLM and SGLang deploy.  Its two
 * policies:
 *   hierarchical (groups divisible by nodes): pack expert groups onto nodes
 *     (balanced_packing: heaviest first, each to the lightest node with
 *     room, groups/nodes each); on every node, replicate its experts into
 *     its physical_slots/nodes slots (replicate_experts: one replica at a
 *     time to the expert with the largest load per replica) and pack those
 *     onto the node's GPUs the same way.
 *   global (otherwise): the same with one group and one node.
 * Where torch's sort and max leave ties to chance, this takes the lower
 * index, which reproduces the phy2log its README prints.
 */
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb_internal.h"

typedef struct {
    int groups, nodes, group_size, groups_per_node, node_experts, node_slots, node_ranks;
    double *group_load;       /* [groups] */
    int32_t *group_slot;      /* [groups]: node * groups_per_node + place in the node */
    int32_t *mlog2log;        /* [experts]: experts in node-major order */
    double *node_load;        /* [node_experts] */
    int32_t *cnt;             /* [node_experts] */
    int32_t *order;           /* [node_slots]: expert of each of the node's replicas */
    double *replica_load;     /* [node_slots] */
    int32_t *slot_of;         /* [max(node_slots, groups)] */
    int32_t *ids;             /* [max(node_slots, groups)] */
    mr_eplb_sort_entry *sort; /* [2 max(node_slots, groups)] */
    mr_eplb_heap_entry *heap; /* [node_experts] */
    mr_eplb_bins node_bins, gpu_bins;
} deepseek_work;

static void carve(void *work, mr_eplb_arena *a, const mr_eplb_shape *s)
{
    deepseek_work *w = work;
    int most = w->node_slots > w->groups ? w->node_slots : w->groups;
    MR_EPLB_TAKE(a, w->group_load, w->groups);
    MR_EPLB_TAKE(a, w->group_slot, w->groups);
    MR_EPLB_TAKE(a, w->mlog2log, s->experts);
    MR_EPLB_TAKE(a, w->node_load, w->node_experts);
    MR_EPLB_TAKE(a, w->cnt, w->node_experts);
    MR_EPLB_TAKE(a, w->order, w->node_slots);
    MR_EPLB_TAKE(a, w->replica_load, w->node_slots);
    MR_EPLB_TAKE(a, w->slot_of, most);
    MR_EPLB_TAKE(a, w->ids, most);
    MR_EPLB_TAKE(a, w->sort, 2 * most);
    MR_EPLB_TAKE(a, w->heap, w->node_experts);
    mr_eplb_bins_carve(&w->node_bins, a, w->nodes, w->groups_per_node, w->groups);
    mr_eplb_bins_carve(&w->gpu_bins, a, w->node_ranks, s->per_rank, w->node_slots);
}

/* balanced_packing: slot_of[i] = pack * (n / packs) + rank in pack.  With
 * one item per pack it keeps the items in place, as eplb.py does. */
static void balanced_packing(deepseek_work *w, mr_eplb_bins *b, const double *weight, int n)
{
    if (b->per_bin == 1) {
        for (int i = 0; i < n; i++)
            w->slot_of[i] = i;
        return;
    }
    mr_eplb_sort_desc(weight, n, w->ids, w->sort);
    mr_eplb_bins_clear(b, weight);
    mr_eplb_bins_pack(b, w->ids, n, false);
    for (int slot = 0; slot < n; slot++)
        w->slot_of[b->item[slot]] = slot;
}

static void solve_layer(void *work, const mr_eplb_shape *s, const double *load,
                        int32_t *phy2log)
{
    deepseek_work *w = work;
    for (int g = 0; g < w->groups; g++) {
        w->group_load[g] = 0;
        for (int i = 0; i < w->group_size; i++)
            w->group_load[g] += load[g * w->group_size + i];
    }
    balanced_packing(w, &w->node_bins, w->group_load, w->groups);
    memcpy(w->group_slot, w->slot_of, (size_t)w->groups * sizeof *w->group_slot);
    for (int e = 0; e < s->experts; e++)
        w->mlog2log[w->group_slot[e / w->group_size] * w->group_size + e % w->group_size] = e;
    for (int n = 0; n < w->nodes; n++) {
        const int32_t *node_experts = w->mlog2log + (size_t)n * w->node_experts;
        for (int j = 0; j < w->node_experts; j++)
            w->node_load[j] = load[node_experts[j]];
        mr_eplb_replicate(w->node_load, w->node_experts, w->node_slots, w->cnt, w->order,
                          w->heap);
        for (int i = 0; i < w->node_slots; i++)
            w->replica_load[i] = w->node_load[w->order[i]] / w->cnt[w->order[i]];
        balanced_packing(w, &w->gpu_bins, w->replica_load, w->node_slots);
        for (int i = 0; i < w->node_slots; i++)
            phy2log[(size_t)n * w->node_slots + (size_t)w->slot_of[i]] =
                node_experts[w->order[i]];
    }
}

int mr_eplb_solve_deepseek(const mr_eplb_shape *s, const double *load, int layers,
                           int32_t *phy2log, char *err, size_t errlen)
{
    deepseek_work w = {0};
    bool hierarchical = s->n_groups % s->n_nodes == 0;
    w.groups = hierarchical ? s->n_groups : 1;
    w.nodes = hierarchical ? s->n_nodes : 1;
    w.group_size = s->experts / w.groups;
    w.groups_per_node = w.groups / w.nodes;
    w.node_experts = s->experts / w.nodes;
    w.node_slots = s->n_physical / w.nodes;
    w.node_ranks = s->n_ranks / w.nodes;
    return mr_eplb_each_layer(s, load, layers, phy2log, &w, carve, solve_layer, err, errlen);
}
