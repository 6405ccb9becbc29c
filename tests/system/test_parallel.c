/* One job on several ranks: the same bytes as on one, in both dispatch
 * modes and over both transports; a rank that dies stops the job. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

static char *dir, *out, *err;

static void setup(void)
{
    dir = mr_test_tmpdir();
    out = err = NULL;
    mr_test_make_model(dir);
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(out);
    free(err);
}

TestSuite(parallel, .init = setup, .fini = teardown, .timeout = 300);

static void write_requests(int n)
{
    mr_test_write_requests(dir, n);
}

static int run_job(const char *name, const char *extra)
{
    return mr_test_run_job(dir, name, extra, &out, &err);
}

static void assert_same_output(const char *a, const char *b)
{
    mr_test_assert_same_output(dir, a, b);
}

Test(parallel, one_to_four_ranks_in_both_modes_give_the_same_bytes)
{
    write_requests(40);
    cr_assert_eq(run_job("one", "[parallel]\nranks = 1\n"), 0, "%s%s", out, err);
    cr_assert(strstr(out, "served 40 requests, 2 failed"), "%s", out);
    static const char *const modes[] = {
        "dispatch = high-throughput\n",
        "dispatch = low-latency\nll_capacity = 2\n",
    };
    for (int ranks = 2; ranks <= 4; ranks++)
        for (int m = 0; m < 2; m++) {
            char name[64], extra[256];
            snprintf(name, sizeof name, "r%d-m%d", ranks, m);
            snprintf(extra, sizeof extra, "[parallel]\nranks = %d\n%s", ranks, modes[m]);
            cr_assert_eq(run_job(name, extra), 0, "%s: %s%s", name, out, err);
            cr_assert(strstr(out, "served 40 requests, 2 failed"), "%s: %s", name, out);
            assert_same_output("one", name);
        }
}

Test(parallel, ranks_on_one_host_give_the_same_bytes_over_mpi)
{
    write_requests(24);
    cr_assert_eq(run_job("one", "[parallel]\nranks = 1\n"), 0, "%s%s", out, err);
    cr_assert_eq(run_job("mpi", "[parallel]\nranks = 3\ntransport = mpi\n"), 0, "%s%s", out, err);
    assert_same_output("one", "mpi");
}

Test(parallel, launcher_mpi_outside_mpirun_says_how_to_start_it)
{
    write_requests(4);
    cr_assert_eq(run_job("bad", "[parallel]\nranks = 2\nlauncher = mpi\n"), 3);
    cr_assert(strstr(err, "launcher = mpi: start moerun with mpirun or srun"), "%s", err);
}

Test(parallel, a_rank_that_dies_stops_the_job_within_ten_seconds)
{
    write_requests(200);
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[job]\nname = kill\nrun_dir = runs/kill\n[model]\npath = model\n[input]\n"
             "files = requests.jsonl\n[generation]\nmax_tokens = 200\n[engine]\n"
             "max_batch_tokens = 64\nmax_sequences = 8\n[parallel]\nranks = 3\n");
    char *job = mr_test_write(dir, "kill.ini", ini, (size_t)-1);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(getenv("MOERUN"), "moerun", "run", job, (char *)NULL);
        _exit(127);
    }
    free(job);
    /* Wait for the ranks to be serving: the part files appear. */
    char parts[4096];
    snprintf(parts, sizeof parts, "%s/runs/kill/parts", dir);
    double start = mr_test_seconds();
    while (access(parts, F_OK) != 0 && mr_test_seconds() - start < 60)
        usleep(50000);
    cr_assert_eq(access(parts, F_OK), 0, "the job never started serving");
    pid_t mpirun[4], ranks[8];
    cr_assert_eq(mr_test_children(pid, mpirun, 4), 1, "moerun run should have started mpirun");
    cr_assert_eq(mr_test_children(mpirun[0], ranks, 8), 3, "mpirun should have started 3 ranks");
    cr_assert_eq(kill(ranks[1], SIGKILL), 0);
    double killed = mr_test_seconds();
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(pid, &status, WNOHANG)) == 0 && mr_test_seconds() - killed < 10)
        usleep(20000);
    if (done == 0) {
        kill(pid, SIGKILL);
        kill(mpirun[0], SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("the job still ran 10 s after a rank died");
    }
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "the job should fail");
}

/* Runs `mpirun -np ranks ep-check args` and asserts it passed, saying
 * `says` and `also` (NULL: nothing more). */
static void ep_check(int ranks, const char *args, const char *says, const char *also)
{
    char command[4096], text[4096] = "";
    snprintf(command, sizeof command,
             "mpirun --allow-run-as-root --oversubscribe --bind-to none --stdin none "
             "-np %d %s %s 2>&1",
             ranks, getenv("MR_EP_CHECK"), args);
    FILE *p = popen(command, "r");
    cr_assert(p, "%s", command);
    size_t len = fread(text, 1, sizeof text - 1, p);
    text[len] = '\0';
    int status = pclose(p);
    cr_assert_eq(status, 0, "%s:\n%s", command, text);
    cr_assert(strstr(text, says), "%s", text);
    cr_assert(!also || strstr(text, also), "%s", text);
}

/* Dispatch and combine against their naive reference (tests/mpi/ep_check.c)
 * on 1 to 4 ranks, through shared memory and through MPI. */
Test(parallel, dispatch_and_combine_match_the_reference_on_1_to_4_ranks)
{
    for (int ranks = 1; ranks <= 4; ranks++)
        for (int mpi = 0; mpi < 2; mpi++)
            ep_check(ranks, mpi ? "--force-mpi" : "", "every case matches the reference", NULL);
}

/* The communicator on 3 ranks, through shared memory and through MPI: the
 * control plane's allgather, broadcast and barrier, exchanges of exact and
 * open receive sizes, and a message of another size than expected reported
 * naming the peer and the sizes. */
Test(parallel, the_control_plane_and_receive_sizes_check_out_on_3_ranks)
{
#define CHECKS_OUT(transport)                                                                  \
    "3 ranks (" transport "): the control plane and receive sizes check out"
    ep_check(3, "--comm", CHECKS_OUT("shm"),
             "rank 0 sent rank 1 a message of 24 bytes where 16 were expected");
    ep_check(3, "--comm --force-mpi", CHECKS_OUT("mpi"),
             "rank 0 sent rank 1 a message of 8 bytes where 16 were expected");
}
