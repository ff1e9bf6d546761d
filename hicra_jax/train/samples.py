"""The sample log (samples.jsonl): a few completions per step with their
reward and planning spans, as text with a tokenizer, token ids otherwise.

N = P x G rows, T completion positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

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


def sample_log(rollouts: StepRollouts, planning_NxT: jax.Array, *, prompts: int,
               group_size: int, tokenizer=None) -> list[dict[str, Any]]:
  """Entries for the first sample of each of the first `prompts` prompts.

  Only those rows of planning_NxT leave the device.
  """
  g = group_size
  planning_PxT = np.asarray(planning_NxT[:prompts * g:g])
  out = []
  for i, planning_T in enumerate(planning_PxT):
    row = i * g
    length = int(rollouts.completion_mask_NxT[row].sum())
    ids = rollouts.tokens_NxT[row, :length].tolist()
    spans = planning_spans(ids, planning_T)
    sample = {"example_id": rollouts.examples[i].get("id"),
              "reward": float(rollouts.rewards_N[row])}
    if tokenizer is not None:
      decode = lambda x: tokenizer.decode(x, skip_special_tokens=False)
      sample.update(prompt=decode(rollouts.prompts[i]), completion=decode(ids),
                    planning_spans=[decode(s) for s in spans])
    else:
      sample.update(prompt_ids=list(rollouts.prompts[i]), completion_ids=ids,
                    planning_spans=spans)
    out.append(sample)
  return out
