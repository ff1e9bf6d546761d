"""Advantages: GRPO / RLOO per completion, HICRA per token, and HICRA variants.

Row layout (DESIGN.md): a batch of N = P x G rows holds the G samples of each
prompt contiguously, so row i belongs to prompt i // G.

All functions are pure and jittable; string options and `group_size` are
static (pass them with `functools.partial` or `static_argnames` under jit).
Arrays are computed in float32 (float64 inputs stay float64 when x64 is on).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hicra_jax import options
from hicra_jax.rl import _checks

ESTIMATORS = options.ESTIMATORS
SCALES = options.SCALES
AMPLIFY = ("planning", "fork", "planning_or_fork")
GATES = ("none", "correct_and_longer")


def grpo_advantages(rewards, group_size: int, *, estimator: str = "grpo",
                    scale: str = "none", eps: float = 1e-6) -> jax.Array:
  """Group-relative advantage of each completion.

  With r_i the reward of row i and g(i) its group (the G rows of its prompt):

    estimator="grpo":  A_i = r_i - mean_{j in g(i)} r_j          (the paper's formula)
    estimator="rloo":  A_i = r_i - mean_{j in g(i), j != i} r_j   (leave-one-out)
                           = G / (G - 1) * (r_i - mean_{j in g(i)} r_j)
    scale="none":      A_i unchanged (mean only, as Dr. GRPO; no std division)
    scale="group_std": A_i / (std_{j in g(i)} r_j + eps)   (GRPO, DAPO: the paper's
                                                             "group-normalized reward")
    scale="batch_std": A_i / (std_{all j} r_j + eps)        (group mean, batch std)

  Standard deviations are the unbiased (ddof=1) sample std, as in the common
  PyTorch GRPO implementations. Dr.GRPO is estimator="grpo", scale="none" with
  the loss aggregation "seq-mean-token-sum-norm" of `policy_loss`.

  With scale="none" the advantages of each group sum to zero (both estimators),
  and a group whose rewards are all equal gets zero advantages.

  Args:
    rewards: f32[N] reward of each row (int and bool are cast to float32).
    group_size: G, a Python int dividing N (static). "rloo" and "group_std"
      need G >= 2; "batch_std" needs N >= 2.
    estimator: "grpo" or "rloo" (static).
    scale: "none", "group_std" or "batch_std" (static).
    eps: added to the std before dividing (ignored for scale="none").

  Returns:
    f32[N] advantages.

  Raises:
    ValueError: rewards not of shape [N], group_size not an int dividing N (or
      too small for the option), or an unknown estimator / scale.
  """
  _checks.check_option("estimator", estimator, ESTIMATORS)
  _checks.check_option("scale", scale, SCALES)
  rewards_N = _checks.as_float("rewards", _checks.check_rank("rewards", rewards, (1,), "[N]"))
  n = rewards_N.shape[0]
  needs_two = estimator == "rloo" or scale == "group_std"
  g = _checks.check_group_size(
      group_size, n, minimum=2 if needs_two else 1,
      why=f" for estimator={estimator!r}, scale={scale!r}" if needs_two else "")
  if scale == "batch_std" and n < 2:
    raise ValueError(f"scale='batch_std' needs at least 2 rows, got rewards of shape ({n},)")
  r_PxG = rewards_N.reshape(n // g, g)
  # Shift each group by its first reward (the formulas are shift-invariant): a
  # group of equal rewards then gives exactly 0, and float32 loses less.
  d_PxG = r_PxG - r_PxG[:, :1]
  if estimator == "grpo":
    adv_PxG = d_PxG - d_PxG.mean(axis=1, keepdims=True)
  else:
    others_mean_PxG = (d_PxG.sum(axis=1, keepdims=True) - d_PxG) / (g - 1)
    adv_PxG = d_PxG - others_mean_PxG
  if scale == "group_std":
    adv_PxG = adv_PxG / (r_PxG.std(axis=1, ddof=1, keepdims=True) + eps)
  elif scale == "batch_std":
    adv_PxG = adv_PxG / (rewards_N.std(ddof=1) + eps)
  return adv_PxG.reshape(n)


def fork_token_mask(entropy, completion_mask, fraction: Any = 0.3) -> jax.Array:
  """The top-`fraction` completion tokens of each row by entropy ("fork tokens").

  NOT the paper's HICRA selection (the paper amplifies SG tokens); it is the
  high-entropy "forking token" selection the paper compares planning tokens
  with (its Fig. 9/10 use the top 30%). In row i with L_i completion tokens,
  the k_i = floor(fraction * L_i + 0.5) tokens of largest entropy are selected
  (k_i = L_i * fraction rounded to nearest, halves up, in float32); ties go to
  the earlier position. Tokens outside completion_mask are never selected.

  Args:
    entropy: f32[N, T] next-token entropy at each position (e.g. from
      `hicra_jax.models.token_logprobs_and_entropy`).
    completion_mask: bool[N, T] completion tokens.
    fraction: q in [0, 1] (may be traced; checked when concrete).

  Returns:
    bool[N, T], exactly k_i true entries in row i.
  """
  entropy_NxT = _checks.as_float("entropy", _checks.check_rank("entropy", entropy, (2,), "[N, T]"))
  mask_NxT = _checks.check_mask("completion_mask", completion_mask, entropy_NxT.shape,
                                "[N, T] like entropy")
  _checks.check_range("fork_fraction", fraction, 0.0, 1.0)
  lengths_N = mask_NxT.sum(axis=1)
  k_N = jnp.floor(jnp.asarray(fraction, jnp.float32) * lengths_N + 0.5).astype(jnp.int32)
  key_NxT = jnp.where(mask_NxT, entropy_NxT, -jnp.inf)
  order_NxT = jnp.argsort(-key_NxT, axis=1, stable=True)  # positions, highest entropy first
  rank_NxT = jnp.argsort(order_NxT, axis=1, stable=True)  # rank of each position
  return mask_NxT & (rank_NxT < k_N[:, None])


def longer_than_group_mean(lengths, group_size: int) -> jax.Array:
  """bool[N]: row i is strictly longer than the mean length of its group.

  Args:
    lengths: [N] completion lengths (any real dtype).
    group_size: G, a Python int dividing N (static).
  """
  lengths_N = _checks.as_float("lengths", _checks.check_rank("lengths", lengths, (1,), "[N]"))
  n = lengths_N.shape[0]
  g = _checks.check_group_size(group_size, n)
  l_PxG = lengths_N.reshape(n // g, g)
  return (l_PxG > l_PxG.mean(axis=1, keepdims=True)).reshape(n)


def hicra_advantages(advantages, planning_mask, alpha: Any = 0.2, completion_mask=None, *,
                     amplify: str = "planning", entropy=None, fork_fraction: Any = 0.3,
                     gate: str = "none", group_size: int | None = None,
                     correct=None) -> jax.Array:
  """HICRA token advantages: A + alpha * |A| on planning tokens, A elsewhere.

  The paper's formula (defaults amplify="planning", gate="none"): for token t
  of row i with advantage A_{i,t} (A_i broadcast when advantages is [N]),

    HICRA_{i,t} = A_{i,t} + alpha * |A_{i,t}|  if t is a planning token of row i
                = A_{i,t}                      otherwise,
    and 0 outside completion_mask.

  So on planning tokens a positive A becomes (1 + alpha) A and a negative A
  becomes (1 - alpha) A; alpha in [0, 1] never flips the sign. alpha=0 or an
  all-false planning mask gives A back exactly.

  Variants (NOT the paper's formula; options for ablations):
    amplify="fork": amplify the top-`fork_fraction` tokens of each row by
      entropy (`fork_token_mask`) instead of the planning tokens.
    amplify="planning_or_fork": amplify the union of both sets.
    gate="correct_and_longer": amplify only in rows that are correct and
      strictly longer than their group's mean completion length (the gated
      variant described by some public ports, attributed there to unreleased
      code; unverified). Other rows keep plain A.

  Args:
    advantages: f32[N] (broadcast over tokens) or f32[N, T].
    planning_mask: bool[N, T] planning tokens (`hicra_jax.planning.planning_mask`);
      may be None when amplify="fork" (and is ignored then).
    alpha: amplification in [0, 1] (0.2 in the paper); may be traced, checked
      when concrete.
    completion_mask: optional bool[N, T]; positions outside it are set to 0.
      Required by amplify="fork"/"planning_or_fork" and gate="correct_and_longer".
    amplify: "planning" (paper), "fork" or "planning_or_fork" (static).
    entropy: f32[N, T] token entropies, required when amplify uses fork tokens.
    fork_fraction: q for the fork-token selection (default 0.3).
    gate: "none" (paper) or "correct_and_longer" (static).
    group_size: G (static int dividing N), required by the gate.
    correct: optional bool[N] for the gate; default: the row's advantage is
      positive (A_i > 0, or the completion-token mean of A_{i,:} > 0), which
      for 0/1 rewards is "correct in a group that is not all correct".

  Returns:
    f32[N, T] token advantages.

  Raises:
    ValueError: inconsistent shapes, a missing input the chosen option needs,
      an unknown option, or a concrete alpha outside [0, 1].
  """
  _checks.check_option("amplify", amplify, AMPLIFY)
  _checks.check_option("gate", gate, GATES)
  _checks.check_range("alpha", alpha, 0.0, 1.0)
  adv = _checks.as_float("advantages", _checks.check_rank(
      "advantages", advantages, (1, 2), "[N] or [N, T]"))
  uses_planning = amplify in ("planning", "planning_or_fork")
  uses_fork = amplify in ("fork", "planning_or_fork")
  if uses_planning and planning_mask is None:
    raise ValueError(f"planning_mask is required for amplify={amplify!r}, got None")
  if uses_fork and (entropy is None or completion_mask is None):
    raise ValueError(f"amplify={amplify!r} needs entropy and completion_mask (both [N, T]), "
                     f"got entropy={'None' if entropy is None else 'array'}, completion_mask="
                     f"{'None' if completion_mask is None else 'array'}")
  if gate == "correct_and_longer" and (completion_mask is None or group_size is None):
    raise ValueError(f"gate={gate!r} needs completion_mask and group_size, got "
                     f"completion_mask={'None' if completion_mask is None else 'array'}, "
                     f"group_size={group_size!r}")

  # The [N, T] shape comes from the first 2-D input; all others must agree.
  named = [("planning_mask", planning_mask if uses_planning else None),
           ("completion_mask", completion_mask), ("entropy", entropy if uses_fork else None),
           ("advantages", adv if adv.ndim == 2 else None)]
  named = [(k, jnp.asarray(v)) for k, v in named if v is not None]
  if not named:
    raise ValueError("cannot infer T: advantages is [N] and no [N, T] mask was given")
  first, ref = named[0]
  _checks.check_rank(first, ref, (2,), "[N, T]")
  shape = tuple(ref.shape)
  for k, v in named[1:]:
    _checks.check_shape(k, v, shape, f"[N, T] like {first}")
  if adv.ndim == 1 and adv.shape[0] != shape[0]:
    raise ValueError(f"advantages of shape [N] must have N={shape[0]} rows like {first}, "
                     f"got shape {tuple(adv.shape)}")
  adv_NxT = jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, shape)

  cmask_NxT = (None if completion_mask is None else
               _checks.check_mask("completion_mask", completion_mask, shape, "[N, T]"))
  select_NxT = jnp.zeros(shape, jnp.bool_)
  if uses_planning:
    select_NxT |= _checks.check_mask("planning_mask", planning_mask, shape, "[N, T]")
  if uses_fork:
    select_NxT |= fork_token_mask(entropy, cmask_NxT, fork_fraction)
  if gate == "correct_and_longer":
    n = shape[0]
    if correct is None:
      if adv.ndim == 1:
        row_adv_N = adv
      else:
        count_N = jnp.maximum(cmask_NxT.sum(axis=1), 1)
        row_adv_N = jnp.where(cmask_NxT, adv, 0).sum(axis=1) / count_N
      correct_N = row_adv_N > 0
    else:
      correct_N = _checks.check_mask("correct", correct, (n,), "[N]")
    longer_N = longer_than_group_mean(cmask_NxT.sum(axis=1), group_size)
    select_NxT &= (correct_N & longer_N)[:, None]

  alpha = jnp.asarray(alpha, adv_NxT.dtype)
  out_NxT = jnp.where(select_NxT, adv_NxT + alpha * jnp.abs(adv_NxT), adv_NxT)
  if cmask_NxT is not None:
    out_NxT = jnp.where(cmask_NxT, out_NxT, 0)
  return out_NxT
