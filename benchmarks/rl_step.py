"""One full HICRA RL step (rollout -> reward -> masks -> update): time split, tokens/s, update MFU.

  python benchmarks/rl_step.py                       # GPU: Qwen2.5-1.5B shape, 64 prompts x 8, 1024 new tokens
  python benchmarks/rl_step.py --ragged              # the same with ragged lengths (random stop tokens)
  python benchmarks/rl_step.py --preset cpu-small    # CPU smoke figure

A random-initialized model of the preset's shape; prompts are random tokens,
the reward is synthetic (fraction of a target token: its cost is the host
bookkeeping of a real reward, not grading), planning masks come from the
paper's SG trie built for the Qwen3 tokenizer (Listing 1). Forced lengths: no
stop token; ragged: about 1 in `--stop_every` vocabulary ids stops a row.
The first step compiles; the figures are those of the following steps.
Update MFU uses the foundation's definition (benchmarks/train_step_flops.py):
6 * P * tokens + 12 * N * S^2 * layers * heads * head_dim FLOPs (one forward
and backward over prompt + completion), divided by the measured FLOP/s of a
bf16 matmul on the same device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_flops import PRESETS as MODEL_PRESETS, matmul_flops_per_s  # noqa: E402

PRESETS = {
    "qwen2.5-1.5b": dict(prompts=64, group=8, prompt_len=256, new=1024, micro=32,
                         dtype="float32", compute="bfloat16", remat="dots_no_batch"),
    "cpu-small": dict(prompts=4, group=4, prompt_len=32, new=64, micro=8, dtype="float32",
                      compute="float32", remat="none"),
}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-1.5b")
  ap.add_argument("--ragged", action="store_true")
  ap.add_argument("--stop_every", type=int, default=300)
  ap.add_argument("--steps", type=int, default=3, help="steps run (the first compiles)")
  ap.add_argument("--matmul", type=int, default=None)
  ap.add_argument("--attention", default="auto", help="model.attention: auto | xla | cudnn | "
                  "splash | chunked")
  ap.add_argument("--new_tokens", type=int, default=None,
                  help="new tokens per completion (overrides the preset's; up to 32768)")
  args = ap.parse_args()
  # pylint: disable=import-outside-toplevel
  from hicra_jax.commands import train as train_cmd
  from hicra_jax.models import load_tokenizer
  from hicra_jax.assets import qwen3_tokenizer_dir
  from hicra_jax.planning import SGTrie, load_strategic_grams, planning_mask_and_counts
  from hicra_jax.train import synthetic
  from flax import nnx
  from hicra_jax.models import Decoder
  from hicra_jax.train.loop import Components, Trainer
  # pylint: enable=import-outside-toplevel
  p = dict(PRESETS[args.preset])
  if args.new_tokens:
    p["new"] = args.new_tokens
  mp = MODEL_PRESETS[args.preset]
  mcfg = mp["config"]
  c = train_cmd.get_config()
  c.workdir = f"/tmp/rl_step_bench_{os.getpid()}"
  c.num_steps = args.steps
  c.model.dtype, c.model.compute_dtype, c.model.remat = p["dtype"], p["compute"], p["remat"]
  c.rollout.prompts_per_step, c.rollout.group_size = p["prompts"], p["group"]
  c.rollout.max_new_tokens = (p["new"],)
  c.rollout.truncation_threshold = 1.0
  c.rollout.prompt_buckets = (p["prompt_len"],)
  c.loss.micro_batch_size = p["micro"]
  c.optim.lr = 1e-6
  c.log.tensorboard = False
  c.checkpoint.every = 10**6
  c.checkpoint.async_save = True
  c.export_policy = False
  model = Decoder(mcfg, rngs=nnx.Rngs(0), param_dtype=p["dtype"], compute_dtype=p["compute"],
                  remat=p["remat"], attention_impl=args.attention)
  tok = load_tokenizer(qwen3_tokenizer_dir())
  trie = SGTrie.build(load_strategic_grams("paper"), tok)
  rng = np.random.default_rng(0)
  examples = [{"id": i, "prompt_ids": rng.integers(0, min(mcfg.vocab_size, 100000),
                                                   p["prompt_len"]).tolist()}
              for i in range(4 * p["prompts"])]
  stop_ids = ()
  if args.ragged:
    stop_ids = tuple(range(7, mcfg.vocab_size, args.stop_every))
  comps = Components(model=model, examples=examples,
                     reward_fn=synthetic.synthetic_reward_fn(5),
                     planner=lambda t, m: planning_mask_and_counts(t, trie, m),
                     stop_ids=stop_ids)
  trainer = Trainer(train_cmd.validate(c), comps)
  rows = []
  try:
    for _ in range(args.steps):
      rows.append(trainer.train_step())
  finally:
    trainer.close()
  timed = rows[1:] or rows
  mean = lambda k: float(np.mean([r[k] for r in timed]))
  n = p["prompts"] * p["group"]
  seq = p["prompt_len"] + p["new"]
  flops = 6 * mcfg.num_params * n * seq + 12 * n * seq**2 * mcfg.num_layers * mcfg.num_heads \
      * mcfg.head_dim
  peak = matmul_flops_per_s(args.matmul or mp["matmul"], iters=3)
  step = mean("time_step_s")
  out = {
      "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
      "jax": jax.__version__, "preset": args.preset, "ragged": args.ragged,
      "params_M": round(mcfg.num_params / 1e6, 1), "rows": n, "prompt_len": p["prompt_len"],
      "max_new_tokens": p["new"], "mean_length": mean("response_length_mean"),
      "step_s": round(step, 3),
      **{f"{k}_s": round(mean(f"time_{k}_s"), 3) for k in ("rollout", "reward", "masks", "update")},
      "masks_fraction": round(mean("time_masks_s") / step, 4),
      "tokens_per_s": round(mean("tokens_per_s"), 1),
      "update_tflops": round(flops / mean("time_update_s") / 1e12, 4),
      "matmul_tflops": round(peak / 1e12, 4),
      "update_mfu": round(flops / mean("time_update_s") / peak, 4),
  }
  print(json.dumps(out))


if __name__ == "__main__":
  main()
