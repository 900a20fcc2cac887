#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (fuzz/corpus/<target>/seed-*) from the test
fixtures and hand-made examples. Run from the repository root; libFuzzer grows the corpora from
these, and the minimized corpora are committed."""
import json, os, struct, hashlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read(*p):
    with open(os.path.join(*p), "rb") as f:
        return f.read()


def st(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


# safetensors
f32 = struct.pack("<4f", 1.5, -2.0, 0.25, 3.0)
put("safetensors", "f32", st({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": {"format": "pt"}}, f32))
put("safetensors", "mixed", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                "b": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [8, 10]},
                                "c": {"dtype": "F16", "shape": [1], "data_offsets": [10, 12]},
                                "d": {"dtype": "I64", "shape": [1], "data_offsets": [12, 20]}}, bytes(20)))
put("safetensors", "overlap", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
put("safetensors", "nan", st({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, struct.pack("<f", float("nan"))))
put("safetensors", "wrap", st({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 2], "data_offsets": [0, 0]}}))
put("safetensors", "scalar", st({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, f32[:4]))
shard = read(FIX, "tiny-sharded-bf16", "model-00004-of-00004.safetensors")
n = struct.unpack("<Q", shard[:8])[0]
put("safetensors", "fixture-head", shard[: 8 + n + 64])

# safetensors_index
idx = read(FIX, "tiny-sharded-bf16", "model.safetensors.index.json")
put("safetensors_index", "fixture", idx)
j = json.loads(idx)
k = next(iter(j["weight_map"]))
for name, v in [("abs", "/dev/zero"), ("dotdot", "../x.safetensors"), ("dot", "./a"), ("empty", ""), ("win", "C:\\x")]:
    jj = json.loads(idx)
    jj["weight_map"][k] = v
    put("safetensors_index", name, json.dumps(jj))

# pack_manifest: a manifest, a NUL, the one shard's bytes
def manifest(tensors, scale_dtype=None):
    m = {"format": "genprm-pack", "version": 1, "quant": "q8", "group_size": 32,
         "config_sha256": hashlib.sha256(b"{}").hexdigest(), "shards": [], "tensors": tensors}
    if scale_dtype:
        m["scale_dtype"] = scale_dtype
    return json.dumps(m).encode()

t_f32 = {"name": "norm", "kind": "f32", "shape": [4], "offset": 0, "values_bytes": 16, "scales_bytes": 0}
t_q8 = {"name": "w8", "kind": "q8", "shape": [1, 32], "offset": 16, "values_bytes": 32, "scales_bytes": 4}
t_q4 = {"name": "w4", "kind": "q4", "shape": [2, 32], "offset": 52, "values_bytes": 32, "scales_bytes": 8}
payload = f32 + bytes(range(32)) + struct.pack("<f", 0.01) + bytes(range(32)) + struct.pack("<2f", 0.1, 0.2)
put("pack_manifest", "three", manifest([t_f32, t_q8, t_q4]) + b"\0" + payload)
t_q8h = dict(t_q8, scales_bytes=2)
put("pack_manifest", "f16", manifest([t_f32, t_q8h], "f16") + b"\0" + f32 + bytes(32) + b"\x00\x3c")
put("pack_manifest", "wrap", manifest([dict(t_f32, offset=2**64 - 1)]) + b"\0" + f32)
put("pack_manifest", "overlap", manifest([t_f32, dict(t_f32, name="b")]) + b"\0" + f32)
mm = json.loads(manifest([t_f32]))
mm["shards"] = [{"file": "../../etc/passwd", "bytes": 16, "sha256": "0" * 64}]
put("pack_manifest", "escape", json.dumps(mm))

# config
for m in ["tiny-gqa-f32", "tiny-mha-tied-f16", "tiny-sharded-bf16", "tiny-real-vocab", "tiny-genprm"]:
    put("config", m, read(FIX, m, "config.json"))
base = json.loads(read(FIX, "tiny-genprm", "config.json"))
put("config", "huge-layers", json.dumps(dict(base, num_hidden_layers=10**18)))
put("config", "rope5", json.dumps(dict(base, rope_parameters={"rope_theta": 1e6, "rope_type": "default"})))

# tokenizer_config (+ NUL + chat template) and chat_template
for m in ["tiny-genprm", "tiny-real-vocab"]:
    cfg = read(FIX, m, "tokenizer_config.json")
    put("tokenizer_config", m, cfg)
    put("tokenizer_config", m + "-template", cfg + b"\0" + read(FIX, m, "chat_template.jinja"))
    put("chat_template", m, read(FIX, m, "chat_template.jinja"))
put("tokenizer_config", "list", json.dumps({"bos_token": {"content": "<｜begin▁of▁sentence｜>"}, "add_bos_token": True,
                                            "chat_template": [{"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"}]}))
for t in ["deepseek_r1_distill_original.jinja", "deepseek_r1_distill_think.jinja"]:
    put("chat_template", t, read(ROOT, "crate", "src", "templates", t))
put("chat_template", "loop", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
put("chat_template", "raise", "{{ raise_exception('no') }}")
put("chat_template", "pycompat", "{% for m in messages %}{{ m.content.strip().split('\\n')[0].upper() }}{% endfor %}")

# solutions
put("solutions", "one", json.dumps({"problem": "2+3?", "steps": ["2+3=5", "So 5.", ""]}))
put("solutions", "processbench", json.dumps([{"id": "gsm8k-0", "generator": "Qwen2-7B", "problem": "p", "steps": ["a", "b"],
                                              "final_answer_correct": False, "label": 1},
                                             {"id": "gsm8k-0", "problem": "q", "steps": ["<｜Assistant｜> c"], "label": -1}]))
put("solutions", "text", "a\nb\n\nc\r\n\r\n\n\nd  <｜end▁of▁sentence｜><｜User｜>")
put("solutions", "bad", "{\"problem\": \"p\",\n \"steps\": [\"a\",]}")

# grade_rows: first byte even = CSV, odd = JSON Lines
put("grade_rows", "csv", b"\0" + "Student_ID,problem,solution,steps,label,comment\ns1,\"2+3?\",\"2+3=5.\n\nSo 5.\",,-1,fine\ns2,\"6*7?\",,\"[\"\"6*7 = 42.\"\"]\",0,\n,,,,,\n".encode())
put("grade_rows", "csv-bad", b"\0" + b"id,problem,steps,solution,label\na,p,\"[\"\"x\"\"]\",,\nb,p,not json,,\nh,p\ni,p,\"[\"\"x\"\"]\",,,extra\nk,p\xff,\"[\"\"x\"\"]\",,\nz,p,\"open\n")
put("grade_rows", "jsonl", b"\1" + "\ufeff{\"id\": \"a\", \"problem\": \"2+3?\", \"steps\": [\"2+3=5\"], \"label\": -1}\n\n{\"student_id\": 17, \"problem\": \"6*7?\", \"solution\": \"6*7 = 42.\\n\\nThe answer is 42.\\n\"}\r\n{\"id\": \"a\", \"problem\": \"p\", \"steps\": [\"x\"]}\n{\"problem\": 5}\n[1]\n{\"problem\": \"p\", \"steps\": [\"a\", 3]".encode())

# resume
res = {"line": 1, "id": "a", "status": "graded", "rewards": [0.25], "first_error_step": 0,
       "scores": {"min": 0.25, "last": 0.25, "mean": 0.25}, "label": 0, "agreement": True, "steps": []}
bad = {"line": 2, "status": "bad_row", "error": "missing field `problem`", "rewards": [], "first_error_step": None,
       "scores": None, "label": None, "agreement": None, "steps": []}
put("resume", "results", json.dumps(res) + "\n" + json.dumps(bad) + "\n{\"line\": 3, \"sta")
put("resume", "predictions", json.dumps({"id": "math-1", "subset": "math", "label": 1, "prediction": 1, "rewards": [0.9, 0.1]}) + "\nnot json\n")

# model_output
put("model_output", "code", "<analyze>\nThe step adds.\n</analyze>\n<verify>\n```python\nprint(2+3)\n```\n</verify>\n<output>\n5\n</output>\nIs the step correct (Yes/No)? $\\boxed{Yes}$")
put("model_output", "two-blocks", "```python\na = 1\n```\ntext\n```python\nprint(a)\n```\n```py\nx\n```")
put("model_output", "no", "maybe no} then $\\boxed{Yes}$ \x1b[31m red \x1b]0;title\x07")

# openai_response
put("openai_response", "vllm", json.dumps({"choices": [{"text": "{Yes}$\n</output>\n", "finish_reason": "stop", "stop_reason": "</output>\n",
    "logprobs": {"tokens": ["token_id:1", "token_id:7", "token_id:2"],
                 "top_logprobs": [{"token_id:1": 0.0}, {"token_id:7": -0.1, "token_id:9": -2.5, "token_id:3": -4.0}, {"token_id:2": 0.0}]}}]}))
put("openai_response", "llamacpp", json.dumps({"choices": [{"text": "x = 1\nprint(x)", "finish_reason": "stop",
    "logprobs": {"tokens": ["x", " =", " 1", "\n", "print", "(x)", "\n", "```", "\n", "Yes"], "top_logprobs": [{}, {}, {}, {}, {}, {}, {}, {}, {}, {"Yes": -0.2, "No": -1.8}]}}]}))
put("openai_response", "impossible", '{"choices":[{"text":"{Yes}","logprobs":{"tokens":["token_id:7"],"top_logprobs":[{"token_id:7":1e39}]}}]}')
put("openai_response", "empty", '{"choices":[]}')
