"""Workdirs on any etils.epath path: metrics, samples, the W&B run id, checkpoints, exports
and `is_training_workdir` go through epath, locally and on an object store.

The object store is a fake gs://: fsspec's in-memory filesystem behind etils.epath's
fsspec backend, which, like GCS, cannot append to a file. So the non-local branches
(rewrite instead of append, export through a local temporary directory) really run,
and nothing they write may reach the local disk.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types

import fsspec
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
from flax import nnx
from fsspec.implementations.memory import MemoryFileSystem

from hicra_jax import config as config_lib
from hicra_jax.models import Decoder, ModelConfig
from hicra_jax.models.weights import save_pretrained
from hicra_jax.train import metrics as metrics_lib
from hicra_jax.train import state as state_lib
from hicra_jax.train.checkpoint import Checkpointer
from hicra_jax.train.metrics import MetricWriter, WandbWriter, wandb_run_id
from hicra_jax.train.run_config import WandbConfig

BUCKET = "gs://bucket/run"
CFG = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=16, bos_token_id=1, eos_token_id=2)


class _FakeGcs(MemoryFileSystem):
  """In-memory objects behind gs:// paths; opening for append fails, as on GCS."""

  protocol = ("gs", "gcs")
  store: dict = {}
  pseudo_dirs: list = [""]

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    if path.startswith("gs://"):
      path = path[len("gs://"):]
    return MemoryFileSystem._strip_protocol(path)

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      raise NotImplementedError(f"object stores cannot append ({path}, mode {mode!r})")
    return super()._open(path, mode, **kwargs)


@pytest.fixture
def fake_gcs(monkeypatch):
  """gs:// paths served from memory (fresh for each test) through epath's fsspec backend."""
  monkeypatch.setattr(_FakeGcs, "store", {})
  monkeypatch.setattr(_FakeGcs, "pseudo_dirs", [""])
  fs = _FakeGcs(skip_instance_cache=True)
  local = fsspec.filesystem("file")
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath -> fsspec for gs://
  monkeypatch.setattr(epath_backend.fsspec_backend, "fs",
                      lambda path: fs if os.fspath(path).startswith("gs://") else local)
  assert epath.Path(BUCKET)._backend is epath_backend.fsspec_backend  # pylint: disable=protected-access
  return fs


@pytest.fixture(params=["local", "gs"])
def workdir(request, tmp_path):
  """A workdir of each kind: a local directory (a str) and a gs:// one (the fake)."""
  if request.param == "local":
    return str(tmp_path / "run")
  request.getfixturevalue("fake_gcs")
  return BUCKET


def _jsonl(path) -> list[dict]:
  return [json.loads(line) for line in epath.Path(path).read_text().splitlines()]


def _no_local_spill():
  """Nothing written for a gs:// path may land in the (hermetic) working directory."""
  assert not os.listdir(os.getcwd()), os.listdir(os.getcwd())


# ---- path helpers ----------------------------------------------------------------


def test_is_local_path_and_as_epath(tmp_path, monkeypatch):
  assert config_lib.is_local_path("runs/x") and config_lib.is_local_path(tmp_path)
  assert config_lib.is_local_path(epath.Path(tmp_path))
  assert not config_lib.is_local_path("gs://b/x")
  assert not config_lib.is_local_path(epath.Path("gs://b/x"))
  monkeypatch.setenv("HOME", str(tmp_path))
  assert config_lib.as_epath("~/run") == epath.Path(tmp_path / "run")
  assert str(config_lib.as_epath("gs://b/run")) == "gs://b/run"
  with pytest.raises(ValueError, match="unsupported scheme"):
    config_lib.as_epath("gcs://b/run")
  assert not config_lib.is_training_workdir("gcs://b/run")


def test_config_still_imports_no_jax_with_is_training_workdir(tmp_path):
  code = ("import sys, hicra_jax.config as c; c.is_training_workdir(sys.argv[1]); "
          "print('jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "False"


def test_is_training_workdir(workdir):
  assert not config_lib.is_training_workdir(workdir)  # missing
  root = epath.Path(workdir)
  (root / "checkpoints" / "3.orbax-checkpoint-tmp-1").mkdir(parents=True)
  (root / "checkpoints" / "3.orbax-checkpoint-tmp-1" / "x").write_text("partial")
  assert not config_lib.is_training_workdir(workdir)  # an unfinished save only
  (root / "checkpoints" / "12").mkdir(parents=True)
  (root / "checkpoints" / "12" / "meta").write_text("{}")  # object stores: no empty dirs
  assert config_lib.is_training_workdir(workdir)
  assert config_lib.is_training_workdir(epath.Path(workdir))
  if workdir.startswith("gs://"):
    _no_local_spill()


# ---- metrics.jsonl, samples.jsonl ------------------------------------------------


def test_metrics_and_samples_continue_when_reopened(workdir):
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write(1, {"reward_mean": 0.5, "loss": float("nan"), "example_ids": [3, 4]})
  writer.write(2, {"reward_mean": 0.75})
  writer.write_samples(2, [{"completion": "a \u00e9 b", "reward": 1.0}, {"completion": "c"}])
  assert [r["step"] for r in _jsonl(writer.path)] == [1, 2]  # readable after each write
  writer.close()
  assert writer.path == str(epath.Path(workdir) / "metrics.jsonl")

  again = MetricWriter(workdir, tensorboard=False)  # a resumed run: appends, not truncates
  again.write(3, {"reward_mean": 1.0})
  again.write_samples(3, [{"completion": "d"}])
  again.write_samples(4, [])
  again.close()
  records = _jsonl(epath.Path(workdir) / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[0] == {"reward_mean": 0.5, "loss": "nan", "example_ids": [3, 4], "step": 1}
  samples = _jsonl(epath.Path(workdir) / "samples.jsonl")
  assert [(s["step"], s["completion"]) for s in samples] == [(2, "a \u00e9 b"), (2, "c"),
                                                             (3, "d")]
  if workdir.startswith("gs://"):
    _no_local_spill()


def test_the_rewrite_branch_continues_a_file_the_append_branch_wrote(tmp_path, monkeypatch):
  """The non-local branch (read back, rewrite) on a local directory, predicate patched:
  it continues what the append branch wrote, and a cut-off last line stays whole."""
  workdir = str(tmp_path)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write(1, {"loss": 0.5})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 2, "loss"')  # a writer killed mid-line
  monkeypatch.setattr(config_lib, "is_local_path", lambda path: False)
  rewriting = MetricWriter(workdir, tensorboard=False)
  assert rewriting._file._handle is None  # pylint: disable=protected-access
  rewriting.write(3, {"loss": 0.25})
  rewriting.write(4, {"loss": 0.125})
  rewriting.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert lines[1] == '{"step": 2, "loss"'
  assert [json.loads(line)["step"] for line in lines[:1] + lines[2:]] == [1, 3, 4]


def test_tensorboard_on_a_workdir_it_cannot_write_is_skipped_with_a_warning(
    fake_gcs, monkeypatch, caplog):
  del fake_gcs
  monkeypatch.setattr(metrics_lib, "_module_available", lambda name: False)
  monkeypatch.setattr(metrics_lib, "_warned", set())
  with caplog.at_level(logging.WARNING, logger="hicra_jax.train"):
    writer = MetricWriter(BUCKET, tensorboard=True)
    writer.write(1, {"loss": 0.5})
    writer.close()
    MetricWriter(BUCKET, tensorboard=True).close()
  warnings = [r.getMessage() for r in caplog.records if "TensorBoard is off" in r.getMessage()]
  assert len(warnings) == 1 and "gs://" in warnings[0], warnings  # once per process
  assert [r["step"] for r in _jsonl(f"{BUCKET}/metrics.jsonl")] == [1]
  _no_local_spill()


def test_tensorboard_failing_on_a_remote_workdir_turns_off(fake_gcs, monkeypatch, caplog):
  del fake_gcs

  class Failing:
    def add_scalar(self, *args):
      raise ConnectionError("upload failed")

    def close(self):
      raise AssertionError("not called once off")

  monkeypatch.setattr(metrics_lib, "_tensorboard_writer", lambda logdir: Failing())
  monkeypatch.setattr(metrics_lib, "_warned", set())
  writer = MetricWriter(BUCKET)
  with caplog.at_level(logging.WARNING, logger="hicra_jax.train"):
    writer.write(1, {"loss": 0.5})
    writer.write(2, {"loss": 0.25})
  writer.close()
  assert "upload failed" in caplog.text
  assert [r["step"] for r in _jsonl(f"{BUCKET}/metrics.jsonl")] == [1, 2]


def test_tensorboard_on_a_local_workdir(tmp_path):
  writer = MetricWriter(str(tmp_path), tensorboard=True)
  writer.write(1, {"loss": 0.5})
  writer.close()
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "tensorboard"))


# ---- the W&B run id ----------------------------------------------------------------


def test_wandb_run_id_round_trip(workdir):
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / "wandb_run_id").write_text("abc123\n")
  assert wandb_run_id(workdir) == "abc123"
  (root / "wandb_run_id").unlink()
  created = wandb_run_id(workdir)
  assert len(created) == 16 and int(created, 16) >= 0
  assert (root / "wandb_run_id").read_text() == created + "\n"
  assert wandb_run_id(workdir) == created


def test_wandb_writer_reads_the_id_file_through_epath(workdir, monkeypatch):
  inits = []
  fake = types.ModuleType("wandb")
  fake.init = lambda **kwargs: inits.append(kwargs) or types.SimpleNamespace(
      log=lambda *a, **k: None, finish=lambda: None)
  monkeypatch.setitem(sys.modules, "wandb", fake)  # the real library is never imported
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / "wandb_run_id").write_text("feedface\n")
  WandbWriter(workdir, WandbConfig(project="p", mode="offline")).close()
  assert inits[0]["id"] == "feedface" and inits[0]["resume"] == "allow"
  # W&B's own files stay local: the workdir, or W&B's default for a gs:// one.
  assert inits[0]["dir"] == (None if workdir.startswith("gs://") else workdir)


# ---- checkpoints ----------------------------------------------------------------------


def _train_state(seed):
  opt = state_lib.make_optimizer(state_lib.OptimizerConfig(lr=1e-2))
  return state_lib.create_train_state(Decoder(CFG, rngs=nnx.Rngs(seed)), opt)[1]


def _save_and_restore(directory):
  state = _train_state(1)
  ckpt = Checkpointer(directory, async_save=False)
  try:
    assert ckpt.save(4, state, jax.random.key(7), {"data": {"position": 5}}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [4]
    restored, key, meta = ckpt.restore(None, _train_state(2))
  finally:
    ckpt.close()
  assert meta == {"data": {"position": 5}}
  np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(7)))
  for a, b in zip(jax.tree_util.tree_leaves(restored.params),
                  jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  return ckpt


def test_checkpointer_on_a_relative_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  ckpt = _save_and_restore("run/checkpoints")
  assert ckpt.directory == str(tmp_path / "run" / "checkpoints")  # absolute, for messages
  assert isinstance(ckpt.directory, str)
  assert config_lib.is_training_workdir("run")


def test_checkpointer_on_an_epath(tmp_path):
  ckpt = _save_and_restore(epath.Path(tmp_path) / "run" / "checkpoints")
  assert ckpt.directory == str(tmp_path / "run" / "checkpoints")
  assert config_lib.is_training_workdir(epath.Path(tmp_path) / "run")


def test_checkpointer_keeps_a_gs_directory_as_it_is(monkeypatch):
  """No os.path.abspath on gs:// (it would prefix the working directory): Orbax gets the
  epath.Path. (Orbax itself needs google-cloud-storage for gs://: its manager is faked.)"""
  opened = []
  monkeypatch.setattr(ocp, "CheckpointManager",
                      lambda directory, **kwargs: opened.append(directory))
  ckpt = Checkpointer(f"{BUCKET}/checkpoints")
  assert ckpt.directory == f"{BUCKET}/checkpoints"
  assert isinstance(opened[0], epath.Path) and str(opened[0]) == f"{BUCKET}/checkpoints"


# ---- export -----------------------------------------------------------------------------


def _files(root: epath.Path, prefix: str = "") -> dict[str, bytes]:
  """{relative name: bytes} of every file under `root` (subdirectories included)."""
  out = {}
  for child in root.iterdir():
    if child.is_dir():
      out.update(_files(child, f"{prefix}{child.name}/"))
    else:
      out[prefix + child.name] = child.read_bytes()
  return out


@pytest.mark.parametrize("max_shard_size", [40_000, "5GB"])
def test_save_pretrained_to_gs_writes_the_same_bytes(fake_gcs, tmp_path, smollm2_tokenizer,
                                                     max_shard_size):
  del fake_gcs
  model = Decoder(CFG, rngs=nnx.Rngs(3))
  save_pretrained(model, CFG, tmp_path / "local", tokenizer=smollm2_tokenizer,
                  max_shard_size=max_shard_size)
  remote = epath.Path(f"{BUCKET}/policy")
  remote.mkdir(parents=True)
  (remote / "model-00001-of-00009.safetensors").write_bytes(b"stale")  # an earlier export
  (remote / "notes.txt").write_text("kept")
  save_pretrained(model, CFG, str(remote), tokenizer=smollm2_tokenizer,
                  max_shard_size=max_shard_size)
  local, written = _files(epath.Path(tmp_path / "local")), _files(remote)
  assert written.pop("notes.txt") == b"kept"
  assert sorted(written) == sorted(local)
  assert {"config.json", "generation_config.json", "tokenizer.json"} <= set(local)
  shards = [n for n in local if n.endswith(".safetensors")]
  assert (len(shards) > 1) == (max_shard_size == 40_000), shards
  for name, data in local.items():
    assert written[name] == data, name
  assert not os.listdir(os.getcwd())  # the temporary files went with the upload


def test_save_pretrained_through_the_non_local_branch_on_a_local_dir(tmp_path, monkeypatch):
  """The temporary-directory branch, predicate patched, copying into a local directory."""
  model = Decoder(CFG, rngs=nnx.Rngs(3))
  save_pretrained(model, CFG, tmp_path / "direct", max_shard_size=40_000)
  monkeypatch.setattr(config_lib, "is_local_path", lambda path: False)
  save_pretrained(model, CFG, str(tmp_path / "copied"), max_shard_size=40_000)
  assert _files(epath.Path(tmp_path / "copied")) == _files(epath.Path(tmp_path / "direct"))
