/*
 * Preflight checks of the host itself: cores and vector units, memory
 * against the model's weights, and /dev/shm, through which ranks on one
 * host exchange tokens.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "runner/preflight.h"
#include "runner/runner.h"

#define GIB (UINT64_C(1) << 30)

void mr_preflight_cpu(mr_preflight *pf)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    __builtin_cpu_init();
    /* The set the cpu backend's kernels are compiled for (kernels/cpu_fast.c). */
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const char *simd = !avx512 ? "no AVX-512 (the cpu backend falls back to plain loops)"
                       : __builtin_cpu_supports("avx512bf16") ? "AVX-512 with AVX512_BF16"
                                                              : "AVX-512 without AVX512_BF16";
    mr_preflight_level level = avx512 ? MR_PREFLIGHT_OK : MR_PREFLIGHT_WARN;
    char load[160] = "";
    if (pf->job) {
        const mr_job *job = pf->job;
        int64_t ranks = job->parallel_ranks_per_node ? job->parallel_ranks_per_node
                                                     : job->parallel_ranks;
        /* threads = 0: moerun shares a host's cores among its ranks. */
        int64_t shared = cores / ranks > 1 ? cores / ranks : 1;
        int64_t threads = job->engine_threads ? job->engine_threads : shared;
        snprintf(load, sizeof load, "; the job's %" PRId64 " ranks x %" PRId64 " threads%s %s",
                 ranks, threads, job->engine_threads ? "" : " (the cores shared)",
                 ranks * threads > cores ? "exceed the cores" : "fit");
        if (ranks * threads > cores)
            level = MR_PREFLIGHT_WARN;
    }
    mr_preflight_say(pf, level, "cpu", "%ld cores online, %s%s", cores, simd, load);
}

static bool meminfo(uint64_t *total, uint64_t *available)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return false;
    char line[256];
    int found = 0;
    unsigned long long kib;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) {
            *total = kib * 1024;
            found |= 1;
        } else if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            *available = kib * 1024;
            found |= 2;
        }
    }
    fclose(f);
    return found == 3;
}

bool mr_preflight_weights_size(const mr_job *job, uint64_t *bytes, char *err, size_t errlen)
{
    const char *dir = job->model_path;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: [model] path %s: %s", job->source, dir, strerror(errno));
        return false;
    }
    *bytes = 0;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        char *path = mr_runner_path(dir, e->d_name);
        struct stat st;
        if (path && stat(path, &st) == 0) {
            *bytes += (uint64_t)st.st_size;
            files++;
        }
        free(path);
    }
    closedir(d);
    if (!files)
        snprintf(err, errlen, "%s: [model] path %s holds no *.safetensors files", job->source,
                 dir);
    return files > 0;
}

void mr_preflight_memory(mr_preflight *pf)
{
    uint64_t total, available, weights;
    char t[16], a[16], w[16], err[1024];
    if (!meminfo(&total, &available)) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "memory",
                         "cannot read MemTotal and MemAvailable in /proc/meminfo");
        return;
    }
    mr_preflight_bytes(t, total);
    mr_preflight_bytes(a, available);
    if (!pf->job) {
        mr_preflight_say(pf, MR_PREFLIGHT_OK, "memory", "%s total, %s available", t, a);
        return;
    }
    if (!mr_preflight_weights_size(pf->job, &weights, err, sizeof err)) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "memory", "%s", err);
        return;
    }
    mr_preflight_bytes(w, weights);
    static const char *const verdicts[] = {"fit", "fit with less than half their size to spare",
                                           "do not fit"};
    mr_preflight_level level = mr_preflight_memory_verdict(available, weights);
    mr_preflight_say(pf, level, "memory", "%s total, %s available; the model's weights (%s) %s",
                     t, a, w, verdicts[level]);
}

void mr_preflight_shm(mr_preflight *pf)
{
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) != 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "shm",
                         "/dev/shm: %s; ranks on one host exchange tokens through POSIX "
                         "shared memory",
                         strerror(errno));
        return;
    }
    uint64_t size = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    char s[16], f[16];
    mr_preflight_bytes(s, size);
    mr_preflight_bytes(f, free_bytes);
    bool small = free_bytes < GIB;
    mr_preflight_say(pf, small ? MR_PREFLIGHT_WARN : MR_PREFLIGHT_OK, "shm",
                     "/dev/shm %s, %s free%s", s, f,
                     small ? "; under 1 GiB, and ranks on one host exchange tokens through it"
                           : "");
}
