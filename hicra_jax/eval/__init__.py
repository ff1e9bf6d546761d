"""Benchmark evaluation following the paper's protocol: avg@k, pass@k, strict \\boxed{} matching.

`evaluate(benchmarks, sample, ...)` takes the sampler as a parameter (a real
policy through `model_sampler`, or any `(problems, n, seed) -> Samples`);
`load_benchmark` reads JSONL files or Hub datasets; `write_report` writes the
markdown table, the JSON summary and the per-sample JSONL.
"""

from hicra_jax.eval.benchmarks import (KNOWN_BENCHMARKS, PAPER_BENCHMARKS, Benchmark,
                                       BenchmarkInfo, load_benchmark, load_benchmarks, parse_spec,
                                       resolve_source, to_example)
from hicra_jax.eval.harness import (PAPER_TEMPERATURE, ModelSampler, SampleFn, Samples,
                                    batch_seed, evaluate, evaluate_model, model_sampler)
from hicra_jax.eval.metrics import (accuracy_metrics, avg_at_k, correct_counts, default_pass_ks,
                                    mean_pass_at_k, pass_at_k)
from hicra_jax.eval.report import (BenchmarkResult, EvalReport, markdown_table, sample_record,
                                   write_report)

__all__ = [
    "Benchmark", "BenchmarkInfo", "BenchmarkResult", "EvalReport", "KNOWN_BENCHMARKS",
    "ModelSampler", "PAPER_BENCHMARKS", "PAPER_TEMPERATURE", "SampleFn", "Samples",
    "accuracy_metrics", "avg_at_k", "batch_seed", "correct_counts", "default_pass_ks", "evaluate",
    "evaluate_model", "load_benchmark", "load_benchmarks", "markdown_table", "mean_pass_at_k",
    "model_sampler", "parse_spec", "pass_at_k", "resolve_source", "sample_record", "to_example",
    "write_report",
]
