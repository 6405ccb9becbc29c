/*
 * gpu-check: the cuda backend against the cpu backend, on a machine with a
 * GPU (tests/gpu/check.sh runs it; no CI machine has one).
 *
 *   gpu-check device           the GPU, its driver and runtime
 *   gpu-check ops              every op, exact mode, bit for bit against
 *                              cpu at 1, 3, 17, 64, 512 and 4096 rows
 *   gpu-check model DIR        the model's logits, and 256 greedy
 *                              completions alone and batched, against cpu
 *   gpu-check figures          exact mode's speed beside the device's copy
 *                              bandwidth (and cuBLAS's bf16 GEMM when
 *                              MR_CUBLAS names libcublas.so)
 *
 * Each prints one line per check, "PASS ..." or "FAIL ...", and exits 1
 * if any failed.  MR_GPU_CHECK_AGAINST=exact (and MR_GPU_CHECK_MAX_ROWS)
 * runs the same checks with the exact backend in the GPU's place: a dry
 * run of this program on a machine without a GPU.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "kernels/kernels.h"
#include "tests/common/kernel_data.h"

static int failures;

/* The backend under test: cuda, or another for a dry run. */
static const char *tested(void)
{
    const char *name = getenv("MR_GPU_CHECK_AGAINST");
    return name && *name ? name : "cuda";
}

static int max_rows(void)
{
    const char *text = getenv("MR_GPU_CHECK_MAX_ROWS");
    return text && atoi(text) > 0 ? atoi(text) : 1 << 30;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "gpu-check: %s: %s\n", what, why);
    exit(2);
}

static mr_backend *backend(const char *name)
{
    char err[512];
    mr_backend *be;
    if (mr_backend_create(name, 0, &be, err, sizeof err) != 0)
        die(name, err);
    return be;
}

static void ok(mr_backend *be, int rc, const char *what)
{
    if (rc != MR_KERNELS_OK)
        die(what, mr_backend_error(be));
}

/* Backend memory holding a copy of host bytes. */
static void *put(mr_backend *be, const void *host, size_t bytes)
{
    void *p;
    ok(be, be->ops->alloc(be, bytes, &p), "alloc");
    if (host)
        ok(be, be->ops->upload(be, p, host, bytes), "upload");
    return p;
}

static const void *weights(mr_backend *be, const void *host, size_t bytes)
{
    const void *p;
    ok(be, be->ops->map_weights(be, host, bytes, &p), "map_weights");
    return p;
}

static void *get(mr_backend *be, const void *dev, size_t bytes)
{
    void *host = malloc(bytes + 1);
    ok(be, be->ops->download(be, host, dev, bytes), "download");
    return host;
}

static void compare(const char *op, const char *detail, int rows, const void *cpu,
                    const void *gpu, size_t n_words)
{
    long at = mr_test_first_difference(cpu, gpu, n_words);
    if (at < 0) {
        printf("PASS %-18s %-10s rows %4d\n", op, detail, rows);
        return;
    }
    failures++;
    printf("FAIL %-18s %-10s rows %4d: word %ld: cpu %.9g (0x%08x), cuda %.9g (0x%08x)\n", op,
           detail, rows, at, ((const float *)cpu)[at], ((const uint32_t *)cpu)[at],
           ((const float *)gpu)[at], ((const uint32_t *)gpu)[at]);
}

static const int ROWS[] = {1, 3, 17, 64, 512, 4096};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
static const mr_tensor_type TYPES[] = {MR_TENSOR_F32, MR_TENSOR_BF16};

/* ---- the ops, each run on both backends from the same host inputs ---- */

static float *run_matmul(mr_backend *be, const float *x, const void *w, mr_tensor_type t,
                         int rows, int out_dim, int in_dim)
{
    size_t wb = (size_t)out_dim * in_dim * mr_tensor_type_size(t);
    float *dx = put(be, x, (size_t)rows * in_dim * 4), *out = put(be, NULL, (size_t)rows * out_dim * 4);
    ok(be, be->ops->matmul(be, out, dx, weights(be, w, wb), t, rows, out_dim, in_dim), "matmul");
    float *host = get(be, out, (size_t)rows * out_dim * 4);
    be->ops->free(be, dx), be->ops->free(be, out);
    return host;
}

static float *run_rmsnorm(mr_backend *be, const float *x, const void *w, mr_tensor_type t,
                          int rows, int dim)
{
    float *dx = put(be, x, (size_t)rows * dim * 4);
    ok(be, be->ops->rmsnorm(be, dx, dx, weights(be, w, (size_t)dim * mr_tensor_type_size(t)), t,
                            rows, dim, 1e-6f),
       "rmsnorm");
    float *host = get(be, dx, (size_t)rows * dim * 4);
    be->ops->free(be, dx);
    return host;
}

static float *run_embed(mr_backend *be, const void *table, mr_tensor_type t, const int32_t *ids,
                        int rows, int vocab, int dim)
{
    int32_t *dids = put(be, ids, (size_t)rows * 4);
    float *out = put(be, NULL, (size_t)rows * dim * 4);
    ok(be, be->ops->embed(be, out, weights(be, table, (size_t)vocab * dim * mr_tensor_type_size(t)),
                          t, dids, rows, dim),
       "embed");
    float *host = get(be, out, (size_t)rows * dim * 4);
    be->ops->free(be, dids), be->ops->free(be, out);
    return host;
}

static float *run_rope(mr_backend *be, const float *x, const int32_t *pos, const float *table,
                       int positions, int rows, int heads, int dim)
{
    float *dx = put(be, x, (size_t)rows * heads * dim * 4);
    int32_t *dpos = put(be, pos, (size_t)rows * 4);
    float *dtable = put(be, table, (size_t)positions * dim * 4);
    ok(be, be->ops->rope_neox(be, dx, dpos, rows, heads, dim, dtable), "rope");
    float *host = get(be, dx, (size_t)rows * heads * dim * 4);
    be->ops->free(be, dx), be->ops->free(be, dpos), be->ops->free(be, dtable);
    return host;
}

typedef struct {
    int rows, seqs, max_blocks;
    int32_t *seq, *pos, *table;
    float *q;
    void *k, *v;
    size_t cache;
    mr_tensor_type type;
} attention_case;

enum { Q_HEADS = 32, KV_HEADS = 4, HEAD_DIM = 128, BLOCK = 16 };
/* DeepSeek-V3's MLA at its own widths (128 heads, a 512-wide latent and a
 * 64-wide RoPE key per position). */
enum { MLA_HEADS = 128, MLA_LATENT = 512, MLA_ROPE = 64 };
/* Beyond 512 rows the cpu side's MLA (no vector kernel) takes too long. */
enum { MLA_MAX_ROWS = 512 };

/* Rows spread over 64 sequences at positions up to 300; blocks scattered;
 * a cache of `type`. */
static attention_case make_attention(int rows, mr_tensor_type type)
{
    attention_case c = {.rows = rows, .seqs = 64, .max_blocks = 300 / BLOCK + 1, .type = type};
    c.seq = malloc((size_t)rows * 4), c.pos = malloc((size_t)rows * 4);
    c.table = malloc((size_t)c.seqs * c.max_blocks * 4);
    for (int r = 0; r < rows; r++)
        c.seq[r] = r % c.seqs, c.pos[r] = (r * 37) % 300;
    int blocks = c.seqs * c.max_blocks;
    for (int i = 0; i < blocks; i++)
        c.table[i] = (i * 11) % blocks;
    c.cache = (size_t)blocks * BLOCK * KV_HEADS * HEAD_DIM; /* = MLA_LATENT wide */
    c.k = mr_test_random_weights(type, c.cache, 1.0f), c.v = mr_test_random_weights(type, c.cache, 1.0f);
    c.q = mr_test_random_floats((size_t)rows * (rows <= MLA_MAX_ROWS ? MLA_HEADS * MLA_LATENT
                                                                      : Q_HEADS * HEAD_DIM),
                                3.0f); /* either's query */
    return c;
}

static float *run_attention(mr_backend *be, const attention_case *c)
{
    size_t width = (size_t)Q_HEADS * HEAD_DIM;
    float *q = put(be, c->q, c->rows * width * 4), *out = put(be, NULL, c->rows * width * 4);
    size_t cache_bytes = c->cache * mr_tensor_type_size(c->type);
    void *k = put(be, c->k, cache_bytes), *v = put(be, c->v, cache_bytes);
    int32_t *seq = put(be, c->seq, (size_t)c->rows * 4), *pos = put(be, c->pos, (size_t)c->rows * 4);
    int32_t *table = put(be, c->table, (size_t)c->seqs * c->max_blocks * 4);
    mr_attention_args a = {c->rows, Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK, c->max_blocks,
                           1.0f / sqrtf(HEAD_DIM), seq, pos, table, c->type};
    ok(be, be->ops->attention(be, out, q, k, v, &a), "attention");
    float *host = get(be, out, c->rows * width * 4);
    void *all[] = {q, out, k, v, seq, pos, table};
    for (size_t i = 0; i < COUNT(all); i++)
        be->ops->free(be, all[i]);
    return host;
}

/* MLA over the attention case's sequences, positions and scattered
 * blocks; its caches hold enough values for the latent and rope caches. */

static float *run_mla(mr_backend *be, const attention_case *c)
{
    size_t slots = (size_t)c->seqs * c->max_blocks * BLOCK;
    size_t es = mr_tensor_type_size(c->type);
    size_t lat_w = (size_t)c->rows * MLA_HEADS * MLA_LATENT, rope_w = (size_t)c->rows * MLA_HEADS * MLA_ROPE;
    float *q_lat = put(be, c->q, lat_w * 4), *out = put(be, NULL, lat_w * 4);
    float *q_rope = put(be, c->q, rope_w * 4);
    void *lat = put(be, c->k, slots * MLA_LATENT * es), *rope = put(be, c->v, slots * MLA_ROPE * es);
    int32_t *seq = put(be, c->seq, (size_t)c->rows * 4), *pos = put(be, c->pos, (size_t)c->rows * 4);
    int32_t *table = put(be, c->table, (size_t)c->seqs * c->max_blocks * 4);
    mr_mla_args a = {.rows = c->rows, .n_heads = MLA_HEADS, .latent = MLA_LATENT, .rope = MLA_ROPE,
                     .block_size = BLOCK, .max_blocks = c->max_blocks, .scale = 0.1352f,
                     .seq = seq, .pos = pos, .block_table = table, .kv_type = c->type};
    ok(be, be->ops->mla_attention(be, out, q_lat, q_rope, lat, rope, &a), "mla_attention");
    float *host = get(be, out, lat_w * 4);
    void *all[] = {q_lat, q_rope, out, lat, rope, seq, pos, table};
    for (size_t i = 0; i < COUNT(all); i++)
        be->ops->free(be, all[i]);
    return host;
}

enum { EXPERTS = 128, TOP_K = 8, REPLICAS = 2 };

/* Route: returns slots then weights then counts, as words.  `bias` given:
 * DeepSeek-V3's grouped sigmoid router (8 groups, the best 4 kept,
 * scaled by 2.5); else Qwen3's softmax. */
static uint32_t *run_route(mr_backend *be, const float *logits, const int32_t *pos,
                           const int32_t *log2phy, const int32_t *logcnt, const float *bias,
                           int rows)
{
    size_t picks = (size_t)rows * TOP_K;
    float *dl = put(be, logits, (size_t)rows * EXPERTS * 4);
    int32_t *dpos = put(be, pos, (size_t)rows * 4);
    int32_t *dmap = put(be, log2phy, EXPERTS * REPLICAS * 4), *dcnt = put(be, logcnt, EXPERTS * 4);
    uint64_t zero[EXPERTS] = {0};
    uint64_t *counts = put(be, zero, sizeof zero);
    int32_t *slots = put(be, NULL, picks * 4);
    float *w = put(be, NULL, picks * 4);
    float *dbias = bias ? put(be, bias, EXPERTS * 4) : NULL;
    mr_route_args a = {.rows = rows, .n_experts = EXPERTS, .k = TOP_K, .renormalize = 1,
                       .scoring = bias ? MR_ROUTE_SIGMOID_GROUPED : MR_ROUTE_SOFTMAX,
                       .bias = dbias, .n_group = bias ? 8 : 1, .topk_group = bias ? 4 : 1,
                       .scaling = bias ? 2.5f : 1.0f, .max_replicas = REPLICAS, .logits = dl,
                       .pos = dpos, .log2phy = dmap, .logcnt = dcnt, .counts = counts,
                       .slots = slots, .weights = w};
    ok(be, be->ops->route(be, &a), "route");
    uint32_t *host = malloc(picks * 8 + sizeof zero);
    ok(be, be->ops->download(be, host, slots, picks * 4), "download");
    ok(be, be->ops->download(be, host + picks, w, picks * 4), "download");
    ok(be, be->ops->download(be, host + 2 * picks, counts, sizeof zero), "download");
    void *all[] = {dl, dpos, dmap, dcnt, counts, slots, w, dbias};
    for (size_t i = 0; i < COUNT(all); i++)
        if (all[i])
            be->ops->free(be, all[i]);
    return host;
}

enum { HIDDEN = 2048, INTER = 768, GROUPS = 8 };

typedef struct {
    const void *gate[GROUPS], *up[GROUPS], *down[GROUPS]; /* host */
    int32_t offsets[GROUPS + 1];
    float *x;
} experts_case;

static experts_case make_experts(int rows, mr_tensor_type t)
{
    experts_case c;
    for (int g = 0; g < GROUPS; g++) {
        c.gate[g] = mr_test_random_weights(t, (size_t)INTER * HIDDEN, 0.05f);
        c.up[g] = mr_test_random_weights(t, (size_t)INTER * HIDDEN, 0.05f);
        c.down[g] = mr_test_random_weights(t, (size_t)HIDDEN * INTER, 0.05f);
    }
    /* Even groups but the third, which is empty: as dispatch delivers. */
    for (int g = 0; g <= GROUPS; g++)
        c.offsets[g] = (int32_t)((long)rows * g / GROUPS);
    c.offsets[3] = c.offsets[2];
    c.x = mr_test_random_floats((size_t)rows * HIDDEN, 1.0f);
    return c;
}

static float *run_experts(mr_backend *be, const experts_case *c, mr_tensor_type t, int rows)
{
    size_t wb = (size_t)INTER * HIDDEN * mr_tensor_type_size(t);
    const void *gate[GROUPS], *up[GROUPS], *down[GROUPS];
    for (int g = 0; g < GROUPS; g++)
        gate[g] = weights(be, c->gate[g], wb), up[g] = weights(be, c->up[g], wb),
        down[g] = weights(be, c->down[g], wb);
    float *x = put(be, c->x, (size_t)rows * HIDDEN * 4), *out = put(be, NULL, (size_t)rows * HIDDEN * 4);
    mr_expert_groups eg = {GROUPS, c->offsets, NULL, gate, up, down, t, HIDDEN, INTER};
    ok(be, be->ops->expert_ffn(be, out, x, &eg), "expert_ffn");
    float *host = get(be, out, (size_t)rows * HIDDEN * 4);
    be->ops->free(be, x), be->ops->free(be, out);
    return host;
}

/* Expert parallelism on one rank: layout, pack (into a host buffer as shm
 * and MPI give, and into device memory as the GPU transports will),
 * unpack, a grouped expert call on the rows where they landed, the
 * partials and the reduction.  Returns the combined rows. */
static float *run_ep_round_trip(mr_backend *be, const float *x, const int32_t *slots,
                                const float *w, int rows, int slots_n, bool device_msg)
{
    enum { H = 256, I = 128 };
    size_t per_token = (size_t)rows;
    mr_ep_send s = {.n_tokens = rows, .top_k = TOP_K, .hidden = H, .n_ranks = 1,
                    .slots_per_rank = slots_n, .ll_capacity = 0,
                    .slots = put(be, slots, (size_t)rows * TOP_K * 4),
                    .weights = put(be, w, (size_t)rows * TOP_K * 4),
                    .x = put(be, x, (size_t)rows * H * 4),
                    .visits = put(be, NULL, per_token), .deferred = put(be, NULL, per_token),
                    .order = put(be, NULL, per_token * 4), .room = put(be, NULL, (size_t)slots_n * 4),
                    .counts = put(be, NULL, mr_ep_counts_len(1, slots_n) * 4)};
    ok(be, be->ops->ep_layout(be, &s), "ep_layout");
    size_t bytes = mr_ep_header_bytes(slots_n) + (size_t)rows * mr_ep_record_bytes(TOP_K, H);
    size_t combine_bytes = (size_t)rows * H * sizeof(double);
    size_t cap = bytes > combine_bytes ? bytes : combine_bytes;
    void *msg = device_msg ? put(be, NULL, cap) : malloc(cap);
    void *back = device_msg ? put(be, NULL, cap) : malloc(cap);
    ok(be, be->ops->ep_pack(be, msg, &s, 0, MR_EP_PACK_FIRST), "ep_pack");
    mr_ep_header *h = malloc(mr_ep_header_bytes(slots_n));
    ok(be, be->ops->download(be, h, msg, mr_ep_header_bytes(slots_n)), "header");
    /* The receiver's plan, as the engine makes it: rows by slot. */
    int32_t base = 0, *cursor = malloc((size_t)slots_n * 4), *offsets = malloc((size_t)(slots_n + 1) * 4);
    offsets[0] = 0;
    for (int i = 0; i < slots_n; i++)
        cursor[i] = offsets[i], offsets[i + 1] = offsets[i] + h->counts[i];
    int total = offsets[slots_n];
    mr_ep_recv r = {.top_k = TOP_K, .hidden = H, .n_ranks = 1, .slots_per_rank = slots_n,
                    .base = put(be, &base, 4), .cursor = put(be, cursor, (size_t)slots_n * 4),
                    .n_local = put(be, NULL, (size_t)rows * 4),
                    .rows = put(be, NULL, (size_t)rows * TOP_K * 4),
                    .weight = put(be, NULL, (size_t)rows * TOP_K * 4),
                    .x_rows = put(be, NULL, (size_t)(total ? total : 1) * sizeof(float *)),
                    .y = put(be, NULL, (size_t)(total ? total : 1) * H * 4)};
    ok(be, be->ops->ep_unpack(be, &r, msg, 0), "ep_unpack");
    /* Experts 0..slots_n-1 of a fixed small layer, bf16. */
    static void *host_w[3][64];
    const void *gate[64], *up[64], *down[64];
    int32_t offs[65];
    int groups = 0;
    offs[0] = 0;
    for (int e = 0; e < slots_n; e++) {
        if (!host_w[0][e])
            for (int m = 0; m < 3; m++)
                host_w[m][e] = mr_test_random_weights(MR_TENSOR_BF16, (size_t)H * I, 0.1f);
        if (offsets[e + 1] == offsets[e])
            continue;
        gate[groups] = weights(be, host_w[0][e], (size_t)H * I * 2);
        up[groups] = weights(be, host_w[1][e], (size_t)H * I * 2);
        down[groups] = weights(be, host_w[2][e], (size_t)H * I * 2);
        offs[++groups] = offsets[e + 1];
    }
    mr_expert_groups eg = {groups, offs, r.x_rows, gate, up, down, MR_TENSOR_BF16, H, I};
    if (groups)
        ok(be, be->ops->expert_ffn(be, r.y, NULL, &eg), "expert_ffn");
    ok(be, be->ops->ep_combine_partials(be, back, &r, 0, h->tokens), "ep_combine_partials");
    float *out = put(be, NULL, (size_t)rows * H * 4);
    const void *msgs[1] = {back};
    ok(be, be->ops->ep_combine_reduce(be, out, msgs, &s), "ep_combine_reduce");
    float *host = get(be, out, (size_t)rows * H * 4);
    free(h), free(cursor), free(offsets);
    return host; /* the rest is a check's worth of memory, left to exit */
}

/* matmul_heads at DeepSeek-V3's MLA shapes, on one kv_b_proj-shaped
 * weight ([heads * (nope + v)][latent]) mapped once per backend: W_UV, each
 * head's v rows read in place (stride nope + v, from row nope), and a
 * W_UKᵀ-shaped one ([heads][latent][nope], slices adjoining).  FP8 blocks
 * beside f32 and bf16: MLA keeps the checkpoint's type. */
enum { MLA_NOPE = 128, MLA_V = 128 };

static float *run_matmul_heads(mr_backend *be, const float *x, const void *w, mr_tensor_type t,
                               int rows, int out_dim, int in_dim, int first_row, int stride)
{
    size_t x_n = (size_t)rows * MLA_HEADS * in_dim, out_n = (size_t)rows * MLA_HEADS * out_dim;
    float *dx = put(be, x, x_n * 4), *out = put(be, NULL, out_n * 4);
    const char *slice = (const char *)w + (size_t)first_row * mr_tensor_row_bytes(t, in_dim);
    ok(be, be->ops->matmul_heads(be, out, dx, slice, t, rows, MLA_HEADS, out_dim, in_dim, stride),
       "matmul_heads");
    float *host = get(be, out, out_n * 4);
    be->ops->free(be, dx), be->ops->free(be, out);
    return host;
}

static void check_matmul_heads(mr_backend *cpu, mr_backend *gpu)
{
    static const mr_tensor_type types[] = {MR_TENSOR_F32, MR_TENSOR_BF16, MR_TENSOR_F8_BLOCKS};
    for (size_t t = 0; t < COUNT(types); t++) {
        const char *tn = types[t] == MR_TENSOR_F8_BLOCKS ? "fp8" : mr_tensor_type_name(types[t]);
        int kv_b_rows = MLA_HEADS * (MLA_NOPE + MLA_V), uk_rows = MLA_HEADS * MLA_LATENT;
        void *kv_b = mr_test_random_weight_rows(types[t], kv_b_rows, MLA_LATENT, 0.05f);
        void *uk_t = mr_test_random_weight_rows(types[t], uk_rows, MLA_NOPE, 0.05f);
        size_t kv_b_bytes = (size_t)kv_b_rows * mr_tensor_row_bytes(types[t], MLA_LATENT);
        size_t uk_bytes = (size_t)uk_rows * mr_tensor_row_bytes(types[t], MLA_NOPE);
        const void *kv_b_cpu = weights(cpu, kv_b, kv_b_bytes);
        const void *kv_b_gpu = weights(gpu, kv_b, kv_b_bytes);
        const void *uk_cpu = weights(cpu, uk_t, uk_bytes), *uk_gpu = weights(gpu, uk_t, uk_bytes);
        for (size_t ri = 0; ri < COUNT(ROWS) && ROWS[ri] <= max_rows() && ROWS[ri] <= MLA_MAX_ROWS;
             ri++) {
            int rows = ROWS[ri];
            char detail[32];
            float *x = mr_test_random_floats((size_t)rows * MLA_HEADS * MLA_LATENT, 2.0f);
            float *a = run_matmul_heads(cpu, x, kv_b_cpu, types[t], rows, MLA_V, MLA_LATENT,
                                        MLA_NOPE, MLA_NOPE + MLA_V);
            float *b = run_matmul_heads(gpu, x, kv_b_gpu, types[t], rows, MLA_V, MLA_LATENT,
                                        MLA_NOPE, MLA_NOPE + MLA_V);
            snprintf(detail, sizeof detail, "%s W_UV", tn);
            compare("matmul_heads", detail, rows, a, b, (size_t)rows * MLA_HEADS * MLA_V);
            free(a), free(b);
            a = run_matmul_heads(cpu, x, uk_cpu, types[t], rows, MLA_LATENT, MLA_NOPE, 0,
                                 MLA_LATENT);
            b = run_matmul_heads(gpu, x, uk_gpu, types[t], rows, MLA_LATENT, MLA_NOPE, 0,
                                 MLA_LATENT);
            snprintf(detail, sizeof detail, "%s W_UKt", tn);
            compare("matmul_heads", detail, rows, a, b, (size_t)rows * MLA_HEADS * MLA_LATENT);
            free(a), free(b), free(x);
        }
        free(kv_b), free(uk_t); /* their mappings stay the backends' until freed */
    }
}

static void check_ops(void)
{
    mr_backend *cpu = backend("cpu"), *gpu = backend(tested());
    static float table[4096 * HEAD_DIM];
    mr_rope_table(table, 4096, HEAD_DIM, 1e6f);
    for (size_t ri = 0; ri < COUNT(ROWS) && ROWS[ri] <= max_rows(); ri++) {
        int rows = ROWS[ri];
        char detail[32];
        for (size_t t = 0; t < COUNT(TYPES); t++) {
            const char *tn = mr_tensor_type_name(TYPES[t]);
            float *x = mr_test_random_floats((size_t)rows * HIDDEN, 2.0f);
            void *w = mr_test_random_weights(TYPES[t], (size_t)INTER * HIDDEN, 0.05f);
            float *a = run_matmul(cpu, x, w, TYPES[t], rows, INTER, HIDDEN);
            float *b = run_matmul(gpu, x, w, TYPES[t], rows, INTER, HIDDEN);
            compare("matmul", tn, rows, a, b, (size_t)rows * INTER);
            free(a), free(b), free(w);
            void *g = mr_test_random_weights(TYPES[t], HIDDEN, 1.0f);
            a = run_rmsnorm(cpu, x, g, TYPES[t], rows, HIDDEN);
            b = run_rmsnorm(gpu, x, g, TYPES[t], rows, HIDDEN);
            compare("rmsnorm", tn, rows, a, b, (size_t)rows * HIDDEN);
            free(a), free(b), free(g), free(x);
            x = mr_test_random_floats((size_t)rows * Q_HEADS * HEAD_DIM, 2.0f);
            g = mr_test_random_weights(TYPES[t], HEAD_DIM, 1.0f);
            a = run_rmsnorm(cpu, x, g, TYPES[t], rows * Q_HEADS, HEAD_DIM);
            b = run_rmsnorm(gpu, x, g, TYPES[t], rows * Q_HEADS, HEAD_DIM);
            compare("rmsnorm per head", tn, rows, a, b, (size_t)rows * Q_HEADS * HEAD_DIM);
            free(a), free(b), free(g), free(x);
            int32_t *ids = malloc((size_t)rows * 4);
            for (int r = 0; r < rows; r++)
                ids[r] = (r * 7919) % 1000;
            void *emb = mr_test_random_weights(TYPES[t], (size_t)1000 * HIDDEN, 1.0f);
            a = run_embed(cpu, emb, TYPES[t], ids, rows, 1000, HIDDEN);
            b = run_embed(gpu, emb, TYPES[t], ids, rows, 1000, HIDDEN);
            compare("embed", tn, rows, a, b, (size_t)rows * HIDDEN);
            free(a), free(b), free(emb), free(ids);
            experts_case ec = make_experts(rows, TYPES[t]);
            a = run_experts(cpu, &ec, TYPES[t], rows);
            b = run_experts(gpu, &ec, TYPES[t], rows);
            compare("expert_ffn", tn, rows, a, b, (size_t)rows * HIDDEN);
            free(a), free(b), free(ec.x);
        }
        float *x = mr_test_random_floats((size_t)rows * Q_HEADS * HEAD_DIM, 2.0f);
        int32_t *pos = malloc((size_t)rows * 4);
        for (int r = 0; r < rows; r++)
            pos[r] = (r * 131) % 4096;
        float *a = run_rope(cpu, x, pos, table, 4096, rows, Q_HEADS, HEAD_DIM);
        float *b = run_rope(gpu, x, pos, table, 4096, rows, Q_HEADS, HEAD_DIM);
        compare("rope_neox", "f32", rows, a, b, (size_t)rows * Q_HEADS * HEAD_DIM);
        free(a), free(b), free(x);
        for (size_t t = 0; t < COUNT(TYPES); t++) {
            attention_case ac = make_attention(rows, TYPES[t]);
            a = run_attention(cpu, &ac);
            b = run_attention(gpu, &ac);
            snprintf(detail, sizeof detail, "%s KV", mr_tensor_type_name(TYPES[t]));
            compare("attention", detail, rows, a, b, (size_t)rows * Q_HEADS * HEAD_DIM);
            free(a), free(b);
            if (rows <= MLA_MAX_ROWS) {
                a = run_mla(cpu, &ac);
                b = run_mla(gpu, &ac);
                compare("mla_attention", detail, rows, a, b, (size_t)rows * MLA_HEADS * MLA_LATENT);
                free(a), free(b);
            }
            free(ac.q), free(ac.k), free(ac.v), free(ac.seq), free(ac.table);
        }
        float *logits = mr_test_random_floats((size_t)rows * EXPERTS, 4.0f);
        int32_t log2phy[EXPERTS * REPLICAS], logcnt[EXPERTS];
        for (int e = 0; e < EXPERTS; e++)
            logcnt[e] = 1 + e % 2, log2phy[e * 2] = e, log2phy[e * 2 + 1] = EXPERTS + e / 2;
        float *bias = mr_test_random_floats(EXPERTS, 0.5f);
        for (int grouped = 0; grouped < 2; grouped++) {
            const float *b_or_none = grouped ? bias : NULL;
            uint32_t *ra = run_route(cpu, logits, pos, log2phy, logcnt, b_or_none, rows);
            uint32_t *rb = run_route(gpu, logits, pos, log2phy, logcnt, b_or_none, rows);
            compare("route", grouped ? "grouped" : "softmax", rows, ra, rb,
                    (size_t)rows * TOP_K * 2 + 2 * EXPERTS);
            free(ra), free(rb);
        }
        free(logits), free(bias);
        /* EP: 16 slots, picks spread over them. */
        int32_t *slots = malloc((size_t)rows * TOP_K * 4);
        float *w = mr_test_random_floats((size_t)rows * TOP_K, 1.0f);
        for (int i = 0; i < rows * TOP_K; i++)
            slots[i] = (int32_t)((i / TOP_K * 3 + i % TOP_K * 2) % 16);
        x = mr_test_random_floats((size_t)rows * 256, 1.0f);
        a = run_ep_round_trip(cpu, x, slots, w, rows, 16, false);
        for (int device_msg = 0; device_msg < 2; device_msg++) {
            b = run_ep_round_trip(gpu, x, slots, w, rows, 16, device_msg);
            snprintf(detail, sizeof detail, "%s msgs", device_msg ? "device" : "host");
            compare("ep round trip", detail, rows, a, b, (size_t)rows * 256);
            free(b);
        }
        free(a), free(x), free(slots), free(w), free(pos);
        fflush(stdout);
    }
    check_matmul_heads(cpu, gpu);
    mr_backend_free(cpu);
    mr_backend_free(gpu);
}

/* ---- the model ---- */

static char **complete(mr_model *model, int n, const int *which, int max_tokens,
                       mr_tensor_type kv_type)
{
    int vocab = mr_model_config_get(model)->vocab_size;
    char err[1024];
    mr_engine *engine;
    mr_engine_options eo = {.max_batch_tokens = 4096, .max_sequences = 256, .kv_block_size = 16,
                            .kv_blocks = 4096, .kv_type = kv_type};
    if (mr_engine_create(model, &eo, &engine, err, sizeof err) != MR_ENGINE_OK)
        die("engine", err);
    char **texts = calloc((size_t)n, sizeof *texts);
    for (int i = 0; i < n; i++) {
        int32_t prompt[40];
        int len = 8 + which[i] % 29;
        for (int j = 0; j < len; j++)
            prompt[j] = (int32_t)((which[i] * 131 + j * 17) % (vocab - 3) + 3);
        mr_generation gen = {.handle = (uint64_t)i, .prompt = prompt, .n_prompt = (size_t)len,
                             .sampling = {.max_tokens = max_tokens, .ignore_eos = true}};
        if (mr_engine_submit(engine, &gen, err, sizeof err) != MR_ENGINE_OK)
            die("submit", err);
    }
    mr_completion_out done[256];
    size_t n_done;
    do {
        if (mr_engine_step(engine, done, 256, &n_done, err, sizeof err) != MR_ENGINE_OK)
            die("step", err);
        for (size_t d = 0; d < n_done; d++)
        {
            texts[done[d].handle] = done[d].text;
            done[d].text = NULL;
            mr_completion_out_free(&done[d]);
        }
    } while (mr_engine_in_flight(engine) > 0 || n_done > 0);
    mr_engine_free(engine);
    return texts;
}

static mr_model *load(const char *dir, const char *backend_name)
{
    char err[1024];
    mr_model *model;
    mr_model_options mo = {.backend = backend_name};
    if (mr_model_load(dir, &mo, &model, err, sizeof err) != MR_ENGINE_OK)
        die(dir, err);
    return model;
}

static void check_model(const char *dir)
{
    enum { N = 300, BATCH = 256 };
    mr_model *cpu = load(dir, "cpu"), *gpu = load(dir, tested());
    const mr_model_config *c = mr_model_config_get(cpu);
    int32_t prompt[N];
    for (int i = 0; i < N; i++)
        prompt[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    size_t n = (size_t)N * c->vocab_size;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    char err[1024];
    if (mr_model_logits(cpu, prompt, N, a, err, sizeof err) != MR_ENGINE_OK ||
        mr_model_logits(gpu, prompt, N, b, err, sizeof err) != MR_ENGINE_OK)
        die("logits", err);
    compare("model logits", "300 tok", N, a, b, n);
    free(a), free(b);
    int which[BATCH];
    for (int i = 0; i < BATCH; i++)
        which[i] = i;
    for (size_t t = 0; t < COUNT(TYPES); t++) {
        const char *kv = mr_tensor_type_name(TYPES[t]);
        char **on_cpu = complete(cpu, BATCH, which, 32, TYPES[t]);
        char **on_gpu = complete(gpu, BATCH, which, 32, TYPES[t]);
        int differ = 0, alone_differ = 0;
        for (int i = 0; i < BATCH; i++)
            differ += strcmp(on_cpu[i], on_gpu[i]) != 0;
        for (int i = 0; i < BATCH; i += 51) { /* alone, on the GPU */
            char **one = complete(gpu, 1, &which[i], 32, TYPES[t]);
            alone_differ += strcmp(one[0], on_gpu[i]) != 0;
            free(one[0]), free(one);
        }
        failures += differ > 0 || alone_differ > 0;
        printf("%s completions      %s KV, 256 batched, cuda vs cpu: %d of 256 differ\n",
               differ ? "FAIL" : "PASS", kv, differ);
        printf("%s batch invariance %s KV, 1 vs 256 on cuda: %d of 6 differ\n",
               alone_differ ? "FAIL" : "PASS", kv, alone_differ);
    }
    mr_model_free(cpu);
    mr_model_free(gpu);
}

/* ---- device and figures ---- */

static void check_device(void)
{
    int count = 0, driver = 0, runtime = 0;
    cudaGetDeviceCount(&count);
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    printf("devices %d, driver API %d.%d, runtime %d.%d\n", count, driver / 1000,
           driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
    for (int i = 0; i < count; i++) {
        struct cudaDeviceProp p;
        cudaGetDeviceProperties(&p, i);
        size_t free_b = 0, total = 0;
        cudaSetDevice(i);
        cudaMemGetInfo(&free_b, &total);
        printf("device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB (%.1f free), L2 %d MiB\n",
               i, p.name, p.major, p.minor, p.multiProcessorCount, total / 1073741824.0,
               free_b / 1073741824.0, p.l2CacheSize >> 20);
    }
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds per call of `op` on be, after a warm-up, synced: the backend's
 * stream and the device's default one (cudaMemcpy device to device). */
#define TIME(be, reps, op)                                                                        \
    ({                                                                                            \
        op;                                                                                       \
        ok(be, be->ops->sync(be), "sync");                                                        \
        cudaDeviceSynchronize();                                                                  \
        double t0_ = seconds();                                                                   \
        for (int i_ = 0; i_ < (reps); i_++)                                                       \
            op;                                                                                   \
        ok(be, be->ops->sync(be), "sync");                                                        \
        cudaDeviceSynchronize();                                                                  \
        (seconds() - t0_) / (reps);                                                               \
    })

typedef int (*cublas_create_fn)(void **);
typedef int (*cublas_gemm_ex_fn)(void *, int, int, int, int, int, const void *, const void *,
                                 int, int, const void *, int, int, const void *, void *, int, int,
                                 int, int);

/* cuBLAS bf16 GEMM of m x n x k in TFLOP/s, or -1 without the library. */
static double cublas_tflops(int m, int n, int k)
{
    const char *path = getenv("MR_CUBLAS");
    void *lib = path ? dlopen(path, RTLD_NOW) : NULL;
    if (!lib)
        return -1;
    cublas_create_fn create = (cublas_create_fn)dlsym(lib, "cublasCreate_v2");
    cublas_gemm_ex_fn gemm = (cublas_gemm_ex_fn)dlsym(lib, "cublasGemmEx");
    void *handle;
    if (!create || !gemm || create(&handle) != 0)
        return -1;
    void *a, *b, *c;
    cudaMalloc(&a, (size_t)m * k * 2), cudaMalloc(&b, (size_t)k * n * 2), cudaMalloc(&c, (size_t)m * n * 4);
    cudaMemset(a, 0x3c, (size_t)m * k * 2), cudaMemset(b, 0x3c, (size_t)k * n * 2);
    float one = 1, zero = 0;
    /* CUBLAS_OP_N = 0, CUDA_R_16BF = 14, CUDA_R_32F = 0, CUBLAS_COMPUTE_32F = 68,
     * CUBLAS_GEMM_DEFAULT = -1 */
    for (int i = 0; i < 3; i++)
        gemm(handle, 0, 0, m, n, k, &one, a, 14, m, b, 14, k, &zero, c, 0, m, 68, -1);
    cudaDeviceSynchronize();
    double t0 = seconds();
    for (int i = 0; i < 10; i++)
        gemm(handle, 0, 0, m, n, k, &one, a, 14, m, b, 14, k, &zero, c, 0, m, 68, -1);
    cudaDeviceSynchronize();
    double t = (seconds() - t0) / 10;
    cudaFree(a), cudaFree(b), cudaFree(c);
    return 2.0 * m * n * k / t / 1e12;
}

static void figures(void)
{
    mr_backend *gpu = backend(tested());
    /* The device's copy bandwidth: 1 GiB device to device, read + write. */
    size_t big = (size_t)1 << 30;
    void *src = put(gpu, NULL, big), *dst = put(gpu, NULL, big);
    double t = TIME(gpu, 5, cudaMemcpy(dst, src, big, cudaMemcpyDeviceToDevice));
    double copy_gbs = 2.0 * big / t / 1e9;
    printf("copy      device to device: %.0f GB/s (read + write)\n", copy_gbs);
    gpu->ops->free(gpu, src), gpu->ops->free(gpu, dst);
    /* Decode: a bf16 weight read once per step, at 1, 64 and 256 rows. */
    int out_dim = 8192, in_dim = 2048;
    void *w = mr_test_random_weights(MR_TENSOR_BF16, (size_t)out_dim * in_dim, 0.05f);
    const void *dw = weights(gpu, w, (size_t)out_dim * in_dim * 2);
    static const int decode_rows[] = {1, 64, 256};
    for (size_t i = 0; i < COUNT(decode_rows); i++) {
        int rows = decode_rows[i];
        float *x = put(gpu, NULL, (size_t)rows * in_dim * 4), *out = put(gpu, NULL, (size_t)rows * out_dim * 4);
        t = TIME(gpu, 5, gpu->ops->matmul(gpu, out, x, dw, MR_TENSOR_BF16, rows, out_dim, in_dim));
        double gbs = (double)out_dim * in_dim * 2 / t / 1e9;
        printf("decode    exact matmul %4d rows x %d x %d bf16: %.1f GB/s of weights, %.0f%% of "
               "the copy, %.2f TFLOP/s\n",
               rows, out_dim, in_dim, gbs, 100 * gbs / copy_gbs,
               2.0 * rows * out_dim * in_dim / t / 1e12);
        gpu->ops->free(gpu, x), gpu->ops->free(gpu, out);
    }
    free(w);
    /* Grouped experts at Qwen3-30B-A3B's shapes (hidden 2048, inter 768). */
    for (int rows = 512; rows <= 4096; rows *= 8) {
        experts_case ec = make_experts(rows, MR_TENSOR_BF16);
        size_t wb = (size_t)INTER * HIDDEN * 2;
        const void *gate[GROUPS], *up[GROUPS], *down[GROUPS];
        for (int g = 0; g < GROUPS; g++)
            gate[g] = weights(gpu, ec.gate[g], wb), up[g] = weights(gpu, ec.up[g], wb),
            down[g] = weights(gpu, ec.down[g], wb);
        float *x = put(gpu, ec.x, (size_t)rows * HIDDEN * 4), *out = put(gpu, NULL, (size_t)rows * HIDDEN * 4);
        mr_expert_groups eg = {GROUPS, ec.offsets, NULL, gate, up, down, MR_TENSOR_BF16, HIDDEN,
                               INTER};
        t = TIME(gpu, 2, gpu->ops->expert_ffn(gpu, out, x, &eg));
        double flops = 2.0 * 3 * rows * (double)HIDDEN * INTER;
        double dense = cublas_tflops(rows, 3 * INTER, HIDDEN);
        printf("experts   exact grouped FFN %4d rows: %.2f TFLOP/s; cuBLAS bf16 GEMM of equal "
               "FLOPs: %s%.1f TFLOP/s\n",
               rows, flops / t / 1e12, dense < 0 ? "(MR_CUBLAS unset) " : "", dense);
        gpu->ops->free(gpu, x), gpu->ops->free(gpu, out), free(ec.x);
    }
    mr_backend_free(gpu);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "device") == 0)
        check_device();
    else if (strcmp(what, "ops") == 0)
        check_ops();
    else if (strcmp(what, "model") == 0 && argc > 2)
        check_model(argv[2]);
    else if (strcmp(what, "figures") == 0)
        figures();
    else {
        fprintf(stderr, "usage: gpu-check device | ops | model MODEL_DIR | figures\n");
        return 2;
    }
    return failures ? 1 : 0;
}
