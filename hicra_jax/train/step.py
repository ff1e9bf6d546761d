"""Pure, jittable pieces of one RL step: sequences, log-probs, advantages, the update.

Shapes: N rows (= P prompts x G samples, a prompt's samples contiguous),
P_len prompt positions (left-padded), T completion positions, S = P_len + T.

Images (vision-language models): the P prompts' images are one
`hicra_jax.models.VisionInputs` of P rows (`vision`, kept whole on every
device), and `Batch.prompt_index` i32[N] names each row's prompt; every
forward pass takes its rows' images from it (a prompt's G samples share them).
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
OLD_LOGPROBS = options.OLD_LOGPROBS


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Batch:
  """One update's data (device arrays).

  tokens: i32[N, S] prompt (left-padded) + completion; attention: bool[N, S]
  real tokens; completion_mask: bool[N, T] completion tokens in the loss;
  advantages: f32[N, T]; sampler_logprobs: f32[N, T] from the sampler (None
  unless UpdateConfig.old_logprobs == "sampler"); planning_mask: bool[N, T];
  ref_logprobs: f32[N, T] of a frozen reference (None without a KL term);
  prompt_index: i32[N] each row's row in the update's `vision` (None without images).
  """

  tokens: jax.Array
  attention: jax.Array
  completion_mask: jax.Array
  advantages: jax.Array
  sampler_logprobs: jax.Array | None
  planning_mask: jax.Array
  ref_logprobs: jax.Array | None
  prompt_index: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """Static options of `update` (hashable).

  mini_batches: B optimizer steps per epoch ([DAPO]: 16 per batch); the N rows
  are split into B mini-batches of N / B rows (shuffled with `update`'s key),
  each one optimizer step whose loss denominator (token-mean: its completion
  tokens) is the mini-batch's. micro_batches: M slices PER MINI-BATCH (a
  trainer sets M = rows per mini-batch // rows per micro-batch); their
  gradients are summed with the mini-batch's denominator, so the step equals
  the unsliced one. N must be divisible by B x M (see `split_sizes`).
  epochs: PPO epochs over the batch (epochs x B optimizer steps in all).
  old_logprobs: "policy" (default: the policy's own log-probs before the
  update, all rows scored by the unchanged params before the first step) or
  "sampler" (the rollout's log-probs).
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
  mini_batches: int = 1
  epochs: int = 1
  old_logprobs: str = "policy"
  temperature: float = 1.0

  def __post_init__(self):
    if self.old_logprobs not in OLD_LOGPROBS:
      raise ValueError(f"UpdateConfig.old_logprobs = {self.old_logprobs!r}: expected one of "
                       f"{list(OLD_LOGPROBS)}")
    for name in ("mini_batches", "micro_batches", "epochs"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"UpdateConfig.{name} = {value!r}: expected an integer >= 1")

  def split_sizes(self, n: int) -> tuple[int, int]:
    """(rows per mini-batch, rows per micro-batch) of an N-row batch.

    Raises:
      ValueError: N not divisible by mini_batches, or a mini-batch's rows not
        divisible by micro_batches.
    """
    m, k = self.mini_batches, self.micro_batches
    if n % m:
      raise ValueError(f"a batch of {n} rows cannot be split into mini_batches={m} "
                       f"mini-batches: expected N divisible by {m}")
    if (n // m) % k:
      raise ValueError(f"a mini-batch of {n // m} rows ({n} rows / mini_batches={m}) cannot be "
                       f"split into micro_batches={k} micro-batches: expected N divisible by "
                       f"mini_batches x micro_batches = {m * k}")
    return n // m, n // (m * k)


# ------------------------------------------------------------------ host side


def prompt_block(prompts: Sequence[Sequence[int]], group_size: int,
                 prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Host numpy: (tokens i32[N, prompt_len], mask bool[N, prompt_len]), N = P x group_size.

  Row i is prompt i // group_size, left-padded to prompt_len.
  """
  n = len(prompts) * group_size
  tokens = np.zeros((n, prompt_len), np.int32)
  mask = np.zeros((n, prompt_len), bool)
  for i, ids in enumerate(prompts):
    if len(ids) > prompt_len:
      raise ValueError(f"prompt {i} has {len(ids)} tokens > prompt_len {prompt_len}")
    rows = slice(i * group_size, (i + 1) * group_size)
    tokens[rows, prompt_len - len(ids):] = np.asarray(ids, np.int32)
    mask[rows, prompt_len - len(ids):] = True
  return tokens, mask


def join_sequences(prompt_tokens_NxI, prompt_mask_NxI, completion_tokens_NxT,
                   completion_mask_NxT):
  """(tokens i32[N, S], attention bool[N, S]), S = I + T: each row's prompt, then its
  completion with the padding (and every masked token) zeroed and not attended.

  numpy in, numpy out; jax arrays in, jax arrays out (jittable).
  """
  xp = np if isinstance(completion_tokens_NxT, np.ndarray) else jnp
  completion = xp.where(completion_mask_NxT, completion_tokens_NxT, 0).astype(xp.int32)
  return (xp.concatenate([xp.asarray(prompt_tokens_NxI, xp.int32), completion], axis=1),
          xp.concatenate([xp.asarray(prompt_mask_NxI, bool),
                          xp.asarray(completion_mask_NxT, bool)], axis=1))


def build_sequences(prompts: Sequence[Sequence[int]], completion_tokens: np.ndarray,
                    completion_mask: np.ndarray, group_size: int,
                    prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Host numpy: (tokens i32[N, S], attention bool[N, S]) with S = prompt_len + T.

  Row i is prompt i // group_size left-padded to prompt_len, then the
  completion (whose padding is masked out): `prompt_block` + `join_sequences`.
  """
  n = completion_tokens.shape[0]
  if n != len(prompts) * group_size:
    raise ValueError(f"{n} completion rows for {len(prompts)} prompts x group_size "
                     f"{group_size}; expected {len(prompts) * group_size}")
  return join_sequences(*prompt_block(prompts, group_size, prompt_len),
                        np.asarray(completion_tokens), np.asarray(completion_mask))


# ---------------------------------------------------------------- device side


def split_micro_batches(x, k: int):
  """[N, ...] -> [M, N/M, ...], micro-batch j = rows j, j + M, j + 2M, ...

  Strided, not contiguous: with rows sharded in contiguous blocks over the
  mesh's batch axes, every micro-batch keeps rows on every device, so the scan
  over micro-batches needs no resharding. Sums over micro-batches are unchanged.
  """
  return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)


def merge_micro_batches(x):
  """The inverse of `split_micro_batches`: [M, N/M, ...] -> [N, ...]."""
  return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def rows_vision(vision, prompt_index_N):
  """The `VisionInputs` of N rows: row i takes `vision`'s row prompt_index_N[i] (None: text)."""
  return None if vision is None else vision.take(prompt_index_N)


def completion_logprobs(model, tokens_NxS, attention_NxS, num_completion: int,
                        temperature=1.0, *, raw: bool = False, vision=None):
  """(log-probs f32[N, T], entropies f32[N, T]) of the T completion tokens; with raw,
  also the temperature-1 (raw policy) ones (`token_logprobs_and_entropy`).

  Only the hidden states that score completion tokens go through the head.
  vision: the rows' `VisionInputs` (N rows), or None (text).
  """
  s = tokens_NxS.shape[1]
  p = s - num_completion
  hidden, _ = model.hidden_states(tokens_NxS, attention_NxS, vision=vision)
  return token_logprobs_and_entropy(hidden[:, p - 1:s - 1], model.head_weight(),
                                    tokens_NxS[:, p:], temperature, raw=raw)


def _logprobs_in_micro_batches(model, tokens_NxS, attention_NxS, num_completion: int,
                               temperature, micro_batches: int, *, raw: bool = False,
                               vision=None, prompt_index_N=None):
  """`completion_logprobs` over M strided micro-batches (forward only, one at a time).

  vision, prompt_index_N: the prompts' images and each row's prompt (see `Batch`).
  """
  split = lambda x: None if x is None else split_micro_batches(x, micro_batches)
  outs = jax.lax.map(
      lambda xs: completion_logprobs(model, xs[0], xs[1], num_completion, temperature,
                                     raw=raw, vision=rows_vision(vision, xs[2])),
      (split(tokens_NxS), split(attention_NxS), split(prompt_index_N)))
  return tuple(merge_micro_batches(x) for x in outs)


@functools.partial(jax.jit, static_argnames=("graphdef", "num_completion", "micro_batches"))
def policy_logprobs(graphdef, params, tokens_NxS, attention_NxS, temperature, *,
                    num_completion: int, micro_batches: int = 1, vision=None,
                    prompt_index_N=None):
  """Jitted `completion_logprobs` over M micro-batches (e.g. a frozen reference model).

  vision, prompt_index_N: the prompts' images and each row's prompt (see `Batch`).
  """
  return _logprobs_in_micro_batches(nnx.merge(graphdef, params), tokens_NxS, attention_NxS,
                                    num_completion, temperature, micro_batches,
                                    vision=vision, prompt_index_N=prompt_index_N)


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


def _diagnostic_sums(logprobs_NxT, entropy_NxT, batch: Batch, raw_logprobs_NxT=None,
                     raw_entropy_NxT=None) -> dict[str, tuple]:
  """{name: (numerator f32[], count f32[])} of `diagnostics`: sums add over row subsets."""
  raw_logprobs_NxT = logprobs_NxT if raw_logprobs_NxT is None else raw_logprobs_NxT
  raw_entropy_NxT = entropy_NxT if raw_entropy_NxT is None else raw_entropy_NxT
  cm = batch.completion_mask
  plan = cm & batch.planning_mask
  execu = cm & ~batch.planning_mask
  count = lambda mask: mask.sum(dtype=jnp.int32).astype(jnp.float32)
  total = lambda x, mask: jnp.where(mask, x, 0.0).sum()
  return {
      "entropy": (total(entropy_NxT, cm), count(cm)),
      "entropy_planning": (total(entropy_NxT, plan), count(plan)),
      "entropy_execution": (total(entropy_NxT, execu), count(execu)),
      "entropy_t1": (total(raw_entropy_NxT, cm), count(cm)),
      "entropy_t1_planning": (total(raw_entropy_NxT, plan), count(plan)),
      "entropy_t1_execution": (total(raw_entropy_NxT, execu), count(execu)),
      "log_ppl_planning": (total(-raw_logprobs_NxT, plan), count(plan)),
      "log_ppl_execution": (total(-raw_logprobs_NxT, execu), count(execu)),
      "planning_token_ratio": (count(plan), count(cm)),
      "advantage_planning": (total(batch.advantages, plan), count(plan)),
      "advantage_execution": (total(batch.advantages, execu), count(execu)),
  }


def _finish_diagnostics(sums) -> dict[str, jax.Array]:
  return {key: jnp.where(den > 0, num / jnp.maximum(den, 1.0), 0.0)
          for key, (num, den) in sums.items()}


def diagnostics(logprobs_NxT, entropy_NxT, batch: Batch, raw_logprobs_NxT=None,
                raw_entropy_NxT=None) -> dict[str, jax.Array]:
  """Token entropy / log-perplexity / advantage on planning vs execution tokens (means).

  entropy, entropy_planning, entropy_execution: at the sampling temperature
  (what the entropy bonus acts on); entropy_t1*: the raw policy's
  (temperature 1); log_ppl_*: the raw policy's mean NLL of the tokens. The
  raw arrays default to the tempered ones (temperature 1).
  """
  return _finish_diagnostics(_diagnostic_sums(logprobs_NxT, entropy_NxT, batch,
                                              raw_logprobs_NxT, raw_entropy_NxT))


@functools.partial(jax.jit, static_argnames=("graphdef", "optimizer", "cfg"), donate_argnums=(0,))
def update(state: TrainState, batch: Batch, shuffle_key: jax.Array | None = None, vision=None, *,
           graphdef, optimizer: optax.GradientTransformation,
           cfg: UpdateConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """One RL update: `cfg.epochs` x `cfg.mini_batches` optimizer steps, each micro-batched.

  Per epoch e the N rows are permuted with fold_in(shuffle_key, e) (no
  shuffle without a key, or with one mini-batch, where the order of rows
  cannot change the step) and split into B mini-batches of N / B rows:
  mini-batch j holds permuted rows j, j + B, j + 2B, ... (strided, like
  `split_micro_batches`, so rows sharded over devices stay spread without a
  key). Each mini-batch is one optimizer step on its own token-mean loss,
  accumulated over its M micro-batches. Mini-batches are sets of rows and may
  split a prompt's group: advantages are already per row, so nothing in a
  step needs the whole group.

  Old log-probs are fixed before the first step: "sampler" uses the batch's;
  "policy" scores every row with the unchanged params (with B = 1 the first
  step's own forward pass does it; with B > 1 a forward-only pass over the
  batch in B x M micro-batches precedes the steps), so the importance ratio
  is 1 in the first step only and clip-higher acts from the second.

  The NaN/inf guard acts per optimizer step: a step whose loss or gradient
  norm is not finite leaves params and optimizer state unchanged and counts a
  skip (`state.consecutive_skips` resets on the next finite step).

  One jitted program: a scan over epochs of a scan over mini-batches of a
  scan over micro-batches (compile time does not grow with epochs x B).

  Args:
    state: donated; the returned state replaces it.
    batch: `Batch` with N rows, N divisible by cfg.mini_batches x cfg.micro_batches.
    shuffle_key: a PRNG key (typed or raw u32[2]) shuffling rows into
      mini-batches each epoch, or None (no shuffle).
    vision: the P prompts' `VisionInputs` (batch.prompt_index names each
      row's), or None (text).
    graphdef: the policy's static graph (`create_train_state`).
    optimizer, cfg: static.

  Returns:
    (new state with step + 1, metrics: scalars f32[]): "loss", "grad_norm",
    "update_finite" (fraction of finite steps) and "kl_ref" (with a KL term)
    are means over the optimizer steps; "clip_frac_low", "clip_frac_high",
    "clip_frac", "approx_kl", "ratio_mean" are token means over all steps;
    the `diagnostics` come from the policy before the update ("policy", or
    B = 1), else from each row's forward pass in the first epoch.

  Raises:
    ValueError: N not divisible by mini_batches x micro_batches, or images
      without batch.prompt_index.
  """
  n, t = batch.completion_mask.shape
  if vision is not None and batch.prompt_index is None:
    raise ValueError("update: vision inputs need batch.prompt_index i32[N] (each row's prompt)")
  m, k = cfg.mini_batches, cfg.micro_batches
  cfg.split_sizes(n)
  use_entropy = cfg.entropy_coef != 0.0
  use_kl = cfg.kl_coef != 0.0
  shuffle = shuffle_key is not None and m > 1
  # With one mini-batch the first step runs on the unchanged params for every
  # row: its forward pass gives the old log-probs (ratio exactly 1) for free.
  old_from_first_step = cfg.old_logprobs == "policy" and m == 1
  pre_pass = cfg.old_logprobs == "policy" and m > 1
  diag = None
  if cfg.old_logprobs == "sampler":
    if batch.sampler_logprobs is None:
      raise ValueError("UpdateConfig.old_logprobs='sampler' needs batch.sampler_logprobs "
                       "f32[N, T], got None")
    old_NxT = batch.sampler_logprobs
  elif pre_pass:
    lp, ent, raw_lp, raw_ent = _logprobs_in_micro_batches(
        nnx.merge(graphdef, state.params), batch.tokens, batch.attention, t, cfg.temperature,
        m * k, raw=True, vision=vision, prompt_index_N=batch.prompt_index)
    old_NxT = jax.lax.stop_gradient(lp)
    diag = diagnostics(lp, ent, batch, raw_lp, raw_ent)
  else:  # filled by the first step
    old_NxT = jnp.zeros((n, t), jnp.float32)

  def loss_fn(params, mb: Batch, old_lp, denominator, first):
    model = nnx.merge(graphdef, params)
    lp, ent, raw_lp, raw_ent = completion_logprobs(
        model, mb.tokens, mb.attention, t, cfg.temperature, raw=True,
        vision=rows_vision(vision, mb.prompt_index))
    if old_from_first_step:
      old_lp = jnp.where(first, jax.lax.stop_gradient(lp), old_lp)
    loss, metrics = rl.policy_loss(
        lp, old_lp, mb.advantages, mb.completion_mask, clip_low=cfg.clip_low,
        clip_high=cfg.clip_high, aggregation=cfg.aggregation, dual_clip=cfg.dual_clip,
        norm_constant=cfg.norm_constant, denominator=denominator,
        ref_logprobs=mb.ref_logprobs if use_kl else None, kl_coef=cfg.kl_coef,
        kl_estimator=cfg.kl_estimator, entropy=ent if use_entropy else None,
        entropy_coef=cfg.entropy_coef)
    return loss, (metrics, lp, ent, raw_lp, raw_ent)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  token_keys = ("clip_frac_low", "clip_frac_high", "approx_kl", "ratio_mean")

  def optimizer_step(carry, rows, first):
    """One mini-batch (N / B rows): M accumulated micro-batches, then the guarded step."""
    params, opt_state, skips, total_skips = carry
    mb, old_mb = rows
    # The mini-batch's own denominator: its M slices' local ones add up to it.
    denominator = rl.loss_denominator(mb.completion_mask, cfg.aggregation)

    def micro_step(acc, xs):
      micro, old_micro = xs
      (_, (ms, lp, ent, raw_lp, raw_ent)), g = grad_fn(params, micro, old_micro, denominator,
                                                       first)
      out = (ms, _diagnostic_sums(lp, ent, micro, raw_lp, raw_ent),
             lp if old_from_first_step else None)
      return jax.tree_util.tree_map(jnp.add, acc, g), out

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    micro_xs = jax.tree_util.tree_map(lambda x: split_micro_batches(x, k), (mb, old_mb))
    grads, (ms, dsums, lps) = jax.lax.scan(micro_step, zeros, micro_xs)
    loss = rl.combine_accumulated(ms["loss_numerator"], ms["loss_denominator"])
    grad_norm = _global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(finite, a, b), new, old)
    carry = (keep(new_params, params), keep(new_opt_state, opt_state),
             jnp.where(finite, 0, skips + 1), total_skips + jnp.where(finite, 0, 1))
    sm = {"loss": loss, "grad_norm": grad_norm, "update_finite": finite.astype(jnp.float32),
          "num_tokens": ms["num_tokens"].sum()}
    for key in token_keys:  # token sums; divided by all steps' tokens at the end
      sm[key] = (ms[key] * ms["num_tokens"]).sum()
    if use_kl:  # KL(pi || pi_ref), aggregated like the loss
      sm["kl_ref"] = rl.combine_accumulated(ms["kl"] * ms["loss_denominator"],
                                            ms["loss_denominator"])
    dsums = jax.tree_util.tree_map(lambda x: x.sum(), dsums)
    return carry, (sm, dsums, None if lps is None else merge_micro_batches(lps))

  def epoch(carry, e):
    *step_carry, old = carry
    rows = (batch, old)
    if shuffle:
      perm_N = jax.random.permutation(jax.random.fold_in(shuffle_key, e), n)
      rows = jax.tree_util.tree_map(lambda x: x[perm_N], rows)
    rows = jax.tree_util.tree_map(lambda x: split_micro_batches(x, m), rows)
    step_carry, (sm, dsums, lps) = jax.lax.scan(
        lambda c, r: optimizer_step(c, r, e == 0), tuple(step_carry), rows)
    if old_from_first_step:  # B == 1: rows in batch order, lps is [1, N, T]
      old = jnp.where(e == 0, jax.lax.stop_gradient(lps[0]), old)
    return (*step_carry, old), (sm, dsums)

  init = (state.params, state.opt_state, state.consecutive_skips, state.total_skips, old_NxT)
  (params, opt_state, skips, total_skips, _), (sm, dsums) = jax.lax.scan(
      epoch, init, jnp.arange(cfg.epochs))
  # sm: {key: f32[epochs, mini_batches]}; dsums: {key: (numerators, counts)} of that shape.
  tokens = jnp.maximum(sm.pop("num_tokens").sum(), 1.0)
  metrics = {key: (sm[key].sum() / tokens if key in token_keys else sm[key].mean())
             for key in sm}
  if diag is None:  # every row's forward pass in the first epoch (pre-update when B == 1)
    diag = _finish_diagnostics(jax.tree_util.tree_map(lambda x: x[0].sum(), dsums))
  metrics.update(diag)
  metrics["clip_frac"] = metrics["clip_frac_low"] + metrics["clip_frac_high"]
  new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                         consecutive_skips=skips, total_skips=total_skips)
  return new_state, metrics
