/*
 * The ranks of a job.  `launcher = local` with more than one rank makes
 * `moerun run` start them itself through Open MPI's mpirun, running this
 * same command line once per rank; a process that finds itself started by
 * mpirun or srun joins MPI_COMM_WORLD.  Either way each rank then builds
 * the communicator the engine exchanges tokens through.
 */
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runner/runner.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>

/* Open MPI leaves much of what MPI_Init allocates to the end of the
 * process, in components it has unloaded by then, where no suppression can
 * name them; so under `make asan` a process that started MPI skips the
 * leak check, and every other moerun command keeps it. */
static int mpi_started;
int __lsan_is_turned_off(void)
{
    return mpi_started;
}
#endif

void mr_runner_mpi_init(int *argc, char ***argv)
{
#ifdef __SANITIZE_ADDRESS__
    mpi_started = 1;
#endif
    MPI_Init(argc, argv);
}

/* The Unix time the job's processes started, handed down to the ranks. */
#define STARTED_ENV "MR_STARTED_AT"

double mr_runner_unix_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void set_start_time(bool replace)
{
    char text[64];
    snprintf(text, sizeof text, "%.6f", mr_runner_unix_seconds());
    setenv(STARTED_ENV, text, replace);
}

/* Whether the launching process's stdout is a terminal, for the ranks. */
#define TTY_ENV "MR_PROGRESS_TTY"

void mr_runner_mark_start(void)
{
    set_start_time(false);
    setenv(TTY_ENV, isatty(STDOUT_FILENO) ? "1" : "0", 0);
}

bool mr_runner_progress_tty(void)
{
    const char *tty = getenv(TTY_ENV);
    return tty ? strcmp(tty, "1") == 0 : isatty(STDOUT_FILENO);
}

double mr_runner_start_time(void)
{
    /* A process that main did not mark (a test serving directly) starts
     * now, once for all who ask. */
    if (!getenv(STARTED_ENV))
        set_start_time(false);
    return strtod(getenv(STARTED_ENV), NULL);
}

bool mr_runner_under_mpi(void)
{
    /* Open MPI's mpirun, PMIx launchers (srun --mpi=pmix) and PMI-1/2. */
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

/* mpirun's options: as root it must be told that is fine; more ranks than
 * cores is fine for CPU ranks that sleep while they wait; binding would
 * pin each rank's threads to one core; ranks read no standard input; and
 * -q, since a rank's exit code already says why it stopped (4 after a stop
 * signal is no failure to explain). */
static const char *const MPIRUN_OPTIONS[] = {"--allow-run-as-root", "--oversubscribe",
                                             "--bind-to", "none", "--stdin", "none", "-q"};

/* The child becomes mpirun in a process group of its own, so that a
 * terminal's Ctrl-C reaches only this parent, which forwards it as the
 * SIGUSR1 mpirun passes on; and mpirun dies with the parent, so a killed
 * `moerun run` leaves no ranks behind. */
static void exec_mpirun(char **args, pid_t parent)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    execvp("mpirun", args);
    fprintf(stderr, "moerun run: cannot start mpirun (%s); install Open MPI (the "
                    "openmpi-bin package) or run with [parallel] ranks = 1\n",
            strerror(errno));
    _exit(127);
}

/* mpirun keeps three pipes open per rank it starts on its host (measured
 * with Open MPI 4.1), plus a few dozen files of its own; beyond its
 * open-file limit it fails inside and hangs. */
#define MPIRUN_FILES_PER_RANK 3
#define MPIRUN_FILES 64
/* What a rank takes before it loads any weights: Open MPI, the shared
 * memory segments, the runtime (measured about 40 MiB on the tiny model). */
#define RANK_BASE_BYTES (32ull << 20)

/* The most files a process may open here: the hard limit, which the
 * kernel caps at fs.nr_open. */
static rlim_t files_limit(const struct rlimit *lim)
{
    rlim_t cap = 1048576;
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    unsigned long long nr;
    if (f && fscanf(f, "%llu", &nr) == 1)
        cap = (rlim_t)nr;
    if (f)
        fclose(f);
    return lim->rlim_max == RLIM_INFINITY || lim->rlim_max > cap ? cap : lim->rlim_max;
}

/* MemTotal of this host in bytes, 0 when unknown. */
static unsigned long long host_memory(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    unsigned long long kib = 0;
    if (f && fscanf(f, "MemTotal: %llu kB", &kib) != 1)
        kib = 0;
    if (f)
        fclose(f);
    return kib * 1024;
}

int mr_runner_local_ranks_check(const mr_job *job, bool raise_limit)
{
    unsigned long long ranks = (unsigned long long)job->parallel_ranks;
    unsigned long long memory = host_memory();
    if (memory && ranks * RANK_BASE_BYTES > memory) {
        fprintf(stderr,
                "%s: [parallel] ranks = %llu is more than this host can start with launcher = "
                "local: each rank takes at least %llu MiB before any weights, and the host "
                "has %llu MiB; spread the ranks over hosts with launcher = mpi "
                "(docs/running.md)\n",
                job->source, ranks, RANK_BASE_BYTES >> 20, memory >> 20);
        return MR_EXIT_INVALID;
    }
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return MR_EXIT_OK;
    rlim_t most = files_limit(&lim);
    unsigned long long need = MPIRUN_FILES + MPIRUN_FILES_PER_RANK * ranks;
    if (need > most) {
        fprintf(stderr,
                "%s: [parallel] ranks = %llu is more than this host can start with launcher = "
                "local: mpirun keeps %d open files per rank (%llu in all) and the open-file "
                "limit here is %llu (ulimit -Hn); raise the limit, or spread the ranks over "
                "hosts with launcher = mpi (docs/running.md)\n",
                job->source, ranks, MPIRUN_FILES_PER_RANK, need, (unsigned long long)most);
        return MR_EXIT_INVALID;
    }
    if (raise_limit && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < need) {
        lim.rlim_cur = (rlim_t)need;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
            perror("moerun run: raising the open-file limit for mpirun");
            return MR_EXIT_FAILED;
        }
    }
    return MR_EXIT_OK;
}

/* The file a supervised rank 0 writes once every rank has joined; the
 * supervisor made it and names it here. */
#define JOIN_ENV "MR_JOIN_FILE"

bool mr_runner_supervised(void)
{
    return getenv(JOIN_ENV) != NULL;
}

void mr_runner_mark_joined(void)
{
    const char *path = getenv(JOIN_ENV);
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        fputs("joined\n", f);
        fclose(f);
    }
}

static bool joined(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* What the supervisor's wait ended with. */
typedef enum { WAIT_EXITED, WAIT_STOPPED_EARLY, WAIT_NO_JOIN } wait_end;

/*
 * Waits for mpirun (pid), polling: every stop signal that came is passed
 * on once the ranks have joined (their handlers are in place by then); a
 * stop before that, or no join within [parallel] start_seconds, ends the
 * launch: mpirun kills its ranks on SIGTERM, and the whole process group
 * gets SIGKILL a few seconds later in case mpirun itself hangs (a rank
 * killed inside MPI_Init can leave it waiting for good).
 */
static wait_end wait_ranks(const mr_job *job, pid_t pid, const char *join_file, int *status)
{
    struct timespec tick = {0, 20 * 1000 * 1000};
    double started = mr_runner_unix_seconds(), killed_at = 0;
    bool ranks_joined = false;
    int passed_on = 0;
    wait_end end = WAIT_EXITED;
    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR))
            return w == pid ? end : WAIT_EXITED;
        ranks_joined = ranks_joined || joined(join_file);
        double now = mr_runner_unix_seconds();
        int stops = mr_runner_stop_count(), sig = mr_runner_stop_signal();
        if (killed_at == 0 && stops > passed_on && ranks_joined) {
            for (; passed_on < stops; passed_on++)
                kill(pid, mr_runner_stop_by_user(sig) ? SIGUSR2 : SIGUSR1);
        } else if (killed_at == 0 && stops > 0 && !ranks_joined) {
            end = WAIT_STOPPED_EARLY;
        } else if (killed_at == 0 && !ranks_joined &&
                   now - started > job->parallel_start_seconds) {
            fprintf(stderr, "moerun run: the ranks did not all join within [parallel] "
                            "start_seconds (%g s): ending this attempt\n",
                    job->parallel_start_seconds);
            end = WAIT_NO_JOIN;
        }
        if (end != WAIT_EXITED && killed_at == 0) {
            killed_at = now;
            kill(pid, SIGTERM);
        } else if (killed_at > 0 && now - killed_at > 3) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
        nanosleep(&tick, NULL);
    }
}

/* Whether the run folder's disk is (nearly) full: under 64 MiB or 1% free.
 * A rank that finds it full exits 6, but the others, losing it, may end
 * first with another code, and mpirun passes on whichever came first. */
static bool disk_full(const char *run_dir)
{
    struct statvfs fs;
    if (statvfs(run_dir, &fs) != 0)
        return false;
    double free_bytes = (double)fs.f_bavail * (double)fs.f_frsize;
    double total = (double)fs.f_blocks * (double)fs.f_frsize;
    return free_bytes < 64.0 * 1024 * 1024 || free_bytes < 0.01 * total;
}

/* The ranks' exit codes that say what happened; anything else is a rank
 * that died or could not start. */
static bool rank_exit_code(int code)
{
    return code == MR_EXIT_OK || code == MR_EXIT_INVALID || code == MR_EXIT_STOPPED ||
           code == MR_EXIT_DISK_FULL || code == MR_EXIT_REQUESTS_FAILED;
}

int mr_runner_launch_local(const mr_job *job, int argc, char **argv)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        perror("moerun run: finding the moerun binary");
        return MR_EXIT_FAILED;
    }
    exe[n] = '\0';
    if (mr_runner_stop_signal())
        return MR_EXIT_STOPPED; /* before the ranks started: nothing to stop */
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char join_file[PATH_MAX];
    snprintf(join_file, sizeof join_file, "%s/moerun-join-XXXXXX", tmp);
    int join_fd = mkstemp(join_file);
    if (join_fd < 0) {
        fprintf(stderr, "moerun run: cannot make a file in %s: %s\n", tmp, strerror(errno));
        return MR_EXIT_FAILED;
    }
    close(join_fd);
    size_t n_opts = sizeof MPIRUN_OPTIONS / sizeof MPIRUN_OPTIONS[0];
    char ranks[32];
    snprintf(ranks, sizeof ranks, "%lld", (long long)job->parallel_ranks);
    char **args = calloc(n_opts + (size_t)argc + 6, sizeof *args);
    if (!args) {
        fprintf(stderr, "moerun run: out of memory\n");
        unlink(join_file);
        return MR_EXIT_FAILED;
    }
    size_t at = 0;
    args[at++] = "mpirun";
    for (size_t i = 0; i < n_opts; i++)
        args[at++] = (char *)MPIRUN_OPTIONS[i];
    args[at++] = "-np";
    args[at++] = ranks;
    args[at++] = exe;
    for (int i = 0; i < argc; i++)
        args[at++] = argv[i];
    printf("job %s: starting %s rank%s on this host through mpirun\n", job->job_name, ranks,
           job->parallel_ranks == 1 ? "" : "s");
    fflush(stdout);
    fflush(stderr);
    set_start_time(true);
    setenv(JOIN_ENV, join_file, 1);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0)
        exec_mpirun(args, parent);
    unsetenv(JOIN_ENV);
    free(args);
    int status = 0;
    wait_end end = pid > 0 ? wait_ranks(job, pid, join_file, &status) : WAIT_EXITED;
    unlink(join_file);
    if (pid < 0) {
        perror("moerun run: starting mpirun");
        return MR_EXIT_FAILED;
    }
    if (end == WAIT_STOPPED_EARLY) {
        fprintf(stderr, "moerun run: %s came while the ranks were starting: they were ended; "
                        "the last checkpoint is kept\n",
                mr_runner_signal_name(mr_runner_stop_signal()));
        return MR_EXIT_STOPPED;
    }
    if (end == WAIT_NO_JOIN)
        return MR_EXIT_RANK_FAILED;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (rank_exit_code(code))
        return code;
    if (disk_full(job->job_run_dir)) {
        fprintf(stderr, "moerun run: the job stopped (mpirun exit %d) with the disk of %s full: "
                        "free space, then `moerun resume %s` goes on with nothing lost\n",
                code, job->job_run_dir, job->job_run_dir);
        return MR_EXIT_DISK_FULL;
    }
    fprintf(stderr, "moerun run: the job stopped: a rank failed (mpirun exit %d)\n", code);
    return MR_EXIT_RANK_FAILED;
}

int mr_runner_world_init(mr_runner_world *w, const mr_job *job, size_t capacity)
{
    char err[512];
    *w = (mr_runner_world){.mpi = w->mpi, .rank = 0, .size = 1};
    mr_comm_options options = {.capacity = capacity,
                               .force_mpi = job->parallel_transport == MR_TRANSPORT_MPI};
    int rc;
    if (w->mpi)
        rc = mr_comm_mpi(&options, &w->comm, err, sizeof err);
    else
        rc = mr_comm_solo(&options, &w->comm, err, sizeof err);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    w->rank = mr_comm_rank(w->comm);
    w->size = mr_comm_size(w->comm);
    return MR_EXIT_OK;
}
