/*
 * Preflight check of the GPUs CUDA sees: each device's name, memory,
 * compute capability and the CUDA version its driver supports, and, for a
 * job whose backend may run on it, whether one rank's weights and KV cache
 * fit.  The driver library is opened at run time so that the CPU build
 * neither links CUDA nor needs it installed.  No usable GPU is a warning,
 * since backend = auto then serves on the cpu, and a FAIL for a job that
 * asks for backend = cuda.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/preflight.h"
#include "runner/runner.h"

/* cuda.h's CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR and _MINOR. */
#define ATTRIBUTE_CC_MAJOR 75
#define ATTRIBUTE_CC_MINOR 76

/* The driver API's signatures (cuda.h), with CUresult, CUdevice and
 * CUdevice_attribute as the ints they are. */
typedef struct {
    int (*init)(unsigned flags);
    int (*driver_version)(int *version);
    int (*device_count)(int *count);
    int (*device_get)(int *device, int ordinal);
    int (*device_name)(char *name, int len, int device);
    int (*device_memory)(size_t *bytes, int device);
    int (*device_attribute)(int *value, int attribute, int device);
    int (*error_name)(int result, const char **name);
} cuda_api;

/* Whether the job's backend would run on a GPU here: auto and cuda. */
static bool wants_gpu(const mr_job *job)
{
    return job && (job->engine_backend == MR_BACKEND_AUTO ||
                   job->engine_backend == MR_BACKEND_CUDA);
}

/* No GPU can serve here (`why`): what that means for the job's backend. */
static void no_gpu(mr_preflight *pf, const char *why)
{
    const mr_job *job = pf->job;
    if (job && job->engine_backend == MR_BACKEND_CUDA)
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "gpu",
                         "%s; the job's [engine] backend = cuda needs one (backend = auto "
                         "would run it on cpu)",
                         why);
    else if (job)
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "gpu", "%s; the job's backend = %s %s", why,
                         mr_runner_backend_name(job),
                         wants_gpu(job) ? "will use cpu" : "needs none");
    else
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "gpu", "%s; the cpu backend will be used", why);
}

static void not_visible(mr_preflight *pf, const char *why)
{
    char line[512];
    snprintf(line, sizeof line, "no GPU visible to CUDA (%s)", why);
    no_gpu(pf, line);
}

static const char *error_name(const cuda_api *cu, int result)
{
    const char *name = NULL;
    if (cu->error_name && cu->error_name(result, &name) != 0)
        name = NULL;
    return name ? name : "unknown CUresult";
}

/* What one rank of the job holds on its GPU, from the model's headers and
 * the job's ranks, expert slots and KV cache.  False with err filled when
 * the model cannot be read. */
static bool rank_need(const mr_job *job, mr_preflight_gpu_need *need, char *err, size_t errlen)
{
    *need = (mr_preflight_gpu_need){0};
    char *path = mr_runner_path(job->model_path, "config.json");
    mr_model_config cfg;
    mr_weights *w = NULL;
    bool ok = path && mr_config_load(path, &cfg, err, errlen) == MR_ENGINE_OK &&
              mr_preflight_weights_size(job, &need->weights, err, errlen) &&
              mr_weights_open(job->model_path, &w, err, errlen) == MR_ENGINE_OK &&
              mr_weights_expert_bytes(w, &cfg, &need->expert, err, errlen) == MR_ENGINE_OK;
    if (!path)
        snprintf(err, errlen, "out of memory");
    free(path);
    mr_weights_close(w);
    if (!ok)
        return false;
    if (mr_config_moe_layers(&cfg) > 0) {
        mr_engine_balance_options balance;
        mr_runner_balance_options(job, &balance);
        need->experts = (uint64_t)cfg.num_experts;
        need->slots = (uint64_t)mr_engine_balance_slots_per_rank(&balance, cfg.num_experts,
                                                                 (int)job->parallel_ranks);
    }
    need->kv_cache = mr_model_kv_bytes(&cfg, mr_runner_kv_type(job), (int)job->engine_kv_block_size,
                                       (int)job->engine_kv_blocks);
    return true;
}

/* "; a rank of the job needs ...: fits" for a device of `memory` bytes
 * (nothing without a need); the verdict's level. */
static mr_preflight_level fit_text(const mr_preflight_gpu_need *need, uint64_t memory,
                                   char *out, size_t outlen)
{
    *out = '\0';
    if (!need)
        return MR_PREFLIGHT_OK;
    uint64_t weights, bytes;
    mr_preflight_level level = mr_preflight_gpu_fit(need, memory, &weights, &bytes);
    char b[16], w[16], kv[16];
    mr_preflight_bytes(b, bytes);
    mr_preflight_bytes(w, weights);
    mr_preflight_bytes(kv, need->kv_cache);
    snprintf(out, outlen, "; a rank of the job needs %s (weights %s, KV cache %s): %s", b, w,
             need->kv_cache ? kv : "0: sized to what is left",
             level == MR_PREFLIGHT_OK ? "fits" : "does not fit");
    return level;
}

static void list_devices(mr_preflight *pf, const cuda_api *cu)
{
    char why[128];
    int count = 0, driver = 0, rc = cu->init(0);
    if (rc == 0)
        rc = cu->driver_version(&driver);
    if (rc == 0)
        rc = cu->device_count(&count);
    if (rc != 0 || count == 0) {
        snprintf(why, sizeof why, "libcuda.so.1: %s", rc ? error_name(cu, rc) : "0 devices");
        not_visible(pf, why);
        return;
    }
    mr_preflight_gpu_need need;
    char err[1024];
    bool sized = wants_gpu(pf->job) && rank_need(pf->job, &need, err, sizeof err);
    if (wants_gpu(pf->job) && !sized)
        mr_preflight_say(pf, MR_PREFLIGHT_WARN, "gpu", "cannot size the job's model: %s", err);
    for (int i = 0; i < count; i++) {
        int device, major, minor;
        char name[256], memory[16], fit[160];
        size_t bytes;
        if ((rc = cu->device_get(&device, i)) != 0 ||
            (rc = cu->device_name(name, sizeof name, device)) != 0 ||
            (rc = cu->device_memory(&bytes, device)) != 0 ||
            (rc = cu->device_attribute(&major, ATTRIBUTE_CC_MAJOR, device)) != 0 ||
            (rc = cu->device_attribute(&minor, ATTRIBUTE_CC_MINOR, device)) != 0) {
            mr_preflight_say(pf, MR_PREFLIGHT_WARN, "gpu", "%d: %s", i, error_name(cu, rc));
            continue;
        }
        mr_preflight_bytes(memory, bytes);
        mr_preflight_level level = fit_text(sized ? &need : NULL, bytes, fit, sizeof fit);
        mr_preflight_say(pf, level, "gpu",
                         "%d: %s, %s, compute capability %d.%d, driver for CUDA %d.%d%s", i,
                         name, memory, major, minor, driver / 1000, driver % 1000 / 10, fit);
    }
    /* A GPU this build cannot drive is no GPU to the job. */
    if (!strstr(mr_backend_names(), "cuda") && (!pf->job || wants_gpu(pf->job)))
        no_gpu(pf, "this build has no CUDA backend");
}

void mr_preflight_gpu(mr_preflight *pf)
{
    /* Never closed: after cuInit the driver runs threads of its own. */
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        not_visible(pf, dlerror());
        return;
    }
    cuda_api cu = {
        .init = (int (*)(unsigned))dlsym(lib, "cuInit"),
        .driver_version = (int (*)(int *))dlsym(lib, "cuDriverGetVersion"),
        .device_count = (int (*)(int *))dlsym(lib, "cuDeviceGetCount"),
        .device_get = (int (*)(int *, int))dlsym(lib, "cuDeviceGet"),
        .device_name = (int (*)(char *, int, int))dlsym(lib, "cuDeviceGetName"),
        .device_memory = (int (*)(size_t *, int))dlsym(lib, "cuDeviceTotalMem_v2"),
        .device_attribute = (int (*)(int *, int, int))dlsym(lib, "cuDeviceGetAttribute"),
        .error_name = (int (*)(int, const char **))dlsym(lib, "cuGetErrorName"),
    };
    if (!cu.init || !cu.driver_version || !cu.device_count || !cu.device_get ||
        !cu.device_name || !cu.device_memory || !cu.device_attribute)
        not_visible(pf, "libcuda.so.1 lacks the driver API moerun calls");
    else
        list_devices(pf, &cu);
}
