/*
 * Engine throughput on the `small` preset: prefill and decode tokens/s at
 * batch 1, 16, 64 and 256, with the GFLOP/s they achieve next to the
 * machine's FMA peak measured in the same run, and for decode the weight
 * bytes a step reads per second beside the machine's read bandwidth, also
 * measured in the run.  Each batch runs on a new engine whose first
 * prefill (other prompts of the same shape, "first tok/s") is timed apart
 * from the table's prefill and decode: the first pays the kernel for the
 * engine's fresh pages (KV pool, activations, message buffers), which a
 * running job has long touched; the table's figures are the steady state
 * (llama-batched-bench, the anchor in docs/PERFORMANCE.md, likewise clears
 * its KV cache at start and decodes a warm-up batch).  Then what a resume
 * costs the requests that were in flight: the time to get them back to
 * where they stopped by prefilling the tokens they had generated, against
 * generating those tokens again.
 *
 *   build/bench/bench_engine MODEL_DIR [threads] [backend] [synthetic|short]
 *
 * With `short`, the table's batches 1, 16 and 64 alone (the same prompts
 * and steps): `make bench` runs it on deepseek-small, bf16 and FP8, beside
 * the small preset's full run, within two minutes each on 2 cores.
 *
 * With `synthetic`, MODEL_DIR needs only config.json and a tokenizer: the
 * weights are random bf16 made on the backend (tests/bench/qwen3-30b-a3b
 * has Qwen3-30B-A3B's published config.json), and the figures are prefill
 * of one 2048-token prompt and decode steps at 1, 64, 256 and 1024
 * sequences, each printed as soon as it is measured.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "tests/bench/fma_peak.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Multiply-adds of one token's attention projections: q, k, v and o; or
 * MLA's absorbed form (q_a, q_b, W_UKᵀ, kv_a, W_UV, o_proj). */
static double projection_macs(const mr_model_config *c)
{
    double h = c->hidden_size, heads = c->num_attention_heads;
    if (c->family != MR_FAMILY_DEEPSEEK_V3) {
        double q = heads * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
        return h * (q + 2 * kv) + q * h;
    }
    const mr_mla_config *m = &c->mla;
    double q_in = m->q_lora_rank ? m->q_lora_rank : h, latent = m->kv_lora_rank;
    return (m->q_lora_rank ? h * q_in : 0) +
           q_in * heads * (m->qk_nope_head_dim + m->qk_rope_head_dim) +
           heads * m->qk_nope_head_dim * latent + h * (latent + m->qk_rope_head_dim) +
           heads * latent * m->v_head_dim + heads * m->v_head_dim * h;
}

/* Multiply-adds per token outside attention scores: projections, router,
 * top-k experts (and shared ones) or a dense MLP; lm_head only for rows
 * that sample. */
static double flops_per_token(const mr_model_config *c, bool with_head)
{
    double h = c->hidden_size, macs = with_head ? h * c->vocab_size : 0;
    double expert = 3 * h * c->moe_intermediate_size;
    double shared = c->family == MR_FAMILY_DEEPSEEK_V3 ? c->mla.n_shared_experts : 0;
    for (int i = 0; i < c->num_hidden_layers; i++)
        macs += projection_macs(c) +
                (mr_config_layer_is_moe(c, i)
                     ? h * c->num_experts + (c->num_experts_per_tok + shared) * expert
                     : 3 * h * c->intermediate_size);
    return 2 * macs;
}

/* Attention scores and values for one token at context length ctx: per
 * head and key a q·k and a weighted v, or MLA's latent and rope scores
 * and the weighted latent. */
static double attention_flops(const mr_model_config *c, double ctx)
{
    double per_key = 2.0 * c->head_dim;
    if (c->family == MR_FAMILY_DEEPSEEK_V3)
        per_key = 2.0 * c->mla.kv_lora_rank + c->mla.qk_rope_head_dim;
    return 2 * ctx * per_key * c->num_attention_heads * c->num_hidden_layers;
}

/* Weight parameters a step over `experts` distinct routed experts per MoE
 * layer reads (a matrix-vector product reads each of its weights once per
 * multiply-add of one token, so projection_macs counts them), lm_head
 * once and, with `embedding`, the embedding table too. */
static double step_params(const mr_model_config *c, double experts, bool embedding)
{
    double h = c->hidden_size, params = h * c->vocab_size * (embedding ? 2 : 1);
    double expert = 3 * h * c->moe_intermediate_size;
    double shared = c->family == MR_FAMILY_DEEPSEEK_V3 ? c->mla.n_shared_experts : 0;
    for (int i = 0; i < c->num_hidden_layers; i++)
        params += projection_macs(c) + (mr_config_layer_is_moe(c, i)
                                            ? h * c->num_experts + (experts + shared) * expert
                                            : 3 * h * c->intermediate_size);
    return params;
}

/* Weight bytes a decode step of `batch` sequences reads: with random
 * routing its tokens pick E (1 - (1 - k/E)^batch) distinct of E experts
 * per layer; at `bytes_per_param` (the files' bytes over their
 * parameters). */
static double decode_weight_bytes(const mr_model_config *c, int batch, double bytes_per_param)
{
    double e = c->num_experts, k = c->num_experts_per_tok;
    return step_params(c, e * (1 - pow(1 - k / e, batch)), false) * bytes_per_param;
}

/* The files' bytes over the model's parameters: 2 for bf16, about 1.03 for
 * FP8 with its block scales. */
static double bytes_per_param(const char *dir, const mr_model_config *c)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0) {
        if (f)
            fclose(f);
        return 2; /* sharded or synthetic: bf16 */
    }
    double bytes = (double)ftell(f);
    fclose(f);
    return bytes / step_params(c, c->num_experts, true);
}

typedef struct {
    double first_prefill_tps; /* a new engine's first prefill (with `warm`) */
    double prefill_tps, prefill_gflops, decode_tps, decode_gflops;
} result;

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "bench_engine: %s: %s\n", what, err);
    exit(1);
}

/* Sequence `seq`'s prompt: the same tokens for the same sequence in every
 * measurement. */
static void fill_prompt(int32_t *prompt, int prompt_len, int seq)
{
    for (int i = 0; i < prompt_len; i++)
        prompt[i] = (int32_t)((seq * 131 + i * 17) % 1800 + 10);
}

/* `batch` greedy generations of prompt_len tokens, handles from `first`,
 * each stopping after max_tokens (end of text ignored). */
static void submit_batch(mr_engine *engine, int batch, int prompt_len, int max_tokens,
                         int first)
{
    char err[1024];
    int32_t *prompt = malloc((size_t)prompt_len * sizeof *prompt);
    for (int b = 0; b < batch; b++) {
        fill_prompt(prompt, prompt_len, first + b);
        mr_generation g = {.handle = (uint64_t)(first + b),
                           .prompt = prompt,
                           .n_prompt = (size_t)prompt_len,
                           .sampling = {.max_tokens = (size_t)max_tokens,
                                        .temperature = 0,
                                        .top_p = 1,
                                        .ignore_eos = true}};
        if (mr_engine_submit(engine, &g, err, sizeof err) != MR_ENGINE_OK)
            fail("submit", err);
    }
    free(prompt);
}

/* Prefill then decode_steps steps of `batch` sequences on a new engine.
 * With `warm`, one prefill of the same shape (other prompts, one token
 * each) runs first, timed apart: a new engine's first prefill also pays
 * the kernel for the fresh pages of its KV pool, activations and message
 * buffers, which a running job's engine has long touched. */
static result measure(mr_model *model, int batch, int prompt_len, int decode_steps, bool warm)
{
    const mr_model_config *c = mr_model_config_get(model);
    char err[1024];
    mr_engine *engine;
    mr_engine_options o = {.max_batch_tokens = batch * prompt_len,
                           .max_sequences = batch,
                           .kv_block_size = 16,
                           .kv_blocks = batch * ((prompt_len + decode_steps) / 16 + 2)};
    if (mr_engine_create(model, &o, &engine, err, sizeof err) != MR_ENGINE_OK)
        fail("engine", err);
    mr_completion_out *done = calloc((size_t)batch, sizeof *done);
    size_t n_done;
    result r = {.first_prefill_tps = NAN};
    double tokens = (double)batch * prompt_len;
    if (warm) { /* one token each: done at the end of their prefill */
        submit_batch(engine, batch, prompt_len, 1, batch);
        double t = now();
        if (mr_engine_step(engine, done, (size_t)batch, &n_done, err, sizeof err) != MR_ENGINE_OK)
            fail("first prefill", err);
        r.first_prefill_tps = tokens / (now() - t);
        for (size_t i = 0; i < n_done; i++)
            mr_completion_out_free(&done[i]);
    }
    submit_batch(engine, batch, prompt_len, decode_steps + 1, 0);
    double t0 = now();
    if (mr_engine_step(engine, done, (size_t)batch, &n_done, err, sizeof err) != MR_ENGINE_OK)
        fail("prefill", err);
    double t1 = now();
    double flops = tokens * flops_per_token(c, false) + batch * 2.0 * c->hidden_size * c->vocab_size;
    for (int i = 0; i < prompt_len; i++)
        flops += batch * attention_flops(c, i + 1);
    r.prefill_tps = tokens / (t1 - t0);
    r.prefill_gflops = flops / (t1 - t0) * 1e-9;
    flops = 0;
    for (int s = 0; s < decode_steps; s++) {
        if (mr_engine_step(engine, done, (size_t)batch, &n_done, err, sizeof err) != MR_ENGINE_OK)
            fail("decode", err);
        for (size_t i = 0; i < n_done; i++)
            mr_completion_out_free(&done[i]);
        flops += batch * (flops_per_token(c, true) + attention_flops(c, prompt_len + s + 1));
    }
    double t2 = now();
    r.decode_tps = (double)batch * decode_steps / (t2 - t1);
    r.decode_gflops = flops / (t2 - t1) * 1e-9;
    free(done);
    mr_engine_free(engine);
    return r;
}

/* Seconds until `batch` sequences of prompt_len tokens, stopped after
 * `generated` completion tokens, have sampled their next one: going on
 * from those tokens (`carry`), or generating them again.  With the job
 * file's default step budget. */
static double back_to_where_it_stopped(mr_model *model, int batch, int prompt_len, int generated,
                                       bool carry)
{
    char err[1024];
    mr_engine *engine;
    mr_engine_options o = {.max_batch_tokens = 512,
                           .max_sequences = batch,
                           .kv_block_size = 16,
                           .kv_blocks = batch * ((prompt_len + generated) / 16 + 2)};
    if (mr_engine_create(model, &o, &engine, err, sizeof err) != MR_ENGINE_OK)
        fail("engine", err);
    int32_t *prompt = malloc((size_t)prompt_len * sizeof *prompt);
    int32_t *earlier = malloc((size_t)generated * sizeof *earlier);
    for (int b = 0; b < batch; b++) {
        fill_prompt(prompt, prompt_len, b);
        for (int i = 0; i < generated; i++)
            earlier[i] = (int32_t)((b * 71 + i * 29) % 1800 + 10);
        mr_generation g = {.handle = (uint64_t)b,
                           .prompt = prompt,
                           .n_prompt = (size_t)prompt_len,
                           .sampling = {.max_tokens = generated + 2, .top_p = 1,
                                        .ignore_eos = true},
                           .generated = carry ? earlier : NULL,
                           .n_generated = carry ? (size_t)generated : 0};
        if (mr_engine_submit(engine, &g, err, sizeof err) != MR_ENGINE_OK)
            fail("submit", err);
    }
    free(prompt);
    free(earlier);
    size_t cap = (size_t)o.max_sequences;
    mr_completion_out *done = calloc(cap, sizeof *done);
    double t0 = now();
    for (int behind = batch; behind > 0;) {
        size_t n_done;
        if (mr_engine_step(engine, done, cap, &n_done, err, sizeof err) != MR_ENGINE_OK)
            fail("step", err);
        behind = 0;
        for (int b = 0; b < batch; b++) {
            const int32_t *tokens;
            size_t n;
            behind += mr_engine_generated(engine, (uint64_t)b, &tokens, &n) &&
                      n < (size_t)generated + 1;
        }
    }
    double seconds = now() - t0;
    free(done);
    mr_engine_free(engine);
    return seconds;
}

/* A real model's shapes: prefill of a long prompt, then decode at the
 * batch sizes a GPU serves. */
static void synthetic_table(mr_model *model)
{
    printf("%28s %14s %10s\n", "", "tokens/s", "GFLOP/s");
    result r = measure(model, 1, 2048, 1, false);
    printf("%28s %14.1f %10.1f\n", "prefill, 1 x 2048 tokens", r.prefill_tps, r.prefill_gflops);
    fflush(stdout);
    static const int batches[] = {1, 64, 256, 1024};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        r = measure(model, batches[i], 4, 2, false);
        printf("%18s %4d seqs %14.1f %10.1f\n", "decode,", batches[i], r.decode_tps,
               r.decode_gflops);
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_engine MODEL_DIR [threads] [backend] [synthetic|short]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *backend = argc > 3 ? argv[3] : "cpu";
    bool synthetic = argc > 4 && strcmp(argv[4], "synthetic") == 0;
    bool brief = argc > 4 && strcmp(argv[4], "short") == 0;
    char err[2048];
    mr_model *model;
    mr_model_options options = {.backend = backend, .threads = threads,
                                .synthetic_seed = synthetic ? 1 : 0};
    double t0 = now();
    if (mr_model_load(argv[1], &options, &model, err, sizeof err) != MR_ENGINE_OK)
        fail("load", err);
    double load_seconds = now() - t0;
    /* %peak is of this CPU's FMA rate; on a GPU it has no meaning here. */
    bool on_cpu = strcmp(backend, "cuda") != 0;
    double peak = on_cpu ? mr_bench_fma_peak_gflops(threads) : NAN;
    const mr_model_config *c = mr_model_config_get(model);
    printf("engine on %s (%s backend): %s, hidden %d, %d layers, %d experts, top-%d, "
           "%d threads\n",
           argv[1], backend, c->architecture, c->hidden_size, c->num_hidden_layers,
           c->num_experts, c->num_experts_per_tok, threads);
    double bandwidth = on_cpu ? mr_bench_read_bandwidth(threads) : NAN;
    if (on_cpu)
        printf("FMA peak (f32, %d threads): %.1f GFLOP/s; memory read bandwidth %.1f GB/s\n",
               threads, peak, bandwidth);
    printf("loaded in %.1f s%s\n\n", load_seconds, synthetic ? " (synthetic bf16 weights)" : "");
    if (synthetic) {
        synthetic_table(model);
        mr_model_free(model);
        return 0;
    }
    double per_param = bytes_per_param(argv[1], c);
    printf("%6s %12s %14s %10s %7s %14s %10s %7s %10s %6s\n", "batch", "first tok/s",
           "prefill tok/s", "GFLOP/s", "%peak", "decode tok/s", "GFLOP/s", "%peak",
           "weight GB/s", "%bw");
    static const int batches[] = {1, 16, 64, 256};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0] - (brief ? 1 : 0); i++) {
        int b = batches[i];
        /* Prompts long enough to matter, short enough for 2 cores. */
        result r = measure(model, b, b >= 64 ? 32 : 128, b >= 64 ? 8 : 16, true);
        /* Decode steps per second times the weights a step reads. */
        double weight_gbs = r.decode_tps / b * decode_weight_bytes(c, b, per_param) * 1e-9;
        printf("%6d %12.1f %14.1f %10.1f %6.1f%% %14.1f %10.1f %6.1f%% %11.1f %5.0f%%\n", b,
               r.first_prefill_tps, r.prefill_tps, r.prefill_gflops, 100 * r.prefill_gflops / peak,
               r.decode_tps, r.decode_gflops, 100 * r.decode_gflops / peak, weight_gbs,
               100 * weight_gbs / bandwidth);
    }
    if (brief) {
        mr_model_free(model);
        return 0;
    }
    printf("\nrequests in flight at a stop (prompt 128 tokens), back to where they stopped:\n");
    printf("%6s %10s %18s %18s\n", "batch", "generated", "from tokens (s)", "generated again (s)");
    static const int resumes[][2] = {{16, 32}, {16, 128}, {64, 64}};
    for (size_t i = 0; i < sizeof resumes / sizeof resumes[0]; i++) {
        int b = resumes[i][0], k = resumes[i][1];
        printf("%6d %10d %18.3f %18.3f\n", b, k,
               back_to_where_it_stopped(model, b, 128, k, true),
               back_to_where_it_stopped(model, b, 128, k, false));
    }
    mr_model_free(model);
    return 0;
}
