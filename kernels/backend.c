/* Tensor types, bf16 conversion, the registry of backends by name, and the
 * errors and argument checks every backend shares. */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_internal.h"
#if MR_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

const char *mr_tensor_type_name(mr_tensor_type type)
{
    switch (type) {
    case MR_TENSOR_BF16:
        return "bf16";
    case MR_TENSOR_F16:
        return "f16";
    case MR_TENSOR_F8_BLOCKS:
        return "fp8-e4m3 (blocks of 128)";
    default:
        return "f32";
    }
}

float mr_tensor_value(const void *row, mr_tensor_type type, size_t i)
{
    return mr_exact_weight(row, type, i);
}

float mr_bf16_to_f32(uint16_t h)
{
    return mr_exact_bits_to_f32((uint32_t)h << 16);
}

uint16_t mr_f32_to_bf16(float f)
{
    return mr_exact_to_bf16(f);
}

const char *mr_backend_error(const mr_backend *be)
{
    return be->error;
}

int mr_backend_fail(mr_backend *be, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->error, sizeof be->error, fmt, ap);
    va_end(ap);
    return status;
}

int mr_kernels_check_rows(mr_backend *be, const char *op, int rows, int dim)
{
    if (rows >= 0 && dim >= 1)
        return MR_KERNELS_OK;
    return mr_backend_fail(be, MR_KERNELS_EINVAL, "%s: %d rows of %d; needs rows >= 0 and a "
                           "width >= 1", op, rows, dim);
}

int mr_kernels_check_matmul(mr_backend *be, int rows, int out_dim, int in_dim)
{
    int rc = mr_kernels_check_rows(be, "matmul", rows, out_dim);
    return rc == MR_KERNELS_OK ? mr_kernels_check_rows(be, "matmul", rows, in_dim) : rc;
}

int mr_kernels_check_matmul_heads(mr_backend *be, int rows, int heads, int out_dim, int in_dim,
                                  int head_stride_rows)
{
    if (rows >= 0 && heads >= 1 && out_dim >= 1 && in_dim >= 1 && head_stride_rows >= 0)
        return MR_KERNELS_OK;
    return mr_backend_fail(be, MR_KERNELS_EINVAL, "matmul_heads: %d rows of %d heads, %d x %d "
                           "weights %d rows apart; needs rows >= 0, heads and widths >= 1 "
                           "and a stride >= 0", rows, heads, out_dim, in_dim, head_stride_rows);
}

int mr_kernels_check_groups(mr_backend *be, const mr_expert_groups *g)
{
    if (g->groups >= 0 && g->hidden >= 1 && g->inter >= 1)
        return MR_KERNELS_OK;
    return mr_backend_fail(be, MR_KERNELS_EINVAL, "expert_ffn: %d groups of hidden %d, inter "
                           "%d; needs groups >= 0 and sizes >= 1", g->groups, g->hidden,
                           g->inter);
}

int mr_kernels_check_route(mr_backend *be, const mr_route_args *a)
{
    int rc = mr_kernels_check_rows(be, "route", a->rows, a->n_experts);
    if (rc != MR_KERNELS_OK)
        return rc;
    if (a->k < 1 || a->k > a->n_experts || a->max_replicas < 1)
        return mr_backend_fail(be, MR_KERNELS_EINVAL,
                               "route: top %d of %d experts with %d replicas at most; needs "
                               "1 <= k <= experts and replicas >= 1",
                               a->k, a->n_experts, a->max_replicas);
    if (a->scoring == MR_ROUTE_SIGMOID_GROUPED &&
        (!a->bias || a->n_group < 1 || a->n_group > MR_EXACT_MAX_GROUPS ||
         a->n_experts % a->n_group != 0 || a->topk_group < 1 || a->topk_group > a->n_group ||
         a->k > a->topk_group * (a->n_experts / a->n_group)))
        return mr_backend_fail(be, MR_KERNELS_EINVAL,
                               "route: %d experts in %d groups, top %d groups, top %d, %s "
                               "bias; needs groups dividing the experts (at most %d), 1 <= "
                               "top groups <= groups, k no more than the kept groups hold, and "
                               "a bias", a->n_experts, a->n_group, a->topk_group, a->k,
                               a->bias ? "a" : "no", MR_EXACT_MAX_GROUPS);
    return MR_KERNELS_OK;
}

int mr_kernels_check_mla(mr_backend *be, const mr_mla_args *a)
{
    if (a->rows >= 0 && a->n_heads >= 1 && a->latent >= 1 && a->rope >= 1 && a->block_size >= 1)
        return MR_KERNELS_OK;
    return mr_backend_fail(be, MR_KERNELS_EINVAL, "mla_attention: %d rows, %d heads of latent %d "
                           "and rope %d, blocks of %d; needs every size >= 1", a->rows,
                           a->n_heads, a->latent, a->rope, a->block_size);
}

int mr_kernels_check_attention(mr_backend *be, const mr_attention_args *a)
{
    if (a->rows >= 0 && a->n_kv_heads >= 1 && a->n_q_heads >= a->n_kv_heads &&
        a->n_q_heads % a->n_kv_heads == 0 && a->head_dim >= 1 && a->block_size >= 1)
        return MR_KERNELS_OK;
    return mr_backend_fail(be, MR_KERNELS_EINVAL, "attention: %d rows, %d query heads over %d "
                           "kv heads of %d, blocks of %d; needs query heads a multiple of kv "
                           "heads and every size >= 1", a->rows, a->n_q_heads, a->n_kv_heads,
                           a->head_dim, a->block_size);
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
    {"exact", &mr_cpu_exact_ops, NULL, NULL},
    {"fenced", &mr_fenced_ops, mr_fenced_init, mr_fenced_release},
#if MR_HAVE_CUDA
    {"cuda", &mr_cuda_ops, mr_cuda_init, mr_cuda_release},
#endif
};
#define N_BACKENDS (sizeof BACKENDS / sizeof BACKENDS[0])

const char *mr_backend_names(void)
{
    return MR_HAVE_CUDA ? "cpu, ref, exact, fenced, cuda" : "cpu, ref, exact, fenced";
}

static const backend_entry *find_backend(const char *name)
{
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (name && strcmp(name, BACKENDS[i].name) == 0)
            return &BACKENDS[i];
    return NULL;
}

static int create_entry(const backend_entry *entry, int threads, mr_backend **out, char *err,
                        size_t errlen)
{
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

int mr_backend_create(const char *name, int threads, mr_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    if (name && strcmp(name, "auto") == 0) {
        const backend_entry *gpu = find_backend("cuda");
        char why[256] = "";
        if (gpu && create_entry(gpu, threads, out, why, sizeof why) == 0) {
            snprintf(err, errlen, "%s", "");
            return 0;
        }
        /* cpu's own failure is the one to report; why cuda was passed
         * over stays in err for the caller to show. */
        if (create_entry(find_backend("cpu"), threads, out, err, errlen) != 0)
            return -1;
        snprintf(err, errlen, "%s", why);
        return 0;
    }
    const backend_entry *entry = find_backend(name);
    if (!entry) {
        if (name && strcmp(name, "cuda") == 0)
            snprintf(err, errlen, "backend \"cuda\": this build has no CUDA backend (nvcc was not "
                     "found at %s when it was built); use \"cpu\"", "$CUDA_HOME/bin");
        else
            snprintf(err, errlen, "unknown backend \"%s\"; known: auto, %s",
                     name ? name : "(null)", mr_backend_names());
        return -1;
    }
    return create_entry(entry, threads, out, err, errlen);
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
