/*
 * Dispatch + combine of one MoE layer between the ranks of an MPI job
 * (run as `mpirun -np N bench_dispatch`; `make bench` runs 2 and 4), side
 * by side in the same run with:
 *   - the same exchange with every pair forced through MPI (transport=mpi);
 *   - a plain MPI_Alltoallv of the same bytes (one for the dispatch
 *     messages, one for the combine messages), with no layout or packing;
 *   - single-core memcpy of the bytes one rank moves.
 * Shapes: hidden 2048, top-8 of 128 experts, 4096 tokens per rank in
 * high-throughput mode, and the decode case, 128 tokens in low-latency
 * mode.  Times are per layer, the slowest rank's mean; GB/s is the mean
 * payload a rank sends (dispatch + combine) over that time.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

#define HIDDEN 2048
#define TOP_K 8
#define EXPERTS 128

typedef struct {
    const char *name;
    int tokens;
    mr_ep_mode mode;
    int iterations;
} bench_case;

static const bench_case CASES[] = {
    {"prefill, high-throughput", 4096, MR_EP_HIGH_THROUGHPUT, 6},
    {"decode, low-latency", 128, MR_EP_LOW_LATENCY, 200},
    {"decode, high-throughput", 128, MR_EP_HIGH_THROUGHPUT, 200},
};

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_dispatch: %s: %s\n", what, err);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static double slowest(double mine)
{
    double all;
    MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return all;
}

static double moerun_exchange(const mr_exchange_probe *probe, bool force_mpi,
                              mr_exchange_result *result)
{
    char err[512];
    mr_comm_options options = {.capacity = mr_exchange_probe_bytes(probe), .force_mpi = force_mpi};
    mr_comm *comm;
    if (mr_comm_mpi(&options, &comm, err, sizeof err) != MR_ENGINE_OK)
        die("communicator", err);
    if (mr_exchange_measure(comm, probe, result, err, sizeof err) != MR_ENGINE_OK)
        die("exchange", err);
    mr_comm_free(comm);
    return result->seconds;
}

/* One MPI_Alltoallv per direction with the counts the exchange used. */
static double plain_alltoallv(const mr_exchange_result *r, int ranks, int iterations)
{
    int *send[2], *recv[2], *sdisp[2], *rdisp[2];
    size_t total_send[2] = {0, 0}, total_recv[2] = {0, 0};
    const int64_t *by_dst[2] = {r->dispatch_to, r->combine_to};
    for (int k = 0; k < 2; k++) {
        send[k] = calloc((size_t)ranks, sizeof(int));
        recv[k] = calloc((size_t)ranks, sizeof(int));
        sdisp[k] = calloc((size_t)ranks, sizeof(int));
        rdisp[k] = calloc((size_t)ranks, sizeof(int));
        for (int d = 0; d < ranks; d++)
            send[k][d] = (int)by_dst[k][d];
        MPI_Alltoall(send[k], 1, MPI_INT, recv[k], 1, MPI_INT, MPI_COMM_WORLD);
        for (int d = 0; d < ranks; d++) {
            sdisp[k][d] = (int)total_send[k];
            rdisp[k][d] = (int)total_recv[k];
            total_send[k] += (size_t)send[k][d];
            total_recv[k] += (size_t)recv[k][d];
        }
    }
    char *sbuf = malloc(total_send[0] + total_send[1] + 1);
    char *rbuf = malloc(total_recv[0] + total_recv[1] + 1);
    memset(sbuf, 1, total_send[0] + total_send[1]);
    double started = 0;
    for (int i = -2; i < iterations; i++) {
        if (i == 0) {
            MPI_Barrier(MPI_COMM_WORLD);
            started = MPI_Wtime();
        }
        for (int k = 0; k < 2; k++)
            MPI_Alltoallv(sbuf + (k ? total_send[0] : 0), send[k], sdisp[k], MPI_BYTE,
                          rbuf + (k ? total_recv[0] : 0), recv[k], rdisp[k], MPI_BYTE,
                          MPI_COMM_WORLD);
    }
    double mine = (MPI_Wtime() - started) / iterations;
    for (int k = 0; k < 2; k++) {
        free(send[k]);
        free(recv[k]);
        free(sdisp[k]);
        free(rdisp[k]);
    }
    free(sbuf);
    free(rbuf);
    return slowest(mine);
}

/* One core copying `bytes` from one buffer to another, rank 0 alone. */
static double memcpy_seconds(size_t bytes, int rank)
{
    double seconds = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char *a = malloc(bytes), *b = malloc(bytes);
        memset(a, 1, bytes);
        memset(b, 2, bytes);
        int reps = bytes < (1 << 20) ? 2000 : 20;
        memcpy(b, a, bytes);
        double started = MPI_Wtime();
        for (int i = 0; i < reps; i++) {
            memcpy(i % 2 ? a : b, i % 2 ? b : a, bytes);
            __asm__ __volatile__("" ::: "memory");
        }
        seconds = (MPI_Wtime() - started) / reps;
        free(a);
        free(b);
    }
    MPI_Bcast(&seconds, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    return seconds;
}

static double gbps(double bytes, double seconds)
{
    return seconds > 0 ? bytes / seconds / 1e9 : 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (rank == 0)
        printf("dispatch + combine, %d ranks on one host, hidden %d, top-%d of %d experts\n"
               "%-26s %12s | %-18s | %-18s | %-18s | %-18s | %9s %9s\n",
               ranks, HIDDEN, TOP_K, EXPERTS, "case", "MiB/rank", "moerun shm", "moerun mpi",
               "MPI_Alltoallv", "memcpy 1 core", "shm/a2av", "shm/cpy");
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const bench_case *bc = &CASES[c];
        mr_exchange_probe probe = {.hidden = HIDDEN, .top_k = TOP_K,
                                   .slots_per_rank = EXPERTS / ranks, .tokens = bc->tokens,
                                   .iterations = bc->iterations, .mode = bc->mode,
                                   .ll_capacity = bc->tokens};
        int64_t *dispatch_to = calloc((size_t)ranks, sizeof *dispatch_to);
        int64_t *combine_to = calloc((size_t)ranks, sizeof *combine_to);
        mr_exchange_result shm = {.dispatch_to = dispatch_to, .combine_to = combine_to}, mpi = {0};
        double t_shm = moerun_exchange(&probe, false, &shm);
        double t_mpi = moerun_exchange(&probe, true, &mpi);
        double t_a2a = plain_alltoallv(&shm, ranks, bc->iterations);
        double mine = (double)(shm.dispatch_bytes + shm.combine_bytes), bytes;
        MPI_Allreduce(&mine, &bytes, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        bytes /= ranks;
        double t_cpy = memcpy_seconds((size_t)bytes, rank);
        if (rank == 0)
            printf("%-26s %12.2f | %7.0f us %5.2f GB/s | %7.0f us %5.2f GB/s | %7.0f us %5.2f GB/s"
                   " | %7.0f us %5.2f GB/s | %8.2fx %8.2fx\n",
                   bc->name, bytes / (1 << 20), t_shm * 1e6, gbps(bytes, t_shm), t_mpi * 1e6,
                   gbps(bytes, t_mpi), t_a2a * 1e6, gbps(bytes, t_a2a), t_cpy * 1e6,
                   gbps(bytes, t_cpy), t_a2a / t_shm, t_shm / t_cpy);
        free(dispatch_to);
        free(combine_to);
    }
    MPI_Finalize();
    return 0;
}
