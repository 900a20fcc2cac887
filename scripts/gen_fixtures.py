#!/usr/bin/env python3
"""Generate the committed test fixtures: tiny random Qwen2 checkpoints with the logits and greedy
continuations Hugging Face transformers computes for them, plus the tokenizer and chat-template
expectations from the Python `tokenizers` library and jinja2.

Run through `scripts/gen-fixtures` (it makes the virtual environment). Everything written lands in
`tests/fixtures/`; the Rust tests read it from there and never run Python.

Layout written:
  tests/fixtures/tokenizer/            tokenizer.json, tokenizer_config.json, chat_template.jinja (real
                                       DeepSeek-R1-Distill-Qwen files), corpus.json (texts -> ids),
                                       chat.json (message lists -> rendered prompts)
  tests/fixtures/models/<name>/        a Hugging Face checkpoint directory + expected.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import jinja2
import torch
from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
GREEDY_TOKENS = 24
PROMPT_LEN = 24


def randomize(model: Qwen2ForCausalLM, seed: int) -> None:
    """Weights of a size that keeps activations and logits of order one, so that argmax is not a
    near-tie and a 1e-4 tolerance is meaningful. Norm weights and biases are non-trivial too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in**0.5))


def greedy(model: Qwen2ForCausalLM, ids: list[int], n: int) -> list[int]:
    """Greedy continuation by full re-forward each step (no cache), the plainest reference."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([out])).logits[0, -1]
            out.append(int(torch.argmax(logits)))
    return out[len(ids):]


def make_model(name: str, *, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int,
               inter: int, tie: bool, theta: float, dtype: torch.dtype, seed: int,
               head_dim: int | None = None, shard_size: str | None = None,
               prompt_ids: list[int] | None = None, sample_indices: int | None = None,
               bos: int = 1, eos: int = 2, extra_files: dict[str, Path] | None = None,
               legacy_config: bool = False) -> None:
    out = FIX / "models" / name
    if out.exists():
        shutil.rmtree(out)
    kwargs = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        rope_theta=theta, rms_norm_eps=1e-6, tie_word_embeddings=tie, use_sliding_window=False,
        max_window_layers=layers, attention_dropout=0.0, bos_token_id=bos, eos_token_id=eos,
    )
    if head_dim is not None:
        kwargs["head_dim"] = head_dim
    cfg = Qwen2Config(**kwargs)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    randomize(model, seed)
    model = model.to(dtype)
    save_kwargs = {"safe_serialization": True}
    if shard_size:
        save_kwargs["max_shard_size"] = shard_size
    model.save_pretrained(out, **save_kwargs)
    if legacy_config:
        # Rewrite config.json as transformers 4.x wrote it (and as GenPRM's checkpoints are
        # published): top-level rope_theta and rope_scaling, torch_dtype, no layer_types.
        cpath = out / "config.json"
        c = json.loads(cpath.read_text())
        rope = c.pop("rope_parameters", {})
        c["rope_theta"] = rope.get("rope_theta", theta)
        c["rope_scaling"] = None
        c["torch_dtype"] = c.pop("dtype", str(dtype).removeprefix("torch."))
        c.pop("layer_types", None)
        c["sliding_window"] = 4096
        c["transformers_version"] = "4.48.2"
        cpath.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    for dst, src in (extra_files or {}).items():
        (out / dst).symlink_to(Path("..") / ".." / src.relative_to(FIX))

    # The reference: the saved file read back and computed in f32, as genprm does.
    ref = Qwen2ForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    rng = random.Random(seed)
    if prompt_ids is None:
        prompt_ids = [rng.randrange(vocab) for _ in range(PROMPT_LEN)]
    with torch.no_grad():
        logits = ref(torch.tensor([prompt_ids])).logits[0]  # [T, V]
    expected: dict = {"prompt_ids": prompt_ids, "dtype": str(dtype).removeprefix("torch.")}
    if sample_indices is None:
        expected["logit_indices"] = None
        expected["logits"] = logits.tolist()
    else:
        # The full vocabulary would be megabytes per position: keep each position's top 32 and a
        # fixed random sample, the same indices for every position.
        idx = set(rng.sample(range(vocab), sample_indices))
        for row in logits:
            idx.update(int(i) for i in torch.topk(row, 32).indices)
        idx = sorted(idx)
        expected["logit_indices"] = idx
        expected["logits"] = logits[:, idx].tolist()
    expected["greedy_ids"] = greedy(ref, prompt_ids, GREEDY_TOKENS)
    (out / "expected.json").write_text(json.dumps(expected))
    print(f"{name}: {sum(f.stat().st_size for f in out.iterdir() if f.is_file() and not f.is_symlink())} bytes")


def tokenizer_fixtures(shared: Path) -> Tokenizer:
    src = shared / "data" / "tokenizer" / "deepseek-r1-distill-qwen-1.5b"
    dst = FIX / "tokenizer"
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        shutil.copyfile(src / f, dst / f)
    tok = Tokenizer.from_file(str(dst / "tokenizer.json"))

    # Corpus: ProcessBench problems and steps (a fixed sample from each subset) and the protocol's own strings.
    rng = random.Random(1234)
    texts: list[str] = []
    for subset in ("gsm8k", "math", "olympiadbench", "omnimath"):
        records = json.loads((shared / "data" / "processbench" / f"{subset}.json").read_text())
        for rec in rng.sample(records, 12):
            texts.append(rec["problem"])
            texts.extend(rng.sample(rec["steps"], min(3, len(rec["steps"]))))
    texts += [
        "<analyze>\nLet's analyze the Paragraph 1 step by step: ",
        "<verify>\nLet's use python code to find any potential error:\n```python\n",
        "<output>\n**Judgement**: $\\boxed",
        "</analyze>\n", "\n```\n", "</output>\n", "[Code Output]\n\n```\n5050\n```\n",
        "Yes", "No", "{Yes}", "  leading spaces and trailing   ", "tabs\tand\r\nCRLF\n\n\nnewlines",
        "don't won't it's I'm we'll they'd you've", "数学题 中文 テスト 한국어 🙂 émoji café",
        "<｜User｜>hello<｜Assistant｜>hi<｜end▁of▁sentence｜>", "x = 10**12 + 3.14159e-7",
        "",
    ]
    corpus = []
    for t in texts:
        with_special = tok.encode(t, add_special_tokens=True).ids
        plain = tok.encode(t, add_special_tokens=False).ids
        corpus.append({"text": t, "ids": with_special, "ids_no_special": plain,
                       "decoded": tok.decode(plain, skip_special_tokens=False)})
    (dst / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False, indent=0))

    # Chat template: the updated template from the checkpoint and the original (January 2025) one,
    # which differs only in the generation prompt (no "<think>\n").
    updated = (src / "chat_template.jinja").read_text()
    suffix = "{{'<｜Assistant｜><think>\\n'}}"
    assert suffix in updated
    original = updated.replace(suffix, "{{'<｜Assistant｜>'}}")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders chat templates
    sys_prompt = ("You are a math teacher. Your task is to review and critique the paragraphs in solution "
                  "step by step.")
    records = json.loads((shared / "data" / "processbench" / "math.json").read_text())
    cases = []
    for rec in records[:4]:
        steps = rec["steps"][:3]
        msgs = [{"role": "system", "content": sys_prompt},
                {"role": "user", "content": f"Question: {rec['problem']}\n\n{steps[0]}"}]
        for i, s in enumerate(steps[1:], start=1):
            msgs.append({"role": "assistant", "content": f"<analyze>\nLet's analyze the Paragraph {i} step by step: fine.\n</analyze>\n<output>\n**Judgement**: $\\boxed{{Yes}}$\n</output>\n"})
            msgs.append({"role": "user", "content": s})
        cases.append(msgs)
    cases.append([{"role": "user", "content": "no system prompt"},
                  {"role": "assistant", "content": "thinking</think>answer"},
                  {"role": "user", "content": "again"}])
    chat = []
    for variant, text in (("think", updated), ("original", original)):
        tmpl = env.from_string(text)
        for msgs in cases:
            for gen in (False, True):
                rendered = tmpl.render(messages=msgs, add_generation_prompt=gen,
                                       bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>")
                chat.append({"variant": variant, "add_generation_prompt": gen, "messages": msgs,
                             "rendered": rendered,
                             "ids": tok.encode(rendered, add_special_tokens=False).ids})
    (dst / "chat.json").write_text(json.dumps(chat, ensure_ascii=False, indent=0))
    (dst / "chat_template_original.jinja").write_text(original)
    print(f"tokenizer: {len(corpus)} corpus texts, {len(chat)} chat renderings")
    return tok


def rationale(k: int, verdict: str = "Yes") -> str:
    """A GenPRM-format assistant turn for paragraph k (1-based), with code and its output."""
    return (f"<analyze>\nLet's analyze the Paragraph {k} step by step: The paragraph computes a value.\n</analyze>\n"
            "<verify>\nLet's use python code to find any potential error:\n```python\n"
            f"print({k} * 2)\n```\n[Code Output]\n\n```\n{k * 2}\n```\nThe code confirms it.\n</verify>\n"
            f"<output>\n**Judgement**: $\\boxed{{{verdict}}}$\n</output>\n")


def protocol_fixtures(shared: Path) -> None:
    """The exact prompts of the official implementation (build_prompt + forced analyze prefix)
    for real ProcessBench records, both styles, rendered by transformers' apply_chat_template."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(FIX / "tokenizer"))
    system = "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step."
    records = []
    for subset, idx in (("math", 0), ("gsm8k", 3), ("olympiadbench", 7)):
        rec = json.loads((shared / "data" / "processbench" / f"{subset}.json").read_text())[idx]
        records.append({"problem": rec["problem"], "steps": rec["steps"][:4]})
    cases = []
    for rec in records:
        history = [rationale(k + 1, "Yes" if k % 2 == 0 else "No") for k in range(len(rec["steps"]))]
        for style in ("card", "processbench"):
            for t in range(len(rec["steps"])):
                first = (f"Question: {rec['problem']}\n\n{rec['steps'][0]}" if style == "card"
                         else rec["problem"] + "\n" + rec["steps"][0])
                msgs = [{"role": "system", "content": system}, {"role": "user", "content": first}]
                for i in range(1, t + 1):
                    msgs.append({"role": "assistant", "content": history[i - 1]})
                    msgs.append({"role": "user", "content": rec["steps"][i]})
                # build_prompt() of the official code
                prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
                eos = tok.eos_token
                if prompt.endswith(eos + "\n"):
                    prompt = prompt[: -len(eos + "\n")]
                elif prompt.endswith(eos):
                    prompt = prompt[: -len(eos)]
                if style == "card":
                    prompt += "<｜Assistant｜>"
                text = prompt + f"<analyze>\nLet's analyze the Paragraph {t + 1} step by step: "
                cases.append({"problem": rec["problem"], "steps": rec["steps"], "history": history[:t],
                              "style": style, "step": t, "text": text,
                              "ids": tok.encode(text, add_special_tokens=False)})
    out = FIX / "protocol"
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.json").write_text(json.dumps(cases, ensure_ascii=False, indent=0))
    print(f"protocol: {len(cases)} prompts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                    help="the shared data folder (tokenizer, ProcessBench)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = tokenizer_fixtures(args.shared)
    protocol_fixtures(args.shared)

    # GQA, untied, rope 1e4, f32, hidden not a power of two.
    make_model("tiny-gqa-f32", vocab=320, hidden=48, layers=2, heads=4, kv_heads=2, inter=80,
               tie=False, theta=1e4, dtype=torch.float32, seed=1, legacy_config=True)
    # MHA, tied embeddings, rope 1e6, f16.
    make_model("tiny-mha-tied-f16", vocab=256, hidden=32, layers=2, heads=4, kv_heads=4, inter=64,
               tie=True, theta=1e6, dtype=torch.float16, seed=2)
    # bf16, sharded with an index, explicit head_dim that differs from hidden / heads, odd sizes.
    make_model("tiny-sharded-bf16", vocab=300, hidden=40, layers=3, heads=4, kv_heads=1, inter=72,
               tie=False, theta=1e6, dtype=torch.bfloat16, seed=3, head_dim=16, shard_size="40KB")
    # The real vocabulary (151,936 rows), the real tokenizer, DeepSeek-R1-Distill's special ids.
    prompt = ("<｜begin▁of▁sentence｜>You are a math teacher.<｜User｜>Question: What is 2 + 3?\n\n"
              "2 + 3 = 5.<｜Assistant｜><analyze>\nLet's analyze the Paragraph 1 step by step: ")
    prompt_ids = tok.encode(prompt, add_special_tokens=False).ids
    assert len(prompt_ids) >= 20, len(prompt_ids)
    tdir = FIX / "tokenizer"
    make_model("tiny-real-vocab", vocab=151936, hidden=8, layers=2, heads=2, kv_heads=1, inter=24,
               tie=True, theta=1e4, dtype=torch.bfloat16, seed=4, prompt_ids=prompt_ids,
               sample_indices=512, bos=151643, eos=151643, legacy_config=True,
               extra_files={"tokenizer.json": tdir / "tokenizer.json",
                            "tokenizer_config.json": tdir / "tokenizer_config.json",
                            "chat_template.jinja": tdir / "chat_template.jinja"})


if __name__ == "__main__":
    main()
