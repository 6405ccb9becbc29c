/*
 * The "shm" transport: ranks of one host through one POSIX shared-memory
 * segment, made by the host's first rank and unlinked as soon as every
 * local rank has mapped it, so a job that is killed leaves nothing behind
 * in /dev/shm.  Senders write straight into the receiver's region;
 * release/acquire counters say when a message is there and when its
 * region may be written again.  Sizes need no step of their own: each
 * message's size travels in its pair's signal block.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "engine/comm/comm_internal.h"

#define PAGE 4096u
#define NAME_LEN 64

/* The signals of one (sender → receiver) pair on a host, each counter on
 * its own cache line so the two sides never write the same line. */
typedef struct {
    _Atomic uint64_t posted;   /* messages the sender has written */
    _Atomic uint64_t bytes[2]; /* the size of each region's latest */
    char pad[40];
    _Atomic uint64_t released; /* messages the receiver is done reading */
    char pad2[56];
} shm_pair;

/* One host's segment: every local rank's pid (so waits can notice a dead
 * peer), then a signal block and two data regions per (sender, receiver).
 * Message n of a pair goes to region n % 2, so a receiver may hold one
 * message (a dispatch it is still computing on) while the next arrives. */
typedef struct {
    int id; /* this transport's index in the table */
    int local_size, local_rank;
    int *local_of; /* [world size]: index on this segment, -1 off it */
    size_t region; /* bytes of each data region, page aligned */
    void *base;
    size_t size;
    pid_t *pids;
    shm_pair *pairs;     /* [sender][receiver] */
    unsigned char *data; /* [sender][receiver][2][region] */
} shm_state;

static shm_pair *pair_at(const shm_state *shm, int from, int to)
{
    return &shm->pairs[from * shm->local_size + to];
}

static void *region_of(const shm_state *shm, int from, int to, uint64_t message)
{
    size_t pair = (size_t)from * (size_t)shm->local_size + (size_t)to;
    return shm->data + (2 * pair + (size_t)(message % 2)) * shm->region;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static int create_segment(char *name, size_t size, char *err, size_t errlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(name, NAME_LEN, "/moerun-%d-%lx", (int)getpid(), (unsigned long)ts.tv_nsec);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "shm_open %s: %s", name, strerror(errno));
        return -1;
    }
    /* ftruncate leaves the segment sparse: pages appear as ranks write. */
    if (ftruncate(fd, (off_t)size) != 0) {
        snprintf(err, errlen, "sizing shared memory %s to %zu bytes: %s", name, size,
                 strerror(errno));
        close(fd);
        shm_unlink(name);
        return -1;
    }
    return fd;
}

static void shm_close(void *state)
{
    shm_state *shm = state;
    if (!shm)
        return;
    if (shm->base)
        munmap(shm->base, shm->size);
    free(shm->local_of);
    free(shm);
}

/* Maps the segment the host's first rank made; every local rank learns
 * whether all of them could, so all fail together. */
static int map_segment(shm_state *shm, MPI_Comm local, char *err, size_t errlen)
{
    size_t n = (size_t)shm->local_size;
    size_t head = round_up(n * sizeof(pid_t), PAGE);
    size_t pairs = round_up(n * n * sizeof(shm_pair), PAGE);
    shm->size = head + pairs + 2 * n * n * shm->region;
    char name[NAME_LEN] = "";
    int fd = -1;
    if (shm->local_rank == 0)
        fd = create_segment(name, shm->size, err, errlen);
    /* An empty name tells the others the leader failed, so all fail. */
    MPI_Bcast(name, NAME_LEN, MPI_CHAR, 0, local);
    if (!name[0]) {
        if (shm->local_rank != 0)
            snprintf(err, errlen, "the first rank on this host could not make shared memory");
        return MR_COMM_EIO;
    }
    if (shm->local_rank != 0 && (fd = shm_open(name, O_RDWR, 0600)) < 0)
        snprintf(err, errlen, "shm_open %s: %s", name, strerror(errno));
    void *base = MAP_FAILED;
    if (fd >= 0) {
        base = mmap(NULL, shm->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            snprintf(err, errlen, "mapping %zu bytes of shared memory: %s", shm->size,
                     strerror(errno));
        close(fd);
    }
    int ok = base != MAP_FAILED, all_ok = 0;
    if (ok) {
        shm->base = base;
        shm->pids = base;
        shm->pairs = (shm_pair *)((unsigned char *)base + head);
        shm->data = (unsigned char *)base + head + pairs;
        shm->pids[shm->local_rank] = getpid();
    }
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, local);
    if (shm->local_rank == 0)
        shm_unlink(name);
    if (!all_ok && ok)
        snprintf(err, errlen, "another rank on this host could not map shared memory %s", name);
    return all_ok ? MR_COMM_OK : MR_COMM_EIO;
}

/* Claims the other ranks of this host, unless MPI is forced or this rank
 * is alone on it. */
static int shm_open_transport(mr_comm *c, const mr_comm_options *options, int id, void **out,
                              char *err, size_t errlen)
{
    int local_size;
    MPI_Comm_size(c->local, &local_size);
    if (options->force_mpi || local_size < 2)
        return MR_COMM_OK;
    shm_state *shm = calloc(1, sizeof *shm);
    if (shm)
        shm->local_of = malloc((size_t)c->size * sizeof *shm->local_of);
    if (!shm || !shm->local_of) {
        free(shm);
        snprintf(err, errlen, "out of memory for a communicator of %d ranks", c->size);
        return MR_COMM_ENOMEM;
    }
    *out = shm;
    shm->id = id;
    shm->local_size = local_size;
    MPI_Comm_rank(c->local, &shm->local_rank);
    shm->region = round_up(c->capacity, PAGE);
    /* Ranks of one host are numbered in the split communicator by world
     * rank, so counting on-host ranks in world order gives their index. */
    int next = 0;
    for (int r = 0; r < c->size; r++) {
        bool here = c->host_of[r] == c->host_of[c->rank];
        shm->local_of[r] = here ? next++ : -1;
        if (here && r != c->rank && c->via[r] < 0)
            c->via[r] = id;
    }
    return map_segment(shm, c->local, err, errlen);
}

/* The message a sender writes next to `dst` is number sent[dst] + 1; its
 * region was last used by message sent[dst] - 1, which the receiver must
 * have released. */
static int shm_send_buffer(mr_comm *c, void *state, int dst, void **buf, char *err,
                           size_t errlen)
{
    shm_state *shm = state;
    uint64_t next = c->sent[dst] + 1;
    int me = shm->local_of[c->rank], to = shm->local_of[dst];
    shm_pair *pair = pair_at(shm, me, to);
    uint64_t need = next >= 2 ? next - 2 : 0;
    if (atomic_load_explicit(&pair->released, memory_order_acquire) < need) {
        mr_backoff b;
        mr_backoff_start(&b);
        while (atomic_load_explicit(&pair->released, memory_order_acquire) < need)
            if (!mr_backoff_pause(c, &b, err, errlen))
                return MR_COMM_EIO;
        mr_backoff_end(c, &b);
    }
    *buf = region_of(shm, me, to, next);
    return MR_COMM_OK;
}

static bool carries(const mr_comm *c, const shm_state *shm, int peer)
{
    return c->via[peer] == shm->id;
}

/* A message is posted by publishing its size, then its number. */
static int shm_post(mr_comm *c, void *state, const int64_t *send_bytes,
                    const int64_t *recv_bytes, char *err, size_t errlen)
{
    (void)recv_bytes, (void)err, (void)errlen;
    shm_state *shm = state;
    int me = shm->local_of[c->rank];
    for (int r = 0; r < c->size; r++) {
        if (!carries(c, shm, r) || send_bytes[r] < 0)
            continue;
        shm_pair *pair = pair_at(shm, me, shm->local_of[r]);
        uint64_t n = ++c->sent[r];
        atomic_store_explicit(&pair->bytes[n % 2], (uint64_t)send_bytes[r], memory_order_relaxed);
        atomic_store_explicit(&pair->posted, n, memory_order_release);
    }
    return MR_COMM_OK;
}

/* Takes the messages that have arrived; done when all expected have. */
static int shm_poll(mr_comm *c, void *state, const int64_t *recv_bytes, bool *done, char *err,
                    size_t errlen)
{
    (void)err, (void)errlen;
    shm_state *shm = state;
    int me = shm->local_of[c->rank];
    *done = true;
    for (int r = 0; r < c->size; r++) {
        if (!carries(c, shm, r) || recv_bytes[r] == MR_COMM_NO_MESSAGE || c->recv_ptr[r])
            continue;
        int src = shm->local_of[r];
        shm_pair *pair = pair_at(shm, src, me);
        if (atomic_load_explicit(&pair->posted, memory_order_acquire) <= c->got[r]) {
            *done = false;
            continue;
        }
        uint64_t n = ++c->got[r];
        c->recv_bytes[r] = (size_t)atomic_load_explicit(&pair->bytes[n % 2], memory_order_relaxed);
        c->recv_ptr[r] = region_of(shm, src, me, n);
    }
    return MR_COMM_OK;
}

static void shm_release(mr_comm *c, void *state)
{
    shm_state *shm = state;
    int me = shm->local_of[c->rank];
    for (int r = 0; r < c->size; r++)
        if (carries(c, shm, r))
            atomic_store_explicit(&pair_at(shm, shm->local_of[r], me)->released, c->got[r],
                                  memory_order_release);
}

static bool shm_alive(const mr_comm *c, const void *state, char *err, size_t errlen)
{
    const shm_state *shm = state;
    for (int r = 0; r < c->size; r++) {
        if (!carries(c, shm, r))
            continue;
        pid_t pid = shm->pids[shm->local_of[r]];
        if (kill(pid, 0) != 0 && errno == ESRCH) {
            snprintf(err, errlen, "rank %d (pid %d, on this host) died", r, (int)pid);
            return false;
        }
    }
    return true;
}

const struct mr_comm_transport mr_comm_transport_shm = {
    .name = "shm",
    .open = shm_open_transport,
    .close = shm_close,
    .send_buffer = shm_send_buffer,
    .post = shm_post,
    .poll = shm_poll,
    .release = shm_release,
    .alive = shm_alive,
};
