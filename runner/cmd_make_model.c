/*
 * moerun make-model: write a bundled random model (Qwen3-MoE, or Mixtral's
 * structure), so that a job, a test or a benchmark can run without
 * downloading a checkpoint.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/testmodel/testmodel.h"
#include "runner/runner.h"

int mr_runner_make_model(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_PRESET | MR_OPT_SEED, "DIR", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    mr_model_preset preset = MR_PRESET_TINY;
    uint64_t seed = 0;
    char *end = NULL;
    while (args.preset && mr_make_model_preset_name(preset) &&
           strcmp(args.preset, mr_make_model_preset_name(preset)) != 0)
        preset++;
    if (!mr_make_model_preset_name(preset))
        rc = mr_runner_usage_error(argv[0], "unknown preset '%s': tiny, small or mixtral-tiny",
                                   args.preset);
    if (rc < 0 && args.seed) {
        errno = 0;
        seed = strtoull(args.seed, &end, 10);
        if (errno || end == args.seed || *end || args.seed[0] == '-')
            rc = mr_runner_usage_error(argv[0], "--seed wants a whole number, not '%s'",
                                       args.seed);
    }
    if (rc < 0) {
        char err[1024];
        char *dir = strdup(args.operand);
        int made = dir ? mr_runner_mkdir_p(dir, err, sizeof err) : MR_JOBS_ENOMEM;
        if (made == MR_JOBS_OK)
            made = mr_make_model(dir, preset, seed, err, sizeof err);
        if (made == MR_ENGINE_OK) {
            printf("wrote the %s model (seed %" PRIu64 ") to %s\n",
                   mr_make_model_preset_name(preset), seed, dir);
            rc = MR_EXIT_OK;
        } else {
            fprintf(stderr, "moerun make-model: %s\n", dir ? err : "out of memory");
            rc = made == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
        }
        free(dir);
    }
    mr_runner_free_args(&args);
    return rc;
}
