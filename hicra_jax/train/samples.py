"""The sample log (samples.jsonl): a few completions per step with their
reward and planning spans, as text with a tokenizer, token ids otherwise; and
the optional dump of every rollout of a step (rollouts/step_XXXXXX.jsonl.gz).

N = P x G rows, T completion positions.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from hicra_jax import config as config_lib
from hicra_jax import multihost
from hicra_jax.data import images as images_lib
from hicra_jax.train.rollout import StepRollouts

ROLLOUT_DIR = "rollouts"


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


def entries(rollouts: StepRollouts, planning_NxT: jax.Array, rows: np.ndarray, *,
            group_size: int, tokenizer=None) -> list[dict[str, Any]]:
  """One log entry per row in `rows`: example id, reward, prompt, completion and
  its planning spans (text with a tokenizer, token ids otherwise).

  Only those rows leave the device (a collective with several processes: every
  process calls it; process 0 writes the entries).
  """
  tokens_RxT, mask_RxT, planning_RxT = multihost.tree_to_host(
      _take_rows((rollouts.tokens_NxT, rollouts.completion_mask_NxT, planning_NxT),
                 np.asarray(rows, np.int32)))
  decode = lambda x: tokenizer.decode(x, skip_special_tokens=False)
  out = []
  for i, row in enumerate(rows):
    prompt = int(row) // group_size
    ids = tokens_RxT[i, :int(mask_RxT[i].sum())].tolist()
    spans = planning_spans(ids, planning_RxT[i])
    example = rollouts.examples[prompt]
    entry = {"example_id": example.get("id"), "reward": float(rollouts.rewards_N[row])}
    if example.get("images"):
      entry["images"] = list(example["images"])
    if tokenizer is not None:
      prompt_text = decode(rollouts.prompts[prompt])
      if example.get("images"):
        prompt_text = _one_pad_per_image(prompt_text)
      entry.update(prompt=prompt_text, completion=decode(ids),
                   planning_spans=[decode(span) for span in spans])
    else:
      entry.update(prompt_ids=list(rollouts.prompts[prompt]), completion_ids=ids,
                   planning_spans=spans)
    out.append(entry)
  return out


def _one_pad_per_image(text: str) -> str:
  """The prompt text with each image's run of image-pad tokens shown as one (readable logs)."""
  pad = images_lib.IMAGE_PAD
  return re.sub(f"(?:{re.escape(pad)})+", pad, text)


def sample_log(rollouts: StepRollouts, planning_NxT: jax.Array, *, prompts: int,
               group_size: int, tokenizer=None) -> list[dict[str, Any]]:
  """`entries` of the first sample of each of the first `prompts` prompts."""
  return entries(rollouts, planning_NxT, np.arange(prompts) * group_size,
                 group_size=group_size, tokenizer=tokenizer)


def rollout_entries(rollouts: StepRollouts, planning_NxT: jax.Array, *, group_size: int,
                    tokenizer=None) -> list[dict[str, Any]]:
  """`entries` of every row of the step, in batch order."""
  return entries(rollouts, planning_NxT, np.arange(len(rollouts.rewards_N)),
                 group_size=group_size, tokenizer=tokenizer)


def rollout_dump_path(workdir: str, step: int) -> epath.Path:
  return config_lib.as_epath(workdir) / ROLLOUT_DIR / f"step_{step:06d}.jsonl.gz"


def write_rollout_dump(workdir: str, step: int, step_entries: list[Mapping[str, Any]]
                       ) -> epath.Path:
  """Writes a step's entries, each with "step", to gzip JSONL (`rollout_dump_path`;
  local or any etils.epath workdir); returns the path."""
  path = rollout_dump_path(workdir, step)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = "".join(json.dumps({"step": int(step), **e}) + "\n" for e in step_entries)
  path.write_bytes(gzip.compress(lines.encode("utf-8"), mtime=0))
  return path
