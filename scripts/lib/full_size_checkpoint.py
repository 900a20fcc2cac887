"""Writes a GenPRM-1.5B-sized checkpoint of random bf16 weights (the real shapes, sharded as
Hugging Face shards it: two files and an index) for load-time benchmarks. Values are finite
(normal * 0.02, rounded to bf16), so the loader's checks pass and it does all of its work.

    python3 scripts/lib/full_size_checkpoint.py OUT_DIR TOKENIZER_DIR
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
    "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
    "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 131072,
    "rope_theta": 10000, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
    "bos_token_id": 151646, "eos_token_id": 151643, "torch_dtype": "bfloat16",
    "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 21,
}


def tensors():
    c = CONFIG
    h, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (vocab, h)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        yield f"{p}.self_attn.q_proj.weight", (q, h)
        yield f"{p}.self_attn.q_proj.bias", (q,)
        yield f"{p}.self_attn.k_proj.weight", (kv, h)
        yield f"{p}.self_attn.k_proj.bias", (kv,)
        yield f"{p}.self_attn.v_proj.weight", (kv, h)
        yield f"{p}.self_attn.v_proj.bias", (kv,)
        yield f"{p}.self_attn.o_proj.weight", (h, q)
        yield f"{p}.mlp.gate_proj.weight", (inter, h)
        yield f"{p}.mlp.up_proj.weight", (inter, h)
        yield f"{p}.mlp.down_proj.weight", (h, inter)
        yield f"{p}.input_layernorm.weight", (h,)
        yield f"{p}.post_attention_layernorm.weight", (h,)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (vocab, h)


def bf16(rng, shape):
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.uint16)
    step = 1 << 24
    for s in range(0, n, step):
        x = (rng.standard_normal(min(step, n - s), dtype=np.float32) * 0.02).view(np.uint32)
        out[s:s + step] = ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16)
    return out


def write_shard(path, items, rng):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in items:
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in items:
            bf16(rng, shape).tofile(f)


def main():
    out, tok = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    items = list(tensors())
    half = len(items) // 2
    shards = {"model-00001-of-00002.safetensors": items[:half], "model-00002-of-00002.safetensors": items[half:]}
    weight_map = {}
    for file, part in shards.items():
        write_shard(os.path.join(out, file), part, rng)
        weight_map.update({name: file for name, _ in part})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(tok, name)):
            shutil.copy(os.path.join(tok, name), out)


if __name__ == "__main__":
    main()
