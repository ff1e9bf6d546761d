"""hicra_jax.rl losses: clipped surrogate, aggregations, KL, entropy bonus, exact accumulation."""

from __future__ import annotations

import contextlib
import functools

from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hicra_jax import rl
from hicra_jax.models import token_logprobs_and_entropy


def _x64():
  """float64 context manager across JAX versions."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


# ---- an independent float64 reference: explicit loops, no shared code ------------------------

def np_policy_loss(lp, old, adv, mask, *, clip_low=0.2, clip_high=0.28, aggregation="token-mean",
                   dual_clip=None, norm_constant=None, ref=None, kl_coef=0.0, kl_estimator="k3",
                   entropy=None, entropy_coef=0.0):
  lp, old, mask = np.float64(lp), np.float64(old), np.asarray(mask, bool)
  n, t = lp.shape
  adv = np.broadcast_to(np.float64(adv)[:, None] if np.ndim(adv) == 1 else np.float64(adv), (n, t))
  tok = np.zeros((n, t))
  for i in range(n):
    for j in range(t):
      if not mask[i, j]:
        continue
      r, a = np.exp(lp[i, j] - old[i, j]), adv[i, j]
      pg = max(-a * r, -a * min(max(r, 1 - clip_low), 1 + clip_high))
      if dual_clip is not None and a < 0:
        pg = min(pg, -a * dual_clip)
      if ref is not None:
        x = ref[i, j] - lp[i, j]
        pg += kl_coef * {"k1": -x, "k2": 0.5 * x * x, "k3": np.exp(x) - 1 - x}[kl_estimator]
      if entropy is not None:
        pg -= entropy_coef * entropy[i, j]
      tok[i, j] = pg
  rows = [i for i in range(n) if mask[i].any()]
  if aggregation == "token-mean":
    return tok[mask].sum() / mask.sum()
  if aggregation == "seq-mean-token-mean":
    return np.mean([tok[i][mask[i]].mean() for i in rows])
  c = t if norm_constant is None else norm_constant
  return np.mean([tok[i][mask[i]].sum() / c for i in rows])


# ---- hand-computed values -----------------------------------------------------------------

# Row 0: A = +1, ratios [1.5, 0.5, pad]; row 1: A = -2, ratios [0.5, 1.5, 1.0].
R = np.array([[1.5, 0.5, 1.0], [0.5, 1.5, 1.0]])
OLD = np.log(np.array([[0.3, 0.4, 0.5], [0.6, 0.2, 0.1]], np.float32))
LP = (OLD + np.log(R)).astype(np.float32)
A = np.array([1.0, -2.0], np.float32)
M = np.array([[1, 1, 0], [1, 1, 1]], bool)
# Per-token pg (eps 0.2/0.28): row 0: -min(1.5, 1.28) = -1.28, -min(0.5, 0.8) = -0.5;
# row 1: max(2 * 0.5, 2 * 0.8) = 1.6, max(3.0, 2.56) = 3.0, 2.0.
HAND = {
    "token-mean": (-1.28 - 0.5 + 1.6 + 3.0 + 2.0) / 5,                      # 0.964
    "seq-mean-token-mean": ((-1.28 - 0.5) / 2 + (1.6 + 3.0 + 2.0) / 3) / 2,  # 0.655
    "seq-mean-token-sum-norm": ((-1.28 - 0.5) / 3 + (1.6 + 3.0 + 2.0) / 3) / 2,  # C = T = 3
}
HAND_DEN = {"token-mean": 5, "seq-mean-token-mean": 2, "seq-mean-token-sum-norm": 2}


@pytest.mark.parametrize("aggregation", rl.AGGREGATIONS)
def test_policy_loss_hand_values(aggregation):
  loss, m = rl.policy_loss(LP, OLD, A, M, aggregation=aggregation)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, HAND[aggregation], rtol=1e-5)
  np.testing.assert_allclose(m["loss"], loss)
  np.testing.assert_allclose(m["pg_loss"], HAND[aggregation], rtol=1e-5)
  assert float(m["loss_denominator"]) == HAND_DEN[aggregation]
  np.testing.assert_allclose(m["loss_numerator"] / m["loss_denominator"], loss, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_low"], 0.2)   # (1, 0): A < 0, r = 0.5 < 0.8
  np.testing.assert_allclose(m["clip_frac_high"], 0.2)  # (0, 0): A > 0, r = 1.5 > 1.28
  np.testing.assert_allclose(m["ratio_mean"], 1.0, rtol=1e-6)
  # mean of r - 1 - log r over the 5 tokens: 2 (0.5 - log 1.5) + 2 (-0.5 + log 2) + 0.
  np.testing.assert_allclose(m["approx_kl"], (2 * (0.5 - np.log(1.5)) + 2 * (np.log(2) - 0.5)) / 5,
                             rtol=1e-5)
  assert float(m["num_tokens"]) == 5
  assert "kl" not in m and "entropy" not in m and "dual_clip_frac" not in m


def test_gradient_hand_values():
  # d/d lp of -A r / 5 (token-mean over 5 tokens) where unclipped, 0 where clipped or padding.
  g = jax.grad(lambda lp: rl.policy_loss(lp, OLD, A, M)[0])(LP)
  np.testing.assert_allclose(g, [[0.0, -0.5 / 5, 0.0], [0.0, 2 * 1.5 / 5, 2 * 1.0 / 5]],
                             rtol=1e-5, atol=1e-7)
  g = jax.grad(lambda lp: rl.policy_loss(lp, OLD, A, M, dual_clip=1.4)[0])(LP)
  np.testing.assert_allclose(g, [[0.0, -0.1, 0.0], [0.0, 0.0, 0.4]], rtol=1e-5, atol=1e-7)


def test_seq_mean_token_sum_norm_constant():
  loss, _ = rl.policy_loss(LP, OLD, A, M, aggregation="seq-mean-token-sum-norm", norm_constant=10)
  np.testing.assert_allclose(loss, ((-1.28 - 0.5) / 10 + 6.6 / 10) / 2, rtol=1e-5)


def test_dual_clip_hand_values():
  loss, m = rl.policy_loss(LP, OLD, A, M, dual_clip=1.4)
  # (1, 1): A = -2, r = 1.5 > 1.4: loss capped at 2 * 1.4 = 2.8 instead of 3.0.
  np.testing.assert_allclose(loss, (-1.28 - 0.5 + 1.6 + 2.8 + 2.0) / 5, rtol=1e-5)
  np.testing.assert_allclose(m["dual_clip_frac"], 0.2)


def test_symmetric_clip_and_no_clip():
  loss, _ = rl.policy_loss(LP, OLD, A, M, clip_low=0.2, clip_high=0.2)
  np.testing.assert_allclose(loss, (-1.2 - 0.5 + 1.6 + 3.0 + 2.0) / 5, rtol=1e-5)
  loss, m = rl.policy_loss(LP, OLD, A, M, clip_low=0.0, clip_high=10.0)
  # eps_low = 0: every A < 0 token with r < 1 is clipped to 1: (1, 0) gives 2 * 1.
  np.testing.assert_allclose(loss, (-1.5 - 0.5 + 2.0 + 3.0 + 2.0) / 5, rtol=1e-5)
  np.testing.assert_allclose(m["clip_frac_high"], 0.0)


def test_kl_estimators_hand_values():
  lp = np.log(np.array([[0.5, 0.2]], np.float32))
  ref = np.log(np.array([[0.25, 0.2]], np.float32))
  ln2 = np.log(2.0)  # x = log(pi_ref / pi) = -ln 2 at the first token, 0 at the second
  np.testing.assert_allclose(rl.kl_penalty(lp, ref, estimator="k1"), [[ln2, 0]], atol=1e-6)
  np.testing.assert_allclose(rl.kl_penalty(lp, ref, estimator="k2"), [[ln2**2 / 2, 0]], atol=1e-6)
  np.testing.assert_allclose(rl.kl_penalty(lp, ref, estimator="k3"), [[0.5 - 1 + ln2, 0]],
                             atol=1e-6)


def test_kl_and_entropy_terms_hand_values():
  ref = OLD - 0.5  # x = ref - lp = -0.5 - log r
  ent = np.array([[1.0, 2.0, 99.0], [3.0, 4.0, 5.0]], np.float32)
  loss, m = rl.policy_loss(LP, OLD, A, M, ref_logprobs=ref, kl_coef=0.1, kl_estimator="k2",
                           entropy=ent, entropy_coef=0.01)
  x = -0.5 - np.log(R[M])
  kl = np.mean(0.5 * x**2)
  ent_mean = (1 + 2 + 3 + 4 + 5) / 5  # 99 is padding
  np.testing.assert_allclose(m["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(m["entropy"], ent_mean, rtol=1e-6)
  np.testing.assert_allclose(loss, HAND["token-mean"] + 0.1 * kl - 0.01 * ent_mean, rtol=1e-5)


def test_aggregate_and_denominator_hand_values():
  v = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], np.float32)
  m = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1]], bool)
  for agg, (num, den) in {"token-mean": (1 + 2 + 7 + 8 + 9, 5),
                          "seq-mean-token-mean": (1.5 + 8, 2),
                          "seq-mean-token-sum-norm": ((3 + 24) / 3, 2)}.items():
    got_num, got_den = rl.aggregate(v, m, agg)
    np.testing.assert_allclose([got_num, got_den], [num, den], rtol=1e-6)
    assert float(rl.loss_denominator(m, agg)) == den
  np.testing.assert_allclose(rl.combine_accumulated([3.0, 5.0], [1.0, 3.0]), 2.0)
  assert float(rl.combine_accumulated(jnp.zeros(2), jnp.zeros(2))) == 0.0


def test_all_masked_batch_gives_zero_loss_and_metrics():
  loss, m = rl.policy_loss(LP, OLD, A, np.zeros_like(M))
  assert float(loss) == 0.0 and float(m["loss_denominator"]) == 0.0
  assert all(np.isfinite(np.asarray(v)).all() for v in m.values())


def test_bfloat16_inputs_give_float32_loss():
  loss, m = rl.policy_loss(LP.astype(jnp.bfloat16), OLD.astype(jnp.bfloat16), A, M)
  assert loss.dtype == jnp.float32 and m["loss_numerator"].dtype == jnp.float32
  np.testing.assert_allclose(loss, HAND["token-mean"], rtol=2e-2)  # bf16 log-probs: ~3 digits


# ---- random cases against the float64 reference ----------------------------------------------

N, T = 6, 5
LENGTHS = [5, 0, 2, 4, 1, 3]  # ragged, with an empty row
RAGGED = np.arange(T)[None, :] < np.array(LENGTHS)[:, None]


def _random_batch(seed, token_level_adv=False):
  rng = np.random.default_rng(seed)
  old = np.log(rng.uniform(0.05, 0.95, (N, T))).astype(np.float32)
  # Ratios in [0.6, 2.0] away from the clip edges 0.8 and 1.28 (and dual clip 1.7).
  r = rng.choice([0.6, 0.7, 0.9, 1.0, 1.1, 1.2, 1.4, 1.5, 1.9, 2.0], (N, T))
  lp = (old + np.log(r)).astype(np.float32)
  adv = rng.normal(size=(N, T) if token_level_adv else (N,)).astype(np.float32)
  ref = (lp + rng.normal(scale=0.3, size=(N, T))).astype(np.float32)
  ent = rng.uniform(0.0, 3.0, (N, T)).astype(np.float32)
  return lp, old, adv, ref, ent


@pytest.mark.parametrize("aggregation", rl.AGGREGATIONS)
@pytest.mark.parametrize("kl_estimator", rl.KL_ESTIMATORS)
def test_matches_float64_reference(aggregation, kl_estimator):
  lp, old, adv, ref, ent = _random_batch(1, token_level_adv=kl_estimator == "k2")
  kw = dict(aggregation=aggregation, dual_clip=1.7, ref_logprobs=ref, kl_coef=0.05,
            kl_estimator=kl_estimator, entropy=ent, entropy_coef=0.01)
  loss, _ = rl.policy_loss(lp, old, adv, RAGGED, **kw)
  np_kw = {k: v for k, v in kw.items() if k != "ref_logprobs"}
  want = np_policy_loss(lp, old, adv, RAGGED, ref=ref, **np_kw)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregation, kl_estimator",
                         list(zip(rl.AGGREGATIONS, ("k3", "k2", "k1"))))
def test_gradients_match_central_finite_differences(aggregation, kl_estimator):
  """float64 under x64: central differences with h = 1e-6 are accurate to ~1e-9."""
  lp, old, adv, ref, ent = _random_batch(2)
  with _x64():
    lp, old, adv, ref, ent = (jnp.asarray(x, jnp.float64) for x in (lp, old, adv, ref, ent))
    kw = dict(aggregation=aggregation, dual_clip=1.7, ref_logprobs=ref, kl_coef=0.1,
              kl_estimator=kl_estimator, entropy_coef=0.05)

    def f(lp_, ent_):
      return rl.policy_loss(lp_, old, adv, RAGGED, entropy=ent_, **kw)[0]

    assert f(lp, ent).dtype == jnp.float64
    g_lp, g_ent = jax.jit(jax.grad(f, argnums=(0, 1)))(lp, ent)
    h = 1e-6
    d = jnp.eye(N * T, dtype=jnp.float64).reshape(N * T, N, T) * h
    zero = jnp.zeros_like(d)
    # One batched evaluation: lp +- h e_k, then ent +- h e_k.
    vals = jax.jit(jax.vmap(f))(lp + jnp.concatenate([d, -d, zero, zero]),
                                ent + jnp.concatenate([zero, zero, d, -d])).reshape(4, N, T)
    fd_lp, fd_ent = (vals[0] - vals[1]) / (2 * h), (vals[2] - vals[3]) / (2 * h)
    np.testing.assert_allclose(g_lp, fd_lp, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g_ent, fd_ent, rtol=1e-6, atol=1e-9)
    assert not np.any(np.asarray(g_lp)[~RAGGED]) and not np.any(np.asarray(g_ent)[~RAGGED])
    assert np.all(np.asarray(g_lp)[RAGGED] != 0)  # the KL term reaches clipped tokens too


# ---- exact micro-batch accumulation ------------------------------------------------------

K = 3
SPLITS = [(0, 3), (3, 6)]  # micro-batches of whole rows (equal sizes: one compile for both)


def _model(params, x_NxTxK, base_NxT):
  """A tiny 'model' whose log-probs and entropies depend on shared parameters."""
  w, v = params
  return base_NxT + 0.3 * jnp.tanh(x_NxTxK @ w), jax.nn.softplus(x_NxTxK @ v)


@functools.partial(jax.jit, static_argnames=("aggregation",))
def _loss_and_grad(params, x, old, adv, ref, mask, denominator, aggregation):
  """value_and_grad of policy_loss of the tiny model."""

  def f(p):
    lp, ent = _model(p, x, old)
    return rl.policy_loss(lp, old, adv, mask, aggregation=aggregation, denominator=denominator,
                          ref_logprobs=ref, kl_coef=0.1, entropy=ent, entropy_coef=0.02,
                          dual_clip=2.0)

  return jax.value_and_grad(f, has_aux=True)(params)


@pytest.mark.parametrize("aggregation", rl.AGGREGATIONS)
def test_micro_batch_accumulation_equals_full_batch(aggregation):
  """Ragged masks (one empty row), two micro-batches of 3 rows; tolerance 1e-6 relative."""
  rng = np.random.default_rng(3)
  _, old, adv, ref, _ = _random_batch(3, token_level_adv=True)
  x = rng.normal(size=(N, T, K)).astype(np.float32)
  params = (jnp.asarray(rng.normal(size=K), jnp.float32),
            jnp.asarray(rng.normal(size=K), jnp.float32))
  batch = lambda s: (x[slice(*s)], old[slice(*s)], adv[slice(*s)], ref[slice(*s)],
                     RAGGED[slice(*s)])

  # 1. The full batch's denominator passed to every micro-batch; losses and grads summed.
  den = rl.loss_denominator(RAGGED, aggregation)
  (full, m_full), g_full = _loss_and_grad(params, *batch((0, N)), den, aggregation)
  assert float(den) == float(m_full["loss_denominator"])
  parts = [_loss_and_grad(params, *batch(s), den, aggregation) for s in SPLITS]
  loss_1 = sum(l for (l, _), _ in parts)
  g_1 = jax.tree.map(lambda *gs: sum(gs), *[g for _, g in parts])

  # 2. Each micro-batch's numerator differentiated (denominator=1 makes the loss the
  #    numerator), then combined with the accumulated local denominators.
  one = jnp.ones((), jnp.float32)
  parts = [_loss_and_grad(params, *batch(s), one, aggregation) for s in SPLITS]
  nums = [m["loss_numerator"] for (_, m), _ in parts]
  dens = [m["loss_denominator"] for (_, m), _ in parts]
  np.testing.assert_array_equal(nums, [l for (l, _), _ in parts])
  loss_2 = rl.combine_accumulated(nums, dens)
  g_2 = jax.tree.map(lambda *gs: sum(gs) / sum(dens), *[g for _, g in parts])

  for loss, g in ((loss_1, g_1), (loss_2, g_2)):
    np.testing.assert_allclose(loss, full, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_full)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())


@functools.partial(jax.jit, static_argnames=("aggregation",))
def _parts(lp, old, adv, mask, aggregation):
  _, m = rl.policy_loss(lp, old, adv, mask, aggregation=aggregation)
  return m["loss"], m["loss_numerator"], m["loss_denominator"]


@given(st.lists(st.integers(0, T), min_size=N, max_size=N),
       st.lists(st.booleans(), min_size=N, max_size=N), st.sampled_from(rl.AGGREGATIONS))
def test_property_any_row_split_is_exact(lengths, in_first, aggregation):
  """Any split of the rows into two micro-batches (a row outside a micro-batch is masked out
  of it, which `aggregate` treats exactly like an absent row)."""
  mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
  first = np.array(in_first)[:, None]
  lp, old, adv, _, _ = _random_batch(4)
  full, _, full_den = _parts(lp, old, adv, mask, aggregation)
  _, n1, d1 = _parts(lp, old, adv, mask & first, aggregation)
  _, n2, d2 = _parts(lp, old, adv, mask & ~first, aggregation)
  np.testing.assert_allclose(rl.combine_accumulated([n1, n2], [d1, d2]), full, rtol=1e-6,
                             atol=1e-7)
  assert float(d1) + float(d2) == float(full_den)


# ---- padding, jit ---------------------------------------------------------------------------

@pytest.mark.parametrize("aggregation", rl.AGGREGATIONS)
def test_padding_values_never_change_loss_metrics_or_gradient(aggregation):
  lp, old, adv, ref, ent = _random_batch(5, token_level_adv=True)
  pad = ~RAGGED
  junk = lambda x, v: np.where(pad, v, x).astype(np.float32)
  kw = dict(aggregation=aggregation, kl_coef=0.1, entropy_coef=0.1, norm_constant=T)

  def run(lp_, old_, adv_, ref_, ent_):
    f = lambda l, e: rl.policy_loss(l, old_, adv_, RAGGED, ref_logprobs=ref_, entropy=e, **kw)
    return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(lp_, ent_)

  (loss, m), g = run(lp, old, adv, ref, ent)
  (loss_j, m_j), g_j = run(junk(lp, -np.inf), junk(old, np.nan), junk(adv, 1e30),
                           junk(ref, np.nan), junk(ent, np.inf))
  assert float(loss_j) == float(loss)
  for k in m:
    assert float(m_j[k]) == float(m[k]), k
  for a, b in zip(g_j, g):
    np.testing.assert_array_equal(a, b)
    assert not np.any(np.asarray(a)[pad])
  # Extra padded columns change nothing either (norm_constant fixed).
  widen = lambda x: np.pad(x, ((0, 0), (0, 3)))
  loss_w, m_w = rl.policy_loss(widen(lp), widen(old), widen(adv), widen(RAGGED),
                               ref_logprobs=widen(ref), entropy=widen(ent), **kw)
  np.testing.assert_allclose(loss_w, loss, rtol=1e-6)
  assert float(m_w["loss_denominator"]) == float(m["loss_denominator"])


@pytest.mark.parametrize("aggregation", rl.AGGREGATIONS)
def test_jit_matches_eager(aggregation):
  lp, old, adv, ref, ent = _random_batch(6)
  f = functools.partial(rl.policy_loss, aggregation=aggregation, dual_clip=1.7, kl_coef=0.1,
                        entropy_coef=0.01)
  args = (lp, old, adv, RAGGED)
  eager = f(*args, ref_logprobs=ref, entropy=ent)
  jitted = jax.jit(lambda *a: f(*a[:4], ref_logprobs=a[4], entropy=a[5]))(*args, ref, ent)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_traced_hyperparameters_under_jit():
  f = jax.jit(lambda lo, hi, c: rl.policy_loss(LP, OLD, A, M, clip_low=lo, clip_high=hi,
                                               dual_clip=c)[0])
  np.testing.assert_allclose(f(0.2, 0.28, 1.4), (-1.28 - 0.5 + 1.6 + 2.8 + 2.0) / 5, rtol=1e-5)


# ---- the entropy bonus on the model's chunked entropies --------------------------------------

def test_entropy_bonus_uses_model_token_entropies():
  rng = np.random.default_rng(7)
  h = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 7, (2, 3)), jnp.int32)
  mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
  adv = np.array([1.0, -0.5], np.float32)
  coef = 0.3

  def loss_with(logprob_fn, h_):
    lp, ent = logprob_fn(h_)
    return rl.policy_loss(lp, jax.lax.stop_gradient(lp), adv, mask, entropy=ent,
                          entropy_coef=coef)[0]

  def ours(h_):
    return token_logprobs_and_entropy(h_, w, y, chunk_size=4)

  def plain(h_):
    logp = jax.nn.log_softmax(h_ @ w, axis=-1)
    return (jnp.take_along_axis(logp, y[..., None], -1)[..., 0],
            -(jnp.exp(logp) * logp).sum(-1))

  # Value: ratio 1, so loss = mean(-A) - coef * mean entropy over the 5 completion tokens.
  logits = np.float64(h) @ np.float64(w)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ent = -(np.exp(logp) * logp).sum(-1)
  want = (-2 * 1.0 + 3 * 0.5) / 5 - coef * ent[mask].mean()
  np.testing.assert_allclose(loss_with(ours, h), want, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(lambda h_: loss_with(ours, h_))(h),
                             jax.grad(lambda h_: loss_with(plain, h_))(h), rtol=1e-4, atol=1e-6)


# ---- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(logprobs=LP[0]), r"logprobs must have shape \[N, T\], got shape \(3,\)"),
    (dict(old_logprobs=OLD[:, :2]),
     r"old_logprobs must have shape \[N, T\] like logprobs = \(2, 3\), got shape \(2, 2\)"),
    (dict(advantages=np.zeros(3)),
     r"advantages must have shape \[N\] = \(2,\) or \[N, T\] = \(2, 3\), got shape \(3,\)"),
    (dict(completion_mask=M[:1]), r"completion_mask must have shape .* got shape \(1, 3\)"),
    (dict(completion_mask=M.astype(np.float32)), r"completion_mask must be a bool"),
    (dict(aggregation="mean"), r"aggregation='mean' is not supported; expected one of"),
    (dict(kl_estimator="k4", ref_logprobs=OLD, kl_coef=0.1),
     r"kl_estimator='k4' is not supported"),
    (dict(clip_low=1.0), r"clip_low must lie in \[0, 1\), got 1"),
    (dict(clip_high=-0.1), r"clip_high must lie in \[0, inf\], got -0.1"),
    (dict(dual_clip=1.0), r"dual_clip must lie in \(1, inf\], got 1"),
    (dict(kl_coef=0.1), r"kl_coef=0.1 needs ref_logprobs"),
    (dict(entropy_coef=0.1), r"entropy_coef=0.1 needs entropy"),
    (dict(ref_logprobs=OLD[:1], kl_coef=0.1), r"ref_logprobs must have shape"),
    (dict(entropy=np.zeros((2, 4)), entropy_coef=0.1),
     r"entropy must have shape .* got shape \(2, 4\)"),
    (dict(aggregation="seq-mean-token-sum-norm", norm_constant=0),
     r"norm_constant must lie in \(0, inf\], got 0"),
    (dict(denominator=np.ones(2)),
     r"denominator must have shape \[\] \(a scalar\), got shape \(2,\)"),
])
def test_policy_loss_errors(kwargs, match):
  args = dict(logprobs=LP, old_logprobs=OLD, advantages=A, completion_mask=M)
  for k in list(args):
    if k in kwargs:
      args[k] = kwargs.pop(k)
  with pytest.raises(ValueError, match=match):
    rl.policy_loss(*args.values(), **kwargs)


def test_policy_loss_errors_under_jit():
  with pytest.raises(ValueError, match=r"old_logprobs must have shape"):
    jax.jit(rl.policy_loss)(LP, OLD[:, :2], A, M)


def test_combine_accumulated_errors():
  with pytest.raises(ValueError, match=r"denominators must have shape \[M\] like numerators"):
    rl.combine_accumulated([1.0, 2.0], [1.0])
