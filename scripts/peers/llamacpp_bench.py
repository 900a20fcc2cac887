#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) as a peer of scripts/bench-peers.

    llamacpp_bench.py quantize IN.gguf OUT.gguf q4_0|q8_0
    llamacpp_bench.py bench --gguf FILE [--prompt-tokens P] [--new-tokens N] [--threads T] [--gpu-layers L]

`quantize` calls llama.cpp's own quantizer (llama_model_quantize) with `pure` set, so every
matrix, the embedding and the output head included, gets the one type asked for (the default
mixture would keep the head at Q6_K): the closest match to genprm's q4/q8, which quantize every
linear layer and the embedding/head with groups of 32.

`bench` times the model the way `genprm bench` times itself: a 2-token warm-up, the prefill of
the prompt (i * 7919 + 13) mod vocab with the last position's logits read back and a greedy argmax,
then N decode steps, each evaluating one token and reading back its logits. Prints one JSON object.
"""

import argparse
import json
import sys
import time

import llama_cpp
import numpy as np


def quantize(inp, out, kind):
    ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.pure = True
    params.nthread = 0
    rc = llama_cpp.llama_model_quantize(inp.encode(), out.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize {inp} -> {out} ({kind}) failed: {rc}")


def bench(a):
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=a.gguf,
        n_ctx=max(512, a.prompt_tokens + a.new_tokens + 8),
        n_batch=max(512, a.prompt_tokens),
        n_ubatch=max(512, a.prompt_tokens),
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_gpu_layers=a.gpu_layers,
        logits_all=False,
        verbose=False,
    )
    vocab = llm.n_vocab()

    def step(tokens):
        llm.eval(tokens)
        # The last position's logits, copied out of llama.cpp (Llama.eval no longer keeps them).
        logits = np.array(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,)))
        return int(np.argmax(logits))

    step([1, 1])
    llm.reset()  # the next eval drops the warm-up from the KV cache
    load_s = time.perf_counter() - t0

    prompt = [(i * 7919 + 13) % vocab for i in range(a.prompt_tokens)]
    t1 = time.perf_counter()
    nxt = first = step(prompt)
    prefill_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    for _ in range(a.new_tokens):
        nxt = step([nxt])
    decode_s = time.perf_counter() - t2
    print(json.dumps({
        "load_s": load_s,
        "prefill_tok_s": a.prompt_tokens / prefill_s,
        "ttft_s": prefill_s,
        "decode_tok_s": a.new_tokens / max(decode_s, 1e-9),
        "first_token": first,
        "last_token": nxt,
        "threads": a.threads,
        "gpu_layers": a.gpu_layers,
        "version": f"llama-cpp-python {llama_cpp.__version__}",
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("inp")
    q.add_argument("out")
    q.add_argument("kind", choices=["q4_0", "q8_0"])
    b = sub.add_parser("bench")
    b.add_argument("--gguf", required=True)
    b.add_argument("--prompt-tokens", type=int, default=128)
    b.add_argument("--new-tokens", type=int, default=64)
    b.add_argument("--threads", type=int, required=True)
    b.add_argument("--gpu-layers", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "quantize":
        quantize(a.inp, a.out, a.kind)
    else:
        bench(a)


if __name__ == "__main__":
    main()
