"""Orbax checkpoints of a training run: async, keep the last N plus the best by eval accuracy.

A checkpoint (directory `<workdir>/checkpoints/<step>/`) holds two items:
  "state": the `TrainState` pytree (params, optimizer state, step, skip
           counters) and the run's base PRNG key data (uint32), as arrays;
  "meta":  JSON: data-iterator state, curriculum state, the config and the
           SG trie (its `.npz` bytes, base64) used by the run.

The directory is local or any etils.epath path (gs://bucket/run/checkpoints):
Orbax reads and writes both.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hicra_jax import config as config_lib
from hicra_jax.train.state import TrainState

EVAL_METRIC = "eval_accuracy"


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for `TrainState` + JSON metadata."""

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, keep_best: int = 1,
               async_save: bool = True):
    """Opens (or creates) `directory`.

    Args:
      directory: a local path (made absolute, `~` expanded) or any etils.epath
        path such as gs://bucket/run/checkpoints (kept as it is). `self.path`
        is it as an `epath.Path`, `self.directory` as a string for messages.
      keep: the last `keep` checkpoints are kept.
      keep_best: plus the `keep_best` best by eval accuracy (checkpoints saved
        with an "eval_accuracy" metric).
      async_save: write in a background thread (`wait` / `close` block).
    """
    path = config_lib.as_epath(directory)
    if config_lib.is_local_path(path):
      path = type(path)(os.path.abspath(os.fspath(path)))
    self.path = path
    self.directory = str(path)
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if keep_best:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[EVAL_METRIC], reverse=False, n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.path, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: TrainState, rng_key: jax.Array, meta: dict[str, Any], *,
           eval_accuracy: float | None = None, force: bool = False) -> bool:
    """Starts saving (async); returns whether a save was started."""
    # The key as numpy: a host value (the same on every process), written by process 0.
    tree = {"train": state, "rng": np.asarray(jax.random.key_data(rng_key))}
    metrics = None if eval_accuracy is None else {EVAL_METRIC: float(eval_accuracy)}
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=force)

  def restore(self, step: int | None, template: TrainState
              ) -> tuple[TrainState, jax.Array, dict[str, Any]]:
    """(state, rng key, meta) of `step` (default: the latest).

    Args:
      template: a `TrainState` of the same structure (e.g. freshly created);
        its arrays give shapes, dtypes and shardings.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory!r} to resume from")
    abstract = {"train": jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template),
                "rng": np.asarray(jax.random.key_data(jax.random.key(0)))}
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    tree = out["state"]
    return tree["train"], jax.random.wrap_key_data(np.asarray(tree["rng"])), dict(out["meta"])

  def restore_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of `step` alone (no template needed)."""
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def encode_bytes(data: bytes) -> str:
  return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
  return base64.b64decode(text.encode("ascii"))
