/*
 * Load traces as CSV (docs/eplb.md): one row per MoE layer, one column per
 * logical expert, token counts.  Strict, since a plan made from a
 * misread trace looks plausible: every field must be a plain non-negative
 * number, every row as wide as the first, and a problem is reported as
 * FILE:LINE: column N: what.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"

/* Digits with at most one point and an optional exponent: no sign, no
 * hex, no inf or nan, which strtod would take. */
static bool is_count(const char *s)
{
    int digits = 0;
    while (*s >= '0' && *s <= '9')
        s++, digits++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            digits++;
    if (digits == 0)
        return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

typedef struct {
    const char *path;
    unsigned long line;
    double *values;
    size_t count, cap;
    int width; /* columns of the first row, header or counts; 0 before it */
    bool header;
    char *err;
    size_t errlen;
} trace_reader;

static int push_value(trace_reader *t, double v)
{
    if (t->count == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        double *grown = realloc(t->values, cap * sizeof *grown);
        if (!grown) {
            snprintf(t->err, t->errlen, "out of memory reading %s", t->path);
            return MR_EPLB_ENOMEM;
        }
        t->values = grown;
        t->cap = cap;
    }
    t->values[t->count++] = v;
    return MR_EPLB_OK;
}

static int not_a_count(trace_reader *t, int column, const char *field)
{
    snprintf(t->err, t->errlen, "%s:%lu: column %d: '%.40s' is not a token count", t->path,
             t->line, column, field);
    return MR_EPLB_EINVAL;
}

/* One row of counts, or the header when it is the first row and its first
 * field is not a number (its names are not checked, only counted). */
static int read_row(trace_reader *t, char *text)
{
    int column = 0;
    for (char *next = text; next;) {
        char *field = next;
        next = strchr(field, ',');
        if (next)
            *next++ = '\0';
        field = trim(field);
        column++;
        if (!is_count(field) && column == 1 && t->width == 0) {
            t->header = true;
            t->width = next ? 2 : 1;
            for (; next && *next; next++)
                t->width += *next == ',';
            return MR_EPLB_OK;
        }
        double v = is_count(field) ? strtod(field, NULL) : -1;
        if (!(v >= 0 && isfinite(v)))
            return not_a_count(t, column, field);
        int rc = push_value(t, v);
        if (rc != MR_EPLB_OK)
            return rc;
    }
    if (t->width == 0)
        t->width = column;
    else if (column != t->width) {
        snprintf(t->err, t->errlen, "%s:%lu: %d columns, but the %s has %d", t->path, t->line,
                 column, t->header ? "header" : "first row", t->width);
        return MR_EPLB_EINVAL;
    }
    return MR_EPLB_OK;
}

int mr_eplb_trace_read(const char *path, double **load, int *layers, int *experts,
                       char *err, size_t errlen)
{
    *load = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return MR_EPLB_EIO;
    }
    trace_reader t = {.path = path, .err = err, .errlen = errlen};
    char *line = NULL;
    size_t cap = 0;
    int rc = MR_EPLB_OK;
    while (rc == MR_EPLB_OK && getline(&line, &cap, f) >= 0) {
        t.line++;
        char *text = trim(line);
        if (*text && *text != '#')
            rc = read_row(&t, text);
    }
    if (rc == MR_EPLB_OK && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = MR_EPLB_EIO;
    }
    free(line);
    fclose(f);
    if (rc == MR_EPLB_OK && t.count == 0) {
        snprintf(err, errlen, "%s: no rows of token counts", path);
        rc = MR_EPLB_EINVAL;
    }
    if (rc == MR_EPLB_OK && t.count / (size_t)t.width > (size_t)INT32_MAX) {
        snprintf(err, errlen, "%s: too many rows", path);
        rc = MR_EPLB_EINVAL;
    }
    if (rc != MR_EPLB_OK) {
        free(t.values);
        return rc;
    }
    *load = t.values;
    *experts = t.width;
    *layers = (int)(t.count / (size_t)t.width);
    return MR_EPLB_OK;
}

int mr_eplb_trace_write(const char *path, const double *load, int layers, int experts,
                        char *err, size_t errlen)
{
    for (size_t i = 0; i < (size_t)layers * (size_t)experts; i++)
        if (!(load[i] >= 0 && isfinite(load[i]))) {
            snprintf(err, errlen, "layer %zu, expert %zu: %g is not a token count",
                     i / (size_t)experts, i % (size_t)experts, load[i]);
            return MR_EPLB_EINVAL;
        }
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return MR_EPLB_EIO;
    }
    fprintf(f, "# moerun expert load trace: tokens per expert, %d MoE layers x %d experts\n",
            layers, experts);
    for (int e = 0; e < experts; e++)
        fprintf(f, "%se%d", e ? "," : "", e);
    fputc('\n', f);
    for (int l = 0; l < layers; l++)
        for (int e = 0; e < experts; e++) {
            double v = load[(size_t)l * experts + e];
            /* %.17g reads back as the same double. */
            fprintf(f, v == floor(v) && v < 1e17 ? "%.0f" : "%.17g", v);
            fputc(e + 1 < experts ? ',' : '\n', f);
        }
    int failed = ferror(f);
    if (fclose(f) != 0 || failed) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return MR_EPLB_EIO;
    }
    return MR_EPLB_OK;
}
