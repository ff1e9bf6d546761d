"""Pure building blocks of the decoder: RMSNorm, RoPE, positions (attention: attention.py).

Shape letters (the legend in hicra_jax/__init__.py): N rows, T query positions,
S key slots, D model width, Q query heads, K key/value heads, R query heads
per key/value head, H head dimension.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax.models.config import ModelConfig


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


def rope_angles(positions, inv_freq, freq_rows=None):
  """f32[N, T, H/2] rotation angles: position x inverse frequency.

  positions: i32[N, T] (one position per token), or i32[A, N, T] (A position
  rows: multimodal RoPE's t / h / w, the vision tower's h / w) with freq_rows,
  a static tuple of H/2 row indices: the row each frequency reads its position from.
  """
  pos = positions.astype(jnp.float32)
  if pos.ndim == 2:
    return pos[..., None] * inv_freq
  return jnp.moveaxis(pos[np.asarray(freq_rows)], 0, -1) * inv_freq


def mrope_freq_rows(sections) -> tuple[int, ...]:
  """freq_rows of multimodal RoPE: the first sections[0] frequencies read row 0 (t), ..."""
  return tuple(int(r) for r in np.repeat(np.arange(len(sections)), sections))


def apply_rope(heads, positions, inv_freq, freq_rows=None):
  """Rotate-half RoPE (the HF layout): x * cos + rotate_half(x) * sin, computed in float32.

  heads: queries [N, T, Q, H] or keys [N, T, K, H]; inv_freq: f32[H/2];
  positions, freq_rows: see `rope_angles`.
  """
  angles = rope_angles(positions, inv_freq, freq_rows)  # [N, T, H/2]
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
