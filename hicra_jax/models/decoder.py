"""The decoder: one NNX module for Llama 3.x, Qwen2/2.5, Qwen3, Qwen2.5-VL (ModelConfig flags).

Its parameters are the rows of the schema table (models/schema.py): `embed`
[V, D], `final_norm` [D], `lm_head` [D, V] (untied only), and the per-layer
tensors under `layers`, stacked on a leading [L] axis, e.g. `layers.wq`
[L, D, Q, H]. The layers run under `jax.lax.scan`, so compile time does not
grow with depth. Qwen2.5-VL adds the vision tower's rows under `visual`
(models/vision.py): given `vision=` inputs, image embeddings replace the
image-pad tokens' and the positions become multimodal RoPE's [3, N, T].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hicra_jax import options
from hicra_jax.models import attention as A
from hicra_jax.models import layers as L
from hicra_jax.models import partition, schema
from hicra_jax.models import vision as VT
from hicra_jax.models.config import ModelConfig
from hicra_jax.models.vision_inputs import VisionInputs

# "dots" also keeps the chunked kernel's output and log-sum-exp: without them it would
# keep the kernel's per-block scores (dots too) to recompute them, memory quadratic in T.
REMAT_POLICIES = dict(zip(options.REMATS, (
    None,
    jax.checkpoint_policies.nothing_saveable,
    jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.checkpoint_dots,
        jax.checkpoint_policies.save_only_these_names(A.ATTENTION_OUT, A.ATTENTION_LSE)),
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
), strict=True))
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resolve_dtype(dtype: Any) -> jnp.dtype:
  """'float32' | 'bfloat16' | a jnp dtype -> jnp dtype; anything else is a clear error."""
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f"dtype {dtype!r} is not supported; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]
  dt = jnp.dtype(dtype)
  if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"dtype {dt} is not supported; expected float32 or bfloat16")
  return dt


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Per-layer keys/values for incremental decoding.

  k, v: [L, N, S, K, H] (N = `batch` rows, S = `max_len` slots);
  valid: bool[N, S] (slot holds a real token);
  index: i32[] next slot to write, shared by all rows (prompts are padded to a
  common length); or i32[N], each row's own next slot (a pool of rows at
  different stages, sampling/slot_pool.py; one token per row per call, and a
  row's valid slots must be its own earlier tokens only);
  next_position: i32[N] RoPE position of each row's next token.
  """

  k: jax.Array
  v: jax.Array
  valid: jax.Array
  index: jax.Array
  next_position: jax.Array

  @classmethod
  def init(cls, config: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32),
               next_position=jnp.zeros((batch,), jnp.int32))

  @staticmethod
  def num_bytes(config: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> int:
    per = config.num_layers * batch * max_len * config.num_kv_heads * config.head_dim
    return 2 * per * jnp.dtype(dtype).itemsize + batch * max_len


PAST_EVERY_SLOT = 2**30  # a query slot after every key slot: the causal rule hides nothing


def _write_slots(cache_LxNxSxKxH, new_NxTxKxH, layer, index):
  """The cache with layer `layer`'s T new keys (or values) at slots index + [0, T).

  index: i32[] shared by the rows, or i32[N] per row (T = 1; a slot >= S is dropped).
  """
  new_NxTxKxH = new_NxTxKxH.astype(cache_LxNxSxKxH.dtype)
  if index.ndim:
    rows_N = jnp.arange(new_NxTxKxH.shape[0])
    return cache_LxNxSxKxH.at[layer, rows_N, index].set(new_NxTxKxH[:, 0], mode="drop")
  return jax.lax.dynamic_update_slice(cache_LxNxSxKxH, new_NxTxKxH[None], (layer, 0, index, 0, 0))


class Layers(nnx.Module):
  """Holder of a group of parameters: the stacked per-layer ones ([L, ...] each; schema rows
  `layers.*`), the vision tower's (`visual.*`) and its blocks' ([depth, ...]; `visual.blocks.*`)."""


def _values(holder: nnx.Module) -> dict:
  """{name: array} of a holder's parameters, nested holders as nested dicts."""
  out = {}
  for name, value in vars(holder).items():
    if isinstance(value, nnx.Variable):
      out[name] = value[...]
    elif isinstance(value, Layers):
      out[name] = _values(value)
  return out


def init_param(tensor: schema.Tensor, config: ModelConfig, rngs: nnx.Rngs, dtype) -> nnx.Param:
  """A fresh parameter for a schema row: normal(INIT_STD), ones or zeros."""
  shape = schema.shape(tensor, config)
  if tensor.init == "ones":
    return nnx.Param(jnp.ones(shape, dtype))
  if tensor.init == "zeros":
    return nnx.Param(jnp.zeros(shape, dtype))
  return nnx.Param(nnx.initializers.normal(schema.INIT_STD)(rngs.params(), shape, dtype))


class Decoder(nnx.Module):
  """Causal LM. `model(tokens, attention_mask)` -> logits f32[N, T, V].

  Static options: `compute_dtype` (activations and matmul inputs; params keep
  their own dtype and are cast on use), `attention_impl` (one of
  attention.ATTENTION_IMPLS: "auto" | "xla" | "cudnn" | "splash" | "chunked"; what
  each does with and without a cache: models/attention.py), `remat` (one of
  REMAT_POLICIES, applied per layer),
  `mesh` (optional jax Mesh: activations keep their rows split over the batch
  axes, models/partition.py; `hicra_jax.sharding.make_mesh` builds one).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, param_dtype="float32",
               compute_dtype=None, attention_impl: str = "xla", remat: str = "none",
               mesh=None):
    param_dtype = resolve_dtype(param_dtype)
    self.config = config
    self.compute_dtype = resolve_dtype(compute_dtype or param_dtype)
    A.get_attention_fn(attention_impl)  # validate early
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat {remat!r} is not supported; expected one of {sorted(REMAT_POLICIES)}")
    self.attention_impl = attention_impl
    self.remat = remat
    self.mesh = mesh
    self.layers = Layers()
    # In table order: random draws come from `rngs` in that order.
    for tensor in schema.tensors(config):
      owner = self
      for part in filter(None, tensor.owner.split(".")):
        if not hasattr(owner, part):
          setattr(owner, part, Layers())
        owner = getattr(owner, part)
      setattr(owner, tensor.attr, init_param(tensor, config, rngs, param_dtype))

  # ---- public entry points ---------------------------------------------------

  def __call__(self, tokens_NxT, attention_mask=None, pixel_values=None, image_grid_thw=None, *,
               vision: VisionInputs | None = None):
    """Full forward -> logits f32[N, T, V].

    tokens i32[N, T]; attention_mask bool[N, T] (None: all real). Images (Qwen2.5-VL),
    either as transformers passes them, pixel_values f32[patches, C] and image_grid_thw
    [images, 3] packed over the batch (eager only: laid out on the host from the
    tokens, models/vision_inputs.py), or already laid out as `vision`.
    """
    if pixel_values is not None or image_grid_thw is not None:
      if vision is not None or pixel_values is None or image_grid_thw is None:
        raise ValueError("pass images as pixel_values with image_grid_thw, or as vision=")
      if isinstance(tokens_NxT, jax.core.Tracer):
        raise ValueError("pixel_values / image_grid_thw are laid out on the host from concrete "
                         "tokens; inside jit pass vision=VisionInputs.from_packed(...) instead")
      vision = VisionInputs.from_packed(self.config, pixel_values, image_grid_thw, tokens_NxT,
                                        attention_mask)
    hidden, _ = self.hidden_states(tokens_NxT, attention_mask, vision=vision)
    return self.logits(hidden)

  def logits(self, hidden_NxTxD):
    """f32[N, T, V] from final hidden states (matmul in compute dtype, f32 accumulation)."""
    return jnp.einsum("ntd,dv->ntv", hidden_NxTxD, self.head_weight(),
                      preferred_element_type=jnp.float32)

  def head_weight(self):
    """[D, V] output projection in compute dtype (the embedding, transposed, when tied)."""
    w = self.embed[...].T if self.config.tie_embeddings else self.lm_head[...]
    return w.astype(self.compute_dtype)

  def hidden_states(self, tokens_NxT, attention_mask=None, cache: KVCache | None = None, *,
                    window: int | None = None, vision: VisionInputs | None = None):
    """Final-normed hidden states [N, T, D] (compute dtype) and the updated cache.

    Without a cache the T tokens attend causally to each other. With a cache the
    tokens are written at slots [cache.index, cache.index + T) and attend to all
    valid earlier slots; positions continue from cache.next_position per row, so
    left- and right-padded batches get the same values for their real tokens.
    A per-row index (i32[N]) writes each row's one token (T = 1) at its own slot.
    window (static): attention reads only cache slots [0, window), which must
    hold every slot in use (cache.index + T <= window); decoding then reads
    window / S of the cache per step instead of all of it.
    vision: the rows' images (Qwen2.5-VL; models/vision_inputs.py). Their embeddings
    replace the image-pad tokens' and positions are multimodal RoPE's; with a cache,
    every image token of the rows must be in these T tokens (a prefill), and
    next_position advances by the rows' RoPE shift too, so decoding goes on with
    plain positions (as transformers' rope_deltas).
    """
    cfg = self.config
    n, t = tokens_NxT.shape
    if vision is not None and not cfg.is_multimodal:
      raise ValueError(f"vision inputs given to a {cfg.architecture} model, which has no "
                       f"vision tower")
    unpadded = attention_mask is None
    if unpadded:
      attention_mask = jnp.ones((n, t), bool)
    mask_NxT = attention_mask.astype(bool)
    if cache is None:
      positions_NxT = L.positions_from_mask(mask_NxT)
      # Described, not materialized: memory-efficient kernels never build [N, T, S].
      mask = A.AttentionMask.causal(t, None if unpadded else mask_NxT)
    elif cache.index.ndim:  # per-row write slots
      if t != 1:
        raise ValueError(f"a KVCache with per-row write slots (index {cache.index.shape}) takes "
                         f"one token per row per call, got {t}")
      positions_NxT = L.positions_from_mask(mask_NxT, cache.next_position)
      valid_NxS = cache.valid.at[jnp.arange(n), cache.index].set(mask_NxT[:, 0], mode="drop")
      # Each row's valid slots are its own earlier tokens, so validity alone is the
      # causal rule: the query sits past every key slot (padded ones included).
      mask = A.AttentionMask.cached(jnp.full((1,), PAST_EVERY_SLOT, jnp.int32),
                                    valid_NxS[:, :window])
    else:
      positions_NxT = L.positions_from_mask(mask_NxT, cache.next_position)
      slots_T = cache.index + jnp.arange(t)
      valid_NxS = jax.lax.dynamic_update_slice(cache.valid, mask_NxT, (0, cache.index))
      mask = A.AttentionMask.cached(slots_T, valid_NxS[:, :window])

    x_NxTxD = jnp.take(self.embed[...], tokens_NxT, axis=0).astype(self.compute_dtype)
    positions, shift_N = positions_NxT, 0
    if vision is not None:  # multimodal RoPE positions [3, N, T]; image embeddings placed
      positions, shift_N = VT.mrope_positions(tokens_NxT, mask_NxT, vision, cfg.image_token_id,
                                              None if cache is None else cache.next_position)
      x_NxTxD = VT.place_images(x_NxTxD, tokens_NxT, mask_NxT, self.image_embeddings(vision),
                                vision, cfg.image_token_id)
    x_NxTxD = self._constrain_rows(x_NxTxD)
    layer_params = _values(self.layers)
    layer = self._layer_fn(positions, mask, cache, window)
    if self.remat != "none":
      layer = jax.checkpoint(layer, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    if cache is None:
      x_NxTxD, _ = jax.lax.scan(lambda x, p: (layer(x, p, None)[0], None), x_NxTxD, layer_params)
      new_cache = None
    else:
      # The whole cache rides in the carry so each step updates one slot in
      # place, instead of re-emitting every layer's cache as scan outputs.
      def body(carry, p):
        x, kv = layer(carry[0], p, carry[1:])
        return (x, *kv), None
      (x_NxTxD, k_LxNxSxKxH, v_LxNxSxKxH, _), _ = jax.lax.scan(
          body, (x_NxTxD, cache.k, cache.v, jnp.int32(0)), layer_params)
      new_cache = KVCache(k=k_LxNxSxKxH, v=v_LxNxSxKxH, valid=valid_NxS, index=cache.index + t,
                          next_position=cache.next_position
                          + mask_NxT.sum(axis=1, dtype=jnp.int32) + shift_N)
    x_NxTxD = L.rms_norm(x_NxTxD, self.final_norm[...], cfg.rms_norm_eps)
    return x_NxTxD, new_cache

  def decode(self, tokens_NxT, cache: KVCache, attention_mask=None, *,
             window: int | None = None, vision: VisionInputs | None = None):
    """Incremental step (prefill when T > 1): -> (logits f32[N, T, V], new cache).

    window, vision: see `hidden_states`.
    """
    hidden, cache = self.hidden_states(tokens_NxT, attention_mask, cache, window=window,
                                       vision=vision)
    return self.logits(hidden), cache

  def image_embeddings(self, vision: VisionInputs):
    """The vision tower: [N, U, D] (compute dtype), one embedding per merge-unit slot."""
    full = "xla" if self.attention_impl == "xla" else "chunked"
    return VT.vision_tower(_values(self.visual), self.config.vision, vision,
                           dtype=self.compute_dtype, full_attention=full,
                           remat_policy=REMAT_POLICIES[self.remat],
                           checkpoint=self.remat != "none")

  # ---- internals -------------------------------------------------------------

  def _constrain_rows(self, x_NxTxD):
    """With a mesh: rows N split over the batch axes (models/partition.py)."""
    if self.mesh is None:
      return x_NxTxD
    return jax.lax.with_sharding_constraint(x_NxTxD, partition.batch_sharding(self.mesh, 3))

  def _layer_fn(self, positions, mask: A.AttentionMask, cache, window: int | None = None):
    """positions: i32[N, T], or multimodal RoPE's i32[3, N, T]."""
    cfg = self.config
    dtype = self.compute_dtype
    inv_freq = L.rope_inv_freq(cfg)
    freq_rows = L.mrope_freq_rows(cfg.mrope_section) if positions.ndim == 3 else None
    attend = A.get_attention_fn(self.attention_impl)
    scale = cfg.head_dim ** -0.5
    r = cfg.num_heads // cfg.num_kv_heads  # query heads per key/value head
    eps = cfg.rms_norm_eps

    def layer(x_NxTxD, p, kv):
      """One block. p: this layer's parameters (the `layers.*` schema rows without [L]).

      kv: None, or (keys, values [L, N, S, K, H] of the whole cache, this layer's index).
      """
      p = {name: w.astype(dtype) for name, w in p.items()}
      n, t, _ = x_NxTxD.shape
      h_NxTxD = L.rms_norm(x_NxTxD, p["attn_norm"], eps)
      q_NxTxQxH = jnp.einsum("ntd,dqh->ntqh", h_NxTxD, p["wq"])
      k_NxTxKxH = jnp.einsum("ntd,dkh->ntkh", h_NxTxD, p["wk"])
      v_NxTxKxH = jnp.einsum("ntd,dkh->ntkh", h_NxTxD, p["wv"])
      if cfg.qkv_bias:
        q_NxTxQxH, k_NxTxKxH, v_NxTxKxH = (q_NxTxQxH + p["bq"], k_NxTxKxH + p["bk"],
                                           v_NxTxKxH + p["bv"])
      if cfg.qk_norm:
        q_NxTxQxH = L.rms_norm(q_NxTxQxH, p["q_norm"], eps)
        k_NxTxKxH = L.rms_norm(k_NxTxKxH, p["k_norm"], eps)
      q_NxTxQxH = L.apply_rope(q_NxTxQxH, positions, inv_freq, freq_rows)
      k_NxTxKxH = L.apply_rope(k_NxTxKxH, positions, inv_freq, freq_rows)
      if kv is None:  # the T positions attend to each other: S = T
        k_NxSxKxH, v_NxSxKxH = k_NxTxKxH, v_NxTxKxH
      else:
        cache_k, cache_v, li = kv
        cache_k = _write_slots(cache_k, k_NxTxKxH, li, cache.index)
        cache_v = _write_slots(cache_v, v_NxTxKxH, li, cache.index)
        # Only the window's slots are read (a slice of a dynamic slice: one read).
        k_NxSxKxH = jax.lax.dynamic_index_in_dim(cache_k, li, keepdims=False)[:, :window]
        v_NxSxKxH = jax.lax.dynamic_index_in_dim(cache_v, li, keepdims=False)[:, :window]
        k_NxSxKxH, v_NxSxKxH = k_NxSxKxH.astype(dtype), v_NxSxKxH.astype(dtype)
        kv = (cache_k, cache_v, li + 1)
      q_NxTxKxRxH = q_NxTxQxH.reshape(n, t, cfg.num_kv_heads, r, cfg.head_dim)
      out_NxTxQxH = attend(q_NxTxKxRxH, k_NxSxKxH, v_NxSxKxH, mask, scale).reshape(
          n, t, cfg.num_heads, cfg.head_dim)
      x_NxTxD = x_NxTxD + jnp.einsum("ntqh,qhd->ntd", out_NxTxQxH, p["wo"])
      x_NxTxD = self._constrain_rows(x_NxTxD)
      h_NxTxD = L.rms_norm(x_NxTxD, p["mlp_norm"], eps)
      gate_NxTxF = jnp.einsum("ntd,df->ntf", h_NxTxD, p["w_gate"])
      up_NxTxF = jnp.einsum("ntd,df->ntf", h_NxTxD, p["w_up"])
      x_NxTxD = x_NxTxD + jnp.einsum("ntf,fd->ntd", jax.nn.silu(gate_NxTxF) * up_NxTxF,
                                     p["w_down"])
      x_NxTxD = self._constrain_rows(x_NxTxD)
      return x_NxTxD, kv

    return layer
