/*
 * Input files, line by line.  Plain files are mmapped and split with memchr:
 * request parsing, not reading, should be the cost.  Compressed files are
 * streamed through libarchive, which recognises the compression by content
 * (gzip excepted, below);
 * their offsets count decompressed bytes, so a shard of a compressed file is
 * found again by decompressing up to it.
 */
#include <archive.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "jobs/internal.h"

#define READ_BLOCK (1 << 16)

struct mr_line_reader {
    char *path;
    uint64_t next_line; /* number of the next line to hand out */
    uint64_t end;       /* lines starting at or after this are not ours */
    size_t max_line;

    /* plain files */
    const char *map;
    size_t map_len;
    size_t pos;

    /* compressed files: one of the two is open */
    struct archive *archive;
    gzFile gz;
    char *gz_block;
    const char *block; /* the decompressed block being split */
    size_t block_len, block_pos;
    uint64_t offset;   /* decompressed offset of block[block_pos] */
    uint64_t skip_to;  /* lines before this offset are skipped */
    bool at_eof;
    mr_buf carry;      /* a line that spans blocks */
    bool compressed;
};

bool mr_line_is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

/*
 * Open `path` through libarchive's filters.  The raw format bids on any
 * byte, so when a filter was found but no format, the stream
 * decompressed to nothing: *empty says so and NULL is returned.
 */
static struct archive *open_archive(const char *path, bool *empty, char *err, size_t errlen)
{
    *empty = false;
    struct archive *a = archive_read_new();
    if (!a) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    struct archive_entry *entry;
    if (archive_read_open_filename(a, path, READ_BLOCK) != ARCHIVE_OK ||
        archive_read_next_header(a, &entry) != ARCHIVE_OK) {
        *empty = archive_filter_count(a) > 1;
        if (!*empty)
            snprintf(err, errlen, "%s: cannot read: %s", path, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

static int open_plain(mr_line_reader *r, uint64_t begin, char *err, size_t errlen)
{
    int fd = open(r->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open: %s", r->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return MR_JOBS_EIO;
    }
    r->map_len = (size_t)st.st_size;
    if (r->map_len) {
        void *map = mmap(NULL, r->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            snprintf(err, errlen, "%s: cannot map: %s", r->path, strerror(errno));
            close(fd);
            return MR_JOBS_EIO;
        }
        madvise(map, r->map_len, MADV_SEQUENTIAL);
        r->map = map;
    }
    close(fd);
    r->pos = begin < r->map_len ? (size_t)begin : r->map_len;
    return MR_JOBS_OK;
}

/*
 * libarchive 3.6 checks neither the CRC nor the length in a gzip trailer:
 * flipped bytes in a .gz decode to other bytes without an error (measured
 * with 64 corrupted bytes: `gzip -t` fails, libarchive reads to a clean
 * end).  zlib checks both, for every member of a concatenated file.
 */
static int switch_to_zlib(mr_line_reader *r, char *err, size_t errlen)
{
    archive_read_free(r->archive);
    r->archive = NULL;
    r->gz_block = malloc(READ_BLOCK);
    r->gz = r->gz_block ? gzopen(r->path, "rb") : NULL;
    if (!r->gz) {
        snprintf(err, errlen, "%s: cannot open: %s", r->path,
                 r->gz_block ? strerror(errno) : "out of memory");
        return MR_JOBS_EIO;
    }
    gzbuffer(r->gz, READ_BLOCK);
    return MR_JOBS_OK;
}

static int next_gzip_block(mr_line_reader *r, char *err, size_t errlen)
{
    int n = gzread(r->gz, r->gz_block, READ_BLOCK);
    int code = Z_OK;
    const char *why = gzerror(r->gz, &code);
    if (n < 0 || (code != Z_OK && code != Z_STREAM_END)) {
        snprintf(err, errlen, "%s: corrupt compressed data after %llu decompressed bytes: %s",
                 r->path, (unsigned long long)r->offset, why);
        return MR_JOBS_EINVAL;
    }
    r->at_eof = n == 0;
    r->block = r->gz_block;
    r->block_len = (size_t)n;
    r->block_pos = 0;
    return MR_JOBS_OK;
}

/* One look through libarchive decides how the file is read, and the handle
 * it opened is the one that reads it (unless gzip, plain, or empty). */
static int open_input(mr_line_reader *r, uint64_t begin, char *err, size_t errlen)
{
    struct stat st;
    if (stat(r->path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", r->path, strerror(errno));
        return MR_JOBS_EIO;
    }
    /* libarchive's raw format refuses an empty file; it is plain and empty */
    if (st.st_size == 0)
        return open_plain(r, begin, err, errlen);
    bool empty;
    r->archive = open_archive(r->path, &empty, err, errlen);
    if (!r->archive) {
        r->compressed = empty; /* decompresses to nothing: no lines */
        return empty ? MR_JOBS_OK : MR_JOBS_EIO;
    }
    int filter = archive_filter_code(r->archive, 0);
    r->compressed = filter != ARCHIVE_FILTER_NONE;
    if (filter == ARCHIVE_FILTER_GZIP)
        return switch_to_zlib(r, err, errlen);
    if (!r->compressed) {
        archive_read_free(r->archive);
        r->archive = NULL;
        return open_plain(r, begin, err, errlen);
    }
    return MR_JOBS_OK;
}

int mr_line_reader_open(mr_line_reader **reader, const char *path, uint64_t begin,
                        uint64_t end, uint64_t first_line, size_t max_line_bytes, char *err,
                        size_t errlen)
{
    *reader = NULL;
    mr_line_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        snprintf(err, errlen, "%s: out of memory", path);
        return MR_JOBS_ENOMEM;
    }
    r->next_line = first_line;
    r->end = end;
    r->max_line = max_line_bytes;
    r->skip_to = begin;
    int rc = open_input(r, begin, err, errlen);
    if (rc != MR_JOBS_OK) {
        mr_line_reader_close(r);
        return rc;
    }
    *reader = r;
    return MR_JOBS_OK;
}

/* Fill *line with `len` bytes at `data`, starting at `offset`; a CR before
 * the newline is not part of the line. */
static void emit(mr_line_reader *r, mr_line *line, const char *data, size_t len,
                 uint64_t offset)
{
    if (len && data[len - 1] == '\r')
        len--;
    line->too_long = len > r->max_line;
    line->data = line->too_long ? "" : data;
    line->len = len;
    line->offset = offset;
    line->line_no = r->next_line++;
}

static int next_plain(mr_line_reader *r, mr_line *line)
{
    if (r->pos >= r->map_len || r->pos >= r->end)
        return 0;
    const char *start = r->map + r->pos;
    const char *nl = memchr(start, '\n', r->map_len - r->pos);
    size_t len = nl ? (size_t)(nl - start) : r->map_len - r->pos;
    emit(r, line, start, len, r->pos);
    r->pos += len + (nl != NULL);
    return 1;
}

static int next_block(mr_line_reader *r, char *err, size_t errlen)
{
    if (r->gz)
        return next_gzip_block(r, err, errlen);
    const void *data;
    size_t size;
    la_int64_t at;
    int rc = archive_read_data_block(r->archive, &data, &size, &at);
    if (rc == ARCHIVE_EOF) {
        r->at_eof = true;
        return MR_JOBS_OK;
    }
    if (rc != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: corrupt compressed data after %llu decompressed bytes: %s",
                 r->path, (unsigned long long)r->offset, archive_error_string(r->archive));
        return MR_JOBS_EINVAL;
    }
    r->block = data;
    r->block_len = size;
    r->block_pos = 0;
    return MR_JOBS_OK;
}

/*
 * Lines of a compressed stream.  A line inside one block is handed out in
 * place; one that spans blocks is gathered in `carry`, but never more than
 * max_line bytes of it: a longer line is only measured.
 */
static int next_compressed(mr_line_reader *r, mr_line *line, char *err, size_t errlen)
{
    r->carry.len = 0;
    uint64_t start = r->offset;
    size_t len = 0;
    for (;;) {
        if (r->block_pos == r->block_len) {
            if (r->at_eof)
                break;
            int rc = next_block(r, err, errlen);
            if (rc != MR_JOBS_OK)
                return rc;
            continue;
        }
        if (start >= r->end)
            return 0;
        const char *p = r->block + r->block_pos;
        size_t avail = r->block_len - r->block_pos;
        const char *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) : avail;
        bool skipping = start < r->skip_to;
        if (!skipping && nl && len == 0) {
            r->block_pos += take + 1;
            r->offset += take + 1;
            emit(r, line, p, take, start);
            return 1;
        }
        if (!skipping && len <= r->max_line) {
            size_t keep = take < r->max_line + 1 - len ? take : r->max_line + 1 - len;
            if (mr_buf_append(&r->carry, p, keep) != MR_JOBS_OK) {
                snprintf(err, errlen, "%s: out of memory", r->path);
                return MR_JOBS_ENOMEM;
            }
        }
        len += take;
        r->block_pos += take + (nl != NULL);
        r->offset += take + (nl != NULL);
        if (!nl)
            continue;
        if (skipping) {
            start = r->offset;
            len = 0;
            r->carry.len = 0;
            continue;
        }
        break;
    }
    if (start >= r->end || (r->at_eof && len == 0 && r->offset == start))
        return 0;
    if (len > r->max_line + 1) {
        /* only measured: the line is too long whether or not a CR ends it */
        *line = (mr_line){.data = "", .len = len, .line_no = r->next_line++,
                          .offset = start, .too_long = true};
        return 1;
    }
    emit(r, line, r->carry.data ? r->carry.data : "", len, start);
    return 1;
}

int mr_line_reader_next(mr_line_reader *reader, mr_line *line, char *err, size_t errlen)
{
    if (reader->archive || reader->gz)
        return next_compressed(reader, line, err, errlen);
    return next_plain(reader, line); /* an empty compressed file reads as plain */
}

bool mr_line_reader_compressed(const mr_line_reader *reader)
{
    return reader->compressed;
}

uint64_t mr_line_reader_position(const mr_line_reader *reader)
{
    return reader->archive || reader->gz ? reader->offset : reader->pos;
}

void mr_line_reader_close(mr_line_reader *reader)
{
    if (!reader)
        return;
    if (reader->map)
        munmap((void *)reader->map, reader->map_len);
    if (reader->archive)
        archive_read_free(reader->archive);
    if (reader->gz)
        gzclose(reader->gz);
    free(reader->gz_block);
    mr_buf_free(&reader->carry);
    free(reader->path);
    free(reader);
}
