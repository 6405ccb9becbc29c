/*
 * The communicator: which rank reaches which through what, and the
 * exchange itself.  Pairs on one host go through the host's shared-memory
 * segment (comm_shm.c); pairs on different hosts, or every pair when MPI is
 * forced, go through MPI point-to-point messages; a rank's message to
 * itself is never copied.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm_internal.h"

/* One message buffer: capacity bytes, at least one so malloc gives one. */
static void *alloc_buffer(const mr_comm *c)
{
    return malloc(c->capacity ? c->capacity : 1);
}

static int alloc_tables(mr_comm *c, char *err, size_t errlen)
{
    size_t n = (size_t)c->size;
    c->host_of = calloc(n, sizeof *c->host_of);
    c->local_of = malloc(n * sizeof *c->local_of);
    c->sent = calloc(n, sizeof *c->sent);
    c->got = calloc(n, sizeof *c->got);
    c->mpi_send = calloc(n, sizeof *c->mpi_send);
    c->mpi_recv = calloc(2 * n, sizeof *c->mpi_recv);
    c->requests = malloc(2 * n * sizeof *c->requests);
    c->statuses = malloc(2 * n * sizeof *c->statuses);
    c->recv_ptr = calloc(n, sizeof *c->recv_ptr);
    c->recv_bytes = calloc(n, sizeof *c->recv_bytes);
    c->gather_bytes = malloc(n * sizeof *c->gather_bytes);
    c->self_buf[0] = alloc_buffer(c);
    c->self_buf[1] = alloc_buffer(c);
    if (!c->host_of || !c->local_of || !c->sent || !c->got || !c->mpi_send || !c->mpi_recv ||
        !c->requests || !c->statuses || !c->recv_ptr || !c->recv_bytes || !c->gather_bytes || !c->self_buf[0] || !c->self_buf[1]) {
        snprintf(err, errlen, "out of memory for a communicator of %d ranks", c->size);
        return MR_ENGINE_ENOMEM;
    }
    for (int r = 0; r < c->size; r++)
        c->local_of[r] = -1;
    return MR_ENGINE_OK;
}

int mr_comm_solo(const mr_comm_options *options, mr_comm **out, char *err, size_t errlen)
{
    mr_comm *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory for a communicator");
        return MR_ENGINE_ENOMEM;
    }
    c->size = 1;
    c->n_hosts = 1;
    c->capacity = options->capacity;
    int rc = alloc_tables(c, err, errlen);
    if (rc != MR_ENGINE_OK) {
        mr_comm_free(c);
        return rc;
    }
    *out = c;
    return MR_ENGINE_OK;
}

/* Host indices in order of each host's lowest rank, from every rank's
 * lowest on-host rank. */
static void number_hosts(mr_comm *c, const int *leader)
{
    c->n_hosts = 0;
    for (int r = 0; r < c->size; r++)
        c->host_of[r] = leader[r] == r ? c->n_hosts++ : c->host_of[leader[r]];
}

static int mpi_failed(int rc, const char *what, char *err, size_t errlen)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    snprintf(err, errlen, "%s: %.*s", what, len, text);
    return MR_ENGINE_EIO;
}

static int map_ranks(mr_comm *c, MPI_Comm local, bool use_shm, char *err, size_t errlen)
{
    int local_rank, leader_mine;
    MPI_Comm_rank(local, &local_rank);
    leader_mine = local_rank == 0 ? c->rank : -1;
    MPI_Bcast(&leader_mine, 1, MPI_INT, 0, local);
    int *leader = malloc((size_t)c->size * sizeof *leader);
    if (!leader) {
        snprintf(err, errlen, "out of memory for a communicator of %d ranks", c->size);
        return MR_ENGINE_ENOMEM;
    }
    int rc = MPI_Allgather(&leader_mine, 1, MPI_INT, leader, 1, MPI_INT, c->mpi);
    if (rc != MPI_SUCCESS) {
        free(leader);
        return mpi_failed(rc, "finding the hosts of the ranks", err, errlen);
    }
    number_hosts(c, leader);
    /* Ranks of one host are numbered in the split communicator by world
     * rank, so counting on-host ranks in world order gives their index. */
    int next = 0;
    for (int r = 0; r < c->size && use_shm; r++)
        if (c->host_of[r] == c->host_of[c->rank])
            c->local_of[r] = next++;
    free(leader);
    return MR_ENGINE_OK;
}

static int alloc_staging(mr_comm *c, char *err, size_t errlen)
{
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank || c->local_of[r] >= 0)
            continue;
        c->mpi_send[r] = alloc_buffer(c);
        c->mpi_recv[2 * r] = alloc_buffer(c);
        c->mpi_recv[2 * r + 1] = alloc_buffer(c);
        if (!c->mpi_send[r] || !c->mpi_recv[2 * r] || !c->mpi_recv[2 * r + 1]) {
            snprintf(err, errlen, "out of memory for MPI buffers of %zu bytes", c->capacity);
            return MR_ENGINE_ENOMEM;
        }
    }
    return MR_ENGINE_OK;
}

int mr_comm_mpi(const mr_comm_options *options, mr_comm **out, char *err, size_t errlen)
{
    if (options->capacity > (size_t)INT32_MAX) {
        snprintf(err, errlen, "an exchange of %zu bytes per rank pair is beyond MPI's int counts",
                 options->capacity);
        return MR_ENGINE_EINVAL;
    }
    mr_comm *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory for a communicator");
        return MR_ENGINE_ENOMEM;
    }
    c->is_mpi = true;
    c->capacity = options->capacity;
    MPI_Comm local = MPI_COMM_NULL;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
    if (rc != MPI_SUCCESS) {
        c->is_mpi = false;
        mr_comm_free(c);
        return mpi_failed(rc, "MPI_Comm_dup", err, errlen);
    }
    /* Errors come back as codes, so a failure is a message, not an abort
     * deep inside MPI. */
    MPI_Comm_set_errhandler(c->mpi, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->mpi, &c->rank);
    MPI_Comm_size(c->mpi, &c->size);
    rc = alloc_tables(c, err, errlen);
    if (rc == MR_ENGINE_OK &&
        MPI_Comm_split_type(c->mpi, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) != MPI_SUCCESS)
        rc = mpi_failed(MPI_ERR_OTHER, "finding the ranks on this host", err, errlen);
    int local_size = 1;
    if (rc == MR_ENGINE_OK) {
        MPI_Comm_size(local, &local_size);
        rc = map_ranks(c, local, !options->force_mpi && local_size > 1, err, errlen);
    }
    if (rc == MR_ENGINE_OK && !options->force_mpi && local_size > 1 &&
        mr_shm_open(c, local, err, errlen) != 0)
        rc = MR_ENGINE_EIO;
    if (rc == MR_ENGINE_OK)
        rc = alloc_staging(c, err, errlen);
    if (local != MPI_COMM_NULL)
        MPI_Comm_free(&local);
    if (rc != MR_ENGINE_OK) {
        mr_comm_free(c);
        return rc;
    }
    *out = c;
    return MR_ENGINE_OK;
}

void mr_comm_free(mr_comm *c)
{
    if (!c)
        return;
    mr_shm_close(&c->shm);
    for (int r = 0; c->mpi_send && r < c->size; r++)
        free(c->mpi_send[r]);
    for (int r = 0; c->mpi_recv && r < 2 * c->size; r++)
        free(c->mpi_recv[r]);
    if (c->is_mpi)
        MPI_Comm_free(&c->mpi);
    free(c->host_of);
    free(c->local_of);
    free(c->sent);
    free(c->got);
    free(c->mpi_send);
    free(c->mpi_recv);
    free(c->requests);
    free(c->statuses);
    free(c->recv_ptr);
    free(c->recv_bytes);
    free(c->gather_bytes);
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
    if (peer == c->rank)
        return "self";
    return c->local_of[peer] >= 0 ? "shm" : "mpi";
}

double mr_comm_wait_seconds(const mr_comm *c)
{
    return c->wait_seconds;
}

/* The message a sender writes next to `dst` is number sent[dst] + 1; its
 * region was last used by message sent[dst] - 1, which the receiver must
 * have released. */
int mr_comm_send_buffer(mr_comm *c, int dst, void **buf, char *err, size_t errlen)
{
    uint64_t next = c->sent[dst] + 1;
    if (dst == c->rank) {
        *buf = c->self_buf[next % 2];
        return MR_ENGINE_OK;
    }
    int to = c->local_of[dst];
    if (to < 0) {
        *buf = c->mpi_send[dst];
        return MR_ENGINE_OK;
    }
    int me = c->local_of[c->rank];
    mr_shm_pair *pair = mr_shm_pair_at(&c->shm, me, to);
    uint64_t need = next >= 2 ? next - 2 : 0;
    if (atomic_load_explicit(&pair->released, memory_order_acquire) < need) {
        mr_backoff b;
        mr_backoff_start(&b);
        while (atomic_load_explicit(&pair->released, memory_order_acquire) < need)
            if (!mr_backoff_pause(c, &b, err, errlen))
                return MR_ENGINE_EIO;
        mr_backoff_end(c, &b);
    }
    *buf = mr_shm_region(&c->shm, me, to, next);
    return MR_ENGINE_OK;
}

static bool wants(const bool *from, int src)
{
    return !from || from[src];
}

/* Posts the MPI side of an exchange; returns how many requests. */
static int post_mpi(mr_comm *c, const int64_t *bytes, const bool *from, int *n, char *err,
                    size_t errlen)
{
    *n = 0;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank || c->local_of[r] >= 0)
            continue;
        int rc = MPI_SUCCESS;
        if (wants(from, r))
            rc = MPI_Irecv(c->mpi_recv[2 * r + (c->got[r] + 1) % 2], (int)c->capacity, MPI_BYTE,
                           r, 0, c->mpi, &c->requests[(*n)++]);
        if (rc == MPI_SUCCESS && bytes[r] >= 0)
            rc = MPI_Isend(c->mpi_send[r], (int)bytes[r], MPI_BYTE, r, 0, c->mpi,
                           &c->requests[(*n)++]);
        if (rc != MPI_SUCCESS)
            return mpi_failed(rc, "posting an exchange", err, errlen);
    }
    return MR_ENGINE_OK;
}

/* Takes the shm messages that have arrived; true when all have. */
static bool take_shm(mr_comm *c, const bool *from)
{
    bool all = true;
    int me = c->local_of[c->rank];
    for (int r = 0; r < c->size; r++) {
        int src = c->local_of[r];
        if (src < 0 || r == c->rank || !wants(from, r) || c->recv_ptr[r])
            continue;
        mr_shm_pair *pair = mr_shm_pair_at(&c->shm, src, me);
        if (atomic_load_explicit(&pair->posted, memory_order_acquire) <= c->got[r]) {
            all = false;
            continue;
        }
        uint64_t n = ++c->got[r];
        c->recv_bytes[r] = (size_t)atomic_load_explicit(&pair->bytes[n % 2], memory_order_relaxed);
        c->recv_ptr[r] = mr_shm_region(&c->shm, src, me, n);
    }
    return all;
}

/* Sizes of the MPI messages, walking the requests in the order
 * post_mpi made them. */
static void note_mpi_sizes(mr_comm *c, const int64_t *bytes, const bool *from)
{
    int i = 0;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank || c->local_of[r] >= 0)
            continue;
        if (wants(from, r)) {
            int count = 0;
            MPI_Get_count(&c->statuses[i++], MPI_BYTE, &count);
            c->recv_ptr[r] = c->mpi_recv[2 * r + ++c->got[r] % 2];
            c->recv_bytes[r] = (size_t)count;
        }
        if (bytes[r] >= 0)
            i++;
    }
}

int mr_comm_exchange(mr_comm *c, const int64_t *bytes, const bool *from, char *err,
                     size_t errlen)
{
    for (int r = 0; r < c->size; r++) {
        c->recv_ptr[r] = NULL;
        c->recv_bytes[r] = 0;
        if (bytes[r] > (int64_t)c->capacity) {
            snprintf(err, errlen, "a message of %lld bytes to rank %d exceeds the %zu-byte buffers",
                     (long long)bytes[r], r, c->capacity);
            return MR_ENGINE_EINVAL;
        }
    }
    if (bytes[c->rank] >= 0) {
        uint64_t n = ++c->sent[c->rank];
        if (wants(from, c->rank)) {
            c->recv_ptr[c->rank] = c->self_buf[n % 2];
            c->recv_bytes[c->rank] = (size_t)bytes[c->rank];
        }
    }
    int n_requests = 0, rc = MR_ENGINE_OK;
    if (c->is_mpi)
        rc = post_mpi(c, bytes, from, &n_requests, err, errlen);
    int me = c->local_of[c->rank];
    for (int r = 0; rc == MR_ENGINE_OK && r < c->size; r++) {
        int to = c->local_of[r];
        if (to < 0 || r == c->rank || bytes[r] < 0)
            continue;
        mr_shm_pair *pair = mr_shm_pair_at(&c->shm, me, to);
        uint64_t n = ++c->sent[r];
        atomic_store_explicit(&pair->bytes[n % 2], (uint64_t)bytes[r], memory_order_relaxed);
        atomic_store_explicit(&pair->posted, n, memory_order_release);
    }
    int mpi_done = n_requests == 0;
    bool shm_done = take_shm(c, from);
    mr_backoff b;
    mr_backoff_start(&b);
    while (rc == MR_ENGINE_OK && !(mpi_done && shm_done)) {
        if (!mpi_done) {
            int mrc = MPI_Testall(n_requests, c->requests, &mpi_done, c->statuses);
            if (mrc != MPI_SUCCESS)
                rc = mpi_failed(mrc, "exchanging with another host", err, errlen);
        }
        if (!shm_done)
            shm_done = take_shm(c, from);
        if (rc == MR_ENGINE_OK && !(mpi_done && shm_done) && !mr_backoff_pause(c, &b, err, errlen))
            rc = MR_ENGINE_EIO;
    }
    mr_backoff_end(c, &b);
    if (rc == MR_ENGINE_OK && n_requests > 0)
        note_mpi_sizes(c, bytes, from);
    return rc;
}

const void *mr_comm_received(const mr_comm *c, int src, size_t *bytes)
{
    *bytes = c->recv_bytes[src];
    return c->recv_ptr[src];
}

void mr_comm_release(mr_comm *c)
{
    int me = c->local_of[c->rank];
    for (int r = 0; r < c->size; r++) {
        int src = c->local_of[r];
        if (src >= 0 && r != c->rank)
            atomic_store_explicit(&mr_shm_pair_at(&c->shm, src, me)->released, c->got[r],
                                  memory_order_release);
        c->recv_ptr[r] = NULL;
    }
}

/* One exchange of every rank's `bytes` bytes at `offset` of its message. */
static int allgather_chunk(mr_comm *c, const unsigned char *mine, size_t total, size_t offset,
                           size_t bytes, unsigned char *all, char *err, size_t errlen)
{
    int64_t *sizes = c->gather_bytes;
    int rc = MR_ENGINE_OK;
    for (int r = 0; rc == MR_ENGINE_OK && r < c->size; r++) {
        void *to;
        sizes[r] = (int64_t)bytes;
        rc = mr_comm_send_buffer(c, r, &to, err, errlen);
        if (rc == MR_ENGINE_OK)
            memcpy(to, mine + offset, bytes);
    }
    if (rc == MR_ENGINE_OK)
        rc = mr_comm_exchange(c, sizes, NULL, err, errlen);
    for (int r = 0; rc == MR_ENGINE_OK && r < c->size; r++) {
        size_t got;
        const void *from = mr_comm_received(c, r, &got);
        memcpy(all + (size_t)r * total + offset, from, bytes);
    }
    if (rc == MR_ENGINE_OK)
        mr_comm_release(c);
    return rc;
}

int mr_comm_allgather(mr_comm *c, const void *mine, size_t bytes, void *all, char *err,
                      size_t errlen)
{
    size_t offset = 0;
    int rc = MR_ENGINE_OK;
    if (bytes > 0 && c->capacity == 0) {
        snprintf(err, errlen, "allgather of %zu bytes through a communicator without buffers",
                 bytes);
        return MR_ENGINE_EINVAL;
    }
    do {
        size_t chunk = bytes - offset < c->capacity ? bytes - offset : c->capacity;
        rc = allgather_chunk(c, mine, bytes, offset, chunk, all, err, errlen);
        offset += chunk;
    } while (rc == MR_ENGINE_OK && offset < bytes);
    return rc;
}
