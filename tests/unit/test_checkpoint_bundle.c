/* Bundles: a run folder survives export and import byte for byte, and a
 * bundle that would write outside its target, or anything but files and
 * folders, is refused with nothing left behind. */
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/checkpoint.h"
#include "tests/common/fixture.h"
#include "tests/unit/checkpoint_sample.h"

static char err[1024];
static char *dir; /* every test's scratch folder */

static void setup(void)
{
    dir = mr_test_tmpdir();
}

static void teardown(void)
{
}

TestSuite(checkpoint_bundle, .init = setup, .fini = teardown);

static char *join(const char *folder, const char *name)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", folder, name) > 0);
    return path;
}

/* A run folder as a run leaves it part way: plan, job, parts, two
 * checkpoint generations and a temporary file. */
static char *make_run(void)
{
    char *run = join(dir, "run");
    mr_test_writef(run, "plan.json", "{\"version\": 1, \"shards\": []}\n");
    mr_test_writef(run, "job.ini", "%s", CHECKPOINT_SAMPLE_JOB);
    mr_test_writef(run, "parts/shard-00000.results.jsonl", "{\"id\": \"r0\"}\n");
    char binary[70000];
    for (size_t i = 0; i < sizeof binary; i++)
        binary[i] = (char)(i * 31 % 256);
    free(mr_test_write(run, "parts/shard-00001.results.jsonl", binary, sizeof binary));
    mr_test_writef(run, "parts/empty/.keep", "%s", "");
    mr_test_writef(run, "results.jsonl.tmp", "half a join");
    mr_checkpoint_state s;
    cr_assert_eq(checkpoint_sample(&s, 4, 2, 8, 8, 2, err, sizeof err), MR_CHECKPOINT_OK);
    char *ckpt = join(run, MR_CHECKPOINT_DIR);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(mr_checkpoint_write(ckpt, &s, 3, err, sizeof err), MR_CHECKPOINT_OK, "%s",
                     err);
    free(ckpt);
    mr_checkpoint_state_free(&s);
    return run;
}

/* "path\n" for every entry below root, folders ending in '/'. */
static void list_tree(const char *root, const char *rel, mr_buf *out)
{
    char *folder = rel ? join(root, rel) : strdup(root);
    struct dirent **names;
    int n = scandir(folder, &names, NULL, alphasort);
    cr_assert_geq(n, 0, "%s", folder);
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            char *child = rel ? join(rel, name) : strdup(name);
            char *full = join(root, child);
            struct stat st;
            cr_assert_eq(lstat(full, &st), 0);
            mr_buf_append(out, child, strlen(child));
            mr_buf_append(out, S_ISDIR(st.st_mode) ? "/\n" : "\n", S_ISDIR(st.st_mode) ? 2 : 1);
            if (S_ISDIR(st.st_mode))
                list_tree(root, child, out);
            free(full);
            free(child);
        }
        free(names[i]);
    }
    free(names);
    free(folder);
}

static char *tree(const char *root)
{
    mr_buf out = {0};
    list_tree(root, NULL, &out);
    mr_buf_append(&out, "", 1);
    return out.data;
}

static void assert_same_bytes(const char *a, const char *b, const char *name)
{
    char *x = join(a, name), *y = join(b, name);
    size_t xn, yn;
    char *xd = mr_test_read(x, &xn), *yd = mr_test_read(y, &yn);
    cr_assert(xd && yd, "%s", name);
    cr_assert(xn == yn && memcmp(xd, yd, xn) == 0, "%s differs after the round trip", name);
    free(xd);
    free(yd);
    free(x);
    free(y);
}

static void export_import(const char *run, const char *bundle, const char *moved)
{
    cr_assert_eq(mr_checkpoint_export(run, bundle, err, sizeof err), MR_CHECKPOINT_OK, "%s", err);
    cr_assert_eq(mr_checkpoint_import(bundle, moved, err, sizeof err), MR_CHECKPOINT_OK, "%s",
                 err);
}

Test(checkpoint_bundle, export_then_import_gives_the_same_bytes)
{
    char *run = make_run();
    char *bundle = join(dir, "run.tar.zst"), *moved = join(dir, "moved");
    export_import(run, bundle, moved);
    char *got = tree(moved);
    cr_assert_str_eq(got, "checkpoint/\n"
                          "checkpoint/state-000001.ckpt.zst\n"
                          "checkpoint/state-000002.ckpt.zst\n"
                          "job.ini\n"
                          "parts/\n"
                          "parts/empty/\n"
                          "parts/empty/.keep\n"
                          "parts/shard-00000.results.jsonl\n"
                          "parts/shard-00001.results.jsonl\n"
                          "plan.json\n");
    for (const char *p = got; *p;) {
        size_t len = strcspn(p, "\n");
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)len, p);
        if (name[len - 1] != '/')
            assert_same_bytes(run, moved, name);
        p += len + 1;
    }
    char *ckpt = join(moved, MR_CHECKPOINT_DIR);
    mr_checkpoint_state s;
    char warning[256];
    cr_assert_eq(mr_checkpoint_load_latest(ckpt, &s, warning, sizeof warning, err, sizeof err),
                 MR_CHECKPOINT_OK, "%s", err);
    cr_assert_eq(s.generation, 2);
    mr_checkpoint_state_free(&s);
    free(ckpt);
    free(got);
    free(bundle);
    free(moved);
    free(run);
}

Test(checkpoint_bundle, a_bundle_inside_the_run_folder_leaves_itself_out)
{
    char *run = make_run();
    char *bundle = join(run, "run.tar.zst"), *moved = join(dir, "moved");
    cr_assert_eq(mkdir(moved, 0777), 0, "an empty target folder is fine");
    /* The second export finds the first bundle in the folder. */
    cr_assert_eq(mr_checkpoint_export(run, bundle, err, sizeof err), MR_CHECKPOINT_OK, "%s", err);
    export_import(run, bundle, moved);
    char *got = tree(moved);
    cr_assert(!strstr(got, "run.tar.zst"), "%s", got);
    cr_assert(strstr(got, "plan.json"), "%s", got);
    cr_assert_eq(mr_checkpoint_import(bundle, moved, err, sizeof err), MR_CHECKPOINT_EINVAL);
    cr_assert(strstr(err, "cannot import into "), "%s", err);
    cr_assert(strstr(err, "moved: it is not empty"), "%s", err);
    free(got);
    free(bundle);
    free(moved);
    free(run);
}

Test(checkpoint_bundle, export_refuses_a_link_in_the_run_folder)
{
    char *run = make_run();
    char *link = join(run, "parts/model"), *bundle = join(dir, "run.tar.zst");
    cr_assert_eq(symlink("/etc", link), 0);
    cr_assert_eq(mr_checkpoint_export(run, bundle, err, sizeof err), MR_CHECKPOINT_EINVAL);
    char want[512];
    snprintf(want, sizeof want,
             "%s is a symbolic link: a bundle holds only files and folders, so move it out of "
             "the run folder",
             link);
    cr_assert_str_eq(err, want);
    char *left = tree(dir);
    cr_assert_str_eq(left, "run/\n" /* no bundle, no temporary file */
                                "run/checkpoint/\n"
                                "run/checkpoint/state-000001.ckpt.zst\n"
                                "run/checkpoint/state-000002.ckpt.zst\n"
                                "run/job.ini\n"
                                "run/parts/\n"
                                "run/parts/empty/\n"
                                "run/parts/empty/.keep\n"
                                "run/parts/model\n"
                                "run/parts/shard-00000.results.jsonl\n"
                                "run/parts/shard-00001.results.jsonl\n"
                                "run/plan.json\n"
                                "run/results.jsonl.tmp\n");
    free(left);
    free(link);
    free(bundle);
    free(run);
}

/* ------------------------------------------------------------------------
 * Hostile bundles, made with libarchive's writer
 * ------------------------------------------------------------------------ */
typedef struct {
    const char *name;
    unsigned type;    /* AE_IF* */
    const char *link; /* a symlink's target, or a hard link's other name */
} entry_spec;

static void make_bundle(const char *path, const entry_spec *entries, size_t n)
{
    struct archive *a = archive_write_new();
    cr_assert_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    cr_assert_eq(archive_write_add_filter_zstd(a), ARCHIVE_OK);
    cr_assert_eq(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, entries[i].name);
        bool hard = entries[i].link && entries[i].type == AE_IFREG;
        bool data = entries[i].type == AE_IFREG && !hard;
        archive_entry_set_filetype(e, entries[i].type);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, data ? 4 : 0);
        if (hard)
            archive_entry_set_hardlink(e, entries[i].link);
        else if (entries[i].link)
            archive_entry_set_symlink(e, entries[i].link);
        if (entries[i].type == AE_IFCHR) {
            archive_entry_set_rdevmajor(e, 1);
            archive_entry_set_rdevminor(e, 3);
        }
        cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s", archive_error_string(a));
        if (data)
            cr_assert_eq(archive_write_data(a, "data", 4), 4);
        archive_entry_free(e);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* The bundle (a good file, then `bad`) is refused for `why`, and the
 * folder holds nothing but the bundle afterwards. */
static void assert_refused(const entry_spec *bad, const char *why)
{
    char *bundle = join(dir, "evil.tar.zst"), *target = join(dir, "moved");
    entry_spec entries[] = {{"plan.json", AE_IFREG, NULL}, *bad};
    make_bundle(bundle, entries, 2);
    cr_assert_eq(mr_checkpoint_import(bundle, target, err, sizeof err), MR_CHECKPOINT_EINVAL);
    char want[1024];
    snprintf(want, sizeof want,
             "bundle %s refused: entry '%s' %s; a bundle holds only files and folders inside "
             "the run folder",
             bundle, bad->name, why);
    cr_assert_str_eq(err, want);
    char *left = tree(dir);
    cr_assert_str_eq(left, "evil.tar.zst\n");
    free(left);
    free(bundle);
    free(target);
}

Test(checkpoint_bundle, an_absolute_path_is_refused)
{
    assert_refused(&(entry_spec){"/tmp/moerun-evil", AE_IFREG, NULL}, "has an absolute path");
    cr_assert_neq(access("/tmp/moerun-evil", F_OK), 0);
}

Test(checkpoint_bundle, a_dot_dot_component_is_refused)
{
    assert_refused(&(entry_spec){"checkpoint/../../escaped", AE_IFREG, NULL},
                   "climbs out of the target with '..'");
}

Test(checkpoint_bundle, a_symlink_is_refused)
{
    assert_refused(&(entry_spec){"parts", AE_IFLNK, "/etc"},
                   "is a symbolic link (to '/etc')");
}

Test(checkpoint_bundle, a_hard_link_is_refused)
{
    assert_refused(&(entry_spec){"copy", AE_IFREG, "/etc/passwd"},
                   "is a hard link (to '/etc/passwd')");
}

Test(checkpoint_bundle, a_device_is_refused)
{
    assert_refused(&(entry_spec){"dev/null", AE_IFCHR, NULL}, "is a device");
}

Test(checkpoint_bundle, a_fifo_is_refused)
{
    assert_refused(&(entry_spec){"pipe", AE_IFIFO, NULL}, "is a FIFO");
}

Test(checkpoint_bundle, a_file_that_is_no_bundle_says_so)
{
    char *bundle = mr_test_write(dir, "notes.txt", "not a tar file at all\n", (size_t)-1);
    char *target = join(dir, "moved");
    cr_assert_eq(mr_checkpoint_import(bundle, target, err, sizeof err), MR_CHECKPOINT_EINVAL);
    cr_assert(strstr(err, "bundle ") && strstr(err, "notes.txt: "), "%s", err);
    char *left = tree(dir);
    cr_assert_str_eq(left, "notes.txt\n");
    free(left);
    free(bundle);
    free(target);
}

/* A zstd bomb in small: an entry of 24 MiB of zeros packs into about a
 * kilobyte, far past the 1000-fold expansion (plus 16 MiB) a bundle may
 * have.  Refused at its header, before any of it is written. */
Test(checkpoint_bundle, a_decompression_bomb_is_refused_at_its_header)
{
    char *bundle = join(dir, "bomb.tar.zst"), *target = join(dir, "moved");
    struct archive *a = archive_write_new();
    cr_assert_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    cr_assert_eq(archive_write_add_filter_zstd(a), ARCHIVE_OK);
    cr_assert_eq(archive_write_open_filename(a, bundle), ARCHIVE_OK);
    const char *names[] = {"plan.json", "parts/shard-00000.results.jsonl"};
    const size_t sizes[] = {4, 24u << 20};
    char *zeros = calloc(1, sizes[1]);
    for (int i = 0; i < 2; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)sizes[i]);
        cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s", archive_error_string(a));
        cr_assert_eq(archive_write_data(a, zeros, sizes[i]), (la_ssize_t)sizes[i]);
        archive_entry_free(e);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    free(zeros);
    struct stat st;
    cr_assert_eq(stat(bundle, &st), 0);
    cr_assert_lt(st.st_size, 8192, "the bundle is a bomb: %lld bytes", (long long)st.st_size);

    cr_assert_eq(mr_checkpoint_import(bundle, target, err, sizeof err), MR_CHECKPOINT_EINVAL);
    char want[1024];
    snprintf(want, sizeof want,
             "bundle %s refused: entry 'parts/shard-00000.results.jsonl' takes it past %llu "
             "bytes unpacked, 1000 times its size plus 16 MiB; a run folder compresses far "
             "less (a decompression bomb?)",
             bundle, (unsigned long long)st.st_size * 1000 + (16ULL << 20));
    cr_assert_str_eq(err, want);
    char *left = tree(dir);
    cr_assert_str_eq(left, "bomb.tar.zst\n", "plan.json, unpacked first, is gone too");
    free(left);
    free(bundle);
    free(target);
}
