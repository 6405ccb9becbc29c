/*
 * moerun eplb plan: expert placements for a load trace, one per policy,
 * side by side with how well each balances the trace (and another trace,
 * to see how the plan holds up out of sample).  docs/eplb.md has the why.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eplb/eplb.h"
#include "runner/runner.h"

#define COMMAND "eplb"
#define MAX_PLANS 4

typedef struct {
    const char *trace, *json, *eval, *current;
    int ranks, nodes, redundant, groups, max_moves;
    mr_eplb_policy policy[MAX_PLANS];
    int n_policies;
} plan_args;

/* A whole number of at least `least`, else a usage error (exit code). */
static int parse_count(const char *option, const char *text, int least, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < least || v > INT_MAX)
        return mr_runner_usage_error(COMMAND, "%s wants a whole number of at least %d, not '%s'",
                                     option, least, text);
    *out = (int)v;
    return -1;
}

static int parse_policies(const char *text, plan_args *a)
{
    static const mr_eplb_policy all[] = {MR_EPLB_POLICY_DEEPSEEK, MR_EPLB_POLICY_GLOBAL,
                                         MR_EPLB_POLICY_HIERARCHICAL, MR_EPLB_POLICY_AUTO};
    char *copy = strdup(text), *save = NULL;
    if (!copy) {
        fprintf(stderr, "moerun %s: out of memory\n", COMMAND);
        return MR_EXIT_FAILED;
    }
    int rc = -1;
    a->n_policies = 0;
    for (char *name = strtok_r(copy, ",", &save); name && rc < 0;
         name = strtok_r(NULL, ",", &save)) {
        mr_eplb_policy p;
        if (strcmp(name, "all") == 0) {
            memcpy(a->policy, all, sizeof all);
            a->n_policies = MAX_PLANS;
        } else if (mr_eplb_policy_parse(name, &p) != MR_EPLB_OK) {
            rc = mr_runner_usage_error(COMMAND,
                                       "unknown policy '%s': auto, global, hierarchical, "
                                       "deepseek or all",
                                       name);
        } else if (a->n_policies < MAX_PLANS) {
            a->policy[a->n_policies++] = p;
        }
    }
    if (rc < 0 && a->n_policies == 0)
        rc = mr_runner_usage_error(COMMAND, "--policy names no policy");
    free(copy);
    return rc;
}

enum { OPT_RANKS = 0x100, OPT_NODES, OPT_REDUNDANT, OPT_GROUPS, OPT_POLICY, OPT_JSON,
       OPT_EVAL, OPT_CURRENT, OPT_MAX_MOVES };

/* `plan TRACE [options]`: -1 to go on, else the exit code. */
static int parse_plan_args(int argc, char **argv, plan_args *a)
{
    static const struct option options[] = {
        {"ranks", required_argument, NULL, OPT_RANKS},
        {"nodes", required_argument, NULL, OPT_NODES},
        {"redundant", required_argument, NULL, OPT_REDUNDANT},
        {"groups", required_argument, NULL, OPT_GROUPS},
        {"policy", required_argument, NULL, OPT_POLICY},
        {"json", required_argument, NULL, OPT_JSON},
        {"eval", required_argument, NULL, OPT_EVAL},
        {"current", required_argument, NULL, OPT_CURRENT},
        {"max-moves", required_argument, NULL, OPT_MAX_MOVES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *a = (plan_args){.nodes = 1, .groups = 1, .max_moves = -1, .n_policies = 1,
                     .policy = {MR_EPLB_POLICY_AUTO}};
    const struct {
        int code, least;
        int *out;
    } counts[] = {{OPT_RANKS, 1, &a->ranks},         {OPT_NODES, 1, &a->nodes},
                  {OPT_REDUNDANT, 0, &a->redundant}, {OPT_GROUPS, 1, &a->groups},
                  {OPT_MAX_MOVES, 0, &a->max_moves}};
    opterr = 0;
    optind = 1;
    int c, rc = -1, at;
    while (rc < 0 && (c = getopt_long(argc, argv, ":h", options, &at)) != -1) {
        if (c == 'h') {
            fputs(mr_runner_usage(COMMAND), stdout);
            return MR_EXIT_OK;
        }
        if (c == ':')
            return mr_runner_usage_error(COMMAND, "option '%s' needs a value", argv[optind - 1]);
        if (c == '?')
            return mr_runner_usage_error(COMMAND, "unknown option '%s'", argv[optind - 1]);
        for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
            if (counts[i].code == c) {
                char option[32];
                snprintf(option, sizeof option, "--%s", options[at].name);
                rc = parse_count(option, optarg, counts[i].least, counts[i].out);
            }
        if (c == OPT_POLICY)
            rc = parse_policies(optarg, a);
        a->json = c == OPT_JSON ? optarg : a->json;
        a->eval = c == OPT_EVAL ? optarg : a->eval;
        a->current = c == OPT_CURRENT ? optarg : a->current;
    }
    if (rc >= 0)
        return rc;
    if (optind == argc)
        return mr_runner_usage_error(COMMAND, "missing TRACE: moerun eplb plan TRACE --ranks N");
    if (argc - optind > 1)
        return mr_runner_usage_error(COMMAND, "one TRACE at a time; also got '%s'",
                                     argv[optind + 1]);
    if (a->ranks == 0)
        return mr_runner_usage_error(COMMAND, "--ranks is required");
    a->trace = argv[optind];
    return -1;
}

static int exit_code(int status)
{
    return status == MR_EPLB_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
}

typedef struct {
    double *load;
    int layers, experts;
} trace;

static int read_trace(const char *path, trace *t)
{
    char err[1024];
    int rc = mr_eplb_trace_read(path, &t->load, &t->layers, &t->experts, err, sizeof err);
    if (rc != MR_EPLB_OK)
        fprintf(stderr, "moerun %s: %s\n", COMMAND, err);
    return rc == MR_EPLB_OK ? MR_EXIT_OK : exit_code(rc);
}

/* The checks the solver makes, said in terms of the options. */
static int check_fit(const plan_args *a, const trace *t)
{
    int slots = t->experts + a->redundant;
    if (slots % a->ranks != 0) {
        int more = a->redundant;
        while ((t->experts + more) % a->ranks)
            more++;
        fprintf(stderr,
                "moerun %s: --ranks %d: %d experts and %d redundant slots (%d) do not divide "
                "evenly over %d ranks; --redundant %d would\n",
                COMMAND, a->ranks, t->experts, a->redundant, slots, a->ranks, more);
        return MR_EXIT_INVALID;
    }
    if (a->ranks % a->nodes != 0) {
        fprintf(stderr, "moerun %s: --nodes %d does not divide --ranks %d\n", COMMAND, a->nodes,
                a->ranks);
        return MR_EXIT_INVALID;
    }
    if (t->experts % a->groups != 0) {
        fprintf(stderr, "moerun %s: --groups %d does not divide the %d experts of %s\n", COMMAND,
                a->groups, t->experts, a->trace);
        return MR_EXIT_INVALID;
    }
    return MR_EXIT_OK;
}

/* The placement in a JSON file: its "phy2log", or its first plan's (as
 * --json writes them). */
static int read_current(const char *path, const trace *t, int physical, int ranks,
                        mr_eplb_placement *out)
{
    char err[1024];
    mr_buf text = {0};
    int rc = mr_runner_read_file(path, &text, err, sizeof err);
    if (rc != MR_JOBS_OK) {
        fprintf(stderr, "moerun %s: %s\n", COMMAND, err);
        return MR_EXIT_FAILED;
    }
    cJSON *root = cJSON_ParseWithLength(text.data ? text.data : "", text.len);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "phy2log");
    if (!rows)
        rows = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "plans"), 0), "phy2log");
    int32_t *phy2log = malloc((size_t)t->layers * (size_t)physical * sizeof *phy2log);
    const char *problem = !phy2log ? NULL
                          : !root ? "not valid JSON"
                          : !cJSON_IsArray(rows) ? "no \"phy2log\" array of arrays"
                          : cJSON_GetArraySize(rows) != t->layers
                              ? "\"phy2log\" has another number of layers than the trace"
                              : NULL;
    int l = 0;
    const cJSON *row;
    const cJSON *read = problem || !phy2log ? NULL : rows;
    cJSON_ArrayForEach(row, read)
    {
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != physical) {
            problem = "a \"phy2log\" row has another number of slots than the options give";
            break;
        }
        int s = 0;
        const cJSON *slot;
        cJSON_ArrayForEach(slot, row)
        {
            phy2log[(size_t)l * physical + s++] =
                cJSON_IsNumber(slot) ? (int32_t)slot->valuedouble : -1;
        }
        l++;
    }
    rc = MR_EXIT_OK;
    if (!phy2log) {
        fprintf(stderr, "moerun %s: out of memory\n", COMMAND);
        rc = MR_EXIT_FAILED;
    } else if (problem) {
        fprintf(stderr, "moerun %s: %s: %s\n", COMMAND, path, problem);
        rc = MR_EXIT_INVALID;
    } else if (mr_eplb_placement_from_phy2log(out, t->layers, t->experts, physical, ranks,
                                              phy2log, err, sizeof err) != MR_EPLB_OK) {
        fprintf(stderr, "moerun %s: %s: %s\n", COMMAND, path, err);
        rc = MR_EXIT_INVALID;
    }
    free(phy2log);
    cJSON_Delete(root);
    mr_buf_free(&text);
    return rc;
}

static cJSON *score_json(const mr_eplb_score *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "balancedness", s->balancedness);
    cJSON_AddNumberToObject(o, "max_over_mean", s->max_over_mean);
    cJSON_AddNumberToObject(o, "bound", s->bound);
    return o;
}

static cJSON *rows_json(const int32_t *data, int rows, int cols)
{
    cJSON *a = cJSON_CreateArray();
    for (int r = 0; r < rows; r++)
        cJSON_AddItemToArray(a, cJSON_CreateIntArray(data + (size_t)r * cols, cols));
    return a;
}

/* What one row of the table and one plan of the JSON report share. */
typedef struct {
    const char *name;
    const mr_eplb_placement *p;
    mr_eplb_score score, eval;
    double locality, ms; /* ms < 0: not solved here */
    int moved, layers_changed; /* moved < 0: no current placement */
} plan_row;

static void print_header(const plan_args *a, bool local)
{
    printf("%-13s %8s %8s %7s %7s %9s", "policy", "balance", "max/mean", "bound", "gap",
           "solve ms");
    if (a->eval)
        printf(" %8s %8s", "eval bal", "max/mean");
    if (local)
        printf(" %6s", "local");
    if (a->current)
        printf(" %7s", "moved");
    putchar('\n');
}

static void print_row(const plan_args *a, const plan_row *r, bool local)
{
    printf("%-13s %8.4f %8.3f %7.4f %6.2f%%", r->name, r->score.balancedness,
           r->score.max_over_mean, r->score.bound,
           100 * (r->score.bound - r->score.balancedness) / r->score.bound);
    if (r->ms >= 0)
        printf(" %9.2f", r->ms);
    else
        printf(" %9s", "-");
    if (a->eval)
        printf(" %8.4f %8.3f", r->eval.balancedness, r->eval.max_over_mean);
    if (local)
        printf(" %6.3f", r->locality);
    if (a->current && r->moved >= 0)
        printf(" %7d", r->moved);
    putchar('\n');
}

static cJSON *row_json(const plan_args *a, const plan_row *r, mr_eplb_policy chosen)
{
    cJSON *o = score_json(&r->score);
    cJSON_AddStringToObject(o, "policy", r->name);
    if (r->ms >= 0) {
        cJSON_AddStringToObject(o, "chosen", mr_eplb_policy_name(chosen));
        cJSON_AddNumberToObject(o, "gap_percent",
                                100 * (r->score.bound - r->score.balancedness) / r->score.bound);
        cJSON_AddNumberToObject(o, "solve_ms", r->ms);
    }
    cJSON_AddNumberToObject(o, "group_locality", r->locality);
    if (a->eval) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "balancedness", r->eval.balancedness);
        cJSON_AddNumberToObject(e, "max_over_mean", r->eval.max_over_mean);
        cJSON_AddItemToObject(o, "eval", e);
    }
    if (r->moved >= 0) {
        cJSON_AddNumberToObject(o, "experts_moved", r->moved);
        cJSON_AddNumberToObject(o, "layers_changed", r->layers_changed);
    }
    cJSON_AddItemToObject(o, "phy2log", rows_json(r->p->phy2log, r->p->n_layers, r->p->n_physical));
    cJSON_AddItemToObject(o, "logcnt", rows_json(r->p->logcnt, r->p->n_layers, r->p->n_logical));
    return o;
}

/* The figures of a placement on the trace (and the eval trace). */
static int measure(const plan_args *a, const trace *t, const trace *e, plan_row *r)
{
    char err[512];
    int rc = mr_eplb_evaluate(r->p, t->load, &r->score, err, sizeof err);
    if (rc == MR_EPLB_OK && a->eval)
        rc = mr_eplb_evaluate(r->p, e->load, &r->eval, err, sizeof err);
    if (rc == MR_EPLB_OK)
        rc = mr_eplb_group_locality(r->p, t->load, a->nodes, a->groups, &r->locality, err,
                                    sizeof err);
    if (rc != MR_EPLB_OK)
        fprintf(stderr, "moerun %s: %s\n", COMMAND, err);
    return rc == MR_EPLB_OK ? MR_EXIT_OK : exit_code(rc);
}

typedef struct {
    const plan_args *a;
    trace t, e;
    mr_eplb_placement baseline, plans[MAX_PLANS];
    bool has_current;
    cJSON *report;
} plan_state;

static int report_baseline(plan_state *st, bool local)
{
    const plan_args *a = st->a;
    char err[512];
    int rc = MR_EXIT_OK;
    if (a->current) {
        rc = read_current(a->current, &st->t, st->t.experts + a->redundant, a->ranks,
                          &st->baseline);
        st->has_current = rc == MR_EXIT_OK;
    } else if (mr_eplb_placement_contiguous(&st->baseline, st->t.layers, st->t.experts,
                                            a->ranks, err, sizeof err) != MR_EPLB_OK) {
        fprintf(stderr, "moerun %s: %s\n", COMMAND, err);
        rc = MR_EXIT_FAILED;
    }
    plan_row row = {.name = a->current ? "current" : "contiguous", .p = &st->baseline,
                    .ms = -1, .moved = -1};
    if (rc == MR_EXIT_OK)
        rc = measure(a, &st->t, &st->e, &row);
    if (rc != MR_EXIT_OK)
        return rc;
    print_row(a, &row, local);
    cJSON_AddItemToObject(st->report, "baseline", row_json(a, &row, MR_EPLB_POLICY_AUTO));
    return MR_EXIT_OK;
}

static int report_plan(plan_state *st, int i, bool local, cJSON *plans)
{
    const plan_args *a = st->a;
    char err[1024];
    mr_eplb_solve_options o = {.policy = a->policy[i],
                               .n_physical = st->t.experts + a->redundant,
                               .n_ranks = a->ranks,
                               .n_nodes = a->nodes,
                               .n_groups = a->groups,
                               .current = st->has_current ? &st->baseline : NULL,
                               .max_moves = a->max_moves};
    mr_eplb_solve_result r;
    int rc = mr_eplb_solve(st->t.load, st->t.layers, st->t.experts, &o, &st->plans[i], &r, err,
                           sizeof err);
    if (rc != MR_EPLB_OK) {
        fprintf(stderr, "moerun %s: %s\n", COMMAND, err);
        return exit_code(rc);
    }
    plan_row row = {.name = mr_eplb_policy_name(a->policy[i]), .p = &st->plans[i],
                    .ms = 1e3 * r.seconds, .moved = o.current ? r.experts_moved : -1,
                    .layers_changed = r.layers_changed};
    rc = measure(a, &st->t, &st->e, &row);
    if (rc != MR_EXIT_OK)
        return rc;
    print_row(a, &row, local);
    cJSON_AddItemToArray(plans, row_json(a, &row, r.chosen));
    return MR_EXIT_OK;
}

static int write_report(const plan_state *st)
{
    char *text = cJSON_Print(st->report);
    char err[1024];
    if (!text) {
        fprintf(stderr, "moerun %s: out of memory\n", COMMAND);
        return MR_EXIT_FAILED;
    }
    int rc = mr_runner_write_atomic(st->a->json, text, strlen(text), err, sizeof err);
    free(text);
    if (rc != MR_JOBS_OK) {
        fprintf(stderr, "moerun %s: %s\n", COMMAND, err);
        return MR_EXIT_FAILED;
    }
    return MR_EXIT_OK;
}

static int plan(const plan_args *a)
{
    plan_state st = {.a = a};
    int rc = read_trace(a->trace, &st.t);
    if (rc == MR_EXIT_OK && a->eval) {
        rc = read_trace(a->eval, &st.e);
        if (rc == MR_EXIT_OK && (st.e.layers != st.t.layers || st.e.experts != st.t.experts)) {
            fprintf(stderr, "moerun %s: %s has %d layers x %d experts, but %s has %d x %d\n",
                    COMMAND, a->eval, st.e.layers, st.e.experts, a->trace, st.t.layers,
                    st.t.experts);
            rc = MR_EXIT_INVALID;
        }
    }
    if (rc == MR_EXIT_OK)
        rc = check_fit(a, &st.t);
    bool local = a->nodes > 1 && a->groups > 1;
    st.report = cJSON_CreateObject();
    cJSON *plans = cJSON_CreateArray();
    if (rc == MR_EXIT_OK) {
        printf("%s: %d layers x %d experts; %d ranks on %d node%s, %d slots (%d redundant), "
               "%d group%s\n",
               a->trace, st.t.layers, st.t.experts, a->ranks, a->nodes, a->nodes > 1 ? "s" : "",
               st.t.experts + a->redundant, a->redundant, a->groups, a->groups > 1 ? "s" : "");
        print_header(a, local);
        cJSON_AddStringToObject(st.report, "trace", a->trace);
        if (a->eval)
            cJSON_AddStringToObject(st.report, "eval_trace", a->eval);
        cJSON_AddNumberToObject(st.report, "layers", st.t.layers);
        cJSON_AddNumberToObject(st.report, "experts", st.t.experts);
        cJSON_AddNumberToObject(st.report, "ranks", a->ranks);
        cJSON_AddNumberToObject(st.report, "nodes", a->nodes);
        cJSON_AddNumberToObject(st.report, "groups", a->groups);
        cJSON_AddNumberToObject(st.report, "redundant", a->redundant);
        cJSON_AddNumberToObject(st.report, "physical_slots", st.t.experts + a->redundant);
        rc = report_baseline(&st, local);
    }
    for (int i = 0; rc == MR_EXIT_OK && i < a->n_policies; i++)
        rc = report_plan(&st, i, local, plans);
    cJSON_AddItemToObject(st.report, "plans", plans);
    if (rc == MR_EXIT_OK && a->json)
        rc = write_report(&st);
    cJSON_Delete(st.report);
    for (int i = 0; i < MAX_PLANS; i++)
        mr_eplb_placement_free(&st.plans[i]);
    mr_eplb_placement_free(&st.baseline);
    free(st.t.load);
    free(st.e.load);
    return rc;
}

int mr_runner_eplb(int argc, char **argv)
{
    if (argc < 2)
        return mr_runner_usage_error(COMMAND, "missing subcommand: moerun eplb plan TRACE ...");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(mr_runner_usage(COMMAND), stdout);
        return MR_EXIT_OK;
    }
    if (strcmp(argv[1], "plan") != 0)
        return mr_runner_usage_error(COMMAND, "unknown subcommand '%s'; there is: plan", argv[1]);
    plan_args a;
    int rc = parse_plan_args(argc - 1, argv + 1, &a);
    return rc >= 0 ? rc : plan(&a);
}
