"""hicra_jax.rl advantages: GRPO/RLOO, HICRA and its variants, against hand-computed values."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hicra_jax import rl

# Two groups of G = 4: [1, 0, 0, 1] (mean 0.5) and [3, 1, 2, 2] (mean 2).
REWARDS = np.array([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0], np.float32)
EPS = 1e-6


# ---- grpo_advantages ------------------------------------------------------------------------

def test_grpo_is_reward_minus_group_mean():
  got = rl.grpo_advantages(REWARDS, 4)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, [0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0], atol=1e-7)


def test_rloo_is_reward_minus_mean_of_the_others():
  got = rl.grpo_advantages(REWARDS, 4, estimator="rloo")
  # 1 - (0+0+1)/3, 0 - (1+0+1)/3; 3 - (1+2+2)/3, 1 - (3+2+2)/3, 2 - (3+1+2)/3.
  want = [2 / 3, -2 / 3, -2 / 3, 2 / 3, 4 / 3, -4 / 3, 0.0, 0.0]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_group_std_scale_uses_unbiased_group_std():
  got = rl.grpo_advantages(REWARDS, 4, scale="group_std")
  s1 = np.sqrt((4 * 0.25) / 3)  # ddof=1 std of [1, 0, 0, 1]
  s2 = np.sqrt((1 + 1 + 0 + 0) / 3)  # ddof=1 std of [3, 1, 2, 2]
  want = [0.5 / (s1 + EPS), -0.5 / (s1 + EPS), -0.5 / (s1 + EPS), 0.5 / (s1 + EPS),
          1 / (s2 + EPS), -1 / (s2 + EPS), 0.0, 0.0]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_batch_std_scale_divides_group_centred_rewards_by_batch_std():
  got = rl.grpo_advantages(REWARDS, 4, scale="batch_std")
  # mean 1.25; squared deviations sum to 7.5 over 8 rewards -> ddof=1 variance 7.5 / 7.
  s = np.sqrt(7.5 / 7)
  want = np.array([0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0]) / (s + EPS)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_rloo_with_group_std_and_equal_rewards():
  got = rl.grpo_advantages(np.array([2.0, 2.0, 5.0, 1.0]), 2, estimator="rloo",
                           scale="group_std")
  # group 1: all equal -> 0; group 2: 5 - 1 = 4, std([5, 1], ddof=1) = sqrt(8).
  np.testing.assert_allclose(got, [0, 0, 4 / (np.sqrt(8) + EPS), -4 / (np.sqrt(8) + EPS)],
                             rtol=1e-6)


def test_group_size_one_gives_zero_grpo_advantages():
  np.testing.assert_array_equal(rl.grpo_advantages(REWARDS, 1), np.zeros(8))


def test_grpo_jit_matches_eager():
  for estimator in rl.ESTIMATORS:
    for scale in rl.SCALES:
      f = functools.partial(rl.grpo_advantages, group_size=4, estimator=estimator, scale=scale)
      np.testing.assert_allclose(jax.jit(f)(REWARDS), f(REWARDS), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rewards=np.zeros((2, 4)), group_size=4),
     r"rewards must have shape \[N\], got shape \(2, 4\)"),
    (dict(rewards=np.zeros(6), group_size=4), r"group_size=4 does not divide .* N=6"),
    (dict(rewards=np.zeros(6), group_size=0), r"group_size must be >= 1, got 0"),
    (dict(rewards=np.zeros(6), group_size=2.0), r"group_size must be a Python int"),
    (dict(rewards=np.zeros(6), group_size=1, estimator="rloo"), r"group_size must be >= 2"),
    (dict(rewards=np.zeros(6), group_size=1, scale="group_std"), r"group_size must be >= 2"),
    (dict(rewards=np.zeros(1), group_size=1, scale="batch_std"), r"at least 2 rows"),
    (dict(rewards=np.zeros(4), group_size=2, estimator="ppo"), r"estimator='ppo' is not supported"),
    (dict(rewards=np.zeros(4), group_size=2, scale="std"), r"scale='std' is not supported"),
])
def test_grpo_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rl.grpo_advantages(**kwargs)


def test_grpo_errors_under_jit():
  with pytest.raises(ValueError, match="does not divide"):
    jax.jit(functools.partial(rl.grpo_advantages, group_size=4))(jnp.zeros(6))


@given(st.sampled_from([(1, 2), (3, 2), (2, 4), (3, 5)]), st.sampled_from(rl.ESTIMATORS),
       st.data())
def test_property_group_advantages_sum_to_zero(shape, estimator, data):
  p, g = shape
  rewards = np.array(data.draw(st.lists(
      st.floats(-100, 100, width=32, allow_subnormal=False), min_size=p * g, max_size=p * g)),
      np.float32)
  adv = np.asarray(rl.grpo_advantages(rewards, g, estimator=estimator), np.float64)
  scale = 1.0 + np.abs(rewards).max()
  np.testing.assert_allclose(adv.reshape(p, g).sum(axis=1), 0.0, atol=1e-5 * scale * g)
  # Equal rewards within a group give exactly zero advantages there.
  const = np.repeat(rewards[::g], g)
  np.testing.assert_array_equal(rl.grpo_advantages(const, g, estimator=estimator), 0.0)


# ---- hicra_advantages -----------------------------------------------------------------------

ADV = np.array([0.5, -0.5, 2.0], np.float32)
PLAN = np.array([[1, 0, 1, 0],
                 [0, 1, 1, 0],
                 [0, 0, 0, 1]], bool)
COMP = np.array([[1, 1, 1, 1],
                 [1, 1, 1, 0],
                 [1, 1, 0, 0]], bool)


def test_hicra_paper_formula_by_hand():
  got = rl.hicra_advantages(ADV, PLAN, alpha=0.2)
  want = [[0.6, 0.5, 0.6, 0.5],    # A = 0.5 > 0: planning tokens get 1.2 A
          [-0.5, -0.4, -0.4, -0.5],  # A = -0.5 < 0: planning tokens get 0.8 A
          [2.0, 2.0, 2.0, 2.4]]
  assert got.shape == (3, 4) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hicra_completion_mask_zeroes_outside():
  got = rl.hicra_advantages(ADV, PLAN, 0.2, COMP)
  want = [[0.6, 0.5, 0.6, 0.5],
          [-0.5, -0.4, -0.4, 0.0],
          [2.0, 2.0, 0.0, 0.0]]  # the planning token at (2, 3) is padding
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hicra_positive_and_negative_factors_exact():
  # Powers of two: (1 + alpha) A and (1 - alpha) A are exact in float32.
  adv = np.array([[4.0, -4.0, 0.0]], np.float32)
  got = rl.hicra_advantages(adv, np.ones((1, 3), bool), alpha=0.25)
  np.testing.assert_array_equal(got, [[5.0, -3.0, 0.0]])


def test_hicra_token_level_advantages():
  adv = np.array([[1.0, -2.0, 3.0], [-1.0, 0.5, 0.0]], np.float32)
  plan = np.array([[1, 1, 0], [1, 0, 1]], bool)
  got = rl.hicra_advantages(adv, plan, alpha=0.5)
  np.testing.assert_allclose(got, [[1.5, -1.0, 3.0], [-0.5, 0.5, 0.0]], rtol=1e-6)


def test_hicra_reduces_to_grpo():
  grpo = rl.grpo_advantages(REWARDS, 4)
  plan = np.random.default_rng(0).random((8, 5)) < 0.5
  want = np.broadcast_to(np.asarray(grpo)[:, None], (8, 5))
  np.testing.assert_array_equal(rl.hicra_advantages(grpo, plan, alpha=0.0), want)
  np.testing.assert_array_equal(rl.hicra_advantages(grpo, np.zeros((8, 5), bool)), want)


def test_hicra_traced_alpha_under_jit():
  f = jax.jit(lambda a, p, alpha, c: rl.hicra_advantages(a, p, alpha, c))
  np.testing.assert_allclose(f(ADV, PLAN, 0.2, COMP), rl.hicra_advantages(ADV, PLAN, 0.2, COMP))


@given(st.booleans(), st.floats(0.0, 1.0), st.data())
def test_property_hicra_never_flips_sign(token_level, alpha, data):
  shape = (3, 4)
  n = 12 if token_level else 3
  a = np.array(data.draw(st.lists(st.floats(-1e6, 1e6, width=32, allow_subnormal=False),
                                  min_size=n, max_size=n)), np.float32)
  a = a.reshape(shape) if token_level else a
  plan = np.array(data.draw(st.lists(st.booleans(), min_size=12, max_size=12))).reshape(shape)
  out = np.asarray(rl.hicra_advantages(a, plan, alpha))
  a2 = np.broadcast_to(a if token_level else a[:, None], shape)
  assert np.all(out * a2 >= 0)  # same sign (or zero when alpha = 1 and A < 0)
  np.testing.assert_array_equal(out[~plan], a2[~plan])  # execution tokens untouched
  # |HICRA| = (1 +- alpha) |A| up to float32 rounding of A + alpha |A| (absolute, ~eps |A|).
  mag, tol = np.abs(a2[plan]).astype(np.float64), 1e-6 * np.abs(a2[plan])
  assert np.all(np.abs(out[plan]) <= (1 + alpha) * mag + tol)
  assert np.all(np.abs(out[plan]) >= (1 - alpha) * mag - tol)


# ---- variants -------------------------------------------------------------------------------

ENT = np.array([[0.1, 0.9, 0.5, 0.7, 0.3],
                [0.4, 0.4, 0.2, 0.8, 9.0],
                [1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
ENT_MASK = np.array([[1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0],
                     [0, 0, 0, 0, 0]], bool)


def test_fork_token_mask_by_hand():
  got = rl.fork_token_mask(ENT, ENT_MASK, 0.3)
  # row 0: L=5, k=round(1.5)=2 -> entropies 0.9 and 0.7; row 1: L=4, k=round(1.2)=1 -> 0.8
  # (9.0 is padding); row 2: no completion tokens.
  want = [[0, 1, 0, 1, 0],
          [0, 0, 0, 1, 0],
          [0, 0, 0, 0, 0]]
  np.testing.assert_array_equal(got, np.array(want, bool))


def test_fork_token_mask_ties_go_to_earlier_position():
  got = rl.fork_token_mask(ENT, ENT_MASK, 0.5)
  # row 0: k=round(2.5)=3 -> 0.9, 0.7, 0.5; row 1: k=2 -> 0.8 then the first of the two 0.4s.
  want = [[0, 1, 1, 1, 0],
          [1, 0, 0, 1, 0],
          [0, 0, 0, 0, 0]]
  np.testing.assert_array_equal(got, np.array(want, bool))
  np.testing.assert_array_equal(rl.fork_token_mask(ENT, ENT_MASK, 1.0), ENT_MASK)
  np.testing.assert_array_equal(rl.fork_token_mask(ENT, ENT_MASK, 0.0), np.zeros((3, 5), bool))


def test_hicra_fork_and_union_variants():
  adv = np.array([1.0, -1.0, 1.0], np.float32)
  plan = np.zeros((3, 5), bool)
  plan[0, 0] = plan[1, 4] = True  # (1, 4) is padding
  fork = rl.hicra_advantages(adv, None, 0.5, ENT_MASK, amplify="fork", entropy=ENT)
  want_fork = [[1.0, 1.5, 1.0, 1.5, 1.0],
               [-1.0, -1.0, -1.0, -0.5, 0.0],
               [0.0, 0.0, 0.0, 0.0, 0.0]]
  np.testing.assert_allclose(fork, want_fork, rtol=1e-6)
  union = rl.hicra_advantages(adv, plan, 0.5, ENT_MASK, amplify="planning_or_fork", entropy=ENT)
  want_union = np.array(want_fork)
  want_union[0, 0] = 1.5
  np.testing.assert_allclose(union, want_union, rtol=1e-6)


def test_hicra_gated_variant_by_hand():
  # Two groups of 3. Lengths: [4, 2, 3] (mean 3) and [5, 5, 2] (mean 4).
  comp = np.zeros((6, 5), bool)
  for i, length in enumerate([4, 2, 3, 5, 5, 2]):
    comp[i, :length] = True
  adv = np.array([1.0, 1.0, -2.0, 2.0, -1.0, -1.0], np.float32)
  plan = np.ones((6, 5), bool)
  got = rl.hicra_advantages(adv, plan, 0.5, comp, gate="correct_and_longer", group_size=3)
  # Amplified rows: 0 (A>0, 4>3) and 3 (A>0, 5>4). Row 1 is correct but short, row 4 long
  # but wrong, row 2 wrong.
  factor = np.array([1.5, 1, 1, 1.5, 1, 1])
  want = np.where(comp, (adv * factor)[:, None], 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # An explicit `correct` overrides the advantage sign: row 4 now amplified as a negative A.
  correct = np.array([1, 0, 0, 0, 1, 0], bool)
  got = rl.hicra_advantages(adv, plan, 0.5, comp, gate="correct_and_longer", group_size=3,
                            correct=correct)
  factor = np.array([1.5, 1, 1, 1, 0.5, 1])
  np.testing.assert_allclose(got, np.where(comp, (adv * factor)[:, None], 0.0), rtol=1e-6)


def test_hicra_gated_with_token_level_advantages_uses_masked_row_mean():
  comp = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  # Row 0 token mean over the completion = (3 - 1 - 1) / 3 > 0 (padding value -100 ignored).
  adv = np.array([[3.0, -1.0, -1.0, -100.0], [5.0, 5.0, 5.0, 5.0]], np.float32)
  got = rl.hicra_advantages(adv, np.ones((2, 4), bool), 0.5, comp, gate="correct_and_longer",
                            group_size=2)
  np.testing.assert_allclose(got, [[4.5, -0.5, -0.5, 0.0], [5.0, 0.0, 0.0, 0.0]], rtol=1e-6)


def test_longer_than_group_mean():
  np.testing.assert_array_equal(rl.longer_than_group_mean(np.array([1, 2, 3, 7, 7, 7]), 3),
                                [False, False, True, False, False, False])


def test_hicra_variants_jit_match_eager():
  comp = np.array(ENT_MASK)
  comp[2, :2] = True
  f = functools.partial(rl.hicra_advantages, amplify="planning_or_fork",
                        gate="correct_and_longer", group_size=3)
  args = (np.array([1.0, -1.0, 1.0], np.float32), ENT > 0.45, 0.2, comp)
  np.testing.assert_allclose(jax.jit(lambda *a: f(*a, entropy=ENT))(*args), f(*args, entropy=ENT))


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.zeros((3, 4, 1)), PLAN), {},
     r"advantages must have shape \[N\] or \[N, T\], got shape \(3, 4, 1\)"),
    ((np.zeros(2), PLAN), {},
     r"advantages of shape \[N\] must have N=3 rows .* got shape \(2,\)"),
    ((np.zeros((3, 5)), PLAN), {},
     r"advantages must have shape \[N, T\] like planning_mask = \(3, 4\), got shape \(3, 5\)"),
    ((ADV, PLAN, 0.2, COMP[:, :3]), {}, r"completion_mask must have shape .* got shape \(3, 3\)"),
    ((ADV, PLAN[0]), {}, r"planning_mask must have shape \[N, T\], got shape \(4,\)"),
    ((ADV, PLAN.astype(np.float32)), {}, r"planning_mask must be a bool"),
    ((ADV, None), {}, r"planning_mask is required for amplify='planning'"),
    ((ADV, PLAN, 1.5), {}, r"alpha must lie in \[0, 1\], got 1.5"),
    ((ADV, PLAN, -0.1), {}, r"alpha must lie in \[0, 1\], got -0.1"),
    ((ADV, PLAN), dict(amplify="sg"), r"amplify='sg' is not supported"),
    ((ADV, PLAN), dict(gate="long"), r"gate='long' is not supported"),
    ((ADV, PLAN), dict(amplify="fork"), r"needs entropy and completion_mask"),
    ((ADV, PLAN), dict(gate="correct_and_longer"), r"needs completion_mask and group_size"),
    ((ADV, PLAN, 0.2, COMP), dict(gate="correct_and_longer", group_size=2),
     r"group_size=2 does not divide"),
    ((ADV, PLAN, 0.2, COMP),
     dict(gate="correct_and_longer", group_size=3, correct=np.ones(2, bool)),
     r"correct must have shape \[N\] = \(3,\), got shape \(2,\)"),
])
def test_hicra_errors(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    rl.hicra_advantages(*args, **kwargs)


def test_fork_token_mask_errors():
  with pytest.raises(ValueError, match=r"fork_fraction must lie in \[0, 1\], got 1.2"):
    rl.fork_token_mask(ENT, ENT_MASK, 1.2)
  with pytest.raises(ValueError, match=r"completion_mask must have shape .* got shape \(3, 4\)"):
    rl.fork_token_mask(ENT, ENT_MASK[:, :4])
