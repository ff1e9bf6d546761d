"""The RL trainer: train state, jitted update, loop, Orbax checkpoints, metric writers.

  run_config.py  `RunConfig`: the run's frozen, typed sections that check themselves
  state.py       TrainState, AdamW + warmup/constant/cosine schedule + clipping
  step.py        pure jittable pieces: sequences, log-probs, advantages, `update`
  loop.py        `Trainer`: holds the state and the jitted update; orchestrates one step
                 (rollout -> batch -> update -> metrics), eval, logging, checkpoints
  rollout.py     sampling, rewards, dynamic filtering and refill -> `StepRollouts`
  batch.py       planning masks, token advantages, the update's `Batch` on the mesh
  step_metrics.py  the scalars a step logs (pure)
  samples.py     the sample log (completions with their planning spans)
  signals.py     SIGTERM -> a stop request the loop acts on at safe points
  checkpoint.py  Orbax CheckpointManager (async; last N + best by eval accuracy)
  metrics.py     metrics.jsonl / samples.jsonl, TensorBoard and W&B writers, progress bar
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
    "hicra_jax.train.run_config": ("RunConfig", "parse"),
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


__all__ = ["ALGORITHMS", "Batch", "OptimizerConfig", "RunConfig", "TrainState", "UpdateConfig",
           "build_sequences", "create_train_state", "learning_rate_schedule", "make_optimizer",
           "parse", "policy_logprobs", "token_advantages", "update"]
