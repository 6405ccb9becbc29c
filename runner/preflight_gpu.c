/*
 * Preflight check of the GPUs CUDA sees.  The driver library is opened at
 * run time so that the CPU build neither links CUDA nor needs it installed;
 * no driver is a warning, since the cpu backend serves without one.
 */
#include <dlfcn.h>
#include <stdio.h>

#include "runner/preflight.h"

/* The driver API's signatures (cuda.h), with CUresult and CUdevice as the
 * ints they are. */
typedef struct {
    int (*init)(unsigned flags);
    int (*device_count)(int *count);
    int (*device_get)(int *device, int ordinal);
    int (*device_name)(char *name, int len, int device);
    int (*device_memory)(size_t *bytes, int device);
    int (*error_name)(int result, const char **name);
} cuda_api;

static void no_gpu(mr_preflight *pf, const char *why)
{
    mr_preflight_say(pf, MR_PREFLIGHT_WARN, "gpu",
                     "no GPU visible to CUDA (%s); the cpu backend will be used", why);
}

static const char *error_name(const cuda_api *cu, int result)
{
    const char *name = NULL;
    if (cu->error_name && cu->error_name(result, &name) != 0)
        name = NULL;
    return name ? name : "unknown CUresult";
}

static void list_devices(mr_preflight *pf, const cuda_api *cu)
{
    char why[128];
    int count = 0, rc = cu->init(0);
    if (rc == 0)
        rc = cu->device_count(&count);
    if (rc != 0 || count == 0) {
        snprintf(why, sizeof why, "libcuda.so.1: %s", rc ? error_name(cu, rc) : "0 devices");
        no_gpu(pf, why);
        return;
    }
    for (int i = 0; i < count; i++) {
        int device;
        char name[256], memory[16];
        size_t bytes;
        if ((rc = cu->device_get(&device, i)) != 0 ||
            (rc = cu->device_name(name, sizeof name, device)) != 0 ||
            (rc = cu->device_memory(&bytes, device)) != 0) {
            mr_preflight_say(pf, MR_PREFLIGHT_WARN, "gpu", "%d: %s", i, error_name(cu, rc));
            continue;
        }
        mr_preflight_bytes(memory, bytes);
        mr_preflight_say(pf, MR_PREFLIGHT_OK, "gpu", "%d: %s, %s", i, name, memory);
    }
}

void mr_preflight_gpu(mr_preflight *pf)
{
    /* Never closed: after cuInit the driver runs threads of its own. */
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        no_gpu(pf, dlerror());
        return;
    }
    cuda_api cu = {
        .init = (int (*)(unsigned))dlsym(lib, "cuInit"),
        .device_count = (int (*)(int *))dlsym(lib, "cuDeviceGetCount"),
        .device_get = (int (*)(int *, int))dlsym(lib, "cuDeviceGet"),
        .device_name = (int (*)(char *, int, int))dlsym(lib, "cuDeviceGetName"),
        .device_memory = (int (*)(size_t *, int))dlsym(lib, "cuDeviceTotalMem_v2"),
        .error_name = (int (*)(int, const char **))dlsym(lib, "cuGetErrorName"),
    };
    if (!cu.init || !cu.device_count || !cu.device_get || !cu.device_name || !cu.device_memory)
        no_gpu(pf, "libcuda.so.1 lacks the driver API moerun calls");
    else
        list_devices(pf, &cu);
}
