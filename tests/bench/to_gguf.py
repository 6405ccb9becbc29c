# A moerun model folder (Qwen3-MoE, bf16 safetensors: make-model's small
# preset) as a GGUF file for llama.cpp, with llama.cpp's own GGUF writer
# (gguf-py, from the llama.cpp source bench_anchor.sh builds), so that
# llama.cpp runs the same weights beside moerun on the same machine.
# Matrices stay bf16 and an expert's three matrices are stacked per layer,
# as llama.cpp's convert_hf_to_gguf.py writes them; norms become f32, which
# its CPU kernels need.  That converter itself imports torch, which Debian
# does not package.
#
#   PYTHONPATH=LLAMA_CPP/gguf-py python3 tests/bench/to_gguf.py MODEL_DIR OUT.gguf
import json
import struct
import sys

import gguf
import numpy as np

model_dir, out_path = sys.argv[1], sys.argv[2]
config = json.load(open(f"{model_dir}/config.json"))
if config.get("model_type") != "qwen3_moe":
    sys.exit(f"to_gguf: {model_dir}/config.json: model_type {config.get('model_type')!r}, "
             "only qwen3_moe is converted")

weights_path = f"{model_dir}/model.safetensors"
with open(weights_path, "rb") as f:
    header_len = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(header_len))
data = np.memmap(weights_path, dtype=np.uint8, mode="r")


def bf16(name):
    """The tensor's bf16 values as uint16, in its shape."""
    t = header[name]
    if t["dtype"] != "BF16":
        sys.exit(f"to_gguf: {weights_path}: {name} is {t['dtype']}, only BF16 is converted")
    begin, end = t["data_offsets"]
    raw = data[8 + header_len + begin:8 + header_len + end]
    return np.frombuffer(raw, dtype=np.uint16).reshape(t["shape"])


layers, experts = config["num_hidden_layers"], config["num_experts"]
out = gguf.GGUFWriter(out_path, "qwen3moe")
out.add_block_count(layers)
out.add_context_length(config["max_position_embeddings"])
out.add_embedding_length(config["hidden_size"])
out.add_feed_forward_length(config["intermediate_size"])
out.add_head_count(config["num_attention_heads"])
out.add_head_count_kv(config["num_key_value_heads"])
out.add_key_length(config["head_dim"])
out.add_value_length(config["head_dim"])
out.add_rope_freq_base(config["rope_theta"])
out.add_layer_norm_rms_eps(config["rms_norm_eps"])
out.add_expert_count(experts)
out.add_expert_used_count(config["num_experts_per_tok"])
out.add_expert_feed_forward_length(config["moe_intermediate_size"])
out.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)

# The tokenizer: byte-level BPE with Qwen2's pre-tokenizer regex, its
# special tokens (added_tokens) as control tokens.
tokenizer = json.load(open(f"{model_dir}/tokenizer.json"))
ids = dict(tokenizer["model"]["vocab"])
special = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
ids.update(special)
# Ids the tokenizer leaves without text (none in make-model's presets)
# still need a distinct entry.
tokens = [f"[UNUSED_{i}]" for i in range(config["vocab_size"])]
for text, i in ids.items():
    tokens[i] = text
control = set(special.values())
out.add_tokenizer_model("gpt2")
out.add_tokenizer_pre("qwen2")
out.add_token_list(tokens)
out.add_token_types([gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL
                     for i in range(len(tokens))])
out.add_token_merges(tokenizer["model"]["merges"])
out.add_eos_token_id(config["eos_token_id"])


def put(name, values):
    if values.ndim == 1:  # bf16 to f32: the same value in the upper half
        out.add_tensor(name, (values.astype(np.uint32) << 16).view(np.float32))
    else:
        out.add_tensor(name, values, raw_shape=values.shape,
                       raw_dtype=gguf.GGMLQuantizationType.BF16)


put("token_embd.weight", bf16("model.embed_tokens.weight"))
put("output_norm.weight", bf16("model.norm.weight"))
put("output.weight", bf16("lm_head.weight"))
for layer in range(layers):
    hf, ll = f"model.layers.{layer}.", f"blk.{layer}."
    for ours, theirs in [("input_layernorm", "attn_norm"),
                         ("post_attention_layernorm", "ffn_norm"),
                         ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                         ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                         ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"),
                         ("mlp.gate", "ffn_gate_inp")]:
        put(f"{ll}{theirs}.weight", bf16(f"{hf}{ours}.weight"))
    for ours, theirs in [("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"),
                         ("down_proj", "ffn_down_exps")]:
        put(f"{ll}{theirs}.weight",
            np.stack([bf16(f"{hf}mlp.experts.{e}.{ours}.weight") for e in range(experts)]))
out.write_header_to_file()
out.write_kv_data_to_file()
out.write_tensors_to_file()
out.close()
