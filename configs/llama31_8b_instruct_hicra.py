"""Paper preset: HICRA on Llama-3.1-8B-Instruct (Table 1, with dynamic filtering).

  hicra-jax train --config configs/llama31_8b_instruct_hicra.py \
      --config.data.path=/data/dapo_math.jsonl   # the model: meta-llama/Llama-3.1-8B-Instruct (Hub)
  ... --config.model.path=/models/Llama-3.1-8B-Instruct      # or a local copy
  ... --config.algorithm=grpo          # the GRPO baseline (or entropy_reg)

Values and their sources: hicra_jax/train/presets.py.
"""

from __future__ import annotations

from hicra_jax.train.presets import paper_config


def get_config():
  c = paper_config(model="meta-llama/Llama-3.1-8B-Instruct",
                   workdir="runs/llama31_8b_instruct_hicra", template="chat")
  c.filter.dynamic = True  # [paper] DAPO dynamic filtering for the Llama-3.1-Instruct runs
  c.filter.max_rounds = 3  # [ours] refill rounds per step
  return c
