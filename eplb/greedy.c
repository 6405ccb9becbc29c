/*
 * The greedy steps DeepSeek's EPLB and moerun's solvers share: a heap that
 * breaks ties by the lower id (torch's sort and max are not stable; ours
 * are, so every rank computes the same placement), replication by
 * per-replica load, and the heaviest-first order replicas are packed in.
 */
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb_internal.h"

void *mr_eplb_take(mr_eplb_arena *a, size_t n, size_t size)
{
    void *p = a->base ? a->base + a->used : NULL;
    a->used += (n * size + 15) & ~(size_t)15;
    return p;
}

int mr_eplb_arena_alloc(mr_eplb_arena *a, char *err, size_t errlen)
{
    a->base = malloc(a->used ? a->used : 1);
    a->used = 0;
    return a->base ? MR_EPLB_OK : MR_EPLB_OOM(err, errlen);
}

int mr_eplb_each_layer(const mr_eplb_shape *s, const double *load, int layers,
                       int32_t *phy2log, void *work, mr_eplb_carve_fn carve,
                       mr_eplb_layer_fn layer, char *err, size_t errlen)
{
    mr_eplb_arena a = {0};
    carve(work, &a, s);
    int rc = mr_eplb_arena_alloc(&a, err, errlen);
    if (rc != MR_EPLB_OK)
        return rc;
    carve(work, &a, s);
    for (int l = 0; l < layers; l++)
        layer(work, s, load + (size_t)l * s->experts, phy2log + (size_t)l * s->n_physical);
    free(a.base);
    return MR_EPLB_OK;
}

/* Bitwise rather than logical operators: both sides are cheap, and heap
 * comparisons are too random for a branch to be guessed. */
static bool above(const mr_eplb_heap_entry *a, const mr_eplb_heap_entry *b)
{
    return (a->key > b->key) | ((a->key == b->key) & (a->id < b->id));
}

/* Entry i moves down to its place: a hole descends, each level taking the
 * child above the other, until neither child is above the entry. */
static void sift_down(mr_eplb_heap *h, int i)
{
    mr_eplb_heap_entry *e = h->e, moving = e[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n)
            break;
        /* An add, not a branch: which child is above is a coin toss. */
        if (c + 1 < h->n)
            c += above(&e[c + 1], &e[c]);
        if (!above(&e[c], &moving))
            break;
        e[i] = e[c];
        i = c;
    }
    e[i] = moving;
}

void mr_eplb_heap_push(mr_eplb_heap *h, double key, int32_t id)
{
    int i = h->n++;
    h->e[i] = (mr_eplb_heap_entry){key, id};
    while (i > 0 && above(&h->e[i], &h->e[(i - 1) / 2])) {
        mr_eplb_heap_entry t = h->e[i];
        h->e[i] = h->e[(i - 1) / 2];
        h->e[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

void mr_eplb_heap_build(mr_eplb_heap *h)
{
    for (int i = h->n / 2 - 1; i >= 0; i--)
        sift_down(h, i);
}

void mr_eplb_heap_pop(mr_eplb_heap *h)
{
    h->e[0] = h->e[--h->n];
    sift_down(h, 0);
}

void mr_eplb_heap_sift_top(mr_eplb_heap *h)
{
    sift_down(h, 0);
}

void mr_eplb_replicate(const double *load, int experts, int n_physical, int32_t *cnt,
                       int32_t *order, mr_eplb_heap_entry *heap)
{
    mr_eplb_heap h = {heap, experts};
    for (int e = 0; e < experts; e++) {
        cnt[e] = 1;
        if (order)
            order[e] = e;
        heap[e] = (mr_eplb_heap_entry){load[e], e};
    }
    mr_eplb_heap_build(&h);
    for (int s = experts; s < n_physical; s++) {
        int32_t e = h.e[0].id;
        if (order)
            order[s] = e;
        h.e[0].key = load[e] / ++cnt[e];
        mr_eplb_heap_sift_top(&h);
    }
}

/* A key whose unsigned order is w's descending order (for w not NaN). */
static uint64_t descending_key(double w)
{
    uint64_t u;
    memcpy(&u, &w, sizeof u);
    return u >> 63 ? u : ~(u | (uint64_t)1 << 63);
}

/* LSD radix sort on the keys (from[0..n), to[0..n) scratch), a byte at a
 * time: no comparisons to mispredict, and stable.  Returns the sorted
 * array, from or to. */
static mr_eplb_sort_entry *radix_sort(mr_eplb_sort_entry *from, mr_eplb_sort_entry *to, int n)
{
    for (int shift = 0; shift < 64 && n > 1; shift += 8) {
        size_t start[257] = {0};
        for (int i = 0; i < n; i++)
            start[((from[i].key >> shift) & 255) + 1]++;
        if (start[((from[0].key >> shift) & 255) + 1] == (size_t)n)
            continue; /* every key has this byte */
        for (int d = 0; d < 256; d++)
            start[d + 1] += start[d];
        for (int i = 0; i < n; i++)
            to[start[(from[i].key >> shift) & 255]++] = from[i];
        mr_eplb_sort_entry *t = from;
        from = to;
        to = t;
    }
    return from;
}

/* Runs of this many are sorted by insertion before merging. */
#define SORT_RUN 8

/* Below this many entries a merge sort is quicker than the radix sort,
 * whose eight passes each clear and sum 256 counters (measured: 64 entries
 * sort in half the radix sort's time; 256 take 1.4 times it). */
#define MERGE_SORT_MAX 128

/* A stable merge sort on the keys (from[0..n), to[0..n) scratch): short
 * runs by insertion, then merged pairwise, each step taking the right
 * run's head only when it is strictly smaller, picked by an index rather
 * than a branch (which head wins is a coin toss).  Returns the sorted
 * array. */
static mr_eplb_sort_entry *merge_sort(mr_eplb_sort_entry *from, mr_eplb_sort_entry *to, int n)
{
    for (int i = 1; i < n; i++) {
        mr_eplb_sort_entry v = from[i];
        int j = i;
        for (; j % SORT_RUN && from[j - 1].key > v.key; j--)
            from[j] = from[j - 1];
        from[j] = v;
    }
    for (int width = SORT_RUN; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, o = lo;
            while (i < mid && j < hi) {
                bool right = from[j].key < from[i].key;
                to[o++] = from[right ? j : i];
                j += right;
                i += !right;
            }
            while (i < mid)
                to[o++] = from[i++];
            while (j < hi)
                to[o++] = from[j++];
        }
        mr_eplb_sort_entry *t = from;
        from = to;
        to = t;
    }
    return from;
}

/* Stable either way, so equal weights keep the lower id first. */
void mr_eplb_sort_desc(const double *w, int n, int32_t *ids, mr_eplb_sort_entry *scratch)
{
    for (int i = 0; i < n; i++)
        scratch[i] = (mr_eplb_sort_entry){descending_key(w[i]), i};
    mr_eplb_sort_entry *sorted = n <= MERGE_SORT_MAX ? merge_sort(scratch, scratch + n, n)
                                                     : radix_sort(scratch, scratch + n, n);
    for (int i = 0; i < n; i++)
        ids[i] = sorted[i].id;
}

void mr_eplb_replica_weights(const double *load, const int32_t *cnt, int experts, double *w)
{
    for (int e = 0; e < experts; e++)
        w[e] = load[e] / cnt[e];
}

void mr_eplb_count_replicas(const int32_t *phy2log, int n_physical, int experts,
                            int32_t *cnt)
{
    for (int e = 0; e < experts; e++)
        cnt[e] = 0;
    for (int s = 0; s < n_physical; s++)
        cnt[phy2log[s]]++;
}
