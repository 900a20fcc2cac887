#!/usr/bin/env python3
"""Where a decode step's time goes: samples a benchmark run with `perf` (cpu-clock, DWARF call
stacks), drops the loading phase, and sorts the remaining samples into buckets by their stacks.

    profile_decode.py genprm  --bin GENPRM --model DIR --quant q4|q8|f32 [--prompt-tokens P] [--new-tokens N]
    profile_decode.py llama   --python PY --gguf FILE [--prompt-tokens P] [--new-tokens N]
    profile_decode.py report  PERF_DATA genprm|llama

The prompt is kept short (8 tokens by default) so that the samples after loading are almost all
decode steps. Percentages are shares of CPU samples over all threads (a thread that sleeps is not
sampled; one that spins is); with the decode time per step they give milliseconds per bucket.
Needs `perf` (Debian: linux-perf) and a kernel that allows it (perf_event_paranoid <= 2 as root).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))

# (bucket, regex over the frames of one sample, leaf first); the first match wins.
GENPRM_BUCKETS = [
    ("load (reading, bf16→f32, quantizing)", r"Loader<|QuantMatrix::quantize|read_f32|read_rows_f32|RandomWeights"),
    ("quantized mat-vec (q/k/v/o, MLP, lm_head)", r"quant::row_dot|quant::dot_q|quant::x86::|quant::block_dot|quant::tile|QuantActs|QuantMatrix::matmul|QuantMatrix::dequantize"),
    ("sampling + logits readback", r"sampling::argmax|try_into_data|into_data|host_values"),
    ("attention (QKᵀ, softmax, ·V, RoPE, KV cache cat)", r"Qwen2Model::attention|model::rotate|KvCache|softmax|causal_mask|rope_tables"),
    ("f32 matmul (gemm crate)", r"gemm_f32|gemm_common|gemm::"),
    ("RMSNorm, SiLU, residual adds, embedding (burn ops)", r"RmsNorm|silu|burn_flex|burn_tensor|burn_backend|ndarray"),
    ("thread pool (rayon: wake, steal, spin)", r"rayon|crossbeam|futex|std::thread|sched_yield|__sched"),
    ("memory (malloc/free, page faults, memcpy)", r"malloc|free|memmove|memcpy|memset|page_fault|clear_page|mmap|munmap|alloc::"),
]
LLAMA_BUCKETS = [
    ("load", r"llama_model_load|llama_model_loader|load_all_data|gguf_init_from_file|llama_model_quantize"),
    ("quantized mat-vec/mat-mul (ggml_vec_dot_*, gemv/gemm)", r"ggml_vec_dot_q|ggml_gemv|ggml_gemm|quantize_row_q8|ggml_compute_forward_mul_mat|llamafile_sgemm|tinyBLAS"),
    ("attention (flash attn, softmax, rope, KV copy)", r"flash_attn|soft_max|rope|ggml_compute_forward_cpy|ggml_compute_forward_set_rows|get_rows"),
    ("norm, silu, adds", r"rms_norm|swiglu|silu|glu|ggml_compute_forward_add|ggml_compute_forward_mul\b|ggml_vec_mul|ggml_vec_add"),
    ("sampling + logits readback (Python)", r"numpy|_PyEval|PyObject|argmax|llama_get_logits|ctypes"),
    ("thread pool (OpenMP barrier/spin)", r"gomp|GOMP|omp_|ggml_barrier|sched_yield|futex"),
    ("memory (page faults, memcpy)", r"memmove|memcpy|memset|page_fault|clear_page"),
]


def frames_of(perf_data):
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "tid,time,ip,sym"], capture_output=True, text=True).stdout
    sample = None
    for line in out.splitlines():
        if not line.strip():
            if sample:
                yield sample
            sample = None
            continue
        if not line.startswith(("\t", " ")):
            m = re.match(r"\s*(\d+)\s+([\d.]+):", line)
            sample = {"tid": int(m.group(1)) if m else 0, "time": float(m.group(2)) if m else 0.0, "frames": []}
        elif sample is not None:
            # "<address> <symbol>"
            sample["frames"].append(line.strip().split(" ", 1)[-1])
    if sample:
        yield sample


def report(perf_data, kind, decode_s=None, steps=None):
    buckets = GENPRM_BUCKETS if kind == "genprm" else LLAMA_BUCKETS
    compiled = [(name, re.compile(rx)) for name, rx in buckets]
    samples = list(frames_of(perf_data))
    if not samples:
        sys.exit("no samples (is perf allowed here?)")
    load_end = 0.0
    for s in samples:
        if re.search(compiled[0][1], "\n".join(s["frames"])):
            load_end = max(load_end, s["time"])
    counts = Counter()
    leaf = Counter()
    for s in samples:
        if s["time"] <= load_end:
            continue
        stack = "\n".join(s["frames"])
        name = next((n for n, rx in compiled[1:] if rx.search(stack)), "other")
        counts[name] += 1
        if s["frames"]:
            leaf[re.sub(r"\s*\(inlined\)", "", s["frames"][0])[:90]] += 1
    total = sum(counts.values())
    rows = []
    for name, _ in buckets[1:] + [("other", None)]:
        if counts[name]:
            rows.append((name, counts[name], 100.0 * counts[name] / total))
    result = {"samples_after_load": total, "buckets": rows, "top_leaf_symbols": leaf.most_common(12)}
    if decode_s and steps:
        result["ms_per_step"] = 1000.0 * decode_s / steps
    return result


def print_result(title, r):
    print(f"### {title}\n")
    if "ms_per_step" in r:
        print(f"Decode: {r['ms_per_step']:.1f} ms per step (wall). CPU samples after loading: {r['samples_after_load']}.\n")
    print("| where | share of CPU samples | ms per decode step (approx.) |\n|---|---|---|")
    for name, n, pct in r["buckets"]:
        ms = f"{r['ms_per_step'] * pct / 100:.1f}" if "ms_per_step" in r else ""
        print(f"| {name} | {pct:.1f}% | {ms} |")
    print("\nTop leaf functions: " + ", ".join(f"`{s}` {100.0 * n / max(1, r['samples_after_load']):.1f}%" for s, n in r["top_leaf_symbols"][:8]) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("genprm")
    g.add_argument("--bin", required=True)
    g.add_argument("--model", required=True)
    g.add_argument("--quant", default="q4")
    l = sub.add_parser("llama")
    l.add_argument("--python", required=True)
    l.add_argument("--gguf", required=True)
    for p in (g, l):
        p.add_argument("--prompt-tokens", type=int, default=8)
        p.add_argument("--new-tokens", type=int, default=48)
        p.add_argument("--threads", type=int, default=os.cpu_count())
    r = sub.add_parser("report")
    r.add_argument("data")
    r.add_argument("kind", choices=["genprm", "llama"])
    a = ap.parse_args()
    if a.cmd == "report":
        print_result(a.data, report(a.data, a.kind))
        return
    data = tempfile.mktemp(suffix=".perf.data")
    if a.cmd == "genprm":
        cmd = [a.bin, "bench", "--model", a.model, "--quant", a.quant, "--prompt-tokens", str(a.prompt_tokens),
               "--new-tokens", str(a.new_tokens), "--json"]
        title = f"genprm {a.quant} (CPU, flex)"
    else:
        cmd = [a.python, os.path.join(HERE, "llamacpp_bench.py"), "bench", "--gguf", a.gguf, "--prompt-tokens",
               str(a.prompt_tokens), "--new-tokens", str(a.new_tokens), "--threads", str(a.threads)]
        title = f"llama.cpp {os.path.basename(a.gguf)} (CPU)"
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    proc = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "199", "--call-graph", "dwarf,16384", "-o", data, "--"] + cmd,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"perf record failed: {proc.stderr[-1500:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    m = json.loads(line)
    m = m.get("result", m)
    decode_s = a.new_tokens / m["decode_tok_s"]
    res = report(data, "genprm" if a.cmd == "genprm" else "llama", decode_s, a.new_tokens)
    res["decode_tok_s_under_perf"] = m["decode_tok_s"]
    print_result(title, res)
    os.unlink(data)


if __name__ == "__main__":
    main()
