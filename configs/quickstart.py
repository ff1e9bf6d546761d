"""Quickstart preset: greedy generation with SmolLM2-135M-Instruct on CPU.

INTERIM: `hicra-jax generate` is the quickstart until the trainer lands; this
preset will then become a small CPU training run of `hicra-jax train`.

  hicra-jax generate --config configs/quickstart.py --config.max_new_tokens=16
"""

from __future__ import annotations

from hicra_jax.commands import generate


def get_config():
  config = generate.get_config()
  config.model = "smollm2"
  config.dtype = "float32"
  config.max_new_tokens = 48
  return config
