/*
 * Request parsing speed.  Generates a JSONL file of realistic requests
 * (MR_BENCH_BYTES, default 1 GiB; in $TMPDIR), then times, on one core and
 * in one run so the figures compare:
 *   lines  splitting the file into lines (mmap + memchr): the floor
 *   cjson  cJSON parsing each line and nothing else: the library alone
 *   parse  mr_request_parse on each line: UTF-8 check, cJSON, field checks
 *   plan   mr_plan_build: parse, duplicate-id set and shard cutting
 * and prints MB/s for each and parse's ratios to lines and cjson.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "jobs/jobs.h"

static const char *const WORDS[] = {
    "the", "model", "expert", "token", "batch", "request", "layer", "routing", "cluster",
    "node", "résumé", "naïve", "数据", "専門家", "전문가", "🚀", "quick", "brown", "fox",
    "jumps", "over", "lazy", "dog", "parallel", "inference", "throughput", "\\n", "\\\"q\\\""};
#define N_WORDS (sizeof WORDS / sizeof WORDS[0])

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void append_text(mr_buf *b, unsigned *seed, size_t bytes)
{
    size_t start = b->len;
    while (b->len - start < bytes) {
        const char *w = WORDS[(size_t)rand_r(seed) % N_WORDS];
        mr_buf_append(b, w, strlen(w));
        mr_buf_append(b, " ", 1);
    }
}

/* Chat and completion requests with prompts of 200 B to 8 KiB. */
static void generate(const char *path, uint64_t target)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    unsigned seed = 42;
    mr_buf line = {0};
    uint64_t written = 0;
    for (uint64_t i = 0; written < target; i++) {
        line.len = 0;
        char head[256];
        size_t prompt = 200 + (size_t)rand_r(&seed) % 8000;
        bool chat = i % 2 == 0;
        snprintf(head, sizeof head,
                 "{\"custom_id\": \"request-%llu\", \"method\": \"POST\", \"url\": \"%s\", "
                 "\"body\": {\"model\": \"qwen3-moe\", %s",
                 (unsigned long long)i, chat ? "/v1/chat/completions" : "/v1/completions",
                 chat ? "\"messages\": [{\"role\": \"system\", \"content\": \"You are "
                        "helpful.\"}, {\"role\": \"user\", \"content\": \""
                      : "\"prompt\": \"");
        mr_buf_append(&line, head, strlen(head));
        append_text(&line, &seed, prompt);
        const char *tail = chat ? "\"}], \"max_completion_tokens\": 256, \"temperature\": 0.7}}\n"
                                : "\", \"max_tokens\": 128, \"top_p\": 0.9, \"stop\": [\"\\n\\n\"]}}\n";
        mr_buf_append(&line, tail, strlen(tail));
        fwrite(line.data, 1, line.len, f);
        written += line.len;
    }
    mr_buf_free(&line);
    fclose(f);
}

typedef enum { PASS_LINES, PASS_CJSON, PASS_PARSE } pass_kind;

static double run_pass(const char *path, const mr_job *job, pass_kind kind, uint64_t *bytes,
                       uint64_t *bad)
{
    char err[512];
    mr_line_reader *r;
    if (mr_line_reader_open(&r, path, 0, UINT64_MAX, 1, 1 << 26, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    mr_request_parser *parser = mr_request_parser_new(job);
    double t0 = now();
    mr_line line;
    *bytes = *bad = 0;
    while (mr_line_reader_next(r, &line, err, sizeof err) == 1) {
        *bytes += line.len + 1;
        if (kind == PASS_CJSON) {
            cJSON *root = cJSON_ParseWithLength(line.data, line.len);
            *bad += root == NULL;
            cJSON_Delete(root);
        } else if (kind == PASS_PARSE) {
            mr_request req;
            mr_request_error e;
            *bad += mr_request_parse(parser, line.data, line.len, path, 0, line.line_no, &req,
                                     &e) != MR_JOBS_OK;
        }
    }
    double t = now() - t0;
    mr_request_parser_free(parser);
    mr_line_reader_close(r);
    return t;
}

int main(void)
{
    const char *env = getenv("MR_BENCH_BYTES");
    uint64_t target = env ? strtoull(env, NULL, 10) : 1ULL << 30;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[4096], path[4200], job_path[4200];
    snprintf(dir, sizeof dir, "%s/moerun-bench-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/requests.jsonl", dir);
    snprintf(job_path, sizeof job_path, "%s/job.ini", dir);
    FILE *ini = fopen(job_path, "w");
    fprintf(ini, "[model]\npath = .\n[input]\nfiles = requests.jsonl\n");
    fclose(ini);
    double t0 = now();
    generate(path, target);
    printf("bench_parse: generated %.0f MiB in %.1f s (%s)\n", (double)target / 1048576,
           now() - t0, path);

    mr_job job;
    char err[4096];
    if (mr_job_load(&job, job_path, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    static const char *const names[] = {"lines", "cjson", "parse"};
    double mbs[3];
    uint64_t bytes = 0, bad = 0;
    for (int k = 0; k < 3; k++) {
        double t = run_pass(path, &job, (pass_kind)k, &bytes, &bad);
        mbs[k] = (double)bytes / 1e6 / t;
        printf("bench_parse: %-6s %8.1f MB/s  (%.2f s, %llu bad lines)\n", names[k], mbs[k], t,
               (unsigned long long)bad);
        if (bad) {
            fprintf(stderr, "bench_parse: generated lines failed to parse\n");
            return 1;
        }
    }
    mr_plan plan;
    t0 = now();
    if (mr_plan_build(&plan, &job, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double t = now() - t0;
    printf("bench_parse: plan   %8.1f MB/s  (%.2f s, %llu requests, %zu shards)\n",
           (double)bytes / 1e6 / t, t, (unsigned long long)plan.n_requests, plan.n_shards);
    printf("bench_parse: parse/lines %.3f, parse/cjson %.3f\n", mbs[2] / mbs[0],
           mbs[2] / mbs[1]);
    mr_plan_free(&plan);
    mr_job_free(&job);
    unlink(path);
    unlink(job_path);
    rmdir(dir);
    return 0;
}
