"""Paper preset: HICRA on Qwen3-4B-Base (Table 1).

  hicra-jax train --config configs/qwen3_4b_base_hicra.py \
      --config.data.path=/data/dapo_math.jsonl   # the model: Qwen/Qwen3-4B-Base (Hub)
  ... --config.model.path=/models/Qwen3-4B-Base      # or a local copy
  ... --config.algorithm=grpo          # the GRPO baseline (or entropy_reg)

Values and their sources: hicra_jax/train/presets.py.
"""

from __future__ import annotations

from hicra_jax.train.presets import paper_config


def get_config():
  c = paper_config(model="Qwen/Qwen3-4B-Base",
                   workdir="runs/qwen3_4b_base_hicra", template="plain")
  return c
