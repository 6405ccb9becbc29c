/*
 * Fuzz target: one request line (jobs/request.c), in both input formats,
 * and the result or error line moerun writes for it.  Every line written
 * must be JSON in UTF-8: the output files are JSONL whatever came in, and
 * cJSON copies bytes through without checking them.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/internal.h"
#include "jobs/jobs.h"
#include "tests/fuzz/fuzz.h"

/* One job and parser per input format (the enum's order). */
static const char *const formats[] = {"openai-batch", "prompt"};
#define N_FORMATS (sizeof formats / sizeof formats[0])
static mr_job jobs[N_FORMATS];
static mr_request_parser *parsers[N_FORMATS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = mr_fuzz_tmpdir();
    free(mr_fuzz_write(dir, "r.jsonl", "", 0));
    for (size_t i = 0; i < N_FORMATS; i++) {
        char ini[256], err[1024];
        /* Job defaults a request may override, stop strings included. */
        int n = snprintf(ini, sizeof ini,
                         "[model]\npath = model\n[input]\nfiles = r.jsonl\nformat = %s\n"
                         "[generation]\nmax_tokens = 16\nstop = [\"###\"]\n",
                         formats[i]);
        char *path = mr_fuzz_write(dir, "job.ini", ini, (size_t)n);
        int rc = mr_job_load(&jobs[i], path, NULL, 0, err, sizeof err);
        free(path);
        mr_fuzz_check(rc == MR_JOBS_OK, err);
        parsers[i] = mr_request_parser_new(&jobs[i]);
        mr_fuzz_check(parsers[i] != NULL, "request parser");
    }
    return 0;
}

static void check_json_line(const mr_buf *out)
{
    mr_fuzz_check(out->len > 0 && out->data[out->len - 1] == '\n', "a written line ends in \\n");
    mr_fuzz_check(mr_utf8_invalid_at(out->data, out->len) == out->len,
                  "a written line is UTF-8");
    cJSON *json = cJSON_ParseWithLength(out->data, out->len);
    mr_fuzz_check(cJSON_IsObject(json), "a written line is a JSON object");
    cJSON_Delete(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < N_FORMATS; i++) {
        mr_request req;
        mr_request_error error;
        mr_buf out = {0};
        int rc = mr_request_parse(parsers[i], (const char *)data, size, "r.jsonl", 0, 7, &req,
                                  &error);
        if (rc == MR_JOBS_OK) {
            /* The prompt echoed as the completion: the request's own bytes
             * go through the writer. */
            const char *text = req.n_prompts && req.prompts[0].text ? req.prompts[0].text
                               : req.n_messages                   ? req.messages[0].content
                                                                  : "";
            mr_completion completion = {.text = text, .text_len = strlen(text),
                                        .finish_reason = "length", .prompt_tokens = 3,
                                        .completion_tokens = 5};
            rc = mr_result_format(&out, "fuzz", "tiny", &req, &completion, 1, 1712345678);
        } else {
            mr_fuzz_check(rc == MR_JOBS_EINVAL, "a refused line is MR_JOBS_EINVAL");
            mr_fuzz_check(error.code[0] && error.message[0], "a refused line says why");
            rc = mr_error_format(&out, "fuzz", "r.jsonl", 7, &error);
        }
        mr_fuzz_check(rc == MR_JOBS_OK, "formatting a result or error line");
        check_json_line(&out);
        mr_buf_free(&out);
    }
    return 0;
}
