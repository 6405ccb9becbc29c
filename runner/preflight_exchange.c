/*
 * What the ranks of `moerun preflight --mpi-probe` send each other.  Today
 * that is their host names, which show where mpirun placed them; the
 * measurement of dispatch + combine bandwidth between the job's ranks (the
 * all-to-all traffic of expert parallelism) belongs here too, and will be
 * written with the engine's dispatch.
 */
#include <mpi.h>
#include <unistd.h>

#include "runner/preflight.h"

int mr_preflight_exchange(char *hosts)
{
    char mine[MR_PREFLIGHT_HOST_LEN] = "";
    if (gethostname(mine, sizeof mine - 1) != 0)
        return MPI_ERR_OTHER;
    return MPI_Allgather(mine, MR_PREFLIGHT_HOST_LEN, MPI_CHAR, hosts, MR_PREFLIGHT_HOST_LEN,
                         MPI_CHAR, MPI_COMM_WORLD);
}
