/*
 * `moerun preflight --mpi-probe`: what mpirun starts on every rank when
 * preflight checks that MPI works.  Rank 0 prints one line for the parent
 * to read: "mpi-probe<TAB>RANKS<TAB>LIBRARY<TAB>HOST,HOST,...", then
 * "mpi-exchange<TAB>SECONDS<TAB>BYTES" for one timed MoE layer.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/preflight.h"
#include "runner/runner.h"

int mr_preflight_mpi_probe(void)
{
    mr_runner_mpi_init(NULL, NULL);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    char *hosts = calloc((size_t)size, MR_PREFLIGHT_HOST_LEN);
    int rc = hosts ? mr_preflight_exchange(hosts) : MPI_ERR_NO_MEM;
    if (rc == MPI_SUCCESS && rank == 0) {
        char library[MPI_MAX_LIBRARY_VERSION_STRING];
        int len;
        MPI_Get_library_version(library, &len);
        /* "Open MPI v4.1.4, package: ..., ident: ..." over several lines. */
        library[strcspn(library, ",\n")] = '\0';
        printf("mpi-probe\t%d\t%s\t", size, library);
        for (int r = 0; r < size; r++)
            printf(r ? ",%s" : "%s", hosts + (size_t)r * MR_PREFLIGHT_HOST_LEN);
        putchar('\n');
        fflush(stdout);
    }
    free(hosts);
    double seconds = 0, bytes = 0;
    char err[512];
    if (rc == MPI_SUCCESS &&
        mr_preflight_measure_exchange(size, &seconds, &bytes, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "exchange: %s\n", err);
        rc = MPI_ERR_OTHER;
    }
    if (rc == MPI_SUCCESS && rank == 0) {
        printf("mpi-exchange\t%.9f\t%.0f\n", seconds, bytes);
        fflush(stdout);
    }
    MPI_Finalize();
    return rc == MPI_SUCCESS ? MR_EXIT_OK : MR_EXIT_FAILED;
}
