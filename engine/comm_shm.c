/*
 * The shared-memory side of the communicator: one POSIX shared-memory
 * segment per host, made by the host's first rank and unlinked as soon as
 * every local rank has mapped it, so a job that is killed leaves nothing
 * behind in /dev/shm.  Senders write straight into the receiver's region;
 * release/acquire counters say when a message is there and when its region
 * may be written again.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "engine/comm_internal.h"

#define PAGE 4096u
#define NAME_LEN 64

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

int mr_shm_open(mr_comm *c, MPI_Comm local, char *err, size_t errlen)
{
    mr_shm *shm = &c->shm;
    MPI_Comm_rank(local, &shm->local_rank);
    MPI_Comm_size(local, &shm->local_size);
    size_t n = (size_t)shm->local_size;
    shm->region = round_up(c->capacity, PAGE);
    size_t head = round_up(n * sizeof(pid_t), PAGE);
    size_t pairs = round_up(n * n * sizeof(mr_shm_pair), PAGE);
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
        return -1;
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
        shm->pairs = (mr_shm_pair *)((unsigned char *)base + head);
        shm->data = (unsigned char *)base + head + pairs;
        shm->pids[shm->local_rank] = getpid();
    }
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, local);
    if (shm->local_rank == 0)
        shm_unlink(name);
    if (!all_ok && ok)
        snprintf(err, errlen, "another rank on this host could not map shared memory %s", name);
    return all_ok ? 0 : -1;
}

void mr_shm_close(mr_shm *shm)
{
    if (shm->base)
        munmap(shm->base, shm->size);
    memset(shm, 0, sizeof *shm);
}

/* Spinning only pays while the peer is running on another core; past that
 * a waiting rank gives its core away, which matters when ranks outnumber
 * cores. */
enum { SPIN = 2000, YIELD = 200 };
#define SLEEP_NS 50000L
#define CHECK_EVERY 0.1 /* seconds between liveness checks */

void mr_backoff_start(mr_backoff *b)
{
    b->spins = 0;
    b->started = mr_clock_seconds();
    b->next_check = b->started + CHECK_EVERY;
}

static bool peers_alive(const mr_comm *c, char *err, size_t errlen)
{
    for (int r = 0; r < c->size; r++) {
        int local = c->local_of[r];
        if (local < 0 || r == c->rank)
            continue;
        pid_t pid = c->shm.pids[local];
        if (kill(pid, 0) != 0 && errno == ESRCH) {
            snprintf(err, errlen, "rank %d (pid %d, on this host) died", r, (int)pid);
            return false;
        }
    }
    return true;
}

bool mr_backoff_pause(mr_comm *c, mr_backoff *b, char *err, size_t errlen)
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
    double now = mr_clock_seconds();
    if (now < b->next_check)
        return true;
    b->next_check = now + CHECK_EVERY;
    return c->shm.base ? peers_alive(c, err, errlen) : true;
}

void mr_backoff_end(mr_comm *c, const mr_backoff *b)
{
    c->wait_seconds += mr_clock_seconds() - b->started;
}
