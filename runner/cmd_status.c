/* moerun status: the plan of a run folder and how far the run has got. */
#include <stdio.h>

#include "runner/runner.h"

int mr_runner_status(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, 0, "RUN_DIR", &args);
    const char *dir = args.operand;
    mr_plan plan = {0};
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    uint64_t results = 0, errors = 0;
    rc = mr_runner_load_plan(dir, &plan);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(dir, MR_RUN_RESULTS, &results);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_count_lines(dir, MR_RUN_ERRORS, &errors);
    if (rc == MR_EXIT_OK) {
        uint64_t total = plan.n_requests + plan.n_invalid + plan.n_duplicates;
        uint64_t done = results + errors;
        const char *state = done == 0 ? "planned, nothing served yet"
                            : done < total ? "in progress or stopped"
                                           : "finished";
        printf("run %s: %s\n", dir, state);
        mr_runner_print_plan(stdout, &plan);
        printf("  written: %llu results, %llu error records (%llu of %llu lines, %.1f%%)\n",
               (unsigned long long)results, (unsigned long long)errors,
               (unsigned long long)done, (unsigned long long)total,
               total ? 100.0 * (double)done / (double)total : 100.0);
    }
    mr_plan_free(&plan);
    mr_runner_free_args(&args);
    return rc;
}
