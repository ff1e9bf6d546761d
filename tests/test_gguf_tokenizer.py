"""GGUF tokenizers rebuilt without torch match transformers' GGUF path and the models' tokenizer.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import gguf
import pytest

from hicra_jax import assets
from hicra_jax.models import gguf_tokenizer, load_tokenizer

TEXTS = [
    "Hello  world", " 123 x 4567890", "Calculate 7 + 5.\n\nThe answer is \\boxed{12}.",
    "<|im_start|>user\nhi<|im_end|>\n<think>\nok</think>", "naïve café — 日本語 😀 e\u0301",
    "tabs\tand\r\nnewlines   \n\n  end", "it's we'll I'M THEY'RE", "def f(x):\n    return x**2",
    "$\\frac{1}{2}$ and $x^{10}$", "",
]
MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def _assert_same(ours, reference):
  for text in TEXTS:
    ids = reference(text)["input_ids"]
    assert ours(text)["input_ids"] == ids, text
    assert ours.decode(ids) == reference.decode(ids), text
  for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
    assert getattr(ours, name) == getattr(reference, name), name
  if reference.chat_template:
    assert (ours.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
            == reference.apply_chat_template(MESSAGES, tokenize=False,
                                             add_generation_prompt=True))


def test_smollm2_gguf_matches_transformers_gguf_reader(smollm2_tokenizer):
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel
  path = assets.smollm2_gguf_path()
  # transformers' own GGUF path (it imports torch, which the test extra installs).
  reference = PreTrainedTokenizerFast.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), local_files_only=True)
  _assert_same(smollm2_tokenizer, reference)
  assert len(smollm2_tokenizer) == len(reference) == 49152


def _write_gguf(path, tokenizer_dir: str, pre: str, *, add_bos: bool) -> None:
  """A GGUF holding only the tokenizer of a tokenizer.json, as llama.cpp's converter writes it."""
  with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
    spec = json.load(f)
  vocab = dict(spec["model"]["vocab"])
  types = {i: gguf.TokenType.NORMAL for i in vocab.values()}
  for added in spec["added_tokens"]:
    vocab[added["content"]] = added["id"]
    types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
  tokens = sorted(vocab, key=vocab.get)
  assert [vocab[t] for t in tokens] == list(range(len(tokens)))
  merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
  writer = gguf.GGUFWriter(str(path), arch="llama")
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types([types[i] for i in range(len(tokens))])
  writer.add_token_merges(merges)
  writer.add_bos_token_id(vocab["<|begin_of_text|>" if add_bos else "<|endoftext|>"])
  writer.add_eos_token_id(vocab["<|end_of_text|>" if add_bos else "<|im_end|>"])
  writer.add_add_bos_token(add_bos)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.mark.parametrize("family", ["qwen3", "llama3.2"])
def test_byte_level_gguf_matches_the_models_tokenizer_json(tmp_path, family, request):
  if family == "qwen3":
    directory, pre, add_bos = assets.qwen3_tokenizer_dir(), "qwen2", False
    reference = request.getfixturevalue("qwen3_tokenizer")
  else:
    directory, pre, add_bos = assets.llama32_tokenizer_dir(), "llama-bpe", True
    reference = request.getfixturevalue("llama32_tokenizer")
  path = tmp_path / "tokenizer.gguf"
  _write_gguf(path, directory, pre, add_bos=add_bos)
  ours = load_tokenizer(str(path))
  for text in TEXTS:
    assert ours(text)["input_ids"] == reference(text)["input_ids"], text
    assert ours.decode(reference(text)["input_ids"]) == reference.decode(
        reference(text)["input_ids"]), text
  assert ours("x")["input_ids"][0] == (reference.bos_token_id if add_bos else
                                       reference("x")["input_ids"][0])


def test_unsupported_gguf_tokenizers_fail_naming_what_is_supported():
  with pytest.raises(ValueError, match="model 'llama' is not supported; expected 'gpt2'"):
    gguf_tokenizer.build_tokenizer({"model": "llama", "tokens": ["a"]})
  with pytest.raises(ValueError, match="pre-tokenizer 'tekken' is not supported"):
    gguf_tokenizer.build_tokenizer({"model": "gpt2", "pre": "tekken", "tokens": ["a"]})


def test_loading_a_gguf_tokenizer_needs_no_torch():
  code = textwrap.dedent("""
      import sys
      sys.modules["torch"] = None  # any import of torch fails
      from hicra_jax.assets import smollm2_gguf_path
      from hicra_jax.models import load_tokenizer
      tokenizer = load_tokenizer(smollm2_gguf_path())
      print(tokenizer("7 + 5")["input_ids"])
  """)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "[39, 1232, 216, 37]"  # 7, " +", " ", 5 (as transformers)
