"""Rollout collection for one RL step (host side): sample G completions per
prompt, grade them, and, with DAPO dynamic filtering, drop the groups whose
rewards are all equal (zero advantage: no learning signal) and refill the batch
from fresh prompts for up to `max_rounds` rounds.

Rows of a prompt's group are contiguous: row i belongs to prompt i // G. With
several processes each grades the rows on its own devices; rewards are then
gathered, and the kept groups' rows are taken out of the rounds' global arrays
on device.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax import multihost, sharding
from hicra_jax.data.datasets import ExampleStream
from hicra_jax.sampling import (FINISH_LENGTH, FINISH_STOP, DeviceRollout, Rollout,
                                SamplingParams, generate_arrays, generate_pooled_arrays)

logger = logging.getLogger("hicra_jax.train")

# (completions: list[list[int]], texts: list[str] | None, examples, group_size)
#   -> (rewards f32[N], number of failed gradings)
RewardFn = Callable[[list, Any, Sequence[Mapping[str, Any]], int], tuple[np.ndarray, int]]


def vision_token_ids(model_config) -> tuple[int, ...]:
  """A vision-language model's image / video / vision start and end tokens (() for text).

  A vision-language run stops a completion at any of them and keeps them out
  of the loss: the update's forward pass places images at image tokens, so it
  must see only its prompts' ones.
  """
  if not getattr(model_config, "is_multimodal", False):
    return ()
  names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
  ids = (getattr(model_config, name, None) for name in names)
  return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


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

  prompts: all P prompts' ids. arrays: all N rows as global device arrays.
  rollout: this process's rows as host arrays (all rows with one process;
  whole groups, `rollout.prompt_index` names their prompts). completions:
  those rows' token ids without the stop token (what rewards read); texts:
  their decoded text (None without a tokenizer). vision: the P prompts'
  images (a host `hicra_jax.models.VisionInputs`, row p = prompt p), or None.
  """

  prompts: list[list[int]]
  arrays: DeviceRollout
  rollout: Rollout
  completions: list[list[int]]
  texts: list[str] | None
  vision: Any = None

  def local_prompts(self, group_size: int) -> np.ndarray:
    """i64[P_local]: the prompts whose rows this process holds, in row order."""
    return self.rollout.prompt_index[::group_size].astype(np.int64)

  def local_rows(self, group_size: int) -> np.ndarray:
    """i64[N_local]: this process's rows in the whole batch (whole groups, sorted)."""
    index = self.rollout.prompt_index.astype(np.int64)
    return index * group_size + np.arange(len(index)) % group_size


def sample(policy, examples: Sequence[Mapping[str, Any]], params: SamplingParams,
           key: jax.Array, *, prompt_buckets: Sequence[int], segment_tokens: int,
           rows_per_call: int | None = None, refill_slots: int = 0, tokenizer=None,
           interrupt: Callable[[], bool] | None = None, vision=None) -> Sampled:
  """`params.n` completions of each example's "prompt_ids", in generate calls of at most
  `rows_per_call` rows (None: sized from device memory), or, with refill_slots > 0,
  through a pool of that many slots (continuous batching; the same rows).

  vision: the examples' images (`VisionInputs`, one row per example), or None;
  the prompts are prefilled with them.

  Raises:
    GenerationInterrupted: `interrupt()` returned True between two decode
      segments of `segment_tokens` tokens.
  """
  prompts = [list(e["prompt_ids"]) for e in examples]
  common = dict(prompt_buckets=tuple(prompt_buckets), interrupt=interrupt,
                segment_tokens=segment_tokens, vision=vision)
  if refill_slots:
    arrays = generate_pooled_arrays(policy, prompts, params, key, slots=refill_slots, **common)
  else:
    arrays = generate_arrays(policy, prompts, params, key, rows_per_call=rows_per_call, **common)
  rollout = arrays.to_host(params.n)
  completions = rollout.token_lists(include_stop=False)
  texts = None
  if tokenizer is not None:
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]
  return Sampled(prompts, arrays, rollout, completions, texts, vision)


def grade(sampled: Sampled, examples: Sequence[Mapping[str, Any]], reward_fn: RewardFn,
          group_size: int) -> tuple[np.ndarray, int]:
  """(rewards f32[N] of every row, failed gradings over all processes).

  Each process grades its own rows; the rewards are then gathered, so every
  process holds the same global vector.
  """
  local_examples = [examples[int(i)] for i in sampled.local_prompts(group_size)]
  rewards, failures = safe_rewards(reward_fn, sampled.completions, sampled.texts,
                                   local_examples, group_size)
  rows = sampled.local_rows(group_size)
  total_rows = len(sampled.prompts) * group_size
  return (multihost.gather_rows(rows, rewards, total_rows),
          int(multihost.sum_over_processes(failures)))


@dataclasses.dataclass(frozen=True)
class StepRollouts:
  """One step's rollouts: exactly P groups of G rows (N = P x G).

  The batch (P prompts, in the order the groups were kept), the same on every process:
    examples, prompts: the P examples and their prompt ids (host).
    tokens_NxT, logprobs_NxT, entropy_NxT, completion_mask_NxT, loss_mask_NxT:
      global device arrays (rows over the mesh's batch axes); entropy_NxT is
      the raw policy's token entropy at sampling (`DeviceRollout`);
      loss_mask_NxT is the completion tokens that enter the loss (never a
      token of `exclude_ids`, e.g. a sampled image token).
    finish_N: "stop" or "length"; rewards_N: f32 (host).
    loss_rows_N: bool, False on the rows of groups that only fill the batch
      (too few informative groups after max_rounds): they carry no loss.
  Every row sampled this step, in all rounds (the step's accuracy, length
  and truncation figures are over these), host:
    all_rewards: f32[rounds x N]; all_finish: str[rounds x N];
    all_lengths: i32[rounds x N].
  Counters: time_rollout_s / time_reward_s (summed over rounds, this
    process's), reward_failures (gradings that failed or were not finite, all
    processes), generated_tokens, filter_rounds (rounds used), kept_fraction
    (informative groups / sampled).
  vision_P: the P prompts' images (host `VisionInputs`, row p = prompt p), or
    None without images.
  """

  examples: list[Mapping[str, Any]]
  prompts: list[list[int]]
  tokens_NxT: jax.Array
  logprobs_NxT: jax.Array
  entropy_NxT: jax.Array
  completion_mask_NxT: jax.Array
  loss_mask_NxT: jax.Array
  finish_N: np.ndarray
  rewards_N: np.ndarray
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
  vision_P: Any = None


@dataclasses.dataclass(frozen=True)
class _Round:
  """One rollout round's global host view (N = P x G rows)."""

  examples: list[Mapping[str, Any]]
  prompts: list[list[int]]
  arrays: DeviceRollout
  rewards_N: np.ndarray
  finish_N: np.ndarray
  lengths_N: np.ndarray
  vision: Any = None


@functools.partial(jax.jit, static_argnames=("rows_sharding", "exclude_ids"))
def _take_rows(rounds: tuple[DeviceRollout, ...], rows_N, loss_rows_N, *, rows_sharding=None,
               exclude_ids: tuple[int, ...] = ()):
  """The batch's rows out of all rounds' rows (row r*N + i is round r's row i)."""
  cat = DeviceRollout.concatenate(rounds)
  take = lambda x: jnp.take(x, rows_N, axis=0)
  mask = take(cat.completion_mask)
  tokens = take(cat.tokens)
  loss_mask = mask & loss_rows_N[:, None]
  if exclude_ids:
    loss_mask &= ~jnp.isin(tokens, jnp.asarray(exclude_ids, tokens.dtype))
  out = (tokens, take(cat.logprobs), take(cat.entropy), mask, loss_mask)
  if rows_sharding is not None:
    out = tuple(jax.lax.with_sharding_constraint(x, rows_sharding) for x in out)
  return out


def collect(sample_fn: Callable[[Sequence[Mapping[str, Any]], jax.Array], Sampled],
            data: ExampleStream, key: jax.Array, reward_fn: RewardFn, *, group_size: int,
            prompts_per_step: int, dynamic_filter: bool, max_rounds: int,
            mesh=None, exclude_ids: tuple[int, ...] = ()) -> StepRollouts:
  """Rollouts and rewards for one step, with dynamic filtering and refill.

  Every decision (which groups are kept, whether to refill) is taken from
  global values, so it is the same on every process.

  Args:
    sample_fn: (examples, key) -> their `Sampled` completions, group_size each.
    data: the prompt stream; each round takes prompts_per_step examples.
    key: the step's key (round r samples with fold_in(key, r)).
    dynamic_filter: keep only informative groups (rewards not all equal),
      sampling up to max_rounds rounds; without it one round is kept whole.
    mesh: the batch's rows are split over its batch axes (None: no mesh).
    exclude_ids: tokens kept out of the loss mask even when sampled (a
      vision-language model's image tokens: the update's forward pass must see
      only its prompts' image tokens).
  """
  g, p = group_size, prompts_per_step
  n = g * p
  rounds = max_rounds if dynamic_filter else 1
  kept: list[tuple[int, int]] = []  # (round, prompt) of the kept groups, in order
  dropped: list[tuple[int, int]] = []
  done: list[_Round] = []
  time_rollout_s = time_reward_s = 0.0
  failures = 0
  for r in range(rounds):
    examples = data.take(p)
    t0 = time.perf_counter()
    sampled = sample_fn(examples, jax.random.fold_in(key, r))
    t1 = time.perf_counter()
    rewards_N, fails = grade(sampled, examples, reward_fn, g)
    t2 = time.perf_counter()
    time_rollout_s += t1 - t0
    time_reward_s += t2 - t1
    failures += fails
    local = sampled.local_rows(g)
    ro = sampled.rollout
    lengths_N, stopped_N = multihost.gather_rows(
        local, np.stack([ro.lengths, ro.finish_reason == FINISH_STOP], axis=1), n).T
    done.append(_Round(examples, sampled.prompts, sampled.arrays, rewards_N,
                       np.where(stopped_N.astype(bool), FINISH_STOP, FINISH_LENGTH),
                       lengths_N.astype(np.int32), sampled.vision))
    rewards_PxG = rewards_N.reshape(p, g)
    for i in range(p):
      informative = float(rewards_PxG[i].max() - rewards_PxG[i].min()) > 0
      (kept if (not dynamic_filter or informative) else dropped).append((r, i))
    if len(kept) >= p:
      break
  used_rounds = len(done)
  groups = kept[:p]
  kept_fraction = len(kept) / max(used_rounds * p, 1)
  # Not enough informative groups after max_rounds: fill with dropped ones,
  # which are masked out of the loss (zero advantage, no tokens).
  loss_rows_N = np.repeat(np.arange(p) < len(groups), g)
  groups += dropped[:p - len(groups)]
  rows_N = np.concatenate([r * n + i * g + np.arange(g) for r, i in groups])
  rows_sharding = None if mesh is None else sharding.batch_sharding(mesh, 2)
  tokens, logprobs, entropy, mask, loss_mask = _take_rows(
      tuple(rd.arrays for rd in done), rows_N.astype(np.int32), loss_rows_N,
      rows_sharding=rows_sharding, exclude_ids=tuple(exclude_ids))
  per_row = lambda field: np.concatenate(
      [getattr(done[r], field)[i * g:(i + 1) * g] for r, i in groups])
  all_lengths = np.concatenate([rd.lengths_N for rd in done])
  return StepRollouts(
      examples=[done[r].examples[i] for r, i in groups],
      prompts=[done[r].prompts[i] for r, i in groups],
      tokens_NxT=tokens, logprobs_NxT=logprobs, entropy_NxT=entropy, completion_mask_NxT=mask,
      loss_mask_NxT=loss_mask, finish_N=per_row("finish_N"), rewards_N=per_row("rewards_N"),
      loss_rows_N=loss_rows_N, all_rewards=np.concatenate([rd.rewards_N for rd in done]),
      all_finish=np.concatenate([rd.finish_N for rd in done]), all_lengths=all_lengths,
      time_rollout_s=time_rollout_s, time_reward_s=time_reward_s, reward_failures=failures,
      generated_tokens=int(all_lengths.sum()), filter_rounds=used_rounds,
      kept_fraction=kept_fraction, vision_P=_kept_vision(done, groups, p))


def _kept_vision(done: Sequence[_Round], groups: Sequence[tuple[int, int]], p: int):
  """The kept groups' prompts' images (row k = group k's prompt), or None without images."""
  if all(rd.vision is None for rd in done):
    return None
  if any(rd.vision is None for rd in done):
    raise ValueError("some rollout rounds have vision inputs and others none; a "
                     "vision-language run gives every round its VisionInputs")
  cat = type(done[0].vision).concatenate([rd.vision for rd in done])
  return cat.take(np.asarray([r * p + i for r, i in groups], np.int64))
