/* Command-line parsing shared by the commands: one option table, with each
 * command saying which of the options it takes. */
#include <errno.h>
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

/* SECTION.KEY=VALUE, both names non-empty: the shape --set takes.  What
 * the names mean is the job loader's to check. */
static bool is_assignment(const char *text)
{
    const char *dot = strchr(text, '.'), *eq = strchr(text, '=');
    return dot && eq && dot > text && eq > dot + 1;
}

int mr_runner_parse_args(int argc, char **argv, unsigned allowed, const char *operand,
                         mr_runner_args *args)
{
    const char *command = argv[0];
    memset(args, 0, sizeof *args);
    args->overrides = calloc((size_t)argc, sizeof *args->overrides);
    if (!args->overrides) {
        fprintf(stderr, "moerun %s: out of memory\n", command);
        return MR_EXIT_FAILED;
    }
    static const struct option options[] = {
        {"set", required_argument, NULL, MR_OPT_SET},
        {"print", no_argument, NULL, MR_OPT_PRINT},
        {"json", no_argument, NULL, MR_OPT_JSON},
        {"preset", required_argument, NULL, MR_OPT_PRESET},
        {"seed", required_argument, NULL, MR_OPT_SEED},
        {"decode", no_argument, NULL, MR_OPT_DECODE},
        {"force-new", no_argument, NULL, MR_OPT_FORCE_NEW},
        {"max-restarts", required_argument, NULL, MR_OPT_MAX_RESTARTS},
        {"dtype", required_argument, NULL, MR_OPT_DTYPE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        if (c == 'h') {
            fputs(mr_runner_usage(command), stdout);
            return MR_EXIT_OK;
        }
        if (c == ':')
            return mr_runner_usage_error(command, "option '%s' needs a value",
                                         argv[optind - 1]);
        if (c == '?' || !(allowed & (unsigned)c))
            return mr_runner_usage_error(command, "unknown option '%s'", argv[optind - 1]);
        if (c == MR_OPT_SET && !is_assignment(optarg))
            return mr_runner_usage_error(command, "--set takes SECTION.KEY=VALUE, not '%s'",
                                         optarg);
        if (c == MR_OPT_SET)
            args->overrides[args->n_overrides++].assignment = optarg;
        args->print |= c == MR_OPT_PRINT;
        args->json |= c == MR_OPT_JSON;
        args->decode |= c == MR_OPT_DECODE;
        args->force_new |= c == MR_OPT_FORCE_NEW;
        if (c == MR_OPT_MAX_RESTARTS)
            args->max_restarts = optarg;
        if (c == MR_OPT_PRESET)
            args->preset = optarg;
        if (c == MR_OPT_SEED)
            args->seed = optarg;
        if (c == MR_OPT_DTYPE)
            args->dtype = optarg;
    }
    if (optind == argc && (allowed & MR_ARGS_OPERAND_OPTIONAL))
        return -1;
    if (optind == argc)
        return mr_runner_usage_error(command, "missing %s: moerun %s %s", operand, command,
                                     operand);
    if (argc - optind > 1)
        return mr_runner_usage_error(command, "one %s at a time; also got '%s'", operand,
                                     argv[optind + 1]);
    args->operand = argv[optind];
    return -1;
}

void mr_runner_free_args(mr_runner_args *args)
{
    free(args->overrides);
    memset(args, 0, sizeof *args);
}

int mr_runner_load_job(const mr_runner_args *args, mr_job *job)
{
    static char err[1 << 16];
    /* A job file that cannot be read is a system error (exit 1), not an
     * invalid job. */
    FILE *f = fopen(args->operand, "r");
    if (!f) {
        fprintf(stderr, "%s: %s\n", args->operand, strerror(errno));
        return MR_EXIT_FAILED;
    }
    fclose(f);
    int rc = mr_job_load(job, args->operand, args->overrides, args->n_overrides, err,
                         sizeof err);
    if (rc == MR_JOBS_OK)
        return MR_EXIT_OK;
    fprintf(stderr, "%s\n", err);
    return rc == MR_JOBS_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
}
