/*
 * Ranks as bins of equal slot count, filled with expert replicas: the
 * packing and swap search moerun's solvers are made of.  `holds` counts an
 * expert's replicas per bin, so "does this rank already have it" is one
 * load: two replicas of one expert on a rank serve no token a single one
 * would not, and waste a slot another expert could use.
 */
#include <string.h>

#include "eplb/eplb_internal.h"

void mr_eplb_bins_carve(mr_eplb_bins *b, mr_eplb_arena *a, int n_bins, int per_bin,
                        int n_kinds)
{
    b->n_bins = n_bins;
    b->per_bin = per_bin;
    b->n_kinds = n_kinds;
    MR_EPLB_TAKE(a, b->item, (size_t)n_bins * (size_t)per_bin);
    MR_EPLB_TAKE(a, b->fill, n_bins);
    MR_EPLB_TAKE(a, b->load, n_bins);
    MR_EPLB_TAKE(a, b->holds, (size_t)n_bins * (size_t)n_kinds);
    MR_EPLB_TAKE(a, b->heap.e, n_bins);
    MR_EPLB_TAKE(a, b->stash, n_bins);
    if (a->base) {
        memset(b->fill, 0, (size_t)n_bins * sizeof *b->fill);
        memset(b->holds, 0, (size_t)n_bins * (size_t)n_kinds * sizeof *b->holds);
    }
}

/* Only the holds of what the bins hold are cleared: the whole table is
 * ranks x experts, many times the slots, and this runs for every packing
 * tried. */
void mr_eplb_bins_clear(mr_eplb_bins *b, const double *w)
{
    b->w = w;
    for (int bin = 0; bin < b->n_bins; bin++) {
        for (int i = 0; i < b->fill[bin]; i++)
            b->holds[(size_t)bin * b->n_kinds + (size_t)b->item[(size_t)bin * b->per_bin + i]] = 0;
        b->fill[bin] = 0;
        b->load[bin] = 0;
    }
}

void mr_eplb_bins_place(mr_eplb_bins *b, int bin, int32_t kind)
{
    b->item[(size_t)bin * b->per_bin + (size_t)b->fill[bin]++] = kind;
    b->load[bin] += b->w[kind];
    b->holds[(size_t)bin * b->n_kinds + (size_t)kind]++;
}

void mr_eplb_bins_load(mr_eplb_bins *b, const int32_t *phy2log, const double *w)
{
    mr_eplb_bins_clear(b, w);
    for (int s = 0; s < b->n_bins * b->per_bin; s++)
        mr_eplb_bins_place(b, s / b->per_bin, phy2log[s]);
}

void mr_eplb_bins_swap(mr_eplb_bins *b, int slot_a, int slot_b)
{
    int bin_a = slot_a / b->per_bin, bin_b = slot_b / b->per_bin;
    int32_t x = b->item[slot_a], y = b->item[slot_b];
    double d = b->w[x] - b->w[y];
    b->load[bin_a] -= d;
    b->load[bin_b] += d;
    b->holds[(size_t)bin_a * b->n_kinds + (size_t)x]--;
    b->holds[(size_t)bin_a * b->n_kinds + (size_t)y]++;
    b->holds[(size_t)bin_b * b->n_kinds + (size_t)y]--;
    b->holds[(size_t)bin_b * b->n_kinds + (size_t)x]++;
    b->item[slot_a] = y;
    b->item[slot_b] = x;
}

int mr_eplb_bins_max(const mr_eplb_bins *b)
{
    int m = 0;
    for (int i = 1; i < b->n_bins; i++)
        if (b->load[i] > b->load[m])
            m = i;
    return m;
}

static bool holds(const mr_eplb_bins *b, int bin, int32_t kind)
{
    return b->holds[(size_t)bin * b->n_kinds + (size_t)kind] != 0;
}

/* The heap holds the bins with room, lightest on top (keys are negated
 * loads); with `spread`, bins that hold the expert are set aside in the
 * stash while a lighter one without it is looked for, then put back. */
static void pack_one(mr_eplb_bins *b, int32_t kind, bool spread)
{
    mr_eplb_heap *h = &b->heap;
    int n_stash = 0;
    while (spread && h->n > 0 && holds(b, h->e[0].id, kind)) {
        b->stash[n_stash++] = h->e[0];
        mr_eplb_heap_pop(h);
    }
    mr_eplb_heap_entry *chosen = h->n > 0 ? &h->e[0] : &b->stash[0];
    int bin = chosen->id;
    mr_eplb_bins_place(b, bin, kind);
    bool full = b->fill[bin] == b->per_bin;
    chosen->key = -b->load[bin];
    if (h->n > 0) {
        if (full)
            mr_eplb_heap_pop(h);
        else
            mr_eplb_heap_sift_top(h);
    }
    for (int i = 0; i < n_stash; i++)
        if (!(full && b->stash[i].id == bin))
            mr_eplb_heap_push(h, b->stash[i].key, b->stash[i].id);
}

void mr_eplb_bins_pack(mr_eplb_bins *b, const int32_t *items, int n, bool spread)
{
    mr_eplb_heap *h = &b->heap;
    h->n = 0;
    for (int i = 0; i < b->n_bins; i++)
        if (b->fill[i] < b->per_bin)
            h->e[h->n++] = (mr_eplb_heap_entry){-b->load[i], i};
    mr_eplb_heap_build(h);
    for (int i = 0; i < n && h->n > 0; i++)
        pack_one(b, items[i], spread);
}
