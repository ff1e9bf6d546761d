"""The decoder: one NNX module for Llama 3.x, Qwen2/2.5 and Qwen3 (flags of ModelConfig).

Layer weights are stacked on a leading [L] axis and the layers run under
`jax.lax.scan`, so compile time does not grow with depth. Parameter names and
shapes (L layers, D hidden, Q query heads, K kv heads, H head_dim, F mlp, V vocab):

  embed        [V, D]          final_norm [D]          lm_head [D, V] (untied only)
  layers.attn_norm [L, D]      layers.mlp_norm [L, D]
  layers.wq [L, D, Q, H]  layers.wk / wv [L, D, K, H]  layers.wo [L, Q, H, D]
  layers.bq [L, Q, H]     layers.bk / bv [L, K, H]     (qkv_bias, Qwen2)
  layers.q_norm / k_norm [L, H]                        (qk_norm, Qwen3)
  layers.w_gate / w_up [L, D, F]   layers.w_down [L, F, D]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hicra_jax.models import layers as L
from hicra_jax.models.config import ModelConfig

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
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


def layer_param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Per-layer parameter shapes (without the leading [L] axis), flags applied."""
  d, f, h = config.hidden_size, config.intermediate_size, config.head_dim
  q, k = config.num_heads, config.num_kv_heads
  shapes = {
      "attn_norm": (d,), "wq": (d, q, h), "wk": (d, k, h), "wv": (d, k, h), "wo": (q, h, d),
      "mlp_norm": (d,), "w_gate": (d, f), "w_up": (d, f), "w_down": (f, d),
  }
  if config.qkv_bias:
    shapes.update(bq=(q, h), bk=(k, h), bv=(k, h))
  if config.qk_norm:
    shapes.update(q_norm=(h,), k_norm=(h,))
  return shapes


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Flat 'a.b' name -> shape for every parameter of the decoder."""
  shapes = {"embed": (config.vocab_size, config.hidden_size), "final_norm": (config.hidden_size,)}
  if not config.tie_embeddings:
    shapes["lm_head"] = (config.hidden_size, config.vocab_size)
  for name, shape in layer_param_shapes(config).items():
    shapes[f"layers.{name}"] = (config.num_layers, *shape)
  return shapes


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Per-layer keys/values for incremental decoding.

  k, v: [L, N, S, K, H]; valid: bool[N, S] (slot holds a real token);
  index: i32[] next slot to write (shared by all rows: prompts are padded to a
  common length); next_position: i32[N] RoPE position of each row's next token.
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


class Layers(nnx.Module):
  """Holder of the stacked per-layer parameters ([L, ...] each)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, param_dtype):
    init = nnx.initializers.normal(0.02)
    for name, shape in layer_param_shapes(config).items():
      full = (config.num_layers, *shape)
      if name.endswith("norm"):
        value = jnp.ones(full, param_dtype)
      elif name.startswith("b"):
        value = jnp.zeros(full, param_dtype)
      else:
        value = init(rngs.params(), full, param_dtype)
      setattr(self, name, nnx.Param(value))


class Decoder(nnx.Module):
  """Causal LM. `model(tokens, attention_mask)` -> logits f32[N, T, V].

  Static options: `compute_dtype` (activations and matmul inputs; params keep
  their own dtype and are cast on use), `attention_impl` ("xla" portable,
  "cudnn" flash on GPU), `remat` (one of REMAT_POLICIES, applied per layer),
  `mesh` (optional jax Mesh: activations get sharding constraints, see
  hicra_jax.sharding).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, param_dtype="float32",
               compute_dtype=None, attention_impl: str = "xla", remat: str = "none",
               mesh=None):
    param_dtype = resolve_dtype(param_dtype)
    self.config = config
    self.compute_dtype = resolve_dtype(compute_dtype or param_dtype)
    L.get_attention_fn(attention_impl)  # validate early
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat {remat!r} is not supported; expected one of {sorted(REMAT_POLICIES)}")
    self.attention_impl = attention_impl
    self.remat = remat
    self.mesh = mesh
    init = nnx.initializers.normal(0.02)
    self.embed = nnx.Param(init(rngs.params(), (config.vocab_size, config.hidden_size), param_dtype))
    self.layers = Layers(config, rngs=rngs, param_dtype=param_dtype)
    self.final_norm = nnx.Param(jnp.ones((config.hidden_size,), param_dtype))
    if not config.tie_embeddings:
      self.lm_head = nnx.Param(init(rngs.params(), (config.hidden_size, config.vocab_size),
                                    param_dtype))

  # ---- public entry points ---------------------------------------------------

  def __call__(self, tokens_NxT, attention_mask=None):
    """Full forward. tokens i32[N, T], attention_mask bool[N, T] (None: all real) -> f32[N, T, V]."""
    hidden, _ = self.hidden_states(tokens_NxT, attention_mask)
    return self.logits(hidden)

  def logits(self, hidden_NxTxD):
    """f32[N, T, V] from final hidden states (matmul in compute dtype, f32 accumulation)."""
    return jnp.einsum("ntd,dv->ntv", hidden_NxTxD, self.head_weight(),
                      preferred_element_type=jnp.float32)

  def head_weight(self):
    """[D, V] output projection in compute dtype (the embedding, transposed, when tied)."""
    w = self.embed[...].T if self.config.tie_embeddings else self.lm_head[...]
    return w.astype(self.compute_dtype)

  def hidden_states(self, tokens_NxT, attention_mask=None, cache: KVCache | None = None):
    """Final-normed hidden states [N, T, D] (compute dtype) and the updated cache.

    Without a cache the T tokens attend causally to each other. With a cache the
    tokens are written at slots [cache.index, cache.index + T) and attend to all
    valid earlier slots; positions continue from cache.next_position per row, so
    left- and right-padded batches get the same values for their real tokens.
    """
    cfg = self.config
    n, t = tokens_NxT.shape
    unpadded = attention_mask is None
    if unpadded:
      attention_mask = jnp.ones((n, t), bool)
    attention_mask = attention_mask.astype(bool)
    if cache is None:
      positions = L.positions_from_mask(attention_mask)
      # No padding: plain causal attention, which fused kernels do without a dense mask.
      mask = None if unpadded else L.attention_mask(jnp.arange(t), attention_mask)
    else:
      positions = L.positions_from_mask(attention_mask, cache.next_position)
      query_slots = cache.index + jnp.arange(t)
      valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, cache.index))
      mask = L.attention_mask(query_slots, valid)

    x = jnp.take(self.embed[...], tokens_NxT, axis=0).astype(self.compute_dtype)
    x = self._constrain(x, "activation")
    layer_params = {name: var[...] for name, var in vars(self.layers).items()
                    if isinstance(var, nnx.Variable)}
    layer = self._layer_fn(positions, mask, cache)
    if self.remat != "none":
      layer = jax.checkpoint(layer, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    if cache is None:
      x, _ = jax.lax.scan(lambda x, p: (layer(x, p, None)[0], None), x, layer_params)
      new_cache = None
    else:
      # The whole cache rides in the carry so each step updates one slot in
      # place, instead of re-emitting every layer's cache as scan outputs.
      def body(carry, p):
        x, kv = layer(carry[0], p, carry[1:])
        return (x, *kv), None
      (x, ks, vs, _), _ = jax.lax.scan(body, (x, cache.k, cache.v, jnp.int32(0)), layer_params)
      new_cache = KVCache(k=ks, v=vs, valid=valid, index=cache.index + t,
                          next_position=cache.next_position
                          + attention_mask.sum(axis=1, dtype=jnp.int32))
    x = L.rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
    return x, new_cache

  def decode(self, tokens_NxT, cache: KVCache, attention_mask=None):
    """Incremental step (prefill when T > 1): -> (logits f32[N, T, V], new cache)."""
    hidden, cache = self.hidden_states(tokens_NxT, attention_mask, cache)
    return self.logits(hidden), cache

  # ---- internals -------------------------------------------------------------

  def _constrain(self, x, kind: str):
    if self.mesh is None:
      return x
    from hicra_jax import sharding  # local: sharding imports models for rules
    return jax.lax.with_sharding_constraint(x, sharding.activation_sharding(self.mesh, kind, x.ndim))

  def _layer_fn(self, positions_NxT, mask_NxTxS, cache):
    cfg = self.config
    dtype = self.compute_dtype
    inv_freq = L.rope_inv_freq(cfg)
    attend = L.get_attention_fn(self.attention_impl)
    scale = cfg.head_dim ** -0.5
    groups = cfg.num_heads // cfg.num_kv_heads
    eps = cfg.rms_norm_eps

    def layer(x, p, kv):
      """One block. kv: None, or (k, v, layer index) with the full [L, ...] cache arrays."""
      p = {k: v.astype(dtype) for k, v in p.items()}
      n, t, _ = x.shape
      h = L.rms_norm(x, p["attn_norm"], eps)
      q = jnp.einsum("ntd,dqh->ntqh", h, p["wq"])
      k = jnp.einsum("ntd,dkh->ntkh", h, p["wk"])
      v = jnp.einsum("ntd,dkh->ntkh", h, p["wv"])
      if cfg.qkv_bias:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
      if cfg.qk_norm:
        q = L.rms_norm(q, p["q_norm"], eps)
        k = L.rms_norm(k, p["k_norm"], eps)
      q = L.apply_rope(q, positions_NxT, inv_freq)
      k = L.apply_rope(k, positions_NxT, inv_freq)
      if kv is not None:
        cache_k, cache_v, li = kv
        start = (li, 0, cache.index, 0, 0)
        cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype)[None], start)
        cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype)[None], start)
        k = jax.lax.dynamic_index_in_dim(cache_k, li, keepdims=False).astype(dtype)
        v = jax.lax.dynamic_index_in_dim(cache_v, li, keepdims=False).astype(dtype)
        kv = (cache_k, cache_v, li + 1)
      q = q.reshape(n, t, cfg.num_kv_heads, groups, cfg.head_dim)
      out = attend(q, k, v, mask_NxTxS, scale).reshape(n, t, cfg.num_heads, cfg.head_dim)
      x = x + jnp.einsum("ntqh,qhd->ntd", out, p["wo"])
      x = self._constrain(x, "activation")
      h = L.rms_norm(x, p["mlp_norm"], eps)
      gate = jnp.einsum("ntd,df->ntf", h, p["w_gate"])
      up = jnp.einsum("ntd,df->ntf", h, p["w_up"])
      x = x + jnp.einsum("ntf,fd->ntd", jax.nn.silu(gate) * up, p["w_down"])
      x = self._constrain(x, "activation")
      return x, kv

    return layer
