"""The tokenizer of a .gguf file, rebuilt from its metadata with `tokenizers` (no torch).

A GGUF stores no tokenizer.json: it stores the vocabulary, the merges, each
token's type, the special token ids, the chat template and the name of the
pre-tokenizer (llama.cpp's `tokenizer.ggml.pre`). transformers can rebuild a
tokenizer from that, but its GGUF reader imports torch, and the module that
holds its converter moves between releases. The byte-level BPE tokenizers of
the models this library runs (Llama 3.x, Qwen2/2.5/3, SmolLM2) are small to
rebuild, so we do it here from llama.cpp's definitions; tests check that the
ids equal transformers' own GGUF path and the models' tokenizer.json.

  tokenizer = load_gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors

if TYPE_CHECKING:
  from transformers import PreTrainedTokenizerFast

# Token types of `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
CONTROL, USER_DEFINED = 3, 4

# llama.cpp's split regexes, by `tokenizer.ggml.pre` (llama-vocab.cpp).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split(pattern: str) -> pre_tokenizers.PreTokenizer:
  return pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


# `tokenizer.ggml.pre` -> (normalizer or None, pre-tokenizer factory).
PRE_TOKENIZERS = {
    "default": (None, lambda: _split(_GPT2_SPLIT)),  # GPT-2
    "gpt-2": (None, lambda: _split(_GPT2_SPLIT)),
    "llama-bpe": (None, lambda: _split(_LLAMA3_SPLIT)),  # Llama 3.x
    "llama3": (None, lambda: _split(_LLAMA3_SPLIT)),
    "qwen2": (normalizers.NFC, lambda: _split(_QWEN2_SPLIT)),  # Qwen2, 2.5, 3
    # SmolLM (StarCoder's): every digit alone, then GPT-2's split.
    "smollm": (None, lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])),
}


def _field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
  """A `tokenizers.Tokenizer` from GGUF tokenizer metadata (`tokenizer.ggml.*` keys, short names).

  Args:
    metadata: "model", "pre", "tokens", "merges", "token_type", "add_bos_token",
      "bos_token_id" (the `tokenizer.ggml.` keys without their prefix).

  Raises:
    ValueError: a tokenizer model other than byte-level BPE ("gpt2"), or an
      unknown pre-tokenizer.
  """
  model, pre = metadata.get("model"), metadata.get("pre") or "default"
  if model != "gpt2":
    raise ValueError(f"GGUF tokenizer model {model!r} is not supported; expected 'gpt2' "
                     "(byte-level BPE: Llama 3.x, Qwen2/2.5/3, SmolLM2)")
  if pre not in PRE_TOKENIZERS:
    raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported; expected one of "
                     f"{sorted(PRE_TOKENIZERS)}")
  tokens = list(metadata["tokens"])
  merges = [tuple(m.split(" ", 1)) for m in metadata.get("merges") or ()]
  tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                   fuse_unk=False, byte_fallback=False))
  normalizer, pre_tokenizer = PRE_TOKENIZERS[pre]
  if normalizer is not None:
    tokenizer.normalizer = normalizer()
  tokenizer.pre_tokenizer = pre_tokenizer()
  tokenizer.decoder = decoders.ByteLevel()
  types = list(metadata.get("token_type") or [])
  # Control tokens (<|im_end|>) are special; user-defined ones (<think>) are matched whole.
  tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, k in zip(tokens, types) if k == CONTROL])
  tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, k in zip(tokens, types) if k == USER_DEFINED])
  bos_id = metadata.get("bos_token_id")
  if metadata.get("add_bos_token") and bos_id is not None:
    bos = tokens[bos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)])
  return tokenizer


def read_metadata(path: str) -> dict[str, Any]:
  """The tokenizer metadata of a GGUF file: `tokenizer.ggml.*` keys without the prefix,
  plus "chat_template"."""
  reader = gguf.GGUFReader(path)
  out = {key[len("tokenizer.ggml."):]: field.contents() for key, field in reader.fields.items()
         if key.startswith("tokenizer.ggml.")}
  out["chat_template"] = _field(reader, "tokenizer.chat_template")
  return out


def load_gguf_tokenizer(path: str) -> PreTrainedTokenizerFast:
  """A transformers fast tokenizer (special tokens and chat template set) of a .gguf file."""
  from transformers import PreTrainedTokenizerFast  # heavy (~3 s): on first load
  metadata = read_metadata(path)
  tokens = metadata["tokens"]
  special = {name: tokens[metadata[f"{key}_token_id"]]
             for name, key in (("bos_token", "bos"), ("eos_token", "eos"),
                               ("unk_token", "unknown"), ("pad_token", "padding"))
             if metadata.get(f"{key}_token_id") is not None}
  tokenizer = PreTrainedTokenizerFast(
      tokenizer_object=build_tokenizer(metadata), chat_template=metadata["chat_template"],
      add_bos_token=bool(metadata.get("add_bos_token")),
      add_eos_token=bool(metadata.get("add_eos_token")), **special)
  tokenizer.name_or_path = path  # set after init: as an init argument it is looked up as a repo
  return tokenizer
