/* The shard plan as commands show it, and its building with messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/runner.h"

char *mr_runner_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", dir, name);
    return path;
}

static void print_bytes(FILE *to, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    fprintf(to, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void mr_runner_print_plan(FILE *to, const mr_plan *plan)
{
    for (size_t i = 0; i < plan->n_files; i++) {
        const mr_plan_file *f = &plan->files[i];
        size_t shards = 0;
        for (size_t s = 0; s < plan->n_shards; s++)
            shards += plan->shards[s].file_index == i;
        fprintf(to, "  input %s: %llu lines, ", f->path, (unsigned long long)f->lines);
        print_bytes(to, f->bytes);
        fprintf(to, "%s, %zu shard%s\n", f->compressed ? " decompressed" : "", shards,
                shards == 1 ? "" : "s");
    }
    fprintf(to, "  %llu requests to serve; %llu invalid and %zu duplicate lines will "
                "become error records; %zu shards\n",
            (unsigned long long)plan->n_requests, (unsigned long long)plan->n_invalid,
            plan->n_duplicates, plan->n_shards);
}

int mr_runner_build_plan(const mr_job *job, mr_plan *plan)
{
    static char err[4096];
    int rc = mr_plan_build(plan, job, (size_t)job->input_shards, err, sizeof err);
    if (rc == MR_JOBS_OK)
        return MR_EXIT_OK;
    fprintf(stderr, "%s\n", err);
    return rc == MR_JOBS_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
}
