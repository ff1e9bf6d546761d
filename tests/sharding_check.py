"""Run in its own process with 8 virtual CPU devices (see test_sharding.py).

Prints one JSON line: per mesh, max |diff| of logits and grads vs unsharded, and
the parameter shardings actually used.
"""

from __future__ import annotations

import json
import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax import sharding
from hicra_jax.models import Decoder, ModelConfig, model_token_logprobs_and_entropy
from hicra_jax.models.weights import build_model, flat_params

KV_HEADS = int(sys.argv[1]) if len(sys.argv) > 1 else 4
CONFIG = ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=8, num_kv_heads=KV_HEADS, head_dim=8, qkv_bias=True,
                     architecture="Qwen2ForCausalLM")


def loss_and_logits(model, tokens, mask):
  lp, _ = model_token_logprobs_and_entropy(model, tokens, mask)
  m = mask[:, 1:]
  return jnp.sum(jnp.where(m, lp, 0)) / jnp.sum(m), model(tokens, mask)


def run(model, tokens, mask):
  graphdef, state = nnx.split(model)
  def f(state, tokens, mask):
    return jax.value_and_grad(lambda s: loss_and_logits(nnx.merge(graphdef, s), tokens, mask),
                              has_aux=True)(state)
  (loss, logits), grads = jax.jit(f)(state, tokens, mask)
  return loss, logits, grads


def main():
  assert jax.device_count() == 8, jax.devices()
  base = Decoder(CONFIG, rngs=nnx.Rngs(0))
  params = {k: np.asarray(v) for k, v in flat_params(base).items()}
  key = jax.random.key(1)
  tokens = jax.random.randint(key, (8, 16), 0, CONFIG.vocab_size)
  mask = jnp.arange(16)[None, :] >= jnp.array([0, 3, 0, 5, 1, 0, 7, 2])[:, None]
  ref_loss, ref_logits, ref_grads = run(build_model(CONFIG, params), tokens, mask)
  ref_flat = dict(zip(sorted(params), [None] * len(params)))
  results = {}
  for name, axes in {"fsdp2_tensor4": dict(data=1, fsdp=2, tensor=4),
                     "data8": dict(data=8, fsdp=1, tensor=1)}.items():
    mesh = sharding.make_mesh(**axes)
    shardings = sharding.param_shardings(CONFIG, mesh)
    placed = {k: jax.device_put(v, shardings[k]) for k, v in params.items()}
    model = build_model(CONFIG, placed, mesh=mesh)
    batch = sharding.batch_sharding(mesh)
    loss, logits, grads = run(model, jax.device_put(tokens, batch), jax.device_put(mask, batch))
    got = flat_params(model)
    grad_diff = max(float(jnp.abs(a - b).max())
                    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))
    results[name] = {
        "loss_diff": float(abs(loss - ref_loss)),
        "logits_diff": float(jnp.abs(logits - ref_logits).max()),
        "logits_scale": float(jnp.abs(ref_logits).max()),
        "grad_diff": grad_diff,
        "grad_scale": max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ref_grads)),
        "specs": {k: str(v.sharding.spec) for k, v in got.items()},
        "shard_bytes": {k: v.addressable_shards[0].data.nbytes for k, v in got.items()},
        "full_bytes": {k: v.nbytes for k, v in got.items()},
        "logits_shard_shape": list(logits.addressable_shards[0].data.shape),
    }
  del ref_flat
  # make_mesh: -1 is the rest of the devices; axes are Auto (shardings propagate).
  rest = sharding.make_mesh(data=2, fsdp=-1, tensor=2)
  results["rest_mesh"] = {"shape": dict(rest.shape),
                          "axis_types": [str(t) for t in rest.axis_types],
                          "devices": sorted(d.id for d in rest.devices.flat)}
  # load_pretrained(mesh=...) places each parameter with its sharding as it is read.
  import tempfile
  from hicra_jax.models import load_pretrained, save_pretrained
  with tempfile.TemporaryDirectory() as tmp:
    save_pretrained(build_model(CONFIG, params), CONFIG, tmp)
    mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
    loaded, _ = load_pretrained(tmp, mesh=mesh)
    loaded_flat = flat_params(loaded)
    results["loaded_specs"] = {k: str(v.sharding.spec) for k, v in loaded_flat.items()}
    results["loaded_equal"] = all(bool(jnp.array_equal(loaded_flat[k], params[k])) for k in params)
    _, logits, _ = run(loaded, jax.device_put(tokens, sharding.batch_sharding(mesh)),
                       jax.device_put(mask, sharding.batch_sharding(mesh)))
    results["loaded_logits_diff"] = float(jnp.abs(logits - ref_logits).max())
  print("RESULT " + json.dumps(results))


if __name__ == "__main__":
  main()
