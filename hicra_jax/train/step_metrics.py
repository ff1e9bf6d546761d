"""The scalars one RL step logs (every key in `metrics.STEP_KEYS`), from its
rollouts, its update's metrics and its timings. Pure: no trainer state.

N = P x G rows, Z Strategic Grams.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from hicra_jax.analysis import semantic_entropy_jax
from hicra_jax.sampling import FINISH_LENGTH
from hicra_jax.train.rollout import StepRollouts


def step_metrics(update_metrics: Mapping[str, float], rollouts: StepRollouts,
                 sg_counts_NxZ: jax.Array, *, group_size: int, learning_rate: float,
                 max_new_tokens: int, skipped_updates: int, consecutive_skips: int,
                 time_masks_s: float, time_update_s: float) -> dict[str, Any]:
  """The update's metrics (host floats) followed by the step's rollout figures.

  Reward, accuracy (reward >= 1), length and truncation are over every row
  sampled this step (all refill rounds); learning_rate is the one the update
  used; the skip counters are the train state's after the update.
  """
  lengths = rollouts.all_lengths
  rewards = rollouts.all_rewards
  return {
      **update_metrics,
      "reward_mean": float(rewards.mean()),
      "accuracy": float(np.mean(rewards >= 1.0)),
      "response_length_mean": float(lengths.mean()),
      "response_length_max": float(lengths.max()),
      "truncation_rate": float(np.mean(rollouts.all_finish == FINISH_LENGTH)),
      "learning_rate": learning_rate,
      "semantic_entropy": float(semantic_entropy_jax(sg_counts_NxZ)) + 0.0,
      "time_rollout_s": rollouts.time_rollout_s, "time_reward_s": rollouts.time_reward_s,
      "time_masks_s": time_masks_s, "time_update_s": time_update_s,
      "reward_failures": float(rollouts.reward_failures),
      "skipped_updates": float(skipped_updates),
      "consecutive_skips": float(consecutive_skips),
      "max_new_tokens": float(max_new_tokens),
      "filter_rounds": float(rollouts.filter_rounds),
      "kept_groups_fraction": float(rollouts.kept_fraction),
      "masked_groups": float((~rollouts.loss_rows_N).sum() // group_size),
      "example_ids": [e.get("id") for e in rollouts.examples],
  }


def step_rate(time_step_s: float, generated_tokens: int) -> dict[str, float]:
  """The step's wall time and its sampling throughput (generated tokens per second)."""
  return {"time_step_s": time_step_s,
          "tokens_per_s": generated_tokens / max(time_step_s, 1e-9)}
