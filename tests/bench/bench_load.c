/*
 * How fast a model loads, beside a plain sequential read of its files in
 * the same run, and the memory it holds afterwards.
 *
 *   build/bench/bench_load MODEL_DIR [runs] [threads]
 *
 * Each run, in this order:
 *   read    read(2) of every *.safetensors file in 16 MiB pieces into one
 *           reused buffer: the storage's (or page cache's) speed, nothing
 *           kept;
 *   load    mr_model_load on the cpu backend, timed to its return;
 * both over the file's bytes, MB/s, and load as a share of read.  Peak RSS
 * is the process's high-water mark over the load (VmHWM, reset before it
 * through /proc/self/clear_refs), beside the bytes the model's weights take
 * (the files' bytes); a second resident copy (the file mapping, or a
 * staging buffer) shows as a ratio near 2.
 *
 * `cold` as the 4th argument drops the files from the page cache before
 * each read and each load (posix_fadvise DONTNEED: clean pages only, no
 * root needed), for a fresh node's figure; by default the page cache
 * stays warm after the first read, as on a node that reran a job.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"

enum { MAX_FILES = 256, PIECE = 16 << 20 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fail(const char *what, const char *why)
{
    fprintf(stderr, "bench_load: %s: %s\n", what, why);
    exit(1);
}

static int n_files;
static char *files[MAX_FILES];

static size_t find_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        fail(dir, "cannot open the folder");
    size_t total = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n_files < MAX_FILES) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            fail(path, "cannot open");
        total += (size_t)lseek(fd, 0, SEEK_END);
        close(fd);
        files[n_files++] = strdup(path);
    }
    closedir(d);
    if (!n_files)
        fail(dir, "no .safetensors files");
    return total;
}

static void drop_cache(void)
{
    for (int i = 0; i < n_files; i++) {
        int fd = open(files[i], O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
}

static double plain_read(void)
{
    char *buf = malloc(PIECE);
    if (!buf)
        fail("read", "out of memory");
    double t0 = now();
    for (int i = 0; i < n_files; i++) {
        int fd = open(files[i], O_RDONLY);
        if (fd < 0)
            fail(files[i], "cannot open");
        while (read(fd, buf, PIECE) > 0)
            ;
        close(fd);
    }
    double seconds = now() - t0;
    free(buf);
    return seconds;
}

/* VmHWM in bytes, or 0 where /proc says nothing. */
static size_t peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

static void reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_load MODEL_DIR [runs] [threads] [cold]\n");
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    bool cold = argc > 4 && strcmp(argv[4], "cold") == 0;
    size_t bytes = find_files(argv[1]);
    double mb = (double)bytes / 1e6;
    printf("%s: %.0f MB in %d file%s, page cache %s\n\n", argv[1], mb, n_files,
           n_files == 1 ? "" : "s", cold ? "dropped before each step" : "warm");
    printf("run   read MB/s   load MB/s   load/read   load s   peak RSS / weights\n");
    for (int r = 1; r <= runs; r++) {
        if (cold)
            drop_cache();
        double read_s = plain_read();
        if (cold)
            drop_cache();
        char err[2048];
        mr_model *model;
        mr_model_options o = {.backend = "cpu", .threads = threads};
        reset_peak_rss();
        double t0 = now();
        if (mr_model_load(argv[1], &o, &model, err, sizeof err) != MR_ENGINE_OK)
            fail("load", err);
        double load_s = now() - t0;
        size_t peak = peak_rss();
        mr_model_free(model);
        printf("%3d %11.0f %11.0f %10.2fx %8.2f %14.2fx\n", r, mb / read_s, mb / load_s,
               read_s / load_s, load_s, (double)peak / (double)bytes);
        fflush(stdout);
    }
    return 0;
}
