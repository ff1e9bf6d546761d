"""Hugging Face Hub ids ("org/name", "org/name@revision") wherever a model path is taken.

A hub cache is built under tmp_path in huggingface_hub's layout
(models--org--name/{refs,snapshots}), holding tiny transformers models saved with
save_pretrained at two revisions, and the environment points at it with
HF_HUB_OFFLINE=1 (conftest): nothing reaches the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from hicra_jax import assets
from hicra_jax import config as config_lib
from hicra_jax.models import load_pretrained, load_tokenizer
from hicra_jax.models.paths import resolve_model
from hf_reference import hf_logits, make_hf_model

REPO = "tiny-org/tiny-qwen2"
MAIN = "0123456789abcdef0123456789abcdef01234567"  # the commit refs/main points at
OLD = "fedcba9876543210fedcba9876543210fedcba98"  # an earlier commit, tagged v0.1
ROW = [5, 17, 3, 99, 42, 8, 120]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
  """(HF_HOME, {commit: transformers model}): a hub cache with REPO at two commits."""
  home = tmp_path_factory.mktemp("hf_home")
  repo_dir = home / "hub" / ("models--" + REPO.replace("/", "--"))
  models = {}
  for seed, commit in ((0, MAIN), (1, OLD)):
    snapshot = repo_dir / "snapshots" / commit
    models[commit] = make_hf_model("qwen2_bias_gqa4_tied", seed=seed)
    models[commit].save_pretrained(snapshot)
    for name in os.listdir(assets.qwen3_tokenizer_dir()):
      shutil.copy(os.path.join(assets.qwen3_tokenizer_dir(), name), snapshot)
  (repo_dir / "refs").mkdir()
  (repo_dir / "refs" / "main").write_text(MAIN)
  (repo_dir / "refs" / "v0.1").write_text(OLD)
  return home, models


@pytest.fixture
def hub_env(hub, monkeypatch):
  """The hub fixture's cache as the environment's (HF_HOME; HF_HUB_CACHE unset), offline."""
  home, models = hub
  monkeypatch.setenv("HF_HOME", str(home))
  monkeypatch.delenv("HF_HUB_CACHE", raising=False)
  monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  return home, models


def _assert_logits_match(model, hf_model):
  ref = hf_logits(hf_model, ROW)
  got = np.asarray(model(jnp.asarray([ROW])))[0]
  assert np.abs(ref).max() > 1.0, "reference logits too flat to make the test meaningful"
  np.testing.assert_array_less(np.abs(got - ref).max(), 1e-4 * np.abs(ref).max())


def test_hub_id_syntax():
  assert config_lib.hub_model_id("Qwen/Qwen3-0.6B") == ("Qwen/Qwen3-0.6B", None)
  assert config_lib.hub_model_id("org/name@v1.0") == ("org/name", "v1.0")
  assert config_lib.hub_model_id("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
  for not_an_id in ("smollm2", "gpt2", "a/b/c", "./a/b", "~/a", "/a/b", "a--b/c", "a/b..c",
                    "org/model.gguf", "org/name@", "org/na me"):
    assert config_lib.hub_model_id(not_an_id) is None, not_an_id


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv("HF_HUB_CACHE", raising=False)
  monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
  assert config_lib.hub_cache_dir() == str(tmp_path / "home" / "hub")
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
  assert config_lib.hub_cache_dir() == str(tmp_path / "cache")


def test_load_pretrained_hub_id_matches_transformers(hub_env):
  _, models = hub_env
  model, config = load_pretrained(REPO)
  assert config.vocab_size == 128 and config.qkv_bias
  _assert_logits_match(model, models[MAIN])


@pytest.mark.parametrize("revision", [OLD, "v0.1"])
def test_load_pretrained_at_a_revision(hub_env, revision):
  _, models = hub_env
  model, _ = load_pretrained(f"{REPO}@{revision}")
  _assert_logits_match(model, models[OLD])


def test_load_tokenizer_hub_id(hub_env):
  reference = tokenizers.Tokenizer.from_file(
      os.path.join(assets.qwen3_tokenizer_dir(), "tokenizer.json"))
  for name in (REPO, f"{REPO}@v0.1"):
    tok = load_tokenizer(name)
    text = "Let's try a different approach: 12 * 7 = 84."
    assert tok(text)["input_ids"] == reference.encode(text).ids


def test_is_model_path_hub_ids(hub_env):
  home, _ = hub_env
  for name in (REPO, f"{REPO}@{MAIN}", f"{REPO}@v0.1", f"{REPO}@main"):
    assert config_lib.is_model_path(name), name
  for name in ("tiny-org/unknown", f"{REPO}@v9", f"{REPO}@{'1' * 40}"):
    assert not config_lib.is_model_path(name), name
  # Cached without weights (e.g. only config.json fetched once): not loadable offline.
  partial = home / "hub" / "models--tiny-org--partial"
  (partial / "snapshots" / MAIN).mkdir(parents=True)
  shutil.copy(home / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots" / MAIN
              / "config.json", partial / "snapshots" / MAIN)
  (partial / "refs").mkdir()
  (partial / "refs" / "main").write_text(MAIN)
  assert not config_lib.is_model_path("tiny-org/partial")


def test_is_model_path_asks_the_hub_only_online(hub_env, monkeypatch):
  import huggingface_hub  # pylint: disable=import-outside-toplevel
  asked = []
  def file_exists(repo_id, filename, *, revision=None):
    asked.append((repo_id, filename, revision))
    return repo_id == "other-org/on-the-hub"
  monkeypatch.setattr(huggingface_hub, "file_exists", file_exists)
  assert not config_lib.is_model_path("other-org/on-the-hub")
  assert not asked  # offline: the cache only
  monkeypatch.setenv("HF_HUB_OFFLINE", "0")
  monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
  assert config_lib.is_model_path("other-org/on-the-hub@v2")
  assert not config_lib.is_model_path("other-org/missing")
  assert config_lib.is_model_path(REPO)  # cached: no question asked
  assert asked == [("other-org/on-the-hub", "config.json", "v2"),
                   ("other-org/missing", "config.json", None)]


def test_is_model_path_imports_nothing_heavy(hub_env):
  """Validation of Hub ids offline reads the cache folder: no jax, torch, numpy or hub client."""
  code = ("import sys; from hicra_jax import config as c; "
          f"assert c.is_model_path({REPO!r}) and not c.is_model_path('tiny-org/unknown'); "
          "heavy = [m for m in ('jax', 'flax', 'torch', 'numpy', 'transformers', "
          "'huggingface_hub') if m in sys.modules]; assert not heavy, heavy")
  subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_unknown_id_offline_names_the_id_and_the_cache(hub_env):
  home, _ = hub_env
  cache = str(home / "hub")
  for load in (load_pretrained, load_tokenizer):
    with pytest.raises(FileNotFoundError) as e:
      load("tiny-org/unknown@v2")
    message = str(e.value)
    assert "'tiny-org/unknown@v2'" in message and repr(cache) in message, message
    assert "HF_HUB_OFFLINE" in message, message


def test_local_path_wins_over_a_hub_id(hub_env):
  os.makedirs(REPO)  # the hermetic working directory (conftest) now has tiny-org/tiny-qwen2/
  assert resolve_model(REPO) == REPO
  assert not config_lib.is_model_path(REPO)  # an empty folder, not the cached model
  with pytest.raises(FileNotFoundError, match="no config.json at .tiny-org"):
    load_pretrained(REPO)


def test_smollm2_stays_an_alias():
  assert resolve_model("smollm2") == assets.smollm2_gguf_path()
