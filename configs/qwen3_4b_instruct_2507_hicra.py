"""Paper preset: HICRA on Qwen3-4B-Instruct-2507 (the headline row of Table 1).

  hicra-jax train --config configs/qwen3_4b_instruct_2507_hicra.py \
      --config.data.path=/data/dapo_math.jsonl   # the model: Qwen/Qwen3-4B-Instruct-2507 (Hub)
  ... --config.model.path=/models/Qwen3-4B-Instruct-2507      # or a local copy
  ... --config.algorithm=grpo          # the GRPO baseline (or entropy_reg)

Values and their sources: hicra_jax/train/presets.py.
"""

from __future__ import annotations

from hicra_jax.train.presets import paper_config


def get_config():
  c = paper_config(model="Qwen/Qwen3-4B-Instruct-2507",
                   workdir="runs/qwen3_4b_instruct_2507_hicra", template="chat")
  return c
