"""Greedy generation with SmolLM2-135M-Instruct on CPU (a quick look at the model).

  hicra-jax generate --config configs/generate_smollm2.py --config.max_new_tokens=16

It spells out `generate`'s embedded defaults: a starting point for your own config file.
"""

from __future__ import annotations

from hicra_jax.commands import generate


def get_config():
  config = generate.get_config()
  config.model = "smollm2"
  config.dtype = "float32"
  config.max_new_tokens = 48
  return config
