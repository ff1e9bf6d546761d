"""Clipped policy-gradient loss, KL to a reference, entropy bonus; exact under accumulation.

The loss contract (as in Tunix): `policy_loss` returns (loss, metrics) and
metrics hold the aggregation's numerator and denominator. The denominator
depends only on the completion mask, never on parameters, so a trainer that
splits a batch into micro-batches of whole rows gets the full-batch loss and
gradient exactly in either of two ways:

  1. pass `denominator=loss_denominator(full_batch_mask, aggregation)` to each
     micro-batch's `policy_loss`, then sum the micro-batch losses and grads; or
  2. differentiate each micro-batch's numerator, sum numerators, denominators
     and grads, and divide by the summed denominator (`combine_accumulated`).

All arithmetic is float32 (float64 when the inputs are float64 under x64),
whatever the dtype of the model's parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hicra_jax import options
from hicra_jax.rl import _checks

AGGREGATIONS = options.AGGREGATIONS
KL_ESTIMATORS = options.KL_ESTIMATORS


def _count(mask: jax.Array, axis=None) -> jax.Array:
  """Number of true entries, summed in int32 (exact) and returned as float32."""
  return mask.sum(axis=axis, dtype=jnp.int32).astype(jnp.float32)


def aggregate(values, mask, aggregation: str = "token-mean", *,
              norm_constant: Any = None) -> tuple[jax.Array, jax.Array]:
  """(numerator, denominator) of a masked per-token quantity; value = num / den.

  With m the mask, v the values and L_i = sum_t m_{i,t} the length of row i;
  rows with L_i = 0 (fully masked) contribute nothing to either part:

    "token-mean" (DAPO):
        num = sum_{i,t} m v                  den = sum_i L_i
    "seq-mean-token-mean" (original GRPO):
        num = sum_i (sum_t m v) / L_i        den = #{i : L_i > 0}
    "seq-mean-token-sum-norm" (Dr.GRPO):
        num = sum_{i,t} m v / C              den = #{i : L_i > 0}
        with C = norm_constant (default T, the padded length; pass the max
        generation length so C is the same for every micro-batch).

  Numerators and denominators of disjoint row sets add up, so the value over a
  batch equals sum(num) / sum(den) over its micro-batches. Masked positions
  are excluded with `where`, so NaN/inf there never reaches the result.

  Args:
    values: f32[N, T].
    mask: bool[N, T].
    aggregation: one of AGGREGATIONS (static).
    norm_constant: C > 0 for "seq-mean-token-sum-norm" (may be traced).

  Returns:
    (numerator f32[], denominator f32[]).
  """
  _checks.check_option("aggregation", aggregation, AGGREGATIONS)
  values_NxT = _checks.as_float("values", _checks.check_rank("values", values, (2,), "[N, T]"))
  mask_NxT = _checks.check_mask("mask", mask, values_NxT.shape, "[N, T] like values")
  masked_NxT = jnp.where(mask_NxT, values_NxT, 0)
  den = loss_denominator(mask_NxT, aggregation)
  if aggregation == "token-mean":
    num = masked_NxT.sum()
  elif aggregation == "seq-mean-token-mean":
    num = (masked_NxT.sum(axis=1) / jnp.maximum(_count(mask_NxT, axis=1), 1)).sum()
  else:
    if norm_constant is None:
      norm_constant = values_NxT.shape[1]
    _checks.check_range("norm_constant", norm_constant, 0.0, None, lo_open=True)
    num = masked_NxT.sum() / jnp.asarray(norm_constant, masked_NxT.dtype)
  return num, den.astype(num.dtype)


def loss_denominator(mask, aggregation: str = "token-mean") -> jax.Array:
  """The denominator of `aggregate` from the mask alone: f32[] (see `aggregate`).

  A trainer computes it once on the full batch and passes it as
  `policy_loss(..., denominator=...)` to every micro-batch.
  """
  _checks.check_option("aggregation", aggregation, AGGREGATIONS)
  mask_NxT = _checks.check_mask("mask", _checks.check_rank("mask", mask, (2,), "[N, T]"))
  if aggregation == "token-mean":
    return _count(mask_NxT)
  return _count(mask_NxT.any(axis=1))


def combine_accumulated(numerators, denominators) -> jax.Array:
  """sum(numerators) / sum(denominators), 0 when the denominators sum to 0.

  Args:
    numerators: f32[M] (or a list of scalars), one per micro-batch.
    denominators: f32[M], same length.

  Returns:
    f32[] the full-batch value of the aggregation.
  """
  num_M = _checks.as_float("numerators", _checks.check_rank(
      "numerators", _stack(numerators), (1,), "[M]"))
  den_M = _checks.as_float("denominators", _checks.check_rank(
      "denominators", _stack(denominators), (1,), "[M]"))
  _checks.check_shape("denominators", den_M, num_M.shape, "[M] like numerators")
  return _safe_div(num_M.sum(), den_M.sum())


def _stack(xs) -> jax.Array:
  """A list/tuple of scalars as a 1-D array; arrays pass through."""
  if isinstance(xs, (list, tuple)):
    return jnp.stack([jnp.asarray(x) for x in xs]) if xs else jnp.zeros((0,), jnp.float32)
  return jnp.asarray(xs)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den, and 0 where den == 0 (an all-masked batch has num == 0)."""
  den = jnp.asarray(den, num.dtype)
  return jnp.where(den != 0, num / jnp.where(den != 0, den, 1), 0)


def kl_penalty(logprobs, ref_logprobs, *, estimator: str = "k3",
               max_log_ratio: Any = 20.0) -> jax.Array:
  """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

  With x = clip(ref_logprobs - logprobs, -max_log_ratio, max_log_ratio)
  = log(pi_ref / pi) at the sampled token (Schulman's estimators):

    "k1": -x                      unbiased, high variance, can be negative
    "k2": x^2 / 2                 biased, low variance
    "k3": exp(x) - 1 - x          unbiased, low variance, >= 0 (GRPO's choice)

  Args:
    logprobs: f32[N, T] log pi of the sampled tokens (differentiated).
    ref_logprobs: f32[N, T] log pi_ref of the same tokens (not differentiated).
    estimator: "k1", "k2" or "k3" (static).
    max_log_ratio: clamp on |x| for numerical stability.

  Returns:
    f32[N, T] (unmasked; aggregate it with the loss's mask).
  """
  _checks.check_option("kl_estimator", estimator, KL_ESTIMATORS)
  lp_NxT = _checks.as_float("logprobs", _checks.check_rank("logprobs", logprobs, (2,), "[N, T]"))
  ref_NxT = _checks.as_float("ref_logprobs", ref_logprobs)
  _checks.check_shape("ref_logprobs", ref_NxT, lp_NxT.shape, "[N, T] like logprobs")
  x_NxT = jnp.clip(jax.lax.stop_gradient(ref_NxT) - lp_NxT, -max_log_ratio, max_log_ratio)
  if estimator == "k1":
    return -x_NxT
  if estimator == "k2":
    return 0.5 * jnp.square(x_NxT)
  return jnp.expm1(x_NxT) - x_NxT


def policy_loss(logprobs, old_logprobs, advantages, completion_mask, *,
                clip_low: Any = 0.2, clip_high: Any = 0.28, aggregation: str = "token-mean",
                dual_clip: Any = None, max_log_ratio: Any = 20.0, norm_constant: Any = None,
                denominator=None, ref_logprobs=None, kl_coef: Any = 0.0,
                kl_estimator: str = "k3", entropy=None,
                entropy_coef: Any = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped surrogate policy loss (clip-higher), optional KL and entropy terms.

  Per completion token (i, t), with r = exp(clip(logprobs - old_logprobs,
  -max_log_ratio, max_log_ratio)) and A the token advantage:

    pg    = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
    pg    = min(pg, -A * dual_clip)        if dual_clip is set and A < 0
    loss_tok = pg + kl_coef * kl_penalty(logprobs, ref_logprobs) - entropy_coef * entropy

  and loss = numerator / denominator of `aggregate(loss_tok, completion_mask,
  aggregation)`. With aggregation "token-mean" (DAPO, the default) the entropy
  term is -entropy_coef x the mean token entropy over completion tokens (the
  paper's "Entropy Regularization" baseline); every term is aggregated the same
  way, so the loss stays linear in the token terms and exact under accumulation.
  Dr.GRPO is aggregation="seq-mean-token-sum-norm" with grpo_advantages(...,
  estimator="grpo", scale="none").

  Gradients flow into `logprobs` and `entropy` only: old_logprobs, advantages
  and ref_logprobs are treated as constants (stop_gradient). Positions outside
  completion_mask are replaced by neutral values before any arithmetic, so
  padding (even NaN or -inf) changes neither the loss, its denominator, the
  metrics nor the gradient.

  Args:
    logprobs: f32[N, T] log pi_theta of the sampled tokens (any float dtype).
    old_logprobs: f32[N, T] log-probs under the sampling policy.
    advantages: f32[N] (broadcast over tokens) or f32[N, T].
    completion_mask: bool[N, T] completion tokens that enter the loss.
    clip_low: eps_low in [0, 1) (0.2). clip_high: eps_high >= 0 (0.28, DAPO).
    aggregation: one of AGGREGATIONS (static); see `aggregate`.
    dual_clip: None, or a constant c > 1 capping the loss of negative-advantage
      tokens at c |A| (dual-clip PPO).
    max_log_ratio: clamp on |log r| before exponentiating (also for the KL).
    norm_constant: C of "seq-mean-token-sum-norm" (default T).
    denominator: optional f32[] replacing the local denominator in `loss`
      (typically `loss_denominator` of the full batch); metrics still report
      the local one.
    ref_logprobs: f32[N, T] reference-policy log-probs, needed when kl_coef != 0
      (without them a traced kl_coef has no effect).
    kl_coef: beta >= 0 (0 by default, as in DAPO).
    kl_estimator: "k1", "k2" or "k3" (static); see `kl_penalty`.
    entropy: f32[N, T] per-token entropies (e.g. from
      `hicra_jax.models.token_logprobs_and_entropy`), needed when
      entropy_coef != 0 (without it a traced entropy_coef has no effect).
    entropy_coef: coefficient of the entropy bonus (0 by default).

  Returns:
    (loss f32[], metrics) where metrics has
      "loss", "loss_numerator", "loss_denominator": the aggregation's parts;
      "pg_loss" (and "kl", "entropy" when given): each term aggregated alone
      (combine micro-batches weighted by "loss_denominator");
      token means over completion tokens (combine micro-batches weighted by
      "num_tokens"): "clip_frac_low" (A < 0 and r < 1 - clip_low: gradient cut
      by the lower clip), "clip_frac_high" (A > 0 and r > 1 + clip_high),
      "dual_clip_frac" (when dual_clip is set), "ratio_mean", "approx_kl"
      (k3 estimate of KL(pi_old || pi_theta): mean of r - 1 - log r);
      "num_tokens": number of completion tokens.

  Raises:
    ValueError: shapes that disagree, unknown option names, concrete clip
      values out of range, or a nonzero coefficient without its input.
  """
  _checks.check_option("aggregation", aggregation, AGGREGATIONS)
  _checks.check_option("kl_estimator", kl_estimator, KL_ESTIMATORS)
  _checks.check_range("clip_low", clip_low, 0.0, 1.0, hi_open=True)
  _checks.check_range("clip_high", clip_high, 0.0, None)
  _checks.check_range("max_log_ratio", max_log_ratio, 0.0, None, lo_open=True)
  _checks.check_range("kl_coef", kl_coef, 0.0, None)
  _checks.check_range("entropy_coef", entropy_coef, None, None)
  if dual_clip is not None:
    _checks.check_range("dual_clip", dual_clip, 1.0, None, lo_open=True)

  lp_NxT = _checks.as_float("logprobs", _checks.check_rank("logprobs", logprobs, (2,), "[N, T]"))
  shape = tuple(lp_NxT.shape)
  old_NxT = _checks.as_float("old_logprobs", _checks.check_shape(
      "old_logprobs", old_logprobs, shape, "[N, T] like logprobs"))
  mask_NxT = _checks.check_mask("completion_mask", completion_mask, shape, "[N, T] like logprobs")
  adv = _checks.as_float("advantages", _checks.check_rank(
      "advantages", advantages, (1, 2), "[N] or [N, T]"))
  if adv.shape not in ((shape[0],), shape):
    raise ValueError(f"advantages must have shape [N] = {(shape[0],)} or [N, T] = {shape}, "
                     f"got shape {tuple(adv.shape)}")
  adv_NxT = jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, shape)
  for coef_name, coef, input_name, value in (("kl_coef", kl_coef, "ref_logprobs", ref_logprobs),
                                             ("entropy_coef", entropy_coef, "entropy", entropy)):
    c = _checks.concrete(coef)
    if value is None and c is not None and c != 0.0:
      raise ValueError(f"{coef_name}={c:g} needs {input_name} of shape [N, T], got None")
  if denominator is not None:
    denominator = _checks.as_float("denominator", _checks.check_rank(
        "denominator", denominator, (0,), "[] (a scalar)"))

  # Neutral values at masked positions (ratio 1, A 0) keep NaN/inf out of the
  # forward pass and of the gradient (where() alone would leak NaN cotangents).
  zero = jnp.zeros((), lp_NxT.dtype)
  lp_NxT = jnp.where(mask_NxT, lp_NxT, zero)
  old_NxT = jax.lax.stop_gradient(jnp.where(mask_NxT, old_NxT, zero))
  adv_NxT = jax.lax.stop_gradient(jnp.where(mask_NxT, adv_NxT, zero))

  log_ratio_NxT = jnp.clip(lp_NxT - old_NxT, -max_log_ratio, max_log_ratio)
  ratio_NxT = jnp.exp(log_ratio_NxT)
  lo, hi = 1.0 - clip_low, 1.0 + clip_high
  pg_NxT = jnp.maximum(-adv_NxT * ratio_NxT, -adv_NxT * jnp.clip(ratio_NxT, lo, hi))
  if dual_clip is not None:
    pg_NxT = jnp.where(adv_NxT < 0, jnp.minimum(pg_NxT, -adv_NxT * dual_clip), pg_NxT)
  loss_NxT = pg_NxT

  metrics = {}
  agg = lambda v: aggregate(v, mask_NxT, aggregation, norm_constant=norm_constant)
  pg_num, den = agg(pg_NxT)
  metrics["pg_loss"] = _safe_div(pg_num, den)
  if ref_logprobs is not None:
    ref_NxT = _checks.as_float("ref_logprobs", _checks.check_shape(
        "ref_logprobs", ref_logprobs, shape, "[N, T] like logprobs"))
    ref_NxT = jnp.where(mask_NxT, ref_NxT, zero)
    kl_NxT = kl_penalty(lp_NxT, ref_NxT, estimator=kl_estimator, max_log_ratio=max_log_ratio)
    loss_NxT = loss_NxT + kl_coef * kl_NxT
    metrics["kl"] = _safe_div(agg(kl_NxT)[0], den)
  if entropy is not None:
    ent_NxT = _checks.as_float("entropy", _checks.check_shape(
        "entropy", entropy, shape, "[N, T] like logprobs"))
    ent_NxT = jnp.where(mask_NxT, ent_NxT, zero)
    loss_NxT = loss_NxT - entropy_coef * ent_NxT
    metrics["entropy"] = _safe_div(agg(ent_NxT)[0], den)

  num, den = agg(loss_NxT)
  loss = _safe_div(num, den if denominator is None else denominator)
  metrics.update(loss=loss, loss_numerator=num, loss_denominator=den)

  n_tok = _count(mask_NxT)
  tok_mean = lambda v: _safe_div(jnp.where(mask_NxT, v, 0).astype(num.dtype).sum(), n_tok)
  ratio_c = jax.lax.stop_gradient(ratio_NxT)
  metrics["clip_frac_low"] = tok_mean((adv_NxT < 0) & (ratio_c < lo))
  metrics["clip_frac_high"] = tok_mean((adv_NxT > 0) & (ratio_c > hi))
  if dual_clip is not None:
    metrics["dual_clip_frac"] = tok_mean((adv_NxT < 0) & (ratio_c > dual_clip))
  metrics["ratio_mean"] = tok_mean(ratio_c)
  log_ratio_c = jax.lax.stop_gradient(log_ratio_NxT)
  metrics["approx_kl"] = tok_mean(jnp.expm1(log_ratio_c) - log_ratio_c)
  metrics["num_tokens"] = n_tok.astype(num.dtype)
  return loss, metrics
