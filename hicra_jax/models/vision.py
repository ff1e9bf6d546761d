"""The Qwen2.5-VL vision tower and multimodal RoPE positions: pure jittable functions.

The tower (transformers' Qwen2_5_VisionTransformerPretrainedModel): a patch
embedding (a Conv3d with stride = kernel, i.e. one matmul per flattened patch),
`depth` pre-norm blocks (RMSNorm, attention with a fused qkv and 2D RoPE,
RMSNorm, gated SiLU MLP with biases) that attend inside windows except the
blocks at fullatt_block_indexes, which attend over the whole image, and the
patch merger (RMSNorm, the merge unit's patches concatenated, Linear-GELU-Linear)
that gives one embedding of the language model's width per image token.

Inputs come laid out by `vision_inputs.VisionInputs` (rows; patches in window
order). The blocks run under `jax.lax.scan` with `lax.cond` choosing window or
full attention per block. Window attention reshapes the row into its window
blocks (attention inside each, [N * windows, window_patches]); full attention
is the same attention function with a segment-id mask (one segment per image),
both through models/attention.py.

Shape letters: hicra_jax's legend plus X patch slots, U merge units (image
tokens), C a flattened patch, J vision width, A position rows (vision_inputs.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hicra_jax.models import attention as A
from hicra_jax.models import layers as L
from hicra_jax.models.config import VisionConfig
from hicra_jax.models.vision_inputs import VisionInputs

NORM_EPS = 1e-6  # every RMSNorm of the tower (fixed in transformers)


def rope_inv_freq(vision: VisionConfig):
  """f32[head_dim / 2]: the 2D RoPE frequencies, the h half then the w half (as transformers)."""
  half = vision.head_dim // 2
  inv = 1.0 / (vision.rope_theta ** (jnp.arange(0, half, 2, dtype=jnp.float32) / half))
  return jnp.concatenate([inv, inv])


def rope_freq_rows(vision: VisionConfig) -> tuple[int, ...]:
  """The position row (0: patch row h, 1: patch column w) of each 2D RoPE frequency."""
  quarter = vision.head_dim // 4
  return (0,) * quarter + (1,) * quarter


def vision_tower(params: dict, vision: VisionConfig, inputs: VisionInputs, *, dtype,
                 full_attention: str = "xla", remat_policy=None, checkpoint: bool = False):
  """Image-token embeddings [N, U, D] (dtype) for the rows of `inputs`.

  params: the `visual.*` schema rows without the prefix ("patch_embed", "merger_w1", ...,
    and "blocks": {name: [depth, ...]}).
  full_attention: the models/attention.py implementation of the full-attention blocks
    ("xla": dense, "chunked": memory linear in the patches); window blocks are small
    and always dense.
  checkpoint, remat_policy: recompute each block in the backward pass (jax.checkpoint).
  """
  n, x_slots, c = inputs.patches_NxXxC.shape
  wp = vision.window_patches
  w_patch_CxJ = params["patch_embed"].reshape(c, -1).astype(dtype)
  x_NxXxJ = jnp.einsum("nxc,cj->nxj", inputs.patches_NxXxC.astype(dtype), w_patch_CxJ)
  image_NxX = inputs.patch_image_NxX
  valid_NxX = image_NxX >= 0
  positions_AxNxX = jnp.moveaxis(inputs.patch_hw_NxXx2, -1, 0)
  inv_freq, freq_rows = rope_inv_freq(vision), rope_freq_rows(vision)
  scale = vision.head_dim ** -0.5
  full_mask = A.AttentionMask.bidirectional(valid_NxX, image_NxX)
  window_mask = A.AttentionMask.bidirectional(valid_NxX.reshape(-1, wp))
  attend_full = A.get_attention_fn(full_attention)

  def full(q, k, v):
    return attend_full(q[:, :, :, None], k, v, full_mask, scale)[:, :, :, 0]

  def windowed(q, k, v):
    blocks = lambda a: a.reshape((-1, wp) + a.shape[2:])
    out = A.xla_attention(blocks(q)[:, :, :, None], blocks(k), blocks(v), window_mask, scale)
    return out[:, :, :, 0].reshape(q.shape)

  def block(x_NxXxJ, layer):
    p, is_full = layer
    p = {name: w.astype(dtype) for name, w in p.items()}
    h = L.rms_norm(x_NxXxJ, p["norm1"], NORM_EPS)
    qkv = jnp.einsum("nxj,jaqh->anxqh", h, p["wqkv"]) + p["bqkv"][:, None, None]
    q_NxXxQxH = L.apply_rope(qkv[0], positions_AxNxX, inv_freq, freq_rows)
    k_NxXxQxH = L.apply_rope(qkv[1], positions_AxNxX, inv_freq, freq_rows)
    out = jax.lax.cond(is_full, full, windowed, q_NxXxQxH, k_NxXxQxH, qkv[2])
    x_NxXxJ = x_NxXxJ + jnp.einsum("nxqh,qhj->nxj", out, p["wo"]) + p["bo"]
    h = L.rms_norm(x_NxXxJ, p["norm2"], NORM_EPS)
    gate = jnp.einsum("nxj,jf->nxf", h, p["w_gate"]) + p["b_gate"]
    up = jnp.einsum("nxj,jf->nxf", h, p["w_up"]) + p["b_up"]
    x_NxXxJ = x_NxXxJ + jnp.einsum("nxf,fj->nxj", jax.nn.silu(gate) * up, p["w_down"]) + p["b_down"]
    return x_NxXxJ, None

  if checkpoint:
    block = jax.checkpoint(block, policy=remat_policy, prevent_cse=False)
  is_full_L = jnp.asarray([i in vision.fullatt_block_indexes for i in range(vision.depth)])
  x_NxXxJ, _ = jax.lax.scan(block, x_NxXxJ, (params["blocks"], is_full_L))

  x_NxXxJ = L.rms_norm(x_NxXxJ, params["merger_norm"].astype(dtype), NORM_EPS)
  x_NxUxM = x_NxXxJ.reshape(n, x_slots // vision.merge_unit, -1)
  h = jnp.einsum("num,mf->nuf", x_NxUxM, params["merger_w1"].astype(dtype))
  h = jax.nn.gelu(h + params["merger_b1"].astype(dtype), approximate=False)
  return (jnp.einsum("nuf,fd->nud", h, params["merger_w2"].astype(dtype))
          + params["merger_b2"].astype(dtype))


def place_images(x_NxTxD, tokens_NxT, mask_NxT, image_NxUxD, inputs: VisionInputs,
                 image_token_id: int):
  """x with the k-th image-pad token of each row replaced by its image embedding.

  (transformers' masked_scatter of the image features over the image-pad tokens.)
  """
  is_image_NxT = (tokens_NxT == image_token_id) & mask_NxT
  rank_NxT = jnp.clip(jnp.cumsum(is_image_NxT, axis=1) - 1, 0, inputs.num_units - 1)
  unit_NxT = jnp.take_along_axis(inputs.token_unit_NxU, rank_NxT, axis=1)
  emb_NxTxD = jnp.take_along_axis(image_NxUxD, jnp.maximum(unit_NxT, 0)[..., None], axis=1)
  return jnp.where(is_image_NxT[..., None], emb_NxTxD.astype(x_NxTxD.dtype), x_NxTxD)


def mrope_positions(tokens_NxT, mask_NxT, inputs: VisionInputs, image_token_id: int,
                    offset_N=None):
  """Multimodal RoPE positions i32[3, N, T] (t, h, w) and each row's shift i32[N].

  As transformers' Qwen2_5_VLModel.get_rope_index: a text token's three positions
  are its count of earlier real tokens (plus offset_N) plus the shifts of the
  images before it; an image's tokens start at the position its first token would
  have, t stays there, h and w add the token's row and column in the image's
  merged grid, and the text after it continues at start + max(h', w'). Padding
  (mask False) is skipped, as with left or right padding of plain RoPE. The shift
  (transformers' rope_deltas) is what the positions of later tokens add to their
  count: a decode step after this prefill is plain RoPE at count + shift.
  """
  mask_NxT = mask_NxT.astype(bool)
  count_NxT = L.positions_from_mask(mask_NxT, offset_N)
  is_image_NxT = (tokens_NxT == image_token_id) & mask_NxT
  seen_NxT = jnp.cumsum(is_image_NxT, axis=1, dtype=jnp.int32)  # image tokens up to t
  u = inputs.num_units
  shift = lambda k: jnp.take_along_axis(inputs.rope_shift_NxU1, jnp.clip(k, 0, u), axis=1)
  text_NxT = count_NxT + shift(seen_NxT)
  rank_NxT = jnp.clip(seen_NxT - 1, 0, u - 1)
  start_NxT = jnp.take_along_axis(inputs.token_start_NxU, rank_NxT, axis=1)
  hw_NxTx2 = jnp.take_along_axis(inputs.token_hw_NxUx2, rank_NxT[..., None], axis=1)
  base_NxT = count_NxT - (rank_NxT - start_NxT) + shift(start_NxT)
  image_3xNxT = jnp.stack([base_NxT, base_NxT + hw_NxTx2[..., 0], base_NxT + hw_NxTx2[..., 1]])
  positions = jnp.where(is_image_NxT[None], image_3xNxT, text_NxT[None])
  row_shift_N = shift(seen_NxT[:, -1:])[:, 0]
  return positions.astype(jnp.int32), row_shift_N
