/*
 * Fuzz target: bundles (checkpoint/bundle.c, on libarchive): a .tar.zst, or
 * any archive libarchive recognises, unpacked by mr_checkpoint_import into
 * a fresh folder.  Whatever the bundle holds, the import must stay inside
 * that folder and, when it refuses, leave nothing behind.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_internal.h"
#include "tests/fuzz/fuzz.h"

static const char *dir;
static char *bundle, *target;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dir = mr_fuzz_tmpdir();
    bundle = mr_checkpoint_join(dir, "run.tar.zst");
    target = mr_checkpoint_join(dir, "run");
    mr_fuzz_check(bundle && target, "out of memory");
    return 0;
}

/* Names in dir, but for the bundle and the run folder when it is allowed. */
static size_t others(bool run_allowed)
{
    DIR *d = opendir(dir);
    mr_fuzz_check(d != NULL, "reading the scratch folder");
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
             strcmp(e->d_name, "run.tar.zst") && (!run_allowed || strcmp(e->d_name, "run"));
    closedir(d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    free(mr_fuzz_write(dir, "run.tar.zst", data, size));
    char err[2048];
    int rc = mr_checkpoint_import(bundle, target, err, sizeof err);
    if (rc != MR_CHECKPOINT_OK)
        mr_fuzz_check(err[0] && others(false) == 0, "a refused bundle leaves nothing behind");
    else
        mr_fuzz_check(others(true) == 0, "a bundle unpacks into its folder only");
    mr_checkpoint_rmtree(target);
    return 0;
}
