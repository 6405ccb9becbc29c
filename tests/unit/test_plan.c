/* The shard plan: every line in exactly one shard, stable, and read back. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"
#include "tests/common/fixture.h"

static char *dir;

static void setup(void)
{
    dir = mr_test_tmpdir();
    mr_test_make_model(dir);
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(plan, .init = setup, .fini = teardown);

static int scale(void)
{
    const char *s = getenv("MR_TEST_SCALE");
    return s && atoi(s) > 0 ? atoi(s) : 1;
}

static void load_job(mr_job *job, const char *files, const char *extra)
{
    char err[4096], *ini = NULL;
    cr_assert(asprintf(&ini, "[model]\npath = model\n[input]\nfiles = %s\n%s", files, extra) > 0);
    cr_assert_eq(mr_test_load_job(job, dir, ini, NULL, 0, err, sizeof err), MR_JOBS_OK, "%s",
                 err);
    free(ini);
}

static void build(mr_plan *plan, const mr_job *job, size_t n_shards)
{
    char err[4096];
    cr_assert_eq(mr_plan_build(plan, job, n_shards, err, sizeof err), MR_JOBS_OK, "%s", err);
}

/* Random request lines, some blank, some broken, some repeating an id. */
static size_t random_file(mr_buf *out, unsigned *seed, size_t n_lines, int file)
{
    size_t requests = 0;
    for (size_t i = 0; i < n_lines; i++) {
        int kind = rand_r(seed) % 20;
        char line[2048];
        int pad = rand_r(seed) % 1500;
        if (kind == 0)
            snprintf(line, sizeof line, "\n");
        else if (kind == 1)
            snprintf(line, sizeof line, "{broken\n");
        else {
            snprintf(line, sizeof line,
                     "{\"id\": \"f%d-%zu\", \"prompt\": \"%*s\"}%s\n", file, i, pad + 1, "p",
                     kind == 2 ? "\r" : "");
            requests++;
        }
        mr_buf_append(out, line, strlen(line));
    }
    return requests;
}

/* Read every shard and mark each (file, line) seen; all must be seen once. */
static void check_cover(const mr_plan *plan, const mr_job *job)
{
    for (size_t f = 0; f < plan->n_files; f++) {
        uint64_t n = plan->files[f].lines;
        unsigned char *seen = calloc(n + 2, 1);
        uint64_t in_shards = 0;
        for (size_t s = 0; s < plan->n_shards; s++) {
            const mr_shard *sh = &plan->shards[s];
            cr_assert_eq(sh->id, s);
            if (sh->file_index != f)
                continue;
            cr_assert_gt(sh->n_lines, 0, "shard %zu is empty", s);
            in_shards += sh->n_lines;
            mr_line_reader *r;
            char err[512];
            cr_assert_eq(mr_line_reader_open(&r, plan->files[f].path, sh->begin, sh->end,
                                             sh->first_line,
                                             (size_t)job->input_max_line_bytes, err,
                                             sizeof err),
                         0, "%s", err);
            mr_line line;
            uint64_t expect = sh->first_line, count = 0;
            while (mr_line_reader_next(r, &line, err, sizeof err) == 1) {
                cr_assert_eq(line.line_no, expect++);
                cr_assert_leq(line.line_no, n);
                cr_assert_eq(seen[line.line_no], 0, "line %llu in two shards",
                             (unsigned long long)line.line_no);
                seen[line.line_no] = 1;
                count++;
            }
            mr_line_reader_close(r);
            cr_assert_eq(count, sh->n_lines, "shard %zu: %llu lines read, %llu planned", s,
                         (unsigned long long)count, (unsigned long long)sh->n_lines);
        }
        for (uint64_t l = 1; l <= n; l++)
            cr_assert_eq(seen[l], 1, "file %zu line %llu in no shard", f,
                         (unsigned long long)l);
        cr_assert_eq(in_shards, n);
        free(seen);
    }
}

Test(plan, every_line_in_exactly_one_shard)
{
    static const char *const tools[] = {NULL, "gzip", "zstd"};
    unsigned seed = 12345;
    for (int round = 0; round < 6 * scale(); round++) {
        int n_files = 1 + rand_r(&seed) % 3;
        mr_buf files = {0};
        size_t requests = 0, lines = 0;
        bool compressed[3];
        for (int f = 0; f < n_files; f++) {
            mr_buf data = {0};
            size_t n = (size_t)(rand_r(&seed) % 400);
            requests += random_file(&data, &seed, n, f);
            lines += n;
            char name[64];
            snprintf(name, sizeof name, "r%d-%d.jsonl", round, f);
            free(mr_test_write(dir, name, data.data ? data.data : "", data.len));
            const char *tool = tools[rand_r(&seed) % 3];
            compressed[f] = tool != NULL;
            if (tool) {
                char *cmd = NULL;
                cr_assert(asprintf(&cmd, "cd '%s' && %s -q -c %s > %s.z && mv %s.z %s", dir,
                                   tool, name, name, name, name) > 0);
                cr_assert_eq(system(cmd), 0);
                free(cmd);
            }
            mr_buf_append(&files, name, strlen(name));
            mr_buf_append(&files, " ", 1);
            mr_buf_free(&data);
        }
        mr_job job;
        load_job(&job, files.data, "[input]\nformat = prompt\n");
        mr_plan plan;
        size_t want = (size_t)(rand_r(&seed) % 40);
        build(&plan, &job, want);
        cr_assert_eq(plan.n_lines, lines);
        cr_assert_eq(plan.n_requests, requests, "round %d: %llu planned, %zu written", round,
                     (unsigned long long)plan.n_requests, requests);
        for (int f = 0; f < n_files; f++)
            cr_assert_eq(plan.files[f].compressed, compressed[f], "round %d file %d", round, f);
        check_cover(&plan, &job);
        mr_plan_free(&plan);
        mr_job_free(&job);
        mr_buf_free(&files);
    }
}

Test(plan, same_input_same_plan_and_json_round_trip)
{
    mr_buf data = {0};
    unsigned seed = 7;
    random_file(&data, &seed, 3000, 0);
    free(mr_test_write(dir, "a.jsonl", data.data, data.len));
    mr_job job;
    load_job(&job, "a.jsonl", "[input]\nformat = prompt\n");
    mr_plan a, b, c;
    build(&a, &job, 7);
    build(&b, &job, 7);
    mr_buf ja = {0}, jb = {0}, jc = {0};
    cr_assert_eq(mr_plan_format(&a, &ja), MR_JOBS_OK);
    cr_assert_eq(mr_plan_format(&b, &jb), MR_JOBS_OK);
    cr_assert_str_eq(ja.data, jb.data);
    char err[512];
    cr_assert_eq(mr_plan_parse(&c, ja.data, ja.len, err, sizeof err), MR_JOBS_OK, "%s", err);
    cr_assert_eq(mr_plan_format(&c, &jc), MR_JOBS_OK);
    cr_assert_str_eq(ja.data, jc.data);
    cr_assert_eq(c.n_shards, 7);
    /* shards are close to equal in size */
    for (size_t s = 0; s < a.n_shards; s++) {
        uint64_t size = a.shards[s].end - a.shards[s].begin;
        cr_assert(size > data.len / 7 * 8 / 10 && size < data.len / 7 * 12 / 10,
                  "shard %zu: %llu bytes of %zu", s, (unsigned long long)size, data.len);
    }
    mr_plan_free(&a);
    mr_plan_free(&b);
    mr_plan_free(&c);
    mr_buf_free(&ja);
    mr_buf_free(&jb);
    mr_buf_free(&jc);
    mr_buf_free(&data);
    mr_job_free(&job);
}

Test(plan, duplicates_across_files_in_input_order)
{
    free(mr_test_write(dir, "a.jsonl",
                       "{\"id\": \"x\", \"prompt\": \"1\"}\n{\"id\": \"y\", \"prompt\": \"2\"}\n",
                       (size_t)-1));
    free(mr_test_write(dir, "b.jsonl",
                       "{\"id\": \"y\", \"prompt\": \"3\"}\n\n{\"id\": \"x\", \"prompt\": \"4\"}\n",
                       (size_t)-1));
    mr_job job;
    load_job(&job, "a.jsonl b.jsonl", "[input]\nformat = prompt\n");
    mr_plan plan;
    build(&plan, &job, 0);
    cr_assert_eq(plan.n_requests, 2);
    cr_assert_eq(plan.n_duplicates, 2);
    cr_assert_eq(plan.duplicates[0].file_index, 1);
    cr_assert_eq(plan.duplicates[0].line_no, 1);
    cr_assert_eq(plan.duplicates[0].first_file_index, 0);
    cr_assert_eq(plan.duplicates[0].first_line_no, 2);
    cr_assert_eq(plan.duplicates[1].line_no, 3);
    cr_assert_eq(plan.duplicates[1].first_line_no, 1);
    cr_assert_eq(plan.n_lines, 5);
    mr_plan_free(&plan);
    mr_job_free(&job);
}

Test(plan, shard_counts)
{
    mr_buf data = {0};
    unsigned seed = 3;
    random_file(&data, &seed, 200, 0);
    free(mr_test_write(dir, "a.jsonl", data.data, data.len));
    free(mr_test_write(dir, "b.jsonl", "{\"id\": 1, \"prompt\": \"x\"}\n", (size_t)-1));
    free(mr_test_write(dir, "empty.jsonl", "", 0));
    mr_job job;
    load_job(&job, "a.jsonl b.jsonl empty.jsonl", "[parallel]\nranks = 3\n");
    mr_plan plan;
    build(&plan, &job, 0);
    cr_assert_eq(plan.n_shards, 12, "auto: 4 per rank");
    cr_assert_eq(plan.shards[11].file_index, 1, "the small file still gets its shard");
    mr_plan_free(&plan);
    build(&plan, &job, 1);
    cr_assert_eq(plan.n_shards, 2, "a shard never spans two files");
    mr_plan_free(&plan);
    build(&plan, &job, 100000);
    cr_assert_eq(plan.n_shards, 201, "no more shards than lines");
    check_cover(&plan, &job);
    mr_plan_free(&plan);
    mr_job_free(&job);
    mr_buf_free(&data);
}

Test(plan, damaged_plan_json_is_refused)
{
    static const char *const cases[][2] = {
        {"[]", "not a JSON object"},
        {"{\"version\": 9}", "plan version 9"},
        {"{\"version\": 1, \"lines\": 1, \"requests\": 1, \"invalid\": 0, \"files\": [], "
         "\"shards\": [{\"id\": 0}], \"duplicates\": []}",
         "shards"},
        {"{\"version\": 1, \"lines\": -1}", "lines: not a whole number"},
        {"{\"version\": 1, \"lines\": 1, \"requests\": 1, \"invalid\": 0, \"files\": [{\"path\": "
         "\"a\", \"bytes\": 10, \"lines\": 1}], \"shards\": [{\"id\": 0, \"file\": 0, "
         "\"begin\": 0, \"end\": 99, \"first_line\": 1, \"lines\": 1}], \"duplicates\": []}",
         "byte range outside its file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mr_plan plan;
        char err[512];
        cr_assert_eq(mr_plan_parse(&plan, cases[i][0], strlen(cases[i][0]), err, sizeof err),
                     MR_JOBS_EINVAL, "%s", cases[i][0]);
        cr_assert(strstr(err, cases[i][1]), "want '%s', got '%s'", cases[i][1], err);
    }
}
