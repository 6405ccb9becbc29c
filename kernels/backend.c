/* Tensor types, bf16 conversion and the registry of backends by name. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_internal.h"

const char *mr_tensor_type_name(mr_tensor_type type)
{
    return type == MR_TENSOR_BF16 ? "bf16" : "f32";
}

float mr_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t mr_f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) /* NaN: truncating could clear every mantissa bit */
        return (uint16_t)((bits >> 16) | 0x0040u);
    uint32_t lsb = (bits >> 16) & 1u;
    return (uint16_t)((bits + 0x7fffu + lsb) >> 16);
}

typedef struct {
    const char *name;
    const mr_ops *ops;
    int (*init)(mr_backend *be, char *err, size_t errlen); /* fills impl */
    void (*release)(mr_backend *be);                       /* frees impl */
} backend_entry;

static const backend_entry BACKENDS[] = {
    {"cpu", &mr_cpu_fast_ops, mr_cpu_fast_init, mr_cpu_fast_release},
    {"ref", &mr_cpu_ref_ops, NULL, NULL},
};
#define N_BACKENDS (sizeof BACKENDS / sizeof BACKENDS[0])

int mr_backend_create(const char *name, int threads, mr_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    const backend_entry *entry = NULL;
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (name && strcmp(name, BACKENDS[i].name) == 0)
            entry = &BACKENDS[i];
    if (!entry) {
        if (name && strcmp(name, "cuda") == 0)
            snprintf(err, errlen, "backend \"cuda\": this build has no CUDA backend; use \"cpu\"");
        else
            snprintf(err, errlen, "unknown backend \"%s\"; known: cpu, ref",
                     name ? name : "(null)");
        return -1;
    }
    mr_backend *be = calloc(1, sizeof *be);
    if (!be) {
        snprintf(err, errlen, "backend \"%s\": out of memory", entry->name);
        return -1;
    }
    be->ops = entry->ops;
    /* The reference is the single-threaded definition, whatever was asked. */
    be->threads = entry->ops == &mr_cpu_ref_ops ? 1 : threads > 0 ? threads : omp_get_num_procs();
    if (entry->init && entry->init(be, err, errlen) != 0) {
        free(be);
        return -1;
    }
    *out = be;
    return 0;
}

void mr_backend_free(mr_backend *be)
{
    if (!be)
        return;
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (be->ops == BACKENDS[i].ops && BACKENDS[i].release)
            BACKENDS[i].release(be);
    free(be);
}
