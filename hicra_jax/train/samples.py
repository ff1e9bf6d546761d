"""The sample log (samples.jsonl): a few completions per step with their
reward and planning spans, as text with a tokenizer, token ids otherwise.

N = P x G rows, T completion positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax import multihost
from hicra_jax.train.rollout import StepRollouts


def planning_spans(ids: Sequence[int], planning_T: np.ndarray) -> list[list[int]]:
  """The runs of consecutive planning tokens of one completion, as token-id lists."""
  spans, start = [], None
  for t in range(len(ids) + 1):
    inside = t < len(ids) and bool(planning_T[t])
    if inside and start is None:
      start = t
    elif not inside and start is not None:
      spans.append(list(ids[start:t]))
      start = None
  return spans


@jax.jit
def _take_rows(arrays, rows):
  return tuple(jnp.take(x, rows, axis=0) for x in arrays)


def sample_log(rollouts: StepRollouts, planning_NxT: jax.Array, *, prompts: int,
               group_size: int, tokenizer=None) -> list[dict[str, Any]]:
  """Entries for the first sample of each of the first `prompts` prompts.

  Only those rows leave the device (a collective with several processes: every
  process calls it; process 0 writes the entries).
  """
  g = group_size
  rows = np.arange(prompts) * g
  tokens_PxT, mask_PxT, planning_PxT = multihost.tree_to_host(
      _take_rows((rollouts.tokens_NxT, rollouts.completion_mask_NxT, planning_NxT), rows))
  out = []
  for i, planning_T in enumerate(planning_PxT):
    length = int(mask_PxT[i].sum())
    ids = tokens_PxT[i, :length].tolist()
    spans = planning_spans(ids, planning_T)
    sample = {"example_id": rollouts.examples[i].get("id"),
              "reward": float(rollouts.rewards_N[rows[i]])}
    if tokenizer is not None:
      decode = lambda x: tokenizer.decode(x, skip_special_tokens=False)
      sample.update(prompt=decode(rollouts.prompts[i]), completion=decode(ids),
                    planning_spans=[decode(s) for s in spans])
    else:
      sample.update(prompt_ids=list(rollouts.prompts[i]), completion_ids=ids,
                    planning_spans=spans)
    out.append(sample)
  return out
