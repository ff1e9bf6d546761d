"""Fork tokens and planning tokens: how much the high-entropy minority of a
batch's tokens ("forking tokens", the 80/20 paper's top-20% by entropy) and the
planning tokens overlap (the HICRA paper's Figs. 9/10).

N rows, T completion positions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

DEFAULT_QUANTILE = 0.2  # the top 20% highest-entropy tokens


@functools.partial(jax.jit, static_argnames=("quantile",))
def fork_overlap(entropy_NxT, planning_NxT, mask_NxT, *, quantile: float = DEFAULT_QUANTILE):
  """Overlap of the batch's top-`quantile` entropy tokens and its planning tokens.

  The top tokens are the ceil(quantile x K) highest-entropy of the K tokens
  in the mask (ties at the threshold included), ranked over the whole batch.

  Args:
    entropy_NxT: f32 token entropies (e.g. the raw policy's at sampling).
    planning_NxT: bool planning tokens.
    mask_NxT: bool tokens that count (the completions).
    quantile: the top share, in (0, 1] (static).

  Returns:
    (top_planning_fraction, planning_top_fraction) f32[] each:
    |top & planning| / |top| (how many fork tokens are planning tokens) and
    |top & planning| / |planning| (how many planning tokens are fork tokens);
    0 when the denominator is empty.
  """
  if not 0.0 < quantile <= 1.0:
    raise ValueError(f"quantile = {quantile!r}: expected a number in (0, 1]")
  mask = mask_NxT.astype(bool)
  values = jnp.where(mask, entropy_NxT.astype(jnp.float32), -jnp.inf).reshape(-1)
  count = mask.sum()
  k = jnp.maximum(jnp.ceil(quantile * count).astype(jnp.int32), 1)
  descending = -jnp.sort(-values)
  threshold = descending[jnp.minimum(k, values.size) - 1]
  top = mask & (entropy_NxT >= threshold) & (count > 0)
  planning = mask & planning_NxT.astype(bool)
  both = (top & planning).sum().astype(jnp.float32)
  fraction = lambda den: jnp.where(den > 0, both / jnp.maximum(den, 1), 0.0)
  return fraction(top.sum()), fraction(planning.sum())
