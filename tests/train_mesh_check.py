"""Run by test_train_mesh.py with 4 virtual CPU devices: mesh (data 2 x fsdp 2) == one device."""

from __future__ import annotations

import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hicra_jax.train.build import build_components  # noqa: E402
from hicra_jax.train.loop import Trainer  # noqa: E402
from train_helpers import tiny_config  # noqa: E402


def run(workdir, **mesh):
  overrides = {f"model__mesh__{k}": v for k, v in mesh.items()}
  config = tiny_config(workdir, num_steps=2, **overrides)
  trainer = Trainer(config, build_components(config))
  try:
    ms = [trainer.train_step() for _ in range(2)]
    params = jax.tree_util.tree_leaves(jax.device_get(trainer.state.params))
    shardings = {str(x.sharding) for x in jax.tree_util.tree_leaves(trainer.state.params)}
  finally:
    trainer.close()
  return ms, params, shardings


def main():
  assert jax.device_count() == 4, jax.devices()
  with tempfile.TemporaryDirectory() as tmp:
    m1, p1, _ = run(os.path.join(tmp, "one"))
    m4, p4, shardings = run(os.path.join(tmp, "mesh"), data=2, fsdp=2)
  assert any("fsdp" in s for s in shardings), shardings
  for a, b in zip(m1, m4):
    assert a["example_ids"] == b["example_ids"]
    np.testing.assert_allclose(a["reward_mean"], b["reward_mean"], atol=1e-6)
  diff = max(float(np.max(np.abs(x - y))) for x, y in zip(p1, p4))
  assert diff < 1e-4, diff
  print(f"MESH OK max param diff {diff:.2e}")


if __name__ == "__main__":
  main()
