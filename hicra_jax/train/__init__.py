"""The RL trainer: train state, jitted update, loop, Orbax checkpoints, metric writers.

  state.py       TrainState, AdamW + warmup/constant/cosine schedule + clipping
  step.py        pure jittable pieces: sequences, log-probs, advantages, `update`
  loop.py        `Trainer`: rollout -> rewards -> filter/refill -> masks -> update -> ...
  checkpoint.py  Orbax CheckpointManager (async; last N + best by eval accuracy)
  metrics.py     JSONL + TensorBoard writers, sample log, progress line
  synthetic.py   a synthetic verifiable task for tiny random models
  build.py       a run's components (model, data, reward, planner) from a config
"""

from hicra_jax.train.state import (OptimizerConfig, TrainState, create_train_state,
                                   learning_rate_schedule, make_optimizer)
from hicra_jax.train.step import (ALGORITHMS, Batch, UpdateConfig, build_sequences,
                                  policy_logprobs, token_advantages, update)

__all__ = ["ALGORITHMS", "Batch", "OptimizerConfig", "TrainState", "UpdateConfig",
           "build_sequences", "create_train_state", "learning_rate_schedule", "make_optimizer",
           "policy_logprobs", "token_advantages", "update"]
