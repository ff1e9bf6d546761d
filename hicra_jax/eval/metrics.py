"""Accuracy metrics of sampled evaluation: avg@k and the unbiased pass@k estimator.

Pure functions on numpy arrays; `rewards_PxG` holds the G sampled rewards (the k
of avg@k) of each of P problems (row p = problem p). A sample is correct when its
reward is >= `threshold` (1.0 for the paper's binary strict matching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased estimator of pass@k from n samples of which c are correct.

  pass@k = 1 - C(n - c, k) / C(n, k): the probability that a random k-subset of
  the n samples holds at least one correct sample (Chen et al. 2021). Computed as
  1 - prod_{i = n - c + 1}^{n} (1 - k / i), which is exact for the integers and
  stable for large n.

  Args:
    n: samples drawn (>= 1).
    c: correct samples (0 <= c <= n).
    k: the k of pass@k (1 <= k <= n).

  Returns:
    The estimate in [0, 1]; 1.0 when n - c < k.

  Raises:
    ValueError: arguments out of range.
  """
  for name, value in (("n", n), ("c", c), ("k", k)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{name} must be an int, got {value!r}")
  if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"need n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def correct_counts(rewards_PxG: np.ndarray, threshold: float = 1.0) -> np.ndarray:
  """i64[P] number of correct samples per problem."""
  rewards_PxG = _check_rewards(rewards_PxG)
  return np.sum(rewards_PxG >= threshold, axis=1).astype(np.int64)


def avg_at_k(rewards_PxG: np.ndarray) -> float:
  """avg@k: the mean reward over the k samples of each problem, averaged over problems.

  With binary rewards this is the accuracy (pass@1 estimated from k samples),
  the paper's "Pass@1 averaged over k samples".
  """
  rewards_PxG = _check_rewards(rewards_PxG)
  return float(np.mean(np.mean(rewards_PxG.astype(np.float64), axis=1)))


def mean_pass_at_k(rewards_PxG: np.ndarray, k: int, threshold: float = 1.0) -> float:
  """The unbiased pass@k averaged over problems (every problem has the same n)."""
  counts = correct_counts(rewards_PxG, threshold)
  n = rewards_PxG.shape[1]
  return float(np.mean([pass_at_k(n, int(c), k) for c in counts]))


def default_pass_ks(n: int) -> list[int]:
  """The k values reported for n samples: powers of two below n, and n."""
  ks = [1 << i for i in range(max(n, 1).bit_length()) if (1 << i) < n]
  return ks + [n]


def accuracy_metrics(rewards_PxG: np.ndarray, ks: Sequence[int] | None = None,
                     threshold: float = 1.0) -> dict:
  """avg@k and pass@k of one benchmark.

  Args:
    rewards_PxG: f32[P, G] rewards, G = k samples per problem (P >= 1, G >= 1).
    ks: the pass@k values to report (default `default_pass_ks(k)`).
    threshold: reward at or above which a sample counts as correct.

  Returns:
    {"avg_at_k": float, "pass_at_k": {str(k): float}, "num_problems": P,
     "samples_per_problem": k, "num_correct": int}.
  """
  rewards_PxG = _check_rewards(rewards_PxG)
  n = rewards_PxG.shape[1]
  ks = default_pass_ks(n) if ks is None else sorted(set(int(k) for k in ks))
  if any(not 1 <= k <= n for k in ks):
    raise ValueError(f"pass@k needs 1 <= k <= {n} (samples per problem), got ks={ks}")
  return {
      "avg_at_k": avg_at_k(rewards_PxG),
      "pass_at_k": {str(k): mean_pass_at_k(rewards_PxG, k, threshold) for k in ks},
      "num_problems": int(rewards_PxG.shape[0]),
      "samples_per_problem": int(n),
      "num_correct": int(np.sum(correct_counts(rewards_PxG, threshold))),
  }


def _check_rewards(rewards_PxG) -> np.ndarray:
  rewards_PxG = np.asarray(rewards_PxG)
  if rewards_PxG.ndim != 2 or rewards_PxG.shape[0] < 1 or rewards_PxG.shape[1] < 1:
    raise ValueError(f"rewards must have shape [P, k] with P, k >= 1, got {rewards_PxG.shape}")
  return rewards_PxG


def comb_pass_at_k(n: int, c: int, k: int) -> float:
  """pass@k by its definition with binomial coefficients (exact; for tests and small n)."""
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)
