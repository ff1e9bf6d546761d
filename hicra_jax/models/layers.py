"""Pure building blocks of the decoder: RMSNorm, RoPE, attention, masks.

Shape letters (the legend in hicra_jax/__init__.py): N rows, T query positions,
S key slots, D model width, Q query heads, K key/value heads, R query heads
per key/value head, H head dimension.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from hicra_jax.models.config import ModelConfig

ATTENTION_IMPLS = ("xla", "cudnn")


def rms_norm(x, weight, eps: float):
  """HF RMSNorm: normalize in float32, cast back, then scale. x: [..., D], weight: [D]."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * x32.astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> jnp.ndarray:
  """f32[H/2] inverse frequencies, with `linear` or `llama3` scaling applied (as transformers)."""
  hd = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  rope = config.rope_dict
  rope_type = rope.get("rope_type", "default")
  if rope_type == "linear":
    inv_freq = inv_freq / rope["factor"]
  elif rope_type == "llama3":
    factor = rope["factor"]
    low, high = rope["low_freq_factor"], rope["high_freq_factor"]
    old_len = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv_freq = jnp.where(is_medium, smoothed, scaled)
  return inv_freq


def apply_rope(heads, positions_NxT, inv_freq):
  """Rotate-half RoPE (the HF layout): x * cos + rotate_half(x) * sin, computed in float32.

  heads: queries [N, T, Q, H] or keys [N, T, K, H]; inv_freq: f32[H/2].
  """
  angles = positions_NxT.astype(jnp.float32)[..., None] * inv_freq  # [N, T, H/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x = heads.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(heads.dtype)


def positions_from_mask(mask_NxT, offset_N=None):
  """i32[N, T] positions counting only real tokens (left/right padding safe)."""
  pos = jnp.cumsum(mask_NxT.astype(jnp.int32), axis=1) - 1
  if offset_N is not None:
    pos = pos + offset_N[:, None]
  return jnp.maximum(pos, 0)


def attention_mask(query_slots_T, key_valid_NxS):
  """bool[N, T, S]: causal over slots and key padding; a query always sees its own slot.

  Letting every query see itself means no row is fully masked, so padded
  positions produce finite (ignored) values and no NaN can leak into gradients.
  """
  key_slots = jnp.arange(key_valid_NxS.shape[1])
  causal = key_slots[None, :] <= query_slots_T[:, None]  # [T, S]
  self_slot = key_slots[None, :] == query_slots_T[:, None]
  return (causal[None] & key_valid_NxS[:, None, :]) | self_slot[None]


def xla_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask_NxTxS, scale: float):
  """Portable grouped-query attention; softmax in float32. -> [N, T, K, R, H].

  mask_NxTxS None means plain causal attention over unpadded rows (T == S).
  """
  logits = jnp.einsum("ntkrh,nskh->nkrts", q_NxTxKxRxH, k_NxSxKxH,
                      preferred_element_type=jnp.float32) * scale
  if mask_NxTxS is None:
    t, s = logits.shape[-2:]
    mask_NxTxS = jnp.tril(jnp.ones((t, s), bool))[None]
  logits = jnp.where(mask_NxTxS[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v_NxSxKxH.dtype)
  return jnp.einsum("nkrts,nskh->ntkrh", probs, v_NxSxKxH)


def cudnn_attention(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask_NxTxS, scale: float):
  """cuDNN flash attention via jax.nn.dot_product_attention (GPU, bf16/fp16). -> [N, T, K, R, H].

  mask_NxTxS None selects cuDNN's built-in causal mask (no dense mask tensor).
  """
  n, t, k, r, h = q_NxTxKxRxH.shape
  q_NxTxQxH = q_NxTxKxRxH.reshape(n, t, k * r, h)
  mask = None if mask_NxTxS is None else mask_NxTxS[:, None]
  out = jax.nn.dot_product_attention(q_NxTxQxH, k_NxSxKxH, v_NxSxKxH, mask=mask, scale=scale,
                                     is_causal=mask is None, implementation="cudnn")
  return out.reshape(n, t, k, r, h)


def get_attention_fn(name: str) -> Callable:
  if name == "xla":
    return xla_attention
  if name == "cudnn":
    return cudnn_attention
  raise ValueError(f"attention_impl {name!r} is not supported; expected one of {ATTENTION_IMPLS}")
