/* The report's heatmaps: well-formed SVG (xmllint), one cell per value,
 * tooltips, escaping, refusals, the same bytes every time, and a picture
 * librsvg can draw. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runner/report.h"
#include "tests/common/fixture.h"
#include "tests/common/report_check.h"

static char *dir;

static void setup(void) { dir = mr_test_tmpdir(); }

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(report_svg, .init = setup, .fini = teardown);

static char *in_dir(const char *name)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    return path;
}

static int shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int shell(const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&cmd, fmt, ap) > 0);
    va_end(ap);
    int rc = system(cmd);
    free(cmd);
    return rc;
}

static bool file_has(const char *path, const char *text)
{
    char *data = mr_test_read(path, NULL);
    bool found = strstr(data, text) != NULL;
    free(data);
    return found;
}

/* Tokens of layer r, slot c: 10 r + c, so a tooltip is easy to predict. */
static double tokens[2][4 * 10];

static int write_expert_load(const char *path, const char *title, char *err)
{
    for (int i = 0; i < 4 * 10; i++) {
        tokens[0][i] = i;
        tokens[1][i] = 20 + (i % 10);
    }
    mr_report_heatmap panels[2] = {
        {.title = "Before EPLB: tokens per expert slot on the starting placement",
         .row_name = "MoE layer", .col_name = "slot", .rows = 4, .cols = 10,
         .values = tokens[0], .col_group = 5},
        {.title = "After EPLB: tokens per expert slot on the final placement",
         .row_name = "MoE layer", .col_name = "slot", .rows = 4, .cols = 10,
         .values = tokens[1], .col_group = 5}};
    return mr_report_svg_heatmaps(path, title, panels, 2, 0, "tokens", err, 256);
}

Test(report_svg, expert_load_has_a_cell_and_tooltip_per_slot)
{
    char *path = in_dir("expert_load.svg"), err[256] = "";
    cr_assert_eq(write_expert_load(path, "Expert load", err), 0, "%s", err);
    cr_assert_eq(mr_test_svg_cells(path), 2 * 4 * 10);
    cr_assert(file_has(path, "<title>MoE layer 2, slot 7: 27 tokens</title>"));
    cr_assert(file_has(path, "<title>MoE layer 3, slot 9: 29 tokens</title>"));
    cr_assert(file_has(path, "xmlns=\"http://www.w3.org/2000/svg\""));
    cr_assert(file_has(path, "viewBox=\"0 0 "));
    free(path);
}

Test(report_svg, rank_busy_labels_columns_in_seconds)
{
    double busy[3 * 7], seconds[7];
    for (int c = 0; c < 7; c++)
        seconds[c] = 5.0 * c;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 7; c++)
            busy[r * 7 + c] = (r + 1) * (c + 1) / 21.0;
    mr_report_heatmap panel = {.title = "Busy share of each rank", .row_name = "rank",
                               .col_name = "seconds", .rows = 3, .cols = 7,
                               .values = busy, .col_labels = seconds};
    char *path = in_dir("rank_busy.svg"), err[256] = "";
    cr_assert_eq(mr_report_svg_heatmaps(path, "Rank busy share", &panel, 1, 1, "busy share",
                                        err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(mr_test_svg_cells(path), 3 * 7);
    cr_assert(file_has(path, "<title>rank 1, seconds 10: 0.286 busy share</title>"));
    cr_assert(file_has(path, "<title>rank 2, seconds 30: 1 busy share</title>"));
    free(path);
}

Test(report_svg, callers_text_is_escaped)
{
    char *path = in_dir("escaped.svg"), err[256] = "";
    cr_assert_eq(write_expert_load(path, "Load <&> \"it's\"", err), 0, "%s", err);
    cr_assert_eq(mr_test_svg_cells(path), 2 * 4 * 10);
    cr_assert(file_has(path, "Load &lt;&amp;&gt; &quot;it&apos;s&quot;"));
    free(path);
}

static void expect_refusal(const mr_report_heatmap *panels, int n_panels, const char *path,
                           const char *needle)
{
    char err[256] = "";
    cr_assert_eq(mr_report_svg_heatmaps(path, "t", panels, n_panels, 0, "tokens", err,
                                        sizeof err),
                 -1);
    cr_assert(strstr(err, needle), "message \"%s\" lacks \"%s\"", err, needle);
    cr_assert_null(strchr(err, '\n'), "one line: %s", err);
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "%s written after a refusal", path);
}

Test(report_svg, bad_values_are_refused_with_the_cell_named)
{
    double good[4] = {1, 2, 3, 4}, bad[4] = {1, 2, 3, 4};
    mr_report_heatmap panels[2] = {
        {.row_name = "MoE layer", .col_name = "slot", .rows = 2, .cols = 2, .values = good},
        {.row_name = "MoE layer", .col_name = "slot", .rows = 2, .cols = 2, .values = bad}};
    char *path = in_dir("refused.svg");
    bad[3] = -4;
    expect_refusal(panels, 2, path, "panel 2, MoE layer 1, slot 1: value -4 is negative");
    bad[3] = NAN;
    expect_refusal(panels, 2, path, "panel 2, MoE layer 1, slot 1: value nan is not a finite");
    bad[3] = 4;
    panels[0].rows = 0;
    expect_refusal(panels, 2, path, "panel 1: 0 x 2 cells");
    panels[0].rows = 2;
    panels[1].values = NULL;
    expect_refusal(panels, 2, path, "no values");
    expect_refusal(panels, 0, path, "no panels");
    expect_refusal(NULL, 1, path, "no panels");
    free(path);
}

Test(report_svg, same_numbers_give_the_same_bytes)
{
    char *a = in_dir("a.svg"), *b = in_dir("b.svg"), err[256] = "";
    cr_assert_eq(write_expert_load(a, "Expert load", err), 0, "%s", err);
    cr_assert_eq(write_expert_load(b, "Expert load", err), 0, "%s", err);
    cr_assert_eq(shell("cmp -s '%s' '%s'", a, b), 0, "%s and %s differ", a, b);
    free(a);
    free(b);
}

Test(report_svg, all_zero_values_still_draw)
{
    double zero[6] = {0};
    mr_report_heatmap panel = {.rows = 2, .cols = 3, .values = zero};
    char *path = in_dir("zero.svg"), err[256] = "";
    cr_assert_eq(mr_report_svg_heatmaps(path, NULL, &panel, 1, 0, NULL, err, sizeof err), 0,
                 "%s", err);
    cr_assert_eq(mr_test_svg_cells(path), 6);
    cr_assert(file_has(path, "<title>row 1, column 2: 0</title>"));
    free(path);
}

static unsigned png_width(const char *path, size_t *size)
{
    unsigned char *png = (unsigned char *)mr_test_read(path, size);
    cr_assert_gt(*size, 24);
    cr_assert_eq(memcmp(png + 1, "PNG", 3), 0);
    /* IHDR: the width is the big-endian word at byte 16. */
    unsigned width = (unsigned)png[16] << 24 | (unsigned)png[17] << 16 |
                     (unsigned)png[18] << 8 | png[19];
    free(png);
    return width;
}

static void expect_drawn(const char *svg, const char *png)
{
    cr_assert_eq(shell("rsvg-convert -o '%s' '%s'", png, svg), 0, "rsvg-convert %s", svg);
    size_t size;
    unsigned width = png_width(png, &size);
    cr_assert_gt(size, 1000, "%s: %zu bytes", png, size);
    cr_assert(width >= 900 && width <= 1400, "%s: %u pixels wide", png, width);
}

Test(report_svg, librsvg_draws_small_and_large_maps)
{
    char *svg = in_dir("expert_load.svg"), *png = in_dir("expert_load.png"), err[256] = "";
    cr_assert_eq(write_expert_load(svg, "Expert load", err), 0, "%s", err);
    expect_drawn(svg, png);

    /* The largest model: 94 MoE layers on 288 slots, 8 a rank. */
    enum { LAYERS = 94, SLOTS = 288 };
    double *load = malloc(sizeof(double) * LAYERS * SLOTS);
    cr_assert(load);
    for (int i = 0; i < LAYERS * SLOTS; i++)
        load[i] = 100000.0 / (1 + (i * 7919) % SLOTS);
    mr_report_heatmap panel = {.title = "Before EPLB", .row_name = "MoE layer",
                               .col_name = "slot", .rows = LAYERS, .cols = SLOTS,
                               .values = load, .col_group = 8};
    cr_assert_eq(mr_report_svg_heatmaps(svg, "Expert load", &panel, 1, 0, "tokens", err,
                                        sizeof err),
                 0, "%s", err);
    cr_assert_eq(mr_test_svg_cells(svg), LAYERS * SLOTS);
    expect_drawn(svg, png);
    free(load);
    free(svg);
    free(png);
}

Test(report_svg, legend_ticks_are_round_numbers)
{
    double load[2] = {3465, 13861};
    mr_report_heatmap panel = {.row_name = "MoE layer", .col_name = "rank", .rows = 1,
                               .cols = 2, .values = load};
    char *path = in_dir("round.svg"), err[256] = "";
    cr_assert_eq(mr_report_svg_heatmaps(path, "t", &panel, 1, 0, "tokens", err, sizeof err), 0,
                 "%s", err);
    /* 13861 rounds up to 15000, in steps of 5000. */
    for (int i = 0; i <= 3; i++) {
        char tick[64];
        snprintf(tick, sizeof tick, "text-anchor=\"middle\">%d</text>", i * 5000);
        cr_assert(file_has(path, tick), "no tick %d", i * 5000);
    }
    cr_assert_not(file_has(path, "middle\">3465</text>"));
    cr_assert_not(file_has(path, "middle\">6931</text>"));
    /* Few cells are wide enough to show their values. */
    cr_assert(file_has(path, ">13.9k</text>"));
    free(path);
}

Test(report_svg, columns_on_a_time_axis_are_as_wide_as_their_intervals)
{
    /* Intervals of 1, 3 and 6 s: the last column is six times the first. */
    double busy[3] = {0.2, 0.5, 0.9}, edges[4] = {0, 1, 4, 10}, ends[3] = {1, 4, 10};
    double marks[1] = {4};
    const char *labels[1] = {"attempt 2"};
    mr_report_heatmap panel = {.row_name = "rank", .col_name = "seconds", .rows = 1,
                               .cols = 3, .values = busy, .col_labels = ends,
                               .col_edges = edges, .marks = marks, .mark_labels = labels,
                               .n_marks = 1};
    char *path = in_dir("time.svg"), err[256] = "";
    cr_assert_eq(mr_report_svg_heatmaps(path, "t", &panel, 1, 1, "busy share", err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(mr_test_svg_cells(path), 3);
    /* The grid is 1100 wide from x = 80: 110, 330 and 660 per column. */
    cr_assert(file_has(path, "x=\"80\" y=\"128\" width=\"110\""));
    cr_assert(file_has(path, "x=\"190\" y=\"128\" width=\"330\""));
    cr_assert(file_has(path, "x=\"520\" y=\"128\" width=\"660\""));
    cr_assert(file_has(path, ">attempt 2</text>"));
    /* Ticks are round seconds, not the columns' ends. */
    cr_assert(file_has(path, "text-anchor=\"middle\">2</text>"));
    cr_assert(file_has(path, "<title>rank 0, seconds 10: 0.9 busy share</title>"));
    char *png = in_dir("time.png");
    expect_drawn(path, png);
    free(png);
    free(path);
}
