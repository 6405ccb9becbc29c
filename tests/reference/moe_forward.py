#!/usr/bin/env python3
"""The forward pass of the MoE families moerun runs, in NumPy, written from
Hugging Face's modeling_qwen3_moe.py and modeling_mixtral.py, as an
independent check of moerun's engine.

It shares no code with moerun: it reads config.json and the safetensors
files itself and computes every step in float64, so a mistake in moerun's
routing, RoPE, norms or attention shows up as a difference in the logits.
Mixtral differs from Qwen3-MoE in three places: no RMSNorm on the heads of
q and k, its experts under block_sparse_moe as w1 (gate), w3 (up) and w2
(down), and top-k weights that are always renormalised.

    moe_forward.py MODEL_DIR --tokens 1,2,3 --out logits.f32

writes the logits of every position as float32, [n_tokens][vocab_size].
"""
import argparse
import json
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
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    freqs = np.outer(positions, inv_freq)
    angles = np.concatenate([freqs, freqs], axis=-1)[:, None, :]
    return x * np.cos(angles) + rotate_half(x) * np.sin(angles)


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
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(dim)
    scores = scores + np.triu(np.full((n, n), -np.inf), k=1)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
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


def is_moe_layer(cfg, layer):
    if is_mixtral(cfg):
        return True
    step = cfg.get("decoder_sparse_step", 1)
    return (layer not in cfg.get("mlp_only_layers", []) and cfg.get("num_experts", 0) > 0
            and (layer + 1) % step == 0)


def forward(cfg, w, ids):
    h = w["model.embed_tokens.weight"][ids]
    eps = cfg["rms_norm_eps"]
    for layer in range(cfg["num_hidden_layers"]):
        prefix = "model.layers.%d." % layer
        h = h + attention(rms_norm(h, w[prefix + "input_layernorm.weight"], eps), w,
                          prefix + "self_attn.", cfg)
        x = rms_norm(h, w[prefix + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(cfg, layer):
            h = h + moe(x, w, prefix + ("block_sparse_moe." if is_mixtral(cfg) else "mlp."), cfg)
        else:
            h = h + swiglu(x, w, prefix + "mlp.")
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") \
        else w["lm_head.weight"]
    return h @ head.T


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--tokens", required=True, help="comma-separated token ids")
    parser.add_argument("--out", required=True, help="float32 logits, [n][vocab]")
    args = parser.parse_args()
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    ids = np.array([int(t) for t in args.tokens.split(",")], dtype=np.int64)
    logits = forward(cfg, read_weights(args.model_dir), ids)
    logits.astype("<f4").tofile(args.out)


if __name__ == "__main__":
    main()
