/*
 * moerun make-model: a random Qwen3-MoE (or Mixtral, or DeepSeek-V3) in the
 * Hugging Face layout, for tests and benchmarks that must run without
 * downloading a checkpoint.
 *
 * Random weights alone would route uniformly, and a load balancer tested on
 * uniform load proves nothing.  So the routers are built to behave like a
 * trained model's: every embedding carries a shared "popularity" direction
 * u and, for words of a topic, a topic direction d_t; each router row
 * scores u by a skewed popularity profile (a few hot experts, a long cold
 * tail, as measured on real MoE models) and d_t for a per-topic hot set.
 * Text about cooking then heats different experts than text about code.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/testmodel/corpus.h"
#include "engine/testmodel/quantize.h"
#include "engine/grow.h"
#include "engine/testmodel/testmodel.h"

/* DeepSeek-V3's own dimensions (DeepseekV3Config): MLA's ranks and head
 * parts, the expert groups, the shared expert, the dense layers first. */
typedef struct {
    int q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int n_group, topk_group, n_shared_experts, first_k_dense_replace, intermediate;
    double routed_scaling_factor;
} deepseek_shape;

typedef struct {
    const char *name;
    mr_model_family family;
    int vocab, hidden, layers, heads, kv_heads, head_dim, moe_inter, experts, top_k;
    int max_positions;
    /* Popularity profile, in units of the router's per-token noise: a bonus
     * for the hot 5% and a log slope over the rest (fitted to the top 5% of
     * experts taking ~45% of activations and the bottom half ~10%). */
    double hot_bonus, slope;
    const deepseek_shape *deepseek; /* MR_FAMILY_DEEPSEEK_V3 */
} preset_shape;

/* DeepSeek-V3's structure, small: 16 routed experts in 2 groups of 8, the
 * best group kept, top 4; one shared expert; a first dense layer; MLA with
 * a q rank, 32 + 16 q/k dims per head (RoPE on 16) and 32 v dims. */
static const deepseek_shape deepseek_tiny = {
    .q_lora_rank = 96, .kv_lora_rank = 64, .qk_nope_head_dim = 32, .qk_rope_head_dim = 16,
    .v_head_dim = 32, .n_group = 2, .topk_group = 1, .n_shared_experts = 1,
    .first_k_dense_replace = 1, .intermediate = 512, .routed_scaling_factor = 2.5};

/* The same structure at `small`'s scale, for benchmarks beside it (make
 * bench): hidden 1024, 8 layers, 128 routed experts of 512 in 8 groups of
 * 16, the best 4 kept, top-8, as `small` has (its attention GQA); MLA with
 * 16 heads, a q rank of 256, a KV rank of 128, 64 + 32 q/k dims per head
 * and 64 v dims (nope + v = 128, so FP8's W_UKᵀ transposes exactly, as
 * V3's 128 + 128 does). */
static const deepseek_shape deepseek_small = {
    .q_lora_rank = 256, .kv_lora_rank = 128, .qk_nope_head_dim = 64, .qk_rope_head_dim = 32,
    .v_head_dim = 64, .n_group = 8, .topk_group = 4, .n_shared_experts = 1,
    .first_k_dense_replace = 1, .intermediate = 2048, .routed_scaling_factor = 2.5};

static const preset_shape presets[] = {
    [MR_PRESET_TINY] = {"tiny", MR_FAMILY_QWEN3_MOE, 2048, 256, 4, 8, 2, 32, 128, 64, 8, 4096,
                        3.0, 0.6},
    [MR_PRESET_SMALL] = {"small", MR_FAMILY_QWEN3_MOE, 2048, 1024, 8, 16, 4, 64, 512, 128, 8,
                         4096, 0.5, 0.6},
    /* Mixtral 8x7B's structure, small: 8 experts, top 2, 4 q heads per kv
     * head, no q/k norm, every layer routed. */
    [MR_PRESET_MIXTRAL_TINY] = {"mixtral-tiny", MR_FAMILY_MIXTRAL, 2048, 256, 4, 8, 2, 32, 256,
                                8, 2, 4096, 1.0, 0.6},
    /* head_dim: DeepseekV3Config's, the RoPE part of a head. */
    [MR_PRESET_DEEPSEEK_TINY] = {"deepseek-tiny", MR_FAMILY_DEEPSEEK_V3, 2048, 256, 3, 8, 8, 16,
                                 128, 16, 4, 4096, 1.5, 0.6, &deepseek_tiny},
    [MR_PRESET_DEEPSEEK_SMALL] = {"deepseek-small", MR_FAMILY_DEEPSEEK_V3, 2048, 1024, 8, 16,
                                  16, 32, 512, 128, 8, 4096, 0.5, 0.6, &deepseek_small},
};

/* Strength of the shared and topic directions in the embeddings, and of
 * the topic bonus in router logits (noise units). */
#define EMBED_POPULARITY 8.0
#define EMBED_TOPIC 8.0
#define TOPIC_BONUS 4.0
/* A topic heats one expert in TOPIC_HOT_SHARE of each layer. */
#define TOPIC_HOT_SHARE 10

/* ------------------------------------------------------------------------
 * Deterministic random numbers: one stream per tensor, named by the model
 * seed and the tensor's name, so tensors can be filled in any order or in
 * parallel and still come out the same bytes.
 * ------------------------------------------------------------------------ */
typedef struct {
    uint64_t s[4];
} rng256;

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_init(rng256 *r, uint64_t seed, const char *name)
{
    uint64_t x = seed ^ 0x6d6f657275ull;
    for (const char *p = name; *p; p++)
        x = (x ^ (unsigned char)*p) * 0x100000001b3ull;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256+: fast enough to fill the small preset's 1.6 G weights. */
static double rng_uniform(rng256 *r)
{
    uint64_t *s = r->s, result = s[0] + s[3], t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(result >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng256 *r)
{
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1 + 1e-300)) * cos(2.0 * M_PI * u2);
}

/* ------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------ */
typedef struct {
    mr_tensor_spec *specs;
    size_t count, cap;
    uint64_t seed;
} tensor_list;

/* A [rows][cols] tensor (a vector when cols is 0), its data uninitialised. */
static void *add_typed(tensor_list *l, const char *name, mr_tensor_type type, int64_t rows,
                       int64_t cols)
{
    if (!mr_grow((void **)&l->specs, &l->cap, l->count + 1, sizeof *l->specs))
        return NULL;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    void *data = malloc(n * mr_tensor_type_size(type));
    char *copy = strdup(name);
    if (!data || !copy) {
        free(data);
        free(copy);
        return NULL;
    }
    mr_tensor_spec *s = &l->specs[l->count++];
    *s = (mr_tensor_spec){.name = copy, .type = type, .ndim = cols ? 2 : 1,
                          .shape = {rows, cols}, .data = data};
    return data;
}

static uint16_t *add_tensor(tensor_list *l, const char *name, int64_t rows, int64_t cols)
{
    return add_typed(l, name, MR_TENSOR_BF16, rows, cols);
}

static void free_tensors(tensor_list *l)
{
    for (size_t i = 0; i < l->count; i++) {
        free((void *)l->specs[i].name);
        free((void *)l->specs[i].data);
    }
    free(l->specs);
}

/* Uniform with standard deviation `std`, as PyTorch's default init draws. */
static void fill_uniform(uint16_t *out, size_t n, double std, uint64_t seed, const char *name)
{
    rng256 r;
    rng_init(&r, seed, name);
    double half = std * sqrt(3.0);
    for (size_t i = 0; i < n; i++)
        out[i] = mr_f32_to_bf16((float)((2.0 * rng_uniform(&r) - 1.0) * half));
}

/* Norm weights near 1 but not 1, so a test that swaps norms notices. */
static int add_norm(tensor_list *l, const char *name, int64_t n)
{
    uint16_t *w = add_tensor(l, name, n, 0);
    if (!w)
        return -1;
    rng256 r;
    rng_init(&r, l->seed, name);
    for (int64_t i = 0; i < n; i++)
        w[i] = mr_f32_to_bf16((float)(1.0 + 0.1 * (2.0 * rng_uniform(&r) - 1.0)));
    return 0;
}

static int add_linear(tensor_list *l, const char *name, int64_t out, int64_t in, double gain)
{
    uint16_t *w = add_tensor(l, name, out, in);
    if (!w)
        return -1;
    fill_uniform(w, (size_t)(out * in), gain / sqrt((double)in), l->seed, name);
    return 0;
}

/* ------------------------------------------------------------------------
 * Routing structure
 * ------------------------------------------------------------------------ */
typedef struct {
    const preset_shape *p;
    int n_topics;
    double *directions; /* [1 + n_topics][hidden], orthonormal: u, then d_t */
    int *token_topic;   /* [vocab]: topic index, or -1 for general tokens */
} routing;

/* Orthonormal random directions by Gram-Schmidt. */
static void make_directions(routing *rt, uint64_t seed)
{
    int h = rt->p->hidden;
    rng256 r;
    rng_init(&r, seed, "directions");
    for (int d = 0; d <= rt->n_topics; d++) {
        double *v = rt->directions + (size_t)d * h;
        for (int i = 0; i < h; i++)
            v[i] = rng_normal(&r);
        for (int prev = 0; prev < d; prev++) {
            const double *w = rt->directions + (size_t)prev * h;
            double dot = 0;
            for (int i = 0; i < h; i++)
                dot += v[i] * w[i];
            for (int i = 0; i < h; i++)
                v[i] -= dot * w[i];
        }
        double norm = 0;
        for (int i = 0; i < h; i++)
            norm += v[i] * v[i];
        for (int i = 0; i < h; i++)
            v[i] /= sqrt(norm);
    }
}

/* A token belongs to a topic when its letters (3 or more) occur inside a
 * word of exactly that topic's list. */
static int topic_of(const char *bytes, size_t len)
{
    char word[64];
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < sizeof word; i++) {
        char c = bytes[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c >= 'a' && c <= 'z')
            word[n++] = c;
        else if (c != ' ')
            return -1;
    }
    word[n] = '\0';
    if (n < 3)
        return -1;
    int found = -1;
    for (size_t t = 0; t < mr_corpus_n_topics; t++)
        for (size_t w = 0; w < mr_corpus_topics[t].n_words; w++)
            if (strstr(mr_corpus_topics[t].words[w], word)) {
                if (found >= 0 && found != (int)t)
                    return -1;
                found = (int)t;
                break;
            }
    return found;
}

static int add_embeddings(tensor_list *l, const routing *rt)
{
    const preset_shape *p = rt->p;
    uint16_t *w = add_tensor(l, "model.embed_tokens.weight", p->vocab, p->hidden);
    if (!w)
        return -1;
    rng256 r;
    rng_init(&r, l->seed, "model.embed_tokens.weight");
    const double *u = rt->directions;
    for (int tok = 0; tok < p->vocab; tok++) {
        int topic = rt->token_topic[tok];
        const double *d = topic >= 0 ? rt->directions + (size_t)(1 + topic) * p->hidden : NULL;
        for (int i = 0; i < p->hidden; i++) {
            double v = rng_normal(&r) + EMBED_POPULARITY * u[i] + (d ? EMBED_TOPIC * d[i] : 0);
            w[(size_t)tok * p->hidden + i] = mr_f32_to_bf16((float)v);
        }
    }
    return 0;
}

static void shuffle(int *a, int n, rng256 *r)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_uniform(r) * (i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Router rows: a random part whose score has unit spread over tokens, plus
 * the popularity profile along u and the topic bonus along d_t.  Ranks of
 * popularity and topic hot sets are shuffled per layer, as in real models
 * where each layer has its own hot experts. */
/* The routed block's name in the family's layout (Mixtral's
 * block_sparse_moe), and its experts' projections. */
static const char *moe_block(const preset_shape *p)
{
    return p->family == MR_FAMILY_MIXTRAL ? "block_sparse_moe" : "mlp";
}

static int add_router(tensor_list *l, const routing *rt, int layer)
{
    const preset_shape *p = rt->p;
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.%s.gate.weight", layer, moe_block(p));
    uint16_t *w = add_tensor(l, name, p->experts, p->hidden);
    int *rank = malloc((size_t)p->experts * sizeof *rank);
    if (!w || !rank) {
        free(rank);
        return -1;
    }
    rng256 r;
    rng_init(&r, l->seed, name);
    for (int e = 0; e < p->experts; e++)
        rank[e] = e;
    shuffle(rank, p->experts, &r);
    /* What rmsnorm leaves of the directions: x = g + A u + B d has norm
     * sqrt(H + A² + B²) and is scaled to sqrt(H). */
    double h = p->hidden;
    double keep = sqrt(h / (h + EMBED_POPULARITY * EMBED_POPULARITY + EMBED_TOPIC * EMBED_TOPIC));
    int n_hot = p->experts / 20 > 0 ? p->experts / 20 : 1;
    int n_topic_hot = p->experts / TOPIC_HOT_SHARE > 0 ? p->experts / TOPIC_HOT_SHARE : 1;
    for (int e = 0; e < p->experts; e++) {
        double bias = p->slope * -log((rank[e] + 1.0) / (p->experts + 1.0));
        if (rank[e] < n_hot)
            bias += p->hot_bonus;
        double *row = calloc((size_t)p->hidden, sizeof *row);
        if (!row) {
            free(rank);
            return -1;
        }
        for (int i = 0; i < p->hidden; i++)
            row[i] = rng_normal(&r) / sqrt(h) +
                     bias / (keep * EMBED_POPULARITY) * rt->directions[i];
        for (int t = 0; t < rt->n_topics; t++) {
            /* Topic t's hot set: n_topic_hot experts picked by a
             * per-layer, per-topic rotation of the popularity order. */
            int hot_rank = (rank[e] + (t + 1) * (p->experts / (rt->n_topics + 1))) % p->experts;
            if (hot_rank >= n_topic_hot)
                continue;
            const double *d = rt->directions + (size_t)(1 + t) * p->hidden;
            for (int i = 0; i < p->hidden; i++)
                row[i] += TOPIC_BONUS / (keep * EMBED_TOPIC) * d[i];
        }
        for (int i = 0; i < p->hidden; i++)
            w[(size_t)e * p->hidden + i] = mr_f32_to_bf16((float)row[i]);
        free(row);
    }
    free(rank);
    return 0;
}

/* A SwiGLU MLP's three projections under `prefix` (…mlp., …experts.E.). */
static int add_swiglu(tensor_list *l, const char *prefix, int64_t hidden, int64_t inter)
{
    char name[160];
    snprintf(name, sizeof name, "%sgate_proj.weight", prefix);
    if (add_linear(l, name, inter, hidden, 1.0))
        return -1;
    snprintf(name, sizeof name, "%sup_proj.weight", prefix);
    if (add_linear(l, name, inter, hidden, 1.0))
        return -1;
    snprintf(name, sizeof name, "%sdown_proj.weight", prefix);
    return add_linear(l, name, hidden, inter, 0.25);
}

/* e_score_correction_bias: trained DeepSeek-V3 routers carry a bias that
 * evens expert load by changing which experts are chosen (not their
 * weights).  Random, and about as large as the gaps between neighbouring
 * sigmoid scores (~0.035), so that it changes some choices (on seed 0, 140
 * of 600 tokens' expert sets): an engine that ignores it, or lets it into
 * the weights, disagrees with the reference. */
#define CORRECTION_BIAS 0.05

static int add_correction_bias(tensor_list *l, const char *name, int experts)
{
    float *b = add_typed(l, name, MR_TENSOR_F32, experts, 0);
    if (!b)
        return -1;
    rng256 r;
    rng_init(&r, l->seed, name);
    for (int e = 0; e < experts; e++)
        b[e] = (float)(CORRECTION_BIAS * (2.0 * rng_uniform(&r) - 1.0));
    return 0;
}

/* A DeepSeek-V3 decoder layer: MLA (q through its low rank, K and V from
 * a latent beside one RoPE key), then a dense MLP in the first
 * first_k_dense_replace layers, or the router with its correction bias,
 * the routed experts and the shared expert. */
static int add_deepseek_layer(tensor_list *l, const routing *rt, int i)
{
    const preset_shape *p = rt->p;
    const deepseek_shape *d = p->deepseek;
    int64_t h = p->hidden, qk = d->qk_nope_head_dim + d->qk_rope_head_dim;
    char name[160];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if (add_norm(l, NAME("model.layers.%d.input_layernorm.weight", i), h) ||
        add_norm(l, NAME("model.layers.%d.post_attention_layernorm.weight", i), h) ||
        add_linear(l, NAME("model.layers.%d.self_attn.q_a_proj.weight", i), d->q_lora_rank, h,
                   1.0) ||
        add_norm(l, NAME("model.layers.%d.self_attn.q_a_layernorm.weight", i), d->q_lora_rank) ||
        add_linear(l, NAME("model.layers.%d.self_attn.q_b_proj.weight", i), p->heads * qk,
                   d->q_lora_rank, 1.0) ||
        add_linear(l, NAME("model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", i),
                   d->kv_lora_rank + d->qk_rope_head_dim, h, 1.0) ||
        add_norm(l, NAME("model.layers.%d.self_attn.kv_a_layernorm.weight", i),
                 d->kv_lora_rank) ||
        add_linear(l, NAME("model.layers.%d.self_attn.kv_b_proj.weight", i),
                   (int64_t)p->heads * (d->qk_nope_head_dim + d->v_head_dim), d->kv_lora_rank,
                   1.0) ||
        add_linear(l, NAME("model.layers.%d.self_attn.o_proj.weight", i), h,
                   (int64_t)p->heads * d->v_head_dim, 0.25))
        return -1;
    if (i < d->first_k_dense_replace)
        return add_swiglu(l, NAME("model.layers.%d.mlp.", i), h, d->intermediate);
    if (add_router(l, rt, i) ||
        add_correction_bias(l, NAME("model.layers.%d.mlp.gate.e_score_correction_bias", i),
                            p->experts) ||
        add_swiglu(l, NAME("model.layers.%d.mlp.shared_experts.", i), h,
                   (int64_t)p->moe_inter * d->n_shared_experts))
        return -1;
    for (int e = 0; e < p->experts; e++)
        if (add_swiglu(l, NAME("model.layers.%d.mlp.experts.%d.", i, e), h, p->moe_inter))
            return -1;
#undef NAME
    return 0;
}

static int add_layer(tensor_list *l, const routing *rt, int i)
{
    const preset_shape *p = rt->p;
    if (p->family == MR_FAMILY_DEEPSEEK_V3)
        return add_deepseek_layer(l, rt, i);
    int64_t h = p->hidden, q = (int64_t)p->heads * p->head_dim,
            kv = (int64_t)p->kv_heads * p->head_dim;
    char name[128];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if (add_norm(l, NAME("model.layers.%d.input_layernorm.weight", i), h) ||
        add_norm(l, NAME("model.layers.%d.post_attention_layernorm.weight", i), h) ||
        add_linear(l, NAME("model.layers.%d.self_attn.q_proj.weight", i), q, h, 1.0) ||
        add_linear(l, NAME("model.layers.%d.self_attn.k_proj.weight", i), kv, h, 1.0) ||
        add_linear(l, NAME("model.layers.%d.self_attn.v_proj.weight", i), kv, h, 1.0) ||
        add_linear(l, NAME("model.layers.%d.self_attn.o_proj.weight", i), h, q, 0.25))
        return -1;
    if (p->family == MR_FAMILY_QWEN3_MOE &&
        (add_norm(l, NAME("model.layers.%d.self_attn.q_norm.weight", i), p->head_dim) ||
         add_norm(l, NAME("model.layers.%d.self_attn.k_norm.weight", i), p->head_dim)))
        return -1;
    if (add_router(l, rt, i))
        return -1;
    static const char *const qwen[3] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const mixtral[3] = {"w1", "w3", "w2"};
    const char *const *part = p->family == MR_FAMILY_MIXTRAL ? mixtral : qwen;
    for (int e = 0; e < p->experts; e++)
        if (add_linear(l, NAME("model.layers.%d.%s.experts.%d.%s.weight", i, moe_block(p), e,
                               part[0]),
                       p->moe_inter, h, 1.0) ||
            add_linear(l, NAME("model.layers.%d.%s.experts.%d.%s.weight", i, moe_block(p), e,
                               part[1]),
                       p->moe_inter, h, 1.0) ||
            add_linear(l, NAME("model.layers.%d.%s.experts.%d.%s.weight", i, moe_block(p), e,
                               part[2]),
                       h, p->moe_inter, 0.25))
            return -1;
#undef NAME
    return 0;
}

/* The weights in the checkpoint dtype asked for: bf16 as made, every bf16
 * tensor f16 (an f32 correction bias stays f32), or the projections FP8
 * with their tile scales. */
static int convert_weights(tensor_list *l, mr_tensor_type dtype)
{
    if (dtype == MR_TENSOR_F16)
        for (size_t i = 0; i < l->count; i++)
            if (l->specs[i].type == MR_TENSOR_BF16)
                mr_quantize_f16(&l->specs[i]);
    if (dtype != MR_TENSOR_F8_BLOCKS)
        return 0;
    size_t n = l->count;
    for (size_t i = 0; i < n; i++) {
        if (!mr_quantize_fp8_wanted(&l->specs[i]))
            continue;
        mr_tensor_spec values, scales;
        if (!mr_grow((void **)&l->specs, &l->cap, l->count + 1, sizeof *l->specs) ||
            mr_quantize_fp8(&l->specs[i], &values, &scales) != 0)
            return -1;
        free((void *)l->specs[i].name);
        free((void *)l->specs[i].data);
        l->specs[i] = values;
        l->specs[l->count++] = scales;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------ */
static int write_text(const char *dir, const char *name, const char *text, char *err,
                      size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) == EOF || fclose(f) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return MR_ENGINE_EIO;
    }
    return MR_ENGINE_OK;
}

static int write_json(const char *dir, const char *name, cJSON *json, char *err, size_t errlen)
{
    char *text = json ? cJSON_Print(json) : NULL;
    cJSON_Delete(json);
    if (!text) {
        snprintf(err, errlen, "out of memory writing %s", name);
        return MR_ENGINE_ENOMEM;
    }
    int rc = write_text(dir, name, text, err, errlen);
    free(text);
    return rc;
}

/* What every preset's config.json starts with: its architecture and the
 * sizes all of them name first, as transformers writes them. */
static cJSON *config_start(const preset_shape *p, const char *architecture, const char *type)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToObject(c, "architectures", cJSON_CreateStringArray(&architecture, 1));
    cJSON_AddStringToObject(c, "model_type", type);
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
    cJSON_AddNumberToObject(c, "vocab_size", p->vocab);
    cJSON_AddNumberToObject(c, "hidden_size", p->hidden);
    return c;
}

/* ... and ends with: the special tokens' ids and the preset's name. */
static cJSON *config_end(cJSON *c, const preset_shape *p, int eos)
{
    cJSON_AddNullToObject(c, "bos_token_id");
    cJSON_AddNumberToObject(c, "eos_token_id", eos);
    cJSON_AddStringToObject(c, "moerun_preset", p->name);
    return c;
}

/* Mixtral's config.json: MixtralConfig's fields, as its checkpoints carry
 * them. */
static cJSON *mixtral_config_json(const preset_shape *p, int eos)
{
    cJSON *c = config_start(p, "MixtralForCausalLM", "mixtral");
    cJSON_AddNumberToObject(c, "num_hidden_layers", p->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", p->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", p->kv_heads);
    cJSON_AddNumberToObject(c, "intermediate_size", p->moe_inter);
    cJSON_AddNumberToObject(c, "num_local_experts", p->experts);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", p->top_k);
    cJSON_AddNumberToObject(c, "router_aux_loss_coef", 0.02);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", 1000000.0);
    cJSON_AddNullToObject(c, "sliding_window");
    cJSON_AddNumberToObject(c, "max_position_embeddings", p->max_positions);
    return config_end(c, p, eos);
}

static cJSON *family_config_json(const preset_shape *p, int eos);

/* config.json with the dtype: torch_dtype, and FP8's quantization_config
 * as block-scaled checkpoints carry it. */
static cJSON *config_json(const preset_shape *p, int eos, mr_tensor_type dtype)
{
    cJSON *c = family_config_json(p, eos);
    if (dtype == MR_TENSOR_F16)
        cJSON_ReplaceItemInObject(c, "torch_dtype", cJSON_CreateString("float16"));
    if (dtype == MR_TENSOR_F8_BLOCKS) {
        cJSON *q = cJSON_AddObjectToObject(c, "quantization_config");
        const int block[2] = {128, 128};
        cJSON_AddStringToObject(q, "quant_method", "fp8");
        cJSON_AddStringToObject(q, "fmt", "e4m3");
        cJSON_AddStringToObject(q, "activation_scheme", "dynamic");
        cJSON_AddItemToObject(q, "weight_block_size", cJSON_CreateIntArray(block, 2));
    }
    return c;
}

/* DeepSeek-V3's config.json as DeepseekV3Config writes it (with its
 * derived qk_head_dim, and head_dim the RoPE part), plus the keys
 * DeepSeek's own checkpoints carry for the router (scoring_func,
 * topk_method) and the MTP layers, of which this model has none. */
static cJSON *deepseek_config_json(const preset_shape *p, int eos)
{
    const deepseek_shape *d = p->deepseek;
    cJSON *c = config_start(p, "DeepseekV3ForCausalLM", "deepseek_v3");
    cJSON_AddNumberToObject(c, "intermediate_size", d->intermediate);
    cJSON_AddNumberToObject(c, "moe_intermediate_size", p->moe_inter);
    cJSON_AddNumberToObject(c, "num_hidden_layers", p->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", p->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", p->kv_heads);
    cJSON_AddNumberToObject(c, "n_shared_experts", d->n_shared_experts);
    cJSON_AddNumberToObject(c, "n_routed_experts", p->experts);
    cJSON_AddNumberToObject(c, "routed_scaling_factor", d->routed_scaling_factor);
    cJSON_AddNumberToObject(c, "kv_lora_rank", d->kv_lora_rank);
    cJSON_AddNumberToObject(c, "q_lora_rank", d->q_lora_rank);
    cJSON_AddNumberToObject(c, "qk_rope_head_dim", d->qk_rope_head_dim);
    cJSON_AddNumberToObject(c, "v_head_dim", d->v_head_dim);
    cJSON_AddNumberToObject(c, "qk_nope_head_dim", d->qk_nope_head_dim);
    cJSON_AddNumberToObject(c, "qk_head_dim", d->qk_nope_head_dim + d->qk_rope_head_dim);
    cJSON_AddNumberToObject(c, "head_dim", p->head_dim);
    cJSON_AddNumberToObject(c, "n_group", d->n_group);
    cJSON_AddNumberToObject(c, "topk_group", d->topk_group);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", p->top_k);
    cJSON_AddNumberToObject(c, "first_k_dense_replace", d->first_k_dense_replace);
    cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
    cJSON_AddStringToObject(c, "scoring_func", "sigmoid");
    cJSON_AddStringToObject(c, "topk_method", "noaux_tc");
    cJSON_AddNumberToObject(c, "num_nextn_predict_layers", 0);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "max_position_embeddings", p->max_positions);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
    cJSON_AddBoolToObject(c, "use_cache", 1);
    cJSON_AddNumberToObject(c, "pretraining_tp", 1);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_AddNumberToObject(c, "rope_theta", 10000.0);
    cJSON_AddNullToObject(c, "rope_scaling");
    cJSON_AddBoolToObject(c, "rope_interleave", 1);
    cJSON_AddBoolToObject(c, "attention_bias", 0);
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    return config_end(c, p, eos);
}

static cJSON *family_config_json(const preset_shape *p, int eos)
{
    if (p->family == MR_FAMILY_MIXTRAL)
        return mixtral_config_json(p, eos);
    if (p->family == MR_FAMILY_DEEPSEEK_V3)
        return deepseek_config_json(p, eos);
    cJSON *c = config_start(p, "Qwen3MoeForCausalLM", "qwen3_moe");
    cJSON_AddNumberToObject(c, "num_hidden_layers", p->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", p->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", p->kv_heads);
    cJSON_AddNumberToObject(c, "head_dim", p->head_dim);
    cJSON_AddNumberToObject(c, "intermediate_size", 4 * p->moe_inter);
    cJSON_AddNumberToObject(c, "moe_intermediate_size", p->moe_inter);
    cJSON_AddNumberToObject(c, "num_experts", p->experts);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", p->top_k);
    cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
    cJSON_AddItemToObject(c, "mlp_only_layers", cJSON_CreateArray());
    cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_AddBoolToObject(c, "attention_bias", 0);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
    cJSON_AddNumberToObject(c, "rope_theta", 1000000.0);
    cJSON_AddNumberToObject(c, "max_position_embeddings", p->max_positions);
    return config_end(c, p, eos);
}

static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

static cJSON *tokenizer_config_json(void)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "tokenizer_class", "Qwen2Tokenizer");
    cJSON_AddBoolToObject(c, "add_bos_token", 0);
    cJSON_AddNullToObject(c, "bos_token");
    cJSON_AddStringToObject(c, "eos_token", "<|im_end|>");
    cJSON_AddStringToObject(c, "pad_token", "<|endoftext|>");
    cJSON_AddNumberToObject(c, "model_max_length", 4096);
    cJSON_AddStringToObject(c, "chat_template", chatml_template);
    return c;
}

static int make_tokenizer(const char *dir, const preset_shape *p, mr_tokenizer **tok,
                          char *err, size_t errlen)
{
    static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    char *json = NULL, *corpus = NULL;
    size_t corpus_len = 0;
    if (mr_corpus_build(&corpus, &corpus_len) != 0) {
        snprintf(err, errlen, "out of memory building the tokenizer corpus");
        return MR_ENGINE_ENOMEM;
    }
    int rc = mr_tokenizer_train(corpus, corpus_len, p->vocab, specials, 3, &json, err, errlen);
    free(corpus);
    if (rc == MR_ENGINE_OK)
        rc = write_text(dir, "tokenizer.json", json, err, errlen);
    free(json);
    if (rc == MR_ENGINE_OK)
        rc = write_json(dir, "tokenizer_config.json", tokenizer_config_json(), err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = mr_tokenizer_load(dir, tok, err, errlen);
    return rc;
}

static int classify_tokens(routing *rt, const mr_tokenizer *tok)
{
    rt->token_topic = malloc((size_t)rt->p->vocab * sizeof *rt->token_topic);
    if (!rt->token_topic)
        return -1;
    for (int id = 0; id < rt->p->vocab; id++) {
        size_t len = 0;
        const char *bytes = mr_tokenizer_token_bytes(tok, id, &len);
        rt->token_topic[id] = bytes ? topic_of(bytes, len) : -1;
    }
    return 0;
}

static int build_weights(tensor_list *l, const routing *rt)
{
    const preset_shape *p = rt->p;
    if (add_embeddings(l, rt) || add_norm(l, "model.norm.weight", p->hidden) ||
        add_linear(l, "lm_head.weight", p->vocab, p->hidden, 3.0))
        return -1;
    for (int i = 0; i < p->layers; i++)
        if (add_layer(l, rt, i))
            return -1;
    return 0;
}

const char *mr_make_model_preset_name(mr_model_preset preset)
{
    return (int)preset >= 0 && preset <= MR_PRESET_DEEPSEEK_SMALL ? presets[preset].name : NULL;
}

int mr_make_model(const char *dir, mr_model_preset preset, uint64_t seed, mr_tensor_type dtype,
                  char *err, size_t errlen)
{
    if ((int)preset < 0 || preset > MR_PRESET_DEEPSEEK_SMALL) {
        snprintf(err, errlen, "unknown model preset %d", (int)preset);
        return MR_ENGINE_EINVAL;
    }
    if (dtype == MR_TENSOR_F32) {
        snprintf(err, errlen, "make-model writes bf16, f16 or fp8 weights");
        return MR_ENGINE_EINVAL;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return MR_ENGINE_EIO;
    }
    const preset_shape *p = &presets[preset];
    mr_tokenizer *tok = NULL;
    int rc = make_tokenizer(dir, p, &tok, err, errlen);
    if (rc == MR_ENGINE_OK && mr_tokenizer_vocab_size(tok) != p->vocab) {
        snprintf(err, errlen, "the trained tokenizer has %d tokens, not %d",
                 mr_tokenizer_vocab_size(tok), p->vocab);
        rc = MR_ENGINE_EINVAL;
    }
    if (rc != MR_ENGINE_OK) {
        mr_tokenizer_free(tok);
        return rc;
    }
    routing rt = {.p = p, .n_topics = (int)mr_corpus_n_topics};
    tensor_list tensors = {.seed = seed};
    rt.directions = malloc((size_t)(1 + rt.n_topics) * p->hidden * sizeof(double));
    bool ok = rt.directions && classify_tokens(&rt, tok) == 0;
    if (ok) {
        make_directions(&rt, seed);
        ok = build_weights(&tensors, &rt) == 0 && convert_weights(&tensors, dtype) == 0;
    }
    if (!ok) {
        snprintf(err, errlen, "out of memory building the %s model", p->name);
        rc = MR_ENGINE_ENOMEM;
    }
    if (rc == MR_ENGINE_OK)
        rc = write_json(dir, "config.json",
                        config_json(p, mr_tokenizer_find(tok, "<|im_end|>"), dtype), err, errlen);
    if (rc == MR_ENGINE_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = mr_safetensors_write(path, tensors.specs, tensors.count, err, errlen);
    }
    free_tensors(&tensors);
    free(rt.directions);
    free(rt.token_topic);
    mr_tokenizer_free(tok);
    return rc;
}
