"""Greedy decoding with the KV cache: the interim generator of the quickstart.

To be superseded by the full sampler (`generate`, SamplingParams, Rollout) of the
sampler issue; kept small on purpose.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax.models.decoder import Decoder, KVCache


def _bucket(n: int, minimum: int = 16) -> int:
  """Next power of two (>= minimum): a handful of compiled shapes, not one per batch."""
  return max(minimum, 1 << (n - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens"))
def _greedy(graphdef, state, tokens_NxP, mask_NxP, stop_ids, max_new_tokens: int):
  model = nnx.merge(graphdef, state)
  n, p = tokens_NxP.shape
  cache = KVCache.init(model.config, n, p + max_new_tokens, model.compute_dtype)
  logits, cache = model.decode(tokens_NxP, cache, mask_NxP)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
  out = jnp.zeros((n, max_new_tokens), jnp.int32).at[:, 0].set(first)
  done = jnp.isin(first, stop_ids)

  def cond(carry):
    step, _, _, done, _ = carry
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    step, last, out, done, cache = carry
    logits, cache = model.decode(last[:, None], cache)
    nxt = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, 0, nxt)
    out = out.at[:, step].set(nxt)
    done = done | jnp.isin(nxt, stop_ids)
    return step + 1, nxt, out, done, cache

  _, _, out, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), first, out, done, cache))
  return out


def greedy_generate(model: Decoder, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                    stop_ids: Sequence[int] = ()) -> list[list[int]]:
  """Greedy completions of left-padded prompts; each stops after its first stop token.

  Returns one list of new token ids per prompt (the stop token included).
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
    raise ValueError("prompt_ids must be a non-empty list of non-empty token-id lists")
  width = _bucket(max(len(p) for p in prompt_ids))
  tokens = np.zeros((len(prompt_ids), width), np.int32)
  mask = np.zeros((len(prompt_ids), width), bool)
  for i, p in enumerate(prompt_ids):
    tokens[i, width - len(p):], mask[i, width - len(p):] = p, True
  graphdef, state = nnx.split(model)
  stops = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
  out = np.asarray(_greedy(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask), stops,
                           max_new_tokens))
  results = []
  for row in out:
    ids = row.tolist()
    cut = next((j + 1 for j, t in enumerate(ids) if t in set(stop_ids)), len(ids))
    results.append(ids[:cut])
  return results
