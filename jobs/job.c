/*
 * The job file: inih reads the INI syntax; this file owns what the keys
 * mean.  Values are gathered first as text with the place they came from
 * (file line or --set), then converted and checked in one pass, so every
 * message can point at the line that set the value that is wrong.
 */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <ini.h>

#include "jobs/jobs.h"

/* Longest job file line read whole; longer ones are refused by name. */
#define MR_JOB_MAX_LINE (1 << 20)
#define MR_JOB_MAX_ERRORS 50

typedef enum { T_STR, T_PATH, T_PATHS, T_INT, T_FLOAT, T_ENUM, T_STRINGS } key_type;

static const mr_job_key_info key_info[] = {
#define MR_JOB_INFO(sec, k, type, def, fl, mn, mx, ch, hl) \
    {#sec, #k, #type, def, ch, hl, fl, (double)(mn), (double)(mx)},
    MR_JOB_KEYS(MR_JOB_INFO)
#undef MR_JOB_INFO
};

static const struct {
    key_type type;
    size_t offset;
} key_slot[] = {
#define MR_JOB_SLOT(sec, k, type, ...) {T_##type, offsetof(mr_job, sec##_##k)},
    MR_JOB_KEYS(MR_JOB_SLOT)
#undef MR_JOB_SLOT
};

#define N_KEYS (sizeof key_info / sizeof key_info[0])

const mr_job_key_info *mr_job_keys(size_t *count)
{
    *count = N_KEYS;
    return key_info;
}

/* A value as text, before conversion. */
typedef struct {
    char *text;
    char where[PATH_MAX + 64]; /* "job.ini:12" or "--set eplb.mode=..." */
    int line;                  /* in the job file; 0 when set by --set */
} raw_value;

typedef struct {
    const char *path;
    const char *data;
    size_t len, pos, line_end;
    int lineno;
    bool mid_line;     /* the current line is being handed to inih in pieces */
    bool indented;     /* the current line starts with blanks: a continuation */
    bool refused_line; /* a line was too long: it may have held a required key */
    int last_key;      /* key of the previous key line, for continuations */
    raw_value values[N_KEYS];
    const char *section_names[N_KEYS];
    int section_line[N_KEYS];
    size_t n_sections;
    mr_buf errors;
    int n_errors;
} loader;

static void add_error(loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_error(loader *L, const char *fmt, ...)
{
    if (++L->n_errors > MR_JOB_MAX_ERRORS)
        return;
    char msg[PATH_MAX + 1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mr_buf_append(&L->errors, msg, strlen(msg));
    mr_buf_append(&L->errors, "\n", 1);
}

static int find_section(const loader *L, const char *name)
{
    for (size_t i = 0; i < L->n_sections; i++)
        if (strcmp(L->section_names[i], name) == 0)
            return (int)i;
    return -1;
}

static int find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(key_info[i].section, section) == 0 && strcmp(key_info[i].key, key) == 0)
            return (int)i;
    return -1;
}

/* "did you mean ..." for a key: first among the section's keys, then the
 * same key name under another section (a key put in the wrong section). */
static void unknown_key(loader *L, const char *where, const char *section, const char *key)
{
    const char *names[N_KEYS];
    size_t n = 0;
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(key_info[i].section, section) == 0)
            names[n++] = key_info[i].key;
    const char *near = mr_suggest(key, names, n);
    if (near) {
        add_error(L, "%s: unknown key '%s' in [%s]; did you mean '%s'?", where, key, section,
                  near);
        return;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(key_info[i].key, key) == 0) {
            add_error(L, "%s: unknown key '%s' in [%s]; it belongs in [%s]", where, key,
                      section, key_info[i].section);
            return;
        }
    }
    add_error(L, "%s: unknown key '%s' in [%s] (`moerun help keys` lists them)", where, key,
              section);
}

static void unknown_section(loader *L, const char *where, const char *section)
{
    const char *near = mr_suggest(section, L->section_names, L->n_sections);
    if (near)
        add_error(L, "%s: unknown section [%s]; did you mean [%s]?", where, section, near);
    else
        add_error(L, "%s: unknown section [%s] (`moerun help keys` lists them)", where,
                  section);
}

static void set_value(loader *L, int key, const char *text, const char *where, int line)
{
    raw_value *v = &L->values[key];
    char *copy = strdup(text);
    if (!copy) {
        add_error(L, "%s: out of memory", where);
        return;
    }
    free(v->text);
    v->text = copy;
    v->line = line;
    snprintf(v->where, sizeof v->where, "%s", where);
}

/* Section headers are checked here, as the reader hands lines to inih,
 * because inih reports only keys: an unknown section with no keys would
 * otherwise pass unnoticed. */
static void inspect_line(loader *L, const char *line, size_t len)
{
    while (len && isspace((unsigned char)*line)) {
        line++;
        len--;
    }
    if (!len || *line != '[')
        return;
    const char *close = memchr(line, ']', len);
    if (!close)
        return; /* inih reports the malformed header */
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(close - line - 1), line + 1);
    char where[PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%d", L->path, L->lineno);
    int s = find_section(L, name);
    if (s < 0)
        unknown_section(L, where, name);
    else if (!L->section_line[s])
        L->section_line[s] = L->lineno;
}

/*
 * fgets-style reader for ini_parse_stream.  It hands inih one line at a time,
 * in pieces when inih's buffer is smaller, and counts lines so the handler
 * knows where it is.  A line too long for inih is replaced by an empty one
 * and reported: inih would otherwise cut it without a word.
 */
static char *read_line(char *str, int num, void *stream)
{
    loader *L = stream;
    if (num < 2)
        return NULL;
    if (!L->mid_line) {
        if (L->pos >= L->len)
            return NULL;
        const char *nl = memchr(L->data + L->pos, '\n', L->len - L->pos);
        L->line_end = nl ? (size_t)(nl - L->data) + 1 : L->len;
        L->lineno++;
        L->indented = L->data[L->pos] == ' ' || L->data[L->pos] == '\t';
        size_t line_len = L->line_end - L->pos;
        if (line_len > MR_JOB_MAX_LINE - 2) {
            add_error(L, "%s:%d: line is %zu bytes, longer than the %d a job file line may be",
                      L->path, L->lineno, line_len, MR_JOB_MAX_LINE - 2);
            L->pos = L->line_end;
            L->refused_line = true;
            strcpy(str, "\n");
            return str;
        }
        inspect_line(L, L->data + L->pos, line_len);
        L->mid_line = true;
    }
    size_t n = L->line_end - L->pos;
    if (n > (size_t)num - 1)
        n = (size_t)num - 1;
    memcpy(str, L->data + L->pos, n);
    str[n] = '\0';
    L->pos += n;
    if (L->pos == L->line_end)
        L->mid_line = false;
    return str;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    loader *L = user;
    char where[PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%d", L->path, L->lineno);
    if (!*section) {
        add_error(L, "%s: key '%s' comes before any [section]", where, name);
        return 1;
    }
    if (find_section(L, section) < 0)
        return 1; /* the header was reported once; its keys would only repeat it */
    int k = find_key(section, name);
    if (k < 0) {
        unknown_key(L, where, section, name);
        L->last_key = -1;
        return 1;
    }
    raw_value *v = &L->values[k];
    if (L->indented && L->last_key == k && v->text) {
        /* inih hands an indented line over as another value of the key above. */
        if (key_slot[k].type != T_PATHS) {
            add_error(L, "%s: indented line continues '%s' from line %d, but only lists of "
                      "paths may span lines; join it or remove the indent",
                      where, name, v->line);
            return 1;
        }
        size_t old = strlen(v->text), add = strlen(value);
        char *joined = realloc(v->text, old + add + 2);
        if (!joined) {
            add_error(L, "%s: out of memory", where);
            return 1;
        }
        joined[old] = ' ';
        memcpy(joined + old + 1, value, add + 1);
        v->text = joined;
        return 1;
    }
    if (v->text && v->line) {
        add_error(L, "%s: '%s' in [%s] is set twice (first at line %d)", where, name, section,
                  v->line);
        return 1;
    }
    set_value(L, k, value, where, L->lineno);
    L->last_key = k;
    return 1;
}

static int read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open job file: %s", path, strerror(errno));
        return MR_JOBS_EINVAL;
    }
    mr_buf b = {0};
    char chunk[65536];
    size_t n;
    int rc = MR_JOBS_OK;
    while (rc == MR_JOBS_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = mr_buf_append(&b, chunk, n);
    if (rc == MR_JOBS_OK && ferror(f)) {
        snprintf(err, errlen, "%s: cannot read job file: %s", path, strerror(errno));
        rc = MR_JOBS_EIO;
    } else if (rc != MR_JOBS_OK) {
        snprintf(err, errlen, "%s: out of memory", path);
    }
    fclose(f);
    if (rc != MR_JOBS_OK) {
        mr_buf_free(&b);
        return rc;
    }
    *data = b.data ? b.data : strdup("");
    *len = b.len;
    return *data ? MR_JOBS_OK : MR_JOBS_ENOMEM;
}

static void apply_override(loader *L, const char *assignment)
{
    char where[PATH_MAX + 64];
    snprintf(where, sizeof where, "--set %s", assignment);
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    if (!eq || !dot || dot == assignment || dot + 1 == eq) {
        add_error(L, "%s: expected section.key=value, as in --set eplb.step_interval=50",
                  where);
        return;
    }
    char section[128], key[128];
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    if (find_section(L, section) < 0) {
        unknown_section(L, where, section);
        return;
    }
    int k = find_key(section, key);
    if (k < 0) {
        unknown_key(L, where, section, key);
        return;
    }
    set_value(L, k, eq + 1, where, 0);
}

/* ---- conversion of text values into the job's fields ---- */

static char *join_path(const char *dir, const char *path)
{
    const char *home = getenv("HOME");
    /* Only "~/" means the home folder: "~x" is a name like any other. */
    bool in_home = path[0] == '~' && path[1] == '/' && home;
    char *out;
    if (in_home)
        out = malloc(strlen(home) + strlen(path));
    else if (path[0] == '/')
        return strdup(path);
    else
        out = malloc(strlen(dir) + strlen(path) + 2);
    if (!out)
        return NULL;
    if (in_home)
        sprintf(out, "%s%s", home, path + 1);
    else
        sprintf(out, "%s/%s", dir, path);
    return out;
}

static int strlist_push(mr_strlist *list, char *item)
{
    char **items = realloc(list->items, (list->count + 1) * sizeof *items);
    if (!items) {
        free(item);
        return MR_JOBS_ENOMEM;
    }
    items[list->count++] = item;
    list->items = items;
    return MR_JOBS_OK;
}

static void strlist_free(mr_strlist *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static void add_input_file(loader *L, const char *where, mr_strlist *files, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        add_error(L, "%s: input file '%s': %s", where, path, strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        add_error(L, "%s: input '%s' is not a regular file", where, path);
        return;
    }
    for (size_t i = 0; i < files->count; i++) {
        if (strcmp(files->items[i], path) == 0) {
            add_error(L, "%s: input file '%s' is listed twice", where, path);
            return;
        }
    }
    char *copy = strdup(path);
    if (!copy || strlist_push(files, copy) != MR_JOBS_OK)
        add_error(L, "%s: out of memory", where);
}

static void add_input_pattern(loader *L, const char *where, mr_strlist *files,
                              const char *dir, const char *pattern)
{
    char *path = join_path(dir, pattern);
    if (!path) {
        add_error(L, "%s: out of memory", where);
        return;
    }
    if (!strpbrk(pattern, "*?[")) {
        add_input_file(L, where, files, path);
        free(path);
        return;
    }
    glob_t g;
    int rc = glob(path, GLOB_ERR, NULL, &g);
    if (rc == GLOB_NOMATCH)
        add_error(L, "%s: pattern '%s' matches no file", where, pattern);
    else if (rc != 0)
        add_error(L, "%s: cannot expand pattern '%s'", where, pattern);
    else
        for (size_t i = 0; i < g.gl_pathc; i++)
            add_input_file(L, where, files, g.gl_pathv[i]);
    if (rc != GLOB_NOMATCH)
        globfree(&g);
    free(path);
}

/* Paths are separated by blanks or commas; "double quotes" keep a path with
 * blanks in one piece. */
static void convert_paths(loader *L, const char *where, const char *text, const char *dir,
                          mr_strlist *files)
{
    size_t len = strlen(text);
    char *token = malloc(len + 1);
    if (!token) {
        add_error(L, "%s: out of memory", where);
        return;
    }
    const char *p = text;
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        if (!*p)
            break;
        size_t n = 0;
        if (*p == '"') {
            const char *end = strchr(p + 1, '"');
            if (!end) {
                add_error(L, "%s: unterminated \" in the list of paths", where);
                break;
            }
            n = (size_t)(end - p - 1);
            memcpy(token, p + 1, n);
            p = end + 1;
        } else {
            while (p[n] && !isspace((unsigned char)p[n]) && p[n] != ',')
                n++;
            memcpy(token, p, n);
            p += n;
        }
        token[n] = '\0';
        if (n)
            add_input_pattern(L, where, files, dir, token);
    }
    free(token);
    if (!files->count && L->n_errors == 0)
        add_error(L, "%s: the list of input files is empty", where);
}

static void convert_strings(loader *L, const char *where, const char *name, const char *text,
                            mr_strlist *out)
{
    cJSON *json = cJSON_Parse(text);
    bool ok = json && (cJSON_IsString(json) || cJSON_IsArray(json));
    if (ok && cJSON_IsString(json)) {
        char *s = strdup(json->valuestring);
        ok = s && strlist_push(out, s) == MR_JOBS_OK;
    } else if (ok) {
        const cJSON *item;
        cJSON_ArrayForEach(item, json)
        {
            char *s = cJSON_IsString(item) ? strdup(item->valuestring) : NULL;
            if (!s || strlist_push(out, s) != MR_JOBS_OK) {
                ok = false;
                break;
            }
        }
    }
    cJSON_Delete(json);
    if (!ok) {
        strlist_free(out);
        add_error(L, "%s: %s must be a JSON string or array of strings, as in "
                  "[\"\\n\\n\", \"###\"]; got '%s'", where, name, text);
    }
}

static void convert_enum(loader *L, const char *where, const mr_job_key_info *info,
                         const char *text, int *out)
{
    const char *names[16];
    char buf[256];
    snprintf(buf, sizeof buf, "%s", info->choices);
    size_t n = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok && n < 16;
         tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, text) == 0) {
            *out = (int)n;
            return;
        }
        names[n++] = tok;
    }
    const char *near = mr_suggest(text, names, n);
    if (near)
        add_error(L, "%s: %s.%s must be one of %s; did you mean '%s'?", where, info->section,
                  info->key, info->choices, near);
    else
        add_error(L, "%s: %s.%s must be one of %s, got '%s'", where, info->section,
                  info->key, info->choices, text);
}

static void convert_number(loader *L, const char *where, const mr_job_key_info *info,
                           key_type type, const char *text, void *field)
{
    char *end;
    errno = 0;
    if (type == T_INT) {
        long long v = strtoll(text, &end, 10);
        if (end != text && !*end && errno == 0 && v >= info->min && v <= info->max) {
            *(int64_t *)field = v;
            return;
        }
        add_error(L, "%s: %s.%s must be a whole number from %.0f to %.0f, got '%s'", where,
                  info->section, info->key, info->min, info->max, text);
        return;
    }
    double v = strtod(text, &end);
    if (end != text && !*end && errno == 0 && isfinite(v) && v >= info->min &&
        v <= info->max) {
        *(double *)field = v;
        return;
    }
    add_error(L, "%s: %s.%s must be a number from %g to %g, got '%s'", where, info->section,
              info->key, info->min, info->max, text);
}

static void convert(loader *L, mr_job *job, int k, const char *text, const char *where)
{
    const mr_job_key_info *info = &key_info[k];
    void *field = (char *)job + key_slot[k].offset;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", info->section, info->key);
    switch (key_slot[k].type) {
    case T_STR:
    case T_PATH: {
        char *s = key_slot[k].type == T_PATH ? join_path(job->dir, text) : strdup(text);
        if (!s)
            add_error(L, "%s: out of memory", where);
        *(char **)field = s;
        break;
    }
    case T_PATHS:
        convert_paths(L, where, text, job->dir, field);
        break;
    case T_STRINGS:
        convert_strings(L, where, name, text, field);
        break;
    case T_ENUM:
        convert_enum(L, where, info, text, field);
        break;
    case T_INT:
    case T_FLOAT:
        convert_number(L, where, info, key_slot[k].type, text, field);
        break;
    }
}

/* The job file's folder, absolute, so that the paths the job resolves
 * against it mean the same files from any working folder: `moerun resume`
 * reads them back from RUN_DIR/job.ini. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = !slash ? strdup(".") : slash == path ? strdup("/")
                                                     : strndup(path, (size_t)(slash - path));
    char *absolute = dir ? realpath(dir, NULL) : NULL;
    if (!absolute)
        return dir;
    free(dir);
    return absolute;
}

/* The default name is the job file's name without folder and extension. */
static char *default_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    return strndup(base, n);
}

static void fill_job(loader *L, mr_job *job)
{
    for (size_t k = 0; k < N_KEYS; k++) {
        const raw_value *v = &L->values[k];
        const mr_job_key_info *info = &key_info[k];
        /* An empty value means "not set", as `calibration =` reads. */
        if (v->text && *v->text) {
            convert(L, job, (int)k, v->text, v->where);
        } else if (info->default_value) {
            char where[128];
            snprintf(where, sizeof where, "default of %s.%s", info->section, info->key);
            convert(L, job, (int)k, info->default_value, where);
        } else if ((info->flags & MR_KEY_REQUIRED) && !L->refused_line) {
            int s = find_section(L, info->section);
            if (L->section_line[s])
                add_error(L, "%s:%d: [%s] lacks the required key '%s'", L->path,
                          L->section_line[s], info->section, info->key);
            else
                add_error(L, "%s: required key '%s' in section [%s] is missing", L->path,
                          info->key, info->section);
        }
    }
    /* One list price alone sets no ratio to split the cost by. */
    if ((job->cost_input_usd_per_million > 0) != (job->cost_output_usd_per_million > 0))
        add_error(L,
                  "%s: [cost] input_usd_per_million and output_usd_per_million go together: "
                  "the report splits moerun's cost between input and output tokens in the "
                  "ratio of the two list prices; set both (each above 0) or neither",
                  L->path);
    if (!job->job_name)
        job->job_name = default_name(L->path);
    if (!job->job_run_dir && job->job_name) {
        job->job_run_dir = malloc(strlen(job->dir) + strlen(job->job_name) + 7);
        if (job->job_run_dir)
            sprintf(job->job_run_dir, "%s/runs/%s", job->dir, job->job_name);
    }
    if (!job->job_name || !job->job_run_dir)
        add_error(L, "%s: out of memory", L->path);
}

int mr_job_load(mr_job *job, const char *path, const mr_job_override *overrides,
                size_t n_overrides, char *err, size_t errlen)
{
    memset(job, 0, sizeof *job);
    loader L = {.path = path, .last_key = -1};
    for (size_t k = 0; k < N_KEYS; k++)
        if (find_section(&L, key_info[k].section) < 0)
            L.section_names[L.n_sections++] = key_info[k].section;

    char *data = NULL;
    int rc = read_file(path, &data, &L.len, err, errlen);
    if (rc != MR_JOBS_OK)
        return rc;
    L.data = data;

    /* Debian's inih takes its limits at run time: a heap buffer that grows
     * lets a long line (a long list of inputs) be read whole. */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = MR_JOB_MAX_LINE;
    int bad_line = ini_parse_stream(read_line, &L, on_key, &L);
    if (bad_line > 0)
        add_error(&L, "%s:%d: cannot read this line: expected [section], key = value, or "
                  "a comment", path, bad_line);
    else if (bad_line < 0)
        add_error(&L, "%s: out of memory while reading", path);
    for (size_t i = 0; i < n_overrides; i++)
        apply_override(&L, overrides[i].assignment);

    job->source = strdup(path);
    job->dir = dir_of(path);
    if (!job->source || !job->dir)
        add_error(&L, "%s: out of memory", path);
    else
        fill_job(&L, job);

    for (size_t k = 0; k < N_KEYS; k++)
        free(L.values[k].text);
    free(data);
    rc = MR_JOBS_OK;
    if (L.n_errors) {
        if (L.n_errors > MR_JOB_MAX_ERRORS)
            add_error(&L, "(%d more errors not shown)", L.n_errors - MR_JOB_MAX_ERRORS);
        snprintf(err, errlen, "%.*s", L.errors.len ? (int)L.errors.len - 1 : 0,
                 L.errors.data ? L.errors.data : "");
        mr_job_free(job);
        rc = MR_JOBS_EINVAL;
    }
    mr_buf_free(&L.errors);
    return rc;
}

void mr_job_free(mr_job *job)
{
    for (size_t k = 0; k < N_KEYS; k++) {
        void *field = (char *)job + key_slot[k].offset;
        switch (key_slot[k].type) {
        case T_STR:
        case T_PATH:
            free(*(char **)field);
            break;
        case T_PATHS:
        case T_STRINGS:
            strlist_free(field);
            break;
        default:
            break;
        }
    }
    free(job->source);
    free(job->dir);
    memset(job, 0, sizeof *job);
}

static int format_value(const mr_job *job, size_t k, mr_buf *out)
{
    const void *field = (const char *)job + key_slot[k].offset;
    char num[64];
    switch (key_slot[k].type) {
    case T_STR:
    case T_PATH: {
        const char *s = *(char *const *)field;
        return s ? mr_buf_append(out, s, strlen(s)) : MR_JOBS_OK;
    }
    case T_PATHS: {
        const mr_strlist *list = field;
        for (size_t i = 0; i < list->count; i++) {
            bool quote = strpbrk(list->items[i], " \t,") != NULL;
            if ((i && mr_buf_append(out, " ", 1)) || (quote && mr_buf_append(out, "\"", 1)) ||
                mr_buf_append(out, list->items[i], strlen(list->items[i])) ||
                (quote && mr_buf_append(out, "\"", 1)))
                return MR_JOBS_ENOMEM;
        }
        return MR_JOBS_OK;
    }
    case T_STRINGS: {
        const mr_strlist *list = field;
        /* cJSON_CreateStringArray refuses an empty list */
        cJSON *array = cJSON_CreateArray();
        for (size_t i = 0; array && i < list->count; i++)
            if (!cJSON_AddItemToArray(array, cJSON_CreateString(list->items[i]))) {
                cJSON_Delete(array);
                array = NULL;
            }
        char *text = array ? cJSON_PrintUnformatted(array) : NULL;
        int rc = text ? mr_buf_append(out, text, strlen(text)) : MR_JOBS_ENOMEM;
        cJSON_free(text);
        cJSON_Delete(array);
        return rc;
    }
    case T_ENUM: {
        const char *choices = key_info[k].choices;
        for (int i = *(const int *)field; i > 0 && choices; i--) {
            choices = strchr(choices, ',');
            choices = choices ? choices + 1 : NULL;
        }
        if (!choices)
            return MR_JOBS_EINVAL;
        return mr_buf_append(out, choices, strcspn(choices, ","));
    }
    case T_INT:
        snprintf(num, sizeof num, "%lld", (long long)*(const int64_t *)field);
        return mr_buf_append(out, num, strlen(num));
    case T_FLOAT:
        snprintf(num, sizeof num, "%.17g", *(const double *)field);
        return mr_buf_append(out, num, strlen(num));
    }
    return MR_JOBS_EINVAL;
}

static int append_text(mr_buf *out, const char *a, const char *b, const char *c)
{
    int rc = mr_buf_append(out, a, strlen(a));
    if (!rc)
        rc = mr_buf_append(out, b, strlen(b));
    if (!rc)
        rc = mr_buf_append(out, c, strlen(c));
    return rc;
}

/* Every key but those with a flag in `skip`; a section left empty is left out. */
static int format_keys(const mr_job *job, int skip, mr_buf *out)
{
    const char *section = "";
    for (size_t k = 0; k < N_KEYS; k++) {
        const mr_job_key_info *info = &key_info[k];
        if (info->flags & skip)
            continue;
        int rc = MR_JOBS_OK;
        if (strcmp(section, info->section) != 0) {
            rc = append_text(out, *section ? "\n[" : "[", info->section, "]\n");
            section = info->section;
        }
        if (!rc)
            rc = append_text(out, info->key, " = ", "");
        if (!rc)
            rc = format_value(job, k, out);
        if (!rc)
            rc = mr_buf_append(out, "\n", 1);
        if (rc)
            return rc;
    }
    return MR_JOBS_OK;
}

int mr_job_format(const mr_job *job, mr_buf *out)
{
    return format_keys(job, 0, out);
}

int mr_job_format_fingerprint(const mr_job *job, mr_buf *out)
{
    return format_keys(job, MR_KEY_RESUME, out);
}
