"""Run in its own process with 4 virtual CPU devices (see test_vl_sharding.py).

A tiny Qwen2.5-VL model on a fsdp 2 x tensor 2 mesh (parameters placed by
load_pretrained(mesh=...), image rows split like token rows) against the same
model unsharded. Prints one JSON line: logits difference, parameter specs and bytes.
"""

from __future__ import annotations

import json
import os
import tempfile

assert "xla_force_host_platform_device_count=4" in os.environ.get("XLA_FLAGS", "")

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax import sharding
from hicra_jax.models import (Decoder, ModelConfig, VisionConfig, VisionInputs, load_pretrained,
                              save_pretrained)
from hicra_jax.models.weights import build_model, flat_params

IMAGE = 290
CONFIG = ModelConfig(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, qkv_bias=True, architecture="Qwen2_5_VLForConditionalGeneration",
    mrope_section=(4, 2, 2), image_token_id=IMAGE,
    vision=VisionConfig(depth=3, hidden_size=32, intermediate_size=48, num_heads=2,
                        out_hidden_size=64, window_size=56, fullatt_block_indexes=(1,)))
GRIDS = [[[1, 8, 12]], [[1, 4, 6], [1, 6, 6]], None, [[1, 4, 4]]]  # per row; row 2: text only


def batch():
  rng = np.random.default_rng(0)
  rows, tokens = [], []
  for grid in GRIDS:
    if grid is None:
      rows.append(None)
      tokens.append(rng.integers(3, 280, 12).tolist())
      continue
    grid = np.array(grid)
    pv = rng.normal(size=(int(np.prod(grid, axis=1).sum()), CONFIG.vision.patch_dim))
    rows.append((pv.astype(np.float32), grid))
    toks = [5, 6]
    for _, h, w in grid:
      toks += [292] + [IMAGE] * int(h * w // 4) + [293]
    tokens.append(toks + [7])
  t = max(len(r) for r in tokens)
  tok = np.zeros((len(tokens), t), np.int32)
  mask = np.zeros((len(tokens), t), bool)
  for i, r in enumerate(tokens):
    tok[i, t - len(r):], mask[i, t - len(r):] = r, True  # left padded, as the sampler does
  return tok, mask, VisionInputs.from_rows(CONFIG, rows)


def main():
  assert jax.device_count() == 4, jax.devices()
  base = Decoder(CONFIG, rngs=nnx.Rngs(0))
  params = {k: np.asarray(v) for k, v in flat_params(base).items()}
  rng = np.random.default_rng(1)
  for k in params:  # norms and biases away from 1 and 0
    if params[k].std() == 0:
      params[k] = params[k] + 0.1 * rng.normal(size=params[k].shape).astype(np.float32)
  tokens, mask, vision = batch()
  forward = nnx.jit(lambda m, t, a, v: m(t, a, vision=v))
  ref = np.asarray(forward(build_model(CONFIG, params), tokens, mask, vision))
  mesh = sharding.make_mesh(data=1, fsdp=2, tensor=2)
  with tempfile.TemporaryDirectory() as tmp:
    save_pretrained(build_model(CONFIG, params), CONFIG, tmp)
    model, _ = load_pretrained(tmp, mesh=mesh)
  rows = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim))
  logits = forward(model, rows(tokens), rows(mask), jax.tree.map(rows, vision))
  got = flat_params(model)
  print("RESULT " + json.dumps({
      "logits_diff": float(np.abs(np.asarray(logits) - ref)[mask].max()),
      "logits_scale": float(np.abs(ref).max()),
      "logits_shard_rows": logits.addressable_shards[0].data.shape[0],
      "specs": {k: str(v.sharding.spec) for k, v in got.items()},
      "shard_bytes": {k: v.addressable_shards[0].data.nbytes for k, v in got.items()},
      "full_bytes": {k: v.nbytes for k, v in got.items()},
  }))


if __name__ == "__main__":
  main()
