#!/usr/bin/env python3
"""The forward pass of the MoE families moerun runs, in NumPy, written from
Hugging Face's modeling_qwen3_moe.py, modeling_mixtral.py and
modeling_deepseek_v3.py (with modeling_rope_utils.py's YaRN), as an
independent check of moerun's engine.

It shares no code with moerun: it reads config.json and the safetensors
files itself and computes every step in float64, so a mistake in moerun's
routing, RoPE, norms or attention shows up as a difference in the logits.
Mixtral differs from Qwen3-MoE in three places: no RMSNorm on the heads of
q and k, its experts under block_sparse_moe as w1 (gate), w3 (up) and w2
(down), and top-k weights that are always renormalised.

DeepSeek-V3 differs more: MLA attention, computed here in transformers'
plain form (each head's K and V expanded from the latent, no absorbed
weights, so that an engine computing the absorbed form is checked against
the other form); RoPE on the last qk_rope_head_dim values of each head (64
of 192 in DeepSeek-V3), its pairs interleaved, optionally YaRN-scaled;
sigmoid routing limited to the best groups, with a correction bias that
chooses experts but does not weigh them; a shared expert beside the routed
ones; the first layers dense.  Its multi-token prediction layer
(num_nextn_predict_layers, stored after the last layer) is not part of the
forward pass and is ignored.

    moe_forward.py MODEL_DIR --tokens 1,2,3 --out logits.f32

writes the logits of every position as float32, [n_tokens][vocab_size].

    moe_forward.py --self-test

checks the DeepSeek-V3 router, YaRN and interleaved RoPE against cases
worked out by hand, and exits 0 when they agree.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    """Returns {name: float64 array} for one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start:base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            values = bits.view(np.float32)
        elif info["dtype"] == "F32":
            values = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "F16":
            values = np.frombuffer(raw, dtype="<f2")
        elif info["dtype"] == "F8_E4M3":
            values = e4m3(np.frombuffer(raw, dtype=np.uint8))
        else:
            sys.exit("%s: %s has dtype %s" % (path, name, info["dtype"]))
        tensors[name] = values.astype(np.float64).reshape(info["shape"])
    return tensors


def e4m3(codes):
    """FP8 e4m3 ("fn": bias 7, no infinities, 0x7f/0xff NaN) as float64."""
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = (codes & 0x7).astype(np.float64)
    normal = (1.0 + man / 8.0) * np.exp2(exp.astype(np.float64) - 7.0)
    subnormal = man / 8.0 * 2.0 ** -6
    values = sign * np.where(exp == 0, subnormal, normal)
    return np.where((exp == 15) & (codes & 0x7 == 7), np.nan, values).astype(np.float32)


def dequantise(weights, block=128):
    """FP8 block-scaled weights (DeepSeek-V3's and Qwen3-FP8's layout):
    W = e4m3 x weight_scale_inv of its 128 x 128 tile."""
    for name in [n for n in weights if n.endswith("_scale_inv")]:
        scales = weights.pop(name)
        target = name[:-len("_scale_inv")]
        w = weights[target]
        tiles = np.repeat(np.repeat(scales, block, axis=0), block, axis=1)
        weights[target] = w * tiles[:w.shape[0], :w.shape[1]]
    return weights


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return dequantise(read_safetensors(os.path.join(model_dir, "model.safetensors")))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return dequantise(weights)


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x, positions, theta):
    """NeoX style: the head's two halves rotate together. x: [n, heads, dim]."""
    dim = x.shape[-1]
    return rotate(x, positions, 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def rotate(x, positions, inv_freq):
    """Value i of the first half turns with value i of the second by
    position x inv_freq[i]."""
    freqs = np.outer(positions, inv_freq)
    angles = np.concatenate([freqs, freqs], axis=-1)[:, None, :]
    return x * np.cos(angles) + rotate_half(x) * np.sin(angles)


def causal_softmax(scores):
    """Softmax over keys [h][q][k], each query seeing itself and before."""
    n = scores.shape[-1]
    scores = scores + np.triu(np.full((n, n), -np.inf), k=1)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)


def attention(x, w, prefix, cfg):
    n = x.shape[0]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    eps = cfg["rms_norm_eps"]
    q = (x @ w[prefix + "q_proj.weight"].T).reshape(n, heads, dim)
    k = (x @ w[prefix + "k_proj.weight"].T).reshape(n, kv_heads, dim)
    v = (x @ w[prefix + "v_proj.weight"].T).reshape(n, kv_heads, dim)
    if not is_mixtral(cfg):
        q = rms_norm(q, w[prefix + "q_norm.weight"], eps)
        k = rms_norm(k, w[prefix + "k_norm.weight"], eps)
    positions = np.arange(n, dtype=np.float64)
    q = rope(q, positions, cfg.get("rope_theta", 10000.0))
    k = rope(k, positions, cfg.get("rope_theta", 10000.0))
    group = heads // kv_heads
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    probs = causal_softmax(np.einsum("qhd,khd->hqk", q, k) / np.sqrt(dim))
    out = np.einsum("hqk,khd->qhd", probs, v).reshape(n, heads * dim)
    return out @ w[prefix + "o_proj.weight"].T


def is_mixtral(cfg):
    return cfg.get("model_type") == "mixtral"


def swiglu(x, w, prefix, names=("gate_proj", "up_proj", "down_proj")):
    gate = x @ w[prefix + names[0] + ".weight"].T
    up = x @ w[prefix + names[1] + ".weight"].T
    return (gate / (1.0 + np.exp(-gate)) * up) @ w[prefix + names[2] + ".weight"].T


def moe(x, w, prefix, cfg):
    logits = x @ w[prefix + "gate.weight"].T
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    top_k = cfg["num_experts_per_tok"]
    renormalise = is_mixtral(cfg) or cfg.get("norm_topk_prob", False)
    names = ("w1", "w3", "w2") if is_mixtral(cfg) else ("gate_proj", "up_proj", "down_proj")
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        chosen = np.argsort(-probs[t], kind="stable")[:top_k]
        weights = probs[t, chosen]
        if renormalise:
            weights = weights / weights.sum()
        for e, weight in zip(chosen, weights):
            out[t] += weight * swiglu(x[t:t + 1], w, "%sexperts.%d." % (prefix, e), names)[0]
    return out


# ---------------------------------------------------------------------------
# DeepSeek-V3 (DeepseekV3ForCausalLM)
# ---------------------------------------------------------------------------

# DeepseekV3Config's defaults for the keys a checkpoint's config.json may
# leave out.
DEEPSEEK_DEFAULTS = {
    "n_shared_experts": 1, "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4,
    "first_k_dense_replace": 3, "norm_topk_prob": True, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "rope_interleave": True, "tie_word_embeddings": False,
}

# transformers makes q_a_layernorm and kv_a_layernorm without rms_norm_eps,
# so they keep its RMSNorm's default whatever config.json says.
LATENT_NORM_EPS = 1e-6


def is_deepseek(cfg):
    return cfg.get("model_type") == "deepseek_v3"


def rope_settings(cfg):
    """(theta, scaling): transformers 4's rope_theta beside rope_scaling
    (null, or a dict naming its "type" or "rope_type"), or transformers 5's
    rope_parameters holding both."""
    params = cfg.get("rope_parameters")
    if params:
        return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0))), params
    return float(cfg.get("rope_theta", 10000.0)), cfg.get("rope_scaling") or {}


def yarn_mscale(factor, mscale=1.0):
    """YaRN's magnitude correction for a context stretched `factor` times."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def deepseek_rope(cfg):
    """(inv_freq [qk_rope_head_dim / 2], the factor on cos and sin).

    YaRN keeps the fast pairs' frequencies (those turning more than
    beta_fast times over the original context), divides the slow ones'
    (fewer than beta_slow turns) by the factor, and blends linearly in
    between; cos and sin are scaled by mscale over mscale_all_dim (1 in
    DeepSeek-V3, whose attention scale takes the correction instead)."""
    dim = cfg["qk_rope_head_dim"]
    theta, scaling = rope_settings(cfg)
    inv_freq = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq, 1.0
    if kind != "yarn":
        sys.exit("rope scaling %r: the reference computes default and yarn" % kind)
    factor = float(scaling["factor"])
    original = scaling.get("original_max_position_embeddings") or cfg["max_position_embeddings"]

    def pair_turning(turns):
        """The (fractional) pair whose wavelength fits `turns` times into
        the original context."""
        return dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low = pair_turning(scaling.get("beta_fast") or 32)
    high = pair_turning(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    stretched = np.clip((np.arange(dim // 2) - low) / (high - low), 0.0, 1.0)
    inv_freq = inv_freq * (1.0 - stretched) + inv_freq / factor * stretched
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
        else:
            attention_factor = yarn_mscale(factor)
    return inv_freq, attention_factor


def deepseek_softmax_scale(cfg):
    """1/sqrt(qk head dim), times mscale_all_dim's correction squared when
    the RoPE is stretched."""
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    _, scaling = rope_settings(cfg)
    if scaling.get("mscale_all_dim") and "factor" in scaling:
        scale *= yarn_mscale(float(scaling["factor"]), scaling["mscale_all_dim"]) ** 2
    return scale


def rope_pairs(x, positions, inv_freq, attention_factor, interleaved):
    """RoPE on x [n, heads, dim] as transformers applies DeepSeek-V3's:
    with interleaved pairs (x0, x1), (x2, x3), ... the evens are gathered
    before the odds and the halves rotated, and the result stays in that
    order (q and k alike, so the scores are those of the pairs rotated in
    place)."""
    if interleaved:
        n, heads, dim = x.shape
        x = x.reshape(n, heads, dim // 2, 2).swapaxes(-1, -2).reshape(n, heads, dim)
    return rotate(x, positions, inv_freq) * attention_factor


def mla_attention(x, w, prefix, cfg):
    """Multi-head latent attention, expanded: K's no-RoPE part and V come
    from the normalised latent through kv_b_proj per head; the RoPE key is
    one for all heads."""
    n = x.shape[0]
    heads = cfg["num_attention_heads"]
    nope, rot, v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    rank = cfg["kv_lora_rank"]
    if cfg.get("q_lora_rank"):
        q = rms_norm(x @ w[prefix + "q_a_proj.weight"].T, w[prefix + "q_a_layernorm.weight"],
                     LATENT_NORM_EPS) @ w[prefix + "q_b_proj.weight"].T
    else:
        q = x @ w[prefix + "q_proj.weight"].T
    q = q.reshape(n, heads, nope + rot)
    compressed = x @ w[prefix + "kv_a_proj_with_mqa.weight"].T  # [latent | rope key]
    latent = rms_norm(compressed[:, :rank], w[prefix + "kv_a_layernorm.weight"], LATENT_NORM_EPS)
    kv = (latent @ w[prefix + "kv_b_proj.weight"].T).reshape(n, heads, nope + v_dim)
    positions = np.arange(n, dtype=np.float64)
    inv_freq, attention_factor = deepseek_rope(cfg)
    interleaved = cfg["rope_interleave"]
    q_rot = rope_pairs(q[..., nope:], positions, inv_freq, attention_factor, interleaved)
    k_rot = rope_pairs(compressed[:, None, rank:], positions, inv_freq, attention_factor,
                       interleaved)
    q = np.concatenate([q[..., :nope], q_rot], axis=-1)
    k = np.concatenate([kv[..., :nope], np.broadcast_to(k_rot, (n, heads, rot))], axis=-1)
    probs = causal_softmax(np.einsum("qhd,khd->hqk", q, k) * deepseek_softmax_scale(cfg))
    out = np.einsum("hqk,khd->qhd", probs, kv[..., nope:]).reshape(n, heads * v_dim)
    return out @ w[prefix + "o_proj.weight"].T


def deepseek_route(logits, bias, cfg):
    """DeepseekV3TopkRouter for one token: (experts, weights).

    Sigmoid scores; the bias is added for choosing only.  Each group is
    rated by the sum of its best two; experts outside the topk_group best
    groups count as 0.0 (not minus infinity: transformers' masked_fill, so
    a masked expert beats a kept one whose biased score is negative).  The
    weights are the chosen experts' unbiased scores, renormalised when
    norm_topk_prob, times routed_scaling_factor.  Ties go to the lower
    index."""
    scores = 1.0 / (1.0 + np.exp(-logits))
    choice = scores + bias
    n_group = cfg["n_group"]
    groups = choice.reshape(n_group, -1)
    rating = np.sort(groups, axis=1)[:, -2:].sum(axis=1)
    kept = np.zeros(n_group, dtype=bool)
    kept[np.argsort(-rating, kind="stable")[:cfg["topk_group"]]] = True
    choice = np.where(np.repeat(kept, groups.shape[1]), choice, 0.0)
    experts = np.argsort(-choice, kind="stable")[:cfg["num_experts_per_tok"]]
    weights = scores[experts]
    if cfg["norm_topk_prob"]:
        weights = weights / (weights.sum() + 1e-20)
    return experts, weights * cfg["routed_scaling_factor"]


def deepseek_moe(x, w, prefix, cfg):
    """Routed experts plus the shared expert, which sees every token."""
    logits = x @ w[prefix + "gate.weight"].T
    # A buffer of zeros in transformers when the checkpoint lacks it.
    bias = w.get(prefix + "gate.e_score_correction_bias", np.zeros(logits.shape[1]))
    out = swiglu(x, w, prefix + "shared_experts.") if cfg["n_shared_experts"] else np.zeros_like(x)
    for t in range(x.shape[0]):
        experts, weights = deepseek_route(logits[t], bias, cfg)
        for e, weight in zip(experts, weights):
            out[t] += weight * swiglu(x[t:t + 1], w, "%sexperts.%d." % (prefix, e))[0]
    return out


def is_moe_layer(cfg, layer):
    if is_mixtral(cfg):
        return True
    if is_deepseek(cfg):
        return layer >= cfg["first_k_dense_replace"]
    step = cfg.get("decoder_sparse_step", 1)
    return (layer not in cfg.get("mlp_only_layers", []) and cfg.get("num_experts", 0) > 0
            and (layer + 1) % step == 0)


def forward(cfg, w, ids):
    h = w["model.embed_tokens.weight"][ids]
    eps = cfg["rms_norm_eps"]
    # Only the decoder layers: DeepSeek-V3's MTP layers, numbered after them,
    # are not part of the forward pass.
    for layer in range(cfg["num_hidden_layers"]):
        prefix = "model.layers.%d." % layer
        x = rms_norm(h, w[prefix + "input_layernorm.weight"], eps)
        h = h + (mla_attention if is_deepseek(cfg) else attention)(x, w, prefix + "self_attn.", cfg)
        x = rms_norm(h, w[prefix + "post_attention_layernorm.weight"], eps)
        if is_deepseek(cfg) and is_moe_layer(cfg, layer):
            h = h + deepseek_moe(x, w, prefix + "mlp.", cfg)
        elif is_moe_layer(cfg, layer):
            h = h + moe(x, w, prefix + ("block_sparse_moe." if is_mixtral(cfg) else "mlp."), cfg)
        else:
            h = h + swiglu(x, w, prefix + "mlp.")
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") \
        else w["lm_head.weight"]
    return h @ head.T


def logit(p):
    """The router logit whose sigmoid is p."""
    return np.log(np.asarray(p, dtype=np.float64) / (1.0 - np.asarray(p, dtype=np.float64)))


def self_test():
    """DeepSeek-V3's router, YaRN and interleaved RoPE against answers
    worked out by hand (the comments show the working).  Returns the
    number of cases that disagree."""
    failures = 0

    def check(what, got, want):
        nonlocal failures
        ok = np.allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                         rtol=1e-12, atol=1e-12)
        print("%s %s" % ("ok  " if ok else "FAIL", what))
        if not ok:
            print("     got  %s\n     want %s" % (got, want))
            failures += 1

    def route(p, bias, **routing):
        cfg = dict(DEEPSEEK_DEFAULTS, **routing)
        experts, weights = deepseek_route(logit(p), np.asarray(bias, dtype=np.float64), cfg)
        order = np.argsort(experts)
        return [int(e) for e in experts[order]], weights[order]

    # 8 experts in 2 groups of 4, the best group kept, top 2.  Biased
    # scores 0.9 .1 .2 .25 | .6 .55 .6 .1: group 0 rates 0.9 + 0.25 = 1.15,
    # group 1 0.6 + 0.6 = 1.2, so group 1 wins although expert 0 is the
    # best single one; the bias lifts expert 6 (0.5) over expert 5 (0.55).
    # Weights: unbiased 0.6 and 0.5 over 1.1, times 2.5.
    experts, weights = route([0.9, 0.1, 0.2, 0.25, 0.6, 0.55, 0.5, 0.1],
                             [0, 0, 0, 0, 0, 0, 0.1, 0], n_group=2, topk_group=1,
                             num_experts_per_tok=2, norm_topk_prob=True, routed_scaling_factor=2.5)
    check("router: groups by their best two; the bias chooses, the score weighs",
          [experts, weights], [[4, 6], [2.5 * 0.6 / 1.1, 2.5 * 0.5 / 1.1]])

    # 4 groups of 2, the best 2 kept, top 3.  Ratings (both members):
    # 0.3, 0.75, 0.8, 0.65: groups 2 and 1 kept, so 7 (0.35) and 6 (0.3)
    # lose to 4 and 5 (0.4).  Weights 0.7, 0.4, 0.4 over 1.5, times 1.
    experts, weights = route([0.1, 0.2, 0.7, 0.05, 0.4, 0.4, 0.3, 0.35], np.zeros(8), n_group=4,
                             topk_group=2, num_experts_per_tok=3, norm_topk_prob=True,
                             routed_scaling_factor=1.0)
    check("router: several groups kept", [experts, weights], [[2, 4, 5], [0.7 / 1.5, 0.4 / 1.5, 0.4 / 1.5]])

    # Group 0 biased below zero (-0.5 each), group 1 kept with biased
    # scores 0.3 0.2 0.1 -0.05: masked experts count as 0.0, so the fourth
    # pick is a masked one (expert 0, the lowest index of the four tied at
    # 0.0), not expert 7.  No renormalising: 2.5 x 0.3 0.2 0.1 0.5.
    experts, weights = route([0.5, 0.5, 0.5, 0.5, 0.3, 0.2, 0.1, 0.4],
                             [-1, -1, -1, -1, 0, 0, 0, -0.45], n_group=2, topk_group=1,
                             num_experts_per_tok=4, norm_topk_prob=False, routed_scaling_factor=2.5)
    check("router: masked experts at 0.0 beat negative biased scores",
          [experts, weights], [[0, 4, 5, 6], [1.25, 0.75, 0.5, 0.25]])

    # DeepSeek-V3's published rope_scaling, on its 64 RoPE dims.  Pair i
    # turns 4096 / (2 pi 10000^(i/32)) times over the original context:
    # 32 turns at i = 64 ln(4096 / 64 pi) / (2 ln 10000) = 10.47, floored
    # to 10; 1 turn at i = 64 ln(4096 / 2 pi) / (2 ln 10000) = 22.51,
    # ceiled to 23.  Pairs 0-10 keep 10000^(-i/32), 23-31 are divided by
    # 40, pair 16 is 6/13 of the way.  mscale = mscale_all_dim: cos and sin
    # unscaled; the softmax scale gains (0.1 ln 40 + 1)^2.
    v3 = dict(DEEPSEEK_DEFAULTS, qk_rope_head_dim=64, qk_nope_head_dim=128,
              max_position_embeddings=163840,
              rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})
    inv_freq, attention_factor = deepseek_rope(v3)
    base = 10000.0 ** (-np.arange(32) / 32.0)
    check("yarn: pairs 0-10 unchanged", inv_freq[:11], base[:11])
    check("yarn: pairs 23-31 divided by 40", inv_freq[23:], base[23:] / 40)
    check("yarn: pair 16 blended 7/13 : 6/13", inv_freq[16], base[16] * (7 / 13 + 6 / 13 / 40))
    check("yarn: cos and sin unscaled when mscale = mscale_all_dim", attention_factor, 1.0)
    check("yarn: softmax scale", deepseek_softmax_scale(v3),
          (0.1 * math.log(40) + 1) ** 2 / math.sqrt(192))
    v3["rope_scaling"] = dict(v3["rope_scaling"], mscale=0.707)
    check("yarn: cos and sin scaled by mscale over mscale_all_dim", deepseek_rope(v3)[1],
          (0.0707 * math.log(40) + 1) / (0.1 * math.log(40) + 1))

    # Interleaved RoPE is pair (x[2i], x[2i+1]) turned as the complex
    # number x[2i] + j x[2i+1] by position x inv_freq[i], written as all
    # real parts, then all imaginary parts.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8))
    positions = np.array([0.0, 1.0, 7.0])
    freqs = np.array([1.0, 0.3, 0.01, 0.002])
    turned = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.outer(positions, freqs))[:, None, :]
    check("rope: interleaved pairs turn as complex numbers",
          rope_pairs(x, positions, freqs, 1.0, True),
          np.concatenate([turned.real, turned.imag], axis=-1))
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("--tokens", help="comma-separated token ids")
    parser.add_argument("--out", help="float32 logits, [n][vocab]")
    parser.add_argument("--self-test", action="store_true",
                        help="check the DeepSeek-V3 router and RoPE against worked cases")
    args = parser.parse_args()
    if args.self_test:
        sys.exit(1 if self_test() else 0)
    if not (args.model_dir and args.tokens and args.out):
        parser.error("MODEL_DIR, --tokens and --out are needed (or --self-test)")
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    if is_deepseek(cfg):
        cfg = dict(DEEPSEEK_DEFAULTS, **cfg)
    ids = np.array([int(t) for t in args.tokens.split(",")], dtype=np.int64)
    logits = forward(cfg, read_weights(args.model_dir), ids)
    logits.astype("<f4").tofile(args.out)


if __name__ == "__main__":
    main()
