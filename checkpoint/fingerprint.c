/*
 * The job's fingerprint, and what changed between two of them, said the
 * way a user would look for it: by job key, model config key and input file.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "checkpoint/checkpoint_internal.h"

#define BLOCK (64 * 1024)

static int read_at(int fd, unsigned char *buf, size_t n, uint64_t offset)
{
    for (size_t done = 0; done < n;) {
        ssize_t got = pread(fd, buf + done, n - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        done += (size_t)got;
    }
    return 0;
}

static int input_make(mr_checkpoint_input *in, const char *path, char *err, size_t errlen)
{
    if (!(in->path = strdup(path)))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot open input %s", path);
    struct stat st;
    unsigned char *buf = malloc(BLOCK);
    int rc = MR_CHECKPOINT_OK;
    if (!buf) {
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    } else if (fstat(fd, &st) != 0) {
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot stat input %s", path);
    } else {
        in->size = (uint64_t)st.st_size;
        size_t n = in->size < BLOCK ? (size_t)in->size : BLOCK;
        uint32_t *crcs[2] = {&in->head_crc32, &in->tail_crc32};
        uint64_t offsets[2] = {0, in->size - n};
        for (int i = 0; rc == MR_CHECKPOINT_OK && i < 2; i++) {
            if (read_at(fd, buf, n, offsets[i]) != 0)
                rc = mr_checkpoint_fail_errno(err, errlen, "cannot read input %s", path);
            *crcs[i] = (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), buf, n);
        }
    }
    free(buf);
    close(fd);
    return rc;
}

static int copy_text(char **to, const char *from)
{
    return !from || (*to = strdup(from)) ? MR_CHECKPOINT_OK : MR_CHECKPOINT_ENOMEM;
}

int mr_checkpoint_fingerprint_make(mr_checkpoint_fingerprint *fp, const char *job,
                                   const char *model_config, const char *const *inputs,
                                   size_t n_inputs, char *err, size_t errlen)
{
    memset(fp, 0, sizeof *fp);
    int rc = MR_CHECKPOINT_OK;
    if (copy_text(&fp->job, job) != MR_CHECKPOINT_OK ||
        copy_text(&fp->model_config, model_config) != MR_CHECKPOINT_OK ||
        (n_inputs && !(fp->inputs = calloc(n_inputs, sizeof *fp->inputs))))
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    else
        fp->n_inputs = n_inputs;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < n_inputs; i++)
        rc = input_make(&fp->inputs[i], inputs[i], err, errlen);
    if (rc != MR_CHECKPOINT_OK)
        mr_checkpoint_fingerprint_free(fp);
    return rc;
}

void mr_checkpoint_fingerprint_free(mr_checkpoint_fingerprint *fp)
{
    free(fp->job);
    free(fp->model_config);
    for (size_t i = 0; i < fp->n_inputs; i++)
        free(fp->inputs[i].path);
    free(fp->inputs);
    memset(fp, 0, sizeof *fp);
}

/* ------------------------------------------------------------------------
 * Differences
 * ------------------------------------------------------------------------ */
typedef struct {
    char *buf;
    size_t len;
    size_t count;
} diff;

static void note(diff *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(diff *d, const char *fmt, ...)
{
    if (d->count++)
        mr_checkpoint_appendf(d->buf, d->len, "\n");
    va_list ap;
    va_start(ap, fmt);
    mr_checkpoint_vappendf(d->buf, d->len, fmt, ap);
    va_end(ap);
}

/* One `key = value` of an INI text, pointing into a parsed copy. */
typedef struct {
    const char *section, *key, *value;
} ini_entry;

typedef struct {
    char *text;
    ini_entry *entries;
    size_t n;
} ini;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

/* The job file as the runner formats it: [section] lines and key = value
 * lines, whole values (no inline comments), so every change is seen. */
static int ini_parse(ini *out, const char *text)
{
    memset(out, 0, sizeof *out);
    if (!text)
        return MR_CHECKPOINT_OK;
    size_t lines = 1;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    if (!(out->text = strdup(text)) || !(out->entries = calloc(lines, sizeof *out->entries)))
        return MR_CHECKPOINT_ENOMEM;
    const char *section = "";
    char *save = NULL;
    for (char *line = strtok_r(out->text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        line = trim(line);
        char *eq = strchr(line, '=');
        size_t len = strlen(line);
        if (line[0] == '[' && len > 1 && line[len - 1] == ']') {
            line[len - 1] = '\0';
            section = trim(line + 1);
        } else if (eq && line[0] != ';' && line[0] != '#') {
            *eq = '\0';
            out->entries[out->n++] = (ini_entry){section, trim(line), trim(eq + 1)};
        }
    }
    return MR_CHECKPOINT_OK;
}

static void ini_free(ini *f)
{
    free(f->text);
    free(f->entries);
}

static const ini_entry *ini_find(const ini *f, const ini_entry *like)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->entries[i].section, like->section) == 0 &&
            strcmp(f->entries[i].key, like->key) == 0)
            return &f->entries[i];
    return NULL;
}

static void diff_job(diff *d, const char *then_text, const char *now_text)
{
    ini then, now;
    int a = ini_parse(&then, then_text), b = ini_parse(&now, now_text);
    if (a != MR_CHECKPOINT_OK || b != MR_CHECKPOINT_OK) {
        note(d, "job file: out of memory comparing it");
    } else {
        for (size_t i = 0; i < now.n; i++) {
            const ini_entry *e = &now.entries[i], *old = ini_find(&then, e);
            if (!old)
                note(d, "job key [%s] %s is new (%s)", e->section, e->key, e->value);
            else if (strcmp(old->value, e->value) != 0)
                note(d, "job key [%s] %s changed %s → %s", e->section, e->key, old->value,
                     e->value);
        }
        for (size_t i = 0; i < then.n; i++)
            if (!ini_find(&now, &then.entries[i]))
                note(d, "job key [%s] %s was removed (it was %s)", then.entries[i].section,
                     then.entries[i].key, then.entries[i].value);
    }
    ini_free(&then);
    ini_free(&now);
}

/* A JSON value for a message, "?" when it cannot be printed. */
static char *show(const cJSON *item)
{
    char *s = item ? cJSON_PrintUnformatted(item) : NULL;
    return s ? s : strdup("?");
}

/* Compared key by key as JSON, so reformatting config.json is no change. */
static void diff_model(diff *d, const char *then_text, const char *now_text)
{
    if (!then_text || !now_text) {
        if (then_text != now_text)
            note(d, "model config %s", then_text ? "is gone" : "is new");
        return;
    }
    if (strcmp(then_text, now_text) == 0)
        return;
    cJSON *then = cJSON_Parse(then_text), *now = cJSON_Parse(now_text);
    if (!cJSON_IsObject(then) || !cJSON_IsObject(now)) {
        note(d, "model config changed");
    } else {
        const cJSON *e;
        cJSON_ArrayForEach(e, now)
        {
            const cJSON *old = cJSON_GetObjectItemCaseSensitive(then, e->string);
            char *was = show(old), *is = show(e);
            if (!old)
                note(d, "model config key %s is new (%s)", e->string, is);
            else if (!cJSON_Compare(old, e, true))
                note(d, "model config key %s changed %s → %s", e->string, was, is);
            free(was);
            free(is);
        }
        cJSON_ArrayForEach(e, then)
        {
            if (!cJSON_GetObjectItemCaseSensitive(now, e->string))
                note(d, "model config key %s was removed", e->string);
        }
    }
    cJSON_Delete(then);
    cJSON_Delete(now);
}

static const mr_checkpoint_input *find_input(const mr_checkpoint_fingerprint *fp,
                                             const char *path)
{
    for (size_t i = 0; i < fp->n_inputs; i++)
        if (fp->inputs[i].path && path && strcmp(fp->inputs[i].path, path) == 0)
            return &fp->inputs[i];
    return NULL;
}

static void diff_inputs(diff *d, const mr_checkpoint_fingerprint *then,
                        const mr_checkpoint_fingerprint *now)
{
    size_t before = d->count;
    for (size_t i = 0; i < now->n_inputs; i++) {
        const mr_checkpoint_input *in = &now->inputs[i], *old = find_input(then, in->path);
        if (!old)
            note(d, "input %s is new", in->path);
        else if (old->size != in->size)
            note(d, "input %s changed size %" PRIu64 " → %" PRIu64, in->path, old->size,
                 in->size);
        else if (old->head_crc32 != in->head_crc32)
            note(d, "input %s changed in its first 64 KiB", in->path);
        else if (old->tail_crc32 != in->tail_crc32)
            note(d, "input %s changed in its last 64 KiB", in->path);
    }
    for (size_t i = 0; i < then->n_inputs; i++)
        if (!find_input(now, then->inputs[i].path))
            note(d, "input %s is gone", then->inputs[i].path);
    /* Shards name files by their place in the list. */
    if (d->count == before)
        for (size_t i = 0; i < now->n_inputs && i < then->n_inputs; i++)
            if (strcmp(then->inputs[i].path, now->inputs[i].path) != 0) {
                note(d, "input files are listed in another order (%s is now number %zu)",
                     now->inputs[i].path, i + 1);
                break;
            }
}

size_t mr_checkpoint_fingerprint_diff(const mr_checkpoint_fingerprint *then,
                                      const mr_checkpoint_fingerprint *now, char *what,
                                      size_t whatlen)
{
    char none[1];
    diff d = {whatlen ? what : none, whatlen ? whatlen : sizeof none, 0};
    d.buf[0] = '\0';
    diff_job(&d, then->job, now->job);
    diff_model(&d, then->model_config, now->model_config);
    diff_inputs(&d, then, now);
    return d.count;
}
