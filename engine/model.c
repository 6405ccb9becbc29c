/*
 * Loading a model folder: config, tokenizer, chat template and every
 * weight the forward pass reads, each checked for name and shape before the
 * first step runs, so a broken checkpoint fails at load with the tensor's
 * name rather than as garbage or a crash mid-job.
 */
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ep.h"
#include "engine/model_internal.h"

typedef struct {
    mr_model *m;
    char *err;
    size_t errlen;
} loader;

int mr_engine_backend_status(const mr_backend *be, int status, char *err, size_t errlen)
{
    if (status == MR_KERNELS_OK)
        return MR_ENGINE_OK;
    snprintf(err, errlen, "backend \"%s\": %s", be->ops->name, mr_backend_error(be));
    return status == MR_KERNELS_ENOMEM   ? MR_ENGINE_ENOMEM
           : status == MR_KERNELS_EINVAL ? MR_ENGINE_EINVAL
                                         : MR_ENGINE_EIO;
}

/* t's values made on the backend into `to` (a synthetic tensor). */
static int fill_synthetic(mr_model *m, void *to, const mr_tensor *t, char *err, size_t errlen)
{
    size_t n = t->bytes / mr_tensor_type_size(t->type);
    return mr_engine_backend_status(
        m->be, m->be->ops->fill_uniform(m->be, to, t->type, n, t->seed, t->lo, t->hi), err,
        errlen);
}

/* A weight of synthetic values in a buffer the model owns. */
static int make_synthetic(mr_model *m, const mr_tensor *t, mr_weight *out, char *err,
                          size_t errlen)
{
    void **grown = realloc(m->synthetic, (m->n_synthetic + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory for synthetic weights");
        return MR_ENGINE_ENOMEM;
    }
    m->synthetic = grown;
    void *buf = NULL;
    int rc = mr_engine_backend_status(m->be, m->be->ops->alloc(m->be, t->bytes, &buf), err,
                                      errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    m->synthetic[m->n_synthetic++] = buf;
    out->data = buf;
    return fill_synthetic(m, buf, t, err, errlen);
}

/* The bytes a backend takes for t: the mapping's, or FP8 rows packed into
 * *tmp (malloc'd; the caller frees it once the backend has them, or gives
 * it to mr_model_keep_host when the backend maps it). */
static const void *host_bytes(const mr_tensor *t, void **tmp)
{
    *tmp = NULL;
    if (!mr_tensor_packed(t))
        return t->data;
    if ((*tmp = malloc(t->bytes)))
        mr_tensor_pack(t, *tmp);
    return *tmp;
}

int mr_model_keep_host(mr_model *m, void *host)
{
    void **grown = realloc(m->host_weights, (m->n_host_weights + 1) * sizeof *grown);
    if (!grown) {
        free(host);
        return MR_ENGINE_ENOMEM;
    }
    m->host_weights = grown;
    m->host_weights[m->n_host_weights++] = host;
    return MR_ENGINE_OK;
}

/* A synthetic tensor's values, made on the backend as make_synthetic
 * makes them and brought to the host. */
static void *synthetic_on_host(mr_model *m, const mr_tensor *t, char *err, size_t errlen)
{
    void *buf = NULL, *host = malloc(t->bytes);
    int rc = host ? mr_engine_backend_status(m->be, m->be->ops->alloc(m->be, t->bytes, &buf),
                                             err, errlen)
                  : MR_ENGINE_ENOMEM;
    if (rc == MR_ENGINE_OK)
        rc = fill_synthetic(m, buf, t, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = mr_engine_backend_status(m->be, m->be->ops->download(m->be, host, buf, t->bytes),
                                      err, errlen);
    if (buf)
        m->be->ops->free(m->be, buf);
    if (rc != MR_ENGINE_OK || !host) {
        if (!host)
            snprintf(err, errlen, "out of memory for a synthetic tensor of %zu bytes", t->bytes);
        free(host);
        return NULL;
    }
    return host;
}

const void *mr_model_tensor_host(mr_model *m, const mr_tensor *t, void **owned, char *err,
                                 size_t errlen)
{
    if (!t->data)
        return *owned = synthetic_on_host(m, t, err, errlen);
    const void *bytes = host_bytes(t, owned);
    if (!bytes)
        snprintf(err, errlen, "out of memory packing a tensor of %zu bytes", t->bytes);
    return bytes;
}

int mr_model_map_host(mr_model *m, mr_weight *w, void *host, size_t bytes, mr_tensor_type type,
                      char *err, size_t errlen)
{
    int rc = mr_engine_backend_status(m->be, m->be->ops->map_weights(m->be, host, bytes, &w->data),
                                      err, errlen);
    w->type = type;
    w->bytes = bytes;
    if (mr_model_keep_host(m, host) != MR_ENGINE_OK && rc == MR_ENGINE_OK) {
        snprintf(err, errlen, "out of memory keeping weights");
        rc = MR_ENGINE_ENOMEM;
    }
    return rc;
}

int mr_model_map_tensor(mr_model *m, mr_weight *out, const char *name, int ndim, int64_t d0,
                        int64_t d1, char *err, size_t errlen)
{
    int64_t shape[2] = {d0, d1};
    mr_tensor t;
    int rc = mr_weights_get(m->weights, name, ndim, shape, &t, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    mr_backend *be = m->be;
    out->type = t.type;
    out->bytes = t.bytes;
    if (!t.data)
        return make_synthetic(m, &t, out, err, errlen);
    void *tmp;
    mr_tensor_fault_in(&t);
    const void *bytes = host_bytes(&t, &tmp);
    if (!bytes) {
        snprintf(err, errlen, "out of memory packing tensor %s", name);
        return MR_ENGINE_ENOMEM;
    }
    rc = mr_engine_backend_status(m->be, be->ops->map_weights(be, bytes, t.bytes, &out->data),
                                  err, errlen);
    if (rc == MR_ENGINE_OK && out->data != t.data) /* packed, or the backend's own copy */
        mr_tensor_drop_pages(&t);
    if (tmp && mr_model_keep_host(m, tmp) != MR_ENGINE_OK) {
        snprintf(err, errlen, "out of memory keeping tensor %s", name);
        return MR_ENGINE_ENOMEM;
    }
    if (rc != MR_ENGINE_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "%s: cannot map tensor %s (%zu bytes): %s", t.file, name, t.bytes,
                 why);
    }
    return rc;
}

/* Fetch `name` (printf-style) with the given shape, mapped for the backend. */
static int load_weight(loader *ld, mr_weight *out, int ndim, int64_t d0, int64_t d1,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int load_weight(loader *ld, mr_weight *out, int ndim, int64_t d0, int64_t d1,
                       const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return mr_model_map_tensor(ld->m, out, name, ndim, d0, d1, ld->err, ld->errlen);
}

/* Where a family keeps a layer's routed experts: the block's name, and
 * each expert's gate, up and down projections (Mixtral's w1, w3, w2). */
static const char *moe_block_name(const mr_model_config *c)
{
    return c->family == MR_FAMILY_MIXTRAL ? "block_sparse_moe" : "mlp";
}

static const char *const *expert_parts(const mr_model_config *c)
{
    static const char *const qwen[3] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const mixtral[3] = {"w1", "w3", "w2"};
    return c->family == MR_FAMILY_MIXTRAL ? mixtral : qwen;
}

/* The three weights of expert `e` of layer `layer`, checked for shape. */
static int expert_tensors(const mr_model_config *c, const mr_weights *w, int layer, int e,
                          mr_tensor t[3], char *err, size_t errlen)
{
    int64_t hidden = c->hidden_size, inter = c->moe_intermediate_size;
    const char *const *parts = expert_parts(c);
    for (int i = 0; i < 3; i++) {
        char name[256];
        int64_t shape[2] = {i < 2 ? inter : hidden, i < 2 ? hidden : inter};
        snprintf(name, sizeof name, "model.layers.%d.%s.experts.%d.%s.weight", layer,
                 moe_block_name(c), e, parts[i]);
        int rc = mr_weights_get(w, name, 2, shape, &t[i], err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
    }
    if (t[1].type != t[0].type || t[2].type != t[0].type) {
        snprintf(err, errlen, "model.layers.%d.%s.experts.%d: gate, up and down must share "
                 "one dtype", layer, moe_block_name(c), e);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

/* Checks that expert e fits the slots of layer L (one dtype per layer). */
static int expert_fits_slot(const mr_layer *L, int layer, int e, const mr_tensor t[3],
                            char *err, size_t errlen)
{
    if (t[0].type == L->expert_type)
        return MR_ENGINE_OK;
    snprintf(err, errlen, "layer %d, expert %d: experts of one layer must share one dtype",
             layer, e);
    return MR_ENGINE_EINVAL;
}

/* Points slot s at buffer `buf` (gate, up, down back to back). */
static void bind_slot(mr_layer *L, int s, unsigned char *buf)
{
    L->expert_gate[s] = buf;
    L->expert_up[s] = buf + L->expert_tensor_bytes;
    L->expert_down[s] = buf + 2 * L->expert_tensor_bytes;
}

static int upload_expert(mr_model *m, const mr_layer *L, const mr_tensor t[3],
                         unsigned char *buf, char *err, size_t errlen)
{
    if (!t[0].data) {
        int rc = MR_ENGINE_OK;
        for (int i = 0; rc == MR_ENGINE_OK && i < 3; i++)
            rc = fill_synthetic(m, buf + (size_t)i * L->expert_tensor_bytes, &t[i], err, errlen);
        return rc;
    }
    int rc = MR_KERNELS_OK;
    for (int i = 0; rc == MR_KERNELS_OK && i < 3; i++) {
        void *tmp;
        mr_tensor_fault_in(&t[i]);
        const void *bytes = host_bytes(&t[i], &tmp);
        if (!bytes) {
            snprintf(err, errlen, "out of memory packing an expert's weights");
            return MR_ENGINE_ENOMEM;
        }
        rc = m->be->ops->upload(m->be, buf + (size_t)i * L->expert_tensor_bytes, bytes,
                                t[i].bytes);
        free(tmp);
        mr_tensor_drop_pages(&t[i]);
    }
    return mr_engine_backend_status(m->be, rc, err, errlen);
}

/* Only the experts of this rank's slots are loaded, each into a buffer the
 * model owns rather than a view of the file, so that EPLB can later load
 * another expert into a slot (mr_model_set_placement). */
static int load_experts(loader *ld, mr_layer *L, int i)
{
    mr_model *m = ld->m;
    const mr_model_config *c = &m->cfg;
    int rc = load_weight(ld, &L->router, 2, c->num_experts, c->hidden_size,
                         "model.layers.%d.%s.gate.weight", i, moe_block_name(c));
    size_t slots = (size_t)m->slots_per_rank;
    L->expert_gate = calloc(slots, sizeof(void *));
    L->expert_up = calloc(slots, sizeof(void *));
    L->expert_down = calloc(slots, sizeof(void *));
    if (!L->expert_gate || !L->expert_up || !L->expert_down) {
        snprintf(ld->err, ld->errlen, "out of memory for the experts of layer %d", i);
        return MR_ENGINE_ENOMEM;
    }
    const int32_t *phy2log = m->placement.phy2log + (size_t)L->moe_index * m->placement.n_physical +
                             (size_t)m->rank * slots;
    mr_tensor t[3];
    if (rc == MR_ENGINE_OK)
        rc = expert_tensors(&m->cfg, m->weights, i, phy2log[0], t, ld->err, ld->errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    L->expert_type = t[0].type;
    /* gate and up are [inter][hidden], down [hidden][inter]: the same bytes
     * but for FP8 rows padded to whole blocks */
    for (int k = 0; k < 3; k++)
        if (t[k].bytes > L->expert_tensor_bytes)
            L->expert_tensor_bytes = t[k].bytes;
    rc = mr_engine_backend_status(
        m->be, m->be->ops->alloc(m->be, slots * 3 * L->expert_tensor_bytes, &L->expert_store),
        ld->err, ld->errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    for (size_t s = 0; s < slots; s++)
        bind_slot(L, (int)s, (unsigned char *)L->expert_store + s * 3 * L->expert_tensor_bytes);
    /* Where uploads are plain copies, the backend's threads share the slots
     * (a thread's first error wins; the others stop at their next slot). */
    int threads = m->be->ops->host_memory && m->be->threads > 1 ? m->be->threads : 1;
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (size_t s = 0; s < slots; s++) {
        int stop;
#pragma omp atomic read
        stop = failed;
        if (stop)
            continue;
        mr_tensor ts[3];
        char why[512];
        int src = expert_tensors(&m->cfg, m->weights, i, phy2log[s], ts, why, sizeof why);
        if (src == MR_ENGINE_OK)
            src = expert_fits_slot(L, i, phy2log[s], ts, why, sizeof why);
        if (src == MR_ENGINE_OK)
            src = upload_expert(m, L, ts, (unsigned char *)L->expert_gate[s], why, sizeof why);
        if (src != MR_ENGINE_OK) {
#pragma omp critical(mr_load_experts_error)
            if (!failed) {
                failed = 1;
                rc = src;
                snprintf(ld->err, ld->errlen, "%s", why);
            }
        }
    }
    return rc;
}

static int load_dense_mlp(loader *ld, mr_layer *L, int i)
{
    const mr_model_config *c = &ld->m->cfg;
    int64_t hidden = c->hidden_size, inter = c->intermediate_size;
    int rc = load_weight(ld, &L->dense_gate, 2, inter, hidden, "model.layers.%d.mlp.gate_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->dense_up, 2, inter, hidden, "model.layers.%d.mlp.up_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->dense_down, 2, hidden, inter, "model.layers.%d.mlp.down_proj.weight", i);
    if (rc == MR_ENGINE_OK && (L->dense_up.type != L->dense_gate.type ||
                               L->dense_down.type != L->dense_gate.type)) {
        snprintf(ld->err, ld->errlen, "model.layers.%d.mlp: gate, up and down must share one dtype", i);
        return MR_ENGINE_EINVAL;
    }
    return rc;
}

/* DeepSeek-V3's MoE layers beside the routed experts: the router's
 * e_score_correction_bias (f32, as the checkpoints keep it) and the
 * shared experts, one SwiGLU MLP of n_shared_experts x
 * moe_intermediate_size that every token runs. */
static int load_deepseek_moe(loader *ld, mr_layer *L, int i)
{
    const mr_model_config *c = &ld->m->cfg;
    int64_t hidden = c->hidden_size,
            inter = (int64_t)c->moe_intermediate_size * c->mla.n_shared_experts;
    int rc = load_weight(ld, &L->router_bias, 1, c->num_experts, 0,
                         "model.layers.%d.mlp.gate.e_score_correction_bias", i);
    if (rc == MR_ENGINE_OK && L->router_bias.type != MR_TENSOR_F32) {
        snprintf(ld->err, ld->errlen, "model.layers.%d.mlp.gate.e_score_correction_bias is %s; "
                 "moerun reads it as F32, as DeepSeek-V3's checkpoints store it", i,
                 mr_tensor_type_name(L->router_bias.type));
        return MR_ENGINE_EINVAL;
    }
    if (rc != MR_ENGINE_OK || inter == 0)
        return rc;
    rc = load_weight(ld, &L->shared_gate, 2, inter, hidden,
                     "model.layers.%d.mlp.shared_experts.gate_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->shared_up, 2, inter, hidden,
                         "model.layers.%d.mlp.shared_experts.up_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->shared_down, 2, hidden, inter,
                         "model.layers.%d.mlp.shared_experts.down_proj.weight", i);
    if (rc == MR_ENGINE_OK && (L->shared_up.type != L->shared_gate.type ||
                               L->shared_down.type != L->shared_gate.type)) {
        snprintf(ld->err, ld->errlen, "model.layers.%d.mlp.shared_experts: gate, up and down "
                 "must share one dtype", i);
        return MR_ENGINE_EINVAL;
    }
    return rc;
}

static int load_layer(loader *ld, mr_layer *L, int i)
{
    const mr_model_config *c = &ld->m->cfg;
    int64_t hidden = c->hidden_size, hd = c->head_dim;
    int64_t q_dim = (int64_t)c->num_attention_heads * hd;
    int64_t kv_dim = (int64_t)c->num_key_value_heads * hd;
    int rc = load_weight(ld, &L->input_norm, 1, hidden, 0, "model.layers.%d.input_layernorm.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->post_attention_norm, 1, hidden, 0, "model.layers.%d.post_attention_layernorm.weight", i);
    if (rc == MR_ENGINE_OK && c->family == MR_FAMILY_DEEPSEEK_V3) {
        rc = mr_mla_load_layer(ld->m, L, i, ld->err, ld->errlen);
        L->moe = mr_config_layer_is_moe(c, i);
        if (rc == MR_ENGINE_OK)
            rc = L->moe ? load_experts(ld, L, i) : load_dense_mlp(ld, L, i);
        return rc == MR_ENGINE_OK && L->moe ? load_deepseek_moe(ld, L, i) : rc;
    }
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->q_proj, 2, q_dim, hidden, "model.layers.%d.self_attn.q_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->k_proj, 2, kv_dim, hidden, "model.layers.%d.self_attn.k_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->v_proj, 2, kv_dim, hidden, "model.layers.%d.self_attn.v_proj.weight", i);
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &L->o_proj, 2, hidden, q_dim, "model.layers.%d.self_attn.o_proj.weight", i);
    if (rc == MR_ENGINE_OK && c->qk_norm)
        rc = load_weight(ld, &L->q_norm, 1, hd, 0, "model.layers.%d.self_attn.q_norm.weight", i);
    if (rc == MR_ENGINE_OK && c->qk_norm)
        rc = load_weight(ld, &L->k_norm, 1, hd, 0, "model.layers.%d.self_attn.k_norm.weight", i);
    if (rc != MR_ENGINE_OK)
        return rc;
    L->moe = mr_config_layer_is_moe(c, i);
    return L->moe ? load_experts(ld, L, i) : load_dense_mlp(ld, L, i);
}

static int load_weights(loader *ld)
{
    mr_model *m = ld->m;
    const mr_model_config *c = &m->cfg;
    int64_t vocab = c->vocab_size, hidden = c->hidden_size;
    int rc = load_weight(ld, &m->embed, 2, vocab, hidden, "model.embed_tokens.weight");
    if (rc == MR_ENGINE_OK)
        rc = load_weight(ld, &m->final_norm, 1, hidden, 0, "model.norm.weight");
    if (rc == MR_ENGINE_OK) {
        if (c->tie_word_embeddings)
            m->lm_head = m->embed;
        else
            rc = load_weight(ld, &m->lm_head, 2, vocab, hidden, "lm_head.weight");
    }
    if (rc != MR_ENGINE_OK)
        return rc;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        snprintf(ld->err, ld->errlen, "out of memory for %d layers", c->num_hidden_layers);
        return MR_ENGINE_ENOMEM;
    }
    int moe_index = 0;
    for (int i = 0; rc == MR_ENGINE_OK && i < c->num_hidden_layers; i++) {
        m->layers[i].moe_index = moe_index;
        moe_index += mr_config_layer_is_moe(c, i);
        rc = load_layer(ld, &m->layers[i], i);
    }
    return rc;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void free_route_maps(mr_model *m, int32_t *log2phy, int32_t *logcnt)
{
    if (log2phy)
        m->be->ops->free(m->be, log2phy);
    if (logcnt)
        m->be->ops->free(m->be, logcnt);
}

/* p's log2phy and logcnt copied into new backend buffers for the route op. */
static int upload_route_maps(mr_model *m, const mr_eplb_placement *p, int32_t **log2phy,
                             int32_t **logcnt, char *err, size_t errlen)
{
    mr_backend *be = m->be;
    size_t cnt = (size_t)p->n_layers * (size_t)p->n_logical * sizeof(int32_t);
    size_t phy = cnt * (size_t)p->max_replicas;
    *log2phy = *logcnt = NULL;
    int rc = be->ops->alloc(be, phy, (void **)log2phy);
    if (rc == MR_KERNELS_OK)
        rc = be->ops->alloc(be, cnt, (void **)logcnt);
    if (rc == MR_KERNELS_OK)
        rc = be->ops->upload(be, *log2phy, p->log2phy, phy);
    if (rc == MR_KERNELS_OK)
        rc = be->ops->upload(be, *logcnt, p->logcnt, cnt);
    if (rc != MR_KERNELS_OK) {
        free_route_maps(m, *log2phy, *logcnt);
        *log2phy = *logcnt = NULL;
    }
    return mr_engine_backend_status(m->be, rc, err, errlen);
}

/* The placement this rank loads by: the caller's, checked against the
 * model and the world, or contiguous over the world. */
static int place_experts(mr_model *m, const mr_model_options *options, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    m->comm = options ? options->comm : NULL;
    m->rank = m->comm ? mr_comm_rank(m->comm) : 0;
    m->dispatch = options ? options->dispatch : MR_EP_HIGH_THROUGHPUT;
    m->ll_capacity = options && options->ll_capacity > 0 ? options->ll_capacity : 128;
    int ranks = m->comm ? mr_comm_size(m->comm) : 1, layers = mr_config_moe_layers(c);
    if (layers == 0)
        return MR_ENGINE_OK;
    const mr_eplb_placement *p = options ? options->placement : NULL;
    int rc;
    if (!p) {
        rc = mr_eplb_placement_contiguous(&m->placement, layers, c->num_experts, ranks, err,
                                          errlen);
    } else if (p->n_layers != layers || p->n_logical != c->num_experts || p->n_ranks != ranks) {
        snprintf(err, errlen, "the expert placement is for %d layers of %d experts on %d ranks, "
                 "but the model has %d MoE layers of %d experts and the job %d ranks",
                 p->n_layers, p->n_logical, p->n_ranks, layers, c->num_experts, ranks);
        return MR_ENGINE_EINVAL;
    } else {
        rc = mr_eplb_placement_from_phy2log(&m->placement, layers, p->n_logical, p->n_physical,
                                            ranks, p->phy2log, err, errlen);
    }
    if (rc != MR_EPLB_OK)
        return rc == MR_EPLB_ENOMEM ? MR_ENGINE_ENOMEM : MR_ENGINE_EINVAL;
    m->slots_per_rank = m->placement.n_physical / ranks;
    return upload_route_maps(m, &m->placement, &m->route_log2phy, &m->route_logcnt, err,
                             errlen);
}

/* YaRN's magnitude correction for a context stretched `factor` times. */
static double yarn_mscale(double factor, double mscale)
{
    return factor <= 1 ? 1.0 : 0.1 * mscale * log(factor) + 1.0;
}

float mr_mla_softmax_scale(const mr_model_config *c)
{
    const mr_mla_config *m = &c->mla;
    double scale = 1.0 / sqrt((double)(m->qk_nope_head_dim + m->qk_rope_head_dim));
    if (m->yarn_factor > 0 && m->yarn_mscale_all_dim > 0) {
        double k = yarn_mscale(m->yarn_factor, m->yarn_mscale_all_dim);
        scale *= k * k;
    }
    return (float)scale;
}

/* DeepSeek-V3's YaRN table (transformers' _compute_yarn_parameters): the
 * pairs that turn more than beta_fast times over the original context
 * keep their frequency, those under beta_slow turns are divided by the
 * factor, a linear ramp blends between; cos and sin are multiplied by the
 * attention factor (mscale over mscale_all_dim when both are given). */
static void yarn_rope_table(float *out, const mr_model_config *c, int dim)
{
    const mr_mla_config *m = &c->mla;
    int half = dim / 2;
    double theta = c->rope_theta, factor = m->yarn_factor;
    double original = m->yarn_original_max_positions;
    double low = dim * log(original / (m->yarn_beta_fast * 2 * M_PI)) / (2 * log(theta));
    double high = dim * log(original / (m->yarn_beta_slow * 2 * M_PI)) / (2 * log(theta));
    if (m->yarn_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    low = low > 0 ? low : 0;
    high = high < dim - 1 ? high : dim - 1;
    if (low == high)
        high += 0.001;
    double attention = m->yarn_attention_factor;
    if (attention <= 0)
        attention = m->yarn_mscale > 0 && m->yarn_mscale_all_dim > 0
                        ? yarn_mscale(factor, m->yarn_mscale) /
                              yarn_mscale(factor, m->yarn_mscale_all_dim)
                        : yarn_mscale(factor, 1.0);
    for (int i = 0; i < half; i++) {
        double base = pow(theta, -(2.0 * i) / dim);
        double ramp = (i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double inv_freq = base * (1.0 - ramp) + base / factor * ramp;
        for (int pos = 0; pos < c->max_position_embeddings; pos++) {
            double angle = pos * inv_freq;
            float *at = out + ((size_t)pos * (size_t)half + (size_t)i) * 2;
            at[0] = (float)(cos(angle) * attention);
            at[1] = (float)(sin(angle) * attention);
        }
    }
}

/* RoPE's cos and sin for every position the model may see, computed once
 * on the host and uploaded, so every backend rotates by the same bits. */
static int upload_rope_table(mr_model *m, char *err, size_t errlen)
{
    const mr_model_config *c = &m->cfg;
    /* MLA rotates only the rope part of its heads */
    int dim = c->family == MR_FAMILY_DEEPSEEK_V3 ? c->mla.qk_rope_head_dim : c->head_dim;
    size_t bytes = (size_t)c->max_position_embeddings * (size_t)dim * sizeof(float);
    float *table = malloc(bytes);
    if (!table) {
        snprintf(err, errlen, "out of memory for the RoPE table of %d positions",
                 c->max_position_embeddings);
        return MR_ENGINE_ENOMEM;
    }
    if (c->family == MR_FAMILY_DEEPSEEK_V3 && c->mla.yarn_factor > 0)
        yarn_rope_table(table, c, dim);
    else
        mr_rope_table(table, c->max_position_embeddings, dim, c->rope_theta);
    mr_backend *be = m->be;
    int rc = be->ops->alloc(be, bytes, (void **)&m->rope_cos_sin);
    if (rc == MR_KERNELS_OK)
        rc = be->ops->upload(be, m->rope_cos_sin, table, bytes);
    free(table);
    return mr_engine_backend_status(be, rc, err, errlen);
}

int mr_weights_expert_bytes(const mr_weights *w, const mr_model_config *cfg, uint64_t *bytes,
                            char *err, size_t errlen)
{
    *bytes = 0;
    for (int i = 0; i < cfg->num_hidden_layers; i++) {
        mr_tensor t[3];
        if (!mr_config_layer_is_moe(cfg, i))
            continue;
        int rc = expert_tensors(cfg, w, i, 0, t, err, errlen);
        if (rc != MR_ENGINE_OK)
            return rc;
        *bytes += t[0].bytes + t[1].bytes + t[2].bytes;
    }
    return MR_ENGINE_OK;
}

const char *mr_model_backend_name(const mr_model *m)
{
    return m->be->ops->name;
}

const char *mr_model_backend_note(const mr_model *m)
{
    return m->backend_note;
}

size_t mr_model_attention_bytes(const mr_model *m, int layer)
{
    if (layer < 0 || layer >= m->cfg.num_hidden_layers)
        return 0;
    const mr_layer *L = &m->layers[layer];
    const mr_weight *parts[] = {&L->q_proj, &L->k_proj, &L->v_proj, &L->o_proj, &L->q_norm,
                                &L->k_norm, &L->q_a,    &L->q_a_norm, &L->q_b, &L->kv_a,
                                &L->kv_norm, &L->kv_b,  &L->uk_t};
    size_t bytes = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        bytes += parts[i]->data ? parts[i]->bytes : 0;
    return bytes;
}

size_t mr_model_expert_bytes(const mr_model *m)
{
    for (int i = 0; i < m->cfg.num_hidden_layers; i++)
        if (m->layers[i].moe)
            return 3 * m->layers[i].expert_tensor_bytes;
    return 0;
}

const mr_eplb_placement *mr_model_placement(const mr_model *m)
{
    return &m->placement;
}

/* Which buffer each of this rank's slots of one layer uses under the new
 * placement: the buffer of a slot that already held the same expert where
 * there is one (no copy), else a freed one that must be loaded. */
typedef struct {
    unsigned char **buffer; /* [slots] */
    bool *load;             /* [slots]: the expert must come from the file */
    bool *claimed;          /* [slots] scratch: old slot's buffer taken */
} slot_plan;

static void plan_layer_slots(const mr_layer *L, const int32_t *old, const int32_t *new,
                             int slots, slot_plan *plan)
{
    for (int s = 0; s < slots; s++) {
        plan->claimed[s] = false;
        plan->buffer[s] = NULL;
    }
    for (int s = 0; s < slots; s++)
        for (int t = 0; t < slots; t++)
            if (!plan->claimed[t] && old[t] == new[s]) {
                plan->claimed[t] = true;
                plan->buffer[s] = (unsigned char *)L->expert_gate[t];
                break;
            }
    int free_slot = 0;
    for (int s = 0; s < slots; s++) {
        plan->load[s] = plan->buffer[s] == NULL;
        if (!plan->load[s])
            continue;
        while (plan->claimed[free_slot])
            free_slot++;
        plan->claimed[free_slot] = true;
        plan->buffer[s] = (unsigned char *)L->expert_gate[free_slot];
    }
}

/* Every expert this rank must newly load, checked before any slot is
 * touched, so a failure leaves the model as it was. */
static int check_new_experts(const mr_model *m, const mr_eplb_placement *p, char *err,
                             size_t errlen)
{
    int slots = m->slots_per_rank;
    for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
        const mr_layer *L = &m->layers[i];
        if (!L->moe)
            continue;
        const int32_t *new = p->phy2log + (size_t)L->moe_index * p->n_physical +
                             (size_t)m->rank * slots;
        for (int s = 0; s < slots; s++) {
            mr_tensor t[3];
            int rc = expert_tensors(&m->cfg, m->weights, i, new[s], t, err, errlen);
            if (rc == MR_ENGINE_OK)
                rc = expert_fits_slot(L, i, new[s], t, err, errlen);
            if (rc != MR_ENGINE_OK)
                return rc;
        }
    }
    return MR_ENGINE_OK;
}

int mr_model_set_placement(mr_model *m, const mr_eplb_placement *p, int *loaded, char *err,
                           size_t errlen)
{
    const mr_eplb_placement *cur = &m->placement;
    *loaded = 0;
    if (p->n_layers != cur->n_layers || p->n_logical != cur->n_logical ||
        p->n_physical != cur->n_physical || p->n_ranks != cur->n_ranks) {
        snprintf(err, errlen, "the new expert placement has %d layers x %d experts in %d slots "
                 "on %d ranks; the model runs %d x %d in %d slots on %d ranks",
                 p->n_layers, p->n_logical, p->n_physical, p->n_ranks, cur->n_layers,
                 cur->n_logical, cur->n_physical, cur->n_ranks);
        return MR_ENGINE_EINVAL;
    }
    mr_eplb_placement next;
    int rc = mr_eplb_placement_from_phy2log(&next, p->n_layers, p->n_logical, p->n_physical,
                                            p->n_ranks, p->phy2log, err, errlen);
    if (rc != MR_EPLB_OK)
        return rc == MR_EPLB_ENOMEM ? MR_ENGINE_ENOMEM : MR_ENGINE_EINVAL;
    int32_t *log2phy = NULL, *logcnt = NULL;
    if ((rc = check_new_experts(m, &next, err, errlen)) != MR_ENGINE_OK ||
        (rc = upload_route_maps(m, &next, &log2phy, &logcnt, err, errlen)) != MR_ENGINE_OK) {
        mr_eplb_placement_free(&next);
        return rc;
    }
    int slots = m->slots_per_rank;
    slot_plan plan = {malloc((size_t)slots * sizeof *plan.buffer),
                      malloc((size_t)slots * sizeof *plan.load),
                      malloc((size_t)slots * sizeof *plan.claimed)};
    if (!plan.buffer || !plan.load || !plan.claimed) {
        snprintf(err, errlen, "out of memory moving experts");
        rc = MR_ENGINE_ENOMEM;
    }
    for (int i = 0; rc == MR_ENGINE_OK && i < m->cfg.num_hidden_layers; i++) {
        mr_layer *L = &m->layers[i];
        if (!L->moe)
            continue;
        size_t row = (size_t)L->moe_index * p->n_physical + (size_t)m->rank * slots;
        plan_layer_slots(L, cur->phy2log + row, next.phy2log + row, slots, &plan);
        for (int s = 0; rc == MR_ENGINE_OK && s < slots; s++) {
            bind_slot(L, s, plan.buffer[s]);
            if (!plan.load[s])
                continue;
            mr_tensor t[3];
            expert_tensors(&m->cfg, m->weights, i, next.phy2log[row + (size_t)s], t, err, errlen);
            rc = upload_expert(m, L, t, plan.buffer[s], err, errlen);
            ++*loaded;
        }
    }
    free(plan.buffer);
    free(plan.load);
    free(plan.claimed);
    if (rc != MR_ENGINE_OK) {
        free_route_maps(m, log2phy, logcnt);
        mr_eplb_placement_free(&next);
        return rc;
    }
    free_route_maps(m, m->route_log2phy, m->route_logcnt);
    m->route_log2phy = log2phy;
    m->route_logcnt = logcnt;
    mr_eplb_placement_free(&m->placement);
    m->placement = next;
    return MR_ENGINE_OK;
}

size_t mr_model_exchange_bytes(const mr_model_config *cfg, int slots_per_rank,
                               int max_batch_tokens)
{
    mr_ep_shape shape = {.hidden = cfg->hidden_size,
                         .top_k = cfg->num_experts_per_tok,
                         .slots_per_rank = slots_per_rank,
                         .max_tokens = max_batch_tokens};
    return mr_ep_exchange_bytes(&shape);
}

int mr_model_load(const char *dir, const mr_model_options *options, mr_model **out,
                  char *err, size_t errlen)
{
    *out = NULL;
    mr_model *m = calloc(1, sizeof *m);
    char *config = join(dir, "config.json");
    m = m && config ? m : NULL;
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        free(config);
        snprintf(err, errlen, "out of memory loading %s", dir);
        return MR_ENGINE_ENOMEM;
    }
    loader ld = {m, err, errlen};
    int rc = mr_config_load(config, &m->cfg, err, errlen);
    free(config);
    if (rc == MR_ENGINE_OK)
        rc = mr_tokenizer_load(dir, &m->tokenizer, err, errlen);
    if (rc == MR_ENGINE_OK && mr_tokenizer_vocab_size(m->tokenizer) > m->cfg.vocab_size) {
        snprintf(err, errlen, "%s: tokenizer.json has %d tokens but config.json's vocab_size is %d",
                 dir, mr_tokenizer_vocab_size(m->tokenizer), m->cfg.vocab_size);
        rc = MR_ENGINE_EINVAL;
    }
    if (rc == MR_ENGINE_OK)
        rc = mr_chat_template_load(dir, &m->chat, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = options && options->synthetic_seed
                 ? mr_weights_synthetic(MR_TENSOR_BF16, options->synthetic_seed, &m->weights, err,
                                        errlen)
                 : mr_weights_open(dir, &m->weights, err, errlen);
    if (rc == MR_ENGINE_OK &&
        mr_backend_create(options && options->backend ? options->backend : "cpu",
                          options ? options->threads : 0, &m->be, m->backend_note,
                          sizeof m->backend_note) != 0) {
        snprintf(err, errlen, "%s", m->backend_note);
        rc = MR_ENGINE_EINVAL;
    }
    if (rc == MR_ENGINE_OK)
        rc = upload_rope_table(m, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = place_experts(m, options, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = load_weights(&ld);
    if (rc != MR_ENGINE_OK) {
        mr_model_free(m);
        return rc;
    }
    *out = m;
    return MR_ENGINE_OK;
}

void mr_model_free(mr_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
            if (m->layers[i].expert_store)
                m->be->ops->free(m->be, m->layers[i].expert_store);
            free(m->layers[i].expert_gate);
            free(m->layers[i].expert_up);
            free(m->layers[i].expert_down);
        }
        free(m->layers);
    }
    if (m->be)
        free_route_maps(m, m->route_log2phy, m->route_logcnt);
    if (m->rope_cos_sin)
        m->be->ops->free(m->be, m->rope_cos_sin);
    for (size_t i = 0; i < m->n_synthetic; i++)
        m->be->ops->free(m->be, m->synthetic[i]);
    free(m->synthetic);
    mr_eplb_placement_free(&m->placement);
    mr_backend_free(m->be);
    for (size_t i = 0; i < m->n_host_weights; i++)
        free(m->host_weights[i]);
    free(m->host_weights);
    mr_weights_close(m->weights);
    mr_tokenizer_free(m->tokenizer);
    mr_chat_template_free(m->chat);
    free(m->dir);
    free(m);
}

const mr_model_config *mr_model_config_get(const mr_model *m)
{
    return &m->cfg;
}

const mr_tokenizer *mr_model_tokenizer(const mr_model *m)
{
    return m->tokenizer;
}

int mr_model_logits(mr_model *m, const int32_t *ids, int n, float *logits, char *err,
                    size_t errlen)
{
    enum { block = 16 };
    int n_blocks = (n + block - 1) / block;
    int32_t *buf = malloc((size_t)(5 * n + n_blocks) * sizeof(int32_t));
    if (!buf) {
        snprintf(err, errlen, "out of memory for a sequence of %d tokens", n);
        return MR_ENGINE_ENOMEM;
    }
    int32_t *pos = buf, *seq = buf + n, *slot = buf + 2 * n, *rows = buf + 3 * n;
    int32_t *table = buf + 5 * n;
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        seq[i] = 0;
        slot[i] = i;
        rows[i] = i;
    }
    for (int b = 0; b < n_blocks; b++)
        table[b] = b;
    mr_kv_cache kv = {0};
    mr_activations *act = NULL;
    int rc = mr_kv_cache_init(&kv, m, MR_TENSOR_F32, block, n_blocks, err, errlen);
    if (rc == MR_ENGINE_OK)
        rc = mr_activations_new(m, n, n, &act, err, errlen);
    if (rc == MR_ENGINE_OK) {
        mr_step step = {.rows = n, .tokens = ids, .pos = pos, .seq = seq, .slot = slot,
                        .block_table = table, .max_blocks = n_blocks, .logit_rows = rows,
                        .n_logits = n};
        rc = mr_forward(m, &kv, act, &step, logits, err, errlen);
    }
    mr_activations_free(act, m);
    if (kv.free_ids)
        mr_kv_cache_free(&kv, m);
    free(buf);
    return rc;
}
