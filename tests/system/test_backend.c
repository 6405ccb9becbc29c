/* [engine] backend as a user meets it: `moerun --version` names the
 * backends built in, backend = cuda on a host without a usable GPU is
 * refused before the run folder is touched, and backend = auto runs there
 * on cpu and says so.  CUDA_VISIBLE_DEVICES="" hides every GPU, so each
 * test means the same on a host with GPUs as on one without. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/kernels.h"
#include "tests/common/fixture.h"

static char *dir;
static char *out, *err;

static void setup(void)
{
    dir = mr_test_tmpdir();
    out = err = NULL;
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    mr_test_make_model(dir);
    mr_test_writef(dir, "requests.jsonl",
                   "{\"custom_id\": \"a\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
                   "\"body\": {\"model\": \"m\", \"prompt\": \"one\", \"max_tokens\": 4}}\n");
    mr_test_writef(dir, "job.ini",
                   "[job]\nname = be\n[model]\npath = model\n[input]\nfiles = requests.jsonl\n");
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
    free(out);
    free(err);
}

TestSuite(backend, .init = setup, .fini = teardown);

/* moerun in the scratch folder with up to seven arguments. */
static int run_moerun(const char *arg, ...)
{
    free(out);
    free(err);
    out = err = NULL;
    const char *a[8] = {arg};
    va_list ap;
    va_start(ap, arg);
    for (int i = 1; a[i - 1] && i < 7; i++)
        a[i] = va_arg(ap, const char *);
    va_end(ap);
    return mr_test_moerun(dir, &out, &err, a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
}
#define moerun(...) run_moerun(__VA_ARGS__, NULL)

static bool built_with_cuda(void)
{
    return strstr(mr_backend_names(), "cuda") != NULL;
}

Test(backend, version_names_the_backends_built_in)
{
    cr_assert_eq(moerun("--version"), 0);
    char *want = NULL;
    cr_assert(asprintf(&want, "(backends: %s", mr_backend_names()) > 0);
    cr_assert(strncmp(out, "moerun 0.", 9) == 0 && strstr(out, want), "%s", out);
    free(want);
    cr_assert(strstr(mr_backend_names(), "cpu, ref"), "%s", mr_backend_names());
    if (built_with_cuda())
        cr_assert(strstr(out, "; built with CUDA "), "%s", out);
}

/* Every file under `path` with its size and modification time, one a
 * line (nftw walks in a fixed order for an unchanged folder). */
static FILE *listing;
static int list_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)type;
    (void)ftw;
    fprintf(listing, "%s %lld %lld.%09ld\n", path, (long long)st->st_size,
            (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    return 0;
}

static char *list_folder(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    listing = open_memstream(&text, &len);
    cr_assert(listing);
    cr_assert_eq(nftw(path, list_entry, 16, FTW_PHYS), 0, "%s", path);
    fclose(listing);
    return text;
}

static void expect_refused(void)
{
    cr_assert(strstr(err, "moerun run: ") && strstr(err, "job.ini: [engine] backend = cuda: ") &&
                  strstr(err, "backend \"cuda\": ") &&
                  strstr(err, "; backend = auto falls back to cpu where no GPU is usable\n"),
              "%s", err);
    cr_assert(!strstr(out, "planned"), "%s", out);
}

Test(backend, cuda_without_a_gpu_is_refused_before_the_run_folder)
{
    /* A new job: no run folder is made. */
    cr_assert_eq(moerun("run", "job.ini", "--set", "engine.backend=cuda"), 3, "%s%s",
                 out, err);
    expect_refused();
    char *runs = NULL;
    struct stat st;
    cr_assert(asprintf(&runs, "%s/runs", dir) > 0);
    cr_assert(stat(runs, &st) != 0, "backend = cuda made %s", runs);

    /* A finished run, asked to start afresh on cuda: refused before
     * --force-new removes anything, every file as it was. */
    cr_assert_eq(moerun("run", "job.ini"), 0, "%s%s", out, err);
    char *before = list_folder(runs);
    cr_assert(strstr(before, "/runs/be/results.jsonl "), "%s", before);
    cr_assert_eq(moerun("run", "job.ini", "--force-new", "--set", "engine.backend=cuda"), 3,
                 "%s%s", out, err);
    expect_refused();
    /* Several ranks, through the supervising process: the same. */
    cr_assert_eq(moerun("run", "job.ini", "--set", "engine.backend=cuda", "--set",
                        "parallel.ranks=2"),
                 3, "%s%s", out, err);
    expect_refused();
    /* And a resume. */
    cr_assert_eq(moerun("resume", "runs/be", "--set", "engine.backend=cuda"), 3, "%s%s", out,
                 err);
    expect_refused();
    char *after = list_folder(runs);
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
    free(runs);
}

Test(backend, auto_without_a_gpu_runs_on_cpu_and_says_so)
{
    cr_assert_eq(moerun("run", "job.ini"), 0, "%s%s", out, err);
    cr_assert(strstr(out, "\njob be: backend cpu (backend = auto)\n"), "%s", out);
    cr_assert(strstr(out, "served 1 request, 0 failed"), "%s", out);
    /* Why cuda was passed over, only where the build has it. */
    const char *why = strstr(out, "\njob be: cuda not used: backend \"cuda\": ");
    cr_assert_eq(why != NULL, built_with_cuda(), "%s", out);
    cr_assert_eq(strstr(out, "cuda not used") != NULL, built_with_cuda(), "%s", out);
    /* A backend named outright is said as it is. */
    cr_assert_eq(moerun("run", "job.ini", "--force-new", "--set", "engine.backend=ref"), 0,
                 "%s%s", out, err);
    cr_assert(strstr(out, "\njob be: backend ref\n"), "%s", out);
}

Test(backend, ranks_say_the_backend_they_run_on)
{
    cr_assert_eq(moerun("run", "job.ini", "--set", "parallel.ranks=2"), 0, "%s%s", out, err);
    cr_assert(strstr(out, "\njob be: backend cpu (backend = auto)\n"), "%s", out);
}
