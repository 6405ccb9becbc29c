/*
 * The control plane: collectives of small host structs on a communicator
 * of their own, never through the data plane's buffers (which on GPUs are
 * device memory).  Each is a nonblocking MPI collective waited on with the
 * data plane's backoff, so a rank that waits gives its core away when ranks
 * outnumber cores, and notices a peer on this host that died (Open MPI
 * stops the job when one on another host does).  The waits are not the
 * data plane's: mr_comm_wait_seconds leaves them out.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "engine/comm/comm_internal.h"

static int ctrl_wait(mr_comm *c, MPI_Request *request, const char *what, char *err,
                     size_t errlen)
{
    int flag = 0;
    mr_backoff b;
    mr_backoff_start(&b);
    for (;;) {
        int rc = MPI_Test(request, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mr_comm_mpi_failed(rc, what, err, errlen);
        if (flag)
            return MR_COMM_OK;
        if (!mr_backoff_pause(c, &b, err, errlen))
            return MR_COMM_EIO;
    }
}

static int too_big(size_t bytes, const char *what, char *err, size_t errlen)
{
    if (bytes <= (size_t)INT_MAX)
        return MR_COMM_OK;
    snprintf(err, errlen, "%s of %zu bytes is beyond MPI's int counts", what, bytes);
    return MR_COMM_EINVAL;
}

int mr_comm_ctrl_allgather(mr_comm *c, const void *mine, size_t bytes, void *all, char *err,
                           size_t errlen)
{
    if (!c->is_mpi) {
        memmove(all, mine, bytes);
        return MR_COMM_OK;
    }
    int rc = too_big(bytes, "an allgather", err, errlen);
    if (rc != MR_COMM_OK)
        return rc;
    MPI_Request request;
    rc = MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, c->ctrl, &request);
    if (rc != MPI_SUCCESS)
        return mr_comm_mpi_failed(rc, "starting an allgather", err, errlen);
    return ctrl_wait(c, &request, "allgather", err, errlen);
}

int mr_comm_ctrl_bcast(mr_comm *c, int root, void *buf, size_t bytes, char *err, size_t errlen)
{
    if (root < 0 || root >= c->size) {
        snprintf(err, errlen, "broadcast from rank %d of %d", root, c->size);
        return MR_COMM_EINVAL;
    }
    if (!c->is_mpi)
        return MR_COMM_OK;
    int rc = too_big(bytes, "a broadcast", err, errlen);
    if (rc != MR_COMM_OK)
        return rc;
    MPI_Request request;
    rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, c->ctrl, &request);
    if (rc != MPI_SUCCESS)
        return mr_comm_mpi_failed(rc, "starting a broadcast", err, errlen);
    return ctrl_wait(c, &request, "broadcast", err, errlen);
}

int mr_comm_ctrl_barrier(mr_comm *c, char *err, size_t errlen)
{
    if (!c->is_mpi)
        return MR_COMM_OK;
    MPI_Request request;
    int rc = MPI_Ibarrier(c->ctrl, &request);
    if (rc != MPI_SUCCESS)
        return mr_comm_mpi_failed(rc, "starting a barrier", err, errlen);
    return ctrl_wait(c, &request, "barrier", err, errlen);
}
