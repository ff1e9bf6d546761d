"""Training datasets: JSONL, parquet, HF `datasets` and reasoning-gym rows; a grain example stream.

  rows = load_rows("jsonl", path="train.jsonl", question_field="problem")
  rows = attach_prompt_ids(rows, tokenizer)            # + "id", "prompt_ids"
  stream = ExampleStream(rows, seed=0)                 # seeded shuffle, repeats (global)
  batch = stream.take(8); state = stream.get_state()   # state: JSON, part of a checkpoint

Every row is a dict with "question" and "answer" (the reward registry's
example format; reasoning-gym rows keep "metadata" for their verifiers).
A JSONL row may also name images (`image`: a path, or `images`: a list of
paths, relative to the file's folder): its row gets "images" (absolute paths)
and "where" ("file:line"), and `attach_prompt_ids(..., processor=...)` builds
its prompt with the image tokens and adds "image_grid_thw" (data/images.py).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import grain

from hicra_jax import options
from hicra_jax.data import images as images_lib
from hicra_jax.data.image_paths import image_paths, names_images
from hicra_jax.data.jsonl import read_jsonl_numbered
from hicra_jax.data.prompts import DEFAULT_INSTRUCTION, encode_prompts

SOURCES = options.DATA_SOURCES


def _mapped(rows, question_field: str, answer_field: str, origin: str, *,
            lines: Sequence[int] | None = None) -> list[dict[str, Any]]:
  """Rows {"question", "answer"[, "metadata"][, "images", "where"]}.

  lines: the JSONL line of each row; only JSONL rows may name images (their
  paths resolve against the file's folder).
  """
  out = []
  for i, row in enumerate(rows):
    if question_field not in row or answer_field not in row:
      raise ValueError(f"{origin}: row {i} lacks the fields {question_field!r} and "
                       f"{answer_field!r} (data.question_field / data.answer_field); it has "
                       f"{sorted(row)}")
    item = {"question": row[question_field], "answer": row[answer_field]}
    if "metadata" in row:
      item["metadata"] = row["metadata"]
    if names_images(row):
      if lines is None:
        raise ValueError(f"{origin}: row {i} names images; images are read from JSONL "
                         "sources only (data.source='jsonl')")
      where = f"{origin}:{lines[i]}"
      item["images"] = image_paths(row, base_dir=os.path.dirname(origin) or ".", where=where)
      item["where"] = where
    out.append(item)
  return out


def load_rows(source: str, *, path: str = "", name: str = "", split: str = "train",
              task: str = "", size: int = 0, seed: int = 0,
              task_kwargs: Mapping[str, Any] | None = None, question_field: str = "question",
              answer_field: str = "answer") -> list[dict[str, Any]]:
  """Rows {"question", "answer"[, "metadata"]} of a dataset.

  Args:
    source: "jsonl" (path), "parquet" (path), "hf" (name "dataset[:config]",
      split; needs the `datasets` package and, unless cached, the Hub) or
      "reasoning_gym" (task, size, seed, task_kwargs).
  """
  if source == "jsonl":
    numbered = read_jsonl_numbered(path)
    return _mapped([row for _, row in numbered], question_field, answer_field, path,
                   lines=[line for line, _ in numbered])
  if source == "parquet":
    # Optional package, imported by the source that needs it (pip install 'hicra-jax[data]').
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    return _mapped(pq.read_table(path).to_pylist(), question_field, answer_field, path)
  if source == "hf":
    # Optional package, imported by the source that needs it (pip install 'hicra-jax[data]').
    import datasets  # pylint: disable=import-outside-toplevel
    dataset, _, config = name.partition(":")
    ds = datasets.load_dataset(dataset, config or None, split=split)
    return _mapped(ds, question_field, answer_field, f"{name}[{split}]")
  if source == "reasoning_gym":
    # Imported here: reasoning-gym takes seconds to import, and only this source needs it.
    import reasoning_gym  # pylint: disable=import-outside-toplevel
    entries = reasoning_gym.create_dataset(task, size=size, seed=seed, **dict(task_kwargs or {}))
    return [{"question": e["question"], "answer": e["answer"], "metadata": e["metadata"]}
            for e in entries]
  raise ValueError(f"unknown data source {source!r}; expected one of {list(SOURCES)}")


def attach_prompt_ids(rows: Sequence[dict[str, Any]], tokenizer, *, template: str = "auto",
                      processor=None) -> list[dict[str, Any]]:
  """Adds "id" (row index) and "prompt_ids" (chat template + answer-format instruction).

  processor: the image processor of a vision-language model
  (`images.image_processor`). With it, a row with "images" gets one
  placeholder per image before its question, each `<|image_pad|>` repeated to
  the image's token count, and "image_grid_thw" (list of [t, h, w], from the
  image headers); rows without images must then hold no `<|image_pad|>`.

  Raises:
    ValueError: naming the example: images without a processor, a missing or
      unreadable image, an unsupported image mode, or image tokens that do not
      match image_grid_thw.
  """
  if processor is None:
    with_images = next((r for r in rows if r.get("images")), None)
    if with_images is not None:
      raise ValueError(f"{with_images.get('where', 'a row')}: the example has images but the "
                       "model has no image processor (not a vision-language model)")
    ids = encode_prompts(tokenizer, [r["question"] for r in rows], template=template,
                         instruction=DEFAULT_INSTRUCTION)
    return [{**row, "id": i, "prompt_ids": p} for i, (row, p) in enumerate(zip(rows, ids))]
  encoded = images_lib.encode_image_prompts(
      tokenizer, processor, [r["question"] for r in rows], [r.get("images") or [] for r in rows],
      [f"example {i} ({r.get('where', 'no images')})" for i, r in enumerate(rows)],
      template=template, instruction=DEFAULT_INSTRUCTION)
  out = []
  for i, (row, (prompt, grid)) in enumerate(zip(rows, encoded)):
    example = {**row, "id": i, "prompt_ids": prompt}
    if row.get("images"):
      example["image_grid_thw"] = grid
    out.append(example)
  return out


class ExampleStream:
  """Seeded, shuffled, repeating stream of examples (grain) with a JSON state.

  The stream is global: with several processes each one holds the same
  stream and takes the same examples; the sampler then gives each process the
  rows on its own devices. So every process's state is the same, and a run
  resumes on any number of processes.
  """

  def __init__(self, examples: Sequence[Mapping[str, Any]], seed: int):
    self._examples = list(examples)
    if not self._examples:
      raise ValueError("the example stream needs at least one example, got none")
    dataset = grain.MapDataset.source(list(range(len(self._examples))))
    self._iter = iter(dataset.seed(seed).shuffle().repeat().to_iter_dataset())

  def take(self, k: int) -> list[Mapping[str, Any]]:
    return [self._examples[int(next(self._iter))] for _ in range(k)]

  def get_state(self) -> dict[str, Any]:
    return dict(self._iter.get_state())

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._iter.set_state(dict(state))
