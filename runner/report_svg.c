/*
 * The report's heatmaps (expert_load.svg, rank_busy.svg) as plain SVG text:
 * a browser shows them with a tooltip on every cell, and no plotting
 * library has to be on the cluster.  The same numbers give the same bytes,
 * so a report written again after the job is identical to the job's own.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runner/report.h"
#include "runner/runner.h"

/* Wide enough for a 300-slot map to stay readable, narrow enough for a
 * laptop screen; a few columns get wide cells rather than a tiny picture. */
#define GRID_WIDTH 1100.0
#define MAX_CELL_WIDTH 160.0
#define MIN_PICTURE_WIDTH 900.0
#define GRID_HEIGHT 360.0
#define MIN_CELL_HEIGHT 4.0
#define MAX_CELL_HEIGHT 24.0
#define MARGIN_LEFT 80.0
#define MARGIN_RIGHT 30.0
#define HEADER_HEIGHT 86.0
/* Above a grid its title; below it the tick labels and the column name. */
#define PANEL_HEAD 28.0
#define PANEL_FOOT 52.0
#define LEGEND_WIDTH 300.0
#define TICK_FONT 11.0
/* Roughly the advance of a digit at TICK_FONT in a sans-serif face. */
#define TICK_CHAR_WIDTH 6.6

/* An out-of-memory failure is remembered and reported once at the end, so
 * the drawing code reads as a list of elements. */
typedef struct {
    mr_buf buf;
    bool failed;
} svg_text;

__attribute__((format(printf, 2, 3))) static void put(svg_text *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    s->failed = mr_buf_vprintf(&s->buf, fmt, ap) != MR_JOBS_OK;
    va_end(ap);
}

static void put_escaped(svg_text *s, const char *text)
{
    static const char *const entities[256] = {
        ['&'] = "&amp;", ['<'] = "&lt;", ['>'] = "&gt;", ['"'] = "&quot;", ['\''] = "&apos;"};
    while (*text) {
        size_t plain = strcspn(text, "&<>\"'");
        const char *entity = entities[(unsigned char)text[plain]];
        put(s, "%.*s%s", (int)plain, text, entity ? entity : "");
        text += plain + (entity != NULL);
    }
}

/* Token counts read best whole; shares and means need only 3 digits. */
static void format_value(double value, char *out, size_t size)
{
    snprintf(out, size, value == floor(value) && fabs(value) < 1e15 ? "%.0f" : "%.3g", value);
}

/* 3 digits and k or M: "57.3k", "1.20M", "0.42". */
static void format_short(double value, char *out, size_t size)
{
    if (value >= 1e6)
        snprintf(out, size, "%.3gM", value / 1e6);
    else if (value >= 1e4)
        snprintf(out, size, "%.3gk", value / 1e3);
    else
        format_value(value, out, size);
}

static double label_at(const double *labels, int index)
{
    return labels ? labels[index] : (double)index;
}

/* Viridis: perceptually even and still ordered when printed in grey. */
static const unsigned char VIRIDIS[][3] = {
    {0x44, 0x01, 0x54}, {0x47, 0x2c, 0x7a}, {0x3b, 0x52, 0x8b}, {0x2c, 0x72, 0x8e},
    {0x21, 0x91, 0x8c}, {0x28, 0xae, 0x80}, {0x5e, 0xc9, 0x62}, {0xad, 0xdc, 0x30},
    {0xfd, 0xe7, 0x25}};
#define VIRIDIS_STOPS ((int)(sizeof VIRIDIS / sizeof VIRIDIS[0]))

static void colour_at(double share, char out[8])
{
    share = share < 0 ? 0 : share > 1 ? 1 : share;
    double pos = share * (VIRIDIS_STOPS - 1);
    int low = pos >= VIRIDIS_STOPS - 1 ? VIRIDIS_STOPS - 2 : (int)pos;
    double frac = pos - low;
    int rgb[3];
    for (int k = 0; k < 3; k++)
        rgb[k] = (int)lround(VIRIDIS[low][k] + frac * (VIRIDIS[low + 1][k] - VIRIDIS[low][k]));
    snprintf(out, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

/* The smallest of 1, 2 and 5 times a power of ten that is at least
 * `least` (> 0): the step between round ticks. */
static double round_step(double least)
{
    double power = pow(10, floor(log10(least)));
    static const double mantissas[] = {1, 2, 5, 10};
    for (int k = 0; k < 4; k++)
        if (mantissas[k] * power >= least * (1 - 1e-9))
            return mantissas[k] * power;
    return 10 * power;
}

/* A label every `step` rows or columns, step a multiple of `base` times 1,
 * 2 or 5 times a power of ten, so that labels never overlap; at most
 * `count`, which labels only the first. */
static int tick_step(double min_step, int base, int count)
{
    if (min_step <= 1)
        return 1;
    static const int mantissas[] = {1, 2, 5};
    for (double power = 1;; power *= 10)
        for (int k = 0; k < 3; k++) {
            double step = base * mantissas[k] * power;
            if (step >= count)
                return count;
            if (step >= min_step)
                return (int)step;
        }
}

static void cell_name(const mr_report_heatmap *p, int row, int col, char *out, size_t size)
{
    snprintf(out, size, "%s %g, %s %g", p->row_name ? p->row_name : "row",
             label_at(p->row_labels, row), p->col_name ? p->col_name : "column",
             label_at(p->col_labels, col));
}

/* Also finds the largest value, the scale when the caller gives none. */
static int check_panels(const mr_report_heatmap *panels, int n_panels, double *largest,
                        char *err, size_t errlen)
{
    *largest = 0;
    for (int i = 0; i < n_panels; i++) {
        const mr_report_heatmap *p = &panels[i];
        if (p->rows < 1 || p->cols < 1 || !p->values) {
            snprintf(err, errlen, "heatmap panel %d: %d x %d cells%s", i + 1, p->rows, p->cols,
                     p->values ? "" : " and no values");
            return -1;
        }
        for (size_t k = 0; k < (size_t)p->rows * (size_t)p->cols; k++) {
            double v = p->values[k];
            if (isfinite(v) && v >= 0) {
                *largest = v > *largest ? v : *largest;
                continue;
            }
            char name[256];
            cell_name(p, (int)(k / (size_t)p->cols), (int)(k % (size_t)p->cols), name,
                      sizeof name);
            snprintf(err, errlen, "heatmap panel %d, %s: value %g is %s", i + 1, name, v,
                     isfinite(v) ? "negative" : "not a finite number");
            return -1;
        }
    }
    return 0;
}

static void put_text(svg_text *s, double x, double y, const char *attrs, const char *text)
{
    put(s, "<text x=\"%.6g\" y=\"%.6g\"%s>", x, y, attrs);
    put_escaped(s, text);
    put(s, "</text>\n");
}

static void put_line(svg_text *s, double x1, double y1, double x2, double y2, const char *colour)
{
    put(s, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" stroke=\"%s\"/>\n", x1, y1, x2,
        y2, colour);
}

typedef struct {
    double w, h;
} cell_size;

static cell_size cell_size_of(const mr_report_heatmap *p)
{
    return (cell_size){fmin(GRID_WIDTH / p->cols, MAX_CELL_WIDTH),
                       fmax(MIN_CELL_HEIGHT, fmin(GRID_HEIGHT / p->rows, MAX_CELL_HEIGHT))};
}

static double head_height(const mr_report_heatmap *p)
{
    /* Marks get a line of labels between the title and the grid. */
    return PANEL_HEAD + (p->n_marks > 0 ? 14 : 0);
}

/* Where column c starts, and how wide it is: equal columns, or as wide as
 * their spans on a continuous axis over GRID_WIDTH. */
static double axis_x(const mr_report_heatmap *p, double at)
{
    double first = p->col_edges[0], last = p->col_edges[p->cols];
    return MARGIN_LEFT + (last > first ? (at - first) / (last - first) : 0) * GRID_WIDTH;
}

static double col_left(const mr_report_heatmap *p, int c)
{
    return p->col_edges ? axis_x(p, p->col_edges[c]) : MARGIN_LEFT + c * cell_size_of(p).w;
}

static double col_width(const mr_report_heatmap *p, int c)
{
    return p->col_edges ? col_left(p, c + 1) - col_left(p, c) : cell_size_of(p).w;
}

static double grid_width(const mr_report_heatmap *p)
{
    return p->col_edges ? GRID_WIDTH : cell_size_of(p).w * p->cols;
}

static int widest_label(const double *labels, int count)
{
    int widest = 1;
    for (int i = 0; i < count; i++) {
        char label[32];
        int len = snprintf(label, sizeof label, "%g", label_at(labels, i));
        widest = len > widest ? len : widest;
    }
    return widest;
}

/* The scale's ticks are multiples of `step` up to `scale`. */
static void put_legend(svg_text *s, double scale, double step, const char *unit)
{
    double top = 44, height = 12;
    put(s, "<defs><linearGradient id=\"scale\">");
    for (int i = 0; i < VIRIDIS_STOPS; i++)
        put(s, "<stop offset=\"%.6g\" stop-color=\"#%02x%02x%02x\"/>",
            (double)i / (VIRIDIS_STOPS - 1), VIRIDIS[i][0], VIRIDIS[i][1], VIRIDIS[i][2]);
    put(s, "</linearGradient></defs>\n");
    put(s, "<rect x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" height=\"%.6g\" fill=\"url(#scale)\" "
           "stroke=\"#888888\" stroke-width=\"0.5\"/>\n",
        MARGIN_LEFT, top, LEGEND_WIDTH, height);
    int ticks = (int)floor(scale / step + 1e-9);
    for (int i = 0; i <= ticks; i++) {
        char value[32];
        /* format_value keeps 3 digits of a fraction: 0.6, not 0.6000000000000001. */
        format_value(i * step, value, sizeof value);
        double x = MARGIN_LEFT + LEGEND_WIDTH * i * step / scale;
        put_line(s, x, top + height, x, top + height + 4, "#444444");
        put_text(s, x, top + height + 16, " font-size=\"11\" text-anchor=\"middle\"", value);
    }
    put_text(s, MARGIN_LEFT + LEGEND_WIDTH + 12, top + height - 1, " font-size=\"12\"", unit);
}

static void put_cells(svg_text *s, const mr_report_heatmap *p, double grid_top, double scale,
                      const char *unit)
{
    cell_size cell = cell_size_of(p);
    /* crispEdges: no hairline seams between cells narrower than a pixel. */
    put(s, "<g shape-rendering=\"crispEdges\">\n");

    for (int r = 0; r < p->rows; r++)
        for (int c = 0; c < p->cols; c++) {
            double v = p->values[(size_t)r * (size_t)p->cols + (size_t)c];
            char colour[8], name[256], value[32];
            colour_at(v / scale, colour);
            cell_name(p, r, c, name, sizeof name);
            format_value(v, value, sizeof value);
            put(s, "<rect class=\"cell\" x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" height=\"%.6g\" "
                   "fill=\"%s\"><title>",
                col_left(p, c), grid_top + r * cell.h, col_width(p, c), cell.h, colour);
            put_escaped(s, name);
            put(s, ": %s%s", value, *unit ? " " : "");
            put_escaped(s, unit);
            put(s, "</title></rect>\n");
            /* A cell with room shows its value: few cells (ranks) read
             * better as numbers than as shades. */
            if (col_width(p, c) >= 60 && cell.h >= 14) {
                char text[32];
                format_short(v, text, sizeof text);
                put_text(s, col_left(p, c) + col_width(p, c) / 2, grid_top + (r + 0.5) * cell.h + 4,
                         v / scale > 0.6 ? " font-size=\"11\" text-anchor=\"middle\" fill=\"#000000\""
                                         : " font-size=\"11\" text-anchor=\"middle\" fill=\"#ffffff\"",
                         text);
            }
        }
    for (int c = p->col_group; p->col_group > 0 && c < p->cols; c += p->col_group)
        put_line(s, col_left(p, c), grid_top, col_left(p, c), grid_top + cell.h * p->rows,
                 "#ffffff");
    put(s, "</g>\n");
}

/* Labels of equal columns: every few, so that they never overlap. */
static void put_column_ticks(svg_text *s, const mr_report_heatmap *p, double grid_bottom)
{
    char label[32];
    cell_size cell = cell_size_of(p);
    int col_widest = widest_label(p->col_labels, p->cols);
    int col_step = tick_step((col_widest * TICK_CHAR_WIDTH + 10) / cell.w,
                             p->col_group > 0 ? p->col_group : 1, p->cols);
    for (int c = 0; c < p->cols; c += col_step) {
        double x = MARGIN_LEFT + (c + 0.5) * cell.w;
        snprintf(label, sizeof label, "%g", label_at(p->col_labels, c));
        put_line(s, x, grid_bottom, x, grid_bottom + 4, "#444444");
        put_text(s, x, grid_bottom + 16, " font-size=\"11\" text-anchor=\"middle\"", label);
    }
}

/* Round values along a continuous axis, far enough apart for their labels. */
static void put_axis_ticks(svg_text *s, const mr_report_heatmap *p, double grid_bottom)
{
    char label[32];
    double first = p->col_edges[0], last = p->col_edges[p->cols], span = last - first;
    if (!(span > 0))
        return;
    snprintf(label, sizeof label, "%.0f", fmax(fabs(first), fabs(last)));
    double room = ((double)strlen(label) + 2) * TICK_CHAR_WIDTH + 16;
    double step = round_step(span * room / GRID_WIDTH);
    for (double at = ceil(first / step - 1e-9) * step; at <= last + step * 1e-9; at += step) {
        double x = axis_x(p, at);
        /* + 0.0: a tick at -0 reads 0. */
        snprintf(label, sizeof label, "%.6g", round(at / step) * step + 0.0);
        put_line(s, x, grid_bottom, x, grid_bottom + 4, "#444444");
        put_text(s, x, grid_bottom + 16, " font-size=\"11\" text-anchor=\"middle\"", label);
    }
}

/* The panel's title, tick labels and axis names around its grid. */
static void put_labels(svg_text *s, const mr_report_heatmap *p, double top)
{
    cell_size cell = cell_size_of(p);
    double grid_top = top + head_height(p), grid_bottom = grid_top + cell.h * p->rows;
    char label[32];

    if (p->title)
        put_text(s, MARGIN_LEFT, top + 18, " font-size=\"14\" font-weight=\"bold\"", p->title);
    int row_step = tick_step((TICK_FONT + 2) / cell.h, 1, p->rows);
    for (int r = 0; r < p->rows; r += row_step) {
        double y = grid_top + (r + 0.5) * cell.h;
        snprintf(label, sizeof label, "%g", label_at(p->row_labels, r));
        put_line(s, MARGIN_LEFT - 4, y, MARGIN_LEFT, y, "#444444");
        put_text(s, MARGIN_LEFT - 6, y + TICK_FONT * 0.35,
                 " font-size=\"11\" text-anchor=\"end\"", label);
    }
    if (p->col_edges)
        put_axis_ticks(s, p, grid_bottom);
    else
        put_column_ticks(s, p, grid_bottom);
    put_text(s, MARGIN_LEFT + grid_width(p) / 2, grid_bottom + 34,
             " font-size=\"12\" text-anchor=\"middle\"", p->col_name ? p->col_name : "column");
    /* A mark is a dashed rule over the grid with its label above it. */
    for (int i = 0; i < p->n_marks; i++) {
        double x = axis_x(p, p->marks[i]);
        put(s, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" stroke=\"#d62728\" "
               "stroke-width=\"2\" stroke-dasharray=\"4 2\"/>\n",
            x, grid_top - 12, x, grid_bottom);
        put_text(s, x + 3, grid_top - 4, " font-size=\"11\" fill=\"#d62728\"",
                 p->mark_labels && p->mark_labels[i] ? p->mark_labels[i] : "");
    }

    /* Rotated, the row name's baseline runs just left of the widest tick label. */
    double x = fmax(16, MARGIN_LEFT - 16 - widest_label(p->row_labels, p->rows) * TICK_CHAR_WIDTH);
    double mid = (grid_top + grid_bottom) / 2;
    char rotate[128];
    snprintf(rotate, sizeof rotate,
             " font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 %.6g %.6g)\"", x,
             mid);
    put_text(s, x, mid, rotate, p->row_name ? p->row_name : "row");
}

int mr_report_svg_heatmaps(const char *path, const char *title, const mr_report_heatmap *panels,
                           int n_panels, double scale_max, const char *unit, char *err,
                           size_t errlen)
{
    double largest;
    if (!path || !panels || n_panels < 1) {
        snprintf(err, errlen, "heatmap: %s", !path ? "no file name" : "no panels to draw");
        return -1;
    }
    if (check_panels(panels, n_panels, &largest, err, errlen) != 0)
        return -1;
    /* A job that routed nothing still gets a picture, all at the bottom.
     * Otherwise the scale ends on a round tick: 15000, not 13861. */
    double scale, step;
    if (scale_max > 0 && isfinite(scale_max)) {
        scale = scale_max;
        step = round_step(scale / 5);
    } else {
        step = round_step((largest > 0 ? largest : 1) / 5);
        scale = ceil((largest > 0 ? largest : 1) / step - 1e-9) * step;
    }
    unit = unit ? unit : "";

    double width = MIN_PICTURE_WIDTH, height = HEADER_HEIGHT;
    for (int i = 0; i < n_panels; i++) {
        cell_size cell = cell_size_of(&panels[i]);
        width = fmax(width, MARGIN_LEFT + grid_width(&panels[i]) + MARGIN_RIGHT);
        height += head_height(&panels[i]) + cell.h * panels[i].rows + PANEL_FOOT;
    }
    width = ceil(width);
    height = ceil(height);

    svg_text s = {0};
    put(&s, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    put(&s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.6g\" height=\"%.6g\" "
            "viewBox=\"0 0 %.6g %.6g\" font-family=\"sans-serif\">\n",
        width, height, width, height);
    put(&s, "<rect x=\"0\" y=\"0\" width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    if (title)
        put_text(&s, MARGIN_LEFT, 30, " font-size=\"18\" font-weight=\"bold\"", title);
    put_legend(&s, scale, step, unit);
    double top = HEADER_HEIGHT;
    for (int i = 0; i < n_panels; i++) {
        put_cells(&s, &panels[i], top + head_height(&panels[i]), scale, unit);
        put_labels(&s, &panels[i], top);
        top += head_height(&panels[i]) + cell_size_of(&panels[i]).h * panels[i].rows + PANEL_FOOT;
    }
    put(&s, "</svg>\n");

    int rc = -1;
    if (s.failed)
        snprintf(err, errlen, "out of memory drawing %s", path);
    else if (mr_runner_write_atomic(path, s.buf.data, s.buf.len, err, errlen) == MR_JOBS_OK)
        rc = 0;
    mr_buf_free(&s.buf);
    return rc;
}
