"""Base accuracy of SmolLM2-135M-Instruct on a reasoning-gym task (picks the quickstart task).

  python benchmarks/quickstart_base_accuracy.py --task chain_sum \
      --kwargs '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}' --n 64

Samples `--samples` completions per problem at `--temperature` (0: greedy),
grades them with the `reasoning_gym` reward and prints accuracy and timings.
"""

from __future__ import annotations

import argparse
import json
import time


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--task", default="chain_sum")
  ap.add_argument("--kwargs", default="{}")
  ap.add_argument("--n", type=int, default=64)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--max_new_tokens", type=int, default=128)
  ap.add_argument("--temperature", type=float, default=1.0)
  ap.add_argument("--samples", type=int, default=1)
  ap.add_argument("--reward", default="reasoning_gym")
  args = ap.parse_args()
  import jax
  import numpy as np
  from hicra_jax.data.datasets import attach_prompt_ids, load_rows
  from hicra_jax.models import load_pretrained, load_tokenizer
  from hicra_jax.assets import smollm2_gguf_path
  from hicra_jax.rewards import grade_batch
  from hicra_jax.sampling import SamplingParams, generate
  path = smollm2_gguf_path()
  model, _ = load_pretrained(path)
  tok = load_tokenizer(path)
  # The trainer's own data path: the same rows and prompts a training run sees.
  entries = attach_prompt_ids(load_rows("reasoning_gym", task=args.task, size=args.n,
                                        seed=args.seed, task_kwargs=json.loads(args.kwargs)), tok)
  prompts = [e["prompt_ids"] for e in entries]
  params = SamplingParams.for_tokenizer(
      tok, n=args.samples, max_new_tokens=args.max_new_tokens,
      temperature=max(args.temperature, 1e-3), greedy=args.temperature == 0)
  t0 = time.perf_counter()
  rollout = generate(model, prompts, params, jax.random.key(args.seed))
  t1 = time.perf_counter()
  texts = rollout.texts(tok)
  grades = grade_batch(args.reward, texts, entries, group_size=args.samples)
  rewards = np.asarray([g.reward for g in grades])
  truncated = float(np.mean(rollout.finish_reason == "length"))
  print(json.dumps({"task": args.task, "kwargs": json.loads(args.kwargs), "problems": args.n,
                    "samples": args.samples, "reward": args.reward, "temperature": args.temperature,
                    "accuracy": float(np.mean(rewards >= 1.0)), "reward_mean": float(rewards.mean()),
                    "truncation_rate": truncated, "mean_length": float(rollout.lengths.mean()),
                    "generate_s": round(t1 - t0, 1)}))
  print("example:", prompts and texts[0][:300].replace("\n", " | "))


if __name__ == "__main__":
  main()
