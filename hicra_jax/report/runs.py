"""Reading a training run's workdir: metrics, samples, eval summaries, judge counts, its label.

A run's workdir (what `hicra-jax train` writes) holds

  metrics.jsonl        one JSON object per step: "step" plus scalars; non-finite
                       floats are written as the strings "nan", "inf", "-inf"
  samples.jsonl        a few completions per step: {"step", "example_id", "reward",
                       "prompt", "completion", "planning_spans": [text, ...]}, or
                       "prompt_ids" / "completion_ids" / spans as token-id lists
                       when the run had no tokenizer
  **/summary.json      optional: `hicra-jax eval` summaries ({"label", "protocol",
                       "benchmarks": {name: {"avg_at_k", "pass_at_k", ...}}})
  judge_summary.json   optional: `hicra-jax judge` counts of failure types per step
                       ({"per_step": {"<step>": {"A", "B", "C", "D", "unparsed"}},
                       "labels": {"A": ..., ...}})
  config.json          optional: {"algorithm": ...}, the run's label when none is given

Nothing here raises on odd content: a bad line, a missing file or an unexpected
schema becomes a note in `RunData.notes`. Only a directory without
metrics.jsonl is an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
JUDGE_FILE = "judge_summary.json"
CONFIG_FILE = "config.json"
EVAL_SUMMARY_FILE = "summary.json"

# Folders of a workdir that never hold eval summaries (and can be large).
_SKIP_DIRS = frozenset({"checkpoints", "tensorboard", "policy", "wandb", "rollouts"})
_MAX_DEPTH = 4  # eval summaries are searched this many folders deep (workdir = 0)


@dataclasses.dataclass(frozen=True)
class Series:
  """One metric of one run: the steps where it was logged and its values there.

  `steps` are increasing; `values` are floats, NaN or +-inf where the trainer
  logged a non-finite value.
  """

  steps: tuple[int, ...]
  values: tuple[float, ...]

  def __len__(self) -> int:
    return len(self.steps)


@dataclasses.dataclass
class RunData:
  """Everything the report reads from one run's workdir.

  Attributes:
    path: the workdir as given.
    label: the run's name in figures and tables (see `run_label`).
    label_source: where the label came from: "labels" (given), "config.json"
      (its "algorithm") or "directory" (the folder name).
    metrics: {metric name: Series} of every numeric key of metrics.jsonl.
    samples: the entries of samples.jsonl, in file order.
    evals: {benchmark name: its entry of an eval summary.json} (avg_at_k is a
      fraction), merged over every summary found (see `read_eval_summaries`).
    eval_files: the summary.json files read, relative to `path`.
    judge: the content of judge_summary.json, or None.
    notes: what was missing or odd, one sentence each.
  """

  path: str
  label: str
  label_source: str
  metrics: dict[str, Series]
  samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  evals: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  eval_files: list[str] = dataclasses.field(default_factory=list)
  judge: dict[str, Any] | None = None
  notes: list[str] = dataclasses.field(default_factory=list)

  def steps(self) -> list[int]:
    """Every step that any metric was logged at, increasing."""
    return sorted({s for series in self.metrics.values() for s in series.steps})


def parse_scalar(value: Any) -> float | None:
  """A metric value as a float: numbers as they are, "nan" / "inf" / "-inf" strings as
  non-finite floats; None for anything else (bools, lists, other strings)."""
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str):
    try:
      number = float(value.strip())
    except ValueError:
      return None
    return None if math.isfinite(number) else number
  return None


def _read_jsonl(path: str, name: str, notes: list[str]) -> list[dict[str, Any]]:
  """The JSON objects of a JSONL file; unparsable lines are skipped with a note."""
  records, bad = [], []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        bad.append(number)
        continue
      if isinstance(record, dict):
        records.append(record)
      else:
        bad.append(number)
  if bad:
    shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
    notes.append(f"{name}: skipped {len(bad)} line(s) that are not JSON objects (line {shown})")
  return records


def read_metrics(path: str, notes: list[str] | None = None) -> dict[str, Series]:
  """{metric: Series} from a metrics.jsonl file.

  Lines without an integer "step" are skipped. A step logged more than once (a
  resumed run repeats the steps after its last checkpoint) keeps, per metric,
  the value of its last line. Keys whose values are not numbers are left out.
  """
  notes = [] if notes is None else notes
  by_metric: dict[str, dict[int, float]] = {}
  seen: set[int] = set()
  repeated: set[int] = set()
  no_step = 0
  for record in _read_jsonl(path, METRICS_FILE, notes):
    step = record.get("step")
    if isinstance(step, float) and step.is_integer():
      step = int(step)
    if isinstance(step, bool) or not isinstance(step, int):
      no_step += 1
      continue
    if step in seen:
      repeated.add(step)
    seen.add(step)
    for key, raw in record.items():
      if key == "step":
        continue
      value = parse_scalar(raw)
      if value is not None:
        by_metric.setdefault(key, {})[step] = value
  if no_step:
    notes.append(f"{METRICS_FILE}: skipped {no_step} line(s) without an integer \"step\"")
  if repeated:
    notes.append(f"{METRICS_FILE}: {len(repeated)} step(s) logged more than once (a resumed "
                 "run); the last line of each step is used")
  if not seen:
    notes.append(f"{METRICS_FILE}: no steps logged")
  return {key: Series(tuple(sorted(values)), tuple(values[s] for s in sorted(values)))
          for key, values in sorted(by_metric.items())}


def read_samples(path: str, notes: list[str] | None = None) -> list[dict[str, Any]]:
  """The entries of a samples.jsonl file (each a dict), in file order."""
  notes = [] if notes is None else notes
  return _read_jsonl(path, SAMPLES_FILE, notes)


def _natural_key(text: str) -> list[Any]:
  """Sort key that orders "step_200" before "step_1000"."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_eval_summaries(path: str) -> list[str]:
  """summary.json files under a workdir (up to 4 folders deep, not inside checkpoints/,
  tensorboard/, policy/, wandb/, rollouts/ or hidden folders), relative to it, in
  natural path order (eval/step_200 before eval/step_1000)."""
  found = []
  root = os.path.abspath(path)
  for folder, dirs, files in os.walk(root):
    depth = 0 if folder == root else os.path.relpath(folder, root).count(os.sep) + 1
    dirs[:] = [] if depth >= _MAX_DEPTH else sorted(
        d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
    if EVAL_SUMMARY_FILE in files:
      found.append(os.path.relpath(os.path.join(folder, EVAL_SUMMARY_FILE), root))
  return sorted(found, key=_natural_key)


def is_eval_summary(data: Any) -> bool:
  """True for the schema of `hicra-jax eval`'s summary.json: {"benchmarks": {name: {...,
  "avg_at_k": number}}}."""
  if not isinstance(data, Mapping) or not isinstance(data.get("benchmarks"), Mapping):
    return False
  benchmarks = data["benchmarks"]
  return bool(benchmarks) and all(
      isinstance(entry, Mapping) and parse_scalar(entry.get("avg_at_k")) is not None
      for entry in benchmarks.values())


def read_eval_summaries(path: str, notes: list[str] | None = None
                        ) -> tuple[dict[str, dict[str, Any]], list[str]]:
  """({benchmark: entry}, files used) from the eval summaries of a workdir.

  A benchmark found in several files takes its entry from the last file in
  natural path order (eval/step_1000 after eval/step_200), with a note.
  summary.json files of another schema (e.g. a report's own) are ignored.
  """
  notes = [] if notes is None else notes
  evals: dict[str, dict[str, Any]] = {}
  origin: dict[str, list[str]] = {}
  used = []
  for rel in find_eval_summaries(path):
    try:
      with open(os.path.join(path, rel), encoding="utf-8") as f:
        data = json.load(f)
    except (OSError, ValueError):
      notes.append(f"{rel}: not readable JSON; ignored")
      continue
    if not is_eval_summary(data):
      continue
    used.append(rel)
    for name, entry in data["benchmarks"].items():
      evals[name] = dict(entry)
      origin.setdefault(name, []).append(rel)
  for name, files in sorted(origin.items()):
    if len(files) > 1:
      notes.append(f"benchmark {name!r} is in {len(files)} eval summaries; Table 1 uses "
                   f"{files[-1]} (the last in natural path order)")
  return evals, used


def read_judge_summary(path: str, notes: list[str] | None = None) -> dict[str, Any] | None:
  """judge_summary.json's content when it has a "per_step" mapping, else None (with a note
  when the file exists but does not fit)."""
  notes = [] if notes is None else notes
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    notes.append(f"{JUDGE_FILE}: not readable JSON; no error-type figure")
    return None
  if not isinstance(data, Mapping) or not isinstance(data.get("per_step"), Mapping):
    notes.append(f"{JUDGE_FILE}: no \"per_step\" mapping; no error-type figure")
    return None
  return dict(data)


def run_label(path: str, label: str | None = None) -> tuple[str, str]:
  """(label, source) of a run: `label` when given ("labels"), else the "algorithm" of the
  workdir's config.json ("config.json"), else the folder name ("directory")."""
  if label:
    return label, "labels"
  try:
    with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
      algorithm = json.load(f).get("algorithm")
  except (OSError, ValueError, AttributeError):
    algorithm = None
  if isinstance(algorithm, str) and algorithm.strip():
    return algorithm.strip(), "config.json"
  return os.path.basename(os.path.normpath(os.path.abspath(path))), "directory"


def load_run(path: str, label: str | None = None) -> RunData:
  """Reads one run's workdir (see the module docstring).

  Args:
    path: the workdir; it must contain metrics.jsonl.
    label: the run's name; None: config.json's "algorithm", else the folder name.

  Raises:
    FileNotFoundError: `path` is not a directory or has no metrics.jsonl.
  """
  expanded = os.path.expanduser(path)
  if not os.path.isdir(expanded):
    raise FileNotFoundError(f"run {path!r} is not a directory (expected a `hicra-jax train` "
                            f"workdir with {METRICS_FILE})")
  metrics_path = os.path.join(expanded, METRICS_FILE)
  if not os.path.isfile(metrics_path):
    raise FileNotFoundError(f"run {path!r} has no {METRICS_FILE} (expected a `hicra-jax "
                            "train` workdir)")
  name, source = run_label(expanded, label)
  notes: list[str] = []
  metrics = read_metrics(metrics_path, notes)
  samples_path = os.path.join(expanded, SAMPLES_FILE)
  samples = read_samples(samples_path, notes) if os.path.isfile(samples_path) else []
  evals, eval_files = read_eval_summaries(expanded, notes)
  judge = read_judge_summary(os.path.join(expanded, JUDGE_FILE), notes)
  return RunData(path=path, label=name, label_source=source, metrics=metrics, samples=samples,
                 evals=evals, eval_files=eval_files, judge=judge, notes=notes)


def unique_labels(labels: Sequence[str]) -> list[str]:
  """The labels with repeats made distinct: the second "grpo" becomes "grpo #2"."""
  out, counts = [], {}
  for label in labels:
    counts[label] = counts.get(label, 0) + 1
    out.append(label if counts[label] == 1 else f"{label} #{counts[label]}")
  return out
