#!/usr/bin/env python3
"""Hugging Face transformers (PyTorch, f32) as a peer of scripts/bench-peers.

    hf_bench.py --model DIR [--prompt-tokens P] [--new-tokens N] [--threads T] [--device cpu|cuda]

Timed the way `genprm bench` times itself: load and a 2-token warm-up, the prefill of the prompt
(i * 7919 + 13) mod vocab with the last position's logits brought to the host and a greedy argmax,
then N decode steps with the KV cache (past_key_values), each bringing its logits to the host.
Prints one JSON object.
"""

import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()

    t0 = time.perf_counter()
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(dev).eval()
    vocab = model.config.vocab_size

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(ids, past):
        out = model(torch.tensor([ids], device=dev), past_key_values=past, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1].float().cpu()
        return int(torch.argmax(logits)), out.past_key_values

    with torch.inference_mode():
        step([1, 1], None)
        sync()
        load_s = time.perf_counter() - t0
        prompt = [(i * 7919 + 13) % vocab for i in range(a.prompt_tokens)]
        t1 = time.perf_counter()
        nxt, past = step(prompt, None)
        first = nxt
        prefill_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        for _ in range(a.new_tokens):
            nxt, past = step([nxt], past)
        decode_s = time.perf_counter() - t2
    result = {
        "load_s": load_s,
        "prefill_tok_s": a.prompt_tokens / prefill_s,
        "ttft_s": prefill_s,
        "decode_tok_s": a.new_tokens / max(decode_s, 1e-9),
        "first_token": first,
        "last_token": nxt,
        "threads": torch.get_num_threads(),
        "version": f"transformers {transformers.__version__}, torch {torch.__version__}",
    }
    if dev.type == "cuda":
        result["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
