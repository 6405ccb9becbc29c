/*
 * Output pinned across commits: the bundled quickstart job, and a job of 40
 * requests at 1, 2, 3 and 4 ranks in both dispatch modes with online EPLB
 * moving experts, each give the digest stored here.  A refactor that moves
 * a bit fails this test; a change that must move bits says why in its
 * commit and stores the new digests (the failure message prints them).
 *
 * The fenced suite runs the same jobs on the "fenced" backend: cpu's
 * arithmetic on memory the host cannot touch outside ops, so the same
 * bytes, and a fault where the engine reads or writes backend memory other
 * than through upload and download, as it could not on a GPU.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

/* Pinned at 149deed, before the engine's boundaries were reshaped. */
#define QUICKSTART_DIGEST "50d81e44e23ca9c507ecb4f97521bb33"
#define ONLINE_DIGEST "8aeefb8860b31821495f87adeab72010"

static mr_test_scratch t;

static void setup(void)
{
    mr_test_scratch_open(&t);
}

static void teardown(void)
{
    mr_test_scratch_close(&t);
}

TestSuite(pinned, .init = setup, .fini = teardown, .timeout = 300);
TestSuite(fenced, .init = setup, .fini = teardown, .timeout = 300);

/* examples/quickstart.ini and its requests, with the model and the run
 * folder moved into the test's folder. */
static void copy_quickstart(void)
{
    size_t len;
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/quickstart.ini", getenv("MR_SOURCE_DIR"));
    char *job = mr_test_read(path, &len);
    cr_assert(job, "no %s", path);
    snprintf(path, sizeof path, "%s/examples/requests.jsonl", getenv("MR_SOURCE_DIR"));
    char *requests = mr_test_read(path, &len);
    cr_assert(requests, "no %s", path);
    const char *model = "path = ../build/models/tiny\n";
    char *at = strstr(job, model);
    cr_assert(at, "examples/quickstart.ini no longer has %s", model);
    char *text = NULL;
    cr_assert(asprintf(&text, "%.*spath = model\n%s",
                       (int)(at - job), job, at + strlen(model)) > 0);
    free(mr_test_write(t.dir, "quickstart.ini", text, (size_t)-1));
    free(mr_test_write(t.dir, "requests.jsonl", requests, len));
    free(text);
    free(job);
    free(requests);
}

/* runs/NAME ran on `backend`: its job file says so. */
static void assert_backend(const char *name, const char *backend)
{
    char path[4096], want[64];
    snprintf(path, sizeof path, "%s/runs/%s/job.ini", t.dir, name);
    snprintf(want, sizeof want, "\nbackend = %s\n", backend);
    char *job = mr_test_read(path, NULL);
    cr_assert(job && strstr(job, want), "%s does not say%s", path, want);
    free(job);
}

static void quickstart_gives_the_pinned_bytes(const char *backend)
{
    copy_quickstart();
    char set[64];
    snprintf(set, sizeof set, "engine.backend=%s", backend);
    int code = mr_test_moerun(t.dir, &t.out, &t.err, "run", "quickstart.ini", "--set",
                              "job.run_dir=runs/quickstart", "--set", set, NULL);
    cr_assert_eq(code, 0, "%s%s", t.out, t.err);
    assert_backend("quickstart", backend);
    char digest[33];
    mr_test_output_digest(t.dir, "quickstart", digest);
    cr_assert_str_eq(digest, QUICKSTART_DIGEST, "quickstart output digest %s, pinned %s", digest,
                     QUICKSTART_DIGEST);
}

static void online_eplb_gives_the_pinned_bytes(const char *backend)
{
    mr_test_write_requests(t.dir, 40);
    static const char *const modes[] = {
        "dispatch = high-throughput\n",
        "dispatch = low-latency\nll_capacity = 2\n",
    };
    for (int ranks = 1; ranks <= 4; ranks++)
        for (int m = 0; m < 2; m++) {
            char name[64], extra[512], digest[33];
            snprintf(name, sizeof name, "r%d-m%d", ranks, m);
            snprintf(extra, sizeof extra,
                     "[parallel]\nranks = %d\n%s[eplb]\nmode = online\nstep_interval = 3\n"
                     "window_steps = 6\nmin_batch_tokens = 1\nredundant_experts = 8\n"
                     "max_moves_percent = 100\n[engine]\nbackend = %s\n",
                     ranks, modes[m], backend);
            cr_assert_eq(mr_test_run_job(t.dir, name, extra, &t.out, &t.err), 0, "%s: %s%s",
                         name, t.out, t.err);
            cr_assert(strstr(t.out, "served 40 requests, 2 failed"), "%s: %s", name, t.out);
            if (ranks > 1)
                cr_assert(strstr(t.out, "eplb: step 3: "), "%s: no rebalance:\n%s", name, t.out);
            assert_backend(name, backend);
            mr_test_output_digest(t.dir, name, digest);
            cr_assert_str_eq(digest, ONLINE_DIGEST, "%s: output digest %s, pinned %s", name,
                             digest, ONLINE_DIGEST);
        }
}

Test(pinned, the_quickstart_job_gives_the_pinned_bytes)
{
    quickstart_gives_the_pinned_bytes("cpu");
}

Test(pinned, one_to_four_ranks_with_online_eplb_give_the_pinned_bytes)
{
    online_eplb_gives_the_pinned_bytes("cpu");
}

Test(fenced, the_quickstart_job_gives_the_pinned_bytes)
{
    quickstart_gives_the_pinned_bytes("fenced");
}

Test(fenced, one_to_four_ranks_with_online_eplb_give_the_pinned_bytes)
{
    online_eplb_gives_the_pinned_bytes("fenced");
}
