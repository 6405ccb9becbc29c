/*
 * moerun run and moerun resume: check the job, plan it or take up the
 * run it continues, serve.  With the local launcher this process starts the
 * ranks through mpirun, waits on them, forwards stop signals and, with
 * --max-restarts, starts them again from the last checkpoint when a rank
 * dies.
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner/runner.h"

typedef struct {
    bool force_new;
    int max_restarts;
    int argc; /* the command line, from the command name on: the owner's record */
    char **argv;
} run_options;

/* The planning rank takes the run folder (unless the supervising `moerun
 * run` holds it) and prepares it; the others then read the plan and the
 * checkpoint it wrote (the run folder is on storage every host sees). */
static int prepare_on_first_rank(const mr_job *job, const run_options *opt, int rank,
                                 mr_plan *plan, mr_checkpoint_state *state, bool *finished,
                                 mr_runner_lock **lock)
{
    int rc = MR_EXIT_OK;
    if (rank == 0 && !mr_runner_supervised())
        rc = mr_runner_lock_take(job->job_run_dir, opt->argc, opt->argv, lock);
    if (rank == 0 && rc == MR_EXIT_OK)
        rc = mr_runner_prepare(job, opt->force_new, plan, state, finished);
    int flags[2] = {rc, rank == 0 && *finished};
    MPI_Bcast(flags, 2, MPI_INT, 0, MPI_COMM_WORLD);
    rc = flags[0];
    *finished = flags[1];
    if (rc == MR_EXIT_OK && !*finished && rank != 0) {
        rc = mr_runner_load_plan(job->job_run_dir, plan);
        if (rc == MR_EXIT_OK)
            rc = mr_runner_load_state(job, state);
    }
    return rc;
}

/* One rank of a job that mpirun or srun started. */
static int run_rank(const mr_job *job, const run_options *opt, int argc, char **argv)
{
    mr_runner_mpi_init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* Every rank has its stop handlers (run_command set them first): a
     * supervisor may now pass stops on rather than end the start-up. */
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        mr_runner_mark_joined();
    if (size != job->parallel_ranks) {
        if (rank == 0)
            fprintf(stderr, "moerun run: [parallel] ranks is %lld but MPI started %d ranks; "
                            "start as many as the job asks for\n",
                    (long long)job->parallel_ranks, size);
        MPI_Finalize();
        return MR_EXIT_INVALID;
    }
    if (opt->max_restarts > 0 && rank == 0)
        fprintf(stderr, "moerun run: --max-restarts supervises ranks that moerun starts itself "
                        "(launcher = local); under mpirun or srun it is ignored\n");
    /* A supervising `moerun run` checked the backend on this host; under
     * mpirun or srun each rank checks its own, and one that cannot run
     * stops all before the run folder is touched.  The first such rank
     * says why (ranks on one host would all say the same). */
    char err[1024];
    int rc = mr_runner_supervised() ? MR_EXIT_OK : mr_runner_backend_check(job, err, sizeof err);
    int first = rc == MR_EXIT_OK ? size : rank;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first < size) {
        if (rank == first)
            fprintf(stderr, "moerun run: rank %d: %s\n", rank, err);
        MPI_Finalize();
        return MR_EXIT_INVALID;
    }
    mr_plan plan = {0};
    mr_checkpoint_state state = {0};
    mr_runner_lock *lock = NULL;
    bool finished = false;
    rc = prepare_on_first_rank(job, opt, rank, &plan, &state, &finished, &lock);
    /* Until serving starts, every rank has the same rc and may end cleanly. */
    bool agreed = rc != MR_EXIT_OK || finished;
    if (!agreed)
        rc = mr_runner_serve(job, &plan, true, &state);
    mr_plan_free(&plan);
    mr_checkpoint_state_free(&state);
    fflush(stdout);
    /* One rank's failure must stop all: the others may be waiting on it.  A
     * stop is agreed by every rank. */
    if (!agreed && rc != MR_EXIT_OK && rc != MR_EXIT_STOPPED &&
        rc != MR_EXIT_REQUESTS_FAILED && size > 1)
        MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
    mr_runner_lock_release(lock);
    return rc;
}

/* backend = cuda on a host without a usable GPU is refused before the run
 * folder is touched. */
static int backend_check(const mr_job *job)
{
    char err[1024];
    int rc = mr_runner_backend_check(job, err, sizeof err);
    if (rc != MR_EXIT_OK)
        fprintf(stderr, "moerun run: %s\n", err);
    return rc;
}

static int run_alone(const mr_job *job, const run_options *opt)
{
    mr_plan plan = {0};
    mr_checkpoint_state state = {0};
    mr_runner_lock *lock = NULL;
    bool finished = false;
    int rc = backend_check(job);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_lock_take(job->job_run_dir, opt->argc, opt->argv, &lock);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_prepare(job, opt->force_new, &plan, &state, &finished);
    if (rc == MR_EXIT_OK && !finished)
        rc = mr_runner_serve(job, &plan, false, &state);
    mr_plan_free(&plan);
    mr_checkpoint_state_free(&state);
    mr_runner_lock_release(lock);
    return rc;
}

/* The command line the ranks run: the command, its operand and the
 * overrides; --force-new is done before they start, and restarts are this
 * process's business. */
static char **rank_argv(const char *command, const mr_runner_args *args, int *argc)
{
    char **argv = calloc(2 * args->n_overrides + 3, sizeof *argv);
    if (!argv)
        return NULL;
    int n = 0;
    argv[n++] = (char *)command;
    argv[n++] = (char *)args->operand;
    for (size_t i = 0; i < args->n_overrides; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)args->overrides[i].assignment;
    }
    *argc = n;
    return argv;
}

/* The local launcher: this process owns the run folder and runs mpirun,
 * again from the last checkpoint while ranks fail and restarts are left.
 * A stop, a changed job, a full disk or too many failed requests is no
 * reason to try again. */
static int supervise(const mr_job *job, const run_options *opt, const char *command,
                     const mr_runner_args *args)
{
    mr_runner_signals_supervise();
    alarm(0); /* a stop while the job was read set one; here stops only count */
    mr_runner_lock *lock;
    int rc = mr_runner_local_ranks_check(job, true), argc = 0;
    lock = NULL;
    if (rc == MR_EXIT_OK)
        rc = backend_check(job);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_lock_take(job->job_run_dir, opt->argc, opt->argv, &lock);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_resume_check(job, opt->force_new);
    char **argv = rc == MR_EXIT_OK ? rank_argv(command, args, &argc) : NULL;
    if (rc == MR_EXIT_OK && !argv)
        rc = MR_EXIT_FAILED;
    for (int restarts = 0; rc == MR_EXIT_OK; restarts++) {
        rc = mr_runner_launch_local(job, argc, argv);
        if (rc != MR_EXIT_RANK_FAILED || mr_runner_stop_signal() ||
            restarts >= opt->max_restarts)
            break;
        printf("job %s: a rank failed; restarting from the last checkpoint (restart %d of %d)\n",
               job->job_name, restarts + 1, opt->max_restarts);
        fflush(stdout);
        rc = MR_EXIT_OK;
    }
    free(argv);
    mr_runner_lock_release(lock);
    int sig = mr_runner_stop_signal();
    if (sig && rc == MR_EXIT_STOPPED)
        printf("job %s: stopped by %s: ended %.2f s after it%s; `moerun resume %s` "
               "goes on\n",
               job->job_name, mr_runner_signal_name(sig), mr_runner_stop_seconds(),
               mr_runner_stop_count() > 1 ? ", at once after a second signal" : "",
               job->job_run_dir);
    return rc;
}

static int start(const mr_job *job, const run_options *opt, const char *command,
                 const mr_runner_args *args, int argc, char **argv)
{
    if (mr_runner_under_mpi())
        return run_rank(job, opt, argc, argv);
    if (job->parallel_ranks == 1 && opt->max_restarts == 0)
        return run_alone(job, opt);
    if (job->parallel_launcher == MR_LAUNCHER_LOCAL)
        return supervise(job, opt, command, args);
    fprintf(stderr, "moerun run: [parallel] launcher = mpi: start moerun with mpirun or "
                    "srun, one process per rank (see docs/running.md), or set "
                    "launcher = local\n");
    return MR_EXIT_INVALID;
}

static int parse_options(const char *command, const mr_runner_args *args, run_options *opt,
                         int argc, char **argv)
{
    *opt = (run_options){.force_new = args->force_new, .argc = argc, .argv = argv};
    if (!args->max_restarts)
        return -1;
    char *end;
    long n = strtol(args->max_restarts, &end, 10);
    if (*args->max_restarts == '\0' || *end || n < 0 || n > 1000)
        return mr_runner_usage_error(command, "--max-restarts takes a whole number 0..1000, "
                                              "not '%s'", args->max_restarts);
    opt->max_restarts = (int)n;
    return -1;
}

/* RUN_DIR/job.ini, with run_dir pointing at where the folder is now (it
 * may have moved, or come from a bundle). */
static int load_run_job(mr_runner_args *args, mr_job *job)
{
    char where[PATH_MAX];
    if (!realpath(args->operand, where)) {
        perror(args->operand);
        return MR_EXIT_INVALID;
    }
    char *path = mr_runner_path(where, MR_RUN_JOB);
    char *run_dir = malloc(strlen(where) + 16);
    int rc = path && run_dir ? MR_EXIT_OK : MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK && access(path, F_OK) != 0) {
        fprintf(stderr, "%s: not a run folder: it has no %s (moerun run writes one)\n",
                args->operand, MR_RUN_JOB);
        rc = MR_EXIT_INVALID;
    }
    if (rc == MR_EXIT_OK) {
        sprintf(run_dir, "job.run_dir=%s", where);
        args->overrides[args->n_overrides++].assignment = run_dir;
        mr_runner_args at = *args;
        at.operand = path;
        rc = mr_runner_load_job(&at, job);
        args->n_overrides--;
    }
    free(path);
    free(run_dir);
    return rc;
}

static int load_job_file(mr_runner_args *args, mr_job *job)
{
    return mr_runner_load_job(args, job);
}

/* run and resume: parse, load the job, start. */
static int run_command(int argc, char **argv, unsigned allowed, const char *operand,
                       int (*load)(mr_runner_args *, mr_job *))
{
    /* Before anything else: a stop that comes now must not be lost. */
    mr_runner_signals_catch();
    const char *command = argv[0];
    mr_runner_args args;
    run_options opt;
    int rc = mr_runner_parse_args(argc, argv, allowed, operand, &args);
    if (rc < 0)
        rc = parse_options(command, &args, &opt, argc, argv);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    mr_job job;
    rc = load(&args, &job);
    if (rc == MR_EXIT_OK) {
        mr_runner_signals_grace((int)job.checkpoint_grace_seconds);
        rc = start(&job, &opt, command, &args, argc, argv);
        mr_job_free(&job);
    }
    mr_runner_free_args(&args);
    return rc;
}

int mr_runner_run(int argc, char **argv)
{
    return run_command(argc, argv, MR_OPT_SET | MR_OPT_FORCE_NEW | MR_OPT_MAX_RESTARTS,
                       "JOB.ini", load_job_file);
}

int mr_runner_resume(int argc, char **argv)
{
    return run_command(argc, argv, MR_OPT_SET | MR_OPT_MAX_RESTARTS, "RUN_DIR", load_run_job);
}
