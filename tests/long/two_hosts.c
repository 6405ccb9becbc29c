/* The self-test program of tests/long/two_hosts.sh: proves that an MPI job
 * really spans the two simulated hosts.  Each rank prints its rank, the job
 * size and gethostname(); rank 0 then checks that
 *   - the job has 4 ranks on exactly 2 distinct hostnames, 2 ranks each,
 *   - every rank sees the environment variable the script forwards with -x
 *     (argv[1] names it, argv[2] is its expected value),
 *   - MPI_Allreduce over all ranks gives the right sum, and
 *   - a 1 MiB message passed around the ring (so it crosses hosts over the
 *     TCP BTL, with the rendezvous protocol) arrives intact.
 * Exit status 0 when all hold; otherwise MPI_Abort with status 1.
 * Built by the script with mpicc; not part of the moerun build. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOST_LEN 256
#define RING_BYTES (1 << 20)

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    char host[HOST_LEN] = {0};
    if (gethostname(host, sizeof host - 1) != 0) strcpy(host, "?");
    const char *env_name = argc > 1 ? argv[1] : "";
    const char *env_want = argc > 2 ? argv[2] : "";
    const char *env_got = getenv(env_name);
    int env_ok = env_got && strcmp(env_got, env_want) == 0;
    printf("rank %d of %d on host %s (%s=%s)\n", rank, size, host, env_name,
           env_got ? env_got : "(unset)");
    fflush(stdout);

    /* Sum of 1..size over all ranks. */
    long mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    int sum_ok = sum == (long)size * (size + 1) / 2;

    /* 1 MiB to the next rank, from the previous one; check every byte. */
    unsigned char *out = malloc(RING_BYTES), *in = malloc(RING_BYTES);
    if (!out || !in) MPI_Abort(MPI_COMM_WORLD, 1);
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (int i = 0; i < RING_BYTES; i++) out[i] = (unsigned char)(i * 31 + rank);
    MPI_Sendrecv(out, RING_BYTES, MPI_UNSIGNED_CHAR, next, 7, in, RING_BYTES,
                 MPI_UNSIGNED_CHAR, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    int ring_ok = 1;
    for (int i = 0; i < RING_BYTES; i++)
        if (in[i] != (unsigned char)(i * 31 + prev)) { ring_ok = 0; break; }
    free(out);
    free(in);

    int flags[3] = {env_ok, sum_ok, ring_ok}, *all_flags = NULL;
    char *all_hosts = NULL;
    if (rank == 0) {
        all_flags = malloc(sizeof(int) * 3 * (size_t)size);
        all_hosts = malloc((size_t)HOST_LEN * (size_t)size);
        if (!all_flags || !all_hosts) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Gather(flags, 3, MPI_INT, all_flags, 3, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Gather(host, HOST_LEN, MPI_CHAR, all_hosts, HOST_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);

    int bad = 0;
    if (rank == 0) {
        if (size != 4) {
            printf("selftest: FAIL: %d ranks, want 4\n", size);
            bad = 1;
        }
        /* Distinct hostnames and the ranks on each. */
        int distinct = 0, count[64] = {0}, first[64] = {0};
        for (int r = 0; r < size && r < 64; r++) {
            int d = 0;
            while (d < distinct && strcmp(all_hosts + (size_t)first[d] * HOST_LEN,
                                          all_hosts + (size_t)r * HOST_LEN) != 0)
                d++;
            if (d == distinct) first[distinct++] = r;
            count[d]++;
        }
        for (int d = 0; d < distinct; d++) {
            printf("selftest: host %s has %d ranks\n", all_hosts + (size_t)first[d] * HOST_LEN,
                   count[d]);
            if (count[d] != 2) bad = 1;
        }
        if (distinct != 2) {
            printf("selftest: FAIL: %d distinct hostnames, want 2\n", distinct);
            bad = 1;
        }
        for (int r = 0; r < size; r++) {
            const char *what[3] = {"forwarded environment variable", "allreduce sum",
                                   "1 MiB ring message"};
            for (int k = 0; k < 3; k++)
                if (!all_flags[3 * r + k]) {
                    printf("selftest: FAIL: rank %d: wrong %s\n", r, what[k]);
                    bad = 1;
                }
        }
        printf("selftest: allreduce sum %ld (want %ld); %s\n", sum, (long)size * (size + 1) / 2,
               bad ? "FAILED" : "OK");
        fflush(stdout);
        free(all_flags);
        free(all_hosts);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return bad ? 1 : 0;
}
