/* Input files: plain and compressed, odd line ends, long lines, ranges. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"
#include "tests/common/fixture.h"

static char *dir;

static void setup(void) { dir = mr_test_tmpdir(); }

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(input, .init = setup, .fini = teardown);

/* Write `data` as dir/name, compressed with `tool` ("gzip", "zstd", "xz")
 * unless it is NULL; returns the path. */
static char *write_input(const char *name, const char *data, size_t len, const char *tool)
{
    char *path = mr_test_write(dir, name, data, len);
    if (tool) {
        char *cmd = NULL;
        cr_assert(asprintf(&cmd, "%s -q -c '%s' > '%s.tmp' && mv '%s.tmp' '%s'", tool, path,
                           path, path, path) > 0);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        free(cmd);
    }
    return path;
}

typedef struct {
    char text[64][64];
    uint64_t line_no[64], offset[64], len[64];
    bool too_long[64];
    size_t n;
} lines;

static int read_lines(const char *path, uint64_t begin, uint64_t end, uint64_t first,
                      size_t max, lines *out, char *err)
{
    mr_line_reader *r;
    int rc = mr_line_reader_open(&r, path, begin, end, first, max, err, 512);
    if (rc != MR_JOBS_OK)
        return rc;
    memset(out, 0, sizeof *out);
    mr_line line;
    while ((rc = mr_line_reader_next(r, &line, err, 512)) == 1) {
        cr_assert_lt(out->n, 64);
        snprintf(out->text[out->n], 64, "%.*s", (int)(line.len < 63 ? line.len : 63),
                 line.data);
        out->line_no[out->n] = line.line_no;
        out->offset[out->n] = line.offset;
        out->len[out->n] = line.len;
        out->too_long[out->n] = line.too_long;
        out->n++;
    }
    mr_line_reader_close(r);
    return rc;
}

static const char *const TOOLS[] = {NULL, "gzip", "zstd", "xz"};

Test(input, lines_of_plain_and_compressed_files)
{
    const char *data = "first\r\nsecond\n\nfourth without newline";
    for (size_t t = 0; t < 4; t++) {
        char name[32];
        snprintf(name, sizeof name, "in-%zu.jsonl", t);
        char *path = write_input(name, data, strlen(data), TOOLS[t]);
        bool compressed = false;
        lines got;
        char err[512];
        cr_assert_eq(read_lines(path, 0, UINT64_MAX, 1, 1 << 20, &got, err), 0, "%s", err);
        cr_assert_eq(got.n, 4, "%s: %zu lines", TOOLS[t] ? TOOLS[t] : "plain", got.n);
        cr_assert_str_eq(got.text[0], "first", "CR is not part of the line");
        cr_assert_str_eq(got.text[1], "second");
        cr_assert_str_eq(got.text[2], "");
        cr_assert_str_eq(got.text[3], "fourth without newline");
        cr_assert_eq(got.offset[1], 7);
        cr_assert_eq(got.offset[3], 15);
        cr_assert_eq(got.line_no[3], 4);
        (void)compressed;
        free(path);
    }
}

Test(input, ranges_hand_out_the_lines_that_start_inside)
{
    const char *data = "aa\nbbb\ncccc\ndd\n";
    for (size_t t = 0; t < 4; t++) {
        char name[32];
        snprintf(name, sizeof name, "r-%zu.jsonl", t);
        char *path = write_input(name, data, strlen(data), TOOLS[t]);
        lines got;
        char err[512];
        cr_assert_eq(read_lines(path, 3, 12, 2, 1 << 20, &got, err), 0, "%s", err);
        cr_assert_eq(got.n, 2);
        cr_assert_str_eq(got.text[0], "bbb");
        cr_assert_eq(got.line_no[0], 2);
        cr_assert_str_eq(got.text[1], "cccc");
        cr_assert_eq(got.line_no[1], 3);
        cr_assert_eq(read_lines(path, 12, 15, 4, 1 << 20, &got, err), 0, "%s", err);
        cr_assert_eq(got.n, 1);
        cr_assert_str_eq(got.text[0], "dd");
        free(path);
    }
}

Test(input, empty_file_has_no_lines)
{
    for (size_t t = 0; t < 4; t++) {
        char name[32];
        snprintf(name, sizeof name, "e-%zu.jsonl", t);
        char *path = write_input(name, "", 0, TOOLS[t]);
        lines got;
        char err[512];
        cr_assert_eq(read_lines(path, 0, UINT64_MAX, 1, 1 << 20, &got, err), 0, "%s", err);
        cr_assert_eq(got.n, 0);
        free(path);
    }
}

/* A line over the limit is measured and flagged; the next line is intact. */
Test(input, too_long_lines_keep_the_reader_in_step)
{
    size_t big = 3 << 20;
    char *data = malloc(big + 64);
    strcpy(data, "short\n");
    memset(data + 6, 'x', big);
    strcpy(data + 6 + big, "\r\nafter\n");
    size_t len = strlen(data);
    for (size_t t = 0; t < 4; t++) {
        char name[32];
        snprintf(name, sizeof name, "l-%zu.jsonl", t);
        char *path = write_input(name, data, len, TOOLS[t]);
        lines got;
        char err[512];
        cr_assert_eq(read_lines(path, 0, UINT64_MAX, 1, 1 << 20, &got, err), 0, "%s", err);
        cr_assert_eq(got.n, 3);
        cr_assert(got.too_long[1]);
        cr_assert_geq(got.len[1], big);
        cr_assert_str_eq(got.text[2], "after");
        cr_assert_eq(got.line_no[2], 3);
        cr_assert_eq(got.offset[2], 6 + big + 2);
        /* with room for it, the same line is handed out whole */
        cr_assert_eq(read_lines(path, 0, UINT64_MAX, 1, 4 << 20, &got, err), 0, "%s", err);
        cr_assert(!got.too_long[1]);
        cr_assert_eq(got.len[1], big);
        free(path);
    }
    free(data);
}

/* A gzip file of 20 000 request lines with 64 bytes flipped a third of
 * the way in, cut to `keep_percent` of its length; returns its path. */
static char *damaged_gzip(const char *name, size_t keep_percent)
{
    mr_buf data = {0};
    for (int i = 0; i < 20000; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "{\"id\": %d, \"prompt\": \"line %d\"}\n", i, i * 7);
        mr_buf_append(&data, line, (size_t)n);
    }
    char *path = write_input(name, data.data, data.len, "gzip");
    size_t len;
    char *gz = mr_test_read(path, &len);
    for (size_t i = len / 3; i < len / 3 + 64; i++)
        gz[i] ^= 0x5a;
    free(mr_test_write(dir, name, gz, len * keep_percent / 100));
    free(gz);
    mr_buf_free(&data);
    return path;
}

/* Read every line; returns the reader's last answer (0 at a clean end). */
static int read_to_end(const char *path, char *err, size_t errlen)
{
    mr_line_reader *r;
    cr_assert_eq(mr_line_reader_open(&r, path, 0, UINT64_MAX, 1, 1 << 20, err, errlen), 0,
                 "%s", err);
    mr_line line;
    int rc;
    while ((rc = mr_line_reader_next(r, &line, err, errlen)) == 1)
        ;
    mr_line_reader_close(r);
    return rc;
}

Test(input, corrupt_compressed_data_is_an_error_naming_the_file)
{
    char *path = damaged_gzip("bad.jsonl.gz", 50);
    char err[512];
    cr_assert_lt(read_to_end(path, err, sizeof err), 0, "damaged data read as a clean end");
    cr_assert(strstr(err, path), "%s", err);
    cr_assert(strstr(err, "corrupt compressed data"), "%s", err);
    free(path);
}

/* Flipped bytes with the length intact: only the gzip CRC can tell. */
Test(input, gzip_checksum_is_checked)
{
    char *path = damaged_gzip("crc.jsonl.gz", 100);
    char err[512];
    cr_assert_lt(read_to_end(path, err, sizeof err), 0, "corrupt gzip read as a clean end");
    cr_assert(strstr(err, "corrupt compressed data"), "%s", err);
    free(path);
}

Test(input, concatenated_gzip_members_are_one_stream)
{
    free(write_input("a.gz", "one\ntwo\n", 8, "gzip"));
    free(write_input("b.gz", "three\n", 6, "gzip"));
    char *cmd = NULL;
    cr_assert(asprintf(&cmd, "cd '%s' && cat a.gz b.gz > ab.jsonl.gz", dir) > 0);
    cr_assert_eq(system(cmd), 0);
    free(cmd);
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/ab.jsonl.gz", dir) > 0);
    lines got;
    char err[512];
    cr_assert_eq(read_lines(path, 0, UINT64_MAX, 1, 64, &got, err), 0, "%s", err);
    cr_assert_eq(got.n, 3);
    cr_assert_str_eq(got.text[2], "three");
    free(path);
}

Test(input, missing_file)
{
    mr_line_reader *r;
    char err[512];
    cr_assert_neq(mr_line_reader_open(&r, "/nonexistent.jsonl", 0, 1, 1, 64, err, sizeof err),
                  0);
    cr_assert(strstr(err, "/nonexistent.jsonl"), "%s", err);
}
