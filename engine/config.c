/*
 * config.json of a Hugging Face Qwen3-MoE or Mixtral checkpoint.  The
 * fields that fix tensor shapes are required: a guessed default would only
 * surface later as a wrong shape on some tensor, far from its cause.  The
 * others take the defaults of transformers' Qwen3MoeConfig or
 * MixtralConfig.  Unknown keys are ignored, as real configs carry many the
 * engine has no use for.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "engine/weights_internal.h"

#define CONFIG_MAX_BYTES (16u << 20)

/* Each family's names and transformers' defaults for its optional fields. */
typedef struct {
    const char *architecture, *model_type;
    mr_model_family family;
    double rms_norm_eps, rope_theta;
    int max_positions;
} family_info;

static const family_info families[] = {
    {"Qwen3MoeForCausalLM", "qwen3_moe", MR_FAMILY_QWEN3_MOE, 1e-6, 10000.0, 32768},
    {"MixtralForCausalLM", "mixtral", MR_FAMILY_MIXTRAL, 1e-5, 1e6, 4096 * 32},
    {"DeepseekV3ForCausalLM", "deepseek_v3", MR_FAMILY_DEEPSEEK_V3, 1e-6, 10000.0, 4096},
};
#define N_FAMILIES (sizeof families / sizeof families[0])
#define DEFAULT_SPARSE_STEP 1

/* ---- reading a JSON file ---- */

static int read_whole(const char *path, size_t max_bytes, char **out, size_t *len, char *err,
                      size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return MR_ENGINE_EIO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return MR_ENGINE_EIO;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        snprintf(err, errlen, "%s: %lld bytes, more than the %zu a JSON file here may have",
                 path, (long long)st.st_size, max_bytes);
        fclose(f);
        return MR_ENGINE_EINVAL;
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    if (!text) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return MR_ENGINE_ENOMEM;
    }
    size_t got = fread(text, 1, size, f);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || got != size) {
        free(text);
        snprintf(err, errlen, "%s: read failed", path);
        return MR_ENGINE_EIO;
    }
    text[size] = '\0';
    *out = text;
    *len = size;
    return MR_ENGINE_OK;
}

int mr_json_file_load(const char *path, size_t max_bytes, cJSON **out, char *err,
                      size_t errlen)
{
    char *text;
    size_t len;
    int rc = read_whole(path, max_bytes, &text, &len, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        int line = 1;
        for (const char *p = text; end && p < end && p < text + len; p++)
            line += *p == '\n';
        snprintf(err, errlen, "%s:%d: not valid JSON", path, line);
        free(text);
        return MR_ENGINE_EINVAL;
    }
    free(text);
    *out = root;
    return MR_ENGINE_OK;
}

const char *mr_json_kind(const cJSON *item)
{
    if (cJSON_IsNumber(item))
        return "a number";
    if (cJSON_IsString(item))
        return "a string";
    if (cJSON_IsBool(item))
        return "a boolean";
    if (cJSON_IsArray(item))
        return "an array";
    if (cJSON_IsObject(item))
        return "an object";
    return "null";
}

/* ---- fields ---- */

typedef struct {
    const char *path;
    const cJSON *root;
    char *err;
    size_t errlen;
    bool failed;
} reader;

static void fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(reader *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = true;
    int n = snprintf(r->err, r->errlen, "%s: ", r->path);
    if (n < 0 || (size_t)n >= r->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* The value of `name`, or NULL when it is absent or null (both mean "use
 * the default" in Hugging Face configs). */
static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNull(item) ? NULL : item;
}

static bool is_whole(double v)
{
    return v >= (double)INT_MIN && v <= (double)INT_MAX && v == (double)(int)v;
}

/* An integer at least `min`; `name` is how messages call it. */
static int whole_value(reader *r, const cJSON *item, const char *name, int min)
{
    if (r->failed)
        return min;
    if (!cJSON_IsNumber(item)) {
        fail(r, "\"%s\" must be an integer, not %s", name, mr_json_kind(item));
        return min;
    }
    double v = item->valuedouble;
    if (!is_whole(v)) {
        fail(r, "\"%s\" (%g) is not an integer in range", name, v);
        return min;
    }
    if ((int)v < min) {
        fail(r, "\"%s\" (%d) must be at least %d", name, (int)v, min);
        return min;
    }
    return (int)v;
}

static int required_int(reader *r, const char *name, int min)
{
    const cJSON *item = field(r->root, name);
    if (!item) {
        fail(r, "required field \"%s\" is missing", name);
        return min;
    }
    return whole_value(r, item, name, min);
}

static int optional_int(reader *r, const char *name, int min, int fallback)
{
    const cJSON *item = field(r->root, name);
    return item ? whole_value(r, item, name, min) : fallback;
}

static double positive_value(reader *r, const cJSON *item, const char *name, double fallback)
{
    if (!item || r->failed)
        return fallback;
    if (!cJSON_IsNumber(item)) {
        fail(r, "\"%s\" must be a number, not %s", name, mr_json_kind(item));
        return fallback;
    }
    if (!(item->valuedouble > 0) || !isfinite(item->valuedouble)) {
        fail(r, "\"%s\" (%g) must be a positive number", name, item->valuedouble);
        return fallback;
    }
    return item->valuedouble;
}

static bool optional_bool(reader *r, const char *name, bool fallback)
{
    const cJSON *item = field(r->root, name);
    if (!item || r->failed)
        return fallback;
    if (!cJSON_IsBool(item)) {
        fail(r, "\"%s\" must be true or false, not %s", name, mr_json_kind(item));
        return fallback;
    }
    return cJSON_IsTrue(item);
}

/* bos/eos ids are an integer, a list of them (the first is the one the
 * config names) or null. */
static int token_id(reader *r, const char *name)
{
    const cJSON *item = field(r->root, name);
    if (cJSON_IsArray(item)) {
        item = cJSON_GetArrayItem(item, 0);
        if (cJSON_IsNull(item))
            return -1;
    }
    return item ? whole_value(r, item, name, 0) : -1;
}

/* rope_theta sits at the top level in the configs Qwen3 ships, and under
 * rope_parameters in the layout newer transformers writes. */
static double rope_theta(reader *r, double fallback)
{
    const cJSON *top = field(r->root, "rope_theta");
    if (top)
        return positive_value(r, top, "rope_theta", fallback);
    const cJSON *params = field(r->root, "rope_parameters");
    if (params && !cJSON_IsObject(params)) {
        fail(r, "\"rope_parameters\" must be an object, not %s", mr_json_kind(params));
        return fallback;
    }
    return positive_value(r, field(params, "rope_theta"), "rope_parameters.rope_theta",
                          fallback);
}

/* The family, from "architectures" (its first name) and "model_type";
 * either may be missing, not both, and they must agree. */
static const family_info *read_architecture(reader *r, mr_model_config *cfg)
{
    const cJSON *archs = field(r->root, "architectures");
    const cJSON *type = field(r->root, "model_type");
    char names[256] = "";
    for (size_t i = 0; i < N_FAMILIES; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s (%s)",
                 i ? ", " : "", families[i].architecture, families[i].model_type);
    const family_info *by_arch = NULL, *by_type = NULL;
    if (archs) {
        const cJSON *first = cJSON_GetArrayItem(archs, 0);
        if (!cJSON_IsArray(archs) || !cJSON_IsString(first)) {
            fail(r, "\"architectures\" must be a list of names, e.g. [\"%s\"]",
                 families[0].architecture);
            return &families[0];
        }
        for (size_t i = 0; i < N_FAMILIES; i++)
            if (!strcmp(first->valuestring, families[i].architecture))
                by_arch = &families[i];
        if (!by_arch) {
            fail(r, "architecture \"%.64s\" is not supported; moerun runs %s", first->valuestring,
                 names);
            return &families[0];
        }
    } else if (!type) {
        fail(r, "names no architecture (\"architectures\": [\"%s\"]); moerun runs %s",
             families[0].architecture, names);
        return &families[0];
    }
    if (type) {
        for (size_t i = 0; cJSON_IsString(type) && i < N_FAMILIES; i++)
            if (!strcmp(type->valuestring, families[i].model_type))
                by_type = &families[i];
        if (!by_type || (by_arch && by_arch != by_type)) {
            const family_info *want = by_arch ? by_arch : &families[0];
            fail(r, "\"model_type\" must be \"%s\" (architecture %s)", want->model_type,
                 want->architecture);
            return want;
        }
    }
    const family_info *f = by_arch ? by_arch : by_type;
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", f->architecture);
    cfg->family = f->family;
    return f;
}

static void read_mlp_only_layers(reader *r, mr_model_config *cfg)
{
    const cJSON *list = field(r->root, "mlp_only_layers");
    if (!list || r->failed)
        return;
    if (!cJSON_IsArray(list)) {
        fail(r, "\"mlp_only_layers\" must be a list of layer numbers, not %s",
             mr_json_kind(list));
        return;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, list) {
        int layer = whole_value(r, item, "mlp_only_layers", 0);
        if (r->failed)
            return;
        if (layer >= cfg->num_hidden_layers) {
            fail(r, "\"mlp_only_layers\" names layer %d, but \"num_hidden_layers\" is %d", layer,
                 cfg->num_hidden_layers);
            return;
        }
        cfg->mlp_only[layer] = true;
    }
}

/* The shapes derived from the fields must agree with each other. */
static void check_consistency(reader *r, const mr_model_config *cfg)
{
    if (r->failed)
        return;
    if (cfg->num_hidden_layers > MR_MAX_LAYERS)
        fail(r, "\"num_hidden_layers\" (%d) exceeds the %d layers moerun supports",
             cfg->num_hidden_layers, MR_MAX_LAYERS);
    else if (cfg->num_attention_heads % cfg->num_key_value_heads != 0)
        fail(r, "\"num_attention_heads\" (%d) is not a multiple of \"num_key_value_heads\" (%d)",
             cfg->num_attention_heads, cfg->num_key_value_heads);
    else if (cfg->num_experts_per_tok > cfg->num_experts)
        fail(r, "\"num_experts_per_tok\" (%d) exceeds \"num_experts\" (%d)",
             cfg->num_experts_per_tok, cfg->num_experts);
    else if ((long long)cfg->num_attention_heads * cfg->head_dim > INT_MAX)
        fail(r, "\"num_attention_heads\" x \"head_dim\" (%d x %d) is too large",
             cfg->num_attention_heads, cfg->head_dim);
}

static void read_head_dim(reader *r, mr_model_config *cfg)
{
    if (r->failed)
        return;
    if (field(r->root, "head_dim")) {
        cfg->head_dim = optional_int(r, "head_dim", 1, 0);
        return;
    }
    if (cfg->hidden_size % cfg->num_attention_heads != 0) {
        fail(r, "\"head_dim\" is missing and \"hidden_size\" (%d) is not a multiple of "
                "\"num_attention_heads\" (%d)",
             cfg->hidden_size, cfg->num_attention_heads);
        return;
    }
    cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
}

/* transformers reads num_experts through the alias num_local_experts, and
 * newer versions save it under that name. */
static const char *experts_key(const cJSON *root)
{
    return field(root, "num_experts") || !field(root, "num_local_experts") ? "num_experts"
                                                                           : "num_local_experts";
}

/* Mixtral: every layer routes its MLP over num_local_experts experts of
 * intermediate_size, and the top-k weights are always renormalised (its
 * softmax runs over all experts, then the chosen are divided by their
 * sum).  Sliding-window attention would change every token past the
 * window, so a window shorter than the context is refused. */
static void read_mixtral(reader *r, mr_model_config *cfg)
{
    cfg->moe_intermediate_size = cfg->intermediate_size;
    cfg->decoder_sparse_step = 1;
    cfg->norm_topk_prob = true;
    const cJSON *window = field(r->root, "sliding_window");
    if (window && !r->failed) {
        int w = whole_value(r, window, "sliding_window", 1);
        if (!r->failed && w < cfg->max_position_embeddings)
            fail(r, "\"sliding_window\" (%d) is shorter than \"max_position_embeddings\" (%d): "
                    "sliding-window attention is not supported; set it to null to attend to "
                    "the whole context",
                 w, cfg->max_position_embeddings);
    }
}

/* quantization_config: moerun runs FP8 e4m3 with 128 x 128 block scales
 * (DeepSeek-V3's, Qwen3-FP8's); any other method would load as wrong
 * numbers, so it is refused by name. */
static void read_quantization(reader *r)
{
    const cJSON *q = field(r->root, "quantization_config");
    if (!q || r->failed)
        return;
    const cJSON *method = field(q, "quant_method"), *block = field(q, "weight_block_size");
    const cJSON *fmt = field(q, "fmt");
    if (!cJSON_IsString(method) || strcmp(method->valuestring, "fp8") != 0) {
        fail(r, "quantization_config.quant_method \"%.32s\" is not supported; moerun runs bf16, "
                "f16, f32 and FP8 (quant_method \"fp8\", e4m3, weight_block_size [128, 128]) "
                "checkpoints",
             cJSON_IsString(method) ? method->valuestring : "(none)");
        return;
    }
    if (fmt && !(cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "e4m3"))) {
        fail(r, "quantization_config.fmt must be \"e4m3\" (moerun reads FP8 e4m3 weights)");
        return;
    }
    if (!cJSON_IsArray(block) || cJSON_GetArraySize(block) != 2 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(block, 0)) ||
        cJSON_GetArrayItem(block, 0)->valuedouble != 128 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(block, 1)) ||
        cJSON_GetArrayItem(block, 1)->valuedouble != 128)
        fail(r, "quantization_config.weight_block_size must be [128, 128]: moerun reads FP8 "
                "weights with a scale per 128 x 128 tile");
}

/* A string field that must be one value when present (a router's method). */
static void expect_string(reader *r, const char *name, const char *want)
{
    const cJSON *v = field(r->root, name);
    if (v && !r->failed && !(cJSON_IsString(v) && strcmp(v->valuestring, want) == 0))
        fail(r, "\"%s\" must be \"%s\" (DeepSeek-V3's), not %s%.32s%s", name, want,
             cJSON_IsString(v) ? "\"" : "", cJSON_IsString(v) ? v->valuestring : mr_json_kind(v),
             cJSON_IsString(v) ? "\"" : "");
}

static double optional_number(reader *r, const cJSON *obj, const char *name, double fallback)
{
    return positive_value(r, field(obj, name), name, fallback);
}

/* rope_scaling of type yarn, as DeepSeek-V3 ships it; none leaves
 * yarn_factor 0.  Other kinds would rotate by other angles: refused. */
static void read_yarn(reader *r, mr_model_config *cfg, mr_mla_config *m)
{
    const cJSON *s = field(r->root, "rope_scaling");
    if (!s || r->failed)
        return;
    const cJSON *type = field(s, "rope_type") ? field(s, "rope_type") : field(s, "type");
    if (!cJSON_IsObject(s) || !cJSON_IsString(type) || strcmp(type->valuestring, "yarn") != 0) {
        fail(r, "\"rope_scaling\" must be null or of type \"yarn\" for DeepSeek-V3");
        return;
    }
    if (!field(s, "factor")) {
        fail(r, "\"rope_scaling\" of type yarn needs a \"factor\"");
        return;
    }
    m->yarn_factor = optional_number(r, s, "factor", 1.0);
    m->yarn_beta_fast = optional_number(r, s, "beta_fast", 32.0);
    m->yarn_beta_slow = optional_number(r, s, "beta_slow", 1.0);
    m->yarn_mscale = optional_number(r, s, "mscale", 0.0);
    m->yarn_mscale_all_dim = optional_number(r, s, "mscale_all_dim", 0.0);
    m->yarn_attention_factor = optional_number(r, s, "attention_factor", 0.0);
    const cJSON *truncate = field(s, "truncate");
    m->yarn_truncate = !cJSON_IsFalse(truncate);
    const cJSON *original = field(s, "original_max_position_embeddings");
    m->yarn_original_max_positions =
        original ? whole_value(r, original, "original_max_position_embeddings", 1)
                 : cfg->max_position_embeddings;
}

/* DeepSeek-V3 (DeepseekV3Config): MLA's ranks and head dims, the grouped
 * sigmoid router, shared experts, the first first_k_dense_replace layers
 * dense; defaults as transformers' config class has them.  The MTP layer
 * (num_nextn_predict_layers) is not part of the model served: ignored. */
static void read_deepseek(reader *r, mr_model_config *cfg)
{
    mr_mla_config *m = &cfg->mla;
    const cJSON *q_lora = field(r->root, "q_lora_rank");
    m->q_lora_rank = q_lora ? whole_value(r, q_lora, "q_lora_rank", 1) : 0;
    m->kv_lora_rank = required_int(r, "kv_lora_rank", 1);
    m->qk_nope_head_dim = required_int(r, "qk_nope_head_dim", 1);
    m->qk_rope_head_dim = required_int(r, "qk_rope_head_dim", 2);
    m->v_head_dim = required_int(r, "v_head_dim", 1);
    m->rope_interleave = optional_bool(r, "rope_interleave", true);
    m->n_group = optional_int(r, "n_group", 1, 1);
    m->topk_group = optional_int(r, "topk_group", 1, 1);
    m->routed_scaling_factor =
        (float)positive_value(r, field(r->root, "routed_scaling_factor"), "routed_scaling_factor",
                              2.5);
    m->n_shared_experts = optional_int(r, "n_shared_experts", 0, 1);
    int dense = optional_int(r, "first_k_dense_replace", 0, 3);
    for (int i = 0; i < dense && i < cfg->num_hidden_layers && i < MR_MAX_LAYERS; i++)
        cfg->mlp_only[i] = true;
    cfg->norm_topk_prob = optional_bool(r, "norm_topk_prob", true);
    cfg->head_dim = m->qk_nope_head_dim + m->qk_rope_head_dim;
    expect_string(r, "scoring_func", "sigmoid");
    expect_string(r, "topk_method", "noaux_tc");
    read_yarn(r, cfg, m);
    if (!r->failed && (cfg->num_experts % m->n_group != 0 || m->topk_group > m->n_group ||
                       cfg->num_experts_per_tok > m->topk_group * (cfg->num_experts / m->n_group)))
        fail(r, "\"n_routed_experts\" (%d) in \"n_group\" (%d) groups, \"topk_group\" %d, "
                "\"num_experts_per_tok\" %d: the groups must divide the experts and the kept "
                "groups hold the top-k",
             cfg->num_experts, m->n_group, m->topk_group, cfg->num_experts_per_tok);
}

static void read_config(reader *r, mr_model_config *cfg)
{
    const family_info *f = read_architecture(r, cfg);
    bool mixtral = cfg->family == MR_FAMILY_MIXTRAL;
    bool deepseek = cfg->family == MR_FAMILY_DEEPSEEK_V3;
    cfg->qk_norm = cfg->family == MR_FAMILY_QWEN3_MOE;
    cfg->vocab_size = required_int(r, "vocab_size", 1);
    cfg->hidden_size = required_int(r, "hidden_size", 1);
    cfg->num_hidden_layers = required_int(r, "num_hidden_layers", 1);
    cfg->num_attention_heads = required_int(r, "num_attention_heads", 1);
    cfg->num_key_value_heads = deepseek ? optional_int(r, "num_key_value_heads", 1,
                                                       cfg->num_attention_heads)
                                        : required_int(r, "num_key_value_heads", 1);
    cfg->intermediate_size = required_int(r, "intermediate_size", 1);
    if (!mixtral)
        cfg->moe_intermediate_size = required_int(r, "moe_intermediate_size", 1);
    cfg->num_experts = required_int(r, mixtral    ? "num_local_experts"
                                       : deepseek ? "n_routed_experts"
                                                  : experts_key(r->root),
                                    1);
    cfg->num_experts_per_tok = required_int(r, "num_experts_per_tok", 1);
    if (!deepseek)
        read_head_dim(r, cfg);
    cfg->decoder_sparse_step = optional_int(r, "decoder_sparse_step", 1, DEFAULT_SPARSE_STEP);
    cfg->norm_topk_prob = optional_bool(r, "norm_topk_prob", false);
    cfg->tie_word_embeddings = optional_bool(r, "tie_word_embeddings", false);
    cfg->rms_norm_eps = (float)positive_value(r, field(r->root, "rms_norm_eps"), "rms_norm_eps",
                                              f->rms_norm_eps);
    cfg->rope_theta = (float)rope_theta(r, f->rope_theta);
    cfg->max_position_embeddings =
        optional_int(r, "max_position_embeddings", 1, f->max_positions);
    if (mixtral)
        read_mixtral(r, cfg);
    if (deepseek)
        read_deepseek(r, cfg);
    read_quantization(r);
    cfg->bos_token_id = token_id(r, "bos_token_id");
    cfg->eos_token_id = token_id(r, "eos_token_id");
    check_consistency(r, cfg);
    read_mlp_only_layers(r, cfg);
}

int mr_config_load(const char *path, mr_model_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cJSON *root;
    int rc = mr_json_file_load(path, CONFIG_MAX_BYTES, &root, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    reader r = {path, root, err, errlen, false};
    if (!cJSON_IsObject(root))
        fail(&r, "must hold a JSON object, not %s", mr_json_kind(root));
    else
        read_config(&r, cfg);
    cJSON_Delete(root);
    if (r.failed) {
        memset(cfg, 0, sizeof *cfg);
        return MR_ENGINE_EINVAL;
    }
    return MR_ENGINE_OK;
}

int mr_config_expert_groups(const mr_model_config *cfg)
{
    return cfg->family == MR_FAMILY_DEEPSEEK_V3 && cfg->mla.n_group > 1 ? cfg->mla.n_group : 1;
}

bool mr_config_layer_is_moe(const mr_model_config *cfg, int layer)
{
    if (layer < 0 || layer >= cfg->num_hidden_layers || layer >= MR_MAX_LAYERS)
        return false;
    return !cfg->mlp_only[layer] && cfg->num_experts > 0 &&
           (layer + 1) % cfg->decoder_sparse_step == 0;
}

int mr_config_moe_layers(const mr_model_config *cfg)
{
    int n = 0;
    for (int i = 0; i < cfg->num_hidden_layers; i++)
        n += mr_config_layer_is_moe(cfg, i);
    return n;
}
