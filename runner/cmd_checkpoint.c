/*
 * moerun checkpoint export|import: a run folder as one .tar.zst, to move a
 * run to another cluster through object storage (checkpoint/bundle.c has
 * the format and the safety rules).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner/runner.h"

static int status_code(int rc)
{
    if (rc == MR_CHECKPOINT_OK)
        return MR_EXIT_OK;
    return rc == MR_CHECKPOINT_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
}

static int export_run(const char *run_dir, const char *bundle)
{
    char err[2048];
    char *plan = mr_runner_path(run_dir, MR_RUN_PLAN);
    if (!plan)
        return MR_EXIT_FAILED;
    bool is_run = access(plan, F_OK) == 0;
    free(plan);
    if (!is_run) {
        fprintf(stderr, "moerun checkpoint: %s: not a run folder: it has no %s\n", run_dir,
                MR_RUN_PLAN);
        return MR_EXIT_INVALID;
    }
    int rc = mr_checkpoint_export(run_dir, bundle, err, sizeof err);
    if (rc != MR_CHECKPOINT_OK)
        fprintf(stderr, "moerun checkpoint: %s\n", err);
    else
        printf("exported %s to %s\n", run_dir, bundle);
    return status_code(rc);
}

static int import_run(const char *bundle, const char *run_dir)
{
    char err[2048];
    int rc = mr_checkpoint_import(bundle, run_dir, err, sizeof err);
    if (rc != MR_CHECKPOINT_OK)
        fprintf(stderr, "moerun checkpoint: %s\n", err);
    else
        printf("imported %s into %s; `moerun resume %s` goes on\n", bundle, run_dir, run_dir);
    return status_code(rc);
}

int mr_runner_checkpoint(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(mr_runner_usage("checkpoint"), stdout);
            return MR_EXIT_OK;
        }
    if (argc < 2)
        return mr_runner_usage_error("checkpoint", "missing what to do: export or import");
    bool is_export = strcmp(argv[1], "export") == 0;
    if (!is_export && strcmp(argv[1], "import") != 0)
        return mr_runner_usage_error("checkpoint", "unknown action '%s': export or import",
                                     argv[1]);
    if (argc != 4)
        return mr_runner_usage_error("checkpoint", "usage: moerun checkpoint %s",
                                     is_export ? "export RUN_DIR FILE.tar.zst"
                                               : "import FILE.tar.zst RUN_DIR");
    return is_export ? export_run(argv[2], argv[3]) : import_run(argv[2], argv[3]);
}
