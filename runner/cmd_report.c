/*
 * moerun report RUN_DIR: the job's report, written anew into the run
 * folder (report.json, report.md, the SVGs) and printed.  It reads only
 * the run folder, so it works on a finished job, a stopped one, and a
 * folder that came from another cluster.
 */
#include "runner/runner.h"

int mr_runner_report(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_JSON, "RUN_DIR", &args);
    if (rc < 0)
        rc = mr_runner_report_write(args.operand, stdout, args.json);
    mr_runner_free_args(&args);
    return rc;
}
