/* moerun preflight on the machine the tests run on: every check prints its
 * line, a job's model and ranks are taken into account, and a job that
 * cannot run here FAILs. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "tests/common/fixture.h"

static char *dir;
static char *out, *err;

static void setup(void)
{
    dir = mr_test_tmpdir();
    out = err = NULL;
    free(mr_test_write(dir, "requests.jsonl", "{\"custom_id\": \"a\"}\n", (size_t)-1));
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(out);
    free(err);
}

/* mpirun gets 30 s before preflight gives up on it. */
TestSuite(preflight, .init = setup, .fini = teardown, .timeout = 120);

/* The line of check `name`, which must start with one of `levels`
 * ("OK WARN"); fails the test when there is none. */
static const char *line_of(const char *name, const char *levels)
{
    char *tag = NULL;
    cr_assert(asprintf(&tag, " %s: ", name) > 0);
    const char *at = strstr(out, tag);
    free(tag);
    cr_assert(at, "no %s line in:\n%s%s", name, out, err);
    const char *line = at;
    while (line > out && line[-1] != '\n')
        line--;
    char level[5] = "";
    sscanf(line, "%4s", level);
    cr_assert(strstr(levels, level), "%s is %s, not %s:\n%s", name, level, levels, out);
    return line;
}

/* moerun preflight with up to two arguments (NULL ends them early). */
static int preflight(const char *a, const char *b)
{
    free(out);
    free(err);
    out = err = NULL;
    return mr_test_moerun(dir, &out, &err, "preflight", a, b, NULL);
}

static void write_job(const char *extra)
{
    mr_test_writef(dir, "job.ini", "[model]\npath = model\n[input]\nfiles = requests.jsonl\n%s",
                   extra);
}

Test(preflight, checks_this_host)
{
    cr_assert_eq(preflight(NULL, NULL), 0, "%s%s", out, err);
    line_of("cpu", "OK WARN");
    cr_assert(strstr(line_of("memory", "OK"), "available"), "%s", out);
    line_of("shm", "OK WARN");
    line_of("gpu", "OK WARN");
    const char *rdma = line_of("rdma", "OK WARN");
    if (access("/sys/class/infiniband", F_OK) != 0)
        cr_assert(strncmp(rdma, "WARN rdma: no RDMA device", 25) == 0 &&
                      strstr(rdma, "over TCP\n"),
                  "%s", out);
    cr_assert(strstr(line_of("mpi", "OK"), "2 ranks ran on"), "%s", out);
    cr_assert(!strstr(out, "FAIL"), "%s", out);
}

Test(preflight, weighs_the_job_against_the_host)
{
    mr_test_make_model(dir);
    write_job("[engine]\nthreads = 64\n[parallel]\nranks = 3\n");
    cr_assert_eq(preflight("job.ini", NULL), 0, "%s%s", out, err);
    cr_assert(strstr(line_of("memory", "OK"), "the model's weights ("), "%s", out);
    cr_assert(strstr(line_of("cpu", "WARN"), "3 ranks x 64 threads exceed the cores"), "%s",
              out);
    cr_assert(strstr(line_of("mpi", "OK"), "3 ranks ran on"), "%s", out);
}

/* CUDA_VISIBLE_DEVICES="" hides every GPU: the same on any host. */
Test(preflight, the_job_s_backend_without_a_gpu)
{
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    mr_test_make_model(dir);
    write_job("[engine]\nbackend = cuda\n");
    cr_assert_eq(preflight("job.ini", NULL), 3, "%s%s", out, err);
    const char *gpu = line_of("gpu", "FAIL");
    cr_assert(strncmp(gpu, "FAIL gpu: no GPU visible to CUDA (", 34) == 0 &&
                  strstr(gpu, "); the job's [engine] backend = cuda needs one (backend = auto "
                              "would run it on cpu)\n"),
              "%s", out);
    cr_assert_eq(preflight("job.ini", "--set=engine.backend=auto"), 0, "%s%s", out, err);
    cr_assert(strstr(line_of("gpu", "WARN"), "; the job's backend = auto will use cpu\n"), "%s",
              out);
}

/* The driver API preflight calls, as a library that reports two H200s, the
 * second with 32 MiB: what libcuda.so.1 tells of a GPU host, to read the
 * device lines on a host without one. */
static const char fake_driver[] =
    "#include <stddef.h>\n"
    "#include <string.h>\n"
    "int cuInit(unsigned f) { return (int)f; }\n"
    "int cuDriverGetVersion(int *v) { *v = 13000; return 0; }\n"
    "int cuDeviceGetCount(int *n) { *n = 2; return 0; }\n"
    "int cuDeviceGet(int *d, int i) { *d = i; return 0; }\n"
    "int cuDeviceGetName(char *s, int n, int d) { (void)d; strncpy(s, \"NVIDIA H200\", n);"
    " return 0; }\n"
    "int cuDeviceTotalMem_v2(size_t *b, int d) { *b = d ? (size_t)32 << 20"
    " : (size_t)150754820096ULL; return 0; }\n"
    "int cuDeviceGetAttribute(int *v, int a, int d) { (void)d; *v = a == 75 ? 9 : 0;"
    " return a == 75 || a == 76 ? 0 : 1; }\n"
    "int cuGetErrorName(int r, const char **s) { (void)r; *s = \"CUDA_ERROR_INVALID_VALUE\";"
    " return 0; }\n";

/* "(weights W, KV cache K)" of a gpu line: W in MiB. */
static double weights_mib(const char *line)
{
    const char *at = strstr(line, "(weights ");
    cr_assert(at, "%s", line);
    double mib;
    char unit[8];
    cr_assert_eq(sscanf(at, "(weights %lf %7[A-Za-z],", &mib, unit), 2, "%s", line);
    cr_assert_str_eq(unit, "MiB", "%s", line);
    return mib;
}

Test(preflight, each_gpu_and_whether_a_rank_fits)
{
    char *lib = mr_test_write(dir, "driver/fake.c", fake_driver, (size_t)-1), *cmd = NULL;
    cr_assert(asprintf(&cmd, "cc -shared -fPIC -o %s/driver/libcuda.so.1 %s", dir, lib) > 0);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    free(cmd);
    free(lib);
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/driver", dir) > 0);
    setenv("LD_LIBRARY_PATH", path, 1);
    free(path);
    mr_test_make_model(dir);
    /* 64 blocks of 16 tokens, 2 KV heads of 32, f32, K and V in 4 layers. */
    write_job("[engine]\nkv_blocks = 64\n");
    cr_assert_eq(preflight("job.ini", NULL), 3, "%s%s", out, err);
    static const char head[] = "OK   gpu: 0: NVIDIA H200, 140.4 GiB, compute capability 9.0, "
                               "driver for CUDA 13.0; a rank of the job needs ";
    const char *big = line_of("gpu", "OK");
    cr_assert(strncmp(big, head, strlen(head)) == 0 &&
                  strstr(big, ", KV cache 2.0 MiB): fits\n"),
              "%s", out);
    const char *small = strstr(out, "FAIL gpu: 1: NVIDIA H200, 32.0 MiB, compute capability 9.0");
    cr_assert(small && strstr(small, ": does not fit\n"), "%s", out);
    double one = weights_mib(small);
    /* Four ranks share the experts: a quarter of them each fits. */
    cr_assert_eq(preflight("job.ini", "--set=parallel.ranks=4"), 0, "%s%s", out, err);
    small = strstr(out, "gpu: 1: NVIDIA H200, 32.0 MiB");
    cr_assert(small && strstr(small, ": fits\n"), "%s", out);
    cr_assert(weights_mib(small) < one / 2, "%s", out);
    /* A build without the cuda backend cannot use them. */
    cr_assert_eq(strstr(out, "WARN gpu: this build has no CUDA backend; the job's backend = "
                             "auto will use cpu\n") != NULL,
                 strstr(mr_backend_names(), "cuda") == NULL, "%s", out);
}

Test(preflight, missing_model_folder_fails)
{
    write_job("");
    cr_assert_eq(preflight("job.ini", NULL), 3, "%s%s", out, err);
    const char *memory = line_of("memory", "FAIL");
    cr_assert(strstr(memory, "job.ini: [model] path ") &&
                  strstr(memory, "/model: No such file or directory\n"),
              "%s", out);
    line_of("mpi", "OK");
}

Test(preflight, help_and_usage)
{
    cr_assert_eq(preflight("--help", NULL), 0);
    cr_assert(strstr(out, "usage: moerun preflight [JOB.ini]"), "%s", out);
    cr_assert(!strstr(out, "mpi-probe"), "the probe is not for users: %s", out);
    cr_assert_eq(preflight("--set", "parallel.ranks=2"), 2);
    cr_assert(strstr(err, "--set needs a JOB.ini"), "%s", err);
    /* A job file that cannot be read is a system error (docs/cli.md). */
    cr_assert_eq(preflight("nothere.ini", NULL), 1);
}
