/*
 * The load window: the last `steps` steps of per-expert token counts in a
 * ring, with their running total kept so reading the window costs one pass
 * over layers x experts however long it is.  Counts are integers, so the
 * total never drifts the way a running sum of doubles would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"

struct mr_eplb_window {
    size_t cells;    /* layers * experts */
    int steps, filled, next;
    uint64_t *ring;  /* [steps][cells] */
    uint64_t *total; /* [cells] */
};

int mr_eplb_window_create(int layers, int experts, int steps, mr_eplb_window **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    if (layers < 1 || experts < 1 || steps < 1) {
        snprintf(err, errlen,
                 "a load window needs at least one layer, expert and step (got %d, %d, %d)",
                 layers, experts, steps);
        return MR_EPLB_EINVAL;
    }
    mr_eplb_window *w = calloc(1, sizeof *w);
    if (w) {
        w->cells = (size_t)layers * (size_t)experts;
        w->steps = steps;
        w->ring = calloc((size_t)steps * w->cells, sizeof *w->ring);
        w->total = calloc(w->cells, sizeof *w->total);
    }
    if (!w || !w->ring || !w->total) {
        mr_eplb_window_free(w);
        snprintf(err, errlen, "out of memory for a load window of %d steps", steps);
        return MR_EPLB_ENOMEM;
    }
    *out = w;
    return MR_EPLB_OK;
}

void mr_eplb_window_free(mr_eplb_window *w)
{
    if (!w)
        return;
    free(w->ring);
    free(w->total);
    free(w);
}

void mr_eplb_window_push(mr_eplb_window *w, const uint64_t *counts)
{
    uint64_t *slot = w->ring + (size_t)w->next * w->cells;
    for (size_t i = 0; i < w->cells; i++)
        w->total[i] += counts[i] - slot[i];
    memcpy(slot, counts, w->cells * sizeof *slot);
    w->next = (w->next + 1) % w->steps;
    w->filled += w->filled < w->steps;
}

void mr_eplb_window_sum(const mr_eplb_window *w, double *load)
{
    for (size_t i = 0; i < w->cells; i++)
        load[i] = (double)w->total[i];
}

int mr_eplb_window_filled(const mr_eplb_window *w)
{
    return w->filled;
}
