/*
 * The "cuda" backend: its device, stream and memory, and its ops table.
 *
 * Exact mode only, for now: every op runs exact.h's functions, one GPU
 * thread per output, so the results are the cpu backend's bits (and CPU
 * and GPU ranks can mix in one job).  The tensor-core fast mode is still to
 * come (docs/gpu.md says what it will keep and what it may change).
 *
 * Memory: alloc is cudaMalloc; upload and download are copies on the
 * stream (cudaMemcpyDefault, so a transport's host buffer passed to
 * download also works); map_weights copies a weight once to the device.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"

struct mr_cuda_weight {
    void *ptr;
    mr_cuda_weight *next;
};

int mr_cuda_check(mr_backend *be, cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return MR_KERNELS_OK;
    int status = rc == cudaErrorMemoryAllocation ? MR_KERNELS_ENOMEM : MR_KERNELS_EDEVICE;
    return mr_backend_fail(be, status, "%s: %s (%s)", what, cudaGetErrorString(rc),
                           cudaGetErrorName(rc));
}

int mr_cuda_launched(mr_backend *be, const char *op)
{
    return mr_cuda_check(be, cudaGetLastError(), op);
}

void *mr_cuda_scratch_get(mr_backend *be, mr_cuda_scratch *s, size_t bytes, const char *what)
{
    if (bytes <= s->bytes)
        return s->ptr;
    /* The old buffer may still be read by queued work: wait for it first. */
    mr_cuda *cu = mr_cuda_of(be);
    if (mr_cuda_check(be, cudaStreamSynchronize(cu->stream), what) != MR_KERNELS_OK)
        return NULL;
    cudaFree(s->ptr);
    s->ptr = NULL;
    s->bytes = 0;
    size_t grown = bytes + bytes / 2;
    if (mr_cuda_check(be, cudaMalloc(&s->ptr, grown), what) != MR_KERNELS_OK)
        return NULL;
    s->bytes = grown;
    return s->ptr;
}

bool mr_cuda_is_device(const void *p)
{
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
        cudaGetLastError(); /* an unregistered host pointer is not an error to keep */
        return false;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

/* ---- device and stream ---- */

static int local_rank(void)
{
    const char *text = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    return text ? atoi(text) : 0;
}

extern "C" int mr_cuda_init(mr_backend *be, char *err, size_t errlen)
{
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        /* The static runtime opens the driver itself; with none at all it
         * says "insufficient", which misleads on a host without a GPU. */
        snprintf(err, errlen, "backend \"cuda\": no usable GPU (cudaGetDeviceCount: %s)",
                 rc == cudaErrorInsufficientDriver
                     ? "no NVIDIA driver, or one older than this build's CUDA runtime needs"
                 : rc != cudaSuccess ? cudaGetErrorString(rc)
                                     : "0 devices");
        cudaGetLastError();
        return -1;
    }
    int device = local_rank() % count;
    cudaDeviceProp prop;
    rc = cudaGetDeviceProperties(&prop, device);
    if (rc == cudaSuccess && prop.major < 9) {
        snprintf(err, errlen, "backend \"cuda\": GPU %d (%s) has compute capability %d.%d; this "
                 "build has code for 9.0 and later (sm_90a, compute_90)", device, prop.name,
                 prop.major, prop.minor);
        return -1;
    }
    mr_cuda *cu = (mr_cuda *)calloc(1, sizeof *cu);
    if (!cu) {
        snprintf(err, errlen, "backend \"cuda\": out of memory");
        return -1;
    }
    cu->device = device;
    if (rc == cudaSuccess)
        rc = cudaSetDevice(device);
    if (rc == cudaSuccess)
        rc = cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking);
    if (rc == cudaSuccess)
        rc = cudaMalloc((void **)&cu->input_error, sizeof(int));
    if (rc == cudaSuccess)
        rc = cudaMemsetAsync(cu->input_error, 0, sizeof(int), cu->stream);
    if (rc == cudaSuccess)
        rc = cudaStreamSynchronize(cu->stream);
    if (rc != cudaSuccess) {
        snprintf(err, errlen, "backend \"cuda\": GPU %d: %s", device, cudaGetErrorString(rc));
        be->impl = cu;
        mr_cuda_release(be);
        return -1;
    }
    be->impl = cu;
    return 0;
}

extern "C" void mr_cuda_release(mr_backend *be)
{
    mr_cuda *cu = mr_cuda_of(be);
    if (!cu)
        return;
    if (cu->stream)
        cudaStreamSynchronize(cu->stream);
    mr_cuda_scratch *scratch[] = {&cu->hidden, &cu->part_rows};
    for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++)
        cudaFree(scratch[i]->ptr);
    mr_cuda_stage_free(cu);
    while (cu->weights) {
        mr_cuda_weight *next = cu->weights->next;
        cudaFree(cu->weights->ptr);
        free(cu->weights);
        cu->weights = next;
    }
    cudaFree(cu->input_error);
    if (cu->stream)
        cudaStreamDestroy(cu->stream);
    free(cu);
    be->impl = NULL;
}

/* ---- memory ---- */

static int cuda_alloc(mr_backend *be, size_t bytes, void **out)
{
    *out = NULL;
    char what[64];
    snprintf(what, sizeof what, "alloc of %zu bytes", bytes);
    return mr_cuda_check(be, cudaMalloc(out, bytes ? bytes : 1), what);
}

static int cuda_free(mr_backend *be, void *ptr)
{
    /* cudaFree waits for the device, so queued work on ptr is done. */
    return mr_cuda_check(be, cudaFree(ptr), "free");
}

static int cuda_upload(mr_backend *be, void *dst, const void *src, size_t bytes)
{
    return mr_cuda_check(be,
                         cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
                                         mr_cuda_of(be)->stream),
                         "upload");
}

/* The first input error a kernel raised since the last sync, as a failed
 * status (and cleared). */
static int input_errors(mr_backend *be)
{
    mr_cuda *cu = mr_cuda_of(be);
    int found = 0;
    int rc = mr_cuda_check(be, cudaMemcpyAsync(&found, cu->input_error, sizeof found,
                                               cudaMemcpyDeviceToHost, cu->stream),
                           "reading the kernels' error word");
    if (rc == MR_KERNELS_OK)
        rc = mr_cuda_check(be, cudaStreamSynchronize(cu->stream), "reading the kernels' error word");
    if (rc != MR_KERNELS_OK || found == MR_CUDA_INPUT_OK)
        return rc;
    /* On the stream: the default stream is not ordered with it. */
    cudaMemsetAsync(cu->input_error, 0, sizeof(int), cu->stream);
    if (found == MR_CUDA_BAD_REPLICAS)
        return mr_backend_fail(be, MR_KERNELS_EINVAL, "route: an expert's replica count in "
                               "logcnt is outside 1 .. max_replicas");
    return mr_backend_fail(be, MR_KERNELS_EINVAL, "ep_unpack: a dispatch record is malformed "
                           "(its order, pick count or slots leave its message's header)");
}

static int cuda_sync(mr_backend *be)
{
    int rc = mr_cuda_check(be, cudaStreamSynchronize(mr_cuda_of(be)->stream), "sync");
    return rc != MR_KERNELS_OK ? rc : input_errors(be);
}

static int cuda_download(mr_backend *be, void *dst, const void *src, size_t bytes)
{
    mr_cuda *cu = mr_cuda_of(be);
    int rc = mr_cuda_check(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cu->stream),
                           "download");
    return rc != MR_KERNELS_OK ? rc : cuda_sync(be);
}

static int cuda_memory(mr_backend *be, size_t *available, size_t *total)
{
    return mr_cuda_check(be, cudaMemGetInfo(available, total), "memory");
}

static int cuda_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out)
{
    mr_cuda *cu = mr_cuda_of(be);
    *out = NULL;
    mr_cuda_weight *w = (mr_cuda_weight *)calloc(1, sizeof *w);
    if (!w)
        return mr_backend_fail(be, MR_KERNELS_ENOMEM, "map_weights: out of host memory");
    char what[64];
    snprintf(what, sizeof what, "map_weights of %zu bytes", bytes);
    int rc = mr_cuda_check(be, cudaMalloc(&w->ptr, bytes ? bytes : 1), what);
    /* On the stream and waited for: a copy from pageable memory may return
     * before its DMA is done, and the default stream is not ordered with
     * the backend's. */
    if (rc == MR_KERNELS_OK)
        rc = mr_cuda_check(be, cudaMemcpyAsync(w->ptr, host, bytes, cudaMemcpyHostToDevice,
                                               cu->stream),
                           what);
    if (rc == MR_KERNELS_OK)
        rc = mr_cuda_check(be, cudaStreamSynchronize(cu->stream), what);
    if (rc != MR_KERNELS_OK) {
        cudaFree(w->ptr);
        free(w);
        return rc;
    }
    w->next = cu->weights;
    cu->weights = w;
    *out = w->ptr;
    return MR_KERNELS_OK;
}

extern "C" const mr_ops mr_cuda_ops = {
    .name = "cuda",
    .host_memory = false,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .map_weights = cuda_map_weights,
    .sync = cuda_sync,
    .memory = cuda_memory,
    .embed = mr_cuda_embed,
    .rmsnorm = mr_cuda_rmsnorm,
    .matmul = mr_cuda_matmul,
    .matmul_heads = mr_cuda_matmul_heads,
    .rope_neox = mr_cuda_rope_neox,
    .kv_store = mr_cuda_kv_store,
    .attention = mr_cuda_attention,
    .mla_attention = mr_cuda_mla_attention,
    .route = mr_cuda_route,
    .expert_ffn = mr_cuda_expert_ffn,
    .gather = mr_cuda_gather,
    .add = mr_cuda_add,
    .fill_uniform = mr_cuda_fill_uniform,
    .ep_layout = mr_cuda_ep_layout,
    .ep_pack = mr_cuda_ep_pack,
    .ep_unpack = mr_cuda_ep_unpack,
    .ep_combine_partials = mr_cuda_ep_combine_partials,
    .ep_combine_reduce = mr_cuda_ep_combine_reduce,
};
