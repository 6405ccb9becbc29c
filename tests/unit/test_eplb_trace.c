/* Load traces (CSV) and the load window: round trips, and every malformed
 * trace named by file, line and column. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"
#include "tests/common/fixture.h"

static char err[512];
static char *dir;

static void setup(void)
{
    dir = mr_test_tmpdir();
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(eplb_trace, .init = setup, .fini = teardown);

/* Reads dir/name written with `text`; returns the status. */
static int read_text(const char *text, double **load, int *layers, int *experts)
{
    char *path = mr_test_write(dir, "trace.csv", text, (size_t)-1);
    int rc = mr_eplb_trace_read(path, load, layers, experts, err, sizeof err);
    free(path);
    return rc;
}

Test(eplb_trace, round_trip)
{
    static const double load[] = {0, 1, 2.5, 1e6, 3, 0.125, 7, 4294967296.0};
    char *path = mr_test_write(dir, "out.csv", "", 0);
    cr_assert_eq(mr_eplb_trace_write(path, load, 2, 4, err, sizeof err), MR_EPLB_OK, "%s", err);
    char *text = mr_test_read(path, NULL);
    cr_assert(strncmp(text, "# ", 2) == 0, "%s", text);
    cr_assert(strstr(text, "\ne0,e1,e2,e3\n0,1,2.5,1000000\n3,0.125,7,4294967296\n"), "%s", text);
    free(text);
    double *back;
    int layers, experts;
    cr_assert_eq(mr_eplb_trace_read(path, &back, &layers, &experts, err, sizeof err),
                 MR_EPLB_OK, "%s", err);
    cr_assert_eq(layers, 2);
    cr_assert_eq(experts, 4);
    cr_assert_eq(memcmp(back, load, sizeof load), 0);
    free(back);
    free(path);
}

Test(eplb_trace, header_comments_blank_lines_and_spaces_are_optional)
{
    double *load;
    int layers, experts;
    cr_assert_eq(read_text("# a trace\r\n\r\n 1, 2 ,3\r\n#more\n4,5,6.5\n\n", &load, &layers,
                           &experts),
                 MR_EPLB_OK, "%s", err);
    cr_assert_eq(layers, 2);
    cr_assert_eq(experts, 3);
    cr_assert_eq(load[2], 3);
    cr_assert_eq(load[5], 6.5);
    free(load);
    cr_assert_eq(read_text("expert_a,b\n1e3,2E-1\n", &load, &layers, &experts), MR_EPLB_OK,
                 "%s", err);
    cr_assert_eq(layers, 1);
    cr_assert_eq(load[0], 1000);
    cr_assert_eq(load[1], 0.2);
    free(load);
}

Test(eplb_trace, errors_name_file_line_and_column)
{
    double *load;
    int layers, experts;
    const struct {
        const char *text, *message;
    } cases[] = {
        {"e0,e1\n1,2\n3,abc\n", "trace.csv:3: column 2: 'abc' is not a token count"},
        {"1,2\n3,-4\n", "trace.csv:2: column 2: '-4' is not a token count"},
        {"1,2\n3,\n", "trace.csv:2: column 2: '' is not a token count"},
        {"1,2\nnan,1\n", "trace.csv:2: column 1: 'nan' is not a token count"},
        {"1,2\n1e999,1\n", "trace.csv:2: column 1: '1e999' is not a token count"},
        {"1,2,3\n4,5\n", "trace.csv:2: 2 columns, but the first row has 3"},
        {"a,b,c\n4,5,6,7\n", "trace.csv:2: 4 columns, but the header has 3"},
        {"# nothing\n", "trace.csv: no rows of token counts"},
        {"a,b\n", "trace.csv: no rows of token counts"},
        {"1,2\na,b\n", "trace.csv:2: column 1: 'a' is not a token count"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_assert_eq(read_text(cases[i].text, &load, &layers, &experts), MR_EPLB_EINVAL,
                     "%s", cases[i].text);
        cr_assert(strstr(err, cases[i].message), "got '%s', want '%s'", err, cases[i].message);
        cr_assert_null(load);
    }
    char *missing = NULL;
    cr_assert(asprintf(&missing, "%s/x-not-there", dir) > 0);
    cr_assert_eq(mr_eplb_trace_read(missing, &load, &layers, &experts, err, sizeof err),
                 MR_EPLB_EIO);
    cr_assert(strstr(err, "-not-there: No such file"), "%s", err);
    free(missing);
    static const double bad[] = {1, -1};
    char *path = mr_test_write(dir, "bad.csv", "", 0);
    cr_assert_eq(mr_eplb_trace_write(path, bad, 1, 2, err, sizeof err), MR_EPLB_EINVAL);
    cr_assert(strstr(err, "layer 0, expert 1: -1 is not a token count"), "%s", err);
    free(path);
}

Test(eplb_window, the_ring_drops_the_oldest_step)
{
    mr_eplb_window *w;
    cr_assert_eq(mr_eplb_window_create(2, 3, 3, &w, err, sizeof err), MR_EPLB_OK);
    cr_assert_eq(mr_eplb_window_filled(w), 0);
    double load[6];
    mr_eplb_window_sum(w, load);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(load[i], 0);
    for (uint64_t step = 1; step <= 5; step++) {
        uint64_t counts[6];
        for (int i = 0; i < 6; i++)
            counts[i] = step * 10 + (uint64_t)i;
        mr_eplb_window_push(w, counts);
        mr_eplb_window_sum(w, load);
        uint64_t first = step > 3 ? step - 2 : 1, held = step - first + 1;
        cr_assert_eq(mr_eplb_window_filled(w), (int)held);
        for (int i = 0; i < 6; i++) {
            double want = 0;
            for (uint64_t s = first; s <= step; s++)
                want += (double)(s * 10 + (uint64_t)i);
            cr_assert_eq(load[i], want, "step %llu cell %d", (unsigned long long)step, i);
        }
    }
    mr_eplb_window_free(w);
    mr_eplb_window_free(NULL);
    cr_assert_eq(mr_eplb_window_create(2, 3, 0, &w, err, sizeof err), MR_EPLB_EINVAL);
    cr_assert(strstr(err, "at least one layer, expert and step"), "%s", err);
    cr_assert_null(w);
}
