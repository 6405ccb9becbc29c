/*
 * What the fuzz targets share (tests/fuzz/README.md).  Each target is one
 * libFuzzer entry point over one of moerun's parsers; most of those read
 * files, so the input goes into a scratch folder first.
 */
#ifndef MR_FUZZ_H
#define MR_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry points. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A new folder under $TMPDIR (or /tmp), removed with everything in it when
 * the fuzzer exits; a crash leaves it for the post-mortem.  Aborts when it
 * cannot be made: no fuzzing is possible without it. */
const char *mr_fuzz_tmpdir(void);

/* Writes `len` bytes to dir/name, replacing the file; returns the path
 * (malloc'd).  Aborts on failure, as a target without its input would
 * report nothing found. */
char *mr_fuzz_write(const char *dir, const char *name, const void *data, size_t len);

/* Aborts with `what` when `ok` is false: a property every input must keep,
 * reported by libFuzzer as a crash like any other. */
void mr_fuzz_check(int ok, const char *what);

#endif
