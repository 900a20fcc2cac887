#!/usr/bin/env python3
"""Writes one Hugging Face Qwen2 checkpoint with random weights at a benchmark shape, for every
peer of scripts/bench-peers to load (genprm, transformers, and llama.cpp/candle after conversion to
GGUF), so all of them run identical weights.

    make_random_checkpoint.py --shape qwen2-1.5b|qwen2-small --tokenizer DIR --out DIR [--seed S]

The shapes are those of `genprm bench --random-shape` (crate/src/bench/mod.rs): qwen2-1.5b is
GenPRM-1.5B (DeepSeek-R1-Distill-Qwen-1.5B: hidden 1536, 28 layers, 12 heads, 2 KV heads,
intermediate 8960, vocabulary 151936, untied lm_head); qwen2-small is a quarter of the widths and
4 layers. The weights are stored as bfloat16, as the real checkpoint is, so every peer upcasts or
quantizes the same values. The distribution follows genprm's random weights: uniform with unit
variance scaled by 1/sqrt(fan-in) for matrices, 1 + 0.1*u for norms, 0.1*u for biases.

Needs only numpy: the safetensors file is written directly (header, then each tensor streamed),
so the peak memory is one tensor.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

BASE = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "attention_dropout": 0.0,
    "bos_token_id": 151646,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 131072,
    "max_window_layers": 21,
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

SHAPES = {
    "qwen2-1.5b": {},
    # crate/src/bench/mod.rs qwen2_small(): same architecture, 1/4 of the widths, 4 layers.
    "qwen2-small": {
        "hidden_size": 384,
        "intermediate_size": 2240,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "num_key_value_heads": 1,
        "max_window_layers": 4,
    },
}

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"]


def tensors(c):
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = h // nh
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (nh * hd, h)),
            (p + "self_attn.q_proj.bias", (nh * hd,)),
            (p + "self_attn.k_proj.weight", (kv * hd, h)),
            (p + "self_attn.k_proj.bias", (kv * hd,)),
            (p + "self_attn.v_proj.weight", (kv * hd, h)),
            (p + "self_attn.v_proj.bias", (kv * hd,)),
            (p + "self_attn.o_proj.weight", (h, nh * hd)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
        ]
    out.append(("model.norm.weight", (h,)))
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h)))
    return out


def to_bf16(x):
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    b = x.astype(np.float32).view(np.uint32)
    b = b + 0x7FFF + ((b >> 16) & 1)
    return (b >> 16).astype(np.uint16)


def values(rng, name, shape):
    u = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    if name.endswith("norm.weight"):
        return 1.0 + 0.1 * u
    if len(shape) == 2:
        return u * np.float32(1.732 / np.sqrt(shape[1]))
    return 0.1 * u


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    config = dict(BASE, **SHAPES[a.shape])
    stamp = {"shape": a.shape, "seed": a.seed, "dtype": "bfloat16", "generator": "scripts/peers/make_random_checkpoint.py v1"}
    stamp_path = os.path.join(a.out, "random-checkpoint.json")
    if os.path.exists(stamp_path) and json.load(open(stamp_path)) == stamp:
        print(f"{a.out}: already written ({a.shape}, seed {a.seed})", file=sys.stderr)
        return
    os.makedirs(a.out, exist_ok=True)

    specs = tensors(config)
    header, offset = {}, 0
    for name, shape in specs:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = os.path.join(a.out, "model.safetensors.tmp")
    rng = np.random.default_rng(a.seed)
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, shape in specs:
            if len(shape) == 2 and shape[0] > 65536:
                # Large matrices (embedding, lm_head) in row blocks to bound memory.
                for r in range(0, shape[0], 16384):
                    rows = min(16384, shape[0] - r)
                    f.write(to_bf16(values(rng, name, (rows, shape[1]))).tobytes())
            else:
                f.write(to_bf16(values(rng, name, shape)).tobytes())
    os.replace(tmp, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False}, f, indent=2)
    for name in TOKENIZER_FILES:
        src = os.path.join(a.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(a.out, name))
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    params = sum(int(np.prod(s)) for _, s in specs)
    print(f"{a.out}: {a.shape}, {params / 1e9:.3f}B parameters, bf16, seed {a.seed}", file=sys.stderr)


if __name__ == "__main__":
    main()
