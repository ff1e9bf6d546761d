"""The scalars one RL step logs (every key in `metrics.STEP_KEYS`), from its
rollouts, its update's metrics and its timings. Pure: no trainer state.

N = P x G rows, Z Strategic Grams.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import numpy as np

from hicra_jax.analysis import fork_overlap, semantic_entropy_jax, sg_conditional_entropy_jax
from hicra_jax.sampling import FINISH_LENGTH
from hicra_jax.train.rollout import StepRollouts


def dynamics(rollouts: StepRollouts, planning_NxT: jax.Array, sg_counts_NxZ: jax.Array, *,
             fork_quantile: float, follow_ngram: int) -> dict[str, jax.Array]:
  """The paper's training-dynamics figures of a step, on device (dispatched, not awaited).

  semantic_entropy: of the batch's SG counts; sg_conditional_entropy: H(next
  `follow_ngram` tokens | SG) over the planning runs; the fork overlap both
  ways between the top-`fork_quantile` tokens by the raw policy's entropy at
  sampling and the planning tokens (`analysis.fork_overlap`). Over the
  tokens in the loss; no forward pass.
  """
  mask_NxT = rollouts.loss_mask_NxT
  top_planning, planning_top = fork_overlap(rollouts.entropy_NxT, planning_NxT, mask_NxT,
                                            quantile=fork_quantile)
  return {
      "semantic_entropy": semantic_entropy_jax(sg_counts_NxZ),
      "sg_conditional_entropy": sg_conditional_entropy_jax(
          rollouts.tokens_NxT, planning_NxT, mask_NxT, n=follow_ngram),
      "fork_top_entropy_planning_fraction": top_planning,
      "fork_planning_top_entropy_fraction": planning_top,
  }


PPL_CLASSES = {"planning": "planning_token_ratio", "execution": None}  # class: its token share


def update_reference_log_ppl(reference: dict[str, float], metrics: Mapping[str, float]) -> None:
  """Sets each class's reference log-perplexity, in place, at the first step that has
  tokens of that class (a step without planning tokens logs log_ppl_planning 0)."""
  for c, share in PPL_CLASSES.items():
    key = f"log_ppl_{c}"
    has_tokens = share is None or metrics.get(share, 0.0) > 0
    if key not in reference and has_tokens:
      reference[key] = metrics[key]


def relative_perplexity(log_ppl: Mapping[str, float], reference: Mapping[str, float]
                        ) -> dict[str, float]:
  """rel_ppl_<class> = exp(log_ppl_<class> - the reference step's log_ppl_<class>).

  The paper's relative perplexity: each class's perplexity divided by its
  perplexity at the first logged step with tokens of that class (reference,
  `update_reference_log_ppl`), so both start at 1; 1.0 before that step.
  """
  return {f"rel_ppl_{c}": math.exp(log_ppl[f"log_ppl_{c}"] - reference[f"log_ppl_{c}"])
          if f"log_ppl_{c}" in reference else 1.0 for c in PPL_CLASSES}


def step_metrics(update_metrics: Mapping[str, float], rollouts: StepRollouts,
                 dynamics_metrics: Mapping[str, jax.Array], *, group_size: int,
                 learning_rate: float, max_new_tokens: int, skipped_updates: int,
                 consecutive_skips: int, time_masks_s: float, time_update_s: float
                 ) -> dict[str, Any]:
  """The update's metrics (host floats) followed by the step's rollout figures.

  Reward, accuracy (reward >= 1), length and truncation are over every row
  sampled this step (all refill rounds); learning_rate is the one the update
  used; the skip counters are the train state's after the update;
  dynamics_metrics: `dynamics`.
  """
  lengths = rollouts.all_lengths
  rewards = rollouts.all_rewards
  return {
      **update_metrics,
      **{key: float(value) + 0.0 for key, value in jax.device_get(dynamics_metrics).items()},
      "reward_mean": float(rewards.mean()),
      "accuracy": float(np.mean(rewards >= 1.0)),
      "response_length_mean": float(lengths.mean()),
      "response_length_max": float(lengths.max()),
      "truncation_rate": float(np.mean(rollouts.all_finish == FINISH_LENGTH)),
      "learning_rate": learning_rate,
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
