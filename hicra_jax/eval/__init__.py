"""Benchmark evaluation following the paper's protocol: avg@k, pass@k, strict \\boxed{} matching.

`evaluate(benchmarks, sample, ...)` takes the sampler as a parameter (a real
policy through `model_sampler`, or any `(problems, n, seed) -> Samples`);
`load_benchmark` reads JSONL files or Hub datasets; `write_report` writes the
markdown table, the JSON summary and the per-sample JSONL.

The exports below are imported on first use, so that `hicra-jax eval`'s config
validation (which resolves benchmark specs with `hicra_jax.eval.benchmarks`)
imports neither jax nor numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "hicra_jax.eval.benchmarks": ("KNOWN_BENCHMARKS", "PAPER_BENCHMARKS", "PAPER_VLM_BENCHMARKS",
                                  "Benchmark",
                                  "BenchmarkInfo", "load_benchmark", "load_benchmarks",
                                  "parse_spec", "resolve_source", "to_example"),
    "hicra_jax.eval.harness": ("PAPER_TEMPERATURE", "ModelSampler", "SampleFn", "Samples",
                               "batch_seed", "evaluate", "evaluate_model", "model_sampler"),
    "hicra_jax.eval.metrics": ("accuracy_metrics", "avg_at_k", "correct_counts",
                               "default_pass_ks", "mean_pass_at_k", "pass_at_k"),
    "hicra_jax.eval.report": ("BenchmarkResult", "EvalReport", "markdown_table", "sample_record",
                              "write_report"),
}


def __getattr__(name: str) -> Any:
  for module, names in _EXPORTS.items():
    if name in names:
      return getattr(importlib.import_module(module), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(name for names in _EXPORTS.values() for name in names)
