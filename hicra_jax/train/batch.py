"""One update's `Batch` from a step's rollouts: planning masks, token
advantages, prompt + completion sequences, reference log-probs, and the rows
placed over the mesh.

N = P x G rows, T completion positions, S = prompt bucket + T positions,
Z Strategic Grams.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax import multihost, sharding
from hicra_jax.sampling.sampler import bucket_length
from hicra_jax.train import step as step_lib
from hicra_jax.train.rollout import StepRollouts

# (tokens i32[N, T], completion_mask bool[N, T]) -> (planning bool[N, T], sg counts i32[N, Z])
Planner = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class CreditOptions:
  """How rewards become token advantages (`step.token_advantages`'s options)."""

  algorithm: str
  alpha: float
  group_size: int
  estimator: str = "grpo"
  scale: str = "none"


@dataclasses.dataclass(frozen=True)
class TokenCredit:
  """Device arrays: loss_mask_NxT (completion tokens in the loss), planning_NxT,
  sg_counts_NxZ (occurrences of each SG per row) and advantages_NxT."""

  loss_mask_NxT: jax.Array
  planning_NxT: jax.Array
  sg_counts_NxZ: jax.Array
  advantages_NxT: jax.Array


def _rows_on_mesh(x_N, mesh) -> jax.Array:
  """A host array that every process holds in full, its rows split over the mesh's batch axes."""
  return multihost.put(x_N, None if mesh is None else sharding.batch_sharding(mesh, x_N.ndim))


def token_credit(rollouts: StepRollouts, planner: Planner, options: CreditOptions, *,
                 mesh=None) -> TokenCredit:
  """Planning tokens of the rollouts and each token's advantage (dispatched, not awaited)."""
  loss_mask_NxT = rollouts.loss_mask_NxT
  planning_NxT, sg_counts_NxZ = planner(rollouts.tokens_NxT, loss_mask_NxT)
  advantages_NxT = step_lib.token_advantages(
      _rows_on_mesh(rollouts.rewards_N, mesh), planning_NxT, loss_mask_NxT, options.alpha,
      algorithm=options.algorithm, group_size=options.group_size,
      estimator=options.estimator, scale=options.scale)
  return TokenCredit(loss_mask_NxT, planning_NxT, sg_counts_NxZ, advantages_NxT)


_join_sequences = jax.jit(step_lib.join_sequences)


def place_vision(vision, mesh):
  """The prompts' host `VisionInputs` on device, whole on every device (None: None).

  Not split like rows: each micro-batch takes its rows' prompts from it, on
  whichever device the rows are.
  """
  if vision is None:
    return None
  replicated = None if mesh is None else jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec())
  return jax.tree_util.tree_map(lambda x: multihost.put(x, replicated), vision)


def assemble_batch(rollouts: StepRollouts, credit: TokenCredit, *, group_size: int,
                   prompt_buckets: Sequence[int], update_cfg: step_lib.UpdateConfig,
                   graphdef: Any = None, ref_params: Any = None, mesh=None,
                   vision=None) -> step_lib.Batch:
  """The update's `Batch`: each prompt left-padded to its bucket, then its completions.

  Sampler log-probs are uploaded only when update_cfg.old_logprobs reads them;
  reference log-probs (a forward pass of `ref_params`) only with a KL term.
  With a mesh, rows are split over its batch axes (data x fsdp).
  vision: the rollouts' prompts' images on device (`place_vision`), or None;
  with it the batch gets prompt_index (row i: prompt i // group_size).
  """
  prompt_len = bucket_length(max(len(prompt) for prompt in rollouts.prompts),
                             tuple(prompt_buckets))
  prompt_tokens_NxI, prompt_mask_NxI = step_lib.prompt_block(rollouts.prompts, group_size,
                                                             prompt_len)
  tokens_NxS, attention_NxS = _join_sequences(
      _rows_on_mesh(prompt_tokens_NxI, mesh), _rows_on_mesh(prompt_mask_NxI, mesh),
      rollouts.tokens_NxT, rollouts.loss_mask_NxT)
  sampler_logprobs_NxT = ref_logprobs_NxT = prompt_index_N = None
  if vision is not None:
    prompt_index_N = _rows_on_mesh(
        np.repeat(np.arange(len(rollouts.prompts), dtype=np.int32), group_size), mesh)
  if update_cfg.old_logprobs == "sampler":
    sampler_logprobs_NxT = rollouts.logprobs_NxT
  if update_cfg.kl_coef:
    ref_logprobs_NxT, _ = step_lib.policy_logprobs(
        graphdef, ref_params, tokens_NxS, attention_NxS, jnp.float32(update_cfg.temperature),
        num_completion=rollouts.tokens_NxT.shape[1], micro_batches=update_cfg.micro_batches,
        vision=vision, prompt_index_N=prompt_index_N)
  batch = step_lib.Batch(
      tokens=tokens_NxS, attention=attention_NxS, completion_mask=credit.loss_mask_NxT,
      advantages=credit.advantages_NxT, sampler_logprobs=sampler_logprobs_NxT,
      planning_mask=credit.planning_NxT, ref_logprobs=ref_logprobs_NxT,
      prompt_index=prompt_index_N)
  return place_rows(batch, mesh)


def place_rows(batch: step_lib.Batch, mesh) -> step_lib.Batch:
  """`batch` with its rows split over the mesh's data x fsdp axes (as is without a mesh)."""
  if mesh is None:
    return batch
  return jax.tree_util.tree_map(
      lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim)), batch)
