"""Evaluation results and their three outputs: a markdown table, a JSON summary, per-sample JSONL.

Everything here is a pure function of the results (no clocks, no paths in the
content), so the same evaluation gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from hicra_jax import config as config_lib

SUMMARY_FILE = "summary.json"
TABLE_FILE = "report.md"
SAMPLES_FILE = "samples.jsonl"


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
  """Metrics of one benchmark.

  Attributes:
    name, display, source: as in `Benchmark`.
    k: samples per problem.
    num_problems: P.
    avg_at_k: mean reward over the k samples of a problem, averaged over
      problems (a fraction; the paper's "Pass@1" averaged over k samples).
    pass_at_k: {str(j): unbiased pass@j} for j in `default_pass_ks(k)`.
    num_correct: correct samples (reward >= 1).
    mean_length: mean completion length in tokens.
    truncated_rate: fraction of samples that hit the token limit.
    no_answer_rate: fraction of samples with nothing to grade.
    status_counts: {status: count} of the grades.
  """

  name: str
  display: str
  source: str
  k: int
  num_problems: int
  avg_at_k: float
  pass_at_k: Mapping[str, float]
  num_correct: int
  mean_length: float
  truncated_rate: float
  no_answer_rate: float
  status_counts: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class EvalReport:
  """One model's evaluation.

  Attributes:
    label: the row name in the table (e.g. the model file name).
    protocol: the settings that produced it (sampling, reward, seed, ...).
    results: one per benchmark, in evaluation order.
    samples: per-sample records (see `sample_record`).
  """

  label: str
  protocol: Mapping[str, Any]
  results: tuple[BenchmarkResult, ...]
  samples: tuple[Mapping[str, Any], ...]

  def summary(self) -> dict[str, Any]:
    """The JSON summary: label, protocol and per-benchmark metrics."""
    return {
        "label": self.label,
        "protocol": dict(self.protocol),
        "benchmarks": {r.name: dataclasses.asdict(r) for r in self.results},
    }

  def markdown(self) -> str:
    """The report: the paper-style table, per-benchmark details and the protocol."""
    pass_cols = _pass_columns(self.results)
    header = (["benchmark", "problems", "k", "avg@k (%)"] + [f"pass@{j} (%)" for j in pass_cols]
              + ["mean length", "truncated (%)", "no answer (%)"])
    lines = [f"# Evaluation: {self.label}", "", markdown_table([self]), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in self.results:
      cells = [r.display, str(r.num_problems), str(r.k), _pct(r.avg_at_k)]
      cells += [_pct(r.pass_at_k[j]) if j in r.pass_at_k else "" for j in pass_cols]
      cells += [f"{r.mean_length:.1f}", _pct(r.truncated_rate), _pct(r.no_answer_rate)]
      lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Protocol: " + ", ".join(f"{key} = {_show(value)}"
                                          for key, value in self.protocol.items()), ""]
    return "\n".join(lines)


def _pass_columns(results: Sequence[BenchmarkResult]) -> list[str]:
  ks = sorted({int(j) for r in results for j in r.pass_at_k})
  return [str(j) for j in ks]


def _pct(x: float) -> str:
  return f"{100.0 * x:.1f}"


def _show(value: Any) -> str:
  if isinstance(value, str):
    return json.dumps(value, ensure_ascii=False)
  if isinstance(value, Mapping):
    return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
  return str(value)


def markdown_table(reports: Sequence[EvalReport]) -> str:
  """A table like the paper's Table 1: one row per report, avg@k in % per benchmark.

  Columns are the benchmarks in order of first appearance; a report without a
  benchmark gets an empty cell.
  """
  columns: dict[str, str] = {}
  for report in reports:
    for r in report.results:
      columns.setdefault(r.name, r.display)
  lines = ["| model | " + " | ".join(columns.values()) + " |",
           "|---|" + "---|" * len(columns)]
  for report in reports:
    by_name = {r.name: r for r in report.results}
    cells = [_pct(by_name[n].avg_at_k) if n in by_name else "" for n in columns]
    lines.append(f"| {report.label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def sample_record(benchmark: str, example: Mapping[str, Any], sample_index: int, completion: str,
                  grade, length: int, finish_reason: str) -> dict[str, Any]:
  """One line of the per-sample JSONL."""
  return {
      "benchmark": benchmark,
      "problem_id": str(example["id"]),
      "sample_index": int(sample_index),
      "completion": completion,
      "answer": grade.answer,
      "gold": str(example["answer"]),
      "reward": float(grade.reward),
      "status": grade.status,
      "detail": grade.detail,
      "length": int(length),
      "finish_reason": str(finish_reason),
  }


def write_report(report: EvalReport, out_dir: str) -> dict[str, str]:
  """Writes report.md, summary.json and samples.jsonl into `out_dir` (created if needed;
  local or any etils.epath directory such as gs://bucket/run/eval).

  Returns:
    {"markdown": path, "summary": path, "samples": path}.
  """
  out = config_lib.as_epath(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  texts = {"markdown": (TABLE_FILE, report.markdown()),
           "summary": (SUMMARY_FILE, json.dumps(report.summary(), indent=2,
                                                ensure_ascii=False) + "\n"),
           "samples": (SAMPLES_FILE, "".join(json.dumps(record, ensure_ascii=False) + "\n"
                                             for record in report.samples))}
  paths = {}
  for key, (name, text) in texts.items():
    (out / name).write_text(text, encoding="utf-8")
    paths[key] = os.fspath(out / name)
  return paths
