/*
 * What the ranks of `moerun preflight --mpi-probe` send each other: their
 * host names, which show where mpirun placed them, and one MoE layer's
 * dispatch + combine of a typical shape, timed, through the same
 * communicator a job uses.
 */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

#include "engine/engine.h"

#include "runner/preflight.h"

int mr_preflight_exchange(char *hosts)
{
    char mine[MR_PREFLIGHT_HOST_LEN] = "";
    if (gethostname(mine, sizeof mine - 1) != 0)
        return MPI_ERR_OTHER;
    return MPI_Allgather(mine, MR_PREFLIGHT_HOST_LEN, MPI_CHAR, hosts, MR_PREFLIGHT_HOST_LEN,
                         MPI_CHAR, MPI_COMM_WORLD);
}

/* A layer of a Qwen3-30B-like model: hidden 2048, top-8 of 128 experts,
 * 512 tokens per rank, counts exchanged first. */
int mr_preflight_measure_exchange(int ranks, double *seconds, double *bytes, char *err,
                                  size_t errlen)
{
    mr_exchange_probe probe = {.hidden = 2048, .top_k = 8, .slots_per_rank = (128 + ranks - 1) / ranks,
                               .tokens = 512, .iterations = 5, .mode = MR_EP_HIGH_THROUGHPUT};
    mr_comm_options options = {.capacity = mr_exchange_probe_bytes(&probe)};
    mr_comm *comm;
    int rc = mr_comm_mpi(&options, &comm, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    mr_exchange_result result = {0};
    rc = mr_exchange_measure(comm, &probe, &result, err, errlen);
    *seconds = result.seconds;
    *bytes = (double)(result.dispatch_bytes + result.combine_bytes);
    mr_comm_free(comm);
    return rc;
}
