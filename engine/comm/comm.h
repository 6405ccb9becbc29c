/*
 * comm -- the ranks of a job and how they talk: a control plane for small
 * host structs and a data plane for the expert exchange.  Below the engine
 * and the runner, above MPI and libc only.
 *
 * Control plane: allgather, broadcast and barrier of small host structs
 * (shard claims, commits, meters, balancer statistics), as MPI collectives
 * on a communicator of their own, or local copies in a world of one rank.
 * On GPUs it stays on the host while the data plane moves to the device.
 *
 * Data plane: one exchange in which every rank sends a message to any of
 * the others, through a transport per peer chosen from a table
 * (comm_internal.h): "shm" between ranks of one host (senders write into
 * the receiver's buffer in POSIX shared memory, as DeepEP writes into
 * NVLink peers' buffers), "mpi" between hosts.  Buffers are allocated once.
 * Every exchange says what each rank sends and what it expects to receive,
 * so a transport can post exactly sized receives (NCCL send/recv needs
 * matching counts).  Waits spin briefly, then sleep, and notice a peer
 * process on this host that died.
 *
 * Every rank makes the same sequence of calls.  A rank must not write into
 * a send buffer or read a received one outside the order
 * send_buffer → exchange → received → release.
 *
 * Functions that can fail return a status below and write a one-line
 * message into err.  The values equal MR_ENGINE_OK, MR_ENGINE_EINVAL,
 * MR_ENGINE_EIO and MR_ENGINE_ENOMEM (engine/engine.h), so the engine
 * passes them on unchanged.
 */
#ifndef MR_COMM_H
#define MR_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    MR_COMM_OK = 0,
    MR_COMM_EINVAL = -1, /* a wrong argument, or a message of another size than expected */
    MR_COMM_EIO = -2,    /* MPI or shared memory failed, or a peer died */
    MR_COMM_ENOMEM = -3
};

typedef struct mr_comm mr_comm;

typedef struct {
    size_t capacity; /* the most bytes one rank sends another in one exchange */
    bool force_mpi;  /* every pair through MPI, even on one host (testing) */
} mr_comm_options;

/* A world of one rank: exchanges are with itself and copy nothing.  */
int mr_comm_solo(const mr_comm_options *options, mr_comm **out, char *err, size_t errlen);
/* The world of MPI_COMM_WORLD; MPI must be initialised.  Collective. */
int mr_comm_mpi(const mr_comm_options *options, mr_comm **out, char *err, size_t errlen);
void mr_comm_free(mr_comm *comm);

int mr_comm_rank(const mr_comm *comm);
int mr_comm_size(const mr_comm *comm);
/* Hosts in the world and the index of the one `rank` runs on (ranks on one
 * host exchange through shared memory). */
int mr_comm_hosts(const mr_comm *comm);
int mr_comm_host_of(const mr_comm *comm, int rank);
size_t mr_comm_capacity(const mr_comm *comm);
/* "self", or the name of the transport between this rank and `peer`
 * ("shm", "mpi"). */
const char *mr_comm_transport(const mr_comm *comm, int peer);

/* ---- control plane ---------------------------------------------------- */

/* Every rank's `bytes` bytes into all[rank * bytes]. */
int mr_comm_ctrl_allgather(mr_comm *comm, const void *mine, size_t bytes, void *all, char *err,
                           size_t errlen);
/* root's `bytes` bytes of buf into every rank's buf. */
int mr_comm_ctrl_bcast(mr_comm *comm, int root, void *buf, size_t bytes, char *err,
                       size_t errlen);
int mr_comm_ctrl_barrier(mr_comm *comm, char *err, size_t errlen);

/* ---- data plane ------------------------------------------------------- */

/* recv_bytes[s] of an exchange: no message from s, or one whose size only
 * the message knows (at most the capacity).  Any value >= 0 is the exact
 * size expected.  A transport that needs exact sizes (NCCL) runs a size
 * step of its own for the pairs marked UP_TO_CAPACITY. */
#define MR_COMM_NO_MESSAGE ((int64_t)-1)
#define MR_COMM_RECV_UP_TO_CAPACITY ((int64_t)-2)

/* Where to write this exchange's message to `dst` (capacity bytes).  May
 * wait until dst has released the previous message. */
int mr_comm_send_buffer(mr_comm *comm, int dst, void **buf, char *err, size_t errlen);
/* Sends send_bytes[d] bytes to every rank d with send_bytes[d] >= 0 (-1: no
 * message) and waits for the message recv_bytes[s] announces from every
 * rank s.  A message of another size than expected is an error naming the
 * peer and both sizes; so is a peer that died. */
int mr_comm_exchange(mr_comm *comm, const int64_t *send_bytes, const int64_t *recv_bytes,
                     char *err, size_t errlen);
/* The message from `src` in the last exchange, or NULL when none came. */
const void *mr_comm_received(const mr_comm *comm, int src, size_t *bytes);
/* Done reading every message received so far: senders may overwrite them.
 * A rank may hold the messages of one exchange while the next arrives
 * (each pair alternates between two buffers), not of two. */
void mr_comm_release(mr_comm *comm);
/* Seconds the data plane spent waiting for other ranks since the
 * communicator was made. */
double mr_comm_wait_seconds(const mr_comm *comm);

#endif
