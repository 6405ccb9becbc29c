/* Command-line pieces shared by the commands that take a job file. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/runner.h"

int mr_runner_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "moerun %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nRun 'moerun %s --help' for usage.\n", command);
    va_end(ap);
    return MR_EXIT_USAGE;
}

int mr_runner_parse_job_args(int argc, char **argv, bool allow_print,
                             mr_runner_job_args *args)
{
    const char *command = argv[0];
    memset(args, 0, sizeof *args);
    args->overrides = calloc((size_t)argc, sizeof *args->overrides);
    if (!args->overrides) {
        fprintf(stderr, "moerun %s: out of memory\n", command);
        return MR_EXIT_FAILED;
    }
    static const struct option options[] = {
        {"set", required_argument, NULL, 's'},
        {"print", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (c) {
        case 's':
            args->overrides[args->n_overrides++].assignment = optarg;
            break;
        case 'p':
            if (!allow_print)
                return mr_runner_usage_error(command, "unknown option '--print'");
            args->print = true;
            break;
        case 'h':
            fputs(mr_runner_usage(command), stdout);
            return MR_EXIT_OK;
        case ':':
            return mr_runner_usage_error(command, "option '%s' needs a value",
                                         argv[optind - 1]);
        default:
            return mr_runner_usage_error(command, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind == argc)
        return mr_runner_usage_error(command, "which job file? (moerun %s JOB.ini)", command);
    if (argc - optind > 1)
        return mr_runner_usage_error(command, "one job file at a time; also got '%s'",
                                     argv[optind + 1]);
    args->job_path = argv[optind];
    return -1;
}

void mr_runner_free_job_args(mr_runner_job_args *args)
{
    free(args->overrides);
    memset(args, 0, sizeof *args);
}

int mr_runner_load_job(const mr_runner_job_args *args, mr_job *job)
{
    static char err[1 << 16];
    int rc = mr_job_load(job, args->job_path, args->overrides, args->n_overrides, err,
                         sizeof err);
    if (rc == MR_JOBS_OK)
        return MR_EXIT_OK;
    fprintf(stderr, "%s\n", err);
    return rc == MR_JOBS_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
}

int mr_runner_parse_dir_args(int argc, char **argv, bool allow_json, const char **dir,
                             bool *json)
{
    const char *command = argv[0];
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 1;
    *json = false;
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        if (c == 'h') {
            fputs(mr_runner_usage(command), stdout);
            return MR_EXIT_OK;
        }
        if (c != 'j' || !allow_json)
            return mr_runner_usage_error(command, "unknown option '%s'", argv[optind - 1]);
        *json = true;
    }
    if (optind == argc)
        return mr_runner_usage_error(command, "which run folder? (moerun %s RUN_DIR)",
                                     command);
    if (argc - optind > 1)
        return mr_runner_usage_error(command, "one run folder at a time; also got '%s'",
                                     argv[optind + 1]);
    *dir = argv[optind];
    return -1;
}
