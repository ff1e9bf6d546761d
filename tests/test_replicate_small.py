"""benchmarks/replicate_small.py: the CPU smoke of the three-algorithm replication, and its figures."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import replicate_plots  # noqa: E402  pylint: disable=wrong-import-position
import replicate_small  # noqa: E402  pylint: disable=wrong-import-position


def _read(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def test_running_mean_and_relative_perplexity_by_hand():
  assert replicate_plots.running_mean([1.0, 2.0, 6.0, 3.0], window=3) == [1.5, 3.0, 11 / 3, 4.5]
  rel = replicate_plots.relative_perplexity([2.0, 2.5, 1.0])
  assert rel[0] == 1.0
  assert rel[1] == pytest.approx(math.exp(0.5))
  assert rel[2] == pytest.approx(math.exp(-1.0))


def test_configs_differ_only_in_algorithm_and_workdir(tmp_path):
  configs = replicate_small.make_configs("cpu-smoke", str(tmp_path), "smollm2",
                                         replicate_small.ALGORITHMS)
  flat = {name: dataclasses.asdict(c) for name, c in configs.items()}
  for name, c in flat.items():
    assert c["algorithm"] == name
    assert c["workdir"] == os.path.join(str(tmp_path), name)
    assert c["rollout"]["group_size"] == 4 and c["rollout"]["prompts_per_step"] == 2
    rest = {k: v for k, v in c.items() if k not in ("algorithm", "workdir")}
    assert rest == {k: v for k, v in flat["hicra"].items() if k not in ("algorithm", "workdir")}


def test_h200_config_is_the_paper_loss_at_small_scale(tmp_path):
  (c,) = replicate_small.make_configs("h200", str(tmp_path), "smollm2", ("hicra",)).values()
  assert (c.loss.clip_low, c.loss.clip_high, c.loss.aggregation) == (0.2, 0.28, "token-mean")
  assert (c.loss.kl_coef, c.planning.alpha, c.planning.grams) == (0.0, 0.2, "paper")
  assert (c.rollout.group_size, c.rollout.prompts_per_step) == (8, 64)
  assert (c.model.compute_dtype, c.eval.temperature) == ("bfloat16", 0.6)
  with open(c.data.path, encoding="utf-8") as f:
    questions = [json.loads(line)["question"] for line in f]
  held_out = set(questions[:c.data.eval_size])
  assert len(held_out) == c.data.eval_size
  assert not held_out & set(questions[c.data.eval_size:]), "a held-out problem is also trained on"


@pytest.mark.slow
def test_cpu_smoke_runs_three_algorithms_on_the_same_prompts_and_plots(tmp_path):
  out = tmp_path / "run"
  env = dict(os.environ, HF_HUB_OFFLINE="1")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "replicate_small.py"), "--preset",
       "cpu-smoke", "--out", str(out)], capture_output=True, text=True, env=env, timeout=900,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "done: 2 steps per algorithm" in proc.stdout
  metrics = {name: _read(out / name / "metrics.jsonl") for name in replicate_small.ALGORITHMS}
  for rows in metrics.values():
    assert [r["step"] for r in rows] == [1, 2]
  # Same weights, prompts and keys: step 1's rollouts are identical across algorithms.
  first = [rows[0] for rows in metrics.values()]
  for key in ("example_ids", "reward_mean", "response_length_mean", "semantic_entropy"):
    assert all(r[key] == first[0][key] for r in first), key
  assert metrics["hicra"][1]["example_ids"] == metrics["grpo"][1]["example_ids"]
  evals = _read(out / "eval.jsonl")
  assert [e["algorithm"] for e in evals] == ["base", "hicra", "grpo", "entropy_reg"]
  assert [e["step"] for e in evals] == [0, 2, 2, 2]
  assert all(0.0 <= e["eval_accuracy"] <= 1.0 for e in evals)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["steps"] == 2 and len(summary["rounds"]) == 2
  assert summary["eval_problems"] == 2 and summary["eval_samples"] == 2

  paths = replicate_plots.plot_run(str(out), str(tmp_path / "figures"))
  assert [os.path.basename(p) for p in paths] == [
      "accuracy.png", "semantic_entropy.png", "token_entropy.png", "relative_perplexity.png",
      "response_length.png", "planning_token_ratio.png"]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
