/*
 * Fuzz target: a job file (jobs/job.c, on inih): load, defaults, checks,
 * input globs.  A job that loads must also survive what `moerun run` does
 * with it: RUN_DIR/job.ini is mr_job_format's text, which `moerun resume`
 * loads again, so that text must load to the same job.
 */
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"
#include "tests/fuzz/fuzz.h"

static const char *dir;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dir = mr_fuzz_tmpdir();
    /* A HOME longer than the job's folder, so that a "~/" path built in a
     * buffer sized for the folder (or the other way round) overflows. */
    char home[300] = "/home/";
    memset(home + 6, 'h', sizeof home - 7);
    home[sizeof home - 1] = '\0';
    mr_fuzz_check(setenv("HOME", home, 1) == 0, "setenv HOME");
    /* Inputs for `files` to name, one by name and two by glob. */
    free(mr_fuzz_write(dir, "r.jsonl", "{\"id\": 1, \"prompt\": \"hi\"}\n", 26));
    free(mr_fuzz_write(dir, "a.jsonl", "", 0));
    free(mr_fuzz_write(dir, "b.jsonl", "", 0));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = mr_fuzz_write(dir, "job.ini", data, size);
    char err[4096];
    mr_job job;
    int rc = mr_job_load(&job, path, NULL, 0, err, sizeof err);
    free(path);
    if (rc != MR_JOBS_OK) {
        mr_fuzz_check(rc == MR_JOBS_EINVAL && err[0], "a refused job says why");
        return 0;
    }
    mr_buf text = {0}, fingerprint = {0}, again = {0};
    mr_fuzz_check(mr_job_format(&job, &text) == MR_JOBS_OK, "mr_job_format");
    mr_fuzz_check(mr_job_format_fingerprint(&job, &fingerprint) == MR_JOBS_OK,
                  "mr_job_format_fingerprint");
    mr_request_parser *parser = mr_request_parser_new(&job);
    mr_fuzz_check(parser != NULL, "mr_request_parser_new");
    mr_request_parser_free(parser);
    mr_job_free(&job);

    path = mr_fuzz_write(dir, "job.ini", text.data, text.len);
    rc = mr_job_load(&job, path, NULL, 0, err, sizeof err);
    free(path);
    mr_fuzz_check(rc == MR_JOBS_OK, "the formatted job loads again");
    mr_fuzz_check(mr_job_format(&job, &again) == MR_JOBS_OK, "mr_job_format");
    mr_fuzz_check(again.len == text.len && memcmp(again.data, text.data, text.len) == 0,
                  "the formatted job loads to the same job");
    mr_job_free(&job);
    mr_buf_free(&text);
    mr_buf_free(&fingerprint);
    mr_buf_free(&again);
    return 0;
}
