/*
 * The "mpi" transport: every peer no earlier transport claimed (ranks on
 * other hosts, or all of them when MPI is forced), through MPI
 * point-to-point messages on the data plane's communicator.  A sender
 * writes into a staging buffer per peer; receives are posted with the
 * exact size the exchange expects, or the capacity where only the message
 * knows its size, into two buffers per peer that alternate as the shm
 * regions do.
 */
#include <stdio.h>
#include <stdlib.h>

#include "engine/comm/comm_internal.h"

typedef struct {
    int id, size;          /* this transport's index in the table; world size */
    void **send;           /* [size]: staging buffers of the peers it carries */
    void **recv;           /* [size][2] */
    MPI_Request *requests; /* [2 * size] */
    MPI_Status *statuses;  /* [2 * size] */
    int *peer;             /* [2 * size]: each request's peer; -1 for a send */
    int n_requests;
} mpi_state;

static void mpi_close(void *state)
{
    mpi_state *m = state;
    if (!m)
        return;
    for (int r = 0; m->send && r < m->size; r++)
        free(m->send[r]);
    for (int r = 0; m->recv && r < 2 * m->size; r++)
        free(m->recv[r]);
    free(m->send);
    free(m->recv);
    free(m->requests);
    free(m->statuses);
    free(m->peer);
    free(m);
}

/* One message buffer: capacity bytes, at least one so malloc gives one. */
static void *alloc_buffer(const mr_comm *c)
{
    return malloc(c->capacity ? c->capacity : 1);
}

static int mpi_open(mr_comm *c, const mr_comm_options *options, int id, void **out, char *err,
                    size_t errlen)
{
    (void)options;
    size_t n = (size_t)c->size;
    mpi_state *m = calloc(1, sizeof *m);
    if (!m)
        goto nomem;
    *out = m;
    m->id = id;
    m->size = c->size;
    m->send = calloc(n, sizeof *m->send);
    m->recv = calloc(2 * n, sizeof *m->recv);
    m->requests = malloc(2 * n * sizeof *m->requests);
    m->statuses = malloc(2 * n * sizeof *m->statuses);
    m->peer = malloc(2 * n * sizeof *m->peer);
    if (!m->send || !m->recv || !m->requests || !m->statuses || !m->peer)
        goto nomem;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank || c->via[r] >= 0)
            continue;
        c->via[r] = id;
        m->send[r] = alloc_buffer(c);
        m->recv[2 * r] = alloc_buffer(c);
        m->recv[2 * r + 1] = alloc_buffer(c);
        if (!m->send[r] || !m->recv[2 * r] || !m->recv[2 * r + 1]) {
            snprintf(err, errlen, "out of memory for MPI buffers of %zu bytes", c->capacity);
            return MR_COMM_ENOMEM;
        }
    }
    return MR_COMM_OK;
nomem:
    snprintf(err, errlen, "out of memory for a communicator of %d ranks", c->size);
    return MR_COMM_ENOMEM;
}

/* The staging buffer is free again: the last exchange waited for its send. */
static int mpi_send_buffer(mr_comm *c, void *state, int dst, void **buf, char *err,
                           size_t errlen)
{
    (void)c, (void)err, (void)errlen;
    *buf = ((mpi_state *)state)->send[dst];
    return MR_COMM_OK;
}

static int mpi_post(mr_comm *c, void *state, const int64_t *send_bytes,
                    const int64_t *recv_bytes, char *err, size_t errlen)
{
    mpi_state *m = state;
    m->n_requests = 0;
    for (int r = 0; r < c->size; r++) {
        if (c->via[r] != m->id)
            continue;
        int rc = MPI_SUCCESS;
        if (recv_bytes[r] != MR_COMM_NO_MESSAGE) {
            int count = recv_bytes[r] >= 0 ? (int)recv_bytes[r] : (int)c->capacity;
            m->peer[m->n_requests] = r;
            rc = MPI_Irecv(m->recv[2 * r + (c->got[r] + 1) % 2], count, MPI_BYTE, r, 0, c->data,
                           &m->requests[m->n_requests++]);
        }
        if (rc == MPI_SUCCESS && send_bytes[r] >= 0) {
            m->peer[m->n_requests] = -1;
            rc = MPI_Isend(m->send[r], (int)send_bytes[r], MPI_BYTE, r, 0, c->data,
                           &m->requests[m->n_requests++]);
        }
        if (rc != MPI_SUCCESS)
            return mr_comm_mpi_failed(rc, "posting an exchange", err, errlen);
    }
    return MR_COMM_OK;
}

/* The request that failed: a receive of more bytes than posted names the
 * peer and the size it was expected to send. */
static int request_failed(const mr_comm *c, const mpi_state *m, const int64_t *recv_bytes,
                          char *err, size_t errlen)
{
    for (int i = 0; i < m->n_requests; i++) {
        int code = m->statuses[i].MPI_ERROR, class = code;
        if (code == MPI_SUCCESS || code == MPI_ERR_PENDING)
            continue;
        MPI_Error_class(code, &class);
        int r = m->peer[i];
        if (r >= 0 && class == MPI_ERR_TRUNCATE) {
            snprintf(err, errlen, "rank %d sent rank %d more than the %lld bytes expected", r,
                     c->rank, (long long)recv_bytes[r]);
            return MR_COMM_EINVAL;
        }
        if (r < 0)
            return mr_comm_mpi_failed(code, "sending to another rank", err, errlen);
        char what[64];
        snprintf(what, sizeof what, "receiving from rank %d", r);
        return mr_comm_mpi_failed(code, what, err, errlen);
    }
    return mr_comm_mpi_failed(MPI_ERR_IN_STATUS, "exchanging with another host", err, errlen);
}

static int mpi_poll(mr_comm *c, void *state, const int64_t *recv_bytes, bool *done, char *err,
                    size_t errlen)
{
    mpi_state *m = state;
    int flag = 1;
    if (m->n_requests > 0) {
        int rc = MPI_Testall(m->n_requests, m->requests, &flag, m->statuses);
        if (rc == MPI_ERR_IN_STATUS)
            return request_failed(c, m, recv_bytes, err, errlen);
        if (rc != MPI_SUCCESS)
            return mr_comm_mpi_failed(rc, "exchanging with another host", err, errlen);
    }
    *done = flag != 0;
    for (int i = 0; flag && i < m->n_requests; i++) {
        int r = m->peer[i], count = 0;
        if (r < 0)
            continue;
        MPI_Get_count(&m->statuses[i], MPI_BYTE, &count);
        c->recv_ptr[r] = m->recv[2 * r + ++c->got[r] % 2];
        c->recv_bytes[r] = (size_t)count;
    }
    if (flag)
        m->n_requests = 0;
    return MR_COMM_OK;
}

/* A receive buffer is reused two messages later, by which time its reader
 * has released it: nothing to tell the sender. */
static void mpi_release(mr_comm *c, void *state)
{
    (void)c, (void)state;
}

const struct mr_comm_transport mr_comm_transport_mpi = {
    .name = "mpi",
    .open = mpi_open,
    .close = mpi_close,
    .send_buffer = mpi_send_buffer,
    .post = mpi_post,
    .poll = mpi_poll,
    .release = mpi_release,
    .alive = NULL,
};
