/* The job file: every key valid, invalid, misspelt and overridden; inih's
 * line-length and multi-line behaviour; the documentation of every key. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"
#include "tests/common/fixture.h"

#define BASE_INI "[model]\npath = model\n[input]\nfiles = requests.jsonl\n"

static char *dir;
static char err[1 << 16];

static void setup(void)
{
    dir = mr_test_tmpdir();
    mr_test_make_model(dir);
    free(mr_test_write(dir, "requests.jsonl", "{\"id\": 1, \"prompt\": \"hi\"}\n", (size_t)-1));
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(job, .init = setup, .fini = teardown);

/* The job after defaults, as `key = value` lines. */
static char *formatted(const mr_job *job)
{
    mr_buf out = {0};
    cr_assert_eq(mr_job_format(job, &out), MR_JOBS_OK);
    return out.data;
}

static bool is_base_key(const mr_job_key_info *k)
{
    return (!strcmp(k->section, "model") && !strcmp(k->key, "path")) ||
           (!strcmp(k->section, "input") && !strcmp(k->key, "files"));
}

/* Job text that sets one key: model.path and input.files on lines 2 and 4,
 * any other key on line 6. */
/* The keys valid only together (a list price alone sets no ratio to
 * split the cost by): the line that completes a key's pair, after it. */
static const char *partner_of(const mr_job_key_info *k)
{
    if (strcmp(k->section, "cost") != 0)
        return "";
    if (!strcmp(k->key, "input_usd_per_million"))
        return "output_usd_per_million = 1\n";
    return strcmp(k->key, "output_usd_per_million") ? "" : "input_usd_per_million = 1\n";
}

static char *ini_with(const mr_job_key_info *k, const char *value)
{
    char *ini = NULL;
    bool base = is_base_key(k);
    cr_assert(asprintf(&ini, "[model]\npath = %s\n[input]\nfiles = %s\n", 
                       base && k->section[0] == 'm' ? value : "model",
                       base && k->section[0] == 'i' ? value : "requests.jsonl") > 0);
    if (!base) {
        char *more = NULL;
        cr_assert(asprintf(&more, "%s[%s]\n%s = %s\n%s", ini, k->section, k->key, value,
                           partner_of(k)) > 0);
        free(ini);
        ini = more;
    }
    return ini;
}

static int line_of(const mr_job_key_info *k)
{
    if (!is_base_key(k))
        return 6;
    return k->section[0] == 'm' ? 2 : 4;
}

/* A valid value of each type and the text mr_job_format gives back for it. */
static void valid_value(const mr_job_key_info *k, int variant, char *value, char *expect,
                        size_t n)
{
    if (strcmp(k->type, "INT") == 0) {
        /* a double cannot hold INT64_MAX exactly */
        if (variant && k->max >= 9.2e18)
            snprintf(value, n, "%lld", (long long)INT64_MAX);
        else
            snprintf(value, n, "%.0f", variant ? k->max : k->min);
        snprintf(expect, n, "%s", value);
    } else if (strcmp(k->type, "FLOAT") == 0) {
        snprintf(value, n, "%g", variant ? k->max : (k->min + k->max) / 2);
        snprintf(expect, n, "%.17g", strtod(value, NULL));
    } else if (strcmp(k->type, "ENUM") == 0) {
        const char *c = k->choices;
        for (int i = 0; i < variant && strchr(c, ','); i++)
            c = strchr(c, ',') + 1;
        snprintf(value, n, "%.*s", (int)strcspn(c, ","), c);
        snprintf(expect, n, "%s", value);
    } else if (strcmp(k->type, "STRINGS") == 0) {
        snprintf(value, n, variant ? "\"###\"" : "[\"\\n\\n\", \"END\"]");
        snprintf(expect, n, variant ? "[\"###\"]" : "[\"\\n\\n\",\"END\"]");
    } else if (strcmp(k->type, "PATHS") == 0) {
        snprintf(value, n, "requests.jsonl");
        snprintf(expect, n, "%s/requests.jsonl", dir);
    } else if (strcmp(k->type, "PATH") == 0) {
        snprintf(value, n, variant ? "/abs/where" : "sub/where");
        snprintf(expect, n, variant ? "/abs/where" : "%s/sub/where", dir);
    } else {
        snprintf(value, n, "name-%d", variant);
        snprintf(expect, n, "%s", value);
    }
}

static void expect_line(const char *text, const mr_job_key_info *k, const char *expect)
{
    char *line = NULL;
    cr_assert(asprintf(&line, "\n%s = %s\n", k->key, expect) > 0);
    char *section = NULL;
    cr_assert(asprintf(&section, "[%s]\n", k->section) > 0);
    const char *at = strstr(text, section);
    cr_assert(at, "no [%s] in\n%s", k->section, text);
    cr_assert(strstr(at, line), "%s.%s: expected '%s' in\n%s", k->section, k->key,
              expect, text);
    free(line);
    free(section);
}

Test(job, every_key_accepts_valid_values)
{
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    cr_assert_gt(n, 25);
    for (size_t i = 0; i < n; i++) {
        for (int variant = 0; variant < 2; variant++) {
            char value[512], expect[512];
            valid_value(&keys[i], variant, value, expect, sizeof value);
            char *ini = ini_with(&keys[i], value);
            mr_job job;
            int rc = mr_test_load_job(&job, dir, ini, NULL, 0, err, sizeof err);
            cr_assert_eq(rc, MR_JOBS_OK, "%s.%s = %s: %s", keys[i].section, keys[i].key,
                         value, err);
            char *text = formatted(&job);
            expect_line(text, &keys[i], expect);
            free(text);
            mr_job_free(&job);
            free(ini);
        }
    }
}

Test(job, defaults_fill_unset_keys)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI, NULL, 0, err, sizeof err), MR_JOBS_OK,
                 "%s", err);
    cr_assert_str_eq(job.job_name, "job");
    char *run_dir = NULL;
    cr_assert(asprintf(&run_dir, "%s/runs/job", dir) > 0);
    cr_assert_str_eq(job.job_run_dir, run_dir);
    cr_assert_eq(job.eplb_mode, MR_EPLB_MODE_STATIC_ONLINE);
    cr_assert_eq(job.eplb_step_interval, 100);
    cr_assert_eq(job.generation_max_tokens, 256);
    cr_assert_eq(job.parallel_ranks, 1);
    cr_assert_eq(job.input_format, MR_FORMAT_OPENAI_BATCH);
    cr_assert_eq(job.generation_stop.count, 0);
    cr_assert_null(job.eplb_calibration);
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    char *text = formatted(&job);
    for (size_t i = 0; i < n; i++)
        if (keys[i].default_value && strcmp(keys[i].type, "FLOAT") && strcmp(keys[i].type,
                                                                              "STRINGS"))
            expect_line(text, &keys[i], keys[i].default_value);
    free(text);
    free(run_dir);
    mr_job_free(&job);
}

/* Values each type must refuse, with the reason the message must give. */
static size_t invalid_values(const mr_job_key_info *k, char values[][64])
{
    size_t n = 0;
    if (!strcmp(k->type, "INT") || !strcmp(k->type, "FLOAT")) {
        snprintf(values[n++], 64, "ten");
        snprintf(values[n++], 64, "%.0f", k->min - 1);
        snprintf(values[n++], 64, "%.0f", k->max * 2 + 1);
        snprintf(values[n++], 64, "5x");
    }
    if (!strcmp(k->type, "INT"))
        snprintf(values[n++], 64, "1.5");
    if (!strcmp(k->type, "FLOAT"))
        snprintf(values[n++], 64, "nan");
    if (!strcmp(k->type, "ENUM"))
        snprintf(values[n++], 64, "bogus");
    if (!strcmp(k->type, "STRINGS")) {
        snprintf(values[n++], 64, "[1, 2]");
        snprintf(values[n++], 64, "unquoted");
    }
    if (!strcmp(k->type, "PATHS"))
        snprintf(values[n++], 64, "missing.jsonl");
    return n;
}

Test(job, every_key_refuses_invalid_values_naming_file_and_line)
{
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        char values[8][64];
        size_t nv = invalid_values(&keys[i], values);
        for (size_t v = 0; v < nv; v++) {
            char *ini = ini_with(&keys[i], values[v]);
            mr_job job;
            int rc = mr_test_load_job(&job, dir, ini, NULL, 0, err, sizeof err);
            cr_assert_eq(rc, MR_JOBS_EINVAL, "%s.%s = %s was accepted", keys[i].section,
                         keys[i].key, values[v]);
            cr_assert_null(job.source, "a failed load leaves the job empty");
            char *where = NULL;
            cr_assert(asprintf(&where, "job.ini:%d: ", line_of(&keys[i])) > 0);
            cr_assert(strstr(err, where), "%s.%s = %s: '%s' lacks '%s'", keys[i].section,
                      keys[i].key, values[v], err, where);
            cr_assert(strstr(err, keys[i].key) || strstr(err, values[v]), "%s", err);
            free(where);
            free(ini);
            checked++;
        }
    }
    cr_assert_gt(checked, 60);
}

Test(job, enum_typo_suggests_the_choice)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[eplb]\nstrategy = hierarchial\n", NULL,
                                  0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:6: eplb.strategy must be one of "
                          "auto,global,hierarchical,deepseek; "
                          "did you mean 'hierarchical'?"),
              "%s", err);
}

/* Misspell a key the way fingers do. */
static void misspell(const char *key, int how, char *out, size_t n)
{
    size_t len = strlen(key);
    if (how == 0)
        snprintf(out, n, "%s%c", key, key[len - 1]); /* doubled last letter */
    else if (how == 1)
        snprintf(out, n, "%c%s", key[0], key + 2); /* dropped letter */
    else
        snprintf(out, n, "%.*s%c%c%s", (int)(len / 2 - 1), key, key[len / 2], key[len / 2 - 1],
                 key + len / 2 + 1); /* swapped letters */
}

Test(job, every_misspelt_key_gets_a_suggestion)
{
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        for (int how = 0; how < 3; how++) {
            char typo[64];
            misspell(keys[i].key, how, typo, sizeof typo);
            if (!strcmp(typo, keys[i].key))
                continue; /* swapping two equal letters */
            char *ini = NULL;
            cr_assert(asprintf(&ini, BASE_INI "[%s]\n%s = 1\n", keys[i].section, typo) > 0);
            mr_job job;
            cr_assert_eq(mr_test_load_job(&job, dir, ini, NULL, 0, err, sizeof err),
                         MR_JOBS_EINVAL, "%s accepted", typo);
            char *want = NULL;
            cr_assert(asprintf(&want, "job.ini:6: unknown key '%s' in [%s]; did you mean '%s'?",
                               typo, keys[i].section, keys[i].key) > 0);
            cr_assert(strstr(err, want), "%s: got '%s'", want, err);
            free(want);
            free(ini);
        }
    }
}

Test(job, key_in_the_wrong_section_says_where_it_belongs)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[model]\nredundant_experts = 32\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:6: unknown key 'redundant_experts' in [model]; it belongs "
                          "in [eplb]"),
              "%s", err);
}

Test(job, unknown_section_is_reported_even_without_keys)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[epbl]\n", NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:5: unknown section [epbl]; did you mean [eplb]?"), "%s",
              err);
}

Test(job, missing_required_keys_are_named)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, "[model]\n[engine]\nthreads = 1\n", NULL, 0, err,
                                  sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:1: [model] lacks the required key 'path'"), "%s", err);
    cr_assert(strstr(err, "required key 'files' in section [input] is missing"), "%s", err);
}

Test(job, a_key_set_twice_is_an_error)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[eplb]\nmode = off\nmode = static\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:7: 'mode' in [eplb] is set twice (first at line 6)"), "%s",
              err);
}

Test(job, key_before_any_section)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, "name = x\n" BASE_INI, NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:1: key 'name' comes before any [section]"), "%s", err);
}

Test(job, syntax_error_names_the_line)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[eplb\n", NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:5: cannot read this line"), "%s", err);
}

Test(job, every_key_can_be_overridden)
{
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        char file_value[512], value[512], expect[512], ignored[512];
        valid_value(&keys[i], 0, file_value, ignored, sizeof file_value);
        valid_value(&keys[i], 1, value, expect, sizeof value);
        char *ini = ini_with(&keys[i], file_value);
        char *assignment = NULL;
        cr_assert(asprintf(&assignment, "%s.%s=%s", keys[i].section, keys[i].key, value) > 0);
        mr_job_override o = {assignment};
        mr_job job;
        cr_assert_eq(mr_test_load_job(&job, dir, ini, &o, 1, err, sizeof err), MR_JOBS_OK,
                     "--set %s: %s", assignment, err);
        char *text = formatted(&job);
        expect_line(text, &keys[i], expect);
        free(text);
        mr_job_free(&job);
        free(assignment);
        free(ini);
    }
}

Test(job, bad_overrides_are_named)
{
    static const struct {
        const char *set, *message;
    } cases[] = {
        {"eplb.step_intervall=5", "--set eplb.step_intervall=5: unknown key 'step_intervall' "
                                  "in [eplb]; did you mean 'step_interval'?"},
        {"elpb.mode=off", "--set elpb.mode=off: unknown section [elpb]; did you mean [eplb]?"},
        {"eplb.step_interval=0", "--set eplb.step_interval=0: eplb.step_interval must be a "
                                 "whole number from 1 to"},
        {"step_interval=5", "--set step_interval=5: expected section.key=value"},
        {"eplb.mode", "--set eplb.mode: expected section.key=value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mr_job_override o = {cases[i].set};
        mr_job job;
        cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI, &o, 1, err, sizeof err),
                     MR_JOBS_EINVAL, "%s", cases[i].set);
        cr_assert(strstr(err, cases[i].message), "want '%s', got '%s'", cases[i].message, err);
    }
}

Test(job, empty_value_means_default)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[eplb]\ncalibration =\nmode =\n", NULL,
                                  0, err, sizeof err),
                 MR_JOBS_OK, "%s", err);
    cr_assert_null(job.eplb_calibration);
    cr_assert_eq(job.eplb_mode, MR_EPLB_MODE_STATIC_ONLINE);
    mr_job_free(&job);
}

Test(job, crlf_job_file)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  "[model]\r\npath = model\r\n[input]\r\nfiles = "
                                  "requests.jsonl\r\n[eplb]\r\nmode = off\r\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_OK, "%s", err);
    cr_assert_eq(job.eplb_mode, MR_EPLB_MODE_OFF);
    cr_assert_eq(job.input_files.count, 1);
    mr_job_free(&job);
}

/* Many inputs with long names on one `files =` line: inih's stock buffer is
 * 200 bytes, so a cut line would lose all but the first few. */
Test(job, long_files_line_is_read_whole)
{
    enum { N = 600 };
    mr_buf ini = {0};
    mr_buf_append(&ini, "[model]\npath = model\n[input]\nfiles =", 36);
    for (int i = 0; i < N; i++) {
        char name[256];
        snprintf(name, sizeof name, "inputs/%0200d.jsonl", i);
        free(mr_test_write(dir, name, "\n", 1));
        mr_buf_append(&ini, " ", 1);
        mr_buf_append(&ini, name, strlen(name));
    }
    mr_buf_append(&ini, "\n", 1);
    cr_assert_gt(ini.len, 120000);
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, ini.data, NULL, 0, err, sizeof err), MR_JOBS_OK,
                 "%.300s", err);
    cr_assert_eq(job.input_files.count, N);
    cr_assert(strstr(job.input_files.items[N - 1], "599.jsonl"));
    mr_job_free(&job);
    mr_buf_free(&ini);
}

Test(job, line_longer_than_a_mebibyte_is_refused_by_number)
{
    mr_buf ini = {0};
    mr_buf_append(&ini, "[model]\npath = model\n[input]\nfiles = requests.jsonl", 51);
    for (int i = 0; i < (1 << 20) / 8 + 1; i++)
        mr_buf_append(&ini, ",,,,,,,,", 8);
    mr_buf_append(&ini, "\n[eplb]\nmode = off\n", 19);
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, ini.data, NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:4: line is 1048607 bytes, longer than the 1048574 a job "
                          "file line may be"),
              "%s", err);
    cr_assert_null(strstr(err, "lacks the required key"), "%s", err);
    mr_buf_free(&ini);
}

Test(job, indented_lines_continue_the_list_of_files)
{
    free(mr_test_write(dir, "more/a.jsonl", "\n", 1));
    free(mr_test_write(dir, "more/b.jsonl", "\n", 1));
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  "[model]\npath = model\n[input]\nfiles = requests.jsonl\n"
                                  "    more/a.jsonl,\n\tmore/b.jsonl\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_OK, "%s", err);
    cr_assert_eq(job.input_files.count, 3);
    cr_assert(strstr(job.input_files.items[2], "more/b.jsonl"));
    mr_job_free(&job);
}

Test(job, indented_line_after_a_single_value_key_is_an_error)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir, BASE_INI "[job]\nname = a\n  b\n", NULL, 0, err,
                                  sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:7: indented line continues 'name' from line 6"), "%s", err);
}

Test(job, globs_quotes_and_duplicates_in_files)
{
    free(mr_test_write(dir, "in/part-1.jsonl", "\n", 1));
    free(mr_test_write(dir, "in/part-2.jsonl", "\n", 1));
    free(mr_test_write(dir, "in dir/x.jsonl", "\n", 1));
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  "[model]\npath = model\n[input]\n"
                                  "files = in/part-*.jsonl, \"in dir/x.jsonl\"\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_OK, "%s", err);
    cr_assert_eq(job.input_files.count, 3);
    cr_assert(strstr(job.input_files.items[0], "in/part-1.jsonl"));
    cr_assert(strstr(job.input_files.items[2], "in dir/x.jsonl"));
    mr_job_free(&job);

    cr_assert_eq(mr_test_load_job(&job, dir,
                                  "[model]\npath = model\n[input]\n"
                                  "files = in/*.jsonl in/part-1.jsonl nothing-*.jsonl\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "part-1.jsonl' is listed twice"), "%s", err);
    cr_assert(strstr(err, "pattern 'nothing-*.jsonl' matches no file"), "%s", err);
}

/* "~/" is the home folder, "~x" a name like any other.  A HOME longer than
 * the job's folder once overflowed the path made of "~x" (tests/fuzz). */
Test(job, tilde_is_home_only_before_a_slash)
{
    char home[512], expect[600];
    memset(home, 'h', sizeof home - 1);
    home[0] = '/';
    home[sizeof home - 1] = '\0';
    cr_assert_eq(setenv("HOME", home, 1), 0);
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  "[model]\npath = ~x\n[input]\nfiles = requests.jsonl\n"
                                  "[eplb]\ncalibration = ~/trace.jsonl\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_OK, "%s", err);
    snprintf(expect, sizeof expect, "%s/~x", dir);
    cr_assert_str_eq(job.model_path, expect);
    snprintf(expect, sizeof expect, "%s/trace.jsonl", home);
    cr_assert_str_eq(job.eplb_calibration, expect);
    mr_job_free(&job);
}

Test(job, all_errors_are_reported_at_once)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  BASE_INI "[eplb]\nmode = sometimes\nstep_interval = -1\n"
                                           "[cost]\ngpu_hour_usd = cheap\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "job.ini:6:") && strstr(err, "job.ini:7:") &&
                  strstr(err, "job.ini:9:"),
              "%s", err);
}

Test(job, list_prices_go_in_pairs)
{
    mr_job job;
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  BASE_INI "[cost]\ninput_usd_per_million = 0.15\n", NULL, 0,
                                  err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "[cost] input_usd_per_million and output_usd_per_million go together"),
              "%s", err);
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  BASE_INI "[cost]\noutput_usd_per_million = -2\n", NULL, 0,
                                  err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "output_usd_per_million"), "%s", err);
    cr_assert_eq(mr_test_load_job(&job, dir,
                                  BASE_INI "[cost]\ninput_usd_per_million = 0.15\n"
                                           "output_usd_per_million = 0.60\n",
                                  NULL, 0, err, sizeof err),
                 MR_JOBS_OK, "%s", err);
    cr_assert_eq(job.cost_input_usd_per_million, 0.15);
    cr_assert_eq(job.cost_output_usd_per_million, 0.60);
    mr_job_free(&job);
}

Test(job, missing_job_file)
{
    mr_job job;
    cr_assert_eq(mr_job_load(&job, "/nonexistent/job.ini", NULL, 0, err, sizeof err),
                 MR_JOBS_EINVAL);
    cr_assert(strstr(err, "/nonexistent/job.ini: cannot open job file"), "%s", err);
}

Test(job, every_key_is_documented)
{
    const char *source = getenv("MR_SOURCE_DIR");
    cr_assert(source, "MR_SOURCE_DIR must name the source tree (make test sets it)");
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/docs/job-file.md", source) > 0);
    char *doc = mr_test_read(path, NULL);
    cr_assert(doc, "cannot read %s", path);
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        char *row = NULL;
        cr_assert(asprintf(&row, "| `%s.%s` |", keys[i].section, keys[i].key) > 0);
        cr_assert(strstr(doc, row), "docs/job-file.md lacks the row %s", row);
        free(row);
    }
    free(doc);
    free(path);
}

Test(suggest, nearest_or_nothing)
{
    const char *const names[] = {"step_interval", "window_steps", "mode", "strategy"};
    cr_assert_str_eq(mr_suggest("stepinterval", names, 4), "step_interval");
    cr_assert_str_eq(mr_suggest("strategy", names, 4), "strategy");
    cr_assert_str_eq(mr_suggest("mdoe", names, 4), "mode");
    cr_assert_null(mr_suggest("gpu", names, 4));
    cr_assert_null(mr_suggest("", names, 4));
}
