"""Cost of the training-dynamics metrics per RL step (issue 14), against the step time.

What the metrics add to a step, timed separately at the quickstart's shapes
(SmolLM2-135M-Instruct: D = 576, V = 49152; 16 rows x 128 completion tokens):
  1. the update's raw-policy (temperature 1) log-probs and entropies: the
     chunked head with `raw=True` vs `raw=False`, forward + backward;
  2. the sampler's raw entropy per decode step (a log-softmax over V per row),
     x the number of decode steps;
  3. `step_metrics.dynamics`: fork overlap, the SG conditional entropy, the
     semantic entropy (jitted, on device).
The sum is compared with the step time (default: the quickstart's measured
35.6 s/step on this 2-core CPU; pass --step_s). Target: < 2% of the step.

  python benchmarks/dynamics_overhead.py
  python benchmarks/dynamics_overhead.py --rows 512 --tokens 4096 --step_s 120
"""

from __future__ import annotations

import argparse
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax.models.logprobs import token_logprobs_and_entropy
from hicra_jax.sampling.sampler import raw_entropy
from hicra_jax.train import step_metrics

TARGET = 0.02


def median_s(fn, *args, iters: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=16)
  parser.add_argument("--tokens", type=int, default=128)
  parser.add_argument("--hidden", type=int, default=576)
  parser.add_argument("--vocab", type=int, default=49152)
  parser.add_argument("--step_s", type=float, default=35.6)
  parser.add_argument("--iters", type=int, default=5)
  args = parser.parse_args()
  n, t, d, v = args.rows, args.tokens, args.hidden, args.vocab
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.standard_normal((n, t, d)), jnp.float32)
  head = jnp.asarray(rng.standard_normal((d, v)) * 0.02, jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, (n, t)), jnp.int32)

  def head_loss(raw):
    def loss(h, w):
      return token_logprobs_and_entropy(h, w, targets, 0.6, raw=raw)[0].sum()
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  with_raw = median_s(head_loss(True), hidden, head, iters=args.iters)
  without = median_s(head_loss(False), hidden, head, iters=args.iters)
  logits = jnp.asarray(rng.standard_normal((n, v)), jnp.float32)
  entropy_step = median_s(jax.jit(raw_entropy), logits, iters=args.iters)
  sampler_s = entropy_step * t

  planning = jnp.asarray(rng.random((n, t)) < 0.1)
  mask = jnp.asarray(np.arange(t)[None] < rng.integers(t // 2, t + 1, n)[:, None])
  rollouts = types.SimpleNamespace(
      tokens_NxT=jnp.asarray(rng.integers(0, 64, (n, t)), jnp.int32), loss_mask_NxT=mask,
      entropy_NxT=jnp.asarray(rng.random((n, t)), jnp.float32))
  counts = jnp.asarray(rng.integers(0, 3, (n, 128)), jnp.int32)
  dynamics_s = median_s(lambda: step_metrics.dynamics(
      rollouts, planning, counts, fork_quantile=0.2, follow_ngram=3), iters=args.iters)

  head_extra = max(with_raw - without, 0.0)
  total = head_extra + sampler_s + dynamics_s
  print(f"device {jax.devices()[0].platform}, rows {n} x tokens {t}, D {d}, V {v}")
  print(f"  update head fwd+bwd: raw {with_raw * 1e3:.1f} ms vs without {without * 1e3:.1f} ms"
        f" -> +{head_extra * 1e3:.1f} ms")
  print(f"  sampler raw entropy: {entropy_step * 1e3:.3f} ms/decode step x {t} = "
        f"{sampler_s * 1e3:.1f} ms")
  print(f"  dynamics (fork overlap, SG conditional entropy, semantic entropy): "
        f"{dynamics_s * 1e3:.1f} ms")
  share = total / args.step_s
  print(f"total {total * 1e3:.1f} ms = {100 * share:.2f}% of a {args.step_s:.1f} s step; "
        f"target < {100 * TARGET:.0f}%: ratio {share / TARGET:.2f} "
        f"({'met' if share < TARGET else 'NOT met'})")


if __name__ == "__main__":
  main()
