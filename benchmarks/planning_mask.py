"""Planning mask + SG counts throughput on device (issue 3).

Times `planning_mask_and_counts` (mask bool[N, T] and counts i32[N, S] in one
jitted call) and `planning_mask` alone, for the paper's SG set and the Qwen3
tokenizer, on token batches made of real math text (MATH500 / GSM8K solutions
tiled to the batch size; each row padded at a random length >= T/2 through the
completion mask). Target on one H100: <= 5 ms for 512 x 4096.

  python benchmarks/planning_mask.py                       # 512x4096 and 128x16384
  python benchmarks/planning_mask.py --shapes 64x4096 --iters 3
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax import assets
from hicra_jax.data.jsonl import read_jsonl
from hicra_jax.models import load_tokenizer
from hicra_jax.planning import SGTrie, planning_mask, planning_mask_and_counts


def corpus_ids(tokenizer, data_dir: str) -> np.ndarray:
  """Token ids of real solutions (MATH500 + GSM8K train), or of the SG list as a fallback."""
  texts = []
  for path in ("math500/math500_test.jsonl", "gsm8k/gsm8k_train.jsonl"):
    full = os.path.join(data_dir, path)
    if os.path.isfile(full):
      texts += [row["solution"] for row in read_jsonl(full)]
  if not texts:
    from hicra_jax.planning import load_strategic_grams  # pylint: disable=import-outside-toplevel
    texts = [f"Step {i}: we compute x = {i}. " + g for i, g in enumerate(
        load_strategic_grams("paper"))]
  ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
  return np.concatenate([np.asarray(r, np.int32) for r in ids if r])


def time_fn(fn, *args, iters: int) -> tuple[float, float, object]:
  """(compile + first call seconds, median seconds per call, the first call's output)."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, sorted(times)[len(times) // 2], out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="512x4096,128x16384", help="NxT,NxT,...")
  parser.add_argument("--tokenizer", default=None, help="tokenizer path (default: Qwen3)")
  parser.add_argument("--grams", default="paper")
  parser.add_argument("--trie", default=None, help="load this SGTrie file instead of building")
  parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                     "shared", "data"))
  parser.add_argument("--iters", type=int, default=10)
  args = parser.parse_args()

  tok = load_tokenizer(args.tokenizer or assets.qwen3_tokenizer_dir())
  start = time.perf_counter()
  trie = SGTrie.load(args.trie) if args.trie else SGTrie.build(args.grams, tok)
  build_s = time.perf_counter() - start
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  print(f"trie: {trie!r}; {'loaded' if args.trie else 'built'} in {build_s:.1f}s")
  ids = corpus_ids(tok, args.data)
  rng = np.random.default_rng(0)
  rows = []
  for shape in args.shapes.split(","):
    n, t = (int(x) for x in shape.lower().split("x"))
    reps = -(-n * t // len(ids))
    tokens = np.tile(ids, reps)[:n * t].reshape(n, t)
    lengths = rng.integers(t // 2, t + 1, size=n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    tokens_d, mask_d = jax.device_put(tokens), jax.device_put(mask)
    first, both, (m, c) = time_fn(planning_mask_and_counts, tokens_d, trie, mask_d,
                                  iters=args.iters)
    _, mask_only, _ = time_fn(planning_mask, tokens_d, trie, mask_d, iters=args.iters)
    frac = float(jnp.sum(m)) / float(mask.sum())
    rows.append((f"{n}x{t}", both, mask_only, n * t / both, first, frac, int(jnp.sum(c))))
  print("| batch | mask+counts | mask only | tokens/s | compile+first | planning tokens "
        "| occurrences |")
  print("|---|---|---|---|---|---|---|")
  for shape, both, mask_only, tps, first, frac, occ in rows:
    print(f"| {shape} | {both * 1e3:.1f} ms | {mask_only * 1e3:.1f} ms | {tps / 1e6:.1f}M | "
          f"{first:.1f} s | {frac:.2%} | {occ} |")


if __name__ == "__main__":
  main()
