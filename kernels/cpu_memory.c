/* Host memory for the CPU backends: device memory is host memory, so
 * upload and download are copies and weights are read where they lie. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu_internal.h"

/* A cache line, and the width of an AVX-512 load, so vector ops never
 * straddle lines at the start of a buffer. */
#define CPU_ALIGN 64

/* Buffers this large (expert weights that EPLB may rewrite, KV blocks) go
 * on 2 MiB boundaries in transparent huge pages, for the TLB reasons
 * cpu_weights.c gives. */
#define HUGE_PAGE_BYTES (2u << 20)

static void *aligned_bytes(size_t bytes)
{
    void *ptr = NULL;
    size_t align = bytes >= HUGE_PAGE_BYTES ? HUGE_PAGE_BYTES : CPU_ALIGN;
    size_t rounded = (bytes + align - 1) / align * align;
    if (posix_memalign(&ptr, align, rounded ? rounded : align) != 0)
        return NULL;
    if (align == HUGE_PAGE_BYTES)
        madvise(ptr, rounded, MADV_HUGEPAGE);
    return ptr;
}

int mr_cpu_alloc(mr_backend *be, size_t bytes, void **out)
{
    *out = aligned_bytes(bytes);
    if (!*out)
        return mr_backend_fail(be, MR_KERNELS_ENOMEM, "alloc: out of memory for %zu bytes",
                               bytes);
    return MR_KERNELS_OK;
}

int mr_cpu_free(mr_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
    return MR_KERNELS_OK;
}

int mr_cpu_copy(mr_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
    return MR_KERNELS_OK;
}

/* MemAvailable and MemTotal of /proc/meminfo, in bytes, 0 when missing. */
static void meminfo(size_t *available, size_t *total)
{
    *available = *total = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kib;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            *available = (size_t)kib * 1024;
        else if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            *total = (size_t)kib * 1024;
    }
    if (f)
        fclose(f);
}

int mr_cpu_memory(mr_backend *be, size_t *available, size_t *total)
{
    meminfo(available, total);
    if (!*total)
        return mr_backend_fail(be, MR_KERNELS_EDEVICE, "memory: /proc/meminfo has no MemTotal");
    const char *ranks = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    int here = ranks ? atoi(ranks) : 1;
    if (here > 1)
        *available /= (size_t)here;
    return MR_KERNELS_OK;
}

int mr_cpu_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out)
{
    (void)be;
    (void)bytes;
    *out = host;
    return MR_KERNELS_OK;
}

int mr_cpu_sync(mr_backend *be)
{
    (void)be;
    return MR_KERNELS_OK;
}

void *mr_cpu_scratch_get(mr_cpu_scratch *s, size_t bytes)
{
    if (bytes <= s->bytes)
        return s->ptr;
    void *grown = aligned_bytes(bytes);
    if (!grown)
        return NULL;
    free(s->ptr);
    s->ptr = grown;
    s->bytes = bytes;
    return grown;
}

void mr_cpu_scratch_free(mr_cpu_scratch *s)
{
    free(s->ptr);
    s->ptr = NULL;
    s->bytes = 0;
}
