/* moerun preflight on the machine the tests run on: every check prints its
 * line, a job's model and ranks are taken into account, and a job that
 * cannot run here FAILs. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
