/*
 * What fingerprinting the inputs costs at each start of a run: the
 * project's mr_checkpoint_fingerprint_make (XXH3 of the whole file and of
 * each shard) on a generated JSONL file, against a plain read of the same
 * file in the same blocks, in MB/s.  Measured from the page cache (the
 * hash's own cost: the planning pass has just read the file) and after
 * dropping the file from it (what a resume on a cold node pays), and on a
 * zstd-compressed copy (MB/s of decompressed bytes).
 *
 * The file, MR_BENCH_FP_MB MiB (default 1024), is written under
 * $MR_BENCH_DIR, else $TMPDIR, else /tmp, and removed afterwards.
 * argv[1] (the model folder `make bench` passes) is not used.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "checkpoint/checkpoint.h"

#define BLOCK (1 << 20) /* as the fingerprint reads */
#define SHARD_BYTES (64u << 20)
#define ROUNDS 3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const char *what, const char *why)
{
    fprintf(stderr, "bench_fingerprint: %s: %s\n", what, why);
    exit(1);
}

/* Request lines of varied length, as a batch file holds; returns the
 * line starts of shards of about SHARD_BYTES through *cuts. */
static size_t write_input(const char *path, size_t bytes, size_t **cuts, size_t *n_cuts)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fail(path, "cannot create");
    static char line[2048], filler[1800]; /* NUL-terminated: %.*s stops there */
    static const char sentence[] = "Summarise the following passage and name its main claim: "
                                   "the committee reviews the quarterly figures. ";
    for (size_t i = 0; i + 1 < sizeof filler; i++)
        filler[i] = sentence[i % (sizeof sentence - 1)];
    size_t done = 0, n = 0;
    *cuts = malloc((bytes / SHARD_BYTES + 2) * sizeof **cuts);
    (*cuts)[n++] = 0;
    unsigned seed = 1;
    for (size_t i = 0; done < bytes; i++) {
        int pad = 200 + rand_r(&seed) % 1400;
        int len = snprintf(line, sizeof line,
                           "{\"custom_id\": \"req-%09zu\", \"method\": \"POST\", \"url\": "
                           "\"/v1/chat/completions\", \"body\": {\"messages\": [{\"role\": "
                           "\"user\", \"content\": \"%.*s\"}]}}\n",
                           i, pad, filler + i % 97);
        if (fwrite(line, 1, (size_t)len, f) != (size_t)len)
            fail(path, "cannot write");
        done += (size_t)len;
        if (done - (*cuts)[n - 1] >= SHARD_BYTES && done < bytes)
            (*cuts)[n++] = done;
    }
    if (fclose(f) != 0)
        fail(path, "cannot write");
    *n_cuts = n;
    return done;
}

/* The input with shards at the cuts (line numbers are not needed to hash). */
static mr_checkpoint_input spec(const char *path, bool compressed, const size_t *cuts, size_t n,
                                size_t bytes)
{
    mr_checkpoint_input_shard *shards = calloc(n, sizeof *shards);
    for (size_t i = 0; i < n; i++)
        shards[i] = (mr_checkpoint_input_shard){(uint32_t)i, cuts[i],
                                                i + 1 < n ? cuts[i + 1] : bytes, 1, 1, 0};
    return (mr_checkpoint_input){.path = (char *)path, .compressed = compressed,
                                 .shards = shards, .n_shards = n};
}

static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fdatasync(fd) != 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
        fail(path, "cannot drop it from the page cache");
    close(fd);
}

/* Seconds to read the file in BLOCK reads. */
static double plain_read(const char *path)
{
    static char buf[BLOCK];
    double t0 = now();
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        fail(path, "cannot open");
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    ssize_t got;
    while ((got = read(fd, buf, BLOCK)) > 0)
        continue;
    close(fd);
    if (got < 0)
        fail(path, "cannot read");
    return now() - t0;
}

static double fingerprint(const mr_checkpoint_input *in)
{
    char err[1024];
    mr_checkpoint_fingerprint fp;
    double t0 = now();
    if (mr_checkpoint_fingerprint_make(&fp, "", NULL, in, 1, true, err, sizeof err) !=
        MR_CHECKPOINT_OK)
        fail("fingerprint", err);
    double t = now() - t0;
    mr_checkpoint_fingerprint_free(&fp);
    return t;
}

static double min3(double a, double b, double c)
{
    double m = a < b ? a : b;
    return m < c ? m : c;
}

/* Best of ROUNDS of read and fingerprint, alternating, each from the page
 * cache or each after dropping the file from it. */
static void measure(const char *what, const char *path, const mr_checkpoint_input *in,
                    double mb, bool cold)
{
    double r[ROUNDS], h[ROUNDS];
    if (!cold)
        plain_read(path);
    for (int i = 0; i < ROUNDS; i++) {
        if (cold)
            drop_cache(path);
        r[i] = plain_read(path);
        if (cold)
            drop_cache(path);
        h[i] = fingerprint(in);
    }
    double read_s = min3(r[0], r[1], r[2]), hash_s = min3(h[0], h[1], h[2]);
    printf("%-24s read %8.0f MB/s   fingerprint %8.0f MB/s   fingerprint/read time %.2f\n",
           what, mb / read_s, mb / hash_s, hash_s / read_s);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const char *base = getenv("MR_BENCH_DIR"), *size = getenv("MR_BENCH_FP_MB");
    if (!base || !*base)
        base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    size_t mib = size && atoi(size) > 0 ? (size_t)atoi(size) : 1024;
    char *path = NULL, *packed = NULL;
    if (asprintf(&path, "%s/moerun-bench-fp-%d.jsonl", base, (int)getpid()) < 0 ||
        asprintf(&packed, "%s.zst", path) < 0)
        fail("paths", "out of memory");
    size_t *cuts, n_cuts;
    size_t bytes = write_input(path, mib << 20, &cuts, &n_cuts);
    double mb = (double)bytes / 1e6;
    printf("input: %.0f MB of JSONL request lines, %zu shards of about %u MiB, in %s\n", mb,
           n_cuts, SHARD_BYTES >> 20, base);
    mr_checkpoint_input in = spec(path, false, cuts, n_cuts, bytes);
    measure("plain, page cache", path, &in, mb, false);
    measure("plain, from disk", path, &in, mb, true);

    /* The compressed copy: read's MB/s count its compressed bytes, the
     * fingerprint's the decompressed ones it hashes. */
    char *text = malloc(bytes);
    FILE *f = fopen(path, "rb");
    if (!text || !f || fread(text, 1, bytes, f) != bytes)
        fail(path, "cannot read back");
    fclose(f);
    size_t cap = ZSTD_compressBound(bytes);
    char *frame = malloc(cap);
    size_t frame_len = frame ? ZSTD_compress(frame, cap, text, bytes, 3) : 0;
    f = fopen(packed, "wb");
    if (!frame || ZSTD_isError(frame_len) || !f || fwrite(frame, 1, frame_len, f) != frame_len ||
        fclose(f) != 0)
        fail(packed, "cannot write");
    free(frame);
    free(text);
    mr_checkpoint_input zin = spec(packed, true, cuts, n_cuts, bytes);
    double t[ROUNDS];
    plain_read(packed);
    for (int i = 0; i < ROUNDS; i++)
        t[i] = fingerprint(&zin);
    printf("%-24s %.0f MB stored; fingerprint %.0f MB/s of decompressed bytes\n",
           "zstd -3, page cache", (double)frame_len / 1e6, mb / min3(t[0], t[1], t[2]));
    unlink(path);
    unlink(packed);
    free(in.shards);
    free(zin.shards);
    free(cuts);
    free(path);
    free(packed);
    return 0;
}
