"""Benchmarks at eval steps: avg@k / pass@k through the eval harness, with the real
SmolLM2-135M-Instruct (slow), and the benchmark fields' validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hicra_jax import cli
from hicra_jax import config as config_lib
from hicra_jax.train.build import build_components
from hicra_jax.train.loop import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")


def _config(tmp_path, *overrides):
  return cli.load_command_config("train", ["hicra-jax train", f"--config={QUICKSTART}",
                                           f"--config.workdir={tmp_path / 'run'}", *overrides])


def _benchmark_file(tmp_path):
  path = tmp_path / "tiny.jsonl"
  rows = [{"problem": "What is 2 + 3?", "answer": "5"},
          {"problem": "What is 4 + 4?", "answer": "8"},
          {"problem": "What is 1 + 6?", "answer": "7"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.mark.slow
def test_eval_steps_log_benchmark_avg_and_pass_at_k(tmp_path):
  bench = _benchmark_file(tmp_path)
  config = _config(tmp_path, "--config.num_steps=1", "--config.eval.every=1",
                   f"--config.eval.benchmarks=tiny={bench}", "--config.eval.samples=2",
                   "--config.eval.temperature=1.0", "--config.rollout.max_new_tokens=(12,)",
                   "--config.rollout.prompts_per_step=2", "--config.rollout.group_size=2",
                   "--config.loss.micro_batch_size=4", "--config.data.size=8",
                   "--config.log.tensorboard=False", "--config.eval.reward=gsm8k")
  trainer = Trainer(config, build_components(config))
  try:
    last = trainer.run()
  finally:
    trainer.close()
  out = tmp_path / "run" / "eval" / "step_000001"
  summary = json.loads((out / "summary.json").read_text())
  samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
  assert len(samples) == 3 * 2  # problems x k
  result = summary["benchmarks"]["tiny"]
  assert last["eval_tiny_avg_at_k"] == pytest.approx(result["avg_at_k"])
  assert last["eval_tiny_pass_at_k"] == pytest.approx(result["pass_at_k"]["2"])
  rewards = np.array([s["reward"] for s in samples]).reshape(3, 2)
  assert last["eval_tiny_avg_at_k"] == pytest.approx(rewards.mean())
  assert last["eval_tiny_pass_at_k"] == pytest.approx((rewards >= 1).any(axis=1).mean())
  record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
  assert record["eval_tiny_avg_at_k"] == last["eval_tiny_avg_at_k"]


def test_benchmark_fields_fail_in_validation_naming_the_field(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="eval.benchmarks"):
    _config(tmp_path, f"--config.eval.benchmarks=x={tmp_path / 'missing.jsonl'}")
  with pytest.raises(config_lib.ConfigError, match="eval.data_dir"):
    _config(tmp_path, "--config.eval.benchmarks=gsm8k",
            f"--config.eval.data_dir={tmp_path / 'nope'}")
  with pytest.raises(config_lib.ConfigError, match="eval.reward"):
    _config(tmp_path, "--config.eval.reward=nope")
  bench = _benchmark_file(tmp_path)
  config = _config(tmp_path, f"--config.eval.benchmarks=('a={bench}', 'b={bench}')")
  assert config.eval.benchmarks == (f"a={bench}", f"b={bench}")
