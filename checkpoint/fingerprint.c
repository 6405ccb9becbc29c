/*
 * The job's fingerprint, and what changed between two of them, said the
 * way a user would look for it: by job key, model config key and input file.
 */
#include <archive.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
/* Behind the same names, Debian's libxxhash picks AVX2 or AVX-512 at run
 * time; without, XXH3 is SSE2 only and about half as fast (make bench). */
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#include "checkpoint/checkpoint_internal.h"

/* Large enough that a read costs less than hashing it (make bench). */
#define BLOCK (1 << 20)

/* One input being hashed: the file as stored, and its shards' ranges. */
typedef struct {
    mr_checkpoint_input *in;
    int fd;
    unsigned char *buf;
    XXH3_state_t *file, *shard; /* the shard state holds the shard being read */
    size_t next;                /* shards before this one are hashed */
    uint64_t at;                /* decompressed bytes seen */
    char *err;
    size_t errlen;
} hasher;

/* `n` decompressed bytes: into every shard whose range holds some of them.
 * Ranges are in order and do not overlap, so one shard state serves. */
static void shards_update(hasher *h, const unsigned char *data, size_t n)
{
    mr_checkpoint_input *in = h->in;
    uint64_t end = h->at + n;
    for (; h->next < in->n_shards; h->next++) {
        mr_checkpoint_input_shard *s = &in->shards[h->next];
        uint64_t from = s->begin > h->at ? s->begin : h->at, to = s->end < end ? s->end : end;
        if (from >= end)
            break;
        if (from < to)
            XXH3_64bits_update(h->shard, data + (from - h->at), (size_t)(to - from));
        if (s->end > end)
            break; /* goes on in the next block */
        s->xxh3 = XXH3_64bits_digest(h->shard);
        XXH3_64bits_reset(h->shard);
    }
    h->at = end;
}

/* Shards past the end of a file that shrank hash what there was of them. */
static void shards_finish(hasher *h)
{
    for (; h->next < h->in->n_shards; h->next++) {
        h->in->shards[h->next].xxh3 = XXH3_64bits_digest(h->shard);
        XXH3_64bits_reset(h->shard);
    }
}

/* The next block of the file as stored, into the file's hash; 0 at its end. */
static ssize_t read_block(hasher *h)
{
    ssize_t got;
    while ((got = read(h->fd, h->buf, BLOCK)) < 0 && errno == EINTR)
        continue;
    if (got > 0) {
        XXH3_64bits_update(h->file, h->buf, (size_t)got);
        h->in->size += (uint64_t)got;
    }
    return got;
}

static int read_failed(hasher *h)
{
    return mr_checkpoint_fail_errno(h->err, h->errlen, "cannot read input %s", h->in->path);
}

/* Reads the rest of the file as stored. */
static int hash_plain(hasher *h, bool shards)
{
    ssize_t got;
    while ((got = read_block(h)) > 0)
        if (shards)
            shards_update(h, h->buf, (size_t)got);
    return got == 0 ? MR_CHECKPOINT_OK : read_failed(h);
}

/* libarchive reads the file through read_block, so the stored bytes are
 * hashed in the same pass as the decompressed ones. */
static la_ssize_t feed_archive(struct archive *a, void *user, const void **block)
{
    hasher *h = user;
    ssize_t got = read_block(h);
    if (got < 0)
        archive_set_error(a, errno, "%s", strerror(errno));
    *block = h->buf;
    return got;
}

/* Shard ranges of a compressed file count decompressed bytes: the shards
 * are hashed as libarchive decompresses the file, whatever its filter (a
 * file that decompresses to nothing has no shards).  The rest of the file
 * (what the decompressor did not need) goes into the file's hash after. */
static int hash_compressed(hasher *h)
{
    struct archive *a = archive_read_new();
    struct archive_entry *entry;
    if (!a)
        return mr_checkpoint_fail(h->err, h->errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    int rc = MR_CHECKPOINT_OK;
    if (archive_read_open(a, h, NULL, feed_archive, NULL) != ARCHIVE_OK ||
        archive_read_next_header(a, &entry) != ARCHIVE_OK) {
        if (archive_filter_count(a) <= 1)
            rc = mr_checkpoint_fail(h->err, h->errlen, MR_CHECKPOINT_EINVAL,
                                    "input %s: cannot read it: %s", h->in->path,
                                    archive_error_string(a));
    } else {
        const void *data;
        size_t size;
        la_int64_t offset;
        int r;
        while ((r = archive_read_data_block(a, &data, &size, &offset)) == ARCHIVE_OK)
            shards_update(h, data, size);
        if (r != ARCHIVE_EOF)
            rc = mr_checkpoint_fail(h->err, h->errlen, MR_CHECKPOINT_EINVAL,
                                    "input %s: corrupt compressed data after %" PRIu64
                                    " decompressed bytes: %s",
                                    h->in->path, h->at, archive_error_string(a));
    }
    archive_read_free(a);
    return rc == MR_CHECKPOINT_OK ? hash_plain(h, false) : rc;
}

/* The plan cuts shards in file order; anything else is a damaged state. */
static int check_ranges(const mr_checkpoint_input *in, char *err, size_t errlen)
{
    for (size_t i = 0; i < in->n_shards; i++) {
        const mr_checkpoint_input_shard *s = &in->shards[i];
        if (s->end < s->begin || (i > 0 && s->begin < in->shards[i - 1].end))
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "input %s: shard %u's bytes %" PRIu64 "–%" PRIu64
                                      " are not after those of the shard before it",
                                      in->path, (unsigned)s->id, s->begin, s->end);
    }
    return MR_CHECKPOINT_OK;
}

static int input_hash(mr_checkpoint_input *in, char *err, size_t errlen)
{
    hasher h = {.in = in, .err = err, .errlen = errlen};
    int rc = MR_CHECKPOINT_OK;
    if ((h.fd = open(in->path, O_RDONLY | O_CLOEXEC)) < 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot open input %s", in->path);
    posix_fadvise(h.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (!(h.buf = malloc(BLOCK)) || !(h.file = XXH3_createState()) ||
        !(h.shard = XXH3_createState())) {
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    } else {
        XXH3_64bits_reset(h.file);
        XXH3_64bits_reset(h.shard);
        in->size = 0;
        rc = in->compressed ? hash_compressed(&h) : hash_plain(&h, true);
    }
    if (rc == MR_CHECKPOINT_OK) {
        shards_finish(&h);
        in->xxh3 = XXH3_64bits_digest(h.file);
    }
    XXH3_freeState(h.file);
    XXH3_freeState(h.shard);
    free(h.buf);
    close(h.fd);
    return rc;
}

static int input_stat(mr_checkpoint_input *in, char *err, size_t errlen)
{
    struct stat st;
    if (stat(in->path, &st) != 0)
        return mr_checkpoint_fail_errno(err, errlen, "cannot open input %s", in->path);
    in->size = (uint64_t)st.st_size;
    return MR_CHECKPOINT_OK;
}

/* A copy of the path, flag and shard ranges of `from`. */
static int input_copy(mr_checkpoint_input *to, const mr_checkpoint_input *from)
{
    *to = (mr_checkpoint_input){.compressed = from->compressed};
    if (!(to->path = strdup(from->path)) ||
        (from->n_shards && !(to->shards = malloc(from->n_shards * sizeof *to->shards))))
        return MR_CHECKPOINT_ENOMEM;
    to->n_shards = from->n_shards;
    for (size_t i = 0; i < from->n_shards; i++) {
        const mr_checkpoint_input_shard *s = &from->shards[i];
        to->shards[i] = (mr_checkpoint_input_shard){s->id, s->begin, s->end, s->first_line,
                                                    s->lines, 0};
    }
    return MR_CHECKPOINT_OK;
}

static int copy_text(char **to, const char *from)
{
    return !from || (*to = strdup(from)) ? MR_CHECKPOINT_OK : MR_CHECKPOINT_ENOMEM;
}

int mr_checkpoint_fingerprint_make(mr_checkpoint_fingerprint *fp, const char *job,
                                   const char *model_config, const mr_checkpoint_input *inputs,
                                   size_t n_inputs, bool hash, char *err, size_t errlen)
{
    memset(fp, 0, sizeof *fp);
    fp->hashed = hash;
    int rc = MR_CHECKPOINT_OK;
    if (copy_text(&fp->job, job) != MR_CHECKPOINT_OK ||
        copy_text(&fp->model_config, model_config) != MR_CHECKPOINT_OK ||
        (n_inputs && !(fp->inputs = calloc(n_inputs, sizeof *fp->inputs))))
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    else
        fp->n_inputs = n_inputs;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < n_inputs; i++) {
        mr_checkpoint_input *in = &fp->inputs[i];
        if (input_copy(in, &inputs[i]) != MR_CHECKPOINT_OK)
            rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
        else if ((rc = check_ranges(in, err, errlen)) == MR_CHECKPOINT_OK)
            rc = hash ? input_hash(in, err, errlen) : input_stat(in, err, errlen);
    }
    if (rc != MR_CHECKPOINT_OK)
        mr_checkpoint_fingerprint_free(fp);
    return rc;
}

void mr_checkpoint_fingerprint_free(mr_checkpoint_fingerprint *fp)
{
    free(fp->job);
    free(fp->model_config);
    for (size_t i = 0; i < fp->n_inputs; i++) {
        free(fp->inputs[i].path);
        free(fp->inputs[i].shards);
    }
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

/* Changed shards named one a line; past this many, the rest are counted. */
#define SHARDS_NAMED 5

static bool same_shards(const mr_checkpoint_input *a, const mr_checkpoint_input *b)
{
    if (a->n_shards != b->n_shards)
        return false;
    for (size_t i = 0; i < a->n_shards; i++)
        if (a->shards[i].id != b->shards[i].id || a->shards[i].begin != b->shards[i].begin ||
            a->shards[i].end != b->shards[i].end)
            return false;
    return true;
}

/* "shard 3 (lines 1201–1800)": how a user finds the shard in the file. */
static const char *shard_name(const mr_checkpoint_input_shard *s, char *buf, size_t len)
{
    if (s->lines > 1)
        snprintf(buf, len, "shard %u (lines %" PRIu64 "–%" PRIu64 ")", (unsigned)s->id,
                 s->first_line, s->first_line + s->lines - 1);
    else
        snprintf(buf, len, "shard %u (%s %" PRIu64 ")", (unsigned)s->id,
                 s->lines ? "line" : "no line, at byte", s->lines ? s->first_line : s->begin);
    return buf;
}

/* An input of the same path in both: its size, and when both were read,
 * the hashes of its shards and of the whole file. */
static void diff_content(diff *d, const mr_checkpoint_input *old, const mr_checkpoint_input *in,
                         bool hashed)
{
    char name[96];
    size_t changed = 0, first = 0;
    if (hashed && !same_shards(old, in)) {
        note(d, "input %s is cut into other shards than the checkpoint's", in->path);
        return;
    }
    for (size_t i = 0; hashed && i < in->n_shards; i++)
        if (old->shards[i].xxh3 != in->shards[i].xxh3 && !changed++)
            first = i;
    if (old->size != in->size) {
        note(d, "input %s changed size %" PRIu64 " → %" PRIu64 "%s%s", in->path, old->size,
             in->size, changed ? ", first in " : "",
             changed ? shard_name(&in->shards[first], name, sizeof name) : "");
        return;
    }
    for (size_t i = first, named = 0; named < changed && named < SHARDS_NAMED; i++) {
        if (old->shards[i].xxh3 == in->shards[i].xxh3)
            continue;
        note(d, "input %s changed in %s", in->path, shard_name(&in->shards[i], name, sizeof name));
        named++;
    }
    if (changed > SHARDS_NAMED)
        note(d, "input %s changed in %zu more shards", in->path, changed - SHARDS_NAMED);
    else if (!changed && hashed && old->xxh3 != in->xxh3)
        note(d, "input %s changed outside the bytes of its shards", in->path);
}

static void diff_inputs(diff *d, const mr_checkpoint_fingerprint *then,
                        const mr_checkpoint_fingerprint *now)
{
    size_t before = d->count;
    for (size_t i = 0; i < now->n_inputs; i++) {
        const mr_checkpoint_input *in = &now->inputs[i], *old = find_input(then, in->path);
        if (!old)
            note(d, "input %s is new", in->path);
        else
            diff_content(d, old, in, then->hashed && now->hashed);
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
