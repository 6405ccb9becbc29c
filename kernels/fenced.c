/*
 * The "fenced" backend: the "cpu" backend's ops on memory the host cannot
 * touch outside them, for testing the device boundary on a machine without
 * a GPU.  On a GPU, backend buffers are device memory that the host reaches
 * only through upload and download; on the CPU backends a host read of a
 * backend buffer silently works, so such a slip would show only on the GPU
 * machine.  Here every buffer from alloc and map_weights is kept PROT_NONE;
 * each op makes them PROT_READ|PROT_WRITE, runs the cpu op and closes them
 * again, so a host access anywhere else faults (SIGSEGV) at the line that
 * made it.  Each op also checks its arguments against kernels.h: backend
 * buffers must lie within a live buffer of this backend, host arrays and
 * transport messages outside them, so an op handed host memory where a
 * device would need its own fails here too (MR_KERNELS_EINVAL, naming the
 * argument).
 *
 * The arithmetic is the cpu backend's, on the same values, so the output
 * is the cpu backend's to the bit.  Two mprotect calls per op make it slow:
 * never for production.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu_internal.h"

/* One arena of address space holds every buffer, rather than a mapping per
 * buffer: an op reaches any number of buffers (x_rows, the expert weights
 * through host arrays of pointers), so the fence opens all backend memory
 * at once, and one mprotect over one range costs two system calls per op
 * whether there are two buffers or two hundred.  Reserved PROT_NONE and
 * unbacked, it costs nothing until used: far more than the models this
 * backend is for. */
#define ARENA_BYTES ((size_t)64 << 30)

/* The arena is in transparent huge pages where the system allows them, and
 * the fence moves in whole ones: mprotect's cost grows with the page table
 * entries it rewrites.  On the tiny model's quickstart job a call took
 * 2 ms in 4 KiB pages, more than the ops themselves, and 20 us in 2 MiB
 * ones (both under strace). */
#define HUGE_PAGE ((size_t)2 << 20)

/* A run of pages of the arena: a live buffer or a freed gap. */
typedef struct {
    size_t at, pages_bytes; /* offset in the arena and length, in whole pages */
    size_t bytes;           /* what alloc was asked for: arguments must stay within */
    bool used;
} extent;

typedef struct {
    mr_backend cpu;      /* the cpu backend each op runs as: its scratch, threads, error */
    unsigned char *base; /* the arena */
    size_t top;          /* extents cover [base, base + top); the fence covers as much */
    size_t page;
    extent *extents;     /* by address */
    size_t n, cap;
} fenced;

static fenced *state(mr_backend *be)
{
    return be->impl;
}

/* PROT_NONE, or PROT_READ|PROT_WRITE while an op runs, over every buffer. */
static int fence(mr_backend *be, int prot)
{
    fenced *f = state(be);
    size_t span = (f->top + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (span == 0 || mprotect(f->base, span, prot) == 0)
        return MR_KERNELS_OK;
    return mr_backend_fail(be, MR_KERNELS_EDEVICE, "mprotect of the %zu-byte arena: %s", f->top,
                           strerror(errno));
}

/* Closes the fence after an op of the cpu backend returned rc, its message
 * made this backend's. */
static int finish(mr_backend *be, int rc)
{
    if (rc != MR_KERNELS_OK)
        snprintf(be->error, sizeof be->error, "%s", state(be)->cpu.error);
    int closed = fence(be, PROT_NONE);
    return rc != MR_KERNELS_OK ? rc : closed;
}

/* The cpu backend's `op` with the fence open. */
#define RUN(be, op, ...)                                                                          \
    (fence(be, PROT_READ | PROT_WRITE) != MR_KERNELS_OK                                           \
         ? MR_KERNELS_EDEVICE                                                                     \
         : finish(be, mr_cpu_fast_ops.op(&state(be)->cpu, __VA_ARGS__)))

/* The extent holding p, or NULL when p is outside them. */
static extent *find(fenced *f, const void *p)
{
    uintptr_t base = (uintptr_t)f->base;
    if ((uintptr_t)p < base || (uintptr_t)p >= base + f->top)
        return NULL;
    size_t off = (size_t)((uintptr_t)p - base), lo = 0, hi = f->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (f->extents[mid].at <= off)
            lo = mid;
        else
            hi = mid;
    }
    return &f->extents[lo];
}

/* ---- Argument checks: the first failure names the op and argument. ---- */

typedef struct {
    mr_backend *be;
    const char *op;
    bool ok;
} check;

static size_t count(int n)
{
    return n > 0 ? (size_t)n : 0;
}

/* A backend buffer: `bytes` (at least one) within one live buffer.  NULL
 * passes; the op decides whether it may be. */
static void device_arg(check *c, const char *name, const void *p, size_t bytes)
{
    if (!c->ok || !p)
        return;
    fenced *f = state(c->be);
    const extent *e = find(f, p);
    size_t off = (size_t)((uintptr_t)p - (uintptr_t)f->base);
    if (!e)
        mr_backend_fail(c->be, MR_KERNELS_EINVAL, "%s: %s is host memory, not a backend buffer",
                        c->op, name);
    else if (!e->used)
        mr_backend_fail(c->be, MR_KERNELS_EINVAL, "%s: %s is in a freed backend buffer", c->op,
                        name);
    else if (off - e->at + (bytes ? bytes : 1) > e->bytes)
        mr_backend_fail(c->be, MR_KERNELS_EINVAL, "%s: %s's %zu bytes run past the end of its "
                        "%zu-byte backend buffer", c->op, name, bytes, e->bytes);
    else
        return;
    c->ok = false;
}

/* Host memory (an array of the caller's, an args struct) or a transport's
 * message: anything but this backend's buffers. */
static void host_arg(check *c, const char *name, const void *p)
{
    if (!c->ok || !p || !find(state(c->be), p))
        return;
    mr_backend_fail(c->be, MR_KERNELS_EINVAL, "%s: %s is a backend buffer, where kernels.h has "
                    "host or transport memory", c->op, name);
    c->ok = false;
}

static size_t floats(size_t rows, int dim)
{
    return rows * count(dim) * sizeof(float);
}

static size_t weight_bytes(mr_tensor_type type, int out_dim, int in_dim)
{
    return count(out_dim) * mr_tensor_row_bytes(type, in_dim);
}

/* ---- Memory ---- */

static int grow_extents(mr_backend *be, fenced *f)
{
    if (f->n < f->cap)
        return MR_KERNELS_OK;
    size_t cap = f->cap ? 2 * f->cap : 64;
    extent *grown = realloc(f->extents, cap * sizeof *grown);
    if (!grown)
        return mr_backend_fail(be, MR_KERNELS_ENOMEM, "alloc: out of memory for the arena's map");
    f->extents = grown;
    f->cap = cap;
    return MR_KERNELS_OK;
}

/* Pages from the first gap that fits, else from the top. */
static int fenced_alloc(mr_backend *be, size_t bytes, void **out)
{
    fenced *f = state(be);
    size_t need = (bytes + f->page - 1) / f->page * f->page;
    need = need ? need : f->page;
    *out = NULL;
    int rc = grow_extents(be, f);
    if (rc != MR_KERNELS_OK)
        return rc;
    size_t i = 0;
    while (i < f->n && (f->extents[i].used || f->extents[i].pages_bytes < need))
        i++;
    if (i == f->n) {
        if (need > ARENA_BYTES - f->top)
            return mr_backend_fail(be, MR_KERNELS_ENOMEM, "alloc: %zu bytes do not fit the "
                                   "%zu GiB arena", bytes, ARENA_BYTES >> 30);
        f->extents[f->n++] = (extent){.at = f->top, .pages_bytes = need};
        f->top += need;
    } else if (f->extents[i].pages_bytes > need) {
        extent *e = &f->extents[i];
        memmove(e + 2, e + 1, (f->n - i - 1) * sizeof *e);
        e[1] = (extent){.at = e->at + need, .pages_bytes = e->pages_bytes - need};
        e->pages_bytes = need;
        f->n++;
    }
    extent *e = &f->extents[i];
    e->used = true;
    e->bytes = bytes;
    *out = f->base + e->at;
    return MR_KERNELS_OK;
}

/* The buffer's pages go back to the system (MADV_DONTNEED on anonymous
 * memory, as munmap would) while its range stays reserved and PROT_NONE
 * for a later buffer: the arena stays one range.  Gaps merge, and a gap at
 * the top shrinks the fence. */
static int fenced_free(mr_backend *be, void *ptr)
{
    fenced *f = state(be);
    extent *e = find(f, ptr);
    if (!e || !e->used || f->base + e->at != (unsigned char *)ptr)
        return mr_backend_fail(be, MR_KERNELS_EINVAL, "free: %p is not a live backend buffer",
                               ptr);
    if (madvise(f->base + e->at, e->pages_bytes, MADV_DONTNEED) != 0)
        return mr_backend_fail(be, MR_KERNELS_EDEVICE, "free: madvise: %s", strerror(errno));
    e->used = false;
    e->bytes = 0;
    size_t i = (size_t)(e - f->extents);
    if (i + 1 < f->n && !e[1].used) {
        e->pages_bytes += e[1].pages_bytes;
        memmove(e + 1, e + 2, (f->n - i - 2) * sizeof *e);
        f->n--;
    }
    if (i > 0 && !e[-1].used) {
        e[-1].pages_bytes += e->pages_bytes;
        memmove(e, e + 1, (f->n - i - 1) * sizeof *e);
        f->n--;
    }
    if (f->n > 0 && !f->extents[f->n - 1].used)
        f->top = f->extents[--f->n].at;
    return MR_KERNELS_OK;
}

static int fenced_upload(mr_backend *be, void *dst, const void *src, size_t bytes)
{
    check c = {be, "upload", true};
    device_arg(&c, "dst", dst, bytes);
    host_arg(&c, "src", src);
    return c.ok ? RUN(be, upload, dst, src, bytes) : MR_KERNELS_EINVAL;
}

/* src is a backend buffer or a transport's message (dispatch reads each
 * received header so), which is host memory here. */
static int fenced_download(mr_backend *be, void *dst, const void *src, size_t bytes)
{
    check c = {be, "download", true};
    host_arg(&c, "dst", dst);
    if (find(state(be), src))
        device_arg(&c, "src", src, bytes);
    return c.ok ? RUN(be, download, dst, src, bytes) : MR_KERNELS_EINVAL;
}

/* A copy in the arena, as a GPU makes a device copy. */
static int fenced_map_weights(mr_backend *be, const void *host, size_t bytes, const void **out)
{
    void *copy;
    int rc = fenced_alloc(be, bytes, &copy);
    if (rc == MR_KERNELS_OK)
        rc = fenced_upload(be, copy, host, bytes);
    *out = rc == MR_KERNELS_OK ? copy : NULL;
    return rc;
}

static int fenced_sync(mr_backend *be)
{
    return finish(be, mr_cpu_fast_ops.sync(&state(be)->cpu));
}

/* The host's, as cpu says, but no more than the arena has left. */
static int fenced_memory(mr_backend *be, size_t *available, size_t *total)
{
    int rc = mr_cpu_fast_ops.memory(&state(be)->cpu, available, total);
    size_t left = ARENA_BYTES - state(be)->top;
    *available = *available < left ? *available : left;
    return rc == MR_KERNELS_OK ? MR_KERNELS_OK : finish(be, rc);
}

/* ---- Arithmetic ---- */

static int fenced_embed(mr_backend *be, float *out, const void *table, mr_tensor_type type,
                        const int32_t *ids, int rows, int dim)
{
    check c = {be, "embed", true};
    device_arg(&c, "out", out, floats(count(rows), dim));
    device_arg(&c, "table", table, weight_bytes(type, 1, dim));
    device_arg(&c, "ids", ids, count(rows) * sizeof(int32_t));
    return c.ok ? RUN(be, embed, out, table, type, ids, rows, dim) : MR_KERNELS_EINVAL;
}

static int fenced_rmsnorm(mr_backend *be, float *out, const float *x, const void *w,
                          mr_tensor_type type, int rows, int dim, float eps)
{
    check c = {be, "rmsnorm", true};
    device_arg(&c, "out", out, floats(count(rows), dim));
    device_arg(&c, "x", x, floats(count(rows), dim));
    device_arg(&c, "w", w, weight_bytes(type, 1, dim));
    return c.ok ? RUN(be, rmsnorm, out, x, w, type, rows, dim, eps) : MR_KERNELS_EINVAL;
}

static int fenced_matmul(mr_backend *be, float *out, const float *x, const void *w,
                         mr_tensor_type type, int rows, int out_dim, int in_dim)
{
    check c = {be, "matmul", true};
    device_arg(&c, "out", out, floats(count(rows), out_dim));
    device_arg(&c, "x", x, floats(count(rows), in_dim));
    device_arg(&c, "w", w, weight_bytes(type, out_dim, in_dim));
    return c.ok ? RUN(be, matmul, out, x, w, type, rows, out_dim, in_dim) : MR_KERNELS_EINVAL;
}

static int fenced_matmul_heads(mr_backend *be, float *out, const float *x, const void *w,
                               mr_tensor_type type, int rows, int heads, int out_dim, int in_dim,
                               int head_stride_rows)
{
    check c = {be, "matmul_heads", true};
    size_t row_heads = count(rows) * count(heads);
    device_arg(&c, "out", out, floats(row_heads, out_dim));
    device_arg(&c, "x", x, floats(row_heads, in_dim));
    /* the last head's slice ends the rows the op reads */
    int w_rows = heads < 1 ? 0 : (heads - 1) * head_stride_rows + out_dim;
    device_arg(&c, "w", w, weight_bytes(type, w_rows, in_dim));
    return c.ok ? RUN(be, matmul_heads, out, x, w, type, rows, heads, out_dim, in_dim,
                      head_stride_rows)
                : MR_KERNELS_EINVAL;
}

static int fenced_rope_neox(mr_backend *be, float *x, const int32_t *pos, int rows, int heads,
                            int head_dim, const float *cos_sin)
{
    check c = {be, "rope_neox", true};
    device_arg(&c, "x", x, floats(count(rows) * count(heads), head_dim));
    device_arg(&c, "pos", pos, count(rows) * sizeof(int32_t));
    device_arg(&c, "cos_sin", cos_sin, 0);
    return c.ok ? RUN(be, rope_neox, x, pos, rows, heads, head_dim, cos_sin) : MR_KERNELS_EINVAL;
}

static int fenced_kv_store(mr_backend *be, void *k_cache, void *v_cache, mr_tensor_type kv_type,
                           const float *k, const float *v, const int32_t *slot, int rows,
                           int kv_dim)
{
    check c = {be, "kv_store", true};
    device_arg(&c, "k_cache", k_cache, 0);
    device_arg(&c, "k", k, floats(count(rows), kv_dim));
    if (v_cache || v) {
        device_arg(&c, "v_cache", v_cache, 0);
        device_arg(&c, "v", v, floats(count(rows), kv_dim));
    }
    device_arg(&c, "slot", slot, count(rows) * sizeof(int32_t));
    return c.ok ? RUN(be, kv_store, k_cache, v_cache, kv_type, k, v, slot, rows, kv_dim)
                : MR_KERNELS_EINVAL;
}

static int fenced_attention(mr_backend *be, float *out, const float *q, const void *k_cache,
                            const void *v_cache, const mr_attention_args *a)
{
    check c = {be, "attention", true};
    size_t rows = count(a->rows), q_row = count(a->n_q_heads) * count(a->head_dim);
    host_arg(&c, "args", a);
    device_arg(&c, "out", out, rows * q_row * sizeof(float));
    device_arg(&c, "q", q, rows * q_row * sizeof(float));
    device_arg(&c, "k_cache", k_cache, 0);
    device_arg(&c, "v_cache", v_cache, 0);
    device_arg(&c, "args->seq", a->seq, rows * sizeof(int32_t));
    device_arg(&c, "args->pos", a->pos, rows * sizeof(int32_t));
    device_arg(&c, "args->block_table", a->block_table, 0);
    return c.ok ? RUN(be, attention, out, q, k_cache, v_cache, a) : MR_KERNELS_EINVAL;
}

static int fenced_mla_attention(mr_backend *be, float *out, const float *q_lat,
                                const float *q_rope, const void *latent_cache,
                                const void *rope_cache, const mr_mla_args *a)
{
    check c = {be, "mla_attention", true};
    size_t rows = count(a->rows) * count(a->n_heads);
    host_arg(&c, "args", a);
    device_arg(&c, "out", out, floats(rows, a->latent));
    device_arg(&c, "q_lat", q_lat, floats(rows, a->latent));
    device_arg(&c, "q_rope", q_rope, floats(rows, a->rope));
    device_arg(&c, "latent_cache", latent_cache, 0);
    device_arg(&c, "rope_cache", rope_cache, 0);
    device_arg(&c, "args->seq", a->seq, count(a->rows) * sizeof(int32_t));
    device_arg(&c, "args->pos", a->pos, count(a->rows) * sizeof(int32_t));
    device_arg(&c, "args->block_table", a->block_table, 0);
    return c.ok ? RUN(be, mla_attention, out, q_lat, q_rope, latent_cache, rope_cache, a)
                : MR_KERNELS_EINVAL;
}

static int fenced_route(mr_backend *be, const mr_route_args *a)
{
    check c = {be, "route", true};
    size_t rows = count(a->rows), experts = count(a->n_experts), picks = rows * count(a->k);
    host_arg(&c, "args", a);
    device_arg(&c, "args->logits", a->logits, rows * experts * sizeof(float));
    device_arg(&c, "args->pos", a->pos, rows * sizeof(int32_t));
    device_arg(&c, "args->log2phy", a->log2phy,
               experts * count(a->max_replicas) * sizeof(int32_t));
    device_arg(&c, "args->logcnt", a->logcnt, experts * sizeof(int32_t));
    device_arg(&c, "args->counts", a->counts, experts * sizeof(uint64_t));
    device_arg(&c, "args->slots", a->slots, picks * sizeof(int32_t));
    device_arg(&c, "args->weights", a->weights, picks * sizeof(float));
    return c.ok ? RUN(be, route, a) : MR_KERNELS_EINVAL;
}

/* The groups' arrays are host memory holding backend addresses; x_rows is
 * a backend buffer whose entries point into dispatch's messages, transport
 * memory, which are read with the fence open. */
static int fenced_expert_ffn(mr_backend *be, float *out, const float *x,
                             const mr_expert_groups *g)
{
    check c = {be, "expert_ffn", true};
    host_arg(&c, "groups", g);
    if (g->groups < 0)
        return c.ok ? RUN(be, expert_ffn, out, x, g) : MR_KERNELS_EINVAL;
    host_arg(&c, "groups->offsets", g->offsets);
    host_arg(&c, "groups->gate", g->gate);
    host_arg(&c, "groups->up", g->up);
    host_arg(&c, "groups->down", g->down);
    if (!c.ok)
        return MR_KERNELS_EINVAL;
    size_t rows = g->offsets ? count(g->offsets[g->groups]) : 0;
    size_t proj = weight_bytes(g->type, g->inter, g->hidden);
    for (int i = 0; i < g->groups; i++) {
        device_arg(&c, "groups->gate[]", g->gate[i], proj);
        device_arg(&c, "groups->up[]", g->up[i], proj);
        device_arg(&c, "groups->down[]", g->down[i], proj);
    }
    device_arg(&c, "out", out, floats(rows, g->hidden));
    device_arg(&c, "x", x, floats(rows, g->hidden));
    device_arg(&c, "groups->x_rows", g->x_rows, rows * sizeof(float *));
    if (!c.ok)
        return MR_KERNELS_EINVAL;
    int rc = fence(be, PROT_READ | PROT_WRITE);
    if (rc != MR_KERNELS_OK)
        return rc;
    for (size_t r = 0; g->x_rows && r < rows; r++)
        host_arg(&c, "groups->x_rows[]", g->x_rows[r]);
    if (!c.ok) {
        fence(be, PROT_NONE);
        return MR_KERNELS_EINVAL;
    }
    return finish(be, mr_cpu_fast_ops.expert_ffn(&state(be)->cpu, out, x, g));
}

static int fenced_gather(mr_backend *be, float *out, const float *x, const int32_t *src,
                         int rows, int dim)
{
    check c = {be, "gather", true};
    device_arg(&c, "out", out, floats(count(rows), dim));
    device_arg(&c, "x", x, 0);
    device_arg(&c, "src", src, count(rows) * sizeof(int32_t));
    return c.ok ? RUN(be, gather, out, x, src, rows, dim) : MR_KERNELS_EINVAL;
}

static int fenced_add(mr_backend *be, float *y, const float *x, size_t n)
{
    check c = {be, "add", true};
    device_arg(&c, "y", y, n * sizeof(float));
    device_arg(&c, "x", x, n * sizeof(float));
    return c.ok ? RUN(be, add, y, x, n) : MR_KERNELS_EINVAL;
}

static int fenced_fill_uniform(mr_backend *be, void *dst, mr_tensor_type type, size_t n,
                               uint64_t seed, float lo, float hi)
{
    check c = {be, "fill_uniform", true};
    device_arg(&c, "dst", dst, n * mr_tensor_type_size(type));
    return c.ok ? RUN(be, fill_uniform, dst, type, n, seed, lo, hi) : MR_KERNELS_EINVAL;
}

/* ---- Expert parallelism ---- */

static void send_args(check *c, const mr_ep_send *s)
{
    size_t tokens = count(s->n_tokens), ranks = count(s->n_ranks);
    size_t slots = ranks * count(s->slots_per_rank), picks = tokens * count(s->top_k);
    host_arg(c, "send", s);
    device_arg(c, "send->slots", s->slots, picks * sizeof(int32_t));
    device_arg(c, "send->weights", s->weights, picks * sizeof(float));
    device_arg(c, "send->x", s->x, floats(tokens, s->hidden));
    device_arg(c, "send->visits", s->visits, tokens * ranks);
    device_arg(c, "send->deferred", s->deferred, tokens * ranks);
    device_arg(c, "send->order", s->order, tokens * ranks * sizeof(int32_t));
    device_arg(c, "send->room", s->room, slots * sizeof(int32_t));
    device_arg(c, "send->counts", s->counts,
               mr_ep_counts_len(s->n_ranks, s->slots_per_rank) * sizeof(int32_t));
}

/* The received tokens and rows are counted in the messages, not here: the
 * pointers alone are checked for those. */
static void recv_args(check *c, const mr_ep_recv *r)
{
    size_t ranks = count(r->n_ranks);
    host_arg(c, "recv", r);
    device_arg(c, "recv->base", r->base, ranks * sizeof(int32_t));
    device_arg(c, "recv->cursor", r->cursor, ranks * count(r->slots_per_rank) * sizeof(int32_t));
    device_arg(c, "recv->n_local", r->n_local, 0);
    device_arg(c, "recv->rows", r->rows, 0);
    device_arg(c, "recv->weight", r->weight, 0);
    device_arg(c, "recv->x_rows", r->x_rows, 0);
    device_arg(c, "recv->y", r->y, 0);
}

static int fenced_ep_layout(mr_backend *be, const mr_ep_send *s)
{
    check c = {be, "ep_layout", true};
    send_args(&c, s);
    return c.ok ? RUN(be, ep_layout, s) : MR_KERNELS_EINVAL;
}

static int fenced_ep_pack(mr_backend *be, void *msg, const mr_ep_send *s, int dst,
                          mr_ep_pack_part part)
{
    check c = {be, "ep_pack", true};
    host_arg(&c, "msg", msg);
    send_args(&c, s);
    return c.ok ? RUN(be, ep_pack, msg, s, dst, part) : MR_KERNELS_EINVAL;
}

static int fenced_ep_unpack(mr_backend *be, const mr_ep_recv *r, const void *msg, int src)
{
    check c = {be, "ep_unpack", true};
    host_arg(&c, "msg", msg);
    recv_args(&c, r);
    return c.ok ? RUN(be, ep_unpack, r, msg, src) : MR_KERNELS_EINVAL;
}

static int fenced_ep_combine_partials(mr_backend *be, void *msg, const mr_ep_recv *r, int src,
                                      int tokens)
{
    check c = {be, "ep_combine_partials", true};
    host_arg(&c, "msg", msg);
    recv_args(&c, r);
    return c.ok ? RUN(be, ep_combine_partials, msg, r, src, tokens) : MR_KERNELS_EINVAL;
}

static int fenced_ep_combine_reduce(mr_backend *be, float *out, const void *const *msgs,
                                    const mr_ep_send *s)
{
    check c = {be, "ep_combine_reduce", true};
    device_arg(&c, "out", out, floats(count(s->n_tokens), s->hidden));
    host_arg(&c, "msgs", msgs);
    for (int r = 0; c.ok && r < s->n_ranks; r++)
        host_arg(&c, "msgs[]", msgs[r]);
    send_args(&c, s);
    return c.ok ? RUN(be, ep_combine_reduce, out, msgs, s) : MR_KERNELS_EINVAL;
}

int mr_fenced_init(mr_backend *be, char *err, size_t errlen)
{
    fenced *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, errlen, "backend \"fenced\": out of memory");
        return -1;
    }
    f->page = (size_t)sysconf(_SC_PAGESIZE);
    /* One huge page more than the arena, trimmed to a huge-page boundary. */
    unsigned char *raw = mmap(NULL, ARENA_BYTES + HUGE_PAGE, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        snprintf(err, errlen, "backend \"fenced\": cannot reserve %zu GiB of address space: %s",
                 ARENA_BYTES >> 30, strerror(errno));
        free(f);
        return -1;
    }
    f->base = (unsigned char *)(((uintptr_t)raw + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE);
    if (f->base > raw)
        munmap(raw, (size_t)(f->base - raw));
    munmap(f->base + ARENA_BYTES, (size_t)(raw + HUGE_PAGE - f->base));
    madvise(f->base, ARENA_BYTES, MADV_HUGEPAGE);
    f->cpu = (mr_backend){.ops = &mr_cpu_fast_ops, .threads = be->threads};
    if (mr_cpu_fast_init(&f->cpu, err, errlen) != 0) {
        munmap(f->base, ARENA_BYTES);
        free(f);
        return -1;
    }
    be->impl = f;
    return 0;
}

void mr_fenced_release(mr_backend *be)
{
    fenced *f = state(be);
    if (!f)
        return;
    mr_cpu_fast_release(&f->cpu);
    munmap(f->base, ARENA_BYTES);
    free(f->extents);
    free(f);
    be->impl = NULL;
}

const mr_ops mr_fenced_ops = {
    .name = "fenced",
    .alloc = fenced_alloc,
    .free = fenced_free,
    .upload = fenced_upload,
    .download = fenced_download,
    .map_weights = fenced_map_weights,
    .sync = fenced_sync,
    .memory = fenced_memory,
    .embed = fenced_embed,
    .rmsnorm = fenced_rmsnorm,
    .matmul = fenced_matmul,
    .matmul_heads = fenced_matmul_heads,
    .rope_neox = fenced_rope_neox,
    .kv_store = fenced_kv_store,
    .attention = fenced_attention,
    .mla_attention = fenced_mla_attention,
    .route = fenced_route,
    .expert_ffn = fenced_expert_ffn,
    .gather = fenced_gather,
    .add = fenced_add,
    .fill_uniform = fenced_fill_uniform,
    .ep_layout = fenced_ep_layout,
    .ep_pack = fenced_ep_pack,
    .ep_unpack = fenced_ep_unpack,
    .ep_combine_partials = fenced_ep_combine_partials,
    .ep_combine_reduce = fenced_ep_combine_reduce,
};
