"""Row filters and reward shaping from DAPO: dynamic sampling and overlong responses.

Row layout (DESIGN.md): row i belongs to prompt i // G. All functions are pure
and jittable with their string options and integer sizes static.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hicra_jax.rl import _checks

OVERLONG_MODES = ("none", "mask", "soft_penalty")


def dynamic_sampling_mask(rewards, group_size: int, *, atol: Any = 0.0) -> jax.Array:
  """DAPO dynamic sampling: keep-mask over rows that drops groups of equal rewards.

  A group whose rewards all lie within `atol` of each other
  (max_j r_j - min_j r_j <= atol) has zero GRPO advantage everywhere and
  contributes no gradient; all G of its rows get False. The trainer drops
  them and refills the batch with fresh groups.

  Args:
    rewards: f32[N] rewards, rows grouped G by G.
    group_size: G, a Python int dividing N (static).
    atol: tolerance >= 0 (0: exact equality).

  Returns:
    bool[N] keep-mask, constant within each group.
  """
  rewards_N = _checks.as_float("rewards", _checks.check_rank("rewards", rewards, (1,), "[N]"))
  n = rewards_N.shape[0]
  g = _checks.check_group_size(group_size, n)
  _checks.check_range("atol", atol, 0.0, None)
  r_PxG = rewards_N.reshape(n // g, g)
  spread_P = r_PxG.max(axis=1) - r_PxG.min(axis=1)
  return jnp.repeat(spread_P > atol, g)


def completion_lengths(completion_mask) -> jax.Array:
  """i32[N]: number of completion tokens of each row of a bool[N, T] mask."""
  mask_NxT = _checks.check_mask("completion_mask", _checks.check_rank(
      "completion_mask", completion_mask, (2,), "[N, T]"))
  return mask_NxT.sum(axis=1, dtype=jnp.int32)


def soft_overlong_penalty(lengths, max_length: int, cache_length: int) -> jax.Array:
  """DAPO's soft overlong punishment, added to the reward.

  With L = max_length (the generation limit), C = cache_length and |y| the
  completion length:

    R_len(y) = 0                    if |y| <= L - C
             = ((L - C) - |y|) / C  if L - C < |y| <= L
             = -1                   if |y| > L

  so the penalty falls linearly from 0 to -1 over the last C tokens.

  Args:
    lengths: [N] completion lengths (any real dtype).
    max_length: L, a positive int (static).
    cache_length: C, an int with 0 < C <= L (static).

  Returns:
    f32[N] penalties in [-1, 0].
  """
  lengths_N = _checks.as_float("lengths", _checks.check_rank("lengths", lengths, (1,), "[N]"))
  for name, v in (("max_length", max_length), ("cache_length", cache_length)):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
      raise ValueError(f"{name} must be a positive Python int, got {v!r}")
  if cache_length > max_length:
    raise ValueError(f"cache_length must be <= max_length={max_length}, got {cache_length}")
  start = max_length - cache_length
  ramp_N = (start - lengths_N) / cache_length
  return jnp.where(lengths_N <= start, 0.0,
                   jnp.where(lengths_N <= max_length, ramp_N, -1.0)).astype(lengths_N.dtype)


def overlong_shaping(rewards, completion_mask, truncated=None, *, mode: str = "none",
                     max_length: int | None = None,
                     cache_length: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Treatment of overlong (truncated) responses, as a named option.

    mode="none":         (rewards, completion_mask) unchanged.
    mode="mask":         DAPO overlong filtering: rows with truncated[i] get an
                         all-false completion mask, so they leave the loss (their
                         rewards still enter the group statistics).
    mode="soft_penalty": DAPO overlong reward shaping: rewards +
                         soft_overlong_penalty(lengths, max_length, cache_length),
                         lengths taken from completion_mask.

  Args:
    rewards: f32[N].
    completion_mask: bool[N, T].
    truncated: bool[N], the rows cut by the length limit (needed for "mask").
    mode: one of OVERLONG_MODES (static).
    max_length, cache_length: for "soft_penalty" (see `soft_overlong_penalty`).

  Returns:
    (rewards f32[N], completion_mask bool[N, T]).
  """
  _checks.check_option("overlong mode", mode, OVERLONG_MODES)
  rewards_N = _checks.as_float("rewards", _checks.check_rank("rewards", rewards, (1,), "[N]"))
  n = rewards_N.shape[0]
  mask_NxT = _checks.check_mask("completion_mask", _checks.check_rank(
      "completion_mask", completion_mask, (2,), "[N, T]"))
  if mask_NxT.shape[0] != n:
    raise ValueError(f"completion_mask must have N={n} rows like rewards, got shape "
                     f"{tuple(mask_NxT.shape)}")
  if mode == "mask":
    if truncated is None:
      raise ValueError("overlong mode='mask' needs truncated of shape [N], got None")
    truncated_N = _checks.check_mask("truncated", truncated, (n,), "[N]")
    mask_NxT = mask_NxT & ~truncated_N[:, None]
  elif mode == "soft_penalty":
    if max_length is None or cache_length is None:
      raise ValueError(f"overlong mode='soft_penalty' needs max_length and cache_length, got "
                       f"max_length={max_length!r}, cache_length={cache_length!r}")
    rewards_N = rewards_N + soft_overlong_penalty(completion_lengths(mask_NxT), max_length,
                                                  cache_length)
  return rewards_N, mask_NxT
