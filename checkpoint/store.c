/*
 * Generations on disk: the fixed header, compression, the atomic write,
 * pruning, and loading the newest good generation
 * (docs/checkpoint-format.md has the byte layout and the rules).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "checkpoint/checkpoint_internal.h"

/* The high byte catches 7-bit transfers, the newline text-mode ones. */
static const unsigned char MAGIC[8] = {0x89, 'M', 'R', 'C', 'K', 'P', 'T', '\n'};
#define HEADER_BYTES 56
#define HEADER_CRC_AT 52
#define PREFIX "state-"
#define SUFFIX ".ckpt.zst"
/* No real state comes near this; a header asking for more is damaged. */
#define MAX_PAYLOAD (1ULL << 30)
#define ZSTD_LEVEL 3

typedef struct {
    uint32_t version;
    uint64_t generation;
    uint64_t written_us; /* Unix time in microseconds */
    uint64_t payload_bytes, frame_bytes;
    uint32_t payload_crc;
} header;

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc(const void *data, size_t len)
{
    return (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), data, len);
}

static void header_encode(unsigned char *p, const header *h)
{
    memcpy(p, MAGIC, sizeof MAGIC);
    put32(p + 8, h->version);
    put32(p + 12, 0);
    put64(p + 16, h->generation);
    put64(p + 24, h->written_us);
    put64(p + 32, h->payload_bytes);
    put64(p + 40, h->frame_bytes);
    put32(p + 48, h->payload_crc);
    put32(p + HEADER_CRC_AT, crc(p, HEADER_CRC_AT));
}

/* NULL when the header is sound, else what is wrong with it. */
static const char *header_decode(const unsigned char *p, header *h)
{
    if (memcmp(p, MAGIC, sizeof MAGIC) != 0)
        return "not a moerun checkpoint (bad magic)";
    if (get32(p + HEADER_CRC_AT) != crc(p, HEADER_CRC_AT))
        return "header checksum mismatch";
    *h = (header){get32(p + 8), get64(p + 16), get64(p + 24), get64(p + 32), get64(p + 40),
                  get32(p + 48)};
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------
 * Names
 * ------------------------------------------------------------------------ */
typedef struct {
    uint64_t number;
    char name[64];
} generation;

/* The generation a file name holds: state-<digits>.ckpt.zst, nothing else. */
static bool parse_name(const char *name, uint64_t *number)
{
    size_t len = strlen(name), pre = strlen(PREFIX), suf = strlen(SUFFIX);
    if (len <= pre + suf || len - pre - suf > 19 || strncmp(name, PREFIX, pre) != 0 ||
        strcmp(name + len - suf, SUFFIX) != 0)
        return false;
    *number = 0;
    for (const char *p = name + pre; p < name + len - suf; p++) {
        if (*p < '0' || *p > '9')
            return false;
        *number = *number * 10 + (uint64_t)(*p - '0');
    }
    return true;
}

/* The leftover of an interrupted write: state-....ckpt.zst.tmp. */
static bool is_temporary(const char *name)
{
    size_t len = strlen(name), tmp = strlen(MR_CHECKPOINT_TMP);
    uint64_t number;
    char base[64];
    if (len <= tmp || len - tmp >= sizeof base || strcmp(name + len - tmp, MR_CHECKPOINT_TMP) != 0)
        return false;
    memcpy(base, name, len - tmp);
    base[len - tmp] = '\0';
    return parse_name(base, &number);
}

/* "state-000042" of "state-000042.ckpt.zst", for messages. */
static int stem(const char *name)
{
    return (int)(strlen(name) - strlen(SUFFIX));
}

static int newest_first(const void *a, const void *b)
{
    uint64_t x = ((const generation *)a)->number, y = ((const generation *)b)->number;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The generations in dir, newest first.  A missing dir has none. */
static int list_names(const char *dir, generation **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? MR_CHECKPOINT_OK
                               : mr_checkpoint_fail_errno(err, errlen, "cannot read folder %s",
                                                          dir);
    size_t cap = 0;
    int rc = MR_CHECKPOINT_OK;
    for (struct dirent *e; rc == MR_CHECKPOINT_OK && (e = readdir(d));) {
        uint64_t number;
        if (!parse_name(e->d_name, &number))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            generation *grown = realloc(*out, cap * sizeof *grown);
            if (!grown) {
                rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
                break;
            }
            *out = grown;
        }
        (*out)[*n].number = number;
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%.63s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (rc != MR_CHECKPOINT_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    } else if (*n) {
        qsort(*out, *n, sizeof **out, newest_first);
    }
    return rc;
}

/* ------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------ */

/* header + zstd frame of the payload, malloc'd. */
static int encode(const char *payload, size_t len, header *h, unsigned char **out,
                  size_t *out_len, char *err, size_t errlen)
{
    size_t bound = ZSTD_compressBound(len);
    unsigned char *buf = malloc(HEADER_BYTES + bound);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    int rc = MR_CHECKPOINT_OK;
    if (!buf || !cctx) {
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    } else {
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
        size_t frame = ZSTD_compress2(cctx, buf + HEADER_BYTES, bound, payload, len);
        if (ZSTD_isError(frame)) {
            rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "zstd: %s",
                                    ZSTD_getErrorName(frame));
        } else {
            h->payload_bytes = len;
            h->frame_bytes = frame;
            h->payload_crc = crc(payload, len);
            header_encode(buf, h);
            *out_len = HEADER_BYTES + frame;
        }
    }
    ZSTD_freeCCtx(cctx);
    if (rc != MR_CHECKPOINT_OK)
        free(buf);
    else
        *out = buf;
    return rc;
}

static int write_durably(const char *dir, const char *name, const unsigned char *data,
                         size_t len, char *err, size_t errlen)
{
    char *path = mr_checkpoint_join(dir, name), *tmp = NULL;
    int fd = -1;
    int rc = path ? mr_checkpoint_temp_open(path, &tmp, &fd, err, errlen)
                  : mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    for (size_t done = 0; rc == MR_CHECKPOINT_OK && done < len;) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno != EINTR)
            rc = mr_checkpoint_fail_errno(err, errlen, "cannot write %s", tmp);
        else if (n > 0)
            done += (size_t)n;
    }
    if (tmp)
        rc = mr_checkpoint_temp_commit(fd, tmp, path, rc, err, errlen);
    free(path);
    return rc;
}

static int remove_file(const char *dir, const char *name, char *err, size_t errlen)
{
    char *path = mr_checkpoint_join(dir, name);
    int rc = MR_CHECKPOINT_OK;
    if (!path)
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    else if (unlink(path) != 0 && errno != ENOENT)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot remove old checkpoint %s", path);
    free(path);
    return rc;
}

/* Keeps the newest `keep` generations; drops the rest and the leftovers of
 * interrupted writes (only one writer runs, so none is in progress). */
static int prune(const char *dir, int keep, char *err, size_t errlen)
{
    generation *gens;
    size_t n;
    int rc = list_names(dir, &gens, &n, err, errlen);
    for (size_t i = (size_t)keep; rc == MR_CHECKPOINT_OK && i < n; i++)
        rc = remove_file(dir, gens[i].name, err, errlen);
    free(gens);
    DIR *d = rc == MR_CHECKPOINT_OK ? opendir(dir) : NULL;
    if (rc == MR_CHECKPOINT_OK && !d)
        rc = mr_checkpoint_fail_errno(err, errlen, "cannot read folder %s", dir);
    for (struct dirent *e; rc == MR_CHECKPOINT_OK && (e = readdir(d));)
        if (is_temporary(e->d_name))
            rc = remove_file(dir, e->d_name, err, errlen);
    if (d)
        closedir(d);
    return rc;
}

int mr_checkpoint_write(const char *dir, mr_checkpoint_state *state, int keep, char *err,
                        size_t errlen)
{
    if (keep < 1)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EINVAL,
                                  "checkpoint keep is %d; at least 1 generation must be kept",
                                  keep);
    generation *gens;
    size_t n;
    int rc = mr_checkpoint_mkdir_p(dir, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = list_names(dir, &gens, &n, err, errlen);
    if (rc != MR_CHECKPOINT_OK)
        return rc;
    /* Numbers only grow, even past damaged generations, so a name never
     * means two different states. */
    uint64_t last = n && gens[0].number > state->generation ? gens[0].number : state->generation;
    free(gens);
    double written = now();
    header h = {.version = MR_CHECKPOINT_VERSION,
                .generation = last + 1,
                .written_us = (uint64_t)(written * 1e6)};
    char *json;
    size_t json_len, len = 0;
    unsigned char *file = NULL;
    char name[64];
    snprintf(name, sizeof name, PREFIX "%06" PRIu64 SUFFIX, h.generation);
    rc = mr_checkpoint_state_to_json(state, &json, &json_len, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = encode(json, json_len, &h, &file, &len, err, errlen);
    free(json);
    if (rc == MR_CHECKPOINT_OK)
        rc = write_durably(dir, name, file, len, err, errlen);
    free(file);
    if (rc == MR_CHECKPOINT_OK) {
        state->generation = h.generation;
        state->written = written;
        rc = prune(dir, keep, err, errlen);
    }
    return rc;
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

/* Marks info damaged with the reason; returns MR_CHECKPOINT_EINVAL. */
static int damaged(mr_checkpoint_info *info, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int damaged(mr_checkpoint_info *info, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->problem, sizeof info->problem, fmt, ap);
    va_end(ap);
    return MR_CHECKPOINT_EINVAL;
}

/* Checks the file's header, frame and checksum and decompresses the
 * payload into *payload. */
static int verify(const unsigned char *file, size_t len, mr_checkpoint_info *info,
                  char **payload, size_t *payload_len, char *err, size_t errlen)
{
    header h;
    const char *bad;
    if (len == 0)
        return damaged(info, "empty: its write was cut off");
    if (len < HEADER_BYTES)
        return damaged(info, "truncated to %zu bytes, shorter than its %d-byte header", len,
                       HEADER_BYTES);
    if ((bad = header_decode(file, &h)))
        return damaged(info, "%s", bad);
    if (h.version != MR_CHECKPOINT_VERSION) {
        snprintf(info->problem, sizeof info->problem,
                 "format version %" PRIu32 "; this moerun reads version %d", h.version,
                 MR_CHECKPOINT_VERSION);
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_EVERSION,
                                  "checkpoint %.*s was written in format version %" PRIu32
                                  ", but this moerun reads version %d: resume it with the "
                                  "moerun that wrote it",
                                  stem(info->name), info->name, h.version,
                                  MR_CHECKPOINT_VERSION);
    }
    info->written = (double)h.written_us * 1e-6;
    if (h.generation != info->generation)
        return damaged(info, "its header says generation %" PRIu64, h.generation);
    if (len - HEADER_BYTES < h.frame_bytes)
        return damaged(info, "truncated to %zu of %" PRIu64 " bytes", len,
                       HEADER_BYTES + h.frame_bytes);
    if (len - HEADER_BYTES > h.frame_bytes)
        return damaged(info, "%" PRIu64 " bytes longer than its header says",
                       (uint64_t)(len - HEADER_BYTES - h.frame_bytes));
    if (h.payload_bytes > MAX_PAYLOAD)
        return damaged(info, "its header claims a payload of %" PRIu64 " bytes",
                       h.payload_bytes);
    if (!(*payload = malloc(h.payload_bytes + 1)))
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    size_t got = ZSTD_decompress(*payload, h.payload_bytes, file + HEADER_BYTES, h.frame_bytes);
    if (ZSTD_isError(got))
        return ZSTD_getErrorCode(got) == ZSTD_error_checksum_wrong
                   ? damaged(info, "checksum mismatch in the zstd frame")
                   : damaged(info, "corrupt compressed data (zstd: %s)", ZSTD_getErrorName(got));
    if (got != h.payload_bytes)
        return damaged(info, "decompressed to %zu bytes, not %" PRIu64, got, h.payload_bytes);
    if (crc(*payload, got) != h.payload_crc)
        return damaged(info, "checksum mismatch");
    (*payload)[got] = '\0';
    *payload_len = got;
    return MR_CHECKPOINT_OK;
}

/* Reads, verifies and parses one generation into *state.  EINVAL: it is
 * damaged, and info->problem says how. */
static int load_one(const char *dir, const generation *g, mr_checkpoint_info *info,
                    mr_checkpoint_state *state, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    info->generation = g->number;
    snprintf(info->name, sizeof info->name, "%s", g->name);
    char *path = mr_checkpoint_join(dir, g->name);
    if (!path)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    struct stat st;
    char *file = NULL, *payload = NULL;
    size_t len = 0, payload_len = 0;
    int rc = stat(path, &st) == 0
                 ? mr_checkpoint_read_file(path, &file, &len, err, errlen)
                 : mr_checkpoint_fail_errno(err, errlen, "cannot stat %s", path);
    if (rc == MR_CHECKPOINT_OK) {
        info->bytes = len;
        info->written = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9;
        rc = verify((const unsigned char *)file, len, info, &payload, &payload_len, err,
                    errlen);
    }
    if (rc == MR_CHECKPOINT_OK) {
        char why[sizeof info->problem];
        rc = mr_checkpoint_state_from_json(state, payload, payload_len, why, sizeof why);
        if (rc == MR_CHECKPOINT_ENOMEM)
            snprintf(err, errlen, "%s", why);
        else if (rc != MR_CHECKPOINT_OK)
            rc = damaged(info, "invalid content: %s", why);
    }
    if (rc == MR_CHECKPOINT_OK) {
        state->generation = g->number;
        state->written = info->written;
        info->good = true;
    }
    free(payload);
    free(file);
    free(path);
    return rc;
}

int mr_checkpoint_list(const char *dir, mr_checkpoint_info **list, size_t *n, char *err,
                       size_t errlen)
{
    generation *gens;
    *list = NULL;
    int rc = list_names(dir, &gens, n, err, errlen);
    if (rc != MR_CHECKPOINT_OK || *n == 0)
        return rc;
    if (!(*list = calloc(*n, sizeof **list)))
        rc = mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    for (size_t i = 0; rc == MR_CHECKPOINT_OK && i < *n; i++) {
        mr_checkpoint_state state;
        int one = load_one(dir, &gens[i], &(*list)[i], &state, err, errlen);
        if (one == MR_CHECKPOINT_OK)
            mr_checkpoint_state_free(&state);
        else if (one != MR_CHECKPOINT_EINVAL && one != MR_CHECKPOINT_EVERSION)
            rc = one;
    }
    free(gens);
    if (rc != MR_CHECKPOINT_OK) {
        free(*list);
        *list = NULL;
        *n = 0;
    }
    return rc;
}

/* The warning for falling back past `skipped` damaged generations to `used`. */
static void fallback_warning(char *warning, size_t warnlen, const mr_checkpoint_info *skipped,
                             size_t n_skipped, const mr_checkpoint_info *used)
{
    for (size_t i = 0; i < n_skipped; i++)
        mr_checkpoint_appendf(warning, warnlen, "checkpoint %.*s is damaged (%s); ", stem(skipped[i].name),
               skipped[i].name, skipped[i].problem);
    double lost = skipped[0].written - used->written;
    mr_checkpoint_appendf(warning, warnlen, "using %.*s, written %.0f s ", stem(used->name), used->name,
           lost > 0 ? lost : 0);
    if (n_skipped == 1)
        mr_checkpoint_appendf(warning, warnlen, "earlier");
    else
        mr_checkpoint_appendf(warning, warnlen, "before %.*s", stem(skipped[0].name), skipped[0].name);
    mr_checkpoint_appendf(warning, warnlen, ": progress after it will be redone");
}

int mr_checkpoint_load_latest(const char *dir, mr_checkpoint_state *state, char *warning,
                              size_t warnlen, char *err, size_t errlen)
{
    memset(state, 0, sizeof *state);
    if (warnlen)
        warning[0] = '\0';
    generation *gens;
    size_t n;
    int rc = list_names(dir, &gens, &n, err, errlen);
    if (rc != MR_CHECKPOINT_OK)
        return rc;
    if (n == 0)
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOENT, "no checkpoint in %s",
                                  dir);
    mr_checkpoint_info *infos = calloc(n, sizeof *infos);
    if (!infos) {
        free(gens);
        return mr_checkpoint_fail(err, errlen, MR_CHECKPOINT_ENOMEM, "out of memory");
    }
    size_t i = 0;
    while ((rc = load_one(dir, &gens[i], &infos[i], state, err, errlen)) ==
               MR_CHECKPOINT_EINVAL &&
           ++i < n)
        ;
    if (rc == MR_CHECKPOINT_OK && i > 0) {
        fallback_warning(warning, warnlen, infos, i, &infos[i]);
    } else if (rc == MR_CHECKPOINT_EINVAL) {
        snprintf(err, errlen, "no usable checkpoint in %s:", dir);
        for (size_t k = 0; k < n; k++)
            mr_checkpoint_appendf(err, errlen, " %.*s is damaged (%s)%s", stem(infos[k].name), infos[k].name,
                   infos[k].problem, k + 1 < n ? ";" : "");
    }
    free(infos);
    free(gens);
    return rc;
}
