/*
 * plan.json: the shard plan as the run folder keeps it (docs/sharding.md).
 * cJSON holds numbers as doubles, exact up to 2^53: far beyond any input,
 * but checked on the way in so that a damaged file cannot wrap around.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jobs/internal.h"

#define PLAN_VERSION 1
#define MAX_EXACT 9007199254740992.0 /* 2^53 */

static bool add_number(cJSON *obj, const char *name, uint64_t v)
{
    return cJSON_AddNumberToObject(obj, name, (double)v) != NULL;
}

static cJSON *format_file(const mr_plan_file *f)
{
    cJSON *o = cJSON_CreateObject();
    if (o && cJSON_AddStringToObject(o, "path", f->path) &&
        cJSON_AddBoolToObject(o, "compressed", f->compressed) &&
        add_number(o, "bytes", f->bytes) && add_number(o, "lines", f->lines))
        return o;
    cJSON_Delete(o);
    return NULL;
}

static cJSON *format_shard(const mr_shard *s)
{
    cJSON *o = cJSON_CreateObject();
    if (o && add_number(o, "id", s->id) && add_number(o, "file", s->file_index) &&
        add_number(o, "begin", s->begin) && add_number(o, "end", s->end) &&
        add_number(o, "first_line", s->first_line) && add_number(o, "lines", s->n_lines))
        return o;
    cJSON_Delete(o);
    return NULL;
}

static cJSON *format_duplicate(const mr_duplicate *d)
{
    cJSON *o = cJSON_CreateObject();
    if (o && add_number(o, "file", d->file_index) && add_number(o, "line", d->line_no) &&
        add_number(o, "first_file", d->first_file_index) &&
        add_number(o, "first_line", d->first_line_no))
        return o;
    cJSON_Delete(o);
    return NULL;
}

static bool add_array(cJSON *root, const char *name, const void *items, size_t n,
                      size_t size, cJSON *(*format)(const void *))
{
    cJSON *array = cJSON_AddArrayToObject(root, name);
    for (size_t i = 0; array && i < n; i++) {
        cJSON *item = format((const char *)items + i * size);
        if (!item || !cJSON_AddItemToArray(array, item)) {
            cJSON_Delete(item);
            return false;
        }
    }
    return array != NULL;
}

static cJSON *format_file_any(const void *p) { return format_file(p); }
static cJSON *format_shard_any(const void *p) { return format_shard(p); }
static cJSON *format_duplicate_any(const void *p) { return format_duplicate(p); }

int mr_plan_format(const mr_plan *plan, mr_buf *out)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_number(root, "version", PLAN_VERSION) &&
              add_number(root, "lines", plan->n_lines) &&
              add_number(root, "requests", plan->n_requests) &&
              add_number(root, "invalid", plan->n_invalid) &&
              add_array(root, "files", plan->files, plan->n_files, sizeof *plan->files,
                        format_file_any) &&
              add_array(root, "shards", plan->shards, plan->n_shards, sizeof *plan->shards,
                        format_shard_any) &&
              add_array(root, "duplicates", plan->duplicates, plan->n_duplicates,
                        sizeof *plan->duplicates, format_duplicate_any);
    if (!ok) {
        cJSON_Delete(root);
        return MR_JOBS_ENOMEM;
    }
    return mr_json_append(out, root, true);
}

/* ---- reading it back ---- */

typedef struct {
    char *err;
    size_t errlen;
    bool failed;
} reader;

static uint64_t get_number(reader *r, const cJSON *obj, const char *where, const char *name,
                           uint64_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (r->failed)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > MAX_EXACT ||
        v->valuedouble != floor(v->valuedouble) || v->valuedouble > (double)max) {
        snprintf(r->err, r->errlen, "%s%s%s: not a whole number in range", where,
                 *where ? "." : "", name);
        r->failed = true;
        return 0;
    }
    return (uint64_t)v->valuedouble;
}

/* An array whose items refer to files needs files to refer to. */
static const cJSON *get_array(reader *r, const cJSON *root, const char *name,
                              const mr_plan *plan, size_t *n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, name);
    *n = 0;
    if (r->failed)
        return NULL;
    if (!cJSON_IsArray(a)) {
        snprintf(r->err, r->errlen, "%s: missing or not an array", name);
        r->failed = true;
        return NULL;
    }
    *n = (size_t)cJSON_GetArraySize(a);
    if (*n && plan->files && !plan->n_files) {
        snprintf(r->err, r->errlen, "%s: entries but no files", name);
        r->failed = true;
        return NULL;
    }
    return a;
}

static void parse_files(reader *r, const cJSON *root, mr_plan *plan)
{
    size_t n;
    const cJSON *array = get_array(r, root, "files", plan, &n);
    if (!array || !(plan->files = calloc(n ? n : 1, sizeof *plan->files)))
        return;
    const cJSON *item;
    cJSON_ArrayForEach(item, array)
    {
        char where[48];
        snprintf(where, sizeof where, "files[%zu]", plan->n_files);
        mr_plan_file *f = &plan->files[plan->n_files++];
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path");
        if (!cJSON_IsString(path) || !(f->path = strdup(path->valuestring))) {
            snprintf(r->err, r->errlen, "%s.path: missing or not a string", where);
            r->failed = true;
            return;
        }
        f->compressed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "compressed"));
        f->bytes = get_number(r, item, where, "bytes", UINT64_MAX);
        f->lines = get_number(r, item, where, "lines", UINT64_MAX);
    }
}

static void parse_shards(reader *r, const cJSON *root, mr_plan *plan)
{
    size_t n;
    const cJSON *array = get_array(r, root, "shards", plan, &n);
    if (!array || !(plan->shards = calloc(n ? n : 1, sizeof *plan->shards)))
        return;
    const cJSON *item;
    cJSON_ArrayForEach(item, array)
    {
        char where[48];
        snprintf(where, sizeof where, "shards[%zu]", plan->n_shards);
        mr_shard *s = &plan->shards[plan->n_shards];
        s->id = (uint32_t)get_number(r, item, where, "id", plan->n_shards);
        if (!r->failed && s->id != plan->n_shards) {
            snprintf(r->err, r->errlen, "%s.id: shards must be numbered in order", where);
            r->failed = true;
        }
        s->file_index = (uint32_t)get_number(r, item, where, "file", plan->n_files - 1);
        s->begin = get_number(r, item, where, "begin", UINT64_MAX);
        s->end = get_number(r, item, where, "end", UINT64_MAX);
        s->first_line = get_number(r, item, where, "first_line", UINT64_MAX);
        s->n_lines = get_number(r, item, where, "lines", UINT64_MAX);
        if (!r->failed && (s->begin > s->end || s->end > plan->files[s->file_index].bytes)) {
            snprintf(r->err, r->errlen, "%s: byte range outside its file", where);
            r->failed = true;
        }
        plan->n_shards++;
    }
}

static void parse_duplicates(reader *r, const cJSON *root, mr_plan *plan)
{
    size_t n;
    const cJSON *array = get_array(r, root, "duplicates", plan, &n);
    if (!array || !(plan->duplicates = calloc(n ? n : 1, sizeof *plan->duplicates)))
        return;
    const cJSON *item;
    cJSON_ArrayForEach(item, array)
    {
        char where[48];
        snprintf(where, sizeof where, "duplicates[%zu]", plan->n_duplicates);
        mr_duplicate *d = &plan->duplicates[plan->n_duplicates++];
        d->file_index = (uint32_t)get_number(r, item, where, "file", plan->n_files - 1);
        d->line_no = get_number(r, item, where, "line", UINT64_MAX);
        d->first_file_index = get_number(r, item, where, "first_file", plan->n_files - 1);
        d->first_line_no = get_number(r, item, where, "first_line", UINT64_MAX);
    }
}

int mr_plan_parse(mr_plan *plan, const char *json, size_t len, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    reader r = {err, errlen, false};
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "not a JSON object (damaged or not a plan)");
        cJSON_Delete(root);
        return MR_JOBS_EINVAL;
    }
    uint64_t version = get_number(&r, root, "", "version", UINT64_MAX);
    if (!r.failed && version != PLAN_VERSION) {
        snprintf(err, errlen, "plan version %llu; this moerun reads version %d",
                 (unsigned long long)version, PLAN_VERSION);
        r.failed = true;
    }
    plan->n_lines = get_number(&r, root, "", "lines", UINT64_MAX);
    plan->n_requests = get_number(&r, root, "", "requests", UINT64_MAX);
    plan->n_invalid = get_number(&r, root, "", "invalid", UINT64_MAX);
    parse_files(&r, root, plan);
    parse_shards(&r, root, plan);
    parse_duplicates(&r, root, plan);
    cJSON_Delete(root);
    if (!r.failed && (!plan->files || !plan->shards || !plan->duplicates)) {
        snprintf(err, errlen, "out of memory");
        mr_plan_free(plan);
        return MR_JOBS_ENOMEM;
    }
    if (r.failed) {
        mr_plan_free(plan);
        return MR_JOBS_EINVAL;
    }
    return MR_JOBS_OK;
}
