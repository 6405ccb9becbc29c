/* The communicator's state, shared by its transports.  Private to engine/. */
#ifndef MR_ENGINE_COMM_INTERNAL_H
#define MR_ENGINE_COMM_INTERNAL_H

#include <mpi.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "engine/engine.h"

/* The signals of one (sender → receiver) pair on a host, each counter on
 * its own cache line so the two sides never write the same line. */
typedef struct {
    _Atomic uint64_t posted;   /* messages the sender has written */
    _Atomic uint64_t bytes[2]; /* the size of each region's latest */
    char pad[40];
    _Atomic uint64_t released; /* messages the receiver is done reading */
    char pad2[56];
} mr_shm_pair;

/* One host's segment: every local rank's pid (so waits can notice a dead
 * peer), then a signal block and two data regions per (sender, receiver).
 * Message n of a pair goes to region n % 2, so a receiver may hold one
 * message (a dispatch it is still computing on) while the next arrives. */
typedef struct {
    int local_size, local_rank;
    size_t region; /* bytes of each data region, page aligned */
    void *base;
    size_t size;
    pid_t *pids;
    mr_shm_pair *pairs;  /* [sender][receiver] */
    unsigned char *data; /* [sender][receiver][2][region] */
} mr_shm;

struct mr_comm {
    int rank, size, n_hosts;
    size_t capacity;
    int *host_of;    /* [size] */
    int *local_of;   /* [size]: index on this host's segment, -1 for MPI */
    /* This rank's messages to itself, alternating like the others. */
    void *self_buf[2];
    mr_shm shm;
    uint64_t *sent, *got; /* [size]: messages sent to / taken from each peer */
    bool is_mpi;
    MPI_Comm mpi;
    void **mpi_send;  /* [size] staging buffers of remote peers */
    void **mpi_recv;  /* [size][2], alternating as the shm regions do */
    MPI_Request *requests;       /* [2 * size] */
    MPI_Status *statuses;        /* [2 * size] */
    int64_t *gather_bytes; /* [size]: mr_comm_allgather's sizes, made once */
    /* What the last exchange received. */
    const void **recv_ptr; /* [size], NULL when nothing came */
    size_t *recv_bytes;
    double wait_seconds;
};

int mr_shm_open(mr_comm *c, MPI_Comm local, char *err, size_t errlen);
void mr_shm_close(mr_shm *shm);

static inline mr_shm_pair *mr_shm_pair_at(const mr_shm *shm, int from, int to)
{
    return &shm->pairs[from * shm->local_size + to];
}

static inline void *mr_shm_region(const mr_shm *shm, int from, int to, uint64_t message)
{
    size_t pair = (size_t)from * (size_t)shm->local_size + (size_t)to;
    return shm->data + (2 * pair + (size_t)(message % 2)) * shm->region;
}

/* Waiting: spin a little, then yield, then sleep; every so often check
 * that the peers on this host are alive. */
typedef struct {
    unsigned spins;
    double started, next_check;
} mr_backoff;

void mr_backoff_start(mr_backoff *b);
/* One pause; returns false (and fills err) when a local peer died. */
bool mr_backoff_pause(mr_comm *c, mr_backoff *b, char *err, size_t errlen);
/* Adds the time since start to the communicator's wait total. */
void mr_backoff_end(mr_comm *c, const mr_backoff *b);

#endif
