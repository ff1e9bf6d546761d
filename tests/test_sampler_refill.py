"""The slot pool (continuous batching within a step) against the sampler's own rollout.

References: `generate_arrays` (each call decodes its rows to the longest one) for
the rows; the pool itself without refill (min_free = slots: a new batch only once
every slot is free) for bit-identical results; the decoder's shared-index cache
path for the per-row write slots.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax.config import ConfigError
from hicra_jax.models import Decoder, ModelConfig
from hicra_jax.models.decoder import KVCache
from hicra_jax.models.weights import build_model, flat_params
from hicra_jax.sampling import (GenerationInterrupted, SamplingParams, generate_arrays,
                                generate_pooled_arrays, run_pool)
from hicra_jax.sampling import sampler as sampler_lib
from hicra_jax.sampling import slot_pool
from hicra_jax.train import rollout as rollout_lib
from hicra_jax.train.run_config import MeshConfig, ModelSettings, RolloutConfig, RunConfig

TINY = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=8, eos_token_id=2)
PROMPTS = [[3, 4, 5], [6], [7, 8, 9, 10, 11], [12, 13], [5, 9, 4, 3, 8, 11, 12, 6, 10]]
STOPS = (2, 7)  # about 1 in 8 tokens stops a row: lengths from 1 to max_new_tokens
FIELDS = ("tokens", "logprobs", "entropy", "completion_mask", "stopped")
GREEDY = SamplingParams(n=3, max_new_tokens=24, greedy=True, stop_ids=STOPS)
SEEDED = SamplingParams(n=3, max_new_tokens=24, temperature=0.9, top_p=0.9, stop_ids=STOPS)


def tiny_model() -> Decoder:
  m = Decoder(TINY, rngs=nnx.Rngs(1))
  return build_model(TINY, {k: v * (4.0 if v.ndim > 1 else 1.0) for k, v in flat_params(m).items()})


@pytest.fixture(scope="module")
def model():
  return tiny_model()


def host(rollout) -> dict[str, np.ndarray]:
  return {f: np.asarray(getattr(rollout, f)) for f in FIELDS}


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_pool_gives_the_samplers_rows_and_refill_changes_no_bit(model, params):
  reference = host(generate_arrays(model, PROMPTS, params, jax.random.key(5)))
  lengths = reference["completion_mask"].sum(axis=1)
  assert lengths.min() <= 2 and lengths.max() >= 12  # ragged rows
  if not params.greedy:  # stopped rows and rows cut at max_new_tokens; n > 1 rows differ
    assert reference["stopped"].any() and not reference["stopped"].all()
    assert len({tuple(r) for r in reference["tokens"]}) > 10
  runs = {}
  for min_free in (1, 4):  # 4 = slots: no refill until every slot is free (static batches)
    out, stats = run_pool(model, PROMPTS, params, jax.random.key(5), slots=4, min_free=min_free)
    runs[min_free] = (host(out), stats)
  (refill, with_stats), (static, without_stats) = runs[1], runs[4]
  for f in ("tokens", "completion_mask", "stopped"):
    np.testing.assert_array_equal(refill[f], reference[f], f)
  # The sampler decodes 15 rows at once, the pool 4: matmuls of other batch shapes.
  for f in ("logprobs", "entropy"):
    np.testing.assert_allclose(refill[f], reference[f], rtol=0, atol=1e-5, err_msg=f)
  for f in FIELDS:  # the same shapes, other schedules: every bit equal
    np.testing.assert_array_equal(refill[f], static[f], f)
  # Every row not ended by its first token took a slot; refill needs fewer decode steps.
  assert with_stats.refills == without_stats.refills == int((lengths > 1).sum())
  assert with_stats.busy_slot_steps == without_stats.busy_slot_steps == int((lengths - 1).sum())
  assert with_stats.decode_steps < without_stats.decode_steps
  assert with_stats.utilization > without_stats.utilization


def test_windows_segments_and_interrupt(model, monkeypatch):
  """Windows grow with the slots in use; segments for interrupt checks change nothing."""
  monkeypatch.setattr(sampler_lib, "MIN_WINDOW", 16)
  params = SamplingParams(n=2, max_new_tokens=40, temperature=0.9, stop_ids=(15,))
  prompts = PROMPTS[:4]
  full = host(generate_arrays(model, prompts, params, jax.random.key(2), prompt_buckets=(8,),
                              decode_window=False))
  assert full["completion_mask"].sum(axis=1).max() > 24  # windows 16, 32 and all 48 slots
  decode_before = slot_pool._TRACES["decode"]  # pylint: disable=protected-access
  checks = []

  def never():
    checks.append(1)
    return False
  out, stats = run_pool(model, prompts, params, jax.random.key(2), slots=2, prompt_buckets=(8,),
                        interrupt=never, segment_tokens=7)
  got = host(out)
  for f in ("tokens", "completion_mask", "stopped"):
    np.testing.assert_array_equal(got[f], full[f], f)
  for f in ("logprobs", "entropy"):
    np.testing.assert_allclose(got[f], full[f], rtol=0, atol=1e-5, err_msg=f)
  # One program per window, whatever the segments; a check every 7 decode steps.
  assert slot_pool._TRACES["decode"] - decode_before <= 3  # pylint: disable=protected-access
  assert len(checks) == stats.decode_steps // 7 and stats.segments > len(checks)
  calls = []

  def second():
    calls.append(1)
    return len(calls) >= 2
  with pytest.raises(GenerationInterrupted, match="after 14 pooled decode steps"):
    run_pool(model, prompts, params, jax.random.key(2), slots=2, prompt_buckets=(8,),
             interrupt=second, segment_tokens=7)


def test_per_row_write_slots_equal_the_shared_index(model):
  """KVCache.index per row (all equal here) gives the shared path's logits and cache, bit
  for bit; a row's own slot is where its token goes."""
  graphdef, state = nnx.split(model)
  decode = jax.jit(lambda state, *args: nnx.merge(graphdef, state).decode(*args))
  tokens = jnp.asarray([[0, 3, 4, 5], [6, 7, 8, 9]])
  mask = jnp.asarray([[False, True, True, True], [True, True, True, True]])
  cache = KVCache.init(TINY, 2, 10)
  _, cache = decode(state, tokens, cache, mask)
  rows = dataclasses.replace(cache, index=jnp.full((2,), cache.index))
  for step in range(3):
    last = jnp.asarray([[3 + step], [9 - step]])
    shared_logits, cache = decode(state, last, cache)
    row_logits, rows = decode(state, last, rows)
    np.testing.assert_array_equal(np.asarray(row_logits), np.asarray(shared_logits))
    for field in ("k", "v", "valid", "next_position"):
      np.testing.assert_array_equal(np.asarray(getattr(rows, field)),
                                    np.asarray(getattr(cache, field)), field)
    np.testing.assert_array_equal(np.asarray(rows.index), [int(cache.index)] * 2)
  # Rows at different slots: row 1 writes at slot 9 (the last), row 0 past the end (dropped).
  moved = dataclasses.replace(rows, index=jnp.asarray([10, 9]))
  _, moved = decode(state, jnp.asarray([[4], [4]]), moved)
  assert bool(moved.valid[1, 9]) and not bool(rows.valid[1, 9])
  np.testing.assert_array_equal(np.asarray(moved.k[:, 0]), np.asarray(rows.k[:, 0]))
  with pytest.raises(ValueError, match="one token per row per call, got 2"):
    model.decode(jnp.asarray([[4, 5], [4, 5]]), rows)


def test_rollout_sample_with_refill_slots_gives_the_same_rows(model):
  examples = [{"prompt_ids": p} for p in PROMPTS]
  common = dict(prompt_buckets=(32,), segment_tokens=256)
  calls = rollout_lib.sample(model, examples, SEEDED, jax.random.key(5), **common)
  pooled = rollout_lib.sample(model, examples, SEEDED, jax.random.key(5), refill_slots=4,
                              **common)
  assert pooled.completions == calls.completions
  np.testing.assert_array_equal(pooled.rollout.finish_reason, calls.rollout.finish_reason)
  np.testing.assert_array_equal(pooled.rollout.prompt_index, calls.rollout.prompt_index)


def test_bad_pool_settings_are_clear_errors(model):
  with pytest.raises(ValueError, match="slots must be an int >= 1"):
    generate_pooled_arrays(model, PROMPTS, GREEDY, jax.random.key(0), slots=0)
  with pytest.raises(ValueError, match=r"min_free must be None or an int in \[1, slots = 4\]"):
    run_pool(model, PROMPTS, GREEDY, jax.random.key(0), slots=4, min_free=5)
  with pytest.raises(ConfigError, match="refill_slots"):
    RolloutConfig(refill_slots=-1)
  with pytest.raises(ConfigError, match=r"multiple of the batch shards .* = 2"):
    RunConfig(rollout=RolloutConfig(refill_slots=3),
              model=ModelSettings(mesh=MeshConfig(data=2)))
  assert RunConfig(rollout=RolloutConfig(refill_slots=4),
                   model=ModelSettings(mesh=MeshConfig(data=2))).rollout.refill_slots == 4


def _two_process_check(process_id: int, port: int) -> None:
  """One of two processes (one CPU device each, a data=2 mesh): prints its rows of the pool."""
  # pylint: disable=import-outside-toplevel
  from hicra_jax import multihost, sharding
  multihost.initialize(f"localhost:{port}", 2, process_id, heartbeat_timeout_s=10)
  assert jax.process_count() == 2 and jax.device_count() == 2
  mesh = sharding.make_mesh(data=2, fsdp=1)
  pooled = generate_pooled_arrays(tiny_model(), PROMPTS[:4], SEEDED, jax.random.key(5), slots=4,
                                  mesh=mesh).to_host(SEEDED.n)
  print("RESULT " + json.dumps({f: getattr(pooled, f).tolist() for f in (
      "prompt_index", "tokens", "logprobs", "completion_mask", "finish_reason")}), flush=True)


@pytest.mark.slow
def test_pool_across_two_processes_gives_each_its_rows(model):
  """Each process returns its own rows (whole groups), equal to the one-process sampler's."""
  reference = generate_arrays(model, PROMPTS[:4], SEEDED, jax.random.key(5)).to_host(SEEDED.n)
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  here = os.path.dirname(os.path.abspath(__file__))
  procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), str(i), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=here) for i in (0, 1)]
  outs = []
  try:
    for proc in procs:
      outs.append(proc.communicate(timeout=300))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  held = []
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-4000:]
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    got = {k: np.asarray(v) for k, v in json.loads(line[len("RESULT "):]).items()}
    rows = got["prompt_index"] * SEEDED.n + np.arange(len(got["prompt_index"])) % SEEDED.n
    for f in ("tokens", "completion_mask", "finish_reason"):
      np.testing.assert_array_equal(got[f], getattr(reference, f)[rows], f)
    np.testing.assert_allclose(got["logprobs"], reference.logprobs[rows], rtol=0, atol=1e-5)
    held.append(sorted(set(got["prompt_index"].tolist())))
  assert held == [[0, 1], [2, 3]]  # each process holds its own groups


if __name__ == "__main__":
  _two_process_check(int(sys.argv[1]), int(sys.argv[2]))
