"""A synthetic verifiable task for tiny random models (tests, smoke runs, benchmarks).

Prompts are random token sequences; the reward of a completion is the fraction
of its tokens equal to `target` (a random-init model starts near 1/V). The
planted Strategic Gram is a token n-gram (default: the target twice), matched
on token ids by `ngram_planner`, a stand-in for an `SGTrie` with the same
call signature as `hicra_jax.planning.planning_mask_and_counts`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def synthetic_examples(num: int, *, vocab_size: int, prompt_len: int, seed: int,
                       low: int = 3) -> list[dict[str, Any]]:
  """`num` examples {"id", "prompt_ids"} of random tokens in [low, vocab_size)."""
  rng = np.random.default_rng(seed)
  return [{"id": i, "prompt_ids": rng.integers(low, vocab_size, prompt_len).tolist()}
          for i in range(num)]


def target_fraction_rewards(completions: Sequence[Sequence[int]], target: int) -> np.ndarray:
  """f32[N]: fraction of each completion's tokens equal to `target` (0 when empty)."""
  return np.asarray([float(np.mean(np.asarray(c) == target)) if len(c) else 0.0
                     for c in completions], np.float32)


@functools.partial(jax.jit, static_argnames=("pattern",))
def ngram_planner(tokens_NxT, completion_mask_NxT, *, pattern: tuple[int, ...]):
  """(planning bool[N, T], counts i32[N, 1]) of a token n-gram inside completions."""
  n, t = tokens_NxT.shape
  k = len(pattern)
  hit = jnp.ones((n, t), bool)
  for j, tok in enumerate(pattern):
    shifted = jnp.pad(tokens_NxT[:, j:], ((0, 0), (0, j)), constant_values=-1)
    inside = jnp.pad(completion_mask_NxT[:, j:], ((0, 0), (0, j)))
    hit = hit & (shifted == tok) & inside
  plan = jnp.zeros((n, t), bool)
  for j in range(k):
    plan = plan | jnp.pad(hit[:, :t - j], ((0, 0), (j, 0)))
  return plan, hit.sum(axis=1, dtype=jnp.int32)[:, None]


def synthetic_reward_fn(target: int):
  """A trainer reward function: (completion ids, texts, examples, group_size) -> (f32[N], failures)."""
  def reward(completions, texts, examples: Sequence[Mapping[str, Any]], group_size: int):
    del texts, examples, group_size
    return target_fraction_rewards(completions, target), 0
  return reward
