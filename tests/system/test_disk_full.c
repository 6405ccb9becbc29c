/* A run folder whose disk fills: a clear error naming the file and the
 * folder, exit code 6 with no restart spent, and once space is freed a
 * resume that gives the same bytes as a run that never stopped.  The small
 * disk is a tmpfs mounted on the run folder, which needs root (or
 * CAP_SYS_ADMIN); without it the test is skipped, saying so. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tests/common/fixture.h"
#include "tests/common/job_run.h"

static mr_test_scratch t;
static char mounted[4096];

static void setup(void)
{
    mr_test_scratch_open(&t);
}

static void teardown(void)
{
    if (mounted[0])
        umount2(mounted, MNT_DETACH);
    mounted[0] = '\0';
    mr_test_scratch_close(&t);
}

TestSuite(disk_full, .init = setup, .fini = teardown, .timeout = 300);

/* Bytes of every file under runs/NAME. */
static long long folder_bytes(const char *name)
{
    char command[4200];
    snprintf(command, sizeof command, "du -sb --apparent-size '%s/runs/%s' | cut -f1", t.dir,
             name);
    FILE *p = popen(command, "r");
    long long bytes = -1;
    cr_assert(p && fscanf(p, "%lld", &bytes) == 1, "%s", command);
    pclose(p);
    return bytes;
}

/* A file of `bytes` zeros at path (so tmpfs pages are really taken). */
static void fill(const char *path, long long bytes)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s: %s", path, strerror(errno));
    static char block[65536];
    for (long long left = bytes; left > 0; left -= (long long)sizeof block)
        fwrite(block, 1, left < (long long)sizeof block ? (size_t)left : sizeof block, f);
    cr_assert_eq(fclose(f), 0, "%s: %s", path, strerror(errno));
}

Test(disk_full, a_full_disk_spends_no_restart_and_resume_loses_nothing)
{
    mr_test_write_requests(t.dir, 120);
    cr_assert_eq(mr_test_run_job(t.dir, "ref", "[parallel]\nranks = 1\n", &t.out, &t.err), 0,
                 "%s%s", t.out, t.err);
    long long need = folder_bytes("ref");

    /* A disk of four times what the run needs, filled but for a third of
     * it: the run gets going, then a write finds it full. */
    snprintf(mounted, sizeof mounted, "%s/runs/full", t.dir);
    cr_assert_eq(mkdir(mounted, 0755), 0);
    char options[64];
    snprintf(options, sizeof options, "size=%lld", 4 * need + (1 << 20));
    if (mount("tmpfs", mounted, "tmpfs", 0, options) != 0) {
        int err = errno;
        mounted[0] = '\0';
        cr_skip("cannot mount a small tmpfs for the run folder (%s): needs root", strerror(err));
    }
    char filler[4200];
    snprintf(filler, sizeof filler, "%s/filler", mounted);
    struct statvfs fs;
    cr_assert_eq(statvfs(mounted, &fs), 0);
    fill(filler, (long long)fs.f_bavail * (long long)fs.f_frsize - need / 3);

    mr_test_write_job(t.dir, "full", "[parallel]\nranks = 2\n[checkpoint]\ninterval_seconds = 0.2\n");
    free(t.out);
    free(t.err);
    int code = mr_test_moerun(t.dir, &t.out, &t.err, "run", "full.ini", "--max-restarts", "2",
                              NULL);
    cr_assert_eq(code, 6, "exit %d:\n%s%s", code, t.out, t.err);
    cr_assert(strstr(t.err, "No space left on device"), "%s", t.err);
    cr_assert(strstr(t.err, "is full"), "%s", t.err);
    cr_assert(strstr(t.err, mounted), "the message names the folder:\n%s", t.err);
    cr_assert_null(strstr(t.out, "restarting"), "a full disk spent a restart:\n%s", t.out);

    cr_assert_eq(unlink(filler), 0);
    free(t.out);
    free(t.err);
    code = mr_test_moerun(t.dir, &t.out, &t.err, "resume", "runs/full", NULL);
    cr_assert_eq(code, 0, "exit %d:\n%s%s", code, t.out, t.err);
    mr_test_assert_same_output(t.dir, "ref", "full");
}
