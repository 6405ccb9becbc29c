/* Private to engine/comm/: the communicator's state and the transports of
 * its data plane. */
#ifndef MR_COMM_INTERNAL_H
#define MR_COMM_INTERNAL_H

#include <mpi.h>

#include "engine/comm/comm.h"

/*
 * A transport carries the data plane between this rank and some of its
 * peers.  comm.c lists them in one table, in order of preference; when the
 * communicator is made, each opens in turn and claims the peers it can
 * reach among those no earlier one claimed.  Every exchange then goes
 * send_buffer (per message) → post → poll until done → release, each
 * transport over its own peers; comm.c does the rest (this rank's message
 * to itself, the size checks, the waiting).  `state` is what open made.
 *
 * A transport reads and writes, for its peers only: sent[peer] and
 * got[peer] (messages sent to and taken from each peer, for the alternation
 * of two buffers per pair), and, when a message has arrived, recv_ptr[peer]
 * and recv_bytes[peer].
 */
struct mr_comm_transport {
    const char *name;
    /* Collective over the world.  Claims peer r by setting c->via[r] = id;
     * may claim none and leave *state NULL. */
    int (*open)(mr_comm *c, const mr_comm_options *options, int id, void **state, char *err,
                size_t errlen);
    void (*close)(void *state);
    /* Where the next message to dst is written (capacity bytes). */
    int (*send_buffer)(mr_comm *c, void *state, int dst, void **buf, char *err, size_t errlen);
    /* Sends the messages send_bytes says and posts the receives recv_bytes
     * says (MR_COMM_NO_MESSAGE, MR_COMM_RECV_UP_TO_CAPACITY or exact). */
    int (*post)(mr_comm *c, void *state, const int64_t *send_bytes, const int64_t *recv_bytes,
                char *err, size_t errlen);
    /* Takes what has arrived; *done once every posted receive and send has
     * completed.  Never blocks: comm.c waits between calls. */
    int (*poll)(mr_comm *c, void *state, const int64_t *recv_bytes, bool *done, char *err,
                size_t errlen);
    /* Every message taken so far may be overwritten by its sender. */
    void (*release)(mr_comm *c, void *state);
    /* While waiting: false (and err filled) when a peer is known dead.  NULL
     * when the transport cannot tell (MPI: Open MPI stops the job itself). */
    bool (*alive)(const mr_comm *c, const void *state, char *err, size_t errlen);
};

extern const struct mr_comm_transport mr_comm_transport_shm, mr_comm_transport_mpi;

enum { MR_COMM_N_TRANSPORTS = 2 };

struct mr_comm {
    int rank, size, n_hosts;
    size_t capacity;
    int *host_of; /* [size] */
    int *via;     /* [size]: the table index of each peer's transport; -1 for itself */
    void *state[MR_COMM_N_TRANSPORTS];
    /* This rank's messages to itself, alternating like the others. */
    void *self_buf[2];
    uint64_t *sent, *got; /* [size]: messages sent to / taken from each peer */
    bool is_mpi;
    MPI_Comm data;  /* the data plane's MPI messages */
    MPI_Comm ctrl;  /* the control plane's collectives, apart from the data */
    MPI_Comm local; /* the ranks of this host, while the transports open */
    /* What the last exchange received. */
    const void **recv_ptr; /* [size], NULL when nothing came */
    size_t *recv_bytes;
    double wait_seconds;
};

/* An MPI error code as a message; returns MR_COMM_EIO. */
int mr_comm_mpi_failed(int rc, const char *what, char *err, size_t errlen);

/* Waiting: spin a little, then yield, then sleep; every so often ask the
 * transports whether the peers are alive. */
typedef struct {
    unsigned spins;
    double started, next_check;
} mr_backoff;

void mr_backoff_start(mr_backoff *b);
/* One pause; returns false (and fills err) when a peer died. */
bool mr_backoff_pause(const mr_comm *c, mr_backoff *b, char *err, size_t errlen);
/* Adds the time since start to the data plane's wait total. */
void mr_backoff_end(mr_comm *c, const mr_backoff *b);

#endif
