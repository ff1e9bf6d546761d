"""Rollout collection for one RL step (host side): sample G completions per
prompt, grade them, and, with DAPO dynamic filtering, drop the groups whose
rewards are all equal (zero advantage: no learning signal) and refill the batch
from fresh prompts for up to `max_rounds` rounds.

Rows of a prompt's group are contiguous: row i belongs to prompt i // G.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from hicra_jax.data.datasets import ExampleStream
from hicra_jax.sampling import Rollout, SamplingParams, generate

logger = logging.getLogger("hicra_jax.train")

# (completions: list[list[int]], texts: list[str] | None, examples, group_size)
#   -> (rewards f32[N], number of failed gradings)
RewardFn = Callable[[list, Any, Sequence[Mapping[str, Any]], int], tuple[np.ndarray, int]]


def safe_rewards(reward_fn: RewardFn, completions, texts, examples, group_size: int
                 ) -> tuple[np.ndarray, int]:
  """reward_fn, with any exception or bad output turned into zero rewards (counted)."""
  n = len(completions)
  try:
    rewards, failures = reward_fn(completions, texts, examples, group_size)
    rewards = np.asarray(rewards, np.float32).reshape(-1)
    if rewards.shape != (n,):
      raise ValueError(f"reward function returned shape {rewards.shape}, expected ({n},)")
    bad = ~np.isfinite(rewards)
    rewards = np.where(bad, 0.0, rewards).astype(np.float32)
    return rewards, int(failures) + int(bad.sum())
  except Exception as e:  # pylint: disable=broad-except
    logger.warning("reward function failed on the whole batch (rewards set to 0): %s: %s",
                   type(e).__name__, e)
    return np.zeros((n,), np.float32), n


@dataclasses.dataclass(frozen=True)
class Sampled:
  """The completions of P prompts, G = params.n each (N = P x G rows; T = max_new_tokens).

  completions: each row's token ids without the stop token (what rewards read);
  texts: their decoded text (None without a tokenizer).
  """

  prompts: list[list[int]]
  rollout: Rollout
  completions: list[list[int]]
  texts: list[str] | None


def sample(policy, examples: Sequence[Mapping[str, Any]], params: SamplingParams,
           key: jax.Array, *, prompt_buckets: Sequence[int], segment_tokens: int,
           rows_per_call: int | None = None, tokenizer=None,
           interrupt: Callable[[], bool] | None = None) -> Sampled:
  """`params.n` completions of each example's "prompt_ids", in generate calls of at most
  `rows_per_call` rows (None: sized from device memory).

  Raises:
    GenerationInterrupted: `interrupt()` returned True between two decode
      segments of `segment_tokens` tokens.
  """
  prompts = [list(e["prompt_ids"]) for e in examples]
  rollout = generate(policy, prompts, params, key, prompt_buckets=tuple(prompt_buckets),
                     interrupt=interrupt, segment_tokens=segment_tokens,
                     rows_per_call=rows_per_call)
  completions = rollout.token_lists(include_stop=False)
  texts = None
  if tokenizer is not None:
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]
  return Sampled(prompts, rollout, completions, texts)


@dataclasses.dataclass(frozen=True)
class Group:
  """The G graded completions of one prompt (host arrays; T = max_new_tokens)."""

  example: Mapping[str, Any]
  prompt: list[int]
  tokens_GxT: np.ndarray
  logprobs_GxT: np.ndarray
  completion_mask_GxT: np.ndarray
  finish_G: np.ndarray
  rewards_G: np.ndarray
  texts: list[str] | None

  @property
  def informative(self) -> bool:
    """Rewards differ within the group (equal rewards give every row zero advantage)."""
    return float(self.rewards_G.max() - self.rewards_G.min()) > 0


def groups_of(examples: Sequence[Mapping[str, Any]], sampled: Sampled, rewards_N: np.ndarray,
              group_size: int) -> list[Group]:
  """`sampled`'s rows cut into one `Group` per example."""
  ro, g = sampled.rollout, group_size
  out = []
  for i, example in enumerate(examples):
    rows = slice(i * g, (i + 1) * g)
    out.append(Group(example, sampled.prompts[i], ro.tokens[rows], ro.logprobs[rows],
                     ro.completion_mask[rows], ro.finish_reason[rows], rewards_N[rows],
                     None if sampled.texts is None else sampled.texts[rows]))
  return out


@dataclasses.dataclass(frozen=True)
class StepRollouts:
  """One step's rollouts: exactly P groups of G rows (N = P x G), host arrays.

  The batch (P prompts, in the order the groups were kept):
    examples, prompts: the P examples and their prompt ids.
    tokens_NxT, logprobs_NxT, completion_mask_NxT: the sampler's completions.
    finish_N: "stop" or "length"; rewards_N: f32; texts: N strings or None.
    loss_rows_N: bool, False on the rows of groups that only fill the batch
      (too few informative groups after max_rounds): they carry no loss.
  Every row sampled this step, in all rounds (the step's accuracy, length
  and truncation figures are over these):
    all_rewards: f32[rounds x N]; all_finish: str[rounds x N];
    all_lengths: i32[rounds x N].
  Counters: time_rollout_s / time_reward_s (summed over rounds),
    reward_failures (gradings that failed or were not finite), generated_tokens,
    filter_rounds (rounds used), kept_fraction (informative groups / sampled).
  """

  examples: list[Mapping[str, Any]]
  prompts: list[list[int]]
  tokens_NxT: np.ndarray
  logprobs_NxT: np.ndarray
  completion_mask_NxT: np.ndarray
  finish_N: np.ndarray
  rewards_N: np.ndarray
  texts: list[str] | None
  loss_rows_N: np.ndarray
  all_rewards: np.ndarray
  all_finish: np.ndarray
  all_lengths: np.ndarray
  time_rollout_s: float
  time_reward_s: float
  reward_failures: int
  generated_tokens: int
  filter_rounds: int
  kept_fraction: float

  @functools.cached_property
  def loss_mask_NxT(self) -> np.ndarray:
    """bool[N, T]: the completion tokens that enter the loss."""
    return self.completion_mask_NxT & self.loss_rows_N[:, None]


def collect(sample_fn: Callable[[Sequence[Mapping[str, Any]], jax.Array], Sampled],
            data: ExampleStream, key: jax.Array, reward_fn: RewardFn, *, group_size: int,
            prompts_per_step: int, dynamic_filter: bool, max_rounds: int) -> StepRollouts:
  """Rollouts and rewards for one step, with dynamic filtering and refill.

  Args:
    sample_fn: (examples, key) -> their `Sampled` completions, group_size each.
    data: the prompt stream; each round takes prompts_per_step examples.
    key: the step's key (round r samples with fold_in(key, r)).
    dynamic_filter: keep only informative groups, sampling up to max_rounds
      rounds; without it one round is kept whole.
  """
  g, p = group_size, prompts_per_step
  rounds = max_rounds if dynamic_filter else 1
  kept: list[Group] = []
  dropped: list[Group] = []
  time_rollout_s = time_reward_s = 0.0
  failures = generated = 0
  all_rewards, all_finish, all_lengths = [], [], []
  used_rounds = 0
  for r in range(rounds):
    used_rounds = r + 1
    examples = data.take(p)
    t0 = time.perf_counter()
    sampled = sample_fn(examples, jax.random.fold_in(key, r))
    t1 = time.perf_counter()
    rewards_N, fails = safe_rewards(reward_fn, sampled.completions, sampled.texts, examples, g)
    t2 = time.perf_counter()
    time_rollout_s += t1 - t0
    time_reward_s += t2 - t1
    failures += fails
    generated += int(sampled.rollout.lengths.sum())
    all_rewards.append(rewards_N)
    all_finish.append(sampled.rollout.finish_reason)
    all_lengths.append(sampled.rollout.lengths)
    for group in groups_of(examples, sampled, rewards_N, g):
      (kept if (not dynamic_filter or group.informative) else dropped).append(group)
    if len(kept) >= p:
      break
  groups = kept[:p]
  kept_fraction = len(kept) / max(used_rounds * p, 1)
  # Not enough informative groups after max_rounds: fill with dropped ones,
  # which are masked out of the loss (zero advantage, no tokens).
  loss_rows_N = np.repeat(np.arange(p) < len(groups), g)
  groups += dropped[:p - len(groups)]
  cat = lambda field: np.concatenate([getattr(group, field) for group in groups])
  return StepRollouts(
      examples=[group.example for group in groups], prompts=[group.prompt for group in groups],
      tokens_NxT=cat("tokens_GxT"), logprobs_NxT=cat("logprobs_GxT"),
      completion_mask_NxT=cat("completion_mask_GxT"), finish_N=cat("finish_G"),
      rewards_N=cat("rewards_G"),
      texts=None if groups[0].texts is None else [t for group in groups for t in group.texts],
      loss_rows_N=loss_rows_N, all_rewards=np.concatenate(all_rewards),
      all_finish=np.concatenate(all_finish), all_lengths=np.concatenate(all_lengths),
      time_rollout_s=time_rollout_s, time_reward_s=time_reward_s, reward_failures=failures,
      generated_tokens=generated, filter_rounds=used_rounds, kept_fraction=kept_fraction)
