"""Continuous batching within a step: a fixed pool of S slots decodes all of a batch's rows.

`generate_arrays` decodes a call's rows until its longest row stops, the
finished rows idling; RL completions range from tens to thousands of tokens,
so most of that work is wasted. Here:
  1. every prompt is prefilled once (in chunks of one fixed shape) and its KV
     kept; the first token of each of its n rows is sampled from its last logits;
  2. S slots (the rows of one KV cache, each with its own write slot:
     `KVCache.index` i32[S]) decode; when a row stops, its slot takes the next
     pending row of the batch: the prompt's KV is copied into the slot's first
     Lb cache slots and the rest of the slot is marked invalid.
Images (Qwen2.5-VL prompts, `vision=`) enter the prefill only: a slot takes its
prompt's KV and RoPE position, shift included, so decoding does not see them.
Refills run on the host between decode segments. A segment ends when enough
slots are free (`min_free`), when the attention window must grow (windows as
in `sampler.decode_segments`), or every `segment_tokens` steps when there is
an `interrupt` to check. Programs: one prefill, one refill and one decode per
window, for each (prompt bucket, S, rows) shape.

Row r's token t is drawn with fold_in(fold_in(rng, t), r), as in
`generate_arrays`, and each row sees the cache layout it has there (prompt
left-padded at slots [0, Lb), its token t fed at slot Lb + t), so the rows do
not depend on the slot, the schedule or S: the same tokens, masks and finish
as `generate_arrays`, and log-probs and entropy up to float32 rounding
(matmuls of other batch shapes, attention over other window widths). With S
and the window fixed (decode_window=False, or a cache below MIN_WINDOW), every
bit is the same with refill and without (min_free = S: static batches).

Several processes: every process passes the same prompts and runs the same
schedule from replicated values; rows and slots are split over the mesh's
batch axes as in the sampler.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax import multihost, sharding
from hicra_jax.models.decoder import Decoder, KVCache
from hicra_jax.models.vision_inputs import VisionInputs
from hicra_jax.sampling import sampler as S
from hicra_jax.sampling.params import SamplingParams, prompts_as_lists

_STATIC = ("graphdef", "top_k", "greedy", "use_top_p", "use_min_p")
_sample_fn = S._sampler  # pylint: disable=protected-access  (the sampler's own token draw)
_TRACES = {"prefill": 0, "refill": 0, "decode": 0}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Pool:
  """The pool's device state (S slots, N rows, T = max_new_tokens).

  cache: KVCache with per-slot write slots (index i32[S]); row: i32[S] each
  slot's row (N: none yet); t: i32[S] the index of the token the slot samples
  next; last: i32[S] its last token; active: bool[S] it is decoding a row.
  tokens, logprobs, entropy, mask: [N, T] every row's outputs; stopped: bool[N].
  steps: i32[] decode steps run; busy: i32[] slot-steps that sampled a row's token.
  """

  cache: KVCache
  row: jax.Array
  t: jax.Array
  last: jax.Array
  active: jax.Array
  tokens: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  mask: jax.Array
  stopped: jax.Array
  steps: jax.Array
  busy: jax.Array


@dataclasses.dataclass(frozen=True)
class PoolStats:
  """What a pool run did: decode steps, slot-steps that produced a row's token
  (utilization = busy_slot_steps / (decode_steps x slots)), refills, segments."""

  slots: int
  rows: int
  decode_steps: int
  busy_slot_steps: int
  refills: int
  segments: int

  @property
  def utilization(self) -> float:
    return self.busy_slot_steps / max(self.decode_steps * self.slots, 1)


def _constrain(tree, shardings):
  if shardings is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, shardings)


@functools.partial(jax.jit, static_argnames=("n",) + _STATIC)
def _prefill(graphdef, state, tokens_CxI, mask_CxI, first_row, stop_ids, rng, temperature,
             top_p, min_p, vision=None, *, n: int, top_k: int, greedy: bool, use_top_p: bool,
             use_min_p: bool):
  """C prompts' KV (a cache of Lb = I slots) and the first token of each of their C x n rows.

  vision: the C prompts' images (VisionInputs) or None; their multimodal RoPE shift
  is in the cache's next_position, so the rows decode with plain positions.

  -> (cache, tokens i32[C n], logprobs f32[C n], entropy f32[C n], stopped bool[C n]).
  """
  _TRACES["prefill"] += 1
  model = nnx.merge(graphdef, state)
  c, length = tokens_CxI.shape
  cache = KVCache.init(model.config, c, length, model.compute_dtype)
  hidden, cache = model.hidden_states(tokens_CxI, mask_CxI, cache, vision=vision)
  if model.mesh is not None:
    cache = _constrain(cache, sharding.kv_cache_sharding(model.config, model.mesh))
  row_logits = jnp.repeat(model.logits(hidden[:, -1:])[:, 0], n, axis=0)  # left-padded
  rows = first_row + jnp.arange(c * n, dtype=jnp.int32)
  sample = _sample_fn(temperature, top_p, min_p, top_k=top_k, greedy=greedy,
                      use_top_p=use_top_p, use_min_p=use_min_p)
  first, logprob = sample(row_logits, S.row_keys(rng, 0, rows))
  return cache, first, logprob, S.raw_entropy(row_logits), jnp.isin(first, stop_ids)


def _pool_shardings(model: Decoder) -> _Pool | None:
  mesh = model.mesh
  if mesh is None:
    return None
  rows1, rows2, one = (sharding.batch_sharding(mesh, 1), sharding.batch_sharding(mesh, 2),
                       jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  cache = dataclasses.replace(sharding.kv_cache_sharding(model.config, mesh), index=rows1)
  return _Pool(cache=cache, row=rows1, t=rows1, last=rows1, active=rows1, tokens=rows2,
               logprobs=rows2, entropy=rows2, mask=rows2, stopped=rows1, steps=one, busy=one)


@functools.partial(jax.jit, static_argnames=("graphdef", "slots", "cache_len", "max_new_tokens"))
def _start(graphdef, state, first_N, logprob_N, entropy_N, stopped_N, *, slots: int,
           cache_len: int, max_new_tokens: int) -> _Pool:
  """An empty pool of `slots` slots and the rows' outputs holding their first tokens."""
  model = nnx.merge(graphdef, state)
  n_rows, t = first_N.shape[0], max_new_tokens
  cache = KVCache.init(model.config, slots, cache_len, model.compute_dtype)
  cache = dataclasses.replace(cache, index=jnp.zeros((slots,), jnp.int32))
  column0 = lambda x, dtype: jnp.zeros((n_rows, t), dtype).at[:, 0].set(x)
  pool = _Pool(cache=cache, row=jnp.full((slots,), n_rows, jnp.int32),
               t=jnp.ones((slots,), jnp.int32), last=jnp.zeros((slots,), jnp.int32),
               active=jnp.zeros((slots,), bool), tokens=column0(first_N, jnp.int32),
               logprobs=column0(logprob_N, jnp.float32), entropy=column0(entropy_N, jnp.float32),
               mask=column0(True, bool), stopped=stopped_N, steps=jnp.int32(0),
               busy=jnp.int32(0))
  return _constrain(pool, _pool_shardings(model))


@functools.partial(jax.jit, static_argnames=("n",), donate_argnames=("pool",))
def _refill(pool: _Pool, store: KVCache, first_N, slots_J, rows_J, count, *, n: int) -> _Pool:
  """Slot slots_J[j] takes row rows_J[j] for j < count (the rest: padding, ignored).

  The row's prompt KV (store: [L, P, Lb, K, H]) fills the slot's cache slots
  [0, Lb), one slot at a time (no [L, J, Lb, K, H] temporary); every later slot
  becomes invalid; the slot next samples the row's token 1.
  """
  _TRACES["refill"] += 1
  cache, lb, num_slots = pool.cache, store.k.shape[2], pool.active.shape[0]
  slots_J = jnp.where(jnp.arange(len(slots_J)) < count, slots_J, num_slots)  # >= S: dropped
  rows_J = jnp.clip(rows_J, 0, first_N.shape[0] - 1)
  prompt_J = rows_J // n

  def copy(j, kv):
    prompt = lambda x: jax.lax.dynamic_slice_in_dim(x, prompt_J[j], 1, axis=1)
    at = (0, slots_J[j], 0, 0, 0)
    return (jax.lax.dynamic_update_slice(kv[0], prompt(store.k), at),
            jax.lax.dynamic_update_slice(kv[1], prompt(store.v), at))
  k, v = jax.lax.fori_loop(0, count, copy, (cache.k, cache.v))
  put = lambda x, value: x.at[slots_J].set(value, mode="drop")
  valid_JxS = jnp.zeros((len(slots_J), cache.valid.shape[1]), bool).at[:, :lb].set(
      store.valid[prompt_J])
  cache = KVCache(k=k, v=v, valid=put(cache.valid, valid_JxS), index=put(cache.index, lb),
                  next_position=put(cache.next_position, store.next_position[prompt_J]))
  return dataclasses.replace(pool, cache=cache, row=put(pool.row, rows_J), t=put(pool.t, 1),
                             last=put(pool.last, first_N[rows_J]), active=put(pool.active, True))


@functools.partial(jax.jit, static_argnames=_STATIC + ("max_new_tokens", "window"),
                   donate_argnames=("pool",))
def _decode(graphdef, state, pool: _Pool, stop_ids, rng, temperature, top_p, min_p, until,
            min_free, *, max_new_tokens: int, top_k: int, greedy: bool, use_top_p: bool,
            use_min_p: bool, window: int | None) -> _Pool:
  """Decode steps until `until` steps in all, every slot idle, >= min_free slots idle, or an
  active slot's next write slot lies outside the window (static; None: every slot)."""
  _TRACES["decode"] += 1
  model = nnx.merge(graphdef, state)
  sample = _sample_fn(temperature, top_p, min_p, top_k=top_k, greedy=greedy,
                      use_top_p=use_top_p, use_min_p=use_min_p)
  n_rows = pool.tokens.shape[0]
  width = pool.cache.valid.shape[1] if window is None else window
  keys = jax.vmap(lambda t, row: S.row_keys(rng, t, row[None])[0])

  def cond(p: _Pool):
    top = jnp.max(jnp.where(p.active, p.cache.index, 0))
    return ((p.steps < until) & jnp.any(p.active) & (jnp.sum(~p.active) < min_free)
            & (top < width))

  def body(p: _Pool) -> _Pool:
    logits, cache = model.decode(p.last[:, None], p.cache, window=window)
    token, logprob = sample(logits[:, 0], keys(p.t, p.row))
    alive = p.active
    out = jnp.where(alive, p.row, n_rows)  # idle slots write nowhere
    write = lambda x, value: x.at[out, p.t].set(value, mode="drop")
    hit = alive & jnp.isin(token, stop_ids)
    t = p.t + alive
    # Idle slots keep their write slot (they compute, but nothing reads them).
    cache = dataclasses.replace(cache, index=jnp.where(alive, cache.index, p.cache.index))
    return _Pool(cache=cache, row=p.row, t=t, last=token,
                 active=alive & ~hit & (t < max_new_tokens), tokens=write(p.tokens, token),
                 logprobs=write(p.logprobs, logprob),
                 entropy=write(p.entropy, S.raw_entropy(logits[:, 0])),
                 mask=write(p.mask, True), stopped=p.stopped.at[out].set(hit, mode="drop"),
                 steps=p.steps + 1, busy=p.busy + jnp.sum(alive, dtype=jnp.int32))

  return jax.lax.while_loop(cond, body, pool)


@jax.jit
def _status(pool: _Pool):
  """(active bool[S], index i32[S], steps, busy): what the host schedules from (replicated)."""
  return pool.active, pool.cache.index, pool.steps, pool.busy


def default_min_free(slots: int) -> int:
  """Free slots that end a decode segment for a refill: 1/16 of the pool, at least 1."""
  return max(1, slots // 16)


def generate_pooled_arrays(model: Decoder, prompts: Sequence[Sequence[int]],
                           params: SamplingParams, rng: jax.Array, *, slots: int, **options
                           ) -> S.DeviceRollout:
  """`generate_arrays`' rollout (the same rows), decoded by a pool of `slots` slots.

  `run_pool(...)[0]`: the same arguments (see there).
  """
  return run_pool(model, prompts, params, rng, slots=slots, **options)[0]


def run_pool(model: Decoder, prompts: Sequence[Sequence[int]], params: SamplingParams,
             rng: jax.Array, *, slots: int, mesh=None,
             prompt_buckets: Sequence[int] = S.DEFAULT_PROMPT_BUCKETS,
             memory_limit_bytes: int | None = None,
             interrupt: Callable[[], bool] | None = None, segment_tokens: int = 256,
             decode_window: bool = True, min_free: int | None = None,
             vision: VisionInputs | None = None) -> tuple[S.DeviceRollout, PoolStats]:
  """Sample `params.n` completions per prompt through a pool of `slots` decode slots.

  Args:
    model, prompts, params, rng, mesh, prompt_buckets, interrupt,
      segment_tokens, decode_window: as for `generate_arrays` (interrupt is
      called after every `segment_tokens` decode steps of the pool).
    slots: S, rows decoded at once (the KV cache holds S x (Lb +
      max_new_tokens) slots; the prompts' own KV, P x Lb, is kept besides). A
      multiple of the mesh's batch shards.
    memory_limit_bytes: override the free-memory estimate of the KV check (the
      pool's cache must fit in it beside the prompts' KV).
    min_free: free slots that end a decode segment so pending rows get them
      (default `default_min_free`); fewer when fewer rows are pending.
    vision: the prompts' images (Qwen2.5-VL), one VisionInputs row per prompt, as
      for `generate_arrays`: only the prefill reads them.

  Returns:
    (DeviceRollout of the N = P x n rows in batch order, PoolStats).

  Raises:
    GenerationInterrupted: `interrupt` returned True.
    MemoryError: the pool's KV cache cannot fit.
    ValueError: bad slots / min_free, or prompts or slots not divisible by the batch shards.
  """
  prompts = prompts_as_lists(prompts)
  if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
    raise ValueError(f"slots must be an int >= 1 (rows decoded at once), got {slots!r}")
  if min_free is not None and (isinstance(min_free, bool) or not isinstance(min_free, int)
                               or not 1 <= min_free <= slots):
    raise ValueError(f"min_free must be None or an int in [1, slots = {slots}], got {min_free!r}")
  if mesh is not None and model.mesh is not mesh:
    model = sharding.shard_model(nnx.clone(model), mesh)
  mesh, shards = model.mesh, 1
  if mesh is not None:
    shards = sharding.batch_shards(mesh)
    for what, count in (("prompts", len(prompts)), ("slots", slots)):
      if count % shards:
        raise ValueError(f"{count} {what} cannot be split over {shards} batch shards (mesh data "
                         f"x fsdp); pass a multiple of {shards}")
  n, new = params.n, params.max_new_tokens
  length = S.bucket_length(max(len(p) for p in prompts), prompt_buckets)
  cache_len = length + new
  # The prompts' KV (P x Lb, kept for the refills) shares the memory with the pool's cache.
  limit = S.free_device_bytes() if memory_limit_bytes is None else memory_limit_bytes
  store_bytes = -(-S.kv_cache_bytes(model, len(prompts), length) // shards)
  S.check_kv_memory(model, slots, cache_len, shards=shards,
                    limit_bytes=None if limit is None else limit - store_bytes)
  graphdef, state = nnx.split(model)
  stop_ids = jnp.asarray(params.resolved_stop_ids(model.config.eos_token_id) or (-1,), jnp.int32)
  dynamic = (stop_ids, rng, jnp.float32(params.temperature), jnp.float32(params.top_p),
             jnp.float32(params.min_p))
  static = dict(top_k=params.top_k, greedy=params.greedy, use_top_p=params.top_p < 1.0,
                use_min_p=params.min_p > 0.0)
  store, first = _prefill_all(model, graphdef, state, prompts, length, slots, shards, dynamic,
                              static, n, vision)
  pool = _start(graphdef, state, *first, slots=slots, cache_len=cache_len, max_new_tokens=new)
  first_done = multihost.to_host(first[3]) | (new == 1)
  decode = functools.partial(_decode, graphdef, state, max_new_tokens=new, **static)
  refill = functools.partial(_refill, store=store, first_N=first[0], n=n)
  pool, stats = _schedule(pool, decode, refill, dynamic, first_done, length=length,
                          cache_len=cache_len,
                          min_free=default_min_free(slots) if min_free is None else min_free,
                          check_every=None if interrupt is None else max(int(segment_tokens), 1),
                          interrupt=interrupt, decode_window=decode_window)
  return S.DeviceRollout(tokens=pool.tokens, logprobs=pool.logprobs, entropy=pool.entropy,
                         completion_mask=pool.mask, stopped=pool.stopped), stats


def _schedule(pool: _Pool, decode, refill, dynamic, first_done: np.ndarray, *, length: int,
              cache_len: int, min_free: int, check_every: int | None, interrupt,
              decode_window: bool) -> tuple[_Pool, PoolStats]:
  """The host loop: fill free slots with pending rows, decode a segment, read the slots back.

  Every decision comes from replicated values, so every process makes the same calls.
  """
  slots = pool.active.shape[0]
  pending = [int(r) for r in np.flatnonzero(~first_done)]  # rows ended by token 0 need no slot
  active, index = np.zeros(slots, bool), np.zeros(slots, np.int64)
  steps = busy = refills = segments = 0
  next_check = check_every
  while True:
    free = np.flatnonzero(~active)[:len(pending)]
    if len(free):
      taken, pending = pending[:len(free)], pending[len(free):]
      pad = slots - len(free)  # one refill program: always S entries, `count` of them real
      pool = refill(pool, slots_J=np.concatenate([free, np.zeros(pad, int)]).astype(np.int32),
                    rows_J=np.asarray(taken + [0] * pad, np.int32), count=jnp.int32(len(free)))
      active[free], index[free] = True, length
      refills += len(free)
    if not active.any():
      break
    window = None
    if decode_window:
      window = S.attention_window(int(index[active].max()), cache_len)
      window = None if window == cache_len else window
    until = 2**30 if next_check is None else next_check
    enough_free = min(min_free, len(pending)) if pending else slots + 1
    pool = decode(pool, *dynamic, jnp.int32(until), jnp.int32(enough_free), window=window)
    segments += 1
    active, index, steps, busy = multihost.tree_to_host(_status(pool))
    active, index, steps, busy = np.array(active), np.array(index), int(steps), int(busy)
    if next_check is not None and steps >= next_check:
      if interrupt():
        raise S.GenerationInterrupted(f"generation interrupted after {steps} pooled decode "
                                      f"steps ({len(pending)} rows not started)")
      next_check = steps + check_every
  return pool, PoolStats(slots=slots, rows=len(first_done), decode_steps=steps,
                         busy_slot_steps=busy, refills=refills, segments=segments)


def _prefill_all(model: Decoder, graphdef, state, prompts: list[list[int]], length: int,
                 slots: int, shards: int, dynamic, static, n: int,
                 vision: VisionInputs | None = None):
  """Prefills every prompt once, in chunks of one shape (about `slots` rows' prompts each).

  -> (store: KVCache [L, P', Lb, K, H] of the prompts (P' >= P: the last chunk
  padded with copies of the last prompt, images included), (first tokens, logprobs,
  entropy, stopped) of the N rows).
  """
  p = len(prompts)
  round_up = lambda x, m: -(-x // m) * m
  chunk = min(p, round_up(round_up(slots, n) // n, shards))
  rows_sharding = None if model.mesh is None else sharding.batch_sharding(model.mesh)
  caches, firsts = [], []
  for start in range(0, p, chunk):
    index = np.minimum(np.arange(start, start + chunk), p - 1)
    tokens = np.zeros((chunk, length), np.int32)
    mask = np.zeros((chunk, length), bool)
    for i, j in enumerate(index):
      ids = prompts[j]
      tokens[i, length - len(ids):], mask[i, length - len(ids):] = ids, True
    part_vision = S.place_prompt_vision(model, tokens, mask,
                                        None if vision is None else vision.take(index),
                                        [f"prompt {j}" for j in index])
    cache, *first = _prefill(graphdef, state, multihost.put(tokens, rows_sharding),
                             multihost.put(mask, rows_sharding), jnp.int32(start * n), *dynamic,
                             part_vision, n=n, **static)
    caches.append(cache)
    firsts.append(first)
  cat = lambda field, axis: jnp.concatenate([getattr(c, field) for c in caches], axis=axis)
  store = KVCache(k=cat("k", 1), v=cat("v", 1), valid=cat("valid", 0), index=caches[0].index,
                  next_position=cat("next_position", 0))
  rows = p * n
  first = [jnp.concatenate([f[i] for f in firsts])[:rows] for i in range(4)]
  return store, first
