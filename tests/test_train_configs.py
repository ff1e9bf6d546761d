"""Train presets load, take every algorithm through the override, and the quickstart runs."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import subprocess
import sys

import pytest

from hicra_jax import cli
from hicra_jax import config as config_lib
from hicra_jax.train.run_config import RunConfig
import readme_helpers as readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_PRESETS = ["qwen3_4b_instruct_2507_hicra", "qwen3_4b_base_hicra", "qwen25_7b_base_hicra",
                 "llama31_8b_instruct_hicra"]


@pytest.mark.parametrize("preset", PAPER_PRESETS + ["gsm8k_smollm2"])
@pytest.mark.parametrize("algorithm", ["hicra", "grpo", "entropy_reg"])
def test_presets_load_with_every_algorithm(tmp_path, preset, algorithm):
  data = tmp_path / "prompts.jsonl"
  data.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
  model = tmp_path / "model"
  model.mkdir()
  (model / "config.json").write_text("{}")
  path = os.path.join(ROOT, "configs", f"{preset}.py")
  overrides = [f"--config.algorithm={algorithm}", f"--config.data.path={data}"]
  if preset != "gsm8k_smollm2":
    overrides.append(f"--config.model.path={model}")
  config = cli.load_command_config("train", ["hicra-jax train", f"--config={path}", *overrides])
  assert config.algorithm == algorithm
  assert config.planning.grams == "paper" and config.planning.alpha == 0.2
  assert config.loss.clip_low == 0.2 and config.loss.clip_high == 0.28
  if preset != "gsm8k_smollm2":
    assert tuple(config.rollout.max_new_tokens) == (16384, 32768)
    # DAPO: 512-row mini-batches (16 optimizer steps per 512 x 16 batch), group-normalized.
    assert config.loss.mini_batch_size == 512 and config.mini_batches == 16
    assert config.loss.scale == "group_std"
    # The preset names its model by Hub id (e.g. Qwen/Qwen3-4B-Instruct-2507).
    assert config_lib.hub_model_id(config_lib.load_config(path).model.path) is not None
    assert config.rollout.truncation_threshold == 0.2
    assert config.filter.dynamic == (preset == "llama31_8b_instruct_hicra")
    # The model path must exist: validation fails fast naming the field.
    with pytest.raises(config_lib.ConfigError) as err:
      cli.load_command_config("train", ["hicra-jax train", f"--config={path}",
                                        f"--config.data.path={data}"])
    assert err.value.field == "model.path"


def test_quickstart_config_validates():
  path = os.path.join(ROOT, "configs", "quickstart.py")
  config = cli.load_command_config("train", ["hicra-jax train", f"--config={path}"])
  assert isinstance(config, RunConfig)  # validated and typed
  assert config.model.path == "smollm2" and config.data.source == "reasoning_gym"


def test_tests_run_in_a_fresh_directory_of_their_own(hermetic_working_directory):
  """conftest.py: relative workdirs (runs/quickstart) resolve in an empty directory, not the
  checkout, so what `make quickstart` left there changes no test."""
  cwd = pathlib.Path.cwd()
  assert cwd == hermetic_working_directory and not any(cwd.iterdir())
  assert cwd != pathlib.Path(ROOT) and pathlib.Path(ROOT) not in cwd.parents


def _train_quickstart(*overrides):
  path = os.path.join(ROOT, "configs", "quickstart.py")
  result = subprocess.run(
      [sys.executable, "-m", "hicra_jax.cli", "train", f"--config={path}", *overrides],
      capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_quickstart_runs_two_steps_with_the_real_model_across_a_resume(tmp_path):
  """Step 1, stop; a second process resumes from the checkpoint and runs step 2; the README's
  eval of the run reads its latest checkpoint."""
  # The config's own workdir, runs/quickstart, in this test's working directory.
  workdir = pathlib.Path("runs/quickstart").absolute()
  # Short completions: .ci/run already trains a step of the full quickstart shapes; this test
  # is about the resume, the logs and the eval of the run.
  common = ["--config.checkpoint.every=1", "--config.export_policy=False",
            "--config.rollout.max_new_tokens=(32,48)"]
  first = _train_quickstart("--config.num_steps=1", *common)
  assert "step 1/1" in first.stdout
  second = _train_quickstart("--config.num_steps=2", "--config.resume=True", *common)
  assert "resumed from step 1" in second.stderr and "step 2/2" in second.stdout
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2]
  assert all(0.0 <= r["reward_mean"] <= 1.0 for r in records)
  # The data iterator resumed where step 1 left it: the prompts of both steps
  # are the seeded stream's first 2 x 4 examples (ids = indices, eval_size 0).
  from hicra_jax.data.datasets import ExampleStream  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config(os.path.join(ROOT, "configs", "quickstart.py"))
  stream = ExampleStream([{"id": i} for i in range(config.data.size)], int(config.seed))
  per_step = config.rollout.prompts_per_step
  expected = [[e["id"] for e in stream.take(per_step)] for _ in range(2)]
  assert [r["example_ids"] for r in records] == expected
  assert os.path.isdir(workdir / "checkpoints" / "1") and os.path.isdir(workdir / "checkpoints" / "2")
  assert glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))
  with open(workdir / "samples.jsonl", encoding="utf-8") as f:
    sample = json.loads(f.readline())
  assert {"prompt", "completion", "reward", "planning_spans"} <= set(sample)
  # The README's `hicra-jax eval --config.model=runs/quickstart ...` reads the run's latest
  # checkpoint (no export needed); 2 problems, greedy, 32 new tokens.
  argv = readme.runnable(readme.readme_command(readme.EVAL_TRAINING_RUN), limit=2,
                         temperature=0, max_new_tokens=32, output_dir=tmp_path / "eval")
  assert "--config.model=runs/quickstart" in argv, argv
  result = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "checkpoint step 2" in result.stdout
  summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
  assert summary["benchmarks"]["gsm8k"]["num_problems"] == 2
  assert "| quickstart@2 |" in (tmp_path / "eval" / "report.md").read_text()
