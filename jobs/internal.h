/* Private to jobs/: helpers the files of this module share. */
#ifndef MR_JOBS_INTERNAL_H
#define MR_JOBS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs/jobs.h"

/* Whether libarchive found a compression filter on the reader's file (gzip,
 * zstd, xz, bzip2, ...), judged by content, not by name. */
bool mr_line_reader_compressed(const mr_line_reader *reader);

/* The decompressed offset just after the last line handed out: the size
 * of the file once every line has been read. */
uint64_t mr_line_reader_position(const mr_line_reader *reader);

/* The offset of the first byte that is not valid UTF-8 (overlong forms,
 * surrogates and code points above U+10FFFF included), or len. */
size_t mr_utf8_invalid_at(const char *text, size_t len);

/* Print `root` and a newline onto out, and free the tree. */
struct cJSON;
int mr_json_append(mr_buf *out, struct cJSON *root, bool indented);

/* 64-bit FNV-1a: stable across runs and machines, for ids and seeds. */
uint64_t mr_hash64(const void *data, size_t len, uint64_t seed);

#endif
