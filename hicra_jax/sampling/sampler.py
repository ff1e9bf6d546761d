"""The sampler: jitted prefill + decode loop with groups, log-probs and stop handling.

One call of `generate`:
  1. left-pads the prompts to a length bucket (a handful of compiled programs,
     not one per batch) and prefills them once each;
  2. repeats each prompt's KV cache n times (the n samples of a prompt are
     contiguous rows) instead of prefilling n times;
  3. decodes in a `lax.while_loop` with per-row done flags that ends as soon as
     every row has stopped or max_new_tokens is reached (optionally in
     segments, with a host-side interrupt check between them).

Large batches run in several calls of whole groups (`rows_per_call`, or sized
from free memory). Randomness is per row: row r's token t is drawn with
fold_in(fold_in(rng, t), r), r counted over the whole batch, so neither the
split into calls nor the decode segments change a single token.

Several processes (multi-host): every process passes the same prompts; the
rows live on the devices the mesh gives them (`generate_arrays` returns the
global arrays) and `generate` returns this process's rows only, with their
`prompt_index`, so each host grades its own rows.
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
from hicra_jax.models.vision_inputs import VisionInputs, check_image_tokens
from hicra_jax.sampling.params import (FINISH_LENGTH, FINISH_STOP, Rollout, SamplingParams,
                                       prompts_as_lists)

KV_FRACTION = 0.75  # share of free device memory that "auto"-sized calls give the KV cache
DEFAULT_PROMPT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_TRACES = {"generate": 0, "decode": 0}


def num_compilations() -> int:
  """How many sampler programs have been traced (compiled) in this process."""
  return _TRACES["generate"]


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length (a clear error when none is)."""
  for b in sorted(buckets):
    if b >= length:
      return b
  raise ValueError(f"prompt of {length} tokens is longer than the largest prompt bucket "
                   f"{max(buckets)}; add a larger bucket or shorten the prompt")


def row_keys(rng: jax.Array, step, rows_N: jax.Array) -> jax.Array:
  """key[N]: the key of each row at one decode step, fold_in(fold_in(rng, step), row)."""
  step_key = jax.random.fold_in(rng, step)
  return jax.vmap(lambda row: jax.random.fold_in(step_key, row))(rows_N)


def sample_token(logits_NxV, keys_N, temperature, top_p, min_p, *, top_k: int, greedy: bool,
                 use_top_p: bool, use_min_p: bool):
  """Draw one token per row, row i with its own key keys_N[i] (`row_keys`).

  Returns (tokens i32[N], logprobs f32[N]) where logprobs are
  log softmax(logits / temperature) at the drawn token: the untruncated
  distribution, which is what the trainer recomputes. Truncation order:
  top-k, then top-p (tokens tied with the nucleus boundary are kept), then min-p.
  """
  scaled = logits_NxV.astype(jnp.float32) / temperature
  logp = jax.nn.log_softmax(scaled, axis=-1)
  if greedy:
    tokens = jnp.argmax(scaled, axis=-1)
  else:
    neg_inf = jnp.finfo(jnp.float32).min
    trunc = scaled
    if top_k:
      kth = jax.lax.top_k(trunc, top_k)[0][:, -1:]
      trunc = jnp.where(trunc < kth, neg_inf, trunc)
    if use_top_p:
      sorted_desc = -jnp.sort(-trunc, axis=-1)
      probs = jax.nn.softmax(sorted_desc, axis=-1)
      before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
      last = jnp.sum(before < top_p, axis=-1, keepdims=True) - 1
      threshold = jnp.take_along_axis(sorted_desc, last, axis=-1)
      trunc = jnp.where(trunc < threshold, neg_inf, trunc)
    if use_min_p:
      probs = jax.nn.softmax(trunc, axis=-1)
      keep = probs >= min_p * jnp.max(probs, axis=-1, keepdims=True)
      trunc = jnp.where(keep, trunc, neg_inf)
    tokens = jax.vmap(jax.random.categorical)(keys_N, trunc)
  tokens = tokens.astype(jnp.int32)
  return tokens, jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]


def raw_entropy(logits_NxV) -> jax.Array:
  """f32[N]: entropy (nats) of softmax(logits), the raw policy (temperature 1)."""
  logp = jax.nn.log_softmax(logits_NxV.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


_DECODE_STATIC = ("graphdef", "max_new_tokens", "top_k", "greedy", "use_top_p", "use_min_p")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _DecodeState:
  """The decode loop's carry (device arrays): what a segment hands to the next.

  step: i32[] next output position; rows: i32[N] each row's index in the
  whole batch (its sampling key); last: i32[N] last tokens; tokens, logprobs,
  entropy (raw policy's), mask: [N, max_new_tokens] outputs so far; stopped: bool[N].
  """

  step: jax.Array
  rows: jax.Array
  last: jax.Array
  tokens: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  mask: jax.Array
  stopped: jax.Array
  cache: KVCache


def _sampler(temperature, top_p, min_p, *, top_k, greedy, use_top_p, use_min_p):
  return functools.partial(sample_token, temperature=temperature, top_p=top_p, min_p=min_p,
                           top_k=top_k, greedy=greedy, use_top_p=use_top_p, use_min_p=use_min_p)


@functools.partial(jax.jit, static_argnames=("n",) + _DECODE_STATIC)
def _prefill(graphdef, state, tokens_PxI, mask_PxI, first_row, stop_ids, rng, temperature,
             top_p, min_p, vision=None, *, n: int, max_new_tokens: int, top_k: int,
             greedy: bool, use_top_p: bool, use_min_p: bool) -> _DecodeState:
  """Prefills each prompt once, repeats its cache to n rows, samples the first token.

  first_row: i32[] the whole batch's index of this call's first row.
  vision: the prompts' images (VisionInputs, one row per prompt) or None.
  """
  _TRACES["generate"] += 1  # runs once per trace, i.e. per compiled prefill + decode pair
  model = nnx.merge(graphdef, state)
  mesh = model.mesh
  p, length = tokens_PxI.shape
  sample = _sampler(temperature, top_p, min_p, top_k=top_k, greedy=greedy, use_top_p=use_top_p,
                    use_min_p=use_min_p)
  cache = KVCache.init(model.config, p, length + max_new_tokens, model.compute_dtype)
  hidden, cache = model.hidden_states(tokens_PxI, mask_PxI, cache, vision=vision)
  last_logits = model.logits(hidden[:, -1:])[:, 0]  # prompts are left-padded
  # Expand each prompt's cache and last logits to its n contiguous rows.
  cache = KVCache(k=jnp.repeat(cache.k, n, axis=1), v=jnp.repeat(cache.v, n, axis=1),
                  valid=jnp.repeat(cache.valid, n, axis=0), index=cache.index,
                  next_position=jnp.repeat(cache.next_position, n, axis=0))
  if mesh is not None:
    cache = jax.lax.with_sharding_constraint(cache, sharding.kv_cache_sharding(model.config, mesh))
  rows = p * n
  rows_N = first_row + jnp.arange(rows, dtype=jnp.int32)
  row_logits = jnp.repeat(last_logits, n, axis=0)
  first, first_lp = sample(row_logits, row_keys(rng, 0, rows_N))
  return _DecodeState(
      step=jnp.int32(1), rows=rows_N, last=first,
      tokens=jnp.zeros((rows, max_new_tokens), jnp.int32).at[:, 0].set(first),
      logprobs=jnp.zeros((rows, max_new_tokens), jnp.float32).at[:, 0].set(first_lp),
      entropy=jnp.zeros((rows, max_new_tokens), jnp.float32).at[:, 0].set(
          raw_entropy(row_logits)),
      mask=jnp.zeros((rows, max_new_tokens), bool).at[:, 0].set(True),
      stopped=jnp.isin(first, stop_ids), cache=cache)


@functools.partial(jax.jit, static_argnames=_DECODE_STATIC + ("window",),
                   donate_argnames=("carry",))
def _decode(graphdef, state, carry: _DecodeState, stop_ids, rng, temperature, top_p, min_p,
            until, *, max_new_tokens: int, top_k: int, greedy: bool, use_top_p: bool,
            use_min_p: bool, window: int | None = None) -> _DecodeState:
  """Decodes until position `until` (traced: any segment length, one program) or every
  row has stopped. Row r's token t has the key fold_in(fold_in(rng, t), r), so segments
  change nothing. window: attention reads cache slots [0, window) only (static; one
  program per window; see `decode_segments`)."""
  _TRACES["decode"] += 1
  model = nnx.merge(graphdef, state)
  sample = _sampler(temperature, top_p, min_p, top_k=top_k, greedy=greedy, use_top_p=use_top_p,
                    use_min_p=use_min_p)
  end = jnp.minimum(until, max_new_tokens)

  def cond(c: _DecodeState):
    return (c.step < end) & ~jnp.all(c.stopped)

  def body(c: _DecodeState) -> _DecodeState:
    logits, cache = model.decode(c.last[:, None], c.cache, window=window)
    token, logprob = sample(logits[:, 0], row_keys(rng, c.step, c.rows))
    alive = ~c.stopped
    token = jnp.where(alive, token, 0)
    return _DecodeState(
        step=c.step + 1, rows=c.rows, last=token, tokens=c.tokens.at[:, c.step].set(token),
        logprobs=c.logprobs.at[:, c.step].set(jnp.where(alive, logprob, 0.0)),
        entropy=c.entropy.at[:, c.step].set(jnp.where(alive, raw_entropy(logits[:, 0]), 0.0)),
        mask=c.mask.at[:, c.step].set(alive),
        stopped=c.stopped | (alive & jnp.isin(token, stop_ids)), cache=cache)

  return jax.lax.while_loop(cond, body, carry)


# The smallest attention window: below it the cache is small and another compiled
# program would cost more than the bytes it saves.
MIN_WINDOW = 1024


def attention_window(slot: int, slots: int, min_window: int | None = None) -> int:
  """The slots a decode step writing at cache slot `slot` reads (pure): the smallest
  power of two > slot, at least min_window (default MIN_WINDOW), at most `slots`."""
  min_window = MIN_WINDOW if min_window is None else min_window
  return min(slots, max(min_window, 1 << slot.bit_length()))


def decode_segments(prompt_len: int, max_new_tokens: int, *, segment_tokens: int | None = None,
                    windowed: bool = True, min_window: int | None = None
                    ) -> list[tuple[int, int | None]]:
  """[(until, window)]: the decode calls of one generation (pure).

  Decode step s (1 <= s < max_new_tokens; the prefill samples position 0) feeds
  the token at cache slot prompt_len + s - 1 and attends to slots
  [0, prompt_len + s). A call decodes steps up to `until` (exclusive) reading
  `window` slots: the smallest power of two >= prompt_len + its first step (at
  least MIN_WINDOW, at most all slots), so early steps do not read the empty
  end of the cache: about half the KV bytes of reading every slot when the
  completion is long. `segment_tokens` splits calls further (interrupt
  checks); windowed=False: one window (None: every slot) for all calls.
  min_window: default MIN_WINDOW.
  """
  min_window = MIN_WINDOW if min_window is None else min_window
  slots = prompt_len + max_new_tokens
  out: list[tuple[int, int | None]] = []
  step = 1
  while step < max_new_tokens:
    window, end = None, max_new_tokens
    if windowed:
      window = attention_window(prompt_len + step - 1, slots, min_window)
      end = min(max_new_tokens, window - prompt_len + 1)
    if segment_tokens:
      end = min(end, step + segment_tokens)
    out.append((end, None if window == slots else window))
    step = end
  return out


def decode_kv_bytes(model: Decoder, rows: int, segments: Sequence[tuple[int, int | None]],
                    slots: int) -> int:
  """KV-cache bytes that the decode steps of `segments` read (K and V of every layer)."""
  per_slot = kv_cache_bytes(model, rows, 1) - rows  # minus the valid flags
  total, step = 0, 1
  for until, window in segments:
    total += (until - step) * per_slot * (slots if window is None else window)
    step = until
  return total


class GenerationInterrupted(Exception):
  """`generate`'s `interrupt` callback returned True between two decode segments."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeviceRollout:
  """A batch's completions as global device arrays (rows split over the mesh's batch axes).

  N = P x n rows (row i belongs to prompt i // n), T = max_new_tokens.
  tokens i32[N, T] (0 after a row's end); logprobs f32[N, T]; entropy f32[N, T]:
  the raw policy's (temperature 1) entropy of each sampled position's
  distribution, 0 outside the mask (diagnostics at no extra forward pass);
  completion_mask bool[N, T] (the stop token included); stopped bool[N]
  (ended on a stop token).
  """

  tokens: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  completion_mask: jax.Array
  stopped: jax.Array

  @classmethod
  def concatenate(cls, parts: Sequence[DeviceRollout]) -> DeviceRollout:
    if len(parts) == 1:
      return parts[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *parts)

  def to_host(self, n: int, *, all_rows: bool = False) -> Rollout:
    """This process's rows (all rows with one process) as a host `Rollout`.

    Only addressable shards are read; prompt_index holds the rows' prompts
    in the whole batch. all_rows: every row on every process instead (a
    collective with several processes).
    """
    if all_rows:
      tokens, logprobs, mask, stopped = multihost.tree_to_host(
          (self.tokens, self.logprobs, self.completion_mask, self.stopped))
      rows = np.arange(len(stopped))
    else:
      rows, tokens = multihost.read_local_rows(self.tokens)
      logprobs = multihost.read_local_rows(self.logprobs)[1]
      mask = multihost.read_local_rows(self.completion_mask)[1]
      stopped = multihost.read_local_rows(self.stopped)[1]
    return Rollout(tokens=tokens, logprobs=logprobs, completion_mask=mask,
                   lengths=mask.sum(axis=1).astype(np.int32),
                   finish_reason=np.where(stopped, FINISH_STOP, FINISH_LENGTH),
                   prompt_index=(rows // n).astype(np.int32))


_all_stopped = jax.jit(jnp.all)  # a replicated scalar: readable on every process


def kv_cache_bytes(model: Decoder, rows: int, slots: int) -> int:
  return KVCache.num_bytes(model.config, rows, slots, model.compute_dtype)


def free_device_bytes(device=None) -> int | None:
  """Free memory of the device (host RAM for CPU); None when unknown."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  if device.platform == "cpu":
    try:  # psutil is optional (not a dependency)
      import psutil  # pylint: disable=import-outside-toplevel
      return int(psutil.virtual_memory().available)
    except ImportError:
      return None
  return None


def check_kv_memory(model: Decoder, rows: int, slots: int, *, shards: int = 1,
                    limit_bytes: int | None = None) -> int:
  """Raise a clear MemoryError when the KV cache cannot fit; returns its bytes per device."""
  need = -(-kv_cache_bytes(model, rows, slots) // shards)
  limit = free_device_bytes() if limit_bytes is None else limit_bytes
  if limit is not None and need > limit:
    cfg = model.config
    gib = 1024 ** 3
    raise MemoryError(
        f"the KV cache needs {need / gib:.2f} GiB per device ({cfg.num_layers} layers x "
        f"{rows} rows x {slots} slots x {cfg.num_kv_heads} kv heads x {cfg.head_dim} head_dim "
        f"x 2 (k, v) x {jnp.dtype(model.compute_dtype).itemsize} B / {shards} shards) but only "
        f"{limit / gib:.2f} GiB is free; reduce the number of prompts, n, max_new_tokens "
        f"or the prompt length, or shard the batch over more devices")
  return need


def prompts_per_call(prompts: int, n: int, row_kv_bytes: int, *, shards: int = 1,
                     rows_per_call: int | None = None, free_bytes: int | None = None) -> int:
  """How many prompts (whole groups of n rows) one generate call takes (pure).

  row_kv_bytes: one row's KV cache (`kv_cache_bytes(model, 1, slots)`).
  rows_per_call: the most rows per call (at least one group); None sizes the
  calls so their KV cache uses at most KV_FRACTION of `free_bytes` per device
  (the rest is left to logits and activations); unknown free memory: one call.
  The result is a multiple of `shards` (each call splits its prompts over the
  mesh's batch shards) unless all prompts fit in one call.
  """
  if rows_per_call is None:
    if free_bytes is None:
      return prompts
    fit = int(max(free_bytes, 0) * KV_FRACTION * shards // max(row_kv_bytes, 1)) // n
  else:
    fit = rows_per_call // n
  return min(prompts, max(shards, fit // shards * shards))


def generate(model: Decoder, prompts: Sequence[Sequence[int]], params: SamplingParams,
             rng: jax.Array, **options) -> Rollout:
  """Sample `params.n` completions for each prompt; host arrays.

  `generate_arrays(...).to_host(params.n)`: the same arguments (see there).
  With several processes the Rollout holds this process's rows only
  (`prompt_index` names their prompts); with one, all N = P x n rows.
  """
  return generate_arrays(model, prompts, params, rng, **options).to_host(params.n)


def generate_arrays(model: Decoder, prompts: Sequence[Sequence[int]], params: SamplingParams,
                    rng: jax.Array, *, mesh=None,
                    prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
                    memory_limit_bytes: int | None = None,
                    interrupt: Callable[[], bool] | None = None, segment_tokens: int = 256,
                    rows_per_call: int | None = None, decode_window: bool = True,
                    vision: VisionInputs | None = None) -> DeviceRollout:
  """Sample `params.n` completions for each prompt; global device arrays.

  Args:
    model: the policy (its mesh, if any, shards the batch; `mesh` here
      overrides it for this call).
    prompts: P token-id lists of any lengths (the same on every process).
    params: SamplingParams.
    rng: a jax PRNG key; the same key, prompts and params give the same
      rollout, however the rows are split into calls.
    prompt_buckets: prompt lengths are left-padded up to the next bucket (one
      length for every call of the batch).
    memory_limit_bytes: override the free-memory estimate used to size the
      calls and by the KV check.
    interrupt: called on the host every `segment_tokens` decoded tokens (the
      decode loop then runs in segments of that length; same results); when it
      returns True, `GenerationInterrupted` is raised. The trainer uses it so
      that SIGTERM does not wait for a long rollout. None: one decode call.
      With several processes it must return the same value on every process.
    rows_per_call: the most rows a call holds (whole groups: rounded down to a
      multiple of n, at least n); None: sized from free device memory and the
      model's KV footprint (`prompts_per_call`). Each prompt is prefilled once.
    decode_window: decode steps read only the cache slots in use, rounded up
      to a power of two (`decode_segments`); the same tokens as reading every
      slot and the same log-probs up to float32 summation order (~1 ulp), at
      the cost of a few more compiled programs.
    vision: the prompts' images (Qwen2.5-VL): VisionInputs with one row per prompt
      (models/vision_inputs.py); the prefill places them, decoding is unchanged.

  Returns:
    DeviceRollout with N = P x n rows (row i belongs to prompt i // n), T = max_new_tokens.

  Raises:
    GenerationInterrupted: `interrupt` returned True.
    MemoryError: not even one group per batch shard fits.
  """
  prompts = prompts_as_lists(prompts)
  if mesh is not None and model.mesh is not mesh:
    model = sharding.shard_model(nnx.clone(model), mesh)
  mesh = model.mesh
  length = bucket_length(max(len(p) for p in prompts), prompt_buckets)
  shards = 1
  if mesh is not None:
    shards = sharding.batch_shards(mesh)
    if len(prompts) % shards:
      raise ValueError(f"{len(prompts)} prompts cannot be split over {shards} batch shards "
                       f"(mesh data x fsdp); pass a multiple of {shards} prompts")
  if rows_per_call is not None and (isinstance(rows_per_call, bool) or rows_per_call < params.n):
    raise ValueError(f"rows_per_call must be None or an int >= n = {params.n} (a call holds "
                     f"whole groups), got {rows_per_call!r}")
  slots = length + params.max_new_tokens
  free = free_device_bytes() if memory_limit_bytes is None else memory_limit_bytes
  if free is not None:  # every process must make the same calls
    free = multihost.min_over_processes(free)
  per_call = prompts_per_call(len(prompts), params.n, kv_cache_bytes(model, 1, slots),
                              shards=shards, rows_per_call=rows_per_call, free_bytes=free)
  check_kv_memory(model, per_call * params.n, slots, shards=shards,
                  limit_bytes=memory_limit_bytes)
  return DeviceRollout.concatenate([
      _generate_call(model, prompts[start:start + per_call], params, rng, length,
                     first_row=start * params.n, interrupt=interrupt,
                     segment_tokens=segment_tokens, decode_window=decode_window,
                     vision=None if vision is None else vision.take(
                         np.arange(start, min(start + per_call, len(prompts)))))
      for start in range(0, len(prompts), per_call)])


def place_prompt_vision(model: Decoder, tokens_PxI: np.ndarray, mask_PxI: np.ndarray,
                        vision: VisionInputs | None, names: Sequence[str]) -> VisionInputs | None:
  """The prompts' images, checked against their tokens on the host (a ValueError names
  the prompt) and placed like the token rows; None stays None."""
  if vision is None:
    return None
  check_image_tokens(model.config, tokens_PxI, mask_PxI, vision, names=names)
  mesh = model.mesh
  return jax.tree.map(lambda x: multihost.put(
      np.asarray(x), None if mesh is None else sharding.batch_sharding(mesh, x.ndim)), vision)


def _generate_call(model: Decoder, prompts: list[list[int]], params: SamplingParams,
                   rng: jax.Array, length: int, *, first_row: int,
                   interrupt: Callable[[], bool] | None, segment_tokens: int,
                   decode_window: bool = True, vision: VisionInputs | None = None
                   ) -> DeviceRollout:
  """One prefill + decode over `prompts` (left-padded to `length`); rows numbered from first_row."""
  mesh = model.mesh
  tokens = np.zeros((len(prompts), length), np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for i, ids in enumerate(prompts):
    tokens[i, length - len(ids):], mask[i, length - len(ids):] = ids, True
  rows_sharding = None if mesh is None else sharding.batch_sharding(mesh)
  vision = place_prompt_vision(model, tokens, mask, vision,
                               [f"prompt {first_row // params.n + i}" for i in range(len(prompts))])
  tokens, mask = multihost.put(tokens, rows_sharding), multihost.put(mask, rows_sharding)
  stop_ids = params.resolved_stop_ids(model.config.eos_token_id)
  graphdef, state = nnx.split(model)
  stop_ids = jnp.asarray(stop_ids or (-1,), jnp.int32)
  dynamic = (stop_ids, rng, jnp.float32(params.temperature), jnp.float32(params.top_p),
             jnp.float32(params.min_p))
  static = dict(max_new_tokens=params.max_new_tokens, top_k=params.top_k,
                greedy=params.greedy, use_top_p=params.top_p < 1.0, use_min_p=params.min_p > 0.0)
  carry = _prefill(graphdef, state, tokens, mask, jnp.int32(first_row), *dynamic, vision,
                   n=params.n, **static)
  total = params.max_new_tokens
  check_every = None if interrupt is None else max(int(segment_tokens), 1)
  segments = decode_segments(length, total, segment_tokens=check_every, windowed=decode_window)
  for until, window in segments:
    carry = _decode(graphdef, state, carry, *dynamic, jnp.int32(until), window=window, **static)
    if until < total:  # between segments: the host waits for this one, then checks
      if bool(_all_stopped(carry.stopped)):
        break
      if interrupt is not None and interrupt():
        raise GenerationInterrupted(f"generation interrupted after {until} of {total} tokens")
  return DeviceRollout(tokens=carry.tokens, logprobs=carry.logprobs, entropy=carry.entropy,
                       completion_mask=carry.mask, stopped=carry.stopped)
