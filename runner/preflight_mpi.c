/*
 * Preflight check that MPI starts: run this binary's --mpi-probe under
 * mpirun, as the job's ranks will be run, and report the library and the
 * hosts the ranks landed on.  A broken MPI install usually hangs rather
 * than fails, hence the deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runner/preflight.h"

#define DEADLINE_S 30
/* Enough for the probe's line and mpirun's complaints; the rest is dropped. */
#define OUTPUT_MAX (1 << 20)

static int find_on_path(const char *program, char *out, size_t outlen)
{
    const char *path = getenv("PATH");
    for (const char *dir = path; dir && *dir;) {
        size_t len = strcspn(dir, ":");
        snprintf(out, outlen, "%.*s/%s", (int)len, len ? dir : ".", program);
        if (access(out, X_OK) == 0)
            return 0;
        dir += len + (dir[len] == ':');
    }
    return -1;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Start argv with stdout and stderr into *fd, in a process group of its own
 * so that a hung mpirun can be killed with the ranks it started. */
static pid_t start(char *const argv[], int *fd)
{
    int pipe_fd[2];
    if (pipe(pipe_fd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int null_fd = open("/dev/null", O_RDONLY);
        dup2(null_fd, 0);
        dup2(pipe_fd[1], 1);
        dup2(pipe_fd[1], 2);
        close(pipe_fd[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pipe_fd[1]);
    *fd = pipe_fd[0];
    if (pid < 0)
        close(pipe_fd[0]);
    return pid;
}

/* Collect the child's output until it has exited and closed the pipe, or
 * the deadline passes.  Returns the wait status, or -1 on the deadline. */
static int collect(pid_t pid, int fd, mr_buf *output)
{
    double deadline = now_s() + DEADLINE_S;
    int status = -1;
    bool open_fd = true, exited = false;
    while ((open_fd || !exited) && now_s() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (open_fd && poll(&p, 1, 100) > 0) {
            char chunk[4096];
            ssize_t n = read(fd, chunk, sizeof chunk);
            if (n > 0 && output->len < OUTPUT_MAX)
                mr_buf_append(output, chunk, (size_t)n);
            open_fd = n > 0 || (n < 0 && errno == EINTR);
        } else if (!open_fd) {
            nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
        }
        if (!exited)
            exited = waitpid(pid, &status, WNOHANG) == pid;
    }
    close(fd);
    if (open_fd || !exited) {
        kill(-pid, SIGKILL);
        if (!exited)
            waitpid(pid, &status, 0);
        return -1;
    }
    return status;
}

/* The first line of the output with words in it, other than the probe's:
 * a rank's own complaint comes before mpirun's summary of it. */
static const char *first_words(char *output)
{
    for (char *line = strtok(output, "\n"); line; line = strtok(NULL, "\n")) {
        line += strspn(line, " \t");
        if (strncmp(line, "mpi-probe\t", 10) != 0 &&
            strpbrk(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
            return line;
    }
    return "no output";
}

/* "vm" when the ranks share one host, else "a (2), b (2)"; hosts, the
 * probe's comma-separated list, is taken apart. */
static void count_hosts(char *hosts, char *out, size_t outlen)
{
    enum { SHOWN = 32 };
    const char *names[SHOWN];
    int counts[SHOWN], n = 0;
    bool more = false;
    for (char *h = strtok(hosts, ","); h; h = strtok(NULL, ",")) {
        int i = 0;
        while (i < n && strcmp(names[i], h) != 0)
            i++;
        if (i == SHOWN) {
            more = true;
            continue;
        }
        if (i == n) {
            names[n] = h;
            counts[n++] = 0;
        }
        counts[i]++;
    }
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n && used < outlen; i++)
        used += (size_t)snprintf(out + used, outlen - used, n == 1 ? "%s%s" : "%s%s (%d)",
                                 i ? ", " : "", names[i], counts[i]);
    if (more && used < outlen)
        snprintf(out + used, outlen - used, ", ...");
}

static void report(mr_preflight *pf, int status, char *output, const char *np)
{
    if (status == -1) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "mpi",
                         "mpirun -np %s did not finish within %d s and was killed; "
                         "it said: %s",
                         np, DEADLINE_S, first_words(output));
        return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "mpi", "mpirun -np %s %s %d: %s", np,
                         WIFEXITED(status) ? "exited with" : "was killed by signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                         first_words(output));
        return;
    }
    char *line = strstr(output, "mpi-probe\t"), *library, *hosts, *end;
    long ranks = line ? strtol(line + 10, &end, 10) : 0;
    if (!line || (line != output && line[-1] != '\n') || *end != '\t' ||
        !(hosts = strchr(library = end + 1, '\t'))) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "mpi",
                         "mpirun -np %s ran, but the probe printed no result: %s", np,
                         first_words(output));
        return;
    }
    *hosts++ = '\0';
    char *exchange = strstr(hosts, "mpi-exchange\t");
    hosts[strcspn(hosts, "\n")] = '\0';
    char where[512];
    count_hosts(hosts, where, sizeof where);
    mr_preflight_say(pf, MR_PREFLIGHT_OK, "mpi", "%s; %ld ranks ran on %s", library, ranks,
                     where);
    double seconds = 0, bytes = 0;
    if (!exchange || sscanf(exchange, "mpi-exchange\t%lf\t%lf", &seconds, &bytes) != 2 ||
        seconds <= 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "exchange",
                         "the ranks did not complete a dispatch + combine: %s",
                         first_words(output));
        return;
    }
    mr_preflight_say(pf, MR_PREFLIGHT_OK, "exchange",
                     "dispatch + combine of 512 tokens (hidden 2048, top-8 of 128 experts) "
                     "between %ld ranks: %.2f ms per layer, %.2f GB/s sent per rank",
                     ranks, seconds * 1e3, bytes / seconds / 1e9);
}

void mr_preflight_mpi(mr_preflight *pf)
{
    char mpirun[PATH_MAX], self[PATH_MAX];
    if (find_on_path("mpirun", mpirun, sizeof mpirun) != 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "mpi",
                         "mpirun is not on PATH; install Open MPI (Debian: openmpi-bin)");
        return;
    }
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len < 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "mpi", "/proc/self/exe: %s", strerror(errno));
        return;
    }
    self[len] = '\0';
    /* Two ranks at least, so that they have someone to exchange with. */
    char np[24];
    snprintf(np, sizeof np, "%lld",
             pf->job && pf->job->parallel_ranks > 2 ? (long long)pf->job->parallel_ranks : 2LL);
    char *argv[] = {mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                    "-np",  np,  self, "preflight", "--mpi-probe", NULL};
    int fd;
    pid_t pid = start(argv, &fd);
    if (pid < 0) {
        mr_preflight_say(pf, MR_PREFLIGHT_FAIL, "mpi", "cannot start %s: %s", mpirun,
                         strerror(errno));
        return;
    }
    mr_buf output = {0};
    int status = collect(pid, fd, &output);
    report(pf, status, output.data ? output.data : (char[]){""}, np);
    mr_buf_free(&output);
}
