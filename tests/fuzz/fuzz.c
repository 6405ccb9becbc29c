/* Scratch folders and files for the fuzz targets. */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/checkpoint_internal.h"

/* Every folder made, so that exit removes them all. */
static char *made[4];
static size_t n_made;

static void remove_made(void)
{
    for (size_t i = 0; i < n_made; i++) {
        mr_checkpoint_rmtree(made[i]);
        free(made[i]);
    }
    n_made = 0;
}

const char *mr_fuzz_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = mr_checkpoint_join(base && *base ? base : "/tmp", "moerun-fuzz-XXXXXX");
    if (!dir || !mkdtemp(dir) || n_made == sizeof made / sizeof made[0]) {
        fprintf(stderr, "fuzz: cannot make a scratch folder: %s\n", strerror(errno));
        abort();
    }
    if (n_made == 0)
        atexit(remove_made);
    made[n_made++] = dir;
    return dir;
}

char *mr_fuzz_write(const char *dir, const char *name, const void *data, size_t len)
{
    char *path = mr_checkpoint_join(dir, name);
    FILE *f = path ? fopen(path, "wb") : NULL;
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s/%s: %s\n", dir, name, strerror(errno));
        abort();
    }
    return path;
}

void mr_fuzz_check(int ok, const char *what)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz: property broken: %s\n", what);
    abort();
}
