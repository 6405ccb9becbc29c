/*
 * What a change of placement costs: the experts ranks must newly load.
 */
#include <string.h>

#include "eplb/eplb_internal.h"

bool mr_eplb_in_slots(const int32_t *slots, int n, int32_t e)
{
    for (int i = 0; i < n; i++)
        if (slots[i] == e)
            return true;
    return false;
}

int mr_eplb_layer_moves(const int32_t *from, const int32_t *to, int n_physical, int per_rank)
{
    int moves = 0;
    for (int r = 0; r < n_physical; r += per_rank)
        for (int i = 0; i < per_rank; i++)
            if (!mr_eplb_in_slots(to + r, i, to[r + i]) &&
                !mr_eplb_in_slots(from + r, per_rank, to[r + i]))
                moves++;
    return moves;
}

int mr_eplb_moves(const mr_eplb_placement *from, const mr_eplb_placement *to,
                  int *layers_changed)
{
    if (from->n_layers != to->n_layers || from->n_logical != to->n_logical ||
        from->n_physical != to->n_physical || from->n_ranks != to->n_ranks)
        return -1;
    int moves = 0, changed = 0, per_rank = from->n_physical / from->n_ranks;
    for (int l = 0; l < from->n_layers; l++) {
        const int32_t *a = from->phy2log + (size_t)l * from->n_physical;
        const int32_t *b = to->phy2log + (size_t)l * from->n_physical;
        moves += mr_eplb_layer_moves(a, b, from->n_physical, per_rank);
        changed += memcmp(a, b, (size_t)from->n_physical * sizeof *a) != 0;
    }
    if (layers_changed)
        *layers_changed = changed;
    return moves;
}
