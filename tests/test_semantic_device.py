"""`sg_conditional_entropy_jax` (on device, hashed) against the host
`sg_conditional_entropy_tokens` and a hand computation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hicra_jax.analysis.semantic import (sg_conditional_entropy_jax,
                                         sg_conditional_entropy_tokens,
                                         sg_follow_pairs_tokens)

# A few static shapes (each (shape, n) compiles once), many batches per shape.
SHAPES = [(1, 1), (1, 6), (2, 5), (4, 16), (8, 12), (6, 24)]
CASES_PER_SHAPE = 12


def _host(ids, plan, mask, n):
  return sg_conditional_entropy_tokens(ids, plan, n=n, completion_mask=mask)


def _device(ids, plan, mask, n):
  return float(sg_conditional_entropy_jax(ids, plan, mask, n=n))


def _random_case(rng, shape, case):
  """Small vocab (repeats), runs of planning, mostly prefix completion masks;
  `case` cycles through edge patterns."""
  rows, t = shape
  ids = rng.integers(0, 2 if case % 2 else 4, shape).astype(np.int32)
  density = [0.0, 0.15, 0.3, 0.5, 1.0][case % 5]
  plan = rng.random(shape) < density
  if case % 4 == 1:  # planning up to each row's last column
    plan[:, -min(t, 2):] = True
  lengths = rng.integers(0, t + 1, rows)
  mask = np.arange(t)[None, :] < lengths[:, None]
  if case % 6 == 5:  # not a prefix: holes inside the completion
    mask = rng.random(shape) < 0.8
  if case % 6 == 3:  # a run that ends right at each row's mask edge
    for r, length in enumerate(lengths):
      plan[r, max(0, length - 2):length] = True
  return ids, plan, mask


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_host_on_random_batches(shape, n):
  rng = np.random.default_rng(1000 * n + 10 * shape[0] + shape[1])
  with_pairs = positive = 0
  for case in range(CASES_PER_SHAPE):
    ids, plan, mask = _random_case(rng, shape, case)
    host = _host(ids, plan, mask, n)
    positive += host > 0
    with_pairs += bool(sg_follow_pairs_tokens(ids, plan, n=n, completion_mask=mask))
    assert _device(ids, plan, mask, n) == pytest.approx(host, abs=1e-5), (case, ids, plan,
                                                                          mask)
  if shape[1] > n:
    assert with_pairs > 0  # the cases exercise actual pairs, not only the 0.0 path
  if shape[0] * shape[1] >= 64:
    assert positive >= 3  # and SGs with several different follow-ups


def test_matches_host_with_long_runs_and_near_identical_runs():
  # Runs of 80-300 tokens (high powers of the hash base, wrapping) that differ
  # in one token only, or only in length, or that are permutations.
  rng = np.random.default_rng(7)
  t = 400
  base = rng.integers(0, 50, t).astype(np.int32)
  ids = np.tile(base, (6, 1))
  plan = np.zeros((6, t), bool)
  plan[:, 10:200] = True
  ids[1, 150] += 1                                # one token differs
  plan[2, 200] = True                             # one token longer
  ids[3, 10:200] = ids[3, 10:200][::-1]           # reversed
  ids[4, 10:200] = 0
  ids[5, 10:200] = 0
  plan[5, 199] = False                            # zeros: length decides
  ids[:, 201:210] = rng.integers(0, 2, (6, 9))    # follow-ups differ a little
  mask = np.ones_like(plan)
  for n in (1, 3):
    pairs = sg_follow_pairs_tokens(ids, plan, n=n, completion_mask=mask)
    assert len({x for x, _ in pairs}) == 6
    assert _device(ids, plan, mask, n) == pytest.approx(_host(ids, plan, mask, n), abs=1e-5)
  # Each run again in a second row with a different follow-up: H(Y | X) = ln 2.
  ids2 = np.concatenate([ids, ids])
  for r in range(6):
    end = np.flatnonzero(plan[r])[-1]
    ids2[6 + r, end + 1:end + 4] = 99
  plan2, mask2 = np.concatenate([plan, plan]), np.concatenate([mask, mask])
  host = _host(ids2, plan2, mask2, 3)
  assert host == pytest.approx(math.log(2), abs=1e-12)
  assert _device(ids2, plan2, mask2, 3) == pytest.approx(host, abs=1e-5)


def test_hand_computed():
  # n = 3; SG A = (10, 11), SG B = (12,); follow-ups a = (5, 6, 7), b = (8, 8, 8).
  # Counted pairs: (A, a) twice, (A, b), (B, a)  -> M = 4.
  # H(Y | X) = p(A) H(Y | A) + p(B) * 0 = 3/4 * H(2/3, 1/3)
  #          = 3/4 * (ln 3 - 2/3 ln 2) = 0.4773856...
  # Check: H(X, Y) = H(1/2, 1/4, 1/4) = 1.5 ln 2; H(X) = H(3/4, 1/4);
  #        1.5 ln 2 - H(3/4, 1/4) = 1.0397208 - 0.5623351 = 0.4773856.
  # Not counted: row 4's run ends 2 tokens before the row end; row 5's
  # follow-up leaves the completion mask; row 6's planning is outside it;
  # row 0's second run (12) at the very end of the row.
  ids = np.array([
      [10, 11, 5, 6, 7, 0, 0, 12],
      [1, 10, 11, 5, 6, 7, 0, 0],
      [10, 11, 8, 8, 8, 3, 3, 3],
      [12, 5, 6, 7, 1, 1, 1, 1],
      [1, 1, 1, 1, 10, 11, 5, 6],
      [10, 11, 5, 6, 7, 0, 0, 0],
      [1, 1, 1, 12, 8, 8, 8, 0],
  ], np.int32)
  plan = np.isin(ids, [10, 11, 12])
  mask = np.ones_like(plan)
  mask[5, 4:] = False
  mask[6, 3:] = False
  hand = 0.75 * (math.log(3) - 2 / 3 * math.log(2))
  assert hand == pytest.approx(1.5 * math.log(2) + (0.75 * math.log(0.75) +
                                                    0.25 * math.log(0.25)), abs=1e-12)
  assert hand == pytest.approx(0.4773856, abs=1e-7)
  assert _host(ids, plan, mask, 3) == pytest.approx(hand, abs=1e-12)
  out = sg_conditional_entropy_jax(ids, plan, mask, n=3)
  assert out.shape == () and out.dtype == jnp.float32
  assert float(out) == pytest.approx(hand, abs=1e-6)
  # n = 1: follow-ups (5), (5), (8), (5) plus rows 4 and 5 (5), (5): A -> 5,5,8,5,5, B -> 5.
  # H = 5/6 * H(4/5, 1/5).
  hand1 = 5 / 6 * -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
  assert _host(ids, plan, mask, 1) == pytest.approx(hand1, abs=1e-12)
  assert float(sg_conditional_entropy_jax(ids, plan, mask, n=1)) == pytest.approx(hand1,
                                                                                   abs=1e-6)


def test_no_pairs_is_zero_and_none_mask_means_all_valid():
  ids = np.arange(12, dtype=np.int32).reshape(2, 6)
  none = np.zeros((2, 6), bool)
  mask = np.ones((2, 6), bool)
  assert float(sg_conditional_entropy_jax(ids, none, mask)) == 0.0
  plan = none.copy()
  plan[:, 4:] = True  # runs too close to the row end for n = 3
  assert float(sg_conditional_entropy_jax(ids, plan, mask, n=3)) == 0.0
  plan = none.copy()
  plan[0, 0] = plan[1, 0] = True
  ids[1, 0] = ids[0, 0]  # same SG, different follow-ups: ln 2
  assert float(sg_conditional_entropy_jax(ids, plan, None, n=2)) == pytest.approx(
      math.log(2), abs=1e-6)
  assert float(sg_conditional_entropy_jax(ids, plan, mask, n=2)) == pytest.approx(
      math.log(2), abs=1e-6)


def test_composes_under_an_outer_jit():
  rng = np.random.default_rng(3)
  ids, plan, mask = _random_case(rng, (3, 9), 2)

  @jax.jit
  def outer(i, p, m):
    return sg_conditional_entropy_jax(i, p, m, n=2) * 2.0

  assert float(outer(ids, plan, mask)) == pytest.approx(2 * _host(ids, plan, mask, 2), abs=2e-5)


def test_rejects_bad_n():
  with pytest.raises(ValueError, match="n = 0"):
    sg_conditional_entropy_jax(np.zeros((1, 3), np.int32), np.zeros((1, 3), bool), None, n=0)
