"""The RL trainer: train state, jitted update, loop, Orbax checkpoints, metric writers.

  state.py       TrainState, AdamW + warmup/constant/cosine schedule + clipping
  step.py        pure jittable pieces: sequences, log-probs, advantages, `update`
  loop.py        `Trainer`: rollout -> rewards -> filter/refill -> masks -> update -> ...
  checkpoint.py  Orbax CheckpointManager (async; last N + best by eval accuracy)
  metrics.py     JSONL + TensorBoard writers, sample log, progress line
  synthetic.py   a synthetic verifiable task for tiny random models
  build.py       a run's components (model, data, reward, planner) from a config
  presets.py     the paper presets' shared recipe (config files import it: no jax)

The exports below are imported on first use, so that config files importing
`hicra_jax.train.presets` stay light (config loading must not import jax).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "hicra_jax.train.state": ("OptimizerConfig", "TrainState", "create_train_state",
                              "learning_rate_schedule", "make_optimizer"),
    "hicra_jax.train.step": ("ALGORITHMS", "Batch", "UpdateConfig", "build_sequences",
                             "policy_logprobs", "token_advantages", "update"),
}


def __getattr__(name: str) -> Any:
  for module, names in _EXPORTS.items():
    if name in names:
      return getattr(importlib.import_module(module), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALGORITHMS", "Batch", "OptimizerConfig", "TrainState", "UpdateConfig",
           "build_sequences", "create_train_state", "learning_rate_schedule", "make_optimizer",
           "policy_logprobs", "token_advantages", "update"]
