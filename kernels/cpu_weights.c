/*
 * Where the "cpu" backend keeps weights: copied once at load into anonymous
 * memory backed by transparent huge pages.
 *
 * Reading weights straight from the mmapped file was measured 1.6x to 3.7x
 * slower in batched decode (bench_engine on the small preset), and varied
 * from run to run: a decode step streams every expert's weights through
 * the TLB, and page-cache pages are 4 KiB or not, depending on how the file
 * got there.  2 MiB pages make the weight stream cheap and the speed
 * steady.  Where huge pages or memory run out, the file mapping is used as
 * is: slower, same results.
 */
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu_fast_internal.h"

#define HUGE_PAGE (2u << 20)
#define CHUNK_BYTES (256u << 20)
#define WEIGHT_ALIGN 64

struct mr_cpu_arena_chunk {
    mr_cpu_arena_chunk *next;
    unsigned char *base; /* huge-page aligned */
    size_t size, used;
};

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static mr_cpu_arena_chunk *new_chunk(size_t at_least)
{
    size_t size = round_up(at_least > CHUNK_BYTES ? at_least : CHUNK_BYTES, HUGE_PAGE);
    /* Over-allocate by one huge page and trim, for a 2 MiB-aligned base. */
    unsigned char *raw = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    unsigned char *base = (unsigned char *)round_up((size_t)raw, HUGE_PAGE);
    if (base > raw)
        munmap(raw, (size_t)(base - raw));
    munmap(base + size, (size_t)(raw + HUGE_PAGE - base));
    madvise(base, size, MADV_HUGEPAGE);
    mr_cpu_arena_chunk *c = malloc(sizeof *c);
    if (!c) {
        munmap(base, size);
        return NULL;
    }
    *c = (mr_cpu_arena_chunk){.base = base, .size = size};
    return c;
}

/* Without memory for a copy the weight is read where it lies, as "ref"
 * does: slower, never wrong. */
int mr_cpu_fast_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out)
{
    mr_cpu_fast *fast = be->impl;
    mr_cpu_arena_chunk *c = fast->weights;
    size_t at = c ? round_up(c->used, WEIGHT_ALIGN) : 0;
    if (!c || at + bytes > c->size) {
        mr_cpu_arena_chunk *fresh = new_chunk(bytes);
        if (!fresh) {
            *out = host;
            return MR_KERNELS_OK;
        }
        fresh->next = c;
        fast->weights = c = fresh;
        at = 0;
    }
    memcpy(c->base + at, host, bytes);
    c->used = at + bytes;
    *out = c->base + at;
    return MR_KERNELS_OK;
}

void mr_cpu_fast_free_weights(mr_cpu_fast *fast)
{
    while (fast->weights) {
        mr_cpu_arena_chunk *next = fast->weights->next;
        munmap(fast->weights->base, fast->weights->size);
        free(fast->weights);
        fast->weights = next;
    }
}
