"""Attention implementations of the decoder, selected by name, and the mask they share.

Every implementation is `attend(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale)` ->
[N, T, K, R, H], where `mask` is an `AttentionMask`: a description of which keys
each query sees (query slots, key validity, and whether the queries are the keys
themselves), never the dense [N, T, S] tensor, so memory-efficient paths stay
linear in the sequence length.

  name      no KV cache (training update, plain forward)     with a KV cache
  "xla"     dense: f32 [N, K, R, T, S] scores                 dense
  "chunked" blockwise online softmax, pure JAX, any backend;   chunked
            custom VJP (flash-attention backward), memory
            linear in T
  "cudnn"   cuDNN flash attention (GPU; bfloat16 or float16)   decode (T = 1): xla;
                                                              prefill (T > 1): chunked
  "splash"  Pallas TPU splash attention (TPU)                  as "cudnn"
  "auto"    by jax.default_backend(): gpu -> "cudnn" for       as the name it picks
            bfloat16/float16 inputs ("xla" for float32, which
            cuDNN flash attention does not take); tpu ->
            "splash"; anything else -> "xla"

All of them compute the same function on real (non-padded) query positions; what
a padded query position gets is unspecified but finite (nothing reads it).
Bidirectional masks with segment ids (the vision tower, `AttentionMask.bidirectional`)
run on "xla" and "chunked"; "cudnn" and "splash" hand them to "chunked".

Shape letters: the legend in hicra_jax/__init__.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from hicra_jax import options

ATTENTION_IMPLS = options.ATTENTIONS
BLOCK = 512  # default query and key block of "chunked" and "splash"
# checkpoint_name of the chunked kernel's residuals (its output and log-sum-exp).
ATTENTION_OUT, ATTENTION_LSE = "attention_out", "attention_lse"
_NEG = float(jnp.finfo(jnp.float32).min)  # masked logit: finite, so no inf - inf = NaN


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
  """Which keys each query sees, described rather than materialized.

  The rule (as transformers' causal mask with padding): the query at slot t sees
  key slot s iff (s <= t and key s is valid) or s == t. A query always seeing
  its own slot means no row is fully masked, so padded positions produce finite
  (ignored) values and no NaN can leak into gradients.

  Fields:
    query_slots_T: i32[T] the key slot each query occupies.
    key_valid_NxS: bool[N, S] a real token in that slot, or None (every slot real).
    queries_are_keys: static; True when there is no cache: the T queries are the
      S = T keys themselves and query_slots_T is arange(T).
    segments_NxS: i32[N, S] or None. Bidirectional masks only (the vision tower):
      a query sees only keys of its own segment (an image); needs queries_are_keys.
    is_causal: static; False for bidirectional attention (the vision tower): the query
      at slot t sees key s iff (key s is valid and in t's segment) or s == t.
  """

  query_slots_T: jax.Array
  key_valid_NxS: jax.Array | None
  queries_are_keys: bool = dataclasses.field(default=False, metadata=dict(static=True))
  segments_NxS: jax.Array | None = None
  is_causal: bool = dataclasses.field(default=True, metadata=dict(static=True))

  @classmethod
  def causal(cls, t: int, key_valid_NxT=None) -> "AttentionMask":
    """The no-cache mask: T positions attend causally to each other (key_valid None: no padding)."""
    return cls(jnp.arange(t, dtype=jnp.int32), key_valid_NxT, queries_are_keys=True)

  @classmethod
  def cached(cls, query_slots_T, key_valid_NxS) -> "AttentionMask":
    """The KV-cache mask: queries at slots query_slots_T against all S cache slots."""
    return cls(jnp.asarray(query_slots_T, jnp.int32), key_valid_NxS, queries_are_keys=False)

  @classmethod
  def bidirectional(cls, key_valid_NxT, segments_NxT=None) -> "AttentionMask":
    """The vision tower's mask: T positions see every valid position of their segment."""
    t = key_valid_NxT.shape[1]
    return cls(jnp.arange(t, dtype=jnp.int32), key_valid_NxT, queries_are_keys=True,
               segments_NxS=segments_NxT, is_causal=False)

  def block(self, query_slots_B, key_start, num_keys: int, key_valid_NxC=None,
            key_segments_NxC=None):
    """bool[N or 1, B, C]: the rule for queries at query_slots_B and keys key_start + [0, C).

    key_valid_NxC: validity of those keys (None when the mask has no padding);
    key_segments_NxC: their segments (bidirectional masks with segments).
    """
    key_slots_C = key_start + jnp.arange(num_keys, dtype=jnp.int32)
    self_BxC = key_slots_C[None, :] == query_slots_B[:, None]
    if not self.is_causal:
      seen = jnp.ones((1, query_slots_B.shape[0], num_keys), bool)
      if key_valid_NxC is not None:
        seen = seen & key_valid_NxC[:, None, :]
      if key_segments_NxC is not None:
        slots = jnp.clip(query_slots_B, 0, self.segments_NxS.shape[1] - 1)
        query_segments_NxB = jnp.take(self.segments_NxS, slots, axis=1)
        seen = seen & (query_segments_NxB[:, :, None] == key_segments_NxC[:, None, :])
      return seen | self_BxC[None]
    causal_BxC = key_slots_C[None, :] <= query_slots_B[:, None]
    if key_valid_NxC is None:
      return causal_BxC[None]
    return (causal_BxC[None] & key_valid_NxC[:, None, :]) | self_BxC[None]

  def may_see(self, query_slots_B, key_start):
    """Whether any query of a block can see a key of the block starting at key_start.

    Causal: keys after every query slot are hidden (padded queries carry slot -1),
    so such (query block, key block) pairs are skipped at run time.
    """
    if not self.is_causal:
      return jnp.bool_(True)
    return key_start <= jnp.max(query_slots_B)

  def dense(self, num_keys: int):
    """bool[N or 1, T, S] (S = num_keys): the whole mask, as xla attention needs it."""
    return self.block(self.query_slots_T, 0, num_keys, self.key_valid_NxS, self.segments_NxS)


def attention_mask(query_slots_T, key_valid_NxS):
  """bool[N, T, S]: the dense mask of AttentionMask.cached(query_slots_T, key_valid_NxS)."""
  return AttentionMask.cached(query_slots_T, key_valid_NxS).dense(key_valid_NxS.shape[1])


# ---- xla: dense ------------------------------------------------------------------------------


def xla_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask: AttentionMask, scale: float):
  """Portable grouped-query attention, softmax in float32 over a dense score tensor.

  Memory O(N * Q * T * S): fine for decode and short sequences. -> [N, T, K, R, H].
  """
  logits = jnp.einsum("ntkrh,nskh->nkrts", q_NxTxKxRxH, k_NxSxKxH,
                      preferred_element_type=jnp.float32) * scale
  mask_NxTxS = mask.dense(k_NxSxKxH.shape[1])
  logits = jnp.where(mask_NxTxS[:, None, None], logits, _NEG)
  probs = jax.nn.softmax(logits, axis=-1).astype(v_NxSxKxH.dtype)
  return jnp.einsum("nkrts,nskh->ntkrh", probs, v_NxSxKxH)


# ---- chunked: blockwise online softmax (flash attention in pure JAX) --------------------------


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _blocks(x, size: int, axis: int):
  """Split `axis` of x (length a multiple of size) into [num_blocks, ...] on a new leading axis."""
  shape = x.shape[:axis] + (x.shape[axis] // size, size) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _unblocks(x, axis: int):
  """Inverse of _blocks: [num_blocks, ..., size, ...] -> [..., num_blocks * size, ...]."""
  x = jnp.moveaxis(x, 0, axis)
  return x.reshape(x.shape[:axis] + (-1,) + x.shape[axis + 2:])


def _key_blocks(mask: AttentionMask, bkv: int, num_keys: int):
  """Per key block: (validity [N, bkv] or None, segments [N, bkv] or None, first slot)."""
  valid, segments = mask.key_valid_NxS, mask.segments_NxS
  return (None if valid is None else _blocks(valid, bkv, 1),
          None if segments is None else _blocks(segments, bkv, 1),
          jnp.arange(0, num_keys, bkv, dtype=jnp.int32))


def _chunked_forward(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale, bq, bkv):
  """Padded inputs (T % bq == S % bkv == 0) -> (out [N, T, K, R, H], lse f32[N, K, R, T])."""
  n, t, kh, r, h = q_NxTxKxRxH.shape
  kv_xs = (_blocks(k_NxSxKxH, bkv, 1), _blocks(v_NxSxKxH, bkv, 1),
           _key_blocks(mask, bkv, k_NxSxKxH.shape[1]))

  def query_block(xs):
    q_blk, slots_B = xs  # [N, B, K, R, H], i32[B]

    def key_step(carry, kv):
      k_blk, v_blk, (valid_blk, segments_blk, key_start) = kv

      def update(carry):
        m, l, acc = carry  # f32 [N, K, R, B], [N, K, R, B], [N, K, R, B, H]
        s = jnp.einsum("nbkrh,nckh->nkrbc", q_blk, k_blk,
                       preferred_element_type=jnp.float32) * scale
        seen = mask.block(slots_B, key_start, bkv, valid_blk, segments_blk)[:, None, None]
        s = jnp.where(seen, s, _NEG)
        m_new = jnp.maximum(m, s.max(axis=-1))
        p = jnp.where(seen, jnp.exp(s - m_new[..., None]), 0.0)
        correction = jnp.exp(m - m_new)
        l = l * correction + p.sum(axis=-1)
        acc = acc * correction[..., None] + jnp.einsum(
            "nkrbc,nckh->nkrbh", p.astype(v_blk.dtype), v_blk, preferred_element_type=jnp.float32)
        return m_new, l, acc

      carry = jax.lax.cond(mask.may_see(slots_B, key_start), update, lambda c: c, carry)
      return carry, None

    stats = jnp.full((n, kh, r, q_blk.shape[1]), _NEG, jnp.float32)
    init = (stats, jnp.zeros_like(stats), jnp.zeros(stats.shape + (h,), jnp.float32))
    (m, l, acc), _ = jax.lax.scan(key_step, init, kv_xs)
    # Only padded queries (slot -1) see nothing: l = 0 there; keep them finite.
    l_safe = jnp.where(l == 0, 1.0, l)
    out = (acc / l_safe[..., None]).astype(v_NxSxKxH.dtype)
    return jnp.einsum("nkrbh->nbkrh", out), m + jnp.log(l_safe)

  out_blocks, lse_blocks = jax.lax.map(
      query_block, (_blocks(q_NxTxKxRxH, bq, 1), _blocks(mask.query_slots_T, bq, 0)))
  return _unblocks(out_blocks, 1), _unblocks(lse_blocks, 3)


def _chunked_backward(q, k, v, mask, scale, bq, bkv, out, lse, dout):
  """Flash-attention backward: recompute each block's probabilities from the saved lse.

  One pass: key blocks outside, query blocks inside; dk, dv accumulate in the inner
  carry, dq in the outer one. -> (dq, dk, dv), each in its input's dtype.
  """
  n, t, kh, r, h = q.shape
  # delta = rowsum(dO * O): the softmax-backward term, f32[N, K, R, T].
  delta = jnp.einsum("ntkrh,ntkrh->nkrt", dout.astype(jnp.float32), out.astype(jnp.float32))
  q_xs = (_blocks(q, bq, 1), _blocks(dout, bq, 1), _blocks(lse, bq, 3),
          _blocks(delta, bq, 3), _blocks(mask.query_slots_T, bq, 0))
  kv_xs = (_blocks(k, bkv, 1), _blocks(v, bkv, 1), _key_blocks(mask, bkv, k.shape[1]))

  def key_block(dq_blocks, kv):
    k_blk, v_blk, (valid_blk, segments_blk, key_start) = kv

    def query_step(carry, qs):
      q_blk, do_blk, lse_blk, delta_blk, slots_B = qs

      def grads(_):
        s = jnp.einsum("nbkrh,nckh->nkrbc", q_blk, k_blk,
                       preferred_element_type=jnp.float32) * scale
        seen = mask.block(slots_B, key_start, bkv, valid_blk, segments_blk)[:, None, None]
        p = jnp.where(seen, jnp.exp(jnp.where(seen, s, _NEG) - lse_blk[..., None]), 0.0)
        dv = jnp.einsum("nkrbc,nbkrh->nckh", p.astype(do_blk.dtype), do_blk,
                        preferred_element_type=jnp.float32)
        dp = jnp.einsum("nbkrh,nckh->nkrbc", do_blk, v_blk, preferred_element_type=jnp.float32)
        ds = p * (dp - delta_blk[..., None]) * scale
        dq = jnp.einsum("nkrbc,nckh->nbkrh", ds.astype(k_blk.dtype), k_blk,
                        preferred_element_type=jnp.float32)
        dk = jnp.einsum("nkrbc,nbkrh->nckh", ds.astype(q_blk.dtype), q_blk,
                        preferred_element_type=jnp.float32)
        return dq, dk, dv

      def skip(_):
        return (jnp.zeros(q_blk.shape, jnp.float32), jnp.zeros(k_blk.shape, jnp.float32),
                jnp.zeros(v_blk.shape, jnp.float32))

      dq, dk, dv = jax.lax.cond(mask.may_see(slots_B, key_start), grads, skip, None)
      return (carry[0] + dk, carry[1] + dv), dq

    init = (jnp.zeros(k_blk.shape, jnp.float32), jnp.zeros(v_blk.shape, jnp.float32))
    (dk, dv), dq = jax.lax.scan(query_step, init, q_xs)
    return dq_blocks + dq, (dk, dv)

  dq0 = jnp.zeros((t // bq, n, bq, kh, r, h), jnp.float32)
  dq_blocks, (dk_blocks, dv_blocks) = jax.lax.scan(key_block, dq0, kv_xs)
  return (_unblocks(dq_blocks, 1).astype(q.dtype), _unblocks(dk_blocks, 1).astype(k.dtype),
          _unblocks(dv_blocks, 1).astype(v.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _chunked(q, k, v, mask, scale, bq, bkv):
  return _chunked_forward(q, k, v, mask, scale, bq, bkv)[0]


def _chunked_fwd(q, k, v, mask, scale, bq, bkv):
  out, lse = _chunked_forward(q, k, v, mask, scale, bq, bkv)
  # Named so a remat policy can keep them (decoder.REMAT_POLICIES["dots"]): otherwise a
  # policy that saves dots keeps every block pair's scores to recompute them (quadratic).
  out, lse = checkpoint_name(out, ATTENTION_OUT), checkpoint_name(lse, ATTENTION_LSE)
  return out, (q, k, v, mask, out, lse)


def _chunked_bwd(scale, bq, bkv, res, dout):
  q, k, v, mask, out, lse = res
  dq, dk, dv = _chunked_backward(q, k, v, mask, scale, bq, bkv, out, lse, dout)
  # The mask is integers and booleans: no cotangent.
  mask_ct = jax.tree.map(lambda x: None, mask)
  return dq, dk, dv, mask_ct


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask: AttentionMask, scale: float, *,
                      block_q: int = BLOCK, block_kv: int = BLOCK):
  """Memory-efficient attention in pure JAX (any backend). -> [N, T, K, R, H].

  Flash-attention style: a map over query blocks, each a scan over key blocks with
  a running max and sum in float32 (the scores of one block pair at a time); the
  backward (custom VJP) recomputes each block's probabilities from the saved
  log-sum-exp, so memory is linear in T and S in both directions. Block pairs that
  the causal rule hides entirely are skipped at run time. T and S need not be
  multiples of the blocks (padded internally; blocks shrink to T or S when larger).

  Args:
    q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH: queries, keys, values (RoPE applied).
    mask: which keys each query sees (AttentionMask).
    scale: logit scale (head_dim ** -0.5).
    block_q, block_kv: query and key block lengths (positive).
  """
  if block_q < 1 or block_kv < 1:
    raise ValueError(f"chunked attention: block_q {block_q} and block_kv {block_kv} must be >= 1")
  t, s = q_NxTxKxRxH.shape[1], k_NxSxKxH.shape[1]
  bq, bkv = min(block_q, t), min(block_kv, s)
  tp, sp = _round_up(t, bq), _round_up(s, bkv)
  q = jnp.pad(q_NxTxKxRxH, ((0, 0), (0, tp - t), (0, 0), (0, 0), (0, 0)))
  k = jnp.pad(k_NxSxKxH, ((0, 0), (0, sp - s), (0, 0), (0, 0)))
  v = jnp.pad(v_NxSxKxH, ((0, 0), (0, sp - s), (0, 0), (0, 0)))
  # Padded queries get slot -1 (they see nothing); padded keys are invalid and lie
  # past every real query slot (< S), so no real query sees them.
  slots = jnp.pad(mask.query_slots_T.astype(jnp.int32), (0, tp - t), constant_values=-1)
  valid, segments = mask.key_valid_NxS, mask.segments_NxS
  if valid is None and not mask.is_causal and sp > s:  # bidirectional: padded keys come after
    valid = jnp.ones((k.shape[0], s), bool)
  if valid is not None:
    valid = jnp.pad(valid.astype(bool), ((0, 0), (0, sp - s)))
  if segments is not None:
    segments = jnp.pad(segments.astype(jnp.int32), ((0, 0), (0, sp - s)), constant_values=-1)
  # Tie the mask to q: under jax.grad of the decoder's layer scan, JAX hoists
  # loop-invariant work out of the loop, which would precompute every block pair's
  # mask, [T/bq, S/bkv, bq, bkv] (quadratic memory). The barrier makes it loop-variant.
  q, slots, valid, segments = jax.lax.optimization_barrier((q, slots, valid, segments))
  padded_mask = AttentionMask(slots, valid, mask.queries_are_keys, segments, mask.is_causal)
  return _chunked(q, k, v, padded_mask, float(scale), bq, bkv)[:, :t]


# ---- cudnn: cuDNN flash attention (GPU) --------------------------------------------------------


def fused_causal_attention(q_NxTxKxRxH, k_NxTxKxH, v_NxTxKxH, key_valid_NxT, scale: float, *,
                           implementation: str = "cudnn"):
  """Causal self-attention with padding through jax.nn.dot_product_attention. -> [N, T, K, R, H].

  cuDNN's fused kernel takes padding only as sequence lengths (valid prefixes),
  not as left padding, and a boolean mask would become a dense [N, 1, T, T] bias.
  So each row's real tokens are first gathered to the front in order (a stable
  partition): causality among real tokens is unchanged (RoPE was already applied
  by position), the kernel runs is_causal with the real-token count as query and
  key length, and the outputs are scattered back. Memory stays linear in T.

  Args:
    key_valid_NxT: bool[N, T] real tokens, or None (no padding: plain is_causal).
    implementation: "cudnn" (GPU), or "xla" to check this construction on any backend.
  """
  n, t, kh, r, h = q_NxTxKxRxH.shape
  q_NxTxQxH = q_NxTxKxRxH.reshape(n, t, kh * r, h)

  def attend(q, k, v, lengths_N=None):
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                        query_seq_lengths=lengths_N,
                                        key_value_seq_lengths=lengths_N,
                                        implementation=implementation)

  if key_valid_NxT is None:
    return attend(q_NxTxQxH, k_NxTxKxH, v_NxTxKxH).reshape(n, t, kh, r, h)
  valid = key_valid_NxT.astype(bool)
  order_NxT = jnp.argsort(~valid, axis=1, stable=True)  # real tokens first, in order
  inverse_NxT = jnp.argsort(order_NxT, axis=1)
  gather = lambda x, idx: jnp.take_along_axis(x, idx[:, :, None, None], axis=1)
  # A row with no real token keeps length 1 (its first slot sees itself): no empty softmax.
  lengths_N = jnp.maximum(valid.sum(axis=1, dtype=jnp.int32), 1)
  out = attend(gather(q_NxTxQxH, order_NxT), gather(k_NxTxKxH, order_NxT),
               gather(v_NxTxKxH, order_NxT), lengths_N)
  return gather(out, inverse_NxT).reshape(n, t, kh, r, h)


def _check_half(name: str, dtype) -> None:
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    raise ValueError(f"attention {name!r} needs bfloat16 or float16 inputs, got {jnp.dtype(dtype)}"
                     "; use compute_dtype='bfloat16', or attention 'chunked' or 'xla'")


def cudnn_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask: AttentionMask, scale: float):
  """cuDNN flash attention (GPU only; bfloat16/float16). -> [N, T, K, R, H].

  No cache: `fused_causal_attention` (is_causal + sequence lengths after moving
  padding to the end; no dense mask). With a cache: xla for decode (T = 1, the
  scores are [N, Q, 1, S]), chunked for prefill (T > 1).
  """
  if not mask.queries_are_keys or not mask.is_causal:
    return _cached_fallback(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale)
  _check_half("cudnn", q_NxTxKxRxH.dtype)
  return fused_causal_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask.key_valid_NxS, scale)


def _cached_fallback(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale):
  """The KV-cache (and bidirectional) path of cudnn and splash: xla for T = 1, else chunked."""
  if q_NxTxKxRxH.shape[1] == 1:
    return xla_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale)
  return chunked_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale)


# ---- splash: Pallas TPU splash attention ------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _splash_kernel(seq: int, num_q_heads: int, block: int):
  """The splash kernel for causal self-attention over `seq` slots (built once per shape)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  causal = splash.MultiHeadMask([splash.CausalMask((seq, seq))] * num_q_heads)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  # Concrete mask-info arrays even when first built inside a trace: the kernel is cached.
  with jax.ensure_compile_time_eval():
    return splash.make_splash_mha_single_device(causal, block_sizes=sizes)


def splash_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask: AttentionMask, scale: float, *,
                     block: int = BLOCK, rows: str = "vmap"):
  """Pallas TPU splash attention for the no-cache path. -> [N, T, K, R, H].

  Causal over slots via the kernel's CausalMask (fully hidden blocks skipped);
  padding via segment ids: real tokens share segment 0 and each padded slot i has
  its own segment i + 1. Real queries get exactly the AttentionMask rule; a padded
  query sees only itself (the rule also lets a right-padded query see earlier real
  tokens; nothing reads padded positions, and no row is empty). T is padded to a
  multiple of the block (a multiple of 128, the kernel's lane width; `block` is
  rounded up to one and shrinks to T when T is short). The head dimension is
  passed as is (full-width blocks). With a cache: as cudnn (xla for decode,
  chunked for prefill). Runs on TPU, or on CPU under
  `jax.experimental.pallas.tpu.force_tpu_interpret_mode()` (how it is tested).

  Args:
    block: query and key block length of the kernel (forward and backward).
    rows: "vmap" (the rows become a parallel grid axis of the kernel, as on TPU) or
      "map" (a loop over rows; TPU interpret mode cannot batch the kernel).
  """
  if rows not in ("vmap", "map"):
    raise ValueError(f"splash attention: rows {rows!r} is not supported; expected 'vmap' or 'map'")
  if not mask.queries_are_keys or not mask.is_causal:
    return _cached_fallback(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale)
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  n, t, kh, r, h = q_NxTxKxRxH.shape
  lanes = 128
  bs = min(_round_up(max(block, 1), lanes), _round_up(t, lanes))
  tp = _round_up(t, bs)
  pad = ((0, 0), (0, tp - t), (0, 0), (0, 0))
  # [N, Q, T, H] and [N, K, T, H]; the scale goes into q (the kernel has none).
  q = (q_NxTxKxRxH.astype(jnp.float32) * scale).astype(q_NxTxKxRxH.dtype).reshape(n, t, kh * r, h)
  q_NxQxTxH = jnp.einsum("ntqh->nqth", jnp.pad(q, pad))
  k_NxKxTxH = jnp.einsum("ntkh->nkth", jnp.pad(k_NxSxKxH, pad))
  v_NxKxTxH = jnp.einsum("ntkh->nkth", jnp.pad(v_NxSxKxH, pad))
  valid = mask.key_valid_NxS
  valid = jnp.ones((n, t), bool) if valid is None else valid.astype(bool)
  valid_NxT = jnp.pad(valid, ((0, 0), (0, tp - t)))
  segments_NxT = jnp.where(valid_NxT, 0, jnp.arange(1, tp + 1, dtype=jnp.int32)[None])
  kernel = _splash_kernel(tp, kh * r, bs)
  args = (q_NxQxTxH, k_NxKxTxH, v_NxKxTxH, splash.SegmentIds(q=segments_NxT, kv=segments_NxT))
  if rows == "vmap":
    out = jax.vmap(kernel)(*args)
  else:
    out = jax.lax.map(lambda row: kernel(*row), args)
  return jnp.einsum("nqth->ntqh", out)[:, :t].reshape(n, t, kh, r, h).astype(v_NxSxKxH.dtype)


# ---- selection ----------------------------------------------------------------------------------


def auto_kernel(backend: str, *, half_precision: bool) -> str:
  """The kernel "auto" runs: gpu -> cudnn (bfloat16/float16 inputs; xla for float32),
  tpu -> splash, anything else -> xla."""
  if backend == "gpu" and half_precision:
    return "cudnn"
  return "splash" if backend == "tpu" else "xla"


def auto_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask: AttentionMask, scale: float):
  """The `auto_kernel` of jax.default_backend() and the inputs' dtype. -> [N, T, K, R, H]."""
  half = jnp.dtype(q_NxTxKxRxH.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  name = auto_kernel(jax.default_backend(), half_precision=half)
  return _IMPLS[name](q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale)


_IMPLS = {"auto": auto_attention, "xla": xla_attention, "cudnn": cudnn_attention,
          "splash": splash_attention, "chunked": chunked_attention}
assert tuple(_IMPLS) == ATTENTION_IMPLS


def get_attention_fn(name: str) -> Callable:
  """The attention implementation called `name` (one of ATTENTION_IMPLS)."""
  if name not in _IMPLS:
    raise ValueError(f"attention_impl {name!r} is not supported; expected one of {ATTENTION_IMPLS}")
  return _IMPLS[name]
