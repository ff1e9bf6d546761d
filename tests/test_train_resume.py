"""Exact resume after SIGKILL mid-step, and SIGTERM saves and exits (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hicra_jax.train.build import build_components
from hicra_jax.train import loop
from hicra_jax.train.loop import Trainer
from train_helpers import tiny_config

NUM_STEPS = 8
EVERY = 3


def _env(tmp_path):
  env = dict(os.environ)
  # Later processes reuse the first one's compiled programs.
  env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PLATFORMS="cpu")
  env[loop.TEST_STEP_SLEEP_ENV] = "0.25"  # a window to kill a step in
  return env


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "hicra_jax.cli", "train", f"--config.workdir={workdir}",
          f"--config.num_steps={NUM_STEPS}", f"--config.checkpoint.every={EVERY}",
          "--config.log.tensorboard=False", "--config.export_policy=False",
          "--config.algorithm=hicra", *extra]


def _records(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  out = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.endswith("\n"):
        rec = json.loads(line)
        out[rec["step"]] = rec  # the last record of a step wins (a resumed run repeats steps)
  return out


def _wait_for_step(proc, workdir, step, timeout=240):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if max(_records(workdir), default=0) >= step:
      return
    if proc.poll() is not None:
      raise AssertionError(f"the run ended early with status {proc.returncode}")
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout}s")


def _params(workdir, step):
  config = tiny_config(workdir, num_steps=NUM_STEPS, checkpoint__every=EVERY, resume=True)
  trainer = Trainer(config, build_components(config))
  try:
    state, key, meta = trainer.checkpointer.restore(step, trainer.state)
  finally:
    trainer.close()
  return jax.tree_util.tree_leaves(jax.device_get(state.params)), key, meta


def test_sigkill_mid_step_then_resume_matches_uninterrupted_run(tmp_path):
  env = _env(tmp_path)
  full, killed = tmp_path / "full", tmp_path / "killed"
  subprocess.run(_cmd(full), env=env, check=True, capture_output=True, timeout=300)

  proc = subprocess.Popen(_cmd(killed), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    _wait_for_step(proc, killed, EVERY + 2)
    time.sleep(0.1)  # inside the next step (it sleeps 0.25 s between rollout and update)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL
  assert max(_records(killed)) < NUM_STEPS
  result = subprocess.run(_cmd(killed, "--config.resume=True"), env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]

  a, b = _records(full), _records(killed)
  assert sorted(a) == sorted(b) == list(range(1, NUM_STEPS + 1))
  for step in a:  # the same prompts in the same order, before and after the resume
    assert a[step]["example_ids"] == b[step]["example_ids"], step
    assert a[step]["reward_mean"] == pytest.approx(b[step]["reward_mean"], abs=1e-6)
  pa, key_a, meta_a = _params(full, NUM_STEPS)
  pb, key_b, meta_b = _params(killed, NUM_STEPS)
  for x, y in zip(pa, pb):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
  np.testing.assert_array_equal(jax.random.key_data(key_a), jax.random.key_data(key_b))
  assert meta_a["data_state"] == meta_b["data_state"]
  assert meta_a["config"]["algorithm"] == "hicra" and "curriculum_stage" in meta_a


def test_sigterm_saves_a_restorable_checkpoint_and_exits(tmp_path):
  workdir = tmp_path / "term"
  proc = subprocess.Popen(_cmd(workdir, "--config.num_steps=1000"), env=_env(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    _wait_for_step(proc, workdir, 2)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    elapsed = time.time() - t0
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out[-2000:]
  assert elapsed < 15, elapsed
  assert "resume with --config.resume=True" in out
  last = max(_records(workdir))
  params, _, meta = _params(workdir, last)
  assert params and meta["data_state"]
