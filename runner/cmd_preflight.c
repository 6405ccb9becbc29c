/*
 * moerun preflight: check a host before a job is put on it, the checks
 * operators otherwise make by hand with nvidia-smi topo -m, ibstat and an
 * mpirun hello world.  One line per finding; a FAIL makes the exit code 3.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runner/preflight.h"
#include "runner/runner.h"

void mr_preflight_say(mr_preflight *pf, mr_preflight_level level, const char *name,
                      const char *fmt, ...)
{
    static const char *const tags[] = {"OK", "WARN", "FAIL"};
    printf("%-4s %s: ", tags[level], name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    /* mpirun may take a while; the lines before it are worth seeing. */
    fflush(stdout);
    pf->fails += level == MR_PREFLIGHT_FAIL;
}

void mr_preflight_bytes(char out[16], uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double figure = (double)bytes;
    size_t u = 0;
    while (figure >= 1024 && u + 1 < sizeof units / sizeof *units) {
        figure /= 1024;
        u++;
    }
    snprintf(out, 16, u ? "%.1f %s" : "%.0f %s", figure, units[u]);
}

int mr_runner_preflight(int argc, char **argv)
{
    /* mpirun starts this binary again in this mode; it is not for users. */
    if (argc == 2 && strcmp(argv[1], "--mpi-probe") == 0)
        return mr_preflight_mpi_probe();
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_SET | MR_ARGS_OPERAND_OPTIONAL, "JOB.ini",
                                  &args);
    if (rc < 0 && !args.operand && args.n_overrides)
        rc = mr_runner_usage_error("preflight", "--set needs a JOB.ini");
    mr_job job;
    if (rc < 0 && args.operand) {
        int loaded = mr_runner_load_job(&args, &job);
        rc = loaded == MR_EXIT_OK ? -1 : loaded;
    }
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    mr_preflight pf = {.job = args.operand ? &job : NULL};
    mr_preflight_cpu(&pf);
    mr_preflight_memory(&pf);
    mr_preflight_shm(&pf);
    mr_preflight_gpu(&pf);
    mr_preflight_rdma(&pf);
    mr_preflight_mpi(&pf);
    if (pf.job)
        mr_job_free(&job);
    mr_runner_free_args(&args);
    return pf.fails ? MR_EXIT_INVALID : MR_EXIT_OK;
}
