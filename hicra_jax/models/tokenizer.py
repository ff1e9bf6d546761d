"""Load a Hugging Face fast tokenizer from a model dir, a tokenizer.json folder, a GGUF file
or a Hub model id.

A Hub id is resolved to its snapshot folder first (models/paths.py: the tokenizer files
only, from the cache or, online, the Hub); transformers then reads local files only
(`local_files_only=True`) and no remote code is ever run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hicra_jax.models.gguf_tokenizer import load_gguf_tokenizer
from hicra_jax.models.paths import TOKENIZER_FILES, resolve_model

if TYPE_CHECKING:
  from transformers import PreTrainedTokenizerFast

TOKENIZER_JSON = "tokenizer.json"
# Vocabulary files from which transformers can build a fast tokenizer without tokenizer.json
# (SentencePiece model; GPT-2 style vocab.json + merges.txt).
_CONVERTIBLE_FILES = ("tokenizer.model", "vocab.json")
_EXPECTED = ("a Hugging Face model directory (tokenizer.json and/or tokenizer_config.json), "
             "a folder with tokenizer.json, a .gguf file or a Hugging Face Hub model id "
             "(org/name or org/name@revision)")


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
  """Loads the tokenizer of a model, with its chat template when it has one.

  Args:
    path: one of
      * a Hugging Face model directory (tokenizer.json, tokenizer_config.json,
        maybe config.json, chat_template.jinja);
      * a folder with only tokenizer.json (plus an optional tokenizer_config.json);
      * a `tokenizer.json` file (its folder is loaded);
      * a `.gguf` file (vocabulary, merges, special tokens and
        `tokenizer.chat_template` from the GGUF metadata);
      * "smollm2" (the packaged SmolLM2 GGUF), or a Hugging Face Hub id "org/name" or
        "org/name@revision" when no local path of that name exists (its tokenizer files,
        from the Hub cache or, unless HF_HUB_OFFLINE is set, downloaded).

  Returns:
    A `transformers.PreTrainedTokenizerFast`. `tokenizer.chat_template` is the
    model's chat template, or None when the files carry none (base models).

  Raises:
    FileNotFoundError: `path` does not exist, a directory holds no tokenizer files, or a
      Hub id is neither cached nor (online) on the Hub.
    ValueError: `path` is a file that is neither a .gguf file nor tokenizer.json.
    TypeError: transformers could only build a slow (non-fast) tokenizer.
  """
  # config.json too: transformers reads it to pick the class when there is no tokenizer.json.
  path = os.path.abspath(resolve_model(path, files=TOKENIZER_FILES + ("config.json",)))
  if not os.path.exists(path):
    raise FileNotFoundError(f"tokenizer path {path!r} does not exist; expected {_EXPECTED}")
  if os.path.isfile(path):
    if path.lower().endswith(".gguf"):
      return _load_gguf(path)
    if os.path.basename(path) == TOKENIZER_JSON:
      return _load_dir(os.path.dirname(path))
    raise ValueError(f"tokenizer path {path!r} is a file but neither a .gguf file nor "
                     f"{TOKENIZER_JSON}; expected {_EXPECTED}")
  return _load_dir(path)


def _load_dir(directory: str) -> PreTrainedTokenizerFast:
  """Loads a folder; tokenizer.json is used as is, without model-specific tokenizer classes."""
  from transformers import AutoTokenizer, PreTrainedTokenizerFast  # heavy (~3 s): on first load
  if os.path.isfile(os.path.join(directory, TOKENIZER_JSON)):
    # PreTrainedTokenizerFast reads tokenizer.json verbatim (plus tokenizer_config.json,
    # special_tokens_map.json and chat_template.jinja when present), so the ids are
    # exactly those of `tokenizers.Tokenizer.from_file(tokenizer.json)`.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
  elif any(os.path.isfile(os.path.join(directory, f)) for f in _CONVERTIBLE_FILES):
    try:
      tokenizer = AutoTokenizer.from_pretrained(
          directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(f"could not build a tokenizer from the files in {directory!r} (no "
                       f"{TOKENIZER_JSON}): {e}") from e
  else:
    raise FileNotFoundError(
        f"no tokenizer files in directory {directory!r}: expected {TOKENIZER_JSON} "
        f"(or one of {', '.join(_CONVERTIBLE_FILES)}); found "
        f"{sorted(os.listdir(directory))[:20]}")
  return _check_fast(tokenizer, directory)


def _load_gguf(path: str) -> PreTrainedTokenizerFast:
  """Rebuilds the tokenizer from the GGUF metadata (no torch; see gguf_tokenizer)."""
  return _check_fast(load_gguf_tokenizer(path), path)


def _check_fast(tokenizer: object, source: str) -> PreTrainedTokenizerFast:
  from transformers import PreTrainedTokenizerFast  # heavy (~3 s): on first load
  if not isinstance(tokenizer, PreTrainedTokenizerFast):
    raise TypeError(
        f"transformers built a {type(tokenizer).__name__} from {source!r}, expected a fast "
        f"tokenizer (PreTrainedTokenizerFast); provide a {TOKENIZER_JSON}")
  return tokenizer
