/*
 * Safetensors weights, mmapped read-only.  A file is an 8-byte
 * little-endian header length, a JSON header naming each tensor's dtype,
 * shape and [begin, end) offsets into the data area, then the data area.
 *
 * Every header is checked in full at open, against the file size fstat
 * gave: a reference past the end of a mapping would be a SIGBUS on first
 * touch, long after the load said all was well.  The dtype is only judged
 * when a tensor is asked for, so a checkpoint carrying some tensor the
 * engine never reads (an I64 buffer, say) still loads.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/grow.h"
#include "engine/weights_internal.h"

#define SINGLE_FILE "model.safetensors"
#define INDEX_FILE "model.safetensors.index.json"
#define INDEX_MAX_BYTES (256u << 20)
#define MAX_EXACT 9007199254740992.0 /* 2^53: cJSON numbers are doubles */
#define SHAPE_TEXT 96

/* ---- dtypes ---- */

static const mr_st_dtype dtypes[] = {
    {"F32", 4, true, MR_TENSOR_F32},      {"BF16", 2, true, MR_TENSOR_BF16},
    {"F64", 8, false, MR_TENSOR_F32},     {"F16", 2, true, MR_TENSOR_F16},
    /* with its weight_scale_inv beside it only (mr_weights_get) */
    {"F8_E4M3", 1, true, MR_TENSOR_F8_BLOCKS}, {"F8_E5M2", 1, false, MR_TENSOR_F32},
    {"F8_E8M0", 1, false, MR_TENSOR_F32}, {"I64", 8, false, MR_TENSOR_F32},
    {"I32", 4, false, MR_TENSOR_F32},     {"I16", 2, false, MR_TENSOR_F32},
    {"I8", 1, false, MR_TENSOR_F32},      {"U64", 8, false, MR_TENSOR_F32},
    {"U32", 4, false, MR_TENSOR_F32},     {"U16", 2, false, MR_TENSOR_F32},
    {"U8", 1, false, MR_TENSOR_F32},      {"BOOL", 1, false, MR_TENSOR_F32},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const mr_st_dtype *mr_st_dtype_by_name(const char *name)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return &dtypes[i];
    return NULL;
}

const mr_st_dtype *mr_st_dtype_by_type(mr_tensor_type type)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].supported && dtypes[i].type == type)
            return &dtypes[i];
    return NULL;
}

/* ---- the weights ---- */

typedef struct {
    char *path;
    const unsigned char *map; /* the whole file */
    size_t size;
    size_t data_start; /* 8 + header length */
} st_file;

typedef struct {
    char *name;
    const mr_st_dtype *dtype;
    size_t file;
    int ndim;
    int64_t shape[MR_ST_MAX_DIMS];
    uint64_t begin, end; /* within the data area */
} st_tensor;

struct mr_weights {
    bool synthetic; /* no files: see mr_weights_synthetic */
    mr_tensor_type synthetic_type;
    uint64_t seed;
    char *source; /* where a tensor is looked up: the single file or the index */
    st_file *files;
    size_t n_files, files_cap;
    st_tensor *tensors;
    size_t n_tensors, tensors_cap;
    size_t *slots; /* open addressing: tensor index + 1, 0 when empty */
    size_t slot_mask;
};

/* Errors while opening: every message starts with the file at fault. */
typedef struct {
    char *err;
    size_t errlen;
} errbuf;

static int fail_nomem(errbuf *e, const char *path)
{
    snprintf(e->err, e->errlen, "%s: out of memory", path);
    return MR_ENGINE_ENOMEM;
}

static void format_shape(char *out, size_t outlen, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(out, outlen, "[");
    for (int i = 0; i < ndim && n < outlen; i++)
        n += (size_t)snprintf(out + n, outlen - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < outlen)
        snprintf(out + n, outlen - n, "]");
}

/* ---- one file: map it, read its header ---- */

static char *join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "%s/%s", dir, name);
    return path;
}

static int map_file(st_file *f, errbuf *e)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(e->err, e->errlen, "%s: cannot open: %s", f->path, strerror(errno));
        return MR_ENGINE_EIO;
    }
    struct stat st;
    int rc = MR_ENGINE_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(e->err, e->errlen, "%s: not a regular file", f->path);
        rc = MR_ENGINE_EIO;
    } else if (st.st_size < 8) {
        snprintf(e->err, e->errlen,
                 "%s: truncated: %lld bytes, shorter than the 8-byte header length",
                 f->path, (long long)st.st_size);
        rc = MR_ENGINE_EINVAL;
    } else {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            snprintf(e->err, e->errlen, "%s: mmap failed: %s", f->path, strerror(errno));
            rc = MR_ENGINE_EIO;
        } else {
            f->map = map;
            f->size = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

/* A JSON number that is a whole, non-negative and exact value. */
static bool count_value(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= MAX_EXACT) || v != (double)(uint64_t)v)
        return false;
    *out = (uint64_t)v;
    return true;
}

static bool read_shape(const cJSON *shape, st_tensor *t)
{
    int n = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
    if (n < 0 || n > MR_ST_MAX_DIMS)
        return false;
    t->ndim = n;
    for (int i = 0; i < n; i++) {
        uint64_t dim;
        if (!count_value(cJSON_GetArrayItem(shape, i), &dim))
            return false;
        t->shape[i] = (int64_t)dim;
    }
    return true;
}

static bool read_offsets(const cJSON *offsets, st_tensor *t)
{
    return cJSON_IsArray(offsets) && cJSON_GetArraySize(offsets) == 2 &&
           count_value(cJSON_GetArrayItem(offsets, 0), &t->begin) &&
           count_value(cJSON_GetArrayItem(offsets, 1), &t->end) && t->begin <= t->end;
}

/* Bytes the shape needs; false when that does not fit in 64 bits. */
static bool shape_bytes(const st_tensor *t, uint64_t *bytes)
{
    uint64_t total = t->dtype->size;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t dim = (uint64_t)t->shape[i];
        if (dim && total > UINT64_MAX / dim)
            return false;
        total *= dim;
    }
    *bytes = total;
    return true;
}

static int read_tensor(const cJSON *entry, const st_file *f, st_tensor *t, errbuf *e)
{
    const char *name = entry->string;
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    uint64_t data_len = f->size - f->data_start, bytes;
    char shape[SHAPE_TEXT];
    if (!cJSON_IsObject(entry)) {
        snprintf(e->err, e->errlen, "%s: tensor \"%.200s\": header entry is %s, not an object",
                 f->path, name, mr_json_kind(entry));
    } else if (!cJSON_IsString(dtype)) {
        snprintf(e->err, e->errlen, "%s: tensor \"%.200s\": \"dtype\" missing or not a string",
                 f->path, name);
    } else if (!(t->dtype = mr_st_dtype_by_name(dtype->valuestring))) {
        snprintf(e->err, e->errlen, "%s: tensor \"%.200s\": unknown dtype \"%.32s\"", f->path,
                 name, dtype->valuestring);
    } else if (!read_shape(cJSON_GetObjectItemCaseSensitive(entry, "shape"), t)) {
        snprintf(e->err, e->errlen,
                 "%s: tensor \"%.200s\": \"shape\" must be a list of at most %d sizes >= 0",
                 f->path, name, MR_ST_MAX_DIMS);
    } else if (!read_offsets(cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"), t)) {
        snprintf(e->err, e->errlen,
                 "%s: tensor \"%.200s\": \"data_offsets\" must be [begin, end] with begin <= end",
                 f->path, name);
    } else if (t->end > data_len) {
        snprintf(e->err, e->errlen,
                 "%s: tensor \"%.200s\": data_offsets [%llu, %llu] run past the end of the "
                 "data (%llu bytes): the file is truncated or its header is wrong",
                 f->path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                 (unsigned long long)data_len);
    } else if (!shape_bytes(t, &bytes) || bytes != t->end - t->begin) {
        format_shape(shape, sizeof shape, t->ndim, t->shape);
        snprintf(e->err, e->errlen,
                 "%s: tensor \"%.200s\": data_offsets [%llu, %llu] hold %llu bytes, but shape "
                 "%s of %s needs %s bytes",
                 f->path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                 (unsigned long long)(t->end - t->begin), shape, t->dtype->name,
                 shape_bytes(t, &bytes) ? "a different number of" : "more than 2^64");
    } else {
        t->name = strdup(name);
        return t->name ? MR_ENGINE_OK : fail_nomem(e, f->path);
    }
    return MR_ENGINE_EINVAL;
}

typedef struct {
    uint64_t begin, end;
    size_t tensor;
} byte_range;

static int by_begin(const void *a, const void *b)
{
    const byte_range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Tensors first..n_tensors-1 are the file's; no two may share a byte. */
static int check_overlaps(const mr_weights *w, const st_file *f, size_t first, errbuf *e)
{
    size_t n = w->n_tensors - first;
    byte_range *ranges = malloc((n ? n : 1) * sizeof *ranges);
    if (!ranges)
        return fail_nomem(e, f->path);
    size_t used = 0;
    for (size_t i = first; i < w->n_tensors; i++)
        if (w->tensors[i].end > w->tensors[i].begin)
            ranges[used++] = (byte_range){w->tensors[i].begin, w->tensors[i].end, i};
    qsort(ranges, used, sizeof *ranges, by_begin);
    int rc = MR_ENGINE_OK;
    for (size_t i = 1; i < used && rc == MR_ENGINE_OK; i++) {
        if (ranges[i].begin >= ranges[i - 1].end)
            continue;
        snprintf(e->err, e->errlen,
                 "%s: tensors \"%.200s\" and \"%.200s\" overlap (bytes %llu-%llu and %llu-%llu)",
                 f->path, w->tensors[ranges[i - 1].tensor].name, w->tensors[ranges[i].tensor].name,
                 (unsigned long long)ranges[i - 1].begin, (unsigned long long)ranges[i - 1].end,
                 (unsigned long long)ranges[i].begin, (unsigned long long)ranges[i].end);
        rc = MR_ENGINE_EINVAL;
    }
    free(ranges);
    return rc;
}

static int read_entries(mr_weights *w, size_t file, const cJSON *header, errbuf *e)
{
    const st_file *f = &w->files[file];
    const cJSON *entry;
    cJSON_ArrayForEach(entry, header) {
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (cJSON_IsObject(entry))
                continue;
            snprintf(e->err, e->errlen, "%s: \"__metadata__\" must be an object", f->path);
            return MR_ENGINE_EINVAL;
        }
        if (!mr_grow((void **)&w->tensors, &w->tensors_cap, w->n_tensors + 1, sizeof *w->tensors))
            return fail_nomem(e, f->path);
        st_tensor *t = &w->tensors[w->n_tensors];
        memset(t, 0, sizeof *t);
        t->file = file;
        int rc = read_tensor(entry, f, t, e);
        if (rc != MR_ENGINE_OK)
            return rc;
        w->n_tensors++;
    }
    return MR_ENGINE_OK;
}

static int read_header(mr_weights *w, size_t file, errbuf *e)
{
    st_file *f = &w->files[file];
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | f->map[i];
    if (header_len > f->size - 8 || header_len > MR_ST_MAX_HEADER) {
        snprintf(e->err, e->errlen,
                 "%s: header length %llu exceeds the file (%zu bytes) or the format's %u-byte "
                 "limit: truncated, or not a safetensors file",
                 f->path, (unsigned long long)header_len, f->size, MR_ST_MAX_HEADER);
        return MR_ENGINE_EINVAL;
    }
    f->data_start = 8 + (size_t)header_len;
    cJSON *header = cJSON_ParseWithLength((const char *)f->map + 8, (size_t)header_len);
    if (!cJSON_IsObject(header)) {
        cJSON_Delete(header);
        snprintf(e->err, e->errlen, "%s: the header is not a valid JSON object", f->path);
        return MR_ENGINE_EINVAL;
    }
    size_t first = w->n_tensors;
    int rc = read_entries(w, file, header, e);
    cJSON_Delete(header);
    return rc == MR_ENGINE_OK ? check_overlaps(w, f, first, e) : rc;
}

static int add_file(mr_weights *w, const char *dir, const char *name, errbuf *e)
{
    if (!mr_grow((void **)&w->files, &w->files_cap, w->n_files + 1, sizeof *w->files))
        return fail_nomem(e, name);
    st_file *f = &w->files[w->n_files];
    memset(f, 0, sizeof *f);
    f->path = join(dir, name);
    if (!f->path)
        return fail_nomem(e, name);
    w->n_files++;
    int rc = map_file(f, e);
    return rc == MR_ENGINE_OK ? read_header(w, w->n_files - 1, e) : rc;
}

/* ---- lookup by name ---- */

static uint64_t name_hash(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return h;
}

/* The slot holding `name`, or the empty slot where it would go. */
static size_t *find_slot(const mr_weights *w, const char *name)
{
    for (size_t i = (size_t)name_hash(name) & w->slot_mask;; i = (i + 1) & w->slot_mask) {
        size_t *slot = &w->slots[i];
        if (!*slot || strcmp(w->tensors[*slot - 1].name, name) == 0)
            return slot;
    }
}

static int build_table(mr_weights *w, errbuf *e)
{
    size_t n_slots = 16;
    while (n_slots < 2 * w->n_tensors)
        n_slots *= 2;
    w->slots = calloc(n_slots, sizeof *w->slots);
    if (!w->slots)
        return fail_nomem(e, w->source);
    w->slot_mask = n_slots - 1;
    for (size_t i = 0; i < w->n_tensors; i++) {
        size_t *slot = find_slot(w, w->tensors[i].name);
        if (*slot) {
            const st_tensor *first = &w->tensors[*slot - 1];
            snprintf(e->err, e->errlen, "%s: tensor \"%.200s\" appears twice (also in %s)",
                     w->files[w->tensors[i].file].path, first->name, w->files[first->file].path);
            return MR_ENGINE_EINVAL;
        }
        *slot = i + 1;
    }
    return MR_ENGINE_OK;
}

static const st_tensor *find_tensor(const mr_weights *w, const char *name)
{
    size_t slot = *find_slot(w, name);
    return slot ? &w->tensors[slot - 1] : NULL;
}

/* ---- sharded checkpoints ---- */

/* The file of the shard named `shard`, opening it on first mention.  Shard
 * names are plain file names: one with a slash could reach outside the
 * model folder. */
static int shard_file(mr_weights *w, const char *dir, const char *shard, size_t *file,
                      errbuf *e)
{
    size_t dir_len = strlen(dir);
    for (size_t i = 0; i < w->n_files; i++) {
        if (strcmp(w->files[i].path + dir_len + 1, shard) == 0) {
            *file = i;
            return MR_ENGINE_OK;
        }
    }
    if (!*shard || strchr(shard, '/') || strcmp(shard, ".") == 0 || strcmp(shard, "..") == 0) {
        snprintf(e->err, e->errlen, "%s: \"weight_map\" names \"%.200s\", not a file name",
                 w->source, shard);
        return MR_ENGINE_EINVAL;
    }
    *file = w->n_files;
    int rc = add_file(w, dir, shard, e);
    size_t used = strlen(e->err);
    if (rc != MR_ENGINE_OK && used < e->errlen)
        snprintf(e->err + used, e->errlen - used, " (a shard %s lists)", w->source);
    return rc;
}

static const cJSON *weight_map(const cJSON *index, errbuf *e, const char *path)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    if (!cJSON_IsObject(map)) {
        snprintf(e->err, e->errlen, "%s: \"weight_map\" missing or not an object", path);
        return NULL;
    }
    const cJSON *entry;
    cJSON_ArrayForEach(entry, map) {
        if (!cJSON_IsString(entry)) {
            snprintf(e->err, e->errlen, "%s: \"weight_map\" entry \"%.200s\" is %s, not a file name",
                     path, entry->string, mr_json_kind(entry));
            return NULL;
        }
    }
    return map;
}

/* Every tensor the index names must be in the shard it names. */
static int check_index(const mr_weights *w, const cJSON *map, const char *dir, errbuf *e)
{
    size_t dir_len = strlen(dir);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, map) {
        const st_tensor *t = find_tensor(w, entry->string);
        if (t && strcmp(w->files[t->file].path + dir_len + 1, entry->valuestring) == 0)
            continue;
        snprintf(e->err, e->errlen, "%s: tensor \"%.200s\" is mapped to %s, which does not hold it",
                 w->source, entry->string, entry->valuestring);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

static int open_sharded(mr_weights *w, const char *dir, errbuf *e)
{
    cJSON *index;
    int rc = mr_json_file_load(w->source, INDEX_MAX_BYTES, &index, e->err, e->errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    const cJSON *map = weight_map(index, e, w->source);
    rc = map ? MR_ENGINE_OK : MR_ENGINE_EINVAL;
    const cJSON *entry;
    for (entry = map ? map->child : NULL; entry && rc == MR_ENGINE_OK; entry = entry->next) {
        size_t file;
        rc = shard_file(w, dir, entry->valuestring, &file, e);
    }
    if (rc == MR_ENGINE_OK)
        rc = build_table(w, e);
    if (rc == MR_ENGINE_OK)
        rc = check_index(w, map, dir, e);
    cJSON_Delete(index);
    return rc;
}

static int open_single(mr_weights *w, const char *dir, errbuf *e)
{
    int rc = add_file(w, dir, SINGLE_FILE, e);
    return rc == MR_ENGINE_OK ? build_table(w, e) : rc;
}

int mr_weights_open(const char *model_dir, mr_weights **out, char *err, size_t errlen)
{
    errbuf e = {err, errlen};
    *out = NULL;
    mr_weights *w = calloc(1, sizeof *w);
    char *index = join(model_dir, INDEX_FILE);
    if (!w || !index) {
        free(w);
        free(index);
        return fail_nomem(&e, model_dir);
    }
    struct stat st;
    bool sharded = stat(index, &st) == 0;
    int rc;
    if (sharded) {
        w->source = index;
        rc = open_sharded(w, model_dir, &e);
    } else {
        free(index);
        w->source = join(model_dir, SINGLE_FILE);
        rc = w->source ? open_single(w, model_dir, &e) : fail_nomem(&e, model_dir);
    }
    if (rc != MR_ENGINE_OK) {
        mr_weights_close(w);
        return rc;
    }
    *out = w;
    return MR_ENGINE_OK;
}

void mr_weights_close(mr_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_files; i++) {
        if (w->files[i].map)
            munmap((void *)w->files[i].map, w->files[i].size);
        free(w->files[i].path);
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->files);
    free(w->tensors);
    free(w->slots);
    free(w->source);
    free(w);
}

size_t mr_weights_count(const mr_weights *w)
{
    return w->n_tensors;
}

int mr_weights_synthetic(mr_tensor_type type, uint64_t seed, mr_weights **out, char *err,
                         size_t errlen)
{
    *out = calloc(1, sizeof **out);
    if (!*out) {
        snprintf(err, errlen, "out of memory for synthetic weights");
        return MR_ENGINE_ENOMEM;
    }
    (*out)->synthetic = true;
    (*out)->synthetic_type = type;
    (*out)->seed = seed;
    return MR_ENGINE_OK;
}

/* FNV-1a of the name, mixed with the seed: each tensor its own stream. */
static uint64_t name_seed(const char *name, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    return h;
}

/* Norm weights near 1, projections small enough that activations stay
 * near unit size whatever the width.  DeepSeek-V3's router bias is f32,
 * as its checkpoints keep it (and the engine requires). */
static mr_tensor synthetic_tensor(const mr_weights *w, const char *name, int ndim,
                                  const int64_t *shape)
{
    mr_tensor_type type = strstr(name, "e_score_correction_bias") ? MR_TENSOR_F32
                                                                  : w->synthetic_type;
    const mr_st_dtype *dtype = mr_st_dtype_by_type(type);
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    bool norm = strstr(name, "norm.weight") != NULL;
    float range = ndim == 2 ? 1.7f / sqrtf((float)shape[1]) : 0.1f;
    mr_tensor t = {.name = "(synthetic)",
                   .type = type,
                   .ndim = ndim,
                   .bytes = n * dtype->size,
                   .file = "synthetic weights",
                   .seed = name_seed(name, w->seed),
                   .lo = norm ? 0.9f : -range,
                   .hi = norm ? 1.1f : range};
    memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    return t;
}

/* An FP8 weight's scales: "NAME_scale_inv" beside it (DeepSeek-V3's and
 * Qwen3-FP8's layout), one per 128 x 128 tile, f32 or bf16; the weight's
 * value is e4m3 x scale (transformers' weight_dequant). */
static int block_scales(const mr_weights *w, const char *name, mr_tensor *t, char *err,
                        size_t errlen)
{
    char scale_name[512];
    snprintf(scale_name, sizeof scale_name, "%s_scale_inv", name);
    const st_tensor *s = find_tensor(w, scale_name);
    int64_t want[2] = {(t->shape[0] + MR_F8_BLOCK - 1) / MR_F8_BLOCK,
                       (t->shape[1] + MR_F8_BLOCK - 1) / MR_F8_BLOCK};
    char have[SHAPE_TEXT], need[SHAPE_TEXT];
    format_shape(need, sizeof need, 2, want);
    if (t->ndim != 2) {
        snprintf(err, errlen, "%s: tensor \"%.200s\" is F8_E4M3 with %d dimensions; moerun reads "
                 "FP8 matrices only", t->file, name, t->ndim);
        return MR_ENGINE_EINVAL;
    }
    if (!s) {
        snprintf(err, errlen, "%s: tensor \"%.200s\" is F8_E4M3 without \"%.200s\": moerun reads "
                 "FP8 weights with 128 x 128 block scales (weight_block_size [128, 128])",
                 t->file, name, scale_name);
        return MR_ENGINE_EINVAL;
    }
    format_shape(have, sizeof have, s->ndim, s->shape);
    if (s->ndim != 2 || s->shape[0] != want[0] || s->shape[1] != want[1] ||
        (s->dtype->type != MR_TENSOR_F32 && s->dtype->type != MR_TENSOR_BF16) ||
        !s->dtype->supported) {
        snprintf(err, errlen, "%s: \"%.200s\" is %s %s; the scales of 128 x 128 tiles of "
                 "\"%.200s\" are F32 or BF16 %s", w->files[s->file].path, scale_name,
                 s->dtype->name, have, name, need);
        return MR_ENGINE_EINVAL;
    }
    t->scales = w->files[s->file].map + w->files[s->file].data_start + s->begin;
    t->scales_type = s->dtype->type;
    t->bytes = (size_t)t->shape[0] * mr_tensor_row_bytes(MR_TENSOR_F8_BLOCKS, (int)t->shape[1]);
    return MR_ENGINE_OK;
}

int mr_weights_get(const mr_weights *w, const char *name, int ndim, const int64_t *shape,
                   mr_tensor *out, char *err, size_t errlen)
{
    if (w->synthetic) {
        *out = synthetic_tensor(w, name, ndim, shape);
        return MR_ENGINE_OK;
    }
    const st_tensor *t = find_tensor(w, name);
    if (!t) {
        snprintf(err, errlen, "%s: no tensor \"%.200s\"", w->source, name);
        return MR_ENGINE_EINVAL;
    }
    const st_file *f = &w->files[t->file];
    const unsigned char *data = f->map + f->data_start + t->begin;
    char have[SHAPE_TEXT], want[SHAPE_TEXT];
    if (!t->dtype->supported) {
        snprintf(err, errlen, "%s: tensor \"%.200s\" has unsupported dtype %s (moerun reads BF16, "
                              "F16, F32, and F8_E4M3 with 128 x 128 block scales)",
                 f->path, name, t->dtype->name);
    } else if (ndim != t->ndim || (ndim > 0 && memcmp(shape, t->shape, (size_t)ndim * sizeof *shape) != 0)) {
        format_shape(have, sizeof have, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim < 0 ? 0 : ndim, shape);
        snprintf(err, errlen, "%s: tensor \"%.200s\" has shape %s, expected %s", f->path, name,
                 have, want);
    } else if ((uintptr_t)data % t->dtype->size != 0) {
        snprintf(err, errlen,
                 "%s: tensor \"%.200s\" starts at byte %zu, not a multiple of its %zu-byte "
                 "elements",
                 f->path, name, (size_t)(data - f->map), t->dtype->size);
    } else {
        *out = (mr_tensor){.name = t->name,
                           .data = data,
                           .type = t->dtype->type,
                           .ndim = t->ndim,
                           .bytes = (size_t)(t->end - t->begin),
                           .file = f->path};
        memcpy(out->shape, t->shape, sizeof t->shape);
        return t->dtype->type == MR_TENSOR_F8_BLOCKS ? block_scales(w, name, out, err, errlen)
                                                      : MR_ENGINE_OK;
    }
    return MR_ENGINE_EINVAL;
}

/* The bytes t's values take in its file: FP8's e4m3 codes, one a value,
 * where t->bytes counts the packed rows. */
static size_t file_bytes(const mr_tensor *t)
{
    return t->scales ? (size_t)(t->shape[0] * t->shape[1]) : t->bytes;
}

/* madvise over the whole pages under t's values in the mapping; advice
 * only, so a failure changes nothing but speed or memory. */
static void advise_pages(const mr_tensor *t, int advice)
{
    if (!t->data || !t->bytes)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t at = (uintptr_t)t->data / page * page;
    uintptr_t end = ((uintptr_t)t->data + file_bytes(t) + page - 1) / page * page;
    (void)madvise((void *)at, end - at, advice);
}

/* Where the kernel lacks MADV_POPULATE_READ (before 5.14) the copy faults
 * the pages in one by one, as it always did: slower, same bytes. */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

void mr_tensor_fault_in(const mr_tensor *t)
{
    advise_pages(t, MADV_POPULATE_READ);
}

/* A read-only private file mapping never has pages of its own: this only
 * unmaps, and a later read faults the page cache's page back in. */
void mr_tensor_drop_pages(const mr_tensor *t)
{
    advise_pages(t, MADV_DONTNEED);
}

bool mr_tensor_packed(const mr_tensor *t)
{
    return t->scales != NULL;
}

void mr_tensor_pack(const mr_tensor *t, void *dst)
{
    int64_t rows = t->shape[0], cols = t->shape[1];
    int64_t blocks = (cols + MR_F8_BLOCK - 1) / MR_F8_BLOCK;
    const unsigned char *values = t->data;
    unsigned char *out = dst;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < blocks; b++, out += MR_F8_BLOCK_BYTES) {
            size_t at = (size_t)(r / MR_F8_BLOCK * blocks + b);
            /* the scales may sit at any offset of the file: memcpy */
            float scale;
            if (t->scales_type == MR_TENSOR_BF16) {
                uint16_t half;
                memcpy(&half, (const uint16_t *)t->scales + at, sizeof half);
                scale = mr_bf16_to_f32(half);
            } else {
                memcpy(&scale, (const float *)t->scales + at, sizeof scale);
            }
            memcpy(out, &scale, sizeof scale);
            int64_t n = cols - b * MR_F8_BLOCK < MR_F8_BLOCK ? cols - b * MR_F8_BLOCK : MR_F8_BLOCK;
            memcpy(out + 4, values + r * cols + b * MR_F8_BLOCK, (size_t)n);
            memset(out + 4 + n, 0, (size_t)(MR_F8_BLOCK - n));
        }
}
