"""hicra_jax.rl filters: DAPO dynamic sampling and overlong treatments, by hand."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from hicra_jax import rl


def test_dynamic_sampling_drops_groups_of_equal_rewards():
  rewards = np.array([1, 1, 1,  0, 1, 0,  0, 0, 0,  0.5, 0.5, 0.5000001], np.float32)
  np.testing.assert_array_equal(
      rl.dynamic_sampling_mask(rewards, 3),
      [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3)
  np.testing.assert_array_equal(
      rl.dynamic_sampling_mask(rewards, 3, atol=1e-3),
      [False] * 3 + [True] * 3 + [False] * 3 + [False] * 3)


@given(st.sampled_from([(2, 2), (3, 4)]), st.data())
def test_property_kept_groups_are_exactly_those_with_nonzero_advantages(shape, data):
  p, g = shape
  rewards = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=p * g,
                                        max_size=p * g)), np.float32)
  keep = np.asarray(rl.dynamic_sampling_mask(rewards, g))
  adv = np.asarray(rl.grpo_advantages(rewards, g)).reshape(p, g)
  np.testing.assert_array_equal(keep.reshape(p, g), np.repeat(
      np.any(adv != 0, axis=1, keepdims=True), g, axis=1))


def test_soft_overlong_penalty_by_hand():
  # L = 10, C = 4: 0 up to 6 tokens, then -(|y| - 6) / 4 down to -1 at 10; -1 beyond.
  lengths = np.array([0, 6, 7, 8, 10, 11])
  np.testing.assert_allclose(rl.soft_overlong_penalty(lengths, 10, 4),
                             [0, 0, -0.25, -0.5, -1.0, -1.0])
  np.testing.assert_allclose(rl.soft_overlong_penalty(lengths, 10, 10),
                             [0, -0.6, -0.7, -0.8, -1.0, -1.0])


REWARDS = np.array([1.0, 0.0, 1.0], np.float32)
MASK = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                 [1, 1, 1, 1, 1, 0, 0, 0],
                 [1, 1, 1, 1, 1, 1, 1, 0]], bool)
TRUNCATED = np.array([True, False, False])


def test_overlong_modes_by_hand():
  r, m = rl.overlong_shaping(REWARDS, MASK, TRUNCATED)
  np.testing.assert_array_equal(r, REWARDS)
  np.testing.assert_array_equal(m, MASK)
  r, m = rl.overlong_shaping(REWARDS, MASK, TRUNCATED, mode="mask")
  np.testing.assert_array_equal(r, REWARDS)
  np.testing.assert_array_equal(m, np.concatenate([np.zeros((1, 8), bool), MASK[1:]]))
  # max_length 8, cache 4: lengths 8, 5, 7 -> penalties -1, -0.25, -0.75.
  r, m = rl.overlong_shaping(REWARDS, MASK, mode="soft_penalty", max_length=8, cache_length=4)
  np.testing.assert_allclose(r, [0.0, -0.25, 0.25])
  np.testing.assert_array_equal(m, MASK)


def test_masked_overlong_rows_leave_the_loss():
  _, m = rl.overlong_shaping(REWARDS, MASK, TRUNCATED, mode="mask")
  lp = np.zeros((3, 8), np.float32)
  loss, metrics = rl.policy_loss(lp, lp, np.array([100.0, 1.0, 3.0], np.float32), m)
  # Ratio 1 everywhere: token-mean of -A over the 5 + 7 remaining tokens.
  np.testing.assert_allclose(loss, -(5 * 1.0 + 7 * 3.0) / 12, rtol=1e-6)
  assert float(metrics["loss_denominator"]) == 12


def test_filters_jit_match_eager():
  f = functools.partial(rl.overlong_shaping, mode="soft_penalty", max_length=8, cache_length=4)
  for a, b in zip(jax.jit(f)(REWARDS, MASK), f(REWARDS, MASK)):
    np.testing.assert_array_equal(a, b)
  g = functools.partial(rl.dynamic_sampling_mask, group_size=3)
  np.testing.assert_array_equal(jax.jit(g)(REWARDS), g(REWARDS))
  np.testing.assert_array_equal(rl.completion_lengths(MASK), [8, 5, 7])


@pytest.mark.parametrize("fn, match", [
    (lambda: rl.dynamic_sampling_mask(np.zeros(4), 3), r"group_size=3 does not divide .* N=4"),
    (lambda: rl.dynamic_sampling_mask(np.zeros((2, 2)), 2), r"rewards must have shape \[N\]"),
    (lambda: rl.dynamic_sampling_mask(np.zeros(4), 2, atol=-1.0),
     r"atol must lie in \[0, inf\]"),
    (lambda: rl.soft_overlong_penalty(np.zeros(3), 4, 8),
     r"cache_length must be <= max_length=4, got 8"),
    (lambda: rl.soft_overlong_penalty(np.zeros(3), 4.0, 2),
     r"max_length must be a positive Python int"),
    (lambda: rl.soft_overlong_penalty(np.zeros(3), 4, 0),
     r"cache_length must be a positive Python int"),
    (lambda: rl.overlong_shaping(REWARDS, MASK, mode="clip"),
     r"overlong mode='clip' is not supported"),
    (lambda: rl.overlong_shaping(REWARDS, MASK, mode="mask"),
     r"needs truncated of shape \[N\]"),
    (lambda: rl.overlong_shaping(REWARDS, MASK, TRUNCATED[:2], mode="mask"),
     r"truncated must have shape \[N\] = \(3,\), got shape \(2,\)"),
    (lambda: rl.overlong_shaping(REWARDS, MASK, mode="soft_penalty"),
     r"needs max_length and cache_length"),
    (lambda: rl.overlong_shaping(REWARDS[:2], MASK), r"completion_mask must have N=2 rows"),
])
def test_filter_errors(fn, match):
  with pytest.raises(ValueError, match=match):
    fn()
