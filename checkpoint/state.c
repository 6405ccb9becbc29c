/*
 * The run state in memory and as the JSON payload of a generation.
 *
 * Every struct is described once, as a table of its fields, and the same
 * tables write and read it, so the two directions cannot drift apart and
 * the JSON keys are the C member names (docs/checkpoint-format.md).
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint_internal.h"

/* F_HASH: a 64-bit hash, as 16 hex digits, since a JSON number holds
 * only 53 bits. */
typedef enum { F_BOOL, F_INT, F_U32, F_I64, F_U64, F_DOUBLE, F_STR, F_HASH } field_type;

typedef struct {
    const char *name;
    field_type type;
    size_t offset;
} field;

#define FIELD(type, st, member) {#member, type, offsetof(st, member)}
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const field FINGERPRINT_FIELDS[] = {
    FIELD(F_STR, mr_checkpoint_fingerprint, job),
    FIELD(F_STR, mr_checkpoint_fingerprint, model_config),
};
static const field INPUT_FIELDS[] = {
    FIELD(F_STR, mr_checkpoint_input, path),
    FIELD(F_BOOL, mr_checkpoint_input, compressed),
    FIELD(F_U64, mr_checkpoint_input, size),
    FIELD(F_HASH, mr_checkpoint_input, xxh3),
};
static const field INPUT_SHARD_FIELDS[] = {
    FIELD(F_U32, mr_checkpoint_input_shard, id),
    FIELD(F_U64, mr_checkpoint_input_shard, begin),
    FIELD(F_U64, mr_checkpoint_input_shard, end),
    FIELD(F_U64, mr_checkpoint_input_shard, first_line),
    FIELD(F_U64, mr_checkpoint_input_shard, lines),
    FIELD(F_HASH, mr_checkpoint_input_shard, xxh3),
};
static const field SHARD_FIELDS[] = {
    FIELD(F_U32, mr_checkpoint_shard, index),
    FIELD(F_U64, mr_checkpoint_shard, next_line),
    FIELD(F_U64, mr_checkpoint_shard, results_offset),
    FIELD(F_U64, mr_checkpoint_shard, errors_offset),
    FIELD(F_BOOL, mr_checkpoint_shard, done),
};
static const field PLACEMENT_FIELDS[] = {
    FIELD(F_INT, mr_checkpoint_placement, n_layers),
    FIELD(F_INT, mr_checkpoint_placement, n_logical),
    FIELD(F_INT, mr_checkpoint_placement, n_physical),
    FIELD(F_INT, mr_checkpoint_placement, n_ranks),
};
static const field WINDOW_FIELDS[] = {
    FIELD(F_INT, mr_checkpoint_window, n_layers),
    FIELD(F_INT, mr_checkpoint_window, n_experts),
    FIELD(F_U64, mr_checkpoint_window, steps),
};
static const field COUNTER_FIELDS[] = {
    FIELD(F_U64, mr_checkpoint_counters, requests_ok),
    FIELD(F_U64, mr_checkpoint_counters, requests_failed),
    FIELD(F_U64, mr_checkpoint_counters, tokens_in),
    FIELD(F_U64, mr_checkpoint_counters, tokens_out),
    FIELD(F_DOUBLE, mr_checkpoint_counters, wall_seconds),
    FIELD(F_DOUBLE, mr_checkpoint_counters, rank_seconds),
    FIELD(F_U64, mr_checkpoint_counters, preemptions),
    FIELD(F_DOUBLE, mr_checkpoint_counters, preemption_lost_seconds),
    FIELD(F_U64, mr_checkpoint_counters, attempts),
    FIELD(F_U64, mr_checkpoint_counters, user_stops),
    FIELD(F_U64, mr_checkpoint_counters, stopped_by_user),
};
static const field STATE_FIELDS[] = {
    FIELD(F_I64, mr_checkpoint_state, created),
};

/* JSON numbers are doubles: integers beyond 2^53 would come back altered. */
#define MAX_EXACT 9007199254740992.0

static size_t type_size(field_type t)
{
    switch (t) {
    case F_INT: return sizeof(int);
    case F_U32: return sizeof(uint32_t);
    default: return sizeof(uint64_t);
    }
}

static const char *type_what(field_type t)
{
    switch (t) {
    case F_BOOL: return "true or false";
    case F_INT: return "a whole number from 0 to 2147483647";
    case F_U32: return "a whole number from 0 to 4294967295";
    case F_I64: return "a whole number within ±2^53";
    case F_U64: return "a whole number from 0 to 2^53";
    case F_DOUBLE: return "a number";
    case F_STR: return "a string or null";
    case F_HASH: return "a string of 16 hexadecimal digits";
    }
    return "";
}

/* False when the value is out of the type's range (what the reader would
 * refuse) or a JSON number cannot hold it exactly.  The 64-bit ranges are
 * checked on the integers: 2^53 + 1 rounds to a double that looks fine. */
static bool get_number(field_type t, const void *p, double *out)
{
    const int64_t exact = (int64_t)1 << 53;
    switch (t) {
    case F_INT: *out = *(const int *)p; return *out >= 0;
    case F_U32: *out = *(const uint32_t *)p; return true;
    case F_I64: {
        int64_t v = *(const int64_t *)p;
        *out = (double)v;
        return v >= -exact && v <= exact;
    }
    case F_U64: {
        uint64_t v = *(const uint64_t *)p;
        *out = (double)v;
        return v <= (uint64_t)exact;
    }
    case F_DOUBLE: *out = *(const double *)p; return isfinite(*out);
    default: return false;
    }
}

static bool set_number(field_type t, double d, void *p)
{
    if (t == F_DOUBLE) {
        *(double *)p = d;
        return true;
    }
    if (d != floor(d))
        return false;
    switch (t) {
    case F_INT:
        if (d < 0 || d > INT_MAX)
            return false;
        *(int *)p = (int)d;
        return true;
    case F_U32:
        if (d < 0 || d > UINT32_MAX)
            return false;
        *(uint32_t *)p = (uint32_t)d;
        return true;
    case F_I64:
        if (fabs(d) > MAX_EXACT)
            return false;
        *(int64_t *)p = (int64_t)d;
        return true;
    case F_U64:
        if (d < 0 || d > MAX_EXACT)
            return false;
        *(uint64_t *)p = (uint64_t)d;
        return true;
    default:
        return false;
    }
}

static int out_of_memory(char *err, size_t errlen)
{
    return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
}

/* Attaches item to obj (under name) or to an array (name NULL); frees it
 * when that fails. */
static int attach(cJSON *to, const char *name, cJSON *item, char *err, size_t errlen)
{
    if (item && (name ? cJSON_AddItemToObject(to, name, item) : cJSON_AddItemToArray(to, item)))
        return MR_CHECKPOINT_OK;
    cJSON_Delete(item);
    return out_of_memory(err, errlen);
}

static int number_to_json(cJSON *to, const char *name, field_type t, const void *p,
                          const char *where, char *err, size_t errlen)
{
    double d;
    if (!get_number(t, p, &d))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s%s%s is not %s, so a checkpoint cannot hold it", where,
                                  *where && name ? "." : "", name ? name : "", type_what(t));
    return attach(to, name, cJSON_CreateNumber(d), err, errlen);
}

static int fields_to_json(cJSON *obj, const void *base, const field *f, size_t n,
                          const char *where, char *err, size_t errlen)
{
    int rc = MR_CHECKPOINT_OK;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < n; i++) {
        const char *p = (const char *)base + f[i].offset;
        if (f[i].type == F_BOOL) {
            rc = attach(obj, f[i].name, cJSON_CreateBool(*(const bool *)p), err, errlen);
        } else if (f[i].type == F_STR) {
            const char *s = *(char *const *)p;
            rc = attach(obj, f[i].name, s ? cJSON_CreateString(s) : cJSON_CreateNull(), err,
                        errlen);
        } else if (f[i].type == F_HASH) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016" PRIx64, *(const uint64_t *)p);
            rc = attach(obj, f[i].name, cJSON_CreateString(hex), err, errlen);
        } else {
            rc = number_to_json(obj, f[i].name, f[i].type, p, where, err, errlen);
        }
    }
    return rc;
}

/* Exactly 16 hex digits, as written. */
static bool hash_from_hex(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < 16 && s[i]; i++) {
        char c = s[i];
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (digit < 0)
            return false;
        v = v << 4 | (uint64_t)digit;
    }
    *out = v;
    return i == 16 && !s[i];
}

static int field_from_json(const cJSON *item, const field *f, char *p)
{
    switch (f->type) {
    case F_BOOL:
        if (!cJSON_IsBool(item))
            return MR_CHECKPOINT_EINVAL;
        *(bool *)p = cJSON_IsTrue(item);
        return MR_CHECKPOINT_OK;
    case F_STR:
        if (cJSON_IsNull(item))
            return MR_CHECKPOINT_OK;
        if (!cJSON_IsString(item))
            return MR_CHECKPOINT_EINVAL;
        return (*(char **)p = strdup(item->valuestring)) ? MR_CHECKPOINT_OK
                                                         : MR_CHECKPOINT_ENOMEM;
    case F_HASH:
        return cJSON_IsString(item) && hash_from_hex(item->valuestring, (uint64_t *)p)
                   ? MR_CHECKPOINT_OK
                   : MR_CHECKPOINT_EINVAL;
    default:
        return cJSON_IsNumber(item) && set_number(f->type, item->valuedouble, p)
                   ? MR_CHECKPOINT_OK
                   : MR_CHECKPOINT_EINVAL;
    }
}

static int fields_from_json(const cJSON *obj, void *base, const field *f, size_t n,
                            const char *where, char *err, size_t errlen)
{
    if (!cJSON_IsObject(obj))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s is missing or not an object", where);
    for (size_t i = 0; i < n; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, f[i].name);
        const char *dot = *where ? "." : "";
        if (!item)
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL, "%s%s%s is missing",
                                      where, dot, f[i].name);
        int rc = field_from_json(item, &f[i], (char *)base + f[i].offset);
        if (rc == MR_CHECKPOINT_ENOMEM)
            return out_of_memory(err, errlen);
        if (rc != MR_CHECKPOINT_OK)
            return mr_checkpoint_fail(err, errlen, rc, "%s%s%s is not %s", where, dot,
                                      f[i].name, type_what(f[i].type));
    }
    return MR_CHECKPOINT_OK;
}

/* A struct's fields as a new member `name` of parent, returned in *obj. */
static int object_to_json(cJSON *parent, const char *name, cJSON **obj, const void *base,
                          const field *f, size_t n, char *err, size_t errlen)
{
    *obj = cJSON_AddObjectToObject(parent, name);
    return *obj ? fields_to_json(*obj, base, f, n, name, err, errlen)
                : out_of_memory(err, errlen);
}

/* An array of structs, one object each. */
static int records_to_json(cJSON *parent, const char *name, const void *items, size_t count,
                           size_t stride, const field *f, size_t n, char *err, size_t errlen)
{
    cJSON *array = cJSON_AddArrayToObject(parent, name);
    int rc = array ? MR_CHECKPOINT_OK : out_of_memory(err, errlen);
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < count; i++) {
        cJSON *obj = cJSON_CreateObject();
        char where[96];
        snprintf(where, sizeof where, "%s[%zu]", name, i);
        if ((rc = attach(array, NULL, obj, err, errlen)) == MR_CHECKPOINT_OK)
            rc = fields_to_json(obj, (const char *)items + i * stride, f, n, where, err, errlen);
    }
    return rc;
}

/* *items is set (calloc'd, count entries) before they are read, so the
 * caller's free releases what was read before a failure. */
static int records_from_json(const cJSON *parent, const char *name, void **items,
                             size_t *count, size_t stride, const field *f, size_t n,
                             char *err, size_t errlen)
{
    const cJSON *array = cJSON_GetObjectItemCaseSensitive(parent, name);
    if (!cJSON_IsArray(array))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s is missing or not an array", name);
    size_t size = (size_t)cJSON_GetArraySize(array);
    if (!(*items = calloc(size ? size : 1, stride)))
        return out_of_memory(err, errlen);
    *count = size;
    size_t i = 0;
    for (const cJSON *obj = array->child; obj; obj = obj->next, i++) {
        char where[96];
        snprintf(where, sizeof where, "%s[%zu]", name, i);
        int rc = fields_from_json(obj, (char *)*items + i * stride, f, n, where, err, errlen);
        if (rc != MR_CHECKPOINT_OK)
            return rc;
    }
    return MR_CHECKPOINT_OK;
}

/* A [rows][cols] matrix as an array of row arrays. */
static int rows_to_json(cJSON *parent, const char *name, const void *data, field_type t,
                        int rows, int cols, char *err, size_t errlen)
{
    cJSON *array = cJSON_AddArrayToObject(parent, name);
    int rc = array ? MR_CHECKPOINT_OK : out_of_memory(err, errlen);
    const char *p = data;
    for (int r = 0; rc == MR_CHECKPOINT_OK && r < rows; r++) {
        cJSON *row = cJSON_CreateArray();
        rc = attach(array, NULL, row, err, errlen);
        for (int c = 0; rc == MR_CHECKPOINT_OK && c < cols; c++, p += type_size(t))
            rc = number_to_json(row, NULL, t, p, name, err, errlen);
    }
    return rc;
}

static int rows_from_json(const cJSON *parent, const char *where, const char *name,
                          field_type t, int rows, int cols, void **data, char *err,
                          size_t errlen)
{
    const cJSON *array = cJSON_GetObjectItemCaseSensitive(parent, name);
    if (!cJSON_IsArray(array) || cJSON_GetArraySize(array) != rows)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s.%s is not an array of %d rows", where, name, rows);
    /* Every row is measured before the matrix is allocated, so a damaged
     * shape cannot ask for more memory than the payload's size. */
    int r = 0;
    for (const cJSON *row = array->child; row; row = row->next, r++)
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != cols)
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "%s.%s[%d] is not an array of %d numbers", where, name,
                                      r, cols);
    size_t size = type_size(t);
    char *p = calloc((size_t)rows * (size_t)cols + 1, size);
    if (!(*data = p))
        return out_of_memory(err, errlen);
    r = 0;
    for (const cJSON *row = array->child; row; row = row->next, r++) {
        int c = 0;
        for (const cJSON *x = row->child; x; x = x->next, c++, p += size)
            if (!cJSON_IsNumber(x) || !set_number(t, x->valuedouble, p))
                return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                          "%s.%s[%d][%d] is not %s", where, name, r, c,
                                          type_what(t));
    }
    return MR_CHECKPOINT_OK;
}

static int check_placement(const mr_checkpoint_placement *p, char *err, size_t errlen)
{
    if (p->n_layers == 0)
        return MR_CHECKPOINT_OK;
    if (p->n_layers < 0 || p->n_logical < 1 || p->n_ranks < 1 || p->n_physical < p->n_logical ||
        p->n_physical % p->n_ranks != 0)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "placement of %d layers of %d experts in %d slots over "
                                  "%d ranks is impossible",
                                  p->n_layers, p->n_logical, p->n_physical, p->n_ranks);
    for (size_t i = 0; i < (size_t)p->n_layers * (size_t)p->n_physical; i++)
        if (p->phy2log[i] < 0 || p->phy2log[i] >= p->n_logical)
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "placement: layer %zu slot %zu holds expert %d, not one "
                                      "of 0..%d",
                                      i / (size_t)p->n_physical, i % (size_t)p->n_physical,
                                      (int)p->phy2log[i], p->n_logical - 1);
    return MR_CHECKPOINT_OK;
}

/* The inputs, each with its shards' ranges and hashes. */
static int inputs_to_json(cJSON *fpj, const mr_checkpoint_fingerprint *fp, char *err,
                          size_t errlen)
{
    int rc = records_to_json(fpj, "inputs", fp->inputs, fp->n_inputs, sizeof *fp->inputs,
                             INPUT_FIELDS, COUNT(INPUT_FIELDS), err, errlen);
    cJSON *obj = rc == MR_CHECKPOINT_OK ? cJSON_GetObjectItemCaseSensitive(fpj, "inputs")->child
                                        : NULL;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < fp->n_inputs; i++, obj = obj->next)
        rc = records_to_json(obj, "shards", fp->inputs[i].shards, fp->inputs[i].n_shards,
                             sizeof *fp->inputs[i].shards, INPUT_SHARD_FIELDS,
                             COUNT(INPUT_SHARD_FIELDS), err, errlen);
    return rc;
}

static int inputs_from_json(const cJSON *fpj, mr_checkpoint_fingerprint *fp, char *err,
                            size_t errlen)
{
    int rc = records_from_json(fpj, "inputs", (void **)&fp->inputs, &fp->n_inputs,
                               sizeof *fp->inputs, INPUT_FIELDS, COUNT(INPUT_FIELDS), err,
                               errlen);
    const cJSON *obj = rc == MR_CHECKPOINT_OK
                           ? cJSON_GetObjectItemCaseSensitive(fpj, "inputs")->child
                           : NULL;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < fp->n_inputs; i++, obj = obj->next) {
        mr_checkpoint_input *in = &fp->inputs[i];
        char inner[512];
        rc = records_from_json(obj, "shards", (void **)&in->shards, &in->n_shards,
                               sizeof *in->shards, INPUT_SHARD_FIELDS,
                               COUNT(INPUT_SHARD_FIELDS), inner, sizeof inner);
        /* Said in full: the run's own progress is `shards` too. */
        if (rc == MR_CHECKPOINT_EINVAL)
            mr_checkpoint_fail(err, errlen, rc, "inputs[%zu].%s", i, inner);
        else if (rc != MR_CHECKPOINT_OK)
            mr_checkpoint_fail(err, errlen, rc, "%s", inner);
    }
    fp->hashed = true; /* only hashed fingerprints are written */
    return rc;
}

/* Inputs are matched by path when fingerprints are compared. */
static int check_inputs(const mr_checkpoint_fingerprint *fp, char *err, size_t errlen)
{
    for (size_t i = 0; i < fp->n_inputs; i++)
        if (!fp->inputs[i].path)
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "fingerprint.inputs[%zu].path is null", i);
    return MR_CHECKPOINT_OK;
}

static int check_shards(const mr_checkpoint_state *state, char *err, size_t errlen)
{
    for (size_t i = 0; i < state->n_shards; i++)
        if (state->shards[i].index != i)
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "shards[%zu] has index %u: shards must be in id order",
                                      i, (unsigned)state->shards[i].index);
    return MR_CHECKPOINT_OK;
}

/* A shard's in_flight list as its object's member: [{"line": L, "tokens":
 * [...]}], with "choice": C for a line's generations after its first. */
static int in_flight_to_json(cJSON *obj, const mr_checkpoint_shard *shard, const char *where,
                             char *err, size_t errlen)
{
    cJSON *array = cJSON_AddArrayToObject(obj, "in_flight");
    int rc = array ? MR_CHECKPOINT_OK : out_of_memory(err, errlen);
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < shard->n_in_flight; i++) {
        const mr_checkpoint_in_flight *f = &shard->in_flight[i];
        cJSON *one = cJSON_CreateObject(), *tokens = NULL;
        rc = attach(array, NULL, one, err, errlen);
        if (rc == MR_CHECKPOINT_OK)
            rc = number_to_json(one, "line", F_U64, &f->line, where, err, errlen);
        if (rc == MR_CHECKPOINT_OK && f->choice)
            rc = number_to_json(one, "choice", F_U32, &f->choice, where, err, errlen);
        if (rc == MR_CHECKPOINT_OK)
            rc = attach(one, "tokens", tokens = cJSON_CreateArray(), err, errlen);
        for (size_t t = 0; rc == MR_CHECKPOINT_OK && t < f->n_tokens; t++)
            rc = attach(tokens, NULL, cJSON_CreateNumber(f->tokens[t]), err, errlen);
    }
    return rc;
}

static int shards_to_json(cJSON *root, const mr_checkpoint_state *s, char *err, size_t errlen)
{
    int rc = records_to_json(root, "shards", s->shards, s->n_shards, sizeof *s->shards,
                             SHARD_FIELDS, COUNT(SHARD_FIELDS), err, errlen);
    cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "shards");
    obj = obj ? obj->child : NULL;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < s->n_shards; i++, obj = obj->next) {
        char where[96];
        snprintf(where, sizeof where, "shards[%zu].in_flight", i);
        rc = in_flight_to_json(obj, &s->shards[i], where, err, errlen);
    }
    return rc;
}

/* One in_flight entry; its (line, choice) must come after the entry
 * before it, `before` (the list is in that order, so no generation is in it
 * twice), and its line below the shard's next_line. */
static int in_flight_from_json(const cJSON *obj, mr_checkpoint_in_flight *f,
                               const mr_checkpoint_in_flight *before, uint64_t next_line,
                               const char *where, char *err, size_t errlen)
{
    const cJSON *line = cJSON_GetObjectItemCaseSensitive(obj, "line");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(obj, "choice");
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(obj, "tokens");
    if (!cJSON_IsNumber(line) || !set_number(F_U64, line->valuedouble, &f->line))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL, "%s.line is not %s", where,
                                  type_what(F_U64));
    if (choice && (!cJSON_IsNumber(choice) || !set_number(F_U32, choice->valuedouble, &f->choice)))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL, "%s.choice is not %s",
                                  where, type_what(F_U32));
    bool after = !before || f->line > before->line ||
                 (f->line == before->line && f->choice > before->choice);
    if (!after || f->line == 0 || f->line >= next_line)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s (line %llu, choice %u) is not after the entry before it, "
                                  "or its line is not below the shard's next_line %llu",
                                  where, (unsigned long long)f->line, (unsigned)f->choice,
                                  (unsigned long long)next_line);
    if (!cJSON_IsArray(tokens))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "%s.tokens is missing or not an array", where);
    size_t n = (size_t)cJSON_GetArraySize(tokens), t = 0;
    if (n && !(f->tokens = malloc(n * sizeof *f->tokens)))
        return out_of_memory(err, errlen);
    f->n_tokens = n;
    for (const cJSON *x = tokens->child; x; x = x->next, t++) {
        uint32_t id;
        if (!cJSON_IsNumber(x) || !set_number(F_U32, x->valuedouble, &id) || id > INT32_MAX)
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "%s.tokens[%zu] is not a token id from 0 to 2147483647",
                                      where, t);
        f->tokens[t] = (int32_t)id;
    }
    return MR_CHECKPOINT_OK;
}

static int shards_from_json(const cJSON *root, mr_checkpoint_state *s, char *err, size_t errlen)
{
    int rc = records_from_json(root, "shards", (void **)&s->shards, &s->n_shards,
                               sizeof *s->shards, SHARD_FIELDS, COUNT(SHARD_FIELDS), err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = check_shards(s, err, errlen);
    const cJSON *obj = rc == MR_CHECKPOINT_OK ? cJSON_GetObjectItemCaseSensitive(root, "shards")
                                              : NULL;
    obj = obj ? obj->child : NULL;
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < s->n_shards; i++, obj = obj->next) {
        mr_checkpoint_shard *shard = &s->shards[i];
        const cJSON *array = cJSON_GetObjectItemCaseSensitive(obj, "in_flight");
        char where[96];
        snprintf(where, sizeof where, "shards[%zu].in_flight", i);
        if (!cJSON_IsArray(array))
            return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                      "%s is missing or not an array", where);
        size_t n = (size_t)cJSON_GetArraySize(array), k = 0;
        if (n && !(shard->in_flight = calloc(n, sizeof *shard->in_flight)))
            return out_of_memory(err, errlen);
        shard->n_in_flight = n;
        for (const cJSON *one = array->child; rc == MR_CHECKPOINT_OK && one; one = one->next) {
            char at[128];
            snprintf(at, sizeof at, "%s[%zu]", where, k);
            rc = in_flight_from_json(one, &shard->in_flight[k], k ? &shard->in_flight[k - 1] : NULL,
                                     shard->next_line, at, err, errlen);
            k++;
        }
    }
    return rc;
}

int mr_checkpoint_state_init(mr_checkpoint_state *state, size_t n_shards, char *err,
                             size_t errlen)
{
    memset(state, 0, sizeof *state);
    if (n_shards > UINT32_MAX)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL, "%zu shards are too many",
                                  n_shards);
    if (n_shards && !(state->shards = calloc(n_shards, sizeof *state->shards)))
        return out_of_memory(err, errlen);
    state->n_shards = n_shards;
    for (size_t i = 0; i < n_shards; i++)
        state->shards[i].index = (uint32_t)i;
    return MR_CHECKPOINT_OK;
}

void mr_checkpoint_in_flight_free(mr_checkpoint_shard *shard)
{
    for (size_t i = 0; i < shard->n_in_flight; i++)
        free(shard->in_flight[i].tokens);
    free(shard->in_flight);
    shard->in_flight = NULL;
    shard->n_in_flight = 0;
}

void mr_checkpoint_state_free(mr_checkpoint_state *state)
{
    mr_checkpoint_fingerprint_free(&state->fingerprint);
    for (size_t i = 0; state->shards && i < state->n_shards; i++)
        mr_checkpoint_in_flight_free(&state->shards[i]);
    free(state->shards);
    free(state->placement.phy2log);
    free(state->window.sum);
    memset(state, 0, sizeof *state);
}

/* A copy of a [rows][cols] matrix; rows 0 copies nothing. */
static int copy_rows(void **to, const void *from, int rows, int cols, size_t size, char *err,
                     size_t errlen)
{
    size_t bytes = (size_t)rows * (size_t)cols * size;
    void *copy = NULL;
    if (rows < 0 || cols < 0)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "a %d x %d matrix has a negative size", rows, cols);
    if (bytes && !(copy = malloc(bytes)))
        return out_of_memory(err, errlen);
    if (bytes)
        memcpy(copy, from, bytes);
    free(*to);
    *to = copy;
    return MR_CHECKPOINT_OK;
}

int mr_checkpoint_set_placement(mr_checkpoint_state *state, int n_layers, int n_logical,
                                int n_physical, int n_ranks, const int32_t *phy2log,
                                char *err, size_t errlen)
{
    mr_checkpoint_placement p = {n_layers, n_logical, n_physical, n_ranks, (int32_t *)phy2log};
    int rc = check_placement(&p, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = copy_rows((void **)&state->placement.phy2log, phy2log, n_layers, n_physical,
                       sizeof *phy2log, err, errlen);
    if (rc == MR_CHECKPOINT_OK) {
        p.phy2log = state->placement.phy2log;
        state->placement = p;
    }
    return rc;
}

int mr_checkpoint_set_window(mr_checkpoint_state *state, int n_layers, int n_experts,
                             uint64_t steps, const uint64_t *sum, char *err, size_t errlen)
{
    int rc = copy_rows((void **)&state->window.sum, sum, n_layers, n_experts, sizeof *sum, err,
                       errlen);
    if (rc == MR_CHECKPOINT_OK)
        state->window = (mr_checkpoint_window){n_layers, n_experts, steps, state->window.sum};
    return rc;
}

static int build(cJSON *root, const mr_checkpoint_state *s, char *err, size_t errlen)
{
    const mr_checkpoint_fingerprint *fp = &s->fingerprint;
    cJSON *fpj = NULL, *pj = NULL, *wj = NULL, *cj = NULL;
    int rc = fields_to_json(root, s, STATE_FIELDS, COUNT(STATE_FIELDS), "", err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = object_to_json(root, "fingerprint", &fpj, fp, FINGERPRINT_FIELDS,
                            COUNT(FINGERPRINT_FIELDS), err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = inputs_to_json(fpj, fp, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = shards_to_json(root, s, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = object_to_json(root, "placement", &pj, &s->placement, PLACEMENT_FIELDS,
                            COUNT(PLACEMENT_FIELDS), err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = rows_to_json(pj, "phy2log", s->placement.phy2log, F_INT, s->placement.n_layers,
                          s->placement.n_physical, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = object_to_json(root, "window", &wj, &s->window, WINDOW_FIELDS,
                            COUNT(WINDOW_FIELDS), err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = rows_to_json(wj, "sum", s->window.sum, F_U64, s->window.n_layers,
                          s->window.n_experts, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = object_to_json(root, "counters", &cj, &s->counters, COUNTER_FIELDS,
                            COUNT(COUNTER_FIELDS), err, errlen);
    return rc;
}

_Static_assert(sizeof(int) == sizeof(int32_t), "phy2log is read and written as int");

int mr_checkpoint_state_to_json(const mr_checkpoint_state *state, char **json, size_t *len,
                                char *err, size_t errlen)
{
    *json = NULL;
    *len = 0;
    cJSON *root = cJSON_CreateObject();
    int rc = root ? build(root, state, err, errlen) : out_of_memory(err, errlen);
    if (rc == MR_CHECKPOINT_OK && !(*json = cJSON_PrintUnformatted(root)))
        rc = out_of_memory(err, errlen);
    if (*json)
        *len = strlen(*json);
    cJSON_Delete(root);
    return rc;
}

static int parse(const cJSON *root, mr_checkpoint_state *s, char *err, size_t errlen)
{
    mr_checkpoint_fingerprint *fp = &s->fingerprint;
    const cJSON *fpj = cJSON_GetObjectItemCaseSensitive(root, "fingerprint");
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(root, "placement");
    const cJSON *wj = cJSON_GetObjectItemCaseSensitive(root, "window");
    int rc = fields_from_json(root, s, STATE_FIELDS, COUNT(STATE_FIELDS), "", err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = fields_from_json(fpj, fp, FINGERPRINT_FIELDS, COUNT(FINGERPRINT_FIELDS),
                              "fingerprint", err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = inputs_from_json(fpj, fp, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = check_inputs(fp, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = shards_from_json(root, s, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = fields_from_json(pj, &s->placement, PLACEMENT_FIELDS, COUNT(PLACEMENT_FIELDS),
                              "placement", err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = rows_from_json(pj, "placement", "phy2log", F_INT, s->placement.n_layers,
                            s->placement.n_physical, (void **)&s->placement.phy2log, err,
                            errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = check_placement(&s->placement, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = fields_from_json(wj, &s->window, WINDOW_FIELDS, COUNT(WINDOW_FIELDS), "window",
                              err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = rows_from_json(wj, "window", "sum", F_U64, s->window.n_layers,
                            s->window.n_experts, (void **)&s->window.sum, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = fields_from_json(cJSON_GetObjectItemCaseSensitive(root, "counters"), &s->counters,
                              COUNTER_FIELDS, COUNT(COUNTER_FIELDS), "counters", err, errlen);
    return rc;
}

int mr_checkpoint_state_from_json(mr_checkpoint_state *state, const char *json, size_t len,
                                  char *err, size_t errlen)
{
    memset(state, 0, sizeof *state);
    cJSON *root = cJSON_ParseWithLength(json, len);
    int rc = cJSON_IsObject(root) ? parse(root, state, err, errlen)
                                  : mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                                       "the payload is not a JSON object");
    cJSON_Delete(root);
    if (rc != MR_CHECKPOINT_OK)
        mr_checkpoint_state_free(state);
    return rc;
}
