"""analysis.fork_overlap against a naive numpy ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hicra_jax.analysis import fork_overlap


def naive(entropy, planning, mask, q):
  values = sorted(entropy[mask].tolist(), reverse=True)
  if not values:
    return 0.0, 0.0
  threshold = values[max(math.ceil(q * len(values)), 1) - 1]
  top = mask & (entropy >= threshold)
  plan = mask & planning
  both = (top & plan).sum()
  return (both / top.sum() if top.sum() else 0.0, both / plan.sum() if plan.sum() else 0.0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("q", [0.2, 0.5, 1.0])
def test_fork_overlap_matches_a_naive_ranking(seed, q):
  rng = np.random.default_rng(seed)
  entropy = rng.random((6, 10)).astype(np.float32)
  entropy[0, :3] = 0.5  # ties at the threshold count as top tokens
  planning = rng.random((6, 10)) < 0.3
  mask = np.arange(10)[None] < rng.integers(0, 11, 6)[:, None]
  got = [float(x) for x in fork_overlap(entropy, planning, mask, quantile=q)]
  np.testing.assert_allclose(got, naive(entropy, planning, mask, q), atol=1e-6)


def test_fork_overlap_hand_case_and_empty_inputs():
  entropy = np.array([[0.9, 0.1, 0.8, 0.2, 0.3]], np.float32)
  planning = np.array([[True, True, False, False, False]])
  mask = np.ones((1, 5), bool)
  # top 40% of 5 tokens = 2 tokens {0.9, 0.8}; 1 of them planning; 1 of 2 planning on top.
  np.testing.assert_allclose(fork_overlap(entropy, planning, mask, quantile=0.4), [0.5, 0.5])
  np.testing.assert_allclose(fork_overlap(entropy, planning, ~mask), [0.0, 0.0])
  np.testing.assert_allclose(fork_overlap(entropy, planning & False, mask), [0.0, 0.0])
  with pytest.raises(ValueError, match="quantile"):
    fork_overlap(entropy, planning, mask, quantile=0.0)
