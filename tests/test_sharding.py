"""Sharded == unsharded on 8 virtual CPU devices (each run in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec as P

from hicra_jax import sharding
from hicra_jax.models import ModelConfig, schema

HERE = os.path.dirname(__file__)


def _run(kv_heads: int) -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "sharding_check.py"), str(kv_heads)],
                        capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def results_kv4():
  return _run(4)


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["fsdp2_tensor4", "data8"])
def test_sharded_logits_and_grads_equal_unsharded(results_kv4, mesh):
  r = results_kv4[mesh]
  assert r["logits_diff"] <= 1e-5 * r["logits_scale"]
  assert r["loss_diff"] <= 1e-5
  assert r["grad_diff"] <= 1e-5 * r["grad_scale"]


@pytest.mark.slow
def test_parameters_really_sharded_fsdp_tensor(results_kv4):
  r = results_kv4["fsdp2_tensor4"]
  spec, shard, full = r["specs"], r["shard_bytes"], r["full_bytes"]
  assert spec["layers.wq"] == str(P(None, "fsdp", "tensor", None))
  assert spec["layers.wk"] == str(P(None, "fsdp", "tensor", None))  # 4 kv heads / tensor 4
  assert spec["layers.w_down"] == str(P(None, "tensor", "fsdp"))
  assert spec["embed"] == str(P("tensor", "fsdp"))
  for name in ("layers.wq", "layers.w_gate", "layers.w_down", "embed", "lm_head"):
    assert shard[name] * 8 == full[name], name
  assert shard["layers.bq"] * 4 == full["layers.bq"]
  # data-only mesh: parameters replicated, batch split 8 ways.
  d = results_kv4["data8"]
  assert all(d["shard_bytes"][k] == d["full_bytes"][k] for k in d["full_bytes"])
  assert d["logits_shard_shape"] == [1, 16, 128]
  assert r["logits_shard_shape"][0] == 4  # batch 8 over fsdp=2


@pytest.mark.slow
def test_load_pretrained_with_mesh_places_params(results_kv4):
  r = results_kv4
  assert r["loaded_equal"]
  assert r["loaded_specs"] == r["fsdp2_tensor4"]["specs"]
  assert r["loaded_logits_diff"] <= 1e-5 * r["fsdp2_tensor4"]["logits_scale"]


@pytest.mark.slow
def test_fewer_kv_heads_than_tensor_axis_replicates_kv():
  r = _run(2)["fsdp2_tensor4"]
  assert r["specs"]["layers.wk"] == str(P(None, "fsdp", None, None))
  assert r["specs"]["layers.wq"] == str(P(None, "fsdp", "tensor", None))
  assert r["logits_diff"] <= 1e-5 * r["logits_scale"]
  assert r["grad_diff"] <= 1e-5 * r["grad_scale"]


@pytest.mark.slow
def test_make_mesh_fills_the_rest_with_auto_axes(results_kv4):
  rest = results_kv4["rest_mesh"]
  assert rest["shape"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert rest["devices"] == list(range(8))
  assert all("Auto" in t for t in rest["axis_types"]), rest["axis_types"]


def test_make_mesh_errors_name_the_axis():
  with pytest.raises(ValueError, match="tensor"):
    sharding.make_mesh(data=1, fsdp=1, tensor=0)
  with pytest.raises(ValueError, match="needs"):
    sharding.make_mesh(data=3, fsdp=1, tensor=1)


def test_rules_cover_every_parameter():
  cfg = ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=2,
                    num_kv_heads=1, head_dim=4, qkv_bias=True, architecture="Qwen2ForCausalLM")
  shardings = sharding.param_shardings(cfg, sharding.make_mesh(devices=jax.devices()[:1]))
  assert set(shardings) == set(schema.param_shapes(cfg))
