/*
 * Checkpoint cost for a realistic run: 1000 shards, a DeepSeek-V3-sized
 * placement (58 MoE layers x 288 slots of 256 experts over 32 ranks) and
 * load window (58 x 256), 64 input files hashed shard by shard.  Times
 * mr_checkpoint_write (serialise, compress, write, fsync, rename, fsync
 * the folder, prune) and mr_checkpoint_load_latest, and prints the share
 * of wall time that checkpoints take at the default 60 s interval.  Then
 * what the requests in flight add: 32 ranks of 64 sequences with 256
 * completion tokens each.
 *
 * The folder is $MR_BENCH_DIR, else $TMPDIR, else /tmp: point it at the
 * file system runs use, since fsync costs differ by orders of magnitude.
 * argv[1] (the model folder `make bench` passes) is not used.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/checkpoint.h"
#include "tests/unit/checkpoint_sample.h"

#define ROUNDS 50
#define INPUTS 64
#define INTERVAL_S 60.0

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *ms, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += ms[i];
    qsort(ms, (size_t)n, sizeof *ms, compare);
    printf("%-6s mean %7.2f ms  median %7.2f ms  min %7.2f ms  max %7.2f ms\n", what, sum / n,
           ms[n / 2], ms[0], ms[n - 1]);
}

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "bench_checkpoint: %s: %s\n", what, err);
    exit(1);
}

/* The size of the newest generation in dir. */
static uint64_t newest_bytes(const char *dir)
{
    char err[1024];
    mr_checkpoint_info *list;
    size_t n;
    if (mr_checkpoint_list(dir, &list, &n, err, sizeof err) != MR_CHECKPOINT_OK || n == 0)
        fail("list", err);
    uint64_t bytes = list[0].bytes;
    free(list);
    return bytes;
}

/* Bytes and write time per token in flight, over the state without any.
 * Token ids are uniformly random below Qwen3's vocabulary of 151936, the
 * worst case for zstd: generated text repeats ids more. */
static void in_flight_cost(const char *base, mr_checkpoint_state *s)
{
    enum { RANKS = 32, SEQUENCES = 64, TOKENS = 256 };
    char *dir = NULL, err[1024];
    if (asprintf(&dir, "%s/in-flight", base) < 0)
        fail("in flight", "out of memory");
    for (size_t i = 0; i < s->n_shards; i++)
        mr_checkpoint_in_flight_free(&s->shards[i]);
    double t0 = now();
    if (mr_checkpoint_write(dir, s, 1, err, sizeof err) != MR_CHECKPOINT_OK)
        fail("write", err);
    double without_ms = (now() - t0) * 1e3;
    uint64_t without = newest_bytes(dir), rng = 88172645463325252ull;
    /* Each rank's sequences in a shard it serves. */
    for (int r = 0; r < RANKS; r++) {
        mr_checkpoint_shard *sh = &s->shards[(size_t)r * (s->n_shards / RANKS)];
        sh->in_flight = calloc(SEQUENCES, sizeof *sh->in_flight);
        if (!sh->in_flight)
            fail("in flight", "out of memory");
        sh->n_in_flight = SEQUENCES;
        for (int q = 0; q < SEQUENCES; q++) {
            mr_checkpoint_in_flight *f = &sh->in_flight[q];
            f->line = sh->next_line - (uint64_t)(SEQUENCES - q);
            if (!(f->tokens = malloc(TOKENS * sizeof *f->tokens)))
                fail("in flight", "out of memory");
            f->n_tokens = TOKENS;
            for (int k = 0; k < TOKENS; k++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                f->tokens[k] = (int32_t)(rng % 151936);
            }
        }
    }
    t0 = now();
    if (mr_checkpoint_write(dir, s, 1, err, sizeof err) != MR_CHECKPOINT_OK)
        fail("write", err);
    double with_ms = (now() - t0) * 1e3;
    uint64_t with = newest_bytes(dir);
    double tokens = (double)RANKS * SEQUENCES * TOKENS;
    printf("in flight: %d ranks x %d sequences x %d tokens: file %llu bytes, %llu without; "
           "%.2f bytes and %.3f us of write per token\n",
           RANKS, SEQUENCES, TOKENS, (unsigned long long)with, (unsigned long long)without,
           (double)(with - without) / tokens, (with_ms - without_ms) * 1e3 / tokens);
    char *path = NULL;
    if (asprintf(&path, "%s/state-%06llu.ckpt.zst", dir, (unsigned long long)s->generation) > 0)
        unlink(path);
    free(path);
    if (rmdir(dir) != 0)
        fprintf(stderr, "bench_checkpoint: could not remove %s\n", dir);
    free(dir);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const char *base = getenv("MR_BENCH_DIR");
    if (!base || !*base)
        base = getenv("TMPDIR");
    char *dir = NULL;
    if (asprintf(&dir, "%s/moerun-bench-ckpt-XXXXXX", base && *base ? base : "/tmp") < 0 ||
        !mkdtemp(dir))
        fail("mkdtemp", base ? base : "/tmp");
    char err[1024], warning[1024];
    mr_checkpoint_state s;
    if (checkpoint_sample(&s, 1000, 58, 256, 288, 32, err, sizeof err) != MR_CHECKPOINT_OK)
        fail("sample state", err);
    s.fingerprint.inputs = calloc(INPUTS, sizeof *s.fingerprint.inputs);
    s.fingerprint.n_inputs = INPUTS;
    for (int i = 0; i < INPUTS; i++) {
        mr_checkpoint_input *in = &s.fingerprint.inputs[i];
        if (asprintf(&in->path, "/data/batch-2024-06/requests-part-%05d.jsonl.zst", i) < 0)
            fail("sample state", "out of memory");
        in->size = 300000000ULL + (uint64_t)i * 7919;
        in->xxh3 = (uint64_t)i * 0x9E3779B97F4A7C15ULL;
        /* The run's shards, each hashed in the input it was cut from. */
        size_t first = s.n_shards * (size_t)i / INPUTS;
        size_t last = s.n_shards * (size_t)(i + 1) / INPUTS;
        in->n_shards = last - first;
        in->shards = calloc(in->n_shards, sizeof *in->shards);
        for (size_t j = 0; in->shards && j < in->n_shards; j++)
            in->shards[j] = (mr_checkpoint_input_shard){
                (uint32_t)(first + j), in->size * j / in->n_shards,
                in->size * (j + 1) / in->n_shards, 1 + 180000 * j, 180000,
                (first + j) * 0xC2B2AE3D27D4EB4FULL};
    }

    double write_ms[ROUNDS], load_ms[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        /* What a rank does between checkpoints: progress moves on. */
        for (size_t i = 0; i < s.n_shards; i++)
            s.shards[i].next_line += 17;
        s.counters.requests_ok += 1000;
        double t0 = now();
        if (mr_checkpoint_write(dir, &s, 3, err, sizeof err) != MR_CHECKPOINT_OK)
            fail("write", err);
        double t1 = now();
        mr_checkpoint_state got;
        if (mr_checkpoint_load_latest(dir, &got, warning, sizeof warning, err, sizeof err) !=
            MR_CHECKPOINT_OK)
            fail("load", err);
        double t2 = now();
        mr_checkpoint_state_free(&got);
        write_ms[r] = (t1 - t0) * 1e3;
        load_ms[r] = (t2 - t1) * 1e3;
    }

    mr_checkpoint_info *list;
    size_t n;
    if (mr_checkpoint_list(dir, &list, &n, err, sizeof err) != MR_CHECKPOINT_OK || n == 0)
        fail("list", err);
    printf("state: %zu shards, placement %d x %d slots (%d experts, %d ranks), window %d x %d, "
           "%d inputs\n",
           s.n_shards, s.placement.n_layers, s.placement.n_physical, s.placement.n_logical,
           s.placement.n_ranks, s.window.n_layers, s.window.n_experts, INPUTS);
    printf("file:  %llu bytes compressed (zstd level 3), in %s\n",
           (unsigned long long)list[0].bytes, dir);
    double mean = 0;
    for (int i = 0; i < ROUNDS; i++)
        mean += write_ms[i] / ROUNDS;
    report("write", write_ms, ROUNDS);
    report("load", load_ms, ROUNDS);
    printf("share of wall time at one checkpoint every %.0f s: %.4f %%\n", INTERVAL_S,
           mean / (INTERVAL_S * 1e3) * 100);
    in_flight_cost(dir, &s);
    /* Pruning leaves only the newest generations. */
    for (size_t i = 0; i < n; i++) {
        char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, list[i].name) > 0)
            unlink(path);
        free(path);
    }
    if (rmdir(dir) != 0)
        fprintf(stderr, "bench_checkpoint: could not remove %s\n", dir);
    free(list);
    mr_checkpoint_state_free(&s);
    free(dir);
    return 0;
}
