"""Converts a Hugging Face Qwen2 checkpoint of this project (e.g. tests/fixtures/models/tiny-genprm)
to a GGUF file with llama.cpp's own converter, `convert_hf_to_gguf.py` from the llama.cpp that
llama-cpp-python vendors, so the llama.cpp server the tests start can serve it.

Usage: python gguf_from_hf.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf

Two things the converter cannot know about a tiny fixture tokenizer are stated instead of guessed:

- The pre-tokenizer. The converter names it by hashing the token ids a test text encodes to; the
  hash identifies a whole published vocabulary, so a new (tiny) vocabulary is always "unknown".
  What llama.cpp needs is the pre-tokenizer *type*: this script checks that the checkpoint's
  tokenizer.json splits with exactly Qwen2's pre-tokenizer (the regex and byte-level step) and
  then names it `qwen2`, as the converter does for Qwen2 and DeepSeek-R1-Distill-Qwen.
- The tokenizer class. transformers' AutoTokenizer picks `Qwen2Tokenizer` from config.json and
  invents an `<|endoftext|>` token the checkpoint does not have (id 600 of a 600-row vocabulary);
  tokenizer_config.json says `PreTrainedTokenizerFast`, and that is what is loaded.
"""

import json
import sys
from pathlib import Path

QWEN2_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def check_qwen2_pretokenizer(model_dir: Path) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    split = [p for p in parts if p.get("type") == "Split"]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if tok["model"]["type"] != "BPE" or len(split) != 1 or len(byte_level) != 1:
        sys.exit(f"{model_dir}/tokenizer.json: not a Qwen2-style byte-level BPE tokenizer: {pre}")
    if split[0]["pattern"].get("Regex") != QWEN2_SPLIT or byte_level[0].get("use_regex", True):
        sys.exit(f"{model_dir}/tokenizer.json: the pre-tokenizer is not Qwen2's: {pre}")


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    llama_cpp, model_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    check_qwen2_pretokenizer(model_dir)
    sys.path.insert(0, str(llama_cpp))
    sys.path.insert(1, str(llama_cpp / "gguf-py"))
    import transformers
    import convert_hf_to_gguf
    from conversion import base

    def get_vocab_base_pre(self, tokenizer) -> str:
        return "qwen2"  # checked above

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    if config.get("tokenizer_class") == "PreTrainedTokenizerFast":
        fast = transformers.PreTrainedTokenizerFast

        class Declared:
            @staticmethod
            def from_pretrained(path, *args, **kwargs):
                return fast.from_pretrained(path, **kwargs)

        base_module = sys.modules[base.TextModel.get_vocab_base.__module__]
        transformers.AutoTokenizer = Declared
        if hasattr(base_module, "AutoTokenizer"):
            base_module.AutoTokenizer = Declared
    sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outfile", str(out), "--outtype", "f32"]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
