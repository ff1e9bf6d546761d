"""Run in its own process with 8 virtual CPU devices (see test_sampler.py).

Prints one JSON line: per mesh, whether sharded greedy output equals unsharded.
"""

from __future__ import annotations

import json
import os

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax
import numpy as np
from flax import nnx

from hicra_jax import sharding
from hicra_jax.models import Decoder, ModelConfig
from hicra_jax.sampling import SamplingParams, generate

CONFIG = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=2,
                     num_heads=8, num_kv_heads=4, head_dim=8, eos_token_id=2)


def main():
  assert jax.device_count() == 8
  model = Decoder(CONFIG, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, 64, size=n).tolist() for n in (3, 9, 5, 12, 1, 7, 4, 10)]
  params = SamplingParams(n=2, max_new_tokens=16, greedy=True)
  ref = generate(model, prompts, params, jax.random.key(0))
  out = {}
  for name, axes in {"fsdp2_tensor4": dict(data=1, fsdp=2, tensor=4),
                     "data8": dict(data=8, fsdp=1, tensor=1)}.items():
    mesh = sharding.make_mesh(**axes)
    got = generate(model, prompts, params, jax.random.key(0), mesh=mesh)
    out[name] = {"tokens_equal": bool(np.array_equal(got.tokens, ref.tokens)),
                 "mask_equal": bool(np.array_equal(got.completion_mask, ref.completion_mask)),
                 "logprob_diff": float(np.abs(got.logprobs - ref.logprobs).max())}
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
