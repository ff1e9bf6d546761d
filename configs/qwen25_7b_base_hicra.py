"""Paper preset: HICRA on Qwen2.5-7B-Base (Table 1, with the Entropy Reg. baseline).

  hicra-jax train --config configs/qwen25_7b_base_hicra.py \
      --config.data.path=/data/dapo_math.jsonl   # the model: Qwen/Qwen2.5-7B (Hub)
  ... --config.model.path=/models/Qwen2.5-7B      # or a local copy
  ... --config.algorithm=grpo          # the GRPO baseline (or entropy_reg)

Values and their sources: hicra_jax/train/presets.py.
"""

from __future__ import annotations

from hicra_jax.train.presets import paper_config


def get_config():
  c = paper_config(model="Qwen/Qwen2.5-7B",
                   workdir="runs/qwen25_7b_base_hicra", template="plain")
  # [ours] 16K + 32K exceeds Qwen2.5-7B's 32K context with the prompt: keep prompts short or
  # use --config.rollout.max_new_tokens="(8192, 16384)".
  return c
