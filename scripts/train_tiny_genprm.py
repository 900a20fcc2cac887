#!/usr/bin/env python3
"""Train the tiny GenPRM-format model used by the end-to-end tests and the bundled demo.

A 4-layer Qwen2 with a small byte-level BPE vocabulary is trained (on the CPU, about a minute)
to write GenPRM rationales for a few arithmetic solutions: an analysis, python code, commentary
on the code's output (one rationale runs two code rounds), and the boxed judgement. The training
examples are the exact (prompt, continuation) pairs the official protocol produces at each model
call, tokenized the way genprm tokenizes them (the whole text again at every call), so greedy
decoding walks analyze -> code -> execution -> output -> reward for real.

Writes tests/fixtures/models/tiny-genprm/ (a Hugging Face checkpoint directory) and
tests/fixtures/protocol/e2e.json (the solutions) + e2e_expected.json (what greedy verification
must produce). Run through `scripts/gen-fixtures --tiny-genprm`.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "models" / "tiny-genprm"

BOS, EOS, USER, ASSISTANT = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"
SYSTEM = "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step."
VERIFY = "<verify>\nLet's use python code to find any potential error:\n```python\n"
OUTPUT = "<output>\n**Judgement**: $\\boxed"
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def analyze_start(k: int) -> str:
    return f"<analyze>\nLet's analyze the Paragraph {k} step by step: "


# Each paragraph: (analysis, [(text before the code, code)], closing commentary, verdict).
# The first code round follows VERIFY directly, so its "text before" is empty.
SOLUTIONS = [
    {
        "id": "add",
        "problem": "What is 2 + 3?",
        "steps": ["2 + 3 = 5.", "So the answer is 5."],
        "rationales": [
            ("The paragraph adds 2 and 3 and gets 5, which is correct.",
             [("", "print(2 + 3)")], "The code confirms that 2 + 3 = 5.", "Yes"),
            ("The paragraph states the final answer 5, which matches the sum found before.",
             [("", "answer = 5\nprint(answer == 2 + 3)")], "The code confirms the answer.", "Yes"),
        ],
    },
    {
        "id": "apples",
        "problem": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "steps": ["Tom starts with 3 apples.", "He buys 4 more, so he has 3 + 4 = 8 apples.", "The answer is 8."],
        "rationales": [
            ("The paragraph restates that Tom starts with 3 apples, which is given in the problem.",
             [("", "start = 3\nprint(start)")], "The code shows the starting count is 3.", "Yes"),
            ("The paragraph claims 3 + 4 = 8, but 3 + 4 is 7. This is an error.",
             [("", "total = start + 4\nprint(total)")], "The code shows the total is 7, not 8.", "No"),
            ("The paragraph gives 8 as the answer, which follows from the wrong total.",
             [("", "print(total == 8)")], "The code shows the answer 8 is wrong.", "No"),
        ],
    },
    {
        "id": "times",
        "problem": "What is 6 times 7?",
        "steps": ["6 times 7 is 42."],
        "rationales": [
            ("The paragraph multiplies 6 by 7 and gets 42.",
             [("", "print(6 * 7)"), ("Let me double-check with repeated addition:\n", "print(sum([6] * 7))")],
             "Both checks agree that the product is 42.", "Yes"),
        ],
    },
]


def run_code(code: str, namespace: dict) -> str:
    f = io.StringIO()
    with contextlib.redirect_stdout(f):
        exec(code, namespace)  # our own fixed snippets, as the official executor would run them
    return f.getvalue().strip()


def render(messages: list[dict]) -> str:
    """The DeepSeek-R1-Distill template with add_generation_prompt=False, + the card style's tag."""
    out = BOS
    for m in messages:
        if m["role"] == "system":
            out += m["content"]
        elif m["role"] == "user":
            out += USER + m["content"]
        else:
            out += ASSISTANT + m["content"] + EOS
    return out + ASSISTANT


def protocol_calls():
    """Every (prompt text, continuation text) pair the protocol makes, and the expected results."""
    calls, expected = [], []
    for sol in SOLUTIONS:
        ns: dict = {}
        history: list[str] = []
        exp_steps = []
        for t, (analysis, rounds, closing, verdict) in enumerate(sol["rationales"]):
            msgs = [{"role": "system", "content": SYSTEM}]
            for i in range(t + 1):
                content = f"Question: {sol['problem']}\n\n{sol['steps'][0]}" if i == 0 else sol["steps"][i]
                msgs.append({"role": "user", "content": content})
                if i < t:
                    msgs.append({"role": "assistant", "content": history[i]})
            prompt = render(msgs)
            a = analyze_start(t + 1)
            gen = analysis + "\n</analyze>\n"
            calls.append((prompt + a, gen))
            cur = a + gen + VERIFY
            outputs = []
            for pre, code in rounds:
                gen = (f"{pre}```python\n" if pre else "") + code + "\n```\n"
                calls.append((prompt + cur, gen))
                out = run_code(code, ns)
                outputs.append(out)
                cur = cur + gen + f"[Code Output]\n\n```\n{out}\n```\n"
            gen = f"{closing}\n</verify>\n{OUTPUT}{{{verdict}}}$\n</output>\n"
            calls.append((prompt + cur, gen))
            text = cur + gen
            history.append(text)
            exp_steps.append({"text": text, "code_outputs": outputs, "judgement": verdict})
        first_error = next((i for i, r in enumerate(sol["rationales"]) if r[3] == "No"), -1)
        expected.append({"id": sol["id"], "steps": exp_steps, "first_error_step": first_error})
    return calls, expected


def train_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=640, min_frequency=2, show_progress=False,
                                  special_tokens=[EOS, USER, ASSISTANT, BOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    # "Yes" and "No" always single tokens, as in the real vocabulary, so the reward finds them.
    from tokenizers import AddedToken
    tok.add_tokens([AddedToken("Yes", normalized=False), AddedToken("No", normalized=False)])
    return tok


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    calls, expected = protocol_calls()
    corpus = [p + g for p, g in calls]
    tok = train_tokenizer(corpus)
    vocab = tok.get_vocab_size()
    eos_id, bos_id = tok.token_to_id(EOS), tok.token_to_id(BOS)

    # Each call: ids of the whole prompt text (as genprm re-tokenizes it) + ids of the continuation.
    examples = []
    for prompt, gen in calls:
        p = tok.encode(prompt, add_special_tokens=False).ids
        g = tok.encode(gen, add_special_tokens=False).ids
        assert tok.decode(g, skip_special_tokens=False) == gen, gen
        examples.append((p, g))
    longest = max(len(p) + len(g) for p, g in examples)
    print(f"vocab {vocab}, {len(examples)} calls, longest {longest} tokens")

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=96, intermediate_size=192, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=bos_id, eos_token_id=eos_id, use_sliding_window=False)
    model = Qwen2ForCausalLM(cfg)
    model.train()
    x = torch.full((len(examples), longest), eos_id)
    y = torch.full((len(examples), longest), -100)
    for i, (p, g) in enumerate(examples):
        seq = p + g
        x[i, : len(seq)] = torch.tensor(seq)
        # Predict every continuation token (position j predicts token j+1).
        for j in range(len(p) - 1, len(seq) - 1):
            y[i, j] = seq[j + 1]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=600, pct_start=0.1)
    for step in range(600):
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == 599:
            with torch.no_grad():
                pred = logits.argmax(-1)
                mask = y != -100
                acc = (pred[mask] == y[mask]).float().mean().item()
                # The smallest margin between the right token and the runner-up.
                lg = logits[mask]
                right = lg.gather(1, y[mask].unsqueeze(1)).squeeze(1)
                lg2 = lg.clone()
                lg2.scatter_(1, y[mask].unsqueeze(1), float("-inf"))
                margin = (right - lg2.max(1).values).min().item()
            print(f"step {step}: loss {loss.item():.5f}, token accuracy {acc:.4f}, min margin {margin:.2f}")
            if acc == 1.0 and margin > 3.0 and step >= 300:
                break
    assert acc == 1.0 and margin > 1.0, "the tiny model did not learn its script"

    model.eval()
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, safe_serialization=True)
    cpath = OUT / "config.json"
    c = json.loads(cpath.read_text())
    rope = c.pop("rope_parameters", {})
    c["rope_theta"] = rope.get("rope_theta", 10000.0)
    c["rope_scaling"] = None
    c["torch_dtype"] = c.pop("dtype", "float32")
    c.pop("layer_types", None)
    cpath.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    tok.save(str(OUT / "tokenizer.json"))
    shutil.copyfile(FIX / "tokenizer" / "chat_template.jinja", OUT / "chat_template.jinja")
    (OUT / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
        "clean_up_tokenization_spaces": False, "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2, ensure_ascii=False) + "\n")
    (OUT / "README.md").write_text(
        "# tiny-genprm\n\nA 4-layer Qwen2 trained by `scripts/train_tiny_genprm.py` to write GenPRM-format\n"
        "rationales for the three solutions in `tests/fixtures/protocol/e2e.json`. It knows nothing else:\n"
        "it exists so tests and the offline demo can walk the whole protocol with a real model.\n")
    proto = FIX / "protocol"
    proto.mkdir(parents=True, exist_ok=True)
    (proto / "e2e.json").write_text(json.dumps(
        [{"id": s["id"], "problem": s["problem"], "steps": s["steps"]} for s in SOLUTIONS], indent=1) + "\n")
    (proto / "e2e_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
