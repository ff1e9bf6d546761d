"""Train state and optimizer: params, optax AdamW with warmup + constant/cosine schedule.

Precision policy: the master weights (and AdamW moments) are kept in the
params' own dtype, float32 by default; the decoder casts them to its
`compute_dtype` (bfloat16 on accelerators in the presets) on use, and losses,
log-probs and entropies are computed in float32 (see `hicra_jax.rl`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from hicra_jax import multihost, options

SCHEDULES = options.SCHEDULES


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  """Everything the jitted update changes (a pytree; donated to `update`).

  Attributes:
    params: the policy's `nnx.State` (merge with the graphdef to get a Decoder).
    opt_state: optax state of `make_optimizer`.
    step: i32[] number of RL steps completed.
    consecutive_skips: i32[] optimizer updates skipped in a row by the NaN/inf guard.
    total_skips: i32[] skipped updates over the whole run.
  """

  params: Any
  opt_state: Any
  step: jax.Array
  consecutive_skips: jax.Array
  total_skips: jax.Array


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW + schedule + clipping (hashable: a static argument of jit).

  lr: peak learning rate. warmup_steps: linear warmup over this many optimizer
  updates (lr * (k + 1) / warmup_steps at update k). schedule: "constant" or
  "cosine" (decays to lr * final_lr_fraction at total_steps). max_grad_norm:
  global-norm clipping (0 disables).
  """

  lr: float = 1e-6
  warmup_steps: int = 0
  schedule: str = "constant"
  total_steps: int = 1000
  final_lr_fraction: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_grad_norm: float = 1.0

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"OptimizerConfig.schedule = {self.schedule!r}: expected one of "
                       f"{list(SCHEDULES)}")
    if not self.lr > 0:
      raise ValueError(f"OptimizerConfig.lr = {self.lr!r}: expected > 0")
    if self.warmup_steps < 0 or self.total_steps < 1:
      raise ValueError("OptimizerConfig.warmup_steps must be >= 0 and total_steps >= 1, got "
                       f"{self.warmup_steps}, {self.total_steps}")


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """count (i32[], optimizer updates applied) -> f32[] learning rate (optax schedules).

  Warmup: lr * (k + 1) / warmup_steps at update k < warmup_steps (so the first
  update already moves). Then "constant": lr; "cosine": from lr at update
  warmup_steps down to lr * final_lr_fraction at total_steps, constant after.
  """
  if cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(
        cfg.lr, decay_steps=max(cfg.total_steps - cfg.warmup_steps, 1),
        alpha=cfg.final_lr_fraction)
  else:
    after = optax.constant_schedule(cfg.lr)
  if not cfg.warmup_steps:
    return after
  if cfg.warmup_steps == 1:  # its one warmup update is already at the full rate
    warmup = optax.constant_schedule(cfg.lr)
  else:
    warmup = optax.linear_schedule(cfg.lr / cfg.warmup_steps, cfg.lr,
                                   transition_steps=cfg.warmup_steps - 1)
  return optax.join_schedules([warmup, after], boundaries=[cfg.warmup_steps])


@functools.lru_cache(maxsize=64)
def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """clip_by_global_norm(max_grad_norm) then AdamW(schedule).

  Cached per config: the optimizer is a static argument of the jitted update,
  so equal configs must give the same object to share compiled programs.
  """
  parts = []
  if cfg.max_grad_norm:
    parts.append(optax.clip_by_global_norm(cfg.max_grad_norm))
  parts.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  return optax.chain(*parts)


def create_train_state(model: nnx.Module, optimizer: optax.GradientTransformation
                       ) -> tuple[nnx.GraphDef, TrainState]:
  """(graphdef, TrainState) of a model; the graphdef is the static half."""
  graphdef, params = nnx.split(model)
  zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the state is donated
  state = TrainState(params=params, opt_state=optimizer.init(params), step=zero(),
                     consecutive_skips=zero(), total_skips=zero())
  mesh = getattr(model, "mesh", None)
  if mesh is not None:  # counters replicated over the mesh, as the update returns them
    replicated = NamedSharding(mesh, PartitionSpec())
    state = jax.tree_util.tree_map(
        lambda x: multihost.put(np.asarray(x), replicated)
        if isinstance(x.sharding, jax.sharding.SingleDeviceSharding) else x, state)
  return graphdef, state


def optimizer_count(state: TrainState) -> jax.Array:
  """Optimizer updates applied so far (the schedule's count, AdamW's step counter)."""
  found = optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")
  return found[0][1] if found else jnp.zeros((), jnp.int32)
