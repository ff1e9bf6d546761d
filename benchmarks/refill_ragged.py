"""Continuous batching on a ragged workload: sampler tokens/s with and without slot refill.

  python benchmarks/refill_ragged.py                 # tiny random model, CPU-sized
  python benchmarks/refill_ragged.py --slots 64 --new 1024

RL completions range from tens to thousands of tokens. The same prompts are
sampled three ways, and all three must give the same tokens (checked):
  - one `generate_arrays` call of all rows (decodes until its longest row stops);
  - calls of `--slots` rows (`rows_per_call`);
  - a pool of `--slots` slots (`run_pool`): a stopped row's slot takes the next
    pending row (rollout.refill_slots in a run).
Stop tokens every `--stop_every` ids of the vocabulary make the lengths ragged.
Prints tokens/s (completion tokens / best of `--iters` timed runs after a
compiling one), the pool's slot utilization and its speedup over the other two. The device suite
(benchmarks/device_suite.py, rl_step section) measures the same at RL-step scale.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import device_suite  # noqa: E402  pylint: disable=wrong-import-position

from hicra_jax.models import Decoder  # noqa: E402  pylint: disable=wrong-import-position
from hicra_jax.sampling import SamplingParams, generate_arrays, run_pool  # noqa: E402


def _best_time(fn, iters: int):
  """(the last output, the best wall time of `iters` runs after a compiling one)."""
  times = []
  for _ in range(iters + 1):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return out, min(times[1:])


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--prompts", type=int, default=32)
  ap.add_argument("--n", type=int, default=4, help="samples per prompt")
  ap.add_argument("--prompt_len", type=int, default=32)
  ap.add_argument("--new", type=int, default=512, help="max new tokens")
  ap.add_argument("--stop_every", type=int, default=64, help="every k-th token id stops a row")
  ap.add_argument("--slots", type=int, default=32, help="pool slots = rows per call")
  ap.add_argument("--iters", type=int, default=2)
  a = ap.parse_args(argv)
  config = device_suite.TINY
  model = Decoder(config, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, config.vocab_size, a.prompt_len).tolist() for _ in range(a.prompts)]
  params = SamplingParams(n=a.n, max_new_tokens=a.new, temperature=1.0,
                          stop_ids=tuple(range(7, config.vocab_size, a.stop_every)))
  key, buckets = jax.random.key(0), (a.prompt_len,)
  rows = a.prompts * a.n
  pool = f"pool of {a.slots} slots (refill)"
  cases = {  # each -> (DeviceRollout, PoolStats or None)
      f"one call of {rows} rows": lambda: (generate_arrays(model, prompts, params, key,
                                                            prompt_buckets=buckets), None),
      f"calls of {a.slots} rows": lambda: (generate_arrays(model, prompts, params, key,
                                                            prompt_buckets=buckets,
                                                            rows_per_call=a.slots), None),
      pool: lambda: run_pool(model, prompts, params, key, slots=a.slots,
                             prompt_buckets=buckets),
  }
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {rows} rows, prompt "
        f"{a.prompt_len}, up to {a.new} new tokens")
  reference, rates, stats = None, {}, None
  for name, fn in cases.items():
    (out, case_stats), seconds = _best_time(fn, a.iters)
    stats = case_stats or stats
    tokens, mask = np.asarray(out.tokens), np.asarray(out.completion_mask)
    if reference is None:
      reference = tokens
    if not np.array_equal(tokens, reference):
      raise SystemExit(f"{name}: tokens differ from the one-call sampler")
    lengths = mask.sum(axis=1)
    rates[name] = mask.sum() / seconds
    print(f"{name:32s} {rates[name]:9.0f} tokens/s  ({mask.sum()} tokens in "
          f"{seconds:.3f} s; lengths mean {lengths.mean():.0f}, max {lengths.max()})", flush=True)
  baselines = [name for name in cases if name != pool]
  print(f"pool: {stats.decode_steps} decode steps, {stats.refills} refills, {stats.segments} "
        f"segments, slot utilization {stats.utilization:.3f}; speedup "
        + ", ".join(f"x{rates[pool] / rates[b]:.2f} vs {b}" for b in baselines))


if __name__ == "__main__":
  main()
