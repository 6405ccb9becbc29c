/*
 * moerun run: check the job, plan its shards into the run folder, serve.
 * The plan and the resolved job are written before anything is served, so
 * that `moerun status` and a resumed run always find them.
 */
#include <mpi.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>

#include "runner/runner.h"

static int write_buf(const char *dir, const char *name, const mr_buf *buf)
{
    char err[512];
    char *path = mr_runner_path(dir, name);
    int rc = path ? mr_runner_write_atomic(path, buf->data, buf->len, err, sizeof err)
                  : MR_JOBS_ENOMEM;
    if (rc != MR_JOBS_OK)
        fprintf(stderr, "moerun run: %s\n", path ? err : "out of memory");
    free(path);
    return rc == MR_JOBS_OK ? MR_EXIT_OK : MR_EXIT_FAILED;
}

static int write_run_folder(const mr_job *job, const mr_plan *plan)
{
    char err[512];
    if (mr_runner_mkdir_p(job->job_run_dir, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: [job] run_dir: %s\n", err);
        return MR_EXIT_FAILED;
    }
    mr_buf job_text = {0}, plan_text = {0};
    int rc = MR_EXIT_FAILED;
    if (mr_job_format(job, &job_text) == MR_JOBS_OK &&
        mr_plan_format(plan, &plan_text) == MR_JOBS_OK) {
        rc = write_buf(job->job_run_dir, MR_RUN_JOB, &job_text);
        if (rc == MR_EXIT_OK)
            rc = write_buf(job->job_run_dir, MR_RUN_PLAN, &plan_text);
    } else {
        fprintf(stderr, "moerun run: out of memory\n");
    }
    mr_buf_free(&job_text);
    mr_buf_free(&plan_text);
    return rc;
}

/* Plans the job, writes the run folder and shows the plan. */
static int plan_job(const mr_job *job, mr_plan *plan)
{
    int rc = mr_runner_build_plan(job, plan);
    if (rc == MR_EXIT_OK)
        rc = write_run_folder(job, plan);
    if (rc == MR_EXIT_OK) {
        printf("job %s: planned into %s/%s\n", job->job_name, job->job_run_dir, MR_RUN_PLAN);
        mr_runner_print_plan(stdout, plan);
        fflush(stdout);
    }
    return rc;
}

/* The first rank plans and writes the run folder; the others read the
 * plan it wrote (the run folder is on storage every host sees). */
static int plan_on_first_rank(const mr_job *job, mr_plan *plan, int rank, int64_t *created)
{
    *created = (int64_t)time(NULL);
    int rc = rank == 0 ? plan_job(job, plan) : MR_EXIT_OK;
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    /* One `created` for the whole job, whichever rank serves a line. */
    MPI_Bcast(created, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (rc == MR_EXIT_OK && rank != 0)
        rc = mr_runner_load_plan(job->job_run_dir, plan);
    return rc;
}

/* One rank of a job that mpirun or srun started. */
static int run_rank(const mr_job *job, int argc, char **argv)
{
    mr_runner_mpi_init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != job->parallel_ranks) {
        if (rank == 0)
            fprintf(stderr, "moerun run: [parallel] ranks is %lld but MPI started %d ranks; "
                            "start as many as the job asks for\n",
                    (long long)job->parallel_ranks, size);
        MPI_Finalize();
        return MR_EXIT_INVALID;
    }
    mr_plan plan = {0};
    int64_t created;
    int rc = plan_on_first_rank(job, &plan, rank, &created);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_serve(job, &plan, true, created);
    mr_plan_free(&plan);
    fflush(stdout);
    /* One rank's failure must stop all: the others may be waiting on it. */
    if (rc != MR_EXIT_OK && size > 1)
        MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
    return rc;
}

static int run_alone(const mr_job *job)
{
    mr_plan plan = {0};
    int rc = plan_job(job, &plan);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_serve(job, &plan, false, (int64_t)time(NULL));
    mr_plan_free(&plan);
    return rc;
}

int mr_runner_run(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_SET, "JOB.ini", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    mr_job job;
    rc = mr_runner_load_job(&args, &job);
    if (rc == MR_EXIT_OK) {
        if (mr_runner_under_mpi())
            rc = run_rank(&job, argc, argv);
        else if (job.parallel_ranks == 1)
            rc = run_alone(&job);
        else if (job.parallel_launcher == MR_LAUNCHER_LOCAL)
            rc = mr_runner_launch_local(&job, argc, argv);
        else {
            fprintf(stderr, "moerun run: [parallel] launcher = mpi: start moerun with mpirun or "
                            "srun, one process per rank (see docs/running.md), or set "
                            "launcher = local\n");
            rc = MR_EXIT_INVALID;
        }
        mr_job_free(&job);
    }
    mr_runner_free_args(&args);
    return rc;
}
