/*
 * moerun run: check the job, plan its shards into the run folder, serve.
 * The plan and the resolved job are written before anything is served, so
 * that `moerun status` and a resumed run always find them.
 */
#include <stdio.h>
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

int mr_runner_run(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_SET, "JOB.ini", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    mr_job job;
    mr_plan plan = {0};
    rc = mr_runner_load_job(&args, &job);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_build_plan(&job, &plan);
    if (rc == MR_EXIT_OK)
        rc = write_run_folder(&job, &plan);
    if (rc == MR_EXIT_OK) {
        printf("job %s: planned into %s/%s\n", job.job_name, job.job_run_dir, MR_RUN_PLAN);
        mr_runner_print_plan(stdout, &plan);
        fflush(stdout);
        rc = mr_runner_serve(&job, &plan);
    }
    mr_job_free(&job);
    mr_plan_free(&plan);
    mr_runner_free_args(&args);
    return rc;
}
