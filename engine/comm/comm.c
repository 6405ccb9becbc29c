/*
 * The communicator: which rank reaches which through which transport, and
 * the data plane's exchange over them.  A rank's message to itself is never
 * copied; every other pair goes through the transport that claimed it.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/comm/comm_internal.h"

/*
 * The transports, in order of preference: each claims the peers it can
 * reach among those the ones before it left.  A GPU data plane adds two
 * entries and touches nothing else (engine code included):
 *   cuda-ipc  before shm: the ranks of this host whose buffers are device
 *             memory, mapped with cudaIpcGetMemHandle/cudaIpcOpenMemHandle;
 *             send_buffer gives the peer's mapped device buffer, post and
 *             poll signal with events or device-side flags, as shm does
 *             with counters;
 *   nccl      before mpi: every remaining peer; open makes the
 *             ncclComm_t (its unique id through the control plane), post
 *             is ncclSend/ncclRecv of the exact sizes in one group (a size
 *             step of its own first for MR_COMM_RECV_UP_TO_CAPACITY pairs),
 *             poll queries the stream's event.
 * Both implement every function of struct mr_comm_transport.
 */
static const struct mr_comm_transport *const transports[MR_COMM_N_TRANSPORTS] = {
    &mr_comm_transport_shm,
    &mr_comm_transport_mpi,
};

int mr_comm_mpi_failed(int rc, const char *what, char *err, size_t errlen)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    snprintf(err, errlen, "%s: %.*s", what, len, text);
    return MR_COMM_EIO;
}

/* One message buffer: capacity bytes, at least one so malloc gives one. */
static void *self_buffer(const mr_comm *c)
{
    return malloc(c->capacity ? c->capacity : 1);
}

static int alloc_tables(mr_comm *c, char *err, size_t errlen)
{
    size_t n = (size_t)c->size;
    c->host_of = calloc(n, sizeof *c->host_of);
    c->via = malloc(n * sizeof *c->via);
    c->sent = calloc(n, sizeof *c->sent);
    c->got = calloc(n, sizeof *c->got);
    c->recv_ptr = calloc(n, sizeof *c->recv_ptr);
    c->recv_bytes = calloc(n, sizeof *c->recv_bytes);
    c->self_buf[0] = self_buffer(c);
    c->self_buf[1] = self_buffer(c);
    if (!c->host_of || !c->via || !c->sent || !c->got || !c->recv_ptr || !c->recv_bytes ||
        !c->self_buf[0] || !c->self_buf[1]) {
        snprintf(err, errlen, "out of memory for a communicator of %d ranks", c->size);
        return MR_COMM_ENOMEM;
    }
    for (int r = 0; r < c->size; r++)
        c->via[r] = -1;
    return MR_COMM_OK;
}

int mr_comm_solo(const mr_comm_options *options, mr_comm **out, char *err, size_t errlen)
{
    mr_comm *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory for a communicator");
        return MR_COMM_ENOMEM;
    }
    c->size = 1;
    c->n_hosts = 1;
    c->capacity = options->capacity;
    int rc = alloc_tables(c, err, errlen);
    if (rc != MR_COMM_OK) {
        mr_comm_free(c);
        return rc;
    }
    *out = c;
    return MR_COMM_OK;
}

/* Host indices in order of each host's lowest rank, from every rank's
 * lowest on-host rank. */
static int number_hosts(mr_comm *c, char *err, size_t errlen)
{
    int local_rank, leader_mine;
    MPI_Comm_rank(c->local, &local_rank);
    leader_mine = local_rank == 0 ? c->rank : -1;
    MPI_Bcast(&leader_mine, 1, MPI_INT, 0, c->local);
    int *leader = malloc((size_t)c->size * sizeof *leader);
    if (!leader) {
        snprintf(err, errlen, "out of memory for a communicator of %d ranks", c->size);
        return MR_COMM_ENOMEM;
    }
    int rc = MPI_Allgather(&leader_mine, 1, MPI_INT, leader, 1, MPI_INT, c->ctrl);
    if (rc != MPI_SUCCESS) {
        free(leader);
        return mr_comm_mpi_failed(rc, "finding the hosts of the ranks", err, errlen);
    }
    c->n_hosts = 0;
    for (int r = 0; r < c->size; r++)
        c->host_of[r] = leader[r] == r ? c->n_hosts++ : c->host_of[leader[r]];
    free(leader);
    return MR_COMM_OK;
}

/* A duplicate of MPI_COMM_WORLD whose errors come back as codes, so a
 * failure is a message, not an abort deep inside MPI. */
static int dup_world(MPI_Comm *out, char *err, size_t errlen)
{
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, out);
    if (rc != MPI_SUCCESS) {
        *out = MPI_COMM_NULL;
        return mr_comm_mpi_failed(rc, "MPI_Comm_dup", err, errlen);
    }
    MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
    return MR_COMM_OK;
}

int mr_comm_mpi(const mr_comm_options *options, mr_comm **out, char *err, size_t errlen)
{
    if (options->capacity > (size_t)INT32_MAX) {
        snprintf(err, errlen, "an exchange of %zu bytes per rank pair is beyond MPI's int counts",
                 options->capacity);
        return MR_COMM_EINVAL;
    }
    mr_comm *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory for a communicator");
        return MR_COMM_ENOMEM;
    }
    c->is_mpi = true;
    c->capacity = options->capacity;
    c->data = c->ctrl = c->local = MPI_COMM_NULL;
    int rc = dup_world(&c->data, err, errlen);
    if (rc == MR_COMM_OK)
        rc = dup_world(&c->ctrl, err, errlen);
    if (rc == MR_COMM_OK) {
        MPI_Comm_rank(c->ctrl, &c->rank);
        MPI_Comm_size(c->ctrl, &c->size);
        rc = alloc_tables(c, err, errlen);
    }
    if (rc == MR_COMM_OK &&
        MPI_Comm_split_type(c->ctrl, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &c->local) !=
            MPI_SUCCESS)
        rc = mr_comm_mpi_failed(MPI_ERR_OTHER, "finding the ranks on this host", err, errlen);
    if (rc == MR_COMM_OK)
        rc = number_hosts(c, err, errlen);
    for (int t = 0; rc == MR_COMM_OK && t < MR_COMM_N_TRANSPORTS; t++)
        rc = transports[t]->open(c, options, t, &c->state[t], err, errlen);
    if (c->local != MPI_COMM_NULL)
        MPI_Comm_free(&c->local);
    if (rc != MR_COMM_OK) {
        mr_comm_free(c);
        return rc;
    }
    *out = c;
    return MR_COMM_OK;
}

void mr_comm_free(mr_comm *c)
{
    if (!c)
        return;
    for (int t = 0; t < MR_COMM_N_TRANSPORTS; t++)
        transports[t]->close(c->state[t]);
    if (c->data != MPI_COMM_NULL && c->is_mpi)
        MPI_Comm_free(&c->data);
    if (c->ctrl != MPI_COMM_NULL && c->is_mpi)
        MPI_Comm_free(&c->ctrl);
    free(c->host_of);
    free(c->via);
    free(c->sent);
    free(c->got);
    free(c->recv_ptr);
    free(c->recv_bytes);
    free(c->self_buf[0]);
    free(c->self_buf[1]);
    free(c);
}

int mr_comm_rank(const mr_comm *c)
{
    return c->rank;
}

int mr_comm_size(const mr_comm *c)
{
    return c->size;
}

int mr_comm_hosts(const mr_comm *c)
{
    return c->n_hosts;
}

int mr_comm_host_of(const mr_comm *c, int rank)
{
    return c->host_of[rank];
}

size_t mr_comm_capacity(const mr_comm *c)
{
    return c->capacity;
}

const char *mr_comm_transport(const mr_comm *c, int peer)
{
    return peer == c->rank ? "self" : transports[c->via[peer]]->name;
}

double mr_comm_wait_seconds(const mr_comm *c)
{
    return c->wait_seconds;
}

/* ---- waiting ----------------------------------------------------------- */

/* Spinning only pays while the peer is running on another core; past that
 * a waiting rank gives its core away, which matters when ranks outnumber
 * cores. */
enum { SPIN = 2000, YIELD = 200 };
#define SLEEP_NS 50000L
#define CHECK_EVERY 0.1 /* seconds between liveness checks */

/* Monotonic seconds, for wait totals and check intervals. */
static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void mr_backoff_start(mr_backoff *b)
{
    b->spins = 0;
    b->started = monotonic();
    b->next_check = b->started + CHECK_EVERY;
}

bool mr_backoff_pause(const mr_comm *c, mr_backoff *b, char *err, size_t errlen)
{
    b->spins++;
    if (b->spins < SPIN) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        return true;
    }
    if (b->spins < SPIN + YIELD) {
        sched_yield();
        return true;
    }
    nanosleep(&(struct timespec){0, SLEEP_NS}, NULL);
    double now = monotonic();
    if (now < b->next_check)
        return true;
    b->next_check = now + CHECK_EVERY;
    for (int t = 0; t < MR_COMM_N_TRANSPORTS; t++)
        if (c->state[t] && transports[t]->alive &&
            !transports[t]->alive(c, c->state[t], err, errlen))
            return false;
    return true;
}

void mr_backoff_end(mr_comm *c, const mr_backoff *b)
{
    c->wait_seconds += monotonic() - b->started;
}

/* ---- the data plane ---------------------------------------------------- */

int mr_comm_send_buffer(mr_comm *c, int dst, void **buf, char *err, size_t errlen)
{
    if (dst == c->rank) {
        *buf = c->self_buf[(c->sent[dst] + 1) % 2];
        return MR_COMM_OK;
    }
    int t = c->via[dst];
    return transports[t]->send_buffer(c, c->state[t], dst, buf, err, errlen);
}

static int check_sizes(const mr_comm *c, const int64_t *send_bytes, const int64_t *recv_bytes,
                       char *err, size_t errlen)
{
    for (int r = 0; r < c->size; r++) {
        if (send_bytes[r] > (int64_t)c->capacity) {
            snprintf(err, errlen, "a message of %lld bytes to rank %d exceeds the %zu-byte buffers",
                     (long long)send_bytes[r], r, c->capacity);
            return MR_COMM_EINVAL;
        }
        if (recv_bytes[r] > (int64_t)c->capacity || recv_bytes[r] < MR_COMM_RECV_UP_TO_CAPACITY) {
            snprintf(err, errlen, "an expected message of %lld bytes from rank %d does not fit the "
                     "%zu-byte buffers", (long long)recv_bytes[r], r, c->capacity);
            return MR_COMM_EINVAL;
        }
    }
    return MR_COMM_OK;
}

/* Every message that came is the size this rank expected of it. */
static int check_received(const mr_comm *c, const int64_t *recv_bytes, char *err, size_t errlen)
{
    for (int r = 0; r < c->size; r++) {
        if (recv_bytes[r] == MR_COMM_NO_MESSAGE)
            continue;
        if (!c->recv_ptr[r]) {
            snprintf(err, errlen, "rank %d sent rank %d no message where %lld bytes were expected",
                     r, c->rank, (long long)recv_bytes[r]);
            return MR_COMM_EINVAL;
        }
        if (recv_bytes[r] >= 0 && c->recv_bytes[r] != (size_t)recv_bytes[r]) {
            snprintf(err, errlen, "rank %d sent rank %d a message of %zu bytes where %lld were "
                     "expected", r, c->rank, c->recv_bytes[r], (long long)recv_bytes[r]);
            return MR_COMM_EINVAL;
        }
    }
    return MR_COMM_OK;
}

/* Sends to itself: the message is already in place, in the buffer
 * send_buffer gave. */
static void exchange_self(mr_comm *c, const int64_t *send_bytes, const int64_t *recv_bytes)
{
    int me = c->rank;
    if (send_bytes[me] < 0)
        return;
    uint64_t n = ++c->sent[me];
    if (recv_bytes[me] != MR_COMM_NO_MESSAGE) {
        c->recv_ptr[me] = c->self_buf[n % 2];
        c->recv_bytes[me] = (size_t)send_bytes[me];
    }
}

/* Polls every transport until all are done, pausing between rounds. */
static int wait_all(mr_comm *c, const int64_t *recv_bytes, char *err, size_t errlen)
{
    bool done[MR_COMM_N_TRANSPORTS] = {0}, all = false;
    int rc = MR_COMM_OK;
    mr_backoff b;
    mr_backoff_start(&b);
    for (int round = 0; rc == MR_COMM_OK && !all; round++) {
        if (round > 0 && !mr_backoff_pause(c, &b, err, errlen)) {
            rc = MR_COMM_EIO;
            break;
        }
        all = true;
        for (int t = 0; rc == MR_COMM_OK && t < MR_COMM_N_TRANSPORTS; t++) {
            if (c->state[t] && !done[t])
                rc = transports[t]->poll(c, c->state[t], recv_bytes, &done[t], err, errlen);
            all = all && (!c->state[t] || done[t]);
        }
    }
    mr_backoff_end(c, &b);
    return rc;
}

int mr_comm_exchange(mr_comm *c, const int64_t *send_bytes, const int64_t *recv_bytes,
                     char *err, size_t errlen)
{
    for (int r = 0; r < c->size; r++) {
        c->recv_ptr[r] = NULL;
        c->recv_bytes[r] = 0;
    }
    int rc = check_sizes(c, send_bytes, recv_bytes, err, errlen);
    if (rc != MR_COMM_OK)
        return rc;
    exchange_self(c, send_bytes, recv_bytes);
    for (int t = 0; rc == MR_COMM_OK && t < MR_COMM_N_TRANSPORTS; t++)
        if (c->state[t])
            rc = transports[t]->post(c, c->state[t], send_bytes, recv_bytes, err, errlen);
    if (rc == MR_COMM_OK)
        rc = wait_all(c, recv_bytes, err, errlen);
    return rc == MR_COMM_OK ? check_received(c, recv_bytes, err, errlen) : rc;
}

const void *mr_comm_received(const mr_comm *c, int src, size_t *bytes)
{
    *bytes = c->recv_bytes[src];
    return c->recv_ptr[src];
}

void mr_comm_release(mr_comm *c)
{
    for (int t = 0; t < MR_COMM_N_TRANSPORTS; t++)
        if (c->state[t])
            transports[t]->release(c, c->state[t]);
    for (int r = 0; r < c->size; r++)
        c->recv_ptr[r] = NULL;
}
