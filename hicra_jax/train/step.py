"""Pure, jittable pieces of one RL step: sequences, log-probs, advantages, the update.

Shapes: N rows (= P prompts x G samples, a prompt's samples contiguous),
P_len prompt positions (left-padded), T completion positions, S = P_len + T.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hicra_jax import options, rl
from hicra_jax.models.logprobs import token_logprobs_and_entropy
from hicra_jax.train.state import TrainState

ALGORITHMS = options.ALGORITHMS
OLD_LOGPROBS = ("policy", "sampler")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Batch:
  """One update's data (device arrays).

  tokens: i32[N, S] prompt (left-padded) + completion; attention: bool[N, S]
  real tokens; completion_mask: bool[N, T] completion tokens in the loss;
  advantages: f32[N, T]; sampler_logprobs: f32[N, T] from the sampler (None
  unless UpdateConfig.old_logprobs == "sampler"); planning_mask: bool[N, T];
  ref_logprobs: f32[N, T] of a frozen reference (None without a KL term).
  """

  tokens: jax.Array
  attention: jax.Array
  completion_mask: jax.Array
  advantages: jax.Array
  sampler_logprobs: jax.Array | None
  planning_mask: jax.Array
  ref_logprobs: jax.Array | None


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """Static options of `update` (hashable).

  micro_batches: K; N must be divisible by K (gradients of the K slices are
  summed; the loss's denominator is the full batch's, so the result equals the
  unsliced update). epochs: PPO epochs (optimizer updates) over the batch.
  old_logprobs: "policy" (default: the policy's own log-probs before the
  update, taken from the first epoch's forward pass, which runs on the
  unchanged params) or "sampler" (the rollout's log-probs).
  temperature: the sampler's temperature (log-probs of logits / temperature).
  """

  clip_low: float = 0.2
  clip_high: float = 0.28
  aggregation: str = "token-mean"
  dual_clip: float | None = None
  entropy_coef: float = 0.0
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  norm_constant: float | None = None
  micro_batches: int = 1
  epochs: int = 1
  old_logprobs: str = "policy"
  temperature: float = 1.0

  def __post_init__(self):
    if self.old_logprobs not in OLD_LOGPROBS:
      raise ValueError(f"UpdateConfig.old_logprobs = {self.old_logprobs!r}: expected one of "
                       f"{list(OLD_LOGPROBS)}")
    if self.micro_batches < 1 or self.epochs < 1:
      raise ValueError("UpdateConfig.micro_batches and epochs must be >= 1, got "
                       f"{self.micro_batches}, {self.epochs}")


# ------------------------------------------------------------------ host side


def build_sequences(prompts: Sequence[Sequence[int]], completion_tokens: np.ndarray,
                    completion_mask: np.ndarray, group_size: int,
                    prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Host numpy: (tokens i32[N, S], attention bool[N, S]) with S = prompt_len + T.

  Row i is prompt i // group_size left-padded to prompt_len, then the
  completion (whose padding is masked out).
  """
  n, t = completion_tokens.shape
  if n != len(prompts) * group_size:
    raise ValueError(f"{n} completion rows for {len(prompts)} prompts x group_size "
                     f"{group_size}; expected {len(prompts) * group_size}")
  tokens = np.zeros((n, prompt_len + t), np.int32)
  attention = np.zeros((n, prompt_len + t), bool)
  for i, ids in enumerate(prompts):
    if len(ids) > prompt_len:
      raise ValueError(f"prompt {i} has {len(ids)} tokens > prompt_len {prompt_len}")
    rows = slice(i * group_size, (i + 1) * group_size)
    tokens[rows, prompt_len - len(ids):prompt_len] = np.asarray(ids, np.int32)
    attention[rows, prompt_len - len(ids):prompt_len] = True
  tokens[:, prompt_len:] = np.where(completion_mask, completion_tokens, 0)
  attention[:, prompt_len:] = completion_mask
  return tokens, attention


# ---------------------------------------------------------------- device side


def split_micro_batches(x, k: int):
  """[N, ...] -> [K, N/K, ...], micro-batch j = rows j, j + K, j + 2K, ...

  Strided, not contiguous: with rows sharded in contiguous blocks over the
  mesh's batch axes, every micro-batch keeps rows on every device, so the scan
  over micro-batches needs no resharding. Sums over micro-batches are unchanged.
  """
  return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)


def merge_micro_batches(x):
  """The inverse of `split_micro_batches`: [K, N/K, ...] -> [N, ...]."""
  return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def completion_logprobs(model, tokens_NxS, attention_NxS, num_completion: int,
                        temperature=1.0):
  """(log-probs f32[N, T], entropies f32[N, T]) of the T completion tokens.

  Only the hidden states that score completion tokens go through the head.
  """
  s = tokens_NxS.shape[1]
  p = s - num_completion
  hidden, _ = model.hidden_states(tokens_NxS, attention_NxS)
  return token_logprobs_and_entropy(hidden[:, p - 1:s - 1], model.head_weight(),
                                    tokens_NxS[:, p:], temperature)


@functools.partial(jax.jit, static_argnames=("graphdef", "num_completion", "micro_batches"))
def policy_logprobs(graphdef, params, tokens_NxS, attention_NxS, temperature, *,
                    num_completion: int, micro_batches: int = 1):
  """Jitted `completion_logprobs` over K micro-batches (e.g. a frozen reference model)."""
  model = nnx.merge(graphdef, params)
  split = lambda x: split_micro_batches(x, micro_batches)
  lp, ent = jax.lax.map(
      lambda xs: completion_logprobs(model, xs[0], xs[1], num_completion, temperature),
      (split(tokens_NxS), split(attention_NxS)))
  return merge_micro_batches(lp), merge_micro_batches(ent)


@functools.partial(jax.jit, static_argnames=("algorithm", "group_size", "estimator", "scale"))
def token_advantages(rewards_N, planning_mask_NxT, completion_mask_NxT, alpha=0.2, *,
                     algorithm: str = "hicra", group_size: int, estimator: str = "grpo",
                     scale: str = "none"):
  """f32[N, T] token advantages: GRPO's A_i everywhere, HICRA's A + alpha|A| on planning."""
  if algorithm not in ALGORITHMS:
    raise ValueError(f"algorithm {algorithm!r}: expected one of {list(ALGORITHMS)}")
  adv_N = rl.grpo_advantages(rewards_N, group_size, estimator=estimator, scale=scale)
  if algorithm == "hicra":
    return rl.hicra_advantages(adv_N, planning_mask_NxT, alpha, completion_mask_NxT)
  return jnp.where(completion_mask_NxT, adv_N[:, None], 0.0)


def _global_norm(tree):
  norm = getattr(getattr(optax, "tree", None), "norm", None)
  return norm(tree) if norm is not None else optax.global_norm(tree)


def _masked_mean(x, mask):
  count = mask.sum(dtype=jnp.int32).astype(jnp.float32)
  return jnp.where(count > 0, jnp.where(mask, x, 0.0).sum() / jnp.maximum(count, 1.0), 0.0)


def diagnostics(logprobs_NxT, entropy_NxT, batch: Batch) -> dict[str, jax.Array]:
  """Token entropy / log-perplexity / advantage on planning vs execution tokens."""
  cm = batch.completion_mask
  plan = cm & batch.planning_mask
  execu = cm & ~batch.planning_mask
  n_tok = cm.sum(dtype=jnp.int32).astype(jnp.float32)
  return {
      "entropy": _masked_mean(entropy_NxT, cm),
      "entropy_planning": _masked_mean(entropy_NxT, plan),
      "entropy_execution": _masked_mean(entropy_NxT, execu),
      "log_ppl_planning": _masked_mean(-logprobs_NxT, plan),
      "log_ppl_execution": _masked_mean(-logprobs_NxT, execu),
      "planning_token_ratio": jnp.where(
          n_tok > 0, plan.sum(dtype=jnp.int32).astype(jnp.float32) / jnp.maximum(n_tok, 1.0), 0.0),
      "advantage_planning": _masked_mean(batch.advantages, plan),
      "advantage_execution": _masked_mean(batch.advantages, execu),
  }


@functools.partial(jax.jit, static_argnames=("graphdef", "optimizer", "cfg"), donate_argnums=(0,))
def update(state: TrainState, batch: Batch, *, graphdef, optimizer: optax.GradientTransformation,
           cfg: UpdateConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """One RL update: `cfg.epochs` optimizer steps over the batch, micro-batched.

  The NaN/inf guard: an optimizer step whose loss or gradient norm is not
  finite leaves params and optimizer state unchanged and counts a skip
  (`state.consecutive_skips` resets on the next finite step).

  Args:
    state: donated; the returned state replaces it.
    batch: `Batch` with N rows (N divisible by cfg.micro_batches).
    graphdef: the policy's static graph (`create_train_state`).
    optimizer, cfg: static.

  Returns:
    (new state with step + 1, metrics: scalars f32[]).
  """
  n, t = batch.completion_mask.shape
  k = cfg.micro_batches
  if n % k:
    raise ValueError(f"batch of {n} rows cannot be split into {k} micro-batches")
  denominator = rl.loss_denominator(batch.completion_mask, cfg.aggregation)
  split = lambda x: split_micro_batches(x, k)
  merge = merge_micro_batches
  mbs = jax.tree_util.tree_map(split, batch)
  use_entropy = cfg.entropy_coef != 0.0
  use_kl = cfg.kl_coef != 0.0

  def loss_fn(params, mb: Batch, old_lp):
    model = nnx.merge(graphdef, params)
    lp, ent = completion_logprobs(model, mb.tokens, mb.attention, t, cfg.temperature)
    old = jax.lax.stop_gradient(lp) if old_lp is None else old_lp
    loss, m = rl.policy_loss(
        lp, old, mb.advantages, mb.completion_mask, clip_low=cfg.clip_low,
        clip_high=cfg.clip_high, aggregation=cfg.aggregation, dual_clip=cfg.dual_clip,
        norm_constant=cfg.norm_constant, denominator=denominator,
        ref_logprobs=mb.ref_logprobs if use_kl else None, kl_coef=cfg.kl_coef,
        kl_estimator=cfg.kl_estimator, entropy=ent if use_entropy else None,
        entropy_coef=cfg.entropy_coef)
    return loss, (m, lp, ent)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  params, opt_state = state.params, state.opt_state
  skips, total_skips = state.consecutive_skips, state.total_skips
  old_all = split(batch.sampler_logprobs) if cfg.old_logprobs == "sampler" else None
  epoch_metrics = []
  diag = {}
  for epoch in range(cfg.epochs):
    def body(acc, xs, params=params):
      mb, old_mb = xs
      (_, (m, lp, ent)), g = grad_fn(params, mb, old_mb)
      return jax.tree_util.tree_map(jnp.add, acc, g), (m, lp, ent)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    grads, (ms, lps, ents) = jax.lax.scan(body, zeros, (mbs, old_all))
    if epoch == 0:
      # The first epoch's forward pass runs on the pre-update params: these
      # are the policy's old log-probs and the step's diagnostics.
      diag = diagnostics(merge(lps), merge(ents), batch)
      if old_all is None:
        old_all = jax.lax.stop_gradient(lps)
    # Local denominators of disjoint row sets add up to the full batch's.
    loss = rl.combine_accumulated(ms["loss_numerator"], ms["loss_denominator"])
    weights = ms["num_tokens"] / jnp.maximum(ms["num_tokens"].sum(), 1.0)
    tok_mean = lambda key: (ms[key] * weights).sum()
    grad_norm = _global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(finite, a, b), new, old)
    params, opt_state = keep(new_params, params), keep(new_opt_state, opt_state)
    skips = jnp.where(finite, 0, skips + 1)
    total_skips = total_skips + jnp.where(finite, 0, 1)
    em = {"loss": loss, "grad_norm": grad_norm, "update_finite": finite.astype(jnp.float32)}
    for key in ("clip_frac_low", "clip_frac_high", "approx_kl", "ratio_mean"):
      em[key] = tok_mean(key)
    if use_kl:  # KL(pi || pi_ref), aggregated like the loss
      em["kl_ref"] = rl.combine_accumulated(ms["kl"] * ms["loss_denominator"],
                                            ms["loss_denominator"])
    epoch_metrics.append(em)

  metrics = {key: jnp.mean(jnp.stack([em[key] for em in epoch_metrics]))
             for key in epoch_metrics[0]}
  metrics.update(diag)
  metrics["clip_frac"] = metrics["clip_frac_low"] + metrics["clip_frac_high"]
  new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                         consecutive_skips=skips, total_skips=total_skips)
  return new_state, metrics
