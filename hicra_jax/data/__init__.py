"""Datasets and prompt rendering (the one place prompts are built).

The prompt helpers are imported on first use, so that light modules (the JSONL
reader, config validation) do not pull in transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DEFAULT_INSTRUCTION", "StopTokens", "encode_prompts", "render_prompt", "stop_tokens"]


def __getattr__(name: str) -> Any:
  if name in __all__:
    return getattr(importlib.import_module("hicra_jax.data.prompts"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
