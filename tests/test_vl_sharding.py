"""Qwen2.5-VL sharded (fsdp 2 x tensor 2, 4 virtual CPU devices, own process) == unsharded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from jax.sharding import PartitionSpec as P

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def result() -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "vl_sharding_check.py")],
                        capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def test_sharded_vl_logits_equal_unsharded(result):
  assert result["logits_diff"] <= 1e-5 * result["logits_scale"]
  assert result["logits_shard_rows"] == 2  # 4 rows (and their images) over fsdp 2


def test_vision_parameters_are_sharded_by_their_logical_axes(result):
  spec, shard, full = result["specs"], result["shard_bytes"], result["full_bytes"]
  assert spec["visual.blocks.wqkv"] == str(P(None, "fsdp", None, "tensor"))
  assert spec["visual.blocks.wo"] == str(P(None, "tensor", None, "fsdp"))
  assert spec["visual.blocks.w_gate"] == str(P(None, "fsdp", "tensor"))
  assert spec["visual.blocks.w_down"] == str(P(None, "tensor", "fsdp"))
  assert spec["visual.merger_w1"] == str(P("fsdp", "tensor"))
  assert spec["visual.merger_w2"] == str(P("tensor", "fsdp"))
  assert spec["visual.patch_embed"] == str(P(None, None, None, None, "fsdp"))
  for name in ("visual.blocks.wqkv", "visual.blocks.w_up", "visual.merger_w1", "layers.wq"):
    assert shard[name] * 4 == full[name], name
  assert shard["visual.blocks.norm1"] == full["visual.blocks.norm1"]  # kept whole
