/*
 * moerun validate: everything `run` checks before it serves, and a look at
 * the first invalid request lines, without writing anything.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "runner/runner.h"

/* Invalid lines shown; the rest are counted in the plan. */
#define SHOW_INVALID 10

/* Load the model as `run` would: config, tokenizer, chat template and the
 * name, dtype, shape and byte range of every weight.  Weights are mmapped,
 * not read, so this is quick even for a large checkpoint. */
static int check_model(const mr_job *job)
{
    struct stat st;
    const char *dir = job->model_path;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "%s: [model] path %s: %s\n", job->source, dir, strerror(errno));
        return MR_EXIT_INVALID;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: [model] path %s is not a folder\n", job->source, dir);
        return MR_EXIT_INVALID;
    }
    char err[2048];
    mr_model *model;
    mr_model_options options = {.backend = "ref", .threads = 1};
    int rc = mr_model_load(dir, &options, &model, err, sizeof err);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "%s: [model] path: %s\n", job->source, err);
        return rc == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
    }
    mr_model_free(model);
    return MR_EXIT_OK;
}

/* Print up to `limit` invalid lines of one shard; returns how many it printed. */
static int show_invalid_in_shard(const mr_job *job, const mr_plan *plan,
                                 const mr_shard *shard, mr_request_parser *parser, int limit)
{
    const char *path = plan->files[shard->file_index].path;
    char err[512];
    mr_line_reader *reader;
    if (mr_line_reader_open(&reader, path, shard->begin, shard->end, shard->first_line,
                            (size_t)job->input_max_line_bytes, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "%s\n", err);
        return limit;
    }
    int shown = 0;
    mr_line line;
    int got = 0;
    while (shown < limit && (got = mr_line_reader_next(reader, &line, err, sizeof err)) == 1) {
        mr_request req;
        mr_request_error error;
        if (line.too_long)
            mr_request_error_line_too_long(&error, path, line.line_no, line.len,
                                           (uint64_t)job->input_max_line_bytes);
        else if (mr_line_is_blank(line.data, line.len) ||
                 mr_request_parse(parser, line.data, line.len, path, shard->file_index,
                                  line.line_no, &req, &error) == MR_JOBS_OK)
            continue;
        printf("  %s [%s]\n", error.message, error.code);
        shown++;
    }
    if (got < 0)
        fprintf(stderr, "%s\n", err);
    mr_line_reader_close(reader);
    return shown;
}

static void show_invalid(const mr_job *job, const mr_plan *plan)
{
    mr_request_parser *parser = mr_request_parser_new(job);
    if (!parser)
        return;
    printf("first invalid lines:\n");
    int left = SHOW_INVALID;
    for (size_t s = 0; s < plan->n_shards && left > 0; s++)
        left -= show_invalid_in_shard(job, plan, &plan->shards[s], parser, left);
    mr_request_parser_free(parser);
}

static void show_duplicates(const mr_plan *plan)
{
    printf("duplicate custom_id lines (the first line with the id is served):\n");
    for (size_t i = 0; i < plan->n_duplicates && i < SHOW_INVALID; i++) {
        const mr_duplicate *d = &plan->duplicates[i];
        printf("  %s:%llu repeats the id of %s:%llu\n", plan->files[d->file_index].path,
               (unsigned long long)d->line_no, plan->files[d->first_file_index].path,
               (unsigned long long)d->first_line_no);
    }
}

int mr_runner_validate(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_SET | MR_OPT_PRINT, "JOB.ini", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    mr_job job;
    mr_plan plan = {0};
    bool planned = false;
    rc = mr_runner_load_job(&args, &job);
    if (rc == MR_EXIT_OK && args.print) {
        mr_buf text = {0};
        if (mr_job_format(&job, &text) == MR_JOBS_OK)
            fputs(text.data, stdout);
        mr_buf_free(&text);
    }
    if (rc == MR_EXIT_OK) {
        int model_rc = check_model(&job);
        /* What run would refuse before starting mpirun. */
        int ranks_rc = job.parallel_launcher == MR_LAUNCHER_LOCAL
                           ? mr_runner_local_ranks_check(&job, false)
                           : MR_EXIT_OK;
        rc = mr_runner_build_plan(&job, &plan);
        planned = rc == MR_EXIT_OK;
        if (rc == MR_EXIT_OK)
            rc = model_rc != MR_EXIT_OK ? model_rc : ranks_rc;
    }
    if (planned) {
        printf("job %s: %s\n", job.job_name, rc == MR_EXIT_OK ? "valid" : "invalid");
        mr_runner_print_plan(stdout, &plan);
        if (plan.n_invalid)
            show_invalid(&job, &plan);
        if (plan.n_duplicates)
            show_duplicates(&plan);
    }
    mr_job_free(&job);
    mr_plan_free(&plan);
    mr_runner_free_args(&args);
    return rc;
}
