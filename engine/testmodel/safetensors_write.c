/*
 * Writing one safetensors file.  The data goes from the caller's buffers
 * straight to write(2): a checkpoint of several GB is never copied.  The
 * file appears under its name only once complete and synced (temporary file,
 * fsync, rename), so a reader never sees half of one.
 *
 * Tensors are laid out widest element first, which keeps every tensor's
 * offset a multiple of its element size, as the official writer does; with
 * the header padded to a multiple of 8 bytes the data of each tensor is then
 * aligned in a mapping of the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/testmodel/testmodel.h"
#include "engine/weights_internal.h"

#define MAX_EXACT 9007199254740992.0 /* 2^53: header numbers are doubles */
#define WRITE_CHUNK ((size_t)1 << 30) /* Linux writes at most ~2 GB per call */

typedef struct {
    size_t index;
    size_t elem_size;
    uint64_t bytes;
} layout_entry;

static int widest_first(const void *a, const void *b)
{
    const layout_entry *x = a, *y = b;
    if (x->elem_size != y->elem_size)
        return x->elem_size > y->elem_size ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_spec(const mr_tensor_spec *t, const char *path, layout_entry *entry,
                      char *err, size_t errlen)
{
    const mr_st_dtype *dtype = mr_st_dtype_by_type(t->type);
    if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0) {
        snprintf(err, errlen, "%s: tensor %zu has no usable name", path, entry->index);
        return MR_ENGINE_EINVAL;
    }
    if (!dtype || t->ndim < 0 || t->ndim > MR_ST_MAX_DIMS) {
        snprintf(err, errlen, "%s: tensor \"%s\": bad type or rank %d", path, t->name, t->ndim);
        return MR_ENGINE_EINVAL;
    }
    uint64_t bytes = dtype->size;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim = (uint64_t)t->shape[d];
        if (t->shape[d] < 0 || (dim && bytes > (uint64_t)MAX_EXACT / dim)) {
            snprintf(err, errlen, "%s: tensor \"%s\": dimension %d (%lld) out of range", path,
                     t->name, d, (long long)t->shape[d]);
            return MR_ENGINE_EINVAL;
        }
        bytes *= dim;
    }
    if (bytes && !t->data) {
        snprintf(err, errlen, "%s: tensor \"%s\" has no data", path, t->name);
        return MR_ENGINE_EINVAL;
    }
    entry->elem_size = dtype->size;
    entry->bytes = bytes;
    return MR_ENGINE_OK;
}

/* Two tensors of one name would make a header no reader can trust. */
static int check_unique_names(const mr_tensor_spec *tensors, size_t count, const char *path,
                              char *err, size_t errlen)
{
    const char **names = malloc((count ? count : 1) * sizeof *names);
    if (!names) {
        snprintf(err, errlen, "%s: out of memory", path);
        return MR_ENGINE_ENOMEM;
    }
    for (size_t i = 0; i < count; i++)
        names[i] = tensors[i].name;
    qsort(names, count, sizeof *names, by_name);
    int rc = MR_ENGINE_OK;
    for (size_t i = 1; i < count && rc == MR_ENGINE_OK; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            snprintf(err, errlen, "%s: tensor \"%s\" given twice", path, names[i]);
            rc = MR_ENGINE_EINVAL;
        }
    }
    free(names);
    return rc;
}

static cJSON *tensor_entry(const mr_tensor_spec *t, uint64_t begin, uint64_t end)
{
    cJSON *entry = cJSON_CreateObject();
    cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
    cJSON *offsets = cJSON_AddArrayToObject(entry, "data_offsets");
    bool ok = shape && offsets &&
              cJSON_AddStringToObject(entry, "dtype", mr_st_dtype_by_type(t->type)->name);
    for (int d = 0; ok && d < t->ndim; d++)
        ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
    ok = ok && cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)begin)) &&
         cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)end));
    if (ok)
        return entry;
    cJSON_Delete(entry);
    return NULL;
}

/* The header text, padded with spaces to a multiple of 8 bytes. */
static char *format_header(const mr_tensor_spec *tensors, const layout_entry *layout,
                           size_t count, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *metadata = cJSON_AddObjectToObject(root, "__metadata__");
    /* transformers refuses a checkpoint whose metadata lacks the format. */
    bool ok = metadata && cJSON_AddStringToObject(metadata, "format", "pt");
    uint64_t offset = 0;
    for (size_t i = 0; ok && i < count; i++) {
        const mr_tensor_spec *t = &tensors[layout[i].index];
        cJSON *entry = tensor_entry(t, offset, offset + layout[i].bytes);
        ok = entry && cJSON_AddItemToObject(root, t->name, entry);
        if (!ok)
            cJSON_Delete(entry);
        offset += layout[i].bytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return NULL;
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    *len = padded;
    return out;
}

static bool write_all(int fd, const void *data, uint64_t len)
{
    const char *p = data;
    while (len > 0) {
        size_t chunk = len < WRITE_CHUNK ? (size_t)len : WRITE_CHUNK;
        ssize_t n = write(fd, p, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            errno = EIO;
        if (n <= 0)
            return false;
        p += n;
        len -= (uint64_t)n;
    }
    return true;
}

static bool write_contents(int fd, const char *header, size_t header_len,
                           const mr_tensor_spec *tensors, const layout_entry *layout,
                           size_t count)
{
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    bool ok = write_all(fd, len_bytes, sizeof len_bytes) && write_all(fd, header, header_len);
    for (size_t i = 0; ok && i < count; i++)
        ok = write_all(fd, tensors[layout[i].index].data, layout[i].bytes);
    return ok;
}

/* The rename is durable only once the folder holding it is synced. */
static void sync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

static int write_file(const char *path, const char *header, size_t header_len,
                      const mr_tensor_spec *tensors, const layout_entry *layout, size_t count,
                      char *err, size_t errlen)
{
    size_t tmp_len = strlen(path) + sizeof ".tmp-XXXXXX";
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        snprintf(err, errlen, "%s: out of memory", path);
        return MR_ENGINE_ENOMEM;
    }
    snprintf(tmp, tmp_len, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return MR_ENGINE_EIO;
    }
    int failure = 0;
    if (fchmod(fd, 0644) != 0 || !write_contents(fd, header, header_len, tensors, layout, count) ||
        fsync(fd) != 0)
        failure = errno ? errno : EIO;
    if (close(fd) != 0 && !failure)
        failure = errno;
    if (!failure && rename(tmp, path) != 0)
        failure = errno;
    if (failure) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(failure));
        unlink(tmp);
        free(tmp);
        return MR_ENGINE_EIO;
    }
    free(tmp);
    sync_parent(path);
    return MR_ENGINE_OK;
}

int mr_safetensors_write(const char *path, const mr_tensor_spec *tensors, size_t count,
                         char *err, size_t errlen)
{
    layout_entry *layout = malloc((count ? count : 1) * sizeof *layout);
    if (!layout) {
        snprintf(err, errlen, "%s: out of memory", path);
        return MR_ENGINE_ENOMEM;
    }
    int rc = MR_ENGINE_OK;
    uint64_t total = 0;
    for (size_t i = 0; i < count && rc == MR_ENGINE_OK; i++) {
        layout[i].index = i;
        rc = check_spec(&tensors[i], path, &layout[i], err, errlen);
        total += rc == MR_ENGINE_OK ? layout[i].bytes : 0;
        if (rc == MR_ENGINE_OK && total > (uint64_t)MAX_EXACT) {
            snprintf(err, errlen, "%s: more than 2^53 bytes of tensors", path);
            rc = MR_ENGINE_EINVAL;
        }
    }
    if (rc == MR_ENGINE_OK)
        rc = check_unique_names(tensors, count, path, err, errlen);
    size_t header_len = 0;
    char *header = NULL;
    if (rc == MR_ENGINE_OK) {
        qsort(layout, count, sizeof *layout, widest_first);
        header = format_header(tensors, layout, count, &header_len);
        if (!header) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = MR_ENGINE_ENOMEM;
        }
    }
    if (rc == MR_ENGINE_OK)
        rc = write_file(path, header, header_len, tensors, layout, count, err, errlen);
    free(header);
    free(layout);
    return rc;
}
