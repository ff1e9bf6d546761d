"""Evaluation harness: metrics against definitions, the harness with a fake sampler (hand-computed
avg@k / pass@k), the real-policy adapter with a fake generate, benchmark loading, the CLI, and the
end-to-end run on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hicra_jax import cli
from hicra_jax import config as config_lib
from hicra_jax.commands import evaluate as eval_command
from hicra_jax.eval import (Benchmark, EvalReport, Samples, accuracy_metrics, batch_seed,
                            default_pass_ks, evaluate, load_benchmark, markdown_table,
                            model_sampler, pass_at_k, resolve_source, write_report)
from hicra_jax.eval.metrics import comb_pass_at_k
import readme_helpers as readme

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# ------------------------------------------------------------------ metrics


@given(n=st.integers(1, 40), data=st.data())
@settings(max_examples=200)
def test_pass_at_k_matches_its_combinatorial_definition(n, data):
  c = data.draw(st.integers(0, n))
  k = data.draw(st.integers(1, n))
  assert pass_at_k(n, c, k) == pytest.approx(comb_pass_at_k(n, c, k), abs=1e-12)


@pytest.mark.parametrize("n,c,k", [(4, 1, 2), (5, 2, 3), (6, 0, 2), (6, 6, 1), (3, 1, 3)])
def test_pass_at_k_is_the_mean_over_k_subsets(n, c, k):
  samples = [1] * c + [0] * (n - c)
  subsets = list(itertools.combinations(samples, k))
  assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_edges_and_errors():
  assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
  assert pass_at_k(32, 0, 32) == 0.0
  assert pass_at_k(32, 1, 32) == 1.0
  assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
  for bad in [(0, 0, 1), (4, 5, 1), (4, 1, 0), (4, 1, 5), (4.0, 1, 1)]:
    with pytest.raises(ValueError):
      pass_at_k(*bad)
  assert default_pass_ks(32) == [1, 2, 4, 8, 16, 32]
  assert default_pass_ks(4) == [1, 2, 4]
  assert default_pass_ks(6) == [1, 2, 4, 6]
  assert default_pass_ks(1) == [1]


def test_accuracy_metrics_by_hand():
  rewards = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], np.float32)
  m = accuracy_metrics(rewards)
  assert m["avg_at_k"] == pytest.approx(5 / 12)
  assert m["pass_at_k"] == pytest.approx({"1": 5 / 12, "2": 0.5, "4": 2 / 3})
  assert (m["num_problems"], m["samples_per_problem"], m["num_correct"]) == (3, 4, 5)
  with pytest.raises(ValueError):
    accuracy_metrics(np.zeros((3,)))
  with pytest.raises(ValueError):
    accuracy_metrics(rewards, ks=[8])


# ------------------------------------------------------- fake-sampler harness

# problem -> its samples in order; golds: p0 "1", p1 "2", p2 "3", q0 "\frac12", q1 "7".
FAKE_OUTPUTS = {
    "p0": ["\\boxed{1}", "so \\boxed{1.0}", "\\boxed{\\frac{2}{2}}", "\\boxed{1}"],   # 4 correct
    "p1": ["\\boxed{2}", "\\boxed{3}", "the answer is 2", "\\boxed{2"],              # 1 correct
    "p2": ["\\boxed{4}", "no idea", "\\boxed{}", "\\boxed{-3}"],                     # 0 correct
    "q0": ["\\boxed{0.5}"],                                                           # correct
    "q1": ["\\boxed{8}"],                                                             # wrong
}
TRUNCATED = {("p1", 3)}


class FakeSampler:
  """Returns FAKE_OUTPUTS (cycled to n samples); records its calls."""

  settings = {"temperature": 0.6, "sampler": "fake"}

  def __init__(self):
    self.calls = []

  def __call__(self, problems, n, seed):
    self.calls.append((tuple(problems), n, seed))
    texts, lengths, finishes = [], [], []
    for p in problems:
      for j in range(n):
        text = FAKE_OUTPUTS[p][j % len(FAKE_OUTPUTS[p])]
        texts.append(text)
        lengths.append(len(text))
        finishes.append("length" if (p, j) in TRUNCATED else "stop")
    return Samples(texts=texts, lengths=lengths, finish_reasons=finishes)


def _toy_benchmarks():
  toy4 = Benchmark("toy4", "Toy4", 4, "memory", tuple(
      {"id": p, "problem": p, "answer": a} for p, a in [("p0", "1"), ("p1", "2"), ("p2", "3")]))
  toy1 = Benchmark("toy1", "Toy1", 1, "memory", tuple(
      {"id": p, "problem": p, "answer": a} for p, a in [("q0", "\\frac12"), ("q1", "7")]))
  return [toy4, toy1]


def test_harness_with_a_fake_sampler_reports_hand_computed_metrics(tmp_path):
  sampler = FakeSampler()
  report = evaluate(_toy_benchmarks(), sampler, label="fake", rows_per_batch=8)
  # rows_per_batch 8: toy4 (k=4) gets 2 problems per call, toy1 (k=1) 8.
  assert sampler.calls == [(("p0", "p1"), 4, batch_seed(0, "toy4", 0)),
                           (("p2",), 4, batch_seed(0, "toy4", 1)),
                           (("q0", "q1"), 1, batch_seed(0, "toy1", 0))]
  toy4, toy1 = report.results
  # toy4: per-problem correct counts 4, 1, 0 out of 4.
  assert toy4.avg_at_k == pytest.approx(float(Fraction(4 + 1 + 0, 12)))           # 41.67%
  assert toy4.pass_at_k == pytest.approx({"1": 5 / 12,
                                          "2": (1 + (1 - 3 / 6) + 0) / 3,           # 0.5
                                          "4": 2 / 3})
  assert (toy4.k, toy4.num_problems, toy4.num_correct) == (4, 3, 5)
  assert toy4.truncated_rate == pytest.approx(1 / 12)
  assert toy4.no_answer_rate == pytest.approx(4 / 12)
  assert toy4.status_counts == {"correct": 5, "incorrect": 3, "no_answer": 4}
  assert toy4.mean_length == pytest.approx(np.mean([len(t) for p in ("p0", "p1", "p2")
                                                    for t in FAKE_OUTPUTS[p]]))
  assert (toy1.avg_at_k, toy1.pass_at_k, toy1.num_correct) == (0.5, {"1": 0.5}, 1)

  assert markdown_table([report]).splitlines() == [
      "| model | Toy4 | Toy1 |", "|---|---|---|", "| fake | 41.7 | 50.0 |"]
  md = report.markdown()
  # Mean length in characters (the fake's "tokens"): (51 + 41 + 34) / 12 = 10.5.
  assert "| Toy4 | 3 | 4 | 41.7 | 41.7 | 50.0 | 66.7 | 10.5 | 8.3 | 33.3 |" in md
  assert "| Toy1 | 2 | 1 | 50.0 | 50.0 |  |  |" in md
  assert 'sampler = "fake"' in md and 'reward = "math_strict"' in md

  paths = write_report(report, str(tmp_path / "out"))
  summary = json.loads(Path(paths["summary"]).read_text())
  assert summary["label"] == "fake"
  assert summary["protocol"] == {"temperature": 0.6, "sampler": "fake", "reward": "math_strict",
                                 "seed": 0, "k": {"toy4": 4, "toy1": 1}, "rows_per_batch": 8}
  assert summary["benchmarks"]["toy4"]["pass_at_k"]["4"] == pytest.approx(2 / 3)
  rows = [json.loads(line) for line in Path(paths["samples"]).read_text().splitlines()]
  assert len(rows) == 14
  assert [(r["problem_id"], r["sample_index"]) for r in rows[:5]] == [
      ("p0", 0), ("p0", 1), ("p0", 2), ("p0", 3), ("p1", 0)]
  assert rows[7] == {"benchmark": "toy4", "problem_id": "p1", "sample_index": 3,
                     "completion": "\\boxed{2", "answer": None, "gold": "2", "reward": 0.0,
                     "status": "no_answer", "detail": "no \\boxed{} answer", "length": 8,
                     "finish_reason": "length"}
  assert rows[12]["answer"] == "0.5" and rows[12]["reward"] == 1.0
  assert [r["reward"] for r in rows] == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]

  again = evaluate(_toy_benchmarks(), FakeSampler(), label="fake", rows_per_batch=8)
  assert again == report  # deterministic


def test_harness_k_override_and_sampler_errors():
  report = evaluate(_toy_benchmarks(), FakeSampler(), label="fake", k=2)
  toy4, toy1 = report.results
  # k=2: p0 [1, 1], p1 [1, 0], p2 [0, 0] -> avg 1/2; pass@2: 1, 1, 0 -> 2/3.
  assert toy4.avg_at_k == pytest.approx(0.5)
  assert toy4.pass_at_k == pytest.approx({"1": 0.5, "2": 2 / 3})
  assert toy1.k == 2 and toy1.avg_at_k == 0.5  # the single sample, cycled

  def short(problems, n, seed):
    return Samples(["\\boxed{1}"], [1], ["stop"])

  with pytest.raises(ValueError, match="for 3 problems x n=4; expected 12 of each"):
    evaluate(_toy_benchmarks()[:1], short)
  with pytest.raises(ValueError, match="unknown reward"):
    evaluate(_toy_benchmarks(), FakeSampler(), reward="nope")
  with pytest.raises(ValueError, match="k must be"):
    evaluate(_toy_benchmarks(), FakeSampler(), k=0)


def test_model_sampler_with_a_fake_generate(smollm2_tokenizer):
  import jax  # pylint: disable=g-import-not-at-top
  from hicra_jax.data import encode_prompts, stop_tokens  # pylint: disable=g-import-not-at-top
  from hicra_jax.sampling import Rollout  # pylint: disable=g-import-not-at-top
  tok = smollm2_tokenizer
  stop = stop_tokens(tok).ids[0]
  answers = ["The answer is \\boxed{18}.", "I think \\boxed{3}"]
  seen = {}

  def fake_generate(model, prompts, params, rng, *, mesh=None):
    seen.update(model=model, prompts=prompts, params=params, rng=rng, mesh=mesh)
    rows = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    rows = [r + [stop] for r in rows[:1]] + rows[1:]  # row 0 stops, row 1 hits the limit
    t = max(map(len, rows))
    tokens = np.zeros((2, t), np.int32)
    mask = np.zeros((2, t), bool)
    for i, r in enumerate(rows):
      tokens[i, :len(r)], mask[i, :len(r)] = r, True
    return Rollout(tokens=tokens, logprobs=np.zeros((2, t), np.float32), completion_mask=mask,
                   lengths=mask.sum(1).astype(np.int32),
                   finish_reason=np.array(["stop", "length"]),
                   prompt_index=np.array([0, 0], np.int32))

  sampler = model_sampler("MODEL", tok, temperature=0.0, max_new_tokens=32,
                          generate_fn=fake_generate)
  out = sampler(["What is 9 * 2?"], 2, 123)
  assert out.texts == answers
  assert out.finish_reasons == ["stop", "length"]
  assert out.lengths == [len(tok(answers[0], add_special_tokens=False)["input_ids"]) + 1,
                         len(tok(answers[1], add_special_tokens=False)["input_ids"])]
  assert seen["model"] == "MODEL"
  assert seen["prompts"] == encode_prompts(tok, ["What is 9 * 2?"])
  params = seen["params"]
  assert (params.n, params.max_new_tokens, params.greedy) == (2, 32, True)
  assert params.stop_ids == stop_tokens(tok).ids
  np.testing.assert_array_equal(jax.random.key_data(seen["rng"]),
                                jax.random.key_data(jax.random.key(123)))
  assert sampler.settings["temperature"] == 0.0
  assert "\\boxed{}" in sampler.settings["instruction"]

  def shuffled(model, prompts, params, rng, *, mesh=None):
    rollout = fake_generate(model, prompts, params, rng)
    rollout.prompt_index = np.array([0, 1], np.int32)
    return rollout

  with pytest.raises(ValueError, match="out of the documented order"):
    model_sampler("MODEL", tok, generate_fn=shuffled)(["x"], 2, 0)


# ---------------------------------------------------------------- benchmarks


@pytest.mark.parametrize("name,count,k,display", [
    ("aime24", 30, 32, "AIME24"), ("aime25", 30, 32, "AIME25"), ("math500", 500, 1, "MATH500"),
    ("amc23", 40, 4, "AMC23"), ("minerva", 272, 1, "Minerva"),
    ("olympiadbench", 675, 1, "Olympiad"), ("gsm8k", 1319, 1, "GSM8K")])
def test_the_seven_benchmarks_load_from_jsonl(name, count, k, display):
  bench = load_benchmark(name, data_dir=str(DATA))
  assert (len(bench.examples), bench.k, bench.display) == (count, k, display)
  for e in bench.examples:
    assert isinstance(e["id"], str) and e["problem"].strip() and e["answer"].strip()
  assert len(load_benchmark(name, data_dir=str(DATA), limit=3).examples) == 3


def test_benchmark_specs_and_errors(tmp_path):
  path = tmp_path / "mine.jsonl"
  path.write_text('{"id": 1, "question": "1+1?", "answer": 2}\n\n'
                  '{"unique_id": "b", "problem": "2+2?", "final_answer": ["$4$"]}\n')
  bench = load_benchmark(f"mine={path}")
  assert (bench.name, bench.display, bench.k) == ("mine", "mine", 1)
  assert [(e["id"], e["problem"], e["answer"]) for e in bench.examples] == [
      ("1", "1+1?", "2"), ("b", "2+2?", "4")]
  assert resolve_source("gsm8k") == ("gsm8k", "hf:openai/gsm8k:main@test")
  assert resolve_source("aime25=hf:math-ai/aime25@test") == ("aime25", "hf:math-ai/aime25@test")
  for bad, message in [("", "non-empty"), ("a b", "benchmark name"), ("x=", "empty source"),
                       ("x=hf:", "Hub source"), ("amc23", "no default source")]:
    with pytest.raises(ValueError, match=message):
      resolve_source(bad)
  with pytest.raises(ValueError, match="none of"):
    resolve_source("amc23", str(tmp_path))
  (tmp_path / "dup.jsonl").write_text('{"id": 1, "problem": "a", "answer": "1"}\n' * 2)
  with pytest.raises(ValueError, match="duplicate problem id '1'"):
    load_benchmark(f"dup={tmp_path / 'dup.jsonl'}")
  (tmp_path / "bad.jsonl").write_text('{"id": 1, "problem": "a", "answer": "1"}\n[1]\n')
  with pytest.raises(ValueError, match="bad.jsonl:2: expected a JSON object"):
    load_benchmark(f"bad={tmp_path / 'bad.jsonl'}")
  (tmp_path / "noans.jsonl").write_text('{"id": 1, "problem": "a"}\n')
  with pytest.raises(ValueError, match="row 0: no answer"):
    load_benchmark(f"noans={tmp_path / 'noans.jsonl'}")


def test_hub_sources(monkeypatch):
  calls = []

  def hub(*args, split):
    calls.append((args, split))
    return [{"question": "Natalia sold 48 clips...", "answer": "48/2 = 24\n#### 1,072"},
            {"question": "Weng earns $12 an hour...", "answer": "#### 10"}]

  bench = load_benchmark("gsm8k", hub_loader=hub)
  assert calls == [(("openai/gsm8k", "main"), "test")]
  assert bench.source == "hf:openai/gsm8k:main@test"
  assert [(e["id"], e["answer"]) for e in bench.examples] == [("0", "1072"), ("1", "10")]
  monkeypatch.setitem(sys.modules, "datasets", None)  # the package is not a dependency
  with pytest.raises(ImportError, match="needs the `datasets` package"):
    load_benchmark("math500")


# ----------------------------------------------------------------------- CLI


def test_eval_command_config_validation(tmp_path):
  default = eval_command.get_config()
  eval_command.validate(default)
  assert default.temperature == 0.6 and default.reward == "math_strict"
  assert default.instruction is None  # the default step-by-step / \boxed{} instruction
  (tmp_path / "ckpt").mkdir()
  cases = [
      ({"model": str(tmp_path / "ckpt")}, "Hub model id .* or a training workdir"),
      ({"step": -2}, "'step'"),
      ({"benchmarks": ("amc23",)}, "benchmarks[0]"),
      ({"benchmarks": ("gsm8k", "gsm8k=hf:x/y")}, "distinct"),
      ({"benchmarks": (f"x={tmp_path / 'missing.jsonl'}",)}, "an existing file"),
      ({"data_dir": str(tmp_path / "nope")}, "data_dir"),
      ({"temperature": -0.1}, "temperature"),
      ({"top_p": 0.0}, "top_p"),
      ({"reward": "nope"}, "reward"),
      ({"grading_timeout_s": 0.0}, "grading_timeout_s"),
      ({"output_dir": ""}, "output_dir"),
  ]
  for overrides, message in cases:
    config = eval_command.get_config()
    config.update(overrides)
    with pytest.raises(config_lib.ConfigError, match=message.replace("[", "\\[")):
      eval_command.validate(config)
  config = eval_command.get_config()
  config.update(data_dir=str(DATA), benchmarks=tuple(
      ["aime24", "aime25", "math500", "amc23", "minerva", "olympiadbench", "gsm8k"]))
  eval_command.validate(config)
  assert "eval" in cli.COMMANDS and "eval" in cli.usage()


# --------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_smollm2_on_five_gsm8k_problems(smollm2_path, smollm2_ours, smollm2_tokenizer,
                                                   tmp_path):
  """The real policy through the CLI and through the Python function: same report, twice."""
  from hicra_jax.eval import evaluate_model, load_benchmarks  # pylint: disable=g-import-not-at-top
  max_new = 96
  # The README's command (data_dir, limit=5, temperature=0) with a shorter max_new_tokens.
  argv = readme.runnable(readme.readme_command(readme.EVAL_GSM8K), console=False,
                         max_new_tokens=max_new, output_dir=tmp_path / "cli", label="smollm2")
  assert f"--config.data_dir={DATA}" in argv and "--config.temperature=0" in argv, argv
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 0
  model, _ = smollm2_ours
  benchmarks = load_benchmarks(["gsm8k"], data_dir=str(DATA), limit=5)
  report = evaluate_model(model, smollm2_tokenizer, benchmarks, label="smollm2",
                          temperature=0.0, max_new_tokens=max_new)
  write_report(report, str(tmp_path / "py"))
  for name in ("report.md", "summary.json", "samples.jsonl"):
    assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "py" / name).read_bytes(), name

  summary = json.loads((tmp_path / "py" / "summary.json").read_text())
  gsm = summary["benchmarks"]["gsm8k"]
  assert (gsm["k"], gsm["num_problems"], gsm["display"]) == (1, 5, "GSM8K")
  assert summary["protocol"]["temperature"] == 0.0
  assert summary["protocol"]["max_new_tokens"] == max_new
  rows = [json.loads(line) for line in (tmp_path / "py" / "samples.jsonl").read_text().splitlines()]
  assert [r["problem_id"] for r in rows] == [f"gsm8k-test-{i}" for i in range(5)]
  assert all(r["sample_index"] == 0 and r["completion"] and 1 <= r["length"] <= max_new
             and r["finish_reason"] in ("stop", "length") for r in rows)
  assert gsm["avg_at_k"] == pytest.approx(np.mean([r["reward"] for r in rows]))
  assert gsm["truncated_rate"] == pytest.approx(np.mean([r["finish_reason"] == "length"
                                                         for r in rows]))
  assert gsm["mean_length"] == pytest.approx(np.mean([r["length"] for r in rows]))
  md = (tmp_path / "py" / "report.md").read_text()
  assert md.splitlines()[2:5] == ["| model | GSM8K |", "|---|---|",
                                  f"| smollm2 | {100 * gsm['avg_at_k']:.1f} |"]
  assert isinstance(report, EvalReport) and math.isfinite(gsm["avg_at_k"])
  assert os.path.basename(smollm2_path).endswith(".gguf")
