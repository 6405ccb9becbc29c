/*
 * moerun make-model: write a bundled random model (Qwen3-MoE, or Mixtral's
 * or DeepSeek-V3's structure), so that a job, a test or a benchmark can run
 * without downloading a checkpoint.
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
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_PRESET | MR_OPT_SEED | MR_OPT_DTYPE, "DIR",
                                  &args);
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
        rc = mr_runner_usage_error(argv[0], "unknown preset '%s': tiny, small, mixtral-tiny, "
                                   "deepseek-tiny or deepseek-small",
                                   args.preset);
    static const struct {
        const char *name;
        mr_tensor_type type;
    } dtypes[] = {{"bf16", MR_TENSOR_BF16}, {"f16", MR_TENSOR_F16}, {"fp8", MR_TENSOR_F8_BLOCKS}};
    mr_tensor_type dtype = MR_TENSOR_BF16;
    size_t d = 0;
    while (args.dtype && d < 3 && strcmp(args.dtype, dtypes[d].name) != 0)
        d++;
    if (rc < 0 && d == 3)
        rc = mr_runner_usage_error(argv[0], "unknown --dtype '%s': bf16, f16 or fp8", args.dtype);
    else if (args.dtype)
        dtype = dtypes[d].type;
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
            made = mr_make_model(dir, preset, seed, dtype, err, sizeof err);
        if (made == MR_ENGINE_OK) {
            printf("wrote the %s model (seed %" PRIu64 ", %s) to %s\n",
                   mr_make_model_preset_name(preset), seed, dtypes[d < 3 ? d : 0].name, dir);
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
