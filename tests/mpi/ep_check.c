/*
 * ep-check: dispatch and combine on every rank of an MPI job, checked
 * against a naive reference each rank computes alone.  Run by
 * tests/system/test_parallel.c as `mpirun -np N ep-check [--force-mpi]`.
 * `ep-check --comm [--force-mpi]` checks the communicator itself instead:
 * the control plane's collectives and the data plane's receive sizes.
 *
 * The "experts" are cheap and exact to recompute: slot s maps a row x to
 * x * a(s) + b(s) in f32, so the reference can say, without any exchange,
 * what every token's combined output must be: for each rank the token
 * visits, in rank order, the double sum of its weighted picks there, all
 * added in double and rounded once.  Exits non-zero with a message naming
 * the case, mode, iteration, rank, token and coordinate that differ.
 */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/ep.h"

#ifdef __SANITIZE_ADDRESS__
/* Open MPI's own allocations outlive its unloaded components, where no
 * suppression can name them (see runner/world.c). */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
    return 1;
}
#endif

enum { HIDDEN = 24, MAX_TOKENS = 40, SLOTS_PER_RANK = 3, ITERATIONS = 4 };

typedef enum { RANDOM, ZERO_TOKEN_RANK, ONE_EXPERT, EMPTY_EXPERTS, ONE_RANK, N_CASES } shape_case;
static const char *const case_names[] = {"random", "zero-token rank", "every token to one expert",
                                         "experts with no tokens", "all top-k on one rank"};

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float expert_a(int slot)
{
    return 0.5f + 0.125f * (float)(slot % 7);
}

static float expert_b(int slot)
{
    return -0.25f + 0.0625f * (float)(slot % 5);
}

/* The top-k physical slots of token t, distinct, for each case. */
static int choose_slots(shape_case c, int rank, int n_ranks, int t, int k, uint64_t *rng,
                        int32_t *slots)
{
    int n_slots = n_ranks * SLOTS_PER_RANK;
    for (int j = 0; j < k; j++) {
        int32_t s;
        bool again;
        do {
            switch (c) {
            case ONE_EXPERT:
                s = 0;
                break;
            case EMPTY_EXPERTS:
                s = (int32_t)(rng_next(rng) % 2); /* only slots 0 and 1 ever work */
                break;
            case ONE_RANK:
                s = (int32_t)(((rank + t) % n_ranks) * SLOTS_PER_RANK +
                              (int)(rng_next(rng) % SLOTS_PER_RANK));
                break;
            default:
                s = (int32_t)(rng_next(rng) % (uint64_t)n_slots);
            }
            again = false;
            for (int i = 0; i < j; i++)
                again = again || slots[i] == s;
        } while (again);
        slots[j] = s;
    }
    return 0;
}

static int top_k_of(shape_case c, int n_ranks)
{
    if (c == ONE_EXPERT)
        return 1;
    if (c == EMPTY_EXPERTS)
        return 2;
    if (c == ONE_RANK)
        return SLOTS_PER_RANK;
    return n_ranks * SLOTS_PER_RANK < 4 ? n_ranks * SLOTS_PER_RANK : 4;
}

static void run_experts(const mr_ep_received *got, int rank)
{
    for (int e = 0; e < SLOTS_PER_RANK; e++) {
        int slot = rank * SLOTS_PER_RANK + e;
        for (int row = got->offsets[e]; row < got->offsets[e + 1]; row++)
            for (int d = 0; d < HIDDEN; d++)
                got->y[(size_t)row * HIDDEN + d] =
                    got->x_rows[row][d] * expert_a(slot) + expert_b(slot);
    }
}

static float reference(const float *x, const int32_t *slots, const float *w, int k, int n_ranks,
                       int d)
{
    double total = 0;
    for (int r = 0; r < n_ranks; r++) {
        double part = 0;
        bool visits = false;
        for (int j = 0; j < k; j++)
            if (slots[j] / SLOTS_PER_RANK == r) {
                float y = x[d] * expert_a(slots[j]) + expert_b(slots[j]);
                part += (double)(w[j] * y);
                visits = true;
            }
        if (visits)
            total += part;
    }
    return (float)total;
}

static int check_case(mr_comm *comm, shape_case c, mr_ep_mode mode, int ll_capacity)
{
    int rank = mr_comm_rank(comm), n_ranks = mr_comm_size(comm), k = top_k_of(c, n_ranks);
    mr_ep_shape shape = {.hidden = HIDDEN, .top_k = k, .slots_per_rank = SLOTS_PER_RANK,
                         .max_tokens = MAX_TOKENS, .mode = mode, .ll_capacity = ll_capacity};
    char err[512];
    mr_ep *ep;
    /* The CPU backend's buffers are host memory: the test reads and writes
     * them directly, as a backend's own ops would. */
    mr_backend *be;
    if (mr_backend_create("cpu", 1, &be, err, sizeof err) != 0 ||
        mr_ep_new(comm, be, &shape, &ep, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        return 1;
    }
    static float x[MAX_TOKENS * HIDDEN], w[MAX_TOKENS * 8], out[MAX_TOKENS * HIDDEN];
    static int32_t slots[MAX_TOKENS * 8];
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(rank + 1) + (uint64_t)c;
    int failures = 0;
    for (int it = 0; it < ITERATIONS && !failures; it++) {
        int n = (int)(rng_next(&rng) % (MAX_TOKENS + 1));
        if (c == ZERO_TOKEN_RANK && rank == n_ranks - 1)
            n = 0;
        for (int t = 0; t < n; t++) {
            choose_slots(c, rank, n_ranks, t, k, &rng, slots + (size_t)t * k);
            for (int j = 0; j < k; j++)
                w[t * k + j] = (float)(rng_next(&rng) % 1000) / 997.0f;
            for (int d = 0; d < HIDDEN; d++)
                x[t * HIDDEN + d] = (float)((int)(rng_next(&rng) % 20001) - 10000) / 3331.0f;
        }
        mr_ep_received got;
        if (mr_ep_dispatch(ep, x, slots, w, n, &got, err, sizeof err) != MR_ENGINE_OK ||
            (run_experts(&got, rank), mr_ep_combine(ep, out, err, sizeof err)) != MR_ENGINE_OK) {
            fprintf(stderr, "rank %d: %s\n", rank, err);
            failures++;
            break;
        }
        for (int t = 0; t < n && !failures; t++)
            for (int d = 0; d < HIDDEN && !failures; d++) {
                float want = reference(x + t * HIDDEN, slots + (size_t)t * k, w + t * k, k,
                                       n_ranks, d);
                if (memcmp(&want, &out[t * HIDDEN + d], sizeof want) != 0) {
                    fprintf(stderr, "%s, %s (capacity %d), iteration %d, rank %d of %d: token %d "
                            "coordinate %d is %.9g, the reference says %.9g\n", case_names[c],
                            mode == MR_EP_LOW_LATENCY ? "low-latency" : "high-throughput",
                            ll_capacity, it, rank, n_ranks, t, d, out[t * HIDDEN + d], want);
                    failures++;
                }
            }
    }
    mr_ep_free(ep);
    mr_backend_free(be);
    return failures;
}

/* ---- ep-check --comm ---------------------------------------------------- */

enum { COMM_CAPACITY = 256, GATHER_BYTES = 4096 };

static unsigned char pattern(int from, int to, size_t i)
{
    return (unsigned char)(from * 31 + to * 7 + (int)i);
}

/* Allgather and broadcast of more bytes than the data plane's buffers hold
 * (they never pass through them), and a barrier no rank leaves before the
 * last one arrives. */
static int check_control(mr_comm *comm)
{
    int rank = mr_comm_rank(comm), n = mr_comm_size(comm), failures = 0;
    char err[512];
    static unsigned char mine[GATHER_BYTES], all[8 * GATHER_BYTES], cast[GATHER_BYTES];
    for (size_t i = 0; i < GATHER_BYTES; i++)
        mine[i] = pattern(rank, 0, i);
    if (mr_comm_ctrl_allgather(comm, mine, GATHER_BYTES, all, err, sizeof err) != MR_COMM_OK) {
        fprintf(stderr, "rank %d: allgather: %s\n", rank, err);
        return 1;
    }
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < GATHER_BYTES; i++)
            if (all[(size_t)r * GATHER_BYTES + i] != pattern(r, 0, i)) {
                fprintf(stderr, "rank %d: allgather byte %zu of rank %d is wrong\n", rank, i, r);
                return 1;
            }
    int root = n - 1;
    for (size_t i = 0; i < GATHER_BYTES; i++)
        cast[i] = rank == root ? pattern(root, 1, i) : 0;
    if (mr_comm_ctrl_bcast(comm, root, cast, GATHER_BYTES, err, sizeof err) != MR_COMM_OK) {
        fprintf(stderr, "rank %d: broadcast: %s\n", rank, err);
        return 1;
    }
    for (size_t i = 0; i < GATHER_BYTES && !failures; i++)
        if (cast[i] != pattern(root, 1, i)) {
            fprintf(stderr, "rank %d: broadcast byte %zu is wrong\n", rank, i);
            failures++;
        }
    /* Rank 0 arrives 0.3 s late: nobody may leave the barrier before. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (rank == 0)
        nanosleep(&(struct timespec){0, 300000000L}, NULL);
    if (mr_comm_ctrl_barrier(comm, err, sizeof err) != MR_COMM_OK) {
        fprintf(stderr, "rank %d: barrier: %s\n", rank, err);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (n > 1 && waited < 0.25) {
        fprintf(stderr, "rank %d left the barrier after %.3f s, before rank 0 arrived\n", rank,
                waited);
        failures++;
    }
    return failures;
}

/* One exchange: rank r sends d (r + d + 1) * 3 bytes unless r + d is a
 * multiple of 3 (then nothing); the receiver expects exactly that, or
 * anything up to the capacity when `up_to`. */
static int check_exchange(mr_comm *comm, bool up_to)
{
    int rank = mr_comm_rank(comm), n = mr_comm_size(comm);
    int64_t send[8], recv[8];
    char err[512];
    for (int d = 0; d < n; d++) {
        bool sends = (rank + d) % 3 != 0, gets = (d + rank) % 3 != 0;
        send[d] = sends ? (rank + d + 1) * 3 : MR_COMM_NO_MESSAGE;
        recv[d] = !gets ? MR_COMM_NO_MESSAGE : up_to ? MR_COMM_RECV_UP_TO_CAPACITY
                                                     : (int64_t)(d + rank + 1) * 3;
        if (!sends)
            continue;
        unsigned char *buf;
        if (mr_comm_send_buffer(comm, d, (void **)&buf, err, sizeof err) != MR_COMM_OK) {
            fprintf(stderr, "rank %d: send buffer: %s\n", rank, err);
            return 1;
        }
        for (int64_t i = 0; i < send[d]; i++)
            buf[i] = pattern(rank, d, (size_t)i);
    }
    if (mr_comm_exchange(comm, send, recv, err, sizeof err) != MR_COMM_OK) {
        fprintf(stderr, "rank %d: exchange: %s\n", rank, err);
        return 1;
    }
    int failures = 0;
    for (int s = 0; s < n && !failures; s++) {
        size_t bytes;
        const unsigned char *got = mr_comm_received(comm, s, &bytes);
        size_t want = (s + rank) % 3 != 0 ? (size_t)(s + rank + 1) * 3 : 0;
        if ((got == NULL) != (want == 0) || bytes != want) {
            fprintf(stderr, "rank %d: from rank %d got %zu bytes, want %zu\n", rank, s, bytes,
                    want);
            failures++;
        }
        for (size_t i = 0; i < want && !failures; i++)
            if (got[i] != pattern(s, rank, i)) {
                fprintf(stderr, "rank %d: byte %zu from rank %d is wrong\n", rank, i, s);
                failures++;
            }
    }
    mr_comm_release(comm);
    return failures;
}

/* Rank 0 sends rank 1 `sent` bytes where rank 1 expects `expected`: rank 1
 * must report it, naming rank 0 and the sizes.  Last on a communicator: a
 * failed exchange leaves it unusable. */
static int check_mismatch(mr_comm *comm, int64_t sent, int64_t expected, const char *want)
{
    int rank = mr_comm_rank(comm), n = mr_comm_size(comm);
    int64_t send[8], recv[8];
    char err[512] = "";
    for (int r = 0; r < n; r++)
        send[r] = recv[r] = MR_COMM_NO_MESSAGE;
    void *buf;
    if (rank == 0) {
        send[1] = sent;
        if (mr_comm_send_buffer(comm, 1, &buf, err, sizeof err) != MR_COMM_OK)
            return 1;
        memset(buf, 7, (size_t)sent);
    }
    if (rank == 1)
        recv[0] = expected;
    int rc = mr_comm_exchange(comm, send, recv, err, sizeof err);
    if (rank != 1) {
        if (rc == MR_COMM_OK)
            return 0;
        fprintf(stderr, "rank %d: %s\n", rank, err);
        return 1;
    }
    if (rc == MR_COMM_OK || !strstr(err, want)) {
        fprintf(stderr, "rank 1: a message of %lld bytes where %lld were expected gave \"%s\", "
                "not \"%s\"\n", (long long)sent, (long long)expected, err, want);
        return 1;
    }
    printf("ep-check --comm: rank 1 reports: %s\n", err);
    return 0;
}

static int check_comm(bool force_mpi)
{
    mr_comm_options options = {.capacity = COMM_CAPACITY, .force_mpi = force_mpi};
    mr_comm *comm, *again;
    char err[512];
    if (mr_comm_mpi(&options, &comm, err, sizeof err) != MR_COMM_OK ||
        mr_comm_mpi(&options, &again, err, sizeof err) != MR_COMM_OK) {
        fprintf(stderr, "ep-check --comm: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int n = mr_comm_size(comm), failures = 0;
    if (n < 2 || n > 8) {
        fprintf(stderr, "ep-check --comm: needs 2 to 8 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    failures += check_control(comm);
    for (int i = 0; i < 3 && !failures; i++)
        failures += check_exchange(comm, i == 1);
    if (!failures)
        failures += check_mismatch(comm, 8, 16, "rank 0 sent rank 1 a message of 8 bytes where "
                                   "16 were expected");
    /* Longer than expected: MPI cannot say by how much, shm can. */
    if (!failures)
        failures += check_mismatch(again, 24, 16, force_mpi ? "rank 0 sent rank 1 more than "
                                   "the 16 bytes expected" : "rank 0 sent rank 1 a message of "
                                   "24 bytes where 16 were expected");
    int all[8] = {0};
    if (mr_comm_ctrl_allgather(again, &failures, sizeof failures, all, err, sizeof err) !=
        MR_COMM_OK) {
        fprintf(stderr, "ep-check --comm: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int any = 0;
    for (int r = 0; r < n; r++)
        any += all[r];
    if (mr_comm_rank(comm) == 0 && !any)
        printf("ep-check --comm: %d ranks (%s): the control plane and receive sizes check out\n",
               n, mr_comm_transport(comm, 1));
    mr_comm_free(again);
    mr_comm_free(comm);
    return any ? 1 : 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    bool force_mpi = false, comm_only = false;
    for (int i = 1; i < argc; i++) {
        force_mpi = force_mpi || strcmp(argv[i], "--force-mpi") == 0;
        comm_only = comm_only || strcmp(argv[i], "--comm") == 0;
    }
    if (comm_only) {
        int rc = check_comm(force_mpi);
        MPI_Finalize();
        return rc;
    }
    mr_ep_shape biggest = {.hidden = HIDDEN, .top_k = SLOTS_PER_RANK * 4,
                           .slots_per_rank = SLOTS_PER_RANK, .max_tokens = MAX_TOKENS};
    mr_comm_options options = {.capacity = mr_ep_exchange_bytes(&biggest), .force_mpi = force_mpi};
    mr_comm *comm;
    char err[512];
    if (mr_comm_mpi(&options, &comm, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "ep-check: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int failures = 0;
    for (int c = 0; c < N_CASES; c++) {
        failures += check_case(comm, (shape_case)c, MR_EP_HIGH_THROUGHPUT, 0);
        failures += check_case(comm, (shape_case)c, MR_EP_LOW_LATENCY, MAX_TOKENS);
        failures += check_case(comm, (shape_case)c, MR_EP_LOW_LATENCY, 1);
        if (failures)
            break;
    }
    int any = 0;
    MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (mr_comm_rank(comm) == 0 && !any)
        printf("ep-check: %d ranks (%s): every case matches the reference\n", mr_comm_size(comm),
               mr_comm_size(comm) > 1 ? mr_comm_transport(comm, 1) : "self");
    mr_comm_free(comm);
    MPI_Finalize();
    return any ? 1 : 0;
}
