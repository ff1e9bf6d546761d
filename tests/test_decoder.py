"""KV cache, remat, bfloat16, the chunked log-prob / entropy function and the parameter schema."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax.models import (Decoder, KVCache, ModelConfig, model_token_logprobs_and_entropy,
                              schema, token_logprobs_and_entropy)
from hicra_jax.models.weights import build_model, flat_params

CONFIG = ModelConfig(vocab_size=96, hidden_size=48, intermediate_size=64, num_layers=3,
                     num_heads=6, num_kv_heads=2, head_dim=8, qk_norm=True,
                     architecture="Qwen3ForCausalLM")


@pytest.fixture(scope="module")
def model():
  m = Decoder(CONFIG, rngs=nnx.Rngs(0))
  # Larger weights than the default init, so logits are not flat.
  params = {k: v * (5.0 if v.ndim > 1 and "norm" not in k else 1.0)
            for k, v in flat_params(m).items()}
  return build_model(CONFIG, params)


def _batch(seed=0, n=3, t=12):
  key = jax.random.key(seed)
  tokens = jax.random.randint(key, (n, t), 0, CONFIG.vocab_size)
  lengths = jnp.array([t, t - 5, t - 2][:n])
  mask = jnp.arange(t)[None, :] >= (t - lengths)[:, None]  # left padded
  return tokens, mask


def test_kv_cache_prefill_then_steps_equals_full_forward(model):
  tokens, mask = _batch()
  full = model(tokens, mask)
  cache = KVCache.init(CONFIG, tokens.shape[0], 16)
  prefill = 7
  decode = nnx.jit(lambda m, *args: m.decode(*args))
  logits, cache = decode(model, tokens[:, :prefill], cache, mask[:, :prefill])
  pieces = [logits]
  for t in range(prefill, tokens.shape[1]):
    step, cache = decode(model, tokens[:, t:t + 1], cache, mask[:, t:t + 1])
    pieces.append(step)
  incremental = jnp.concatenate(pieces, axis=1)
  scale = float(jnp.abs(full).max())
  assert scale > 1.0
  err = jnp.abs(jnp.where(mask[..., None], incremental - full, 0)).max()
  assert float(err) <= 1e-5 * scale
  assert int(cache.index) == tokens.shape[1]
  np.testing.assert_array_equal(cache.next_position, mask.sum(1))


def test_remat_policies_match_no_remat(model):
  tokens, mask = _batch(1)
  graphdef, state = nnx.split(model)

  def loss(state, remat):
    m = nnx.merge(graphdef, state)
    m.remat = remat
    lp, _ = model_token_logprobs_and_entropy(m, tokens, mask)
    return jnp.mean(lp)

  grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  ref_val, ref_grad = grad_fn(state, "none")
  for policy in ("full", "dots", "dots_no_batch"):
    val, grad = grad_fn(state, policy)
    np.testing.assert_allclose(val, ref_val, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_within_stated_tolerance(model):
  """bfloat16 params and compute stay within 5% of max |logit| of float32."""
  tokens, mask = _batch(2)
  ref = model(tokens, mask)
  bf16 = build_model(CONFIG, {k: v.astype(jnp.bfloat16) for k, v in flat_params(model).items()},
                     param_dtype="bfloat16")
  got = bf16(tokens, mask)
  assert got.dtype == jnp.float32
  err = jnp.abs(jnp.where(mask[..., None], got - ref, 0)).max()
  assert float(err) <= 0.05 * float(jnp.abs(ref).max())
  # Mixed: float32 master params, bfloat16 compute.
  mixed = build_model(CONFIG, flat_params(model), compute_dtype="bfloat16")
  err = jnp.abs(jnp.where(mask[..., None], mixed(tokens, mask) - ref, 0)).max()
  assert float(err) <= 0.05 * float(jnp.abs(ref).max())


def _naive(hidden, head, targets, temperature):
  logits = jnp.einsum("ntd,dv->ntv", hidden, head) / temperature
  logp = jax.nn.log_softmax(logits, axis=-1)
  lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  return lp, ent


@pytest.mark.parametrize("temperature,chunk", [(1.0, 7), (0.6, 64)])
def test_token_logprobs_and_entropy_and_grads_match_naive(temperature, chunk):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(3), 4)
  hidden = jax.random.normal(k1, (3, 10, 16))
  head = jax.random.normal(k2, (16, 50))
  targets = jax.random.randint(k3, (3, 10), 0, 50)
  w = jax.random.normal(k4, (2, 3, 10))
  lp, ent = token_logprobs_and_entropy(hidden, head, targets, temperature, chunk_size=chunk)
  lp_ref, ent_ref = _naive(hidden, head, targets, temperature)
  np.testing.assert_allclose(lp, lp_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent, ent_ref, rtol=1e-5, atol=1e-5)

  def objective(fn):
    def f(h, w_):
      a, b = fn(h, w_)
      return jnp.sum(a * w[0] + b * w[1])
    return f
  ours = jax.grad(objective(lambda h, w_: token_logprobs_and_entropy(
      h, w_, targets, temperature, chunk_size=chunk)), argnums=(0, 1))(hidden, head)
  ref = jax.grad(objective(lambda h, w_: _naive(h, w_, targets, temperature)),
                 argnums=(0, 1))(hidden, head)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_token_logprobs_memory_stays_chunk_sized():
  """A vocabulary-heavy shape: the full logits would be 2048 x 32768 x 4 B = 256 MiB."""
  n, t, d, v, chunk = 4, 512, 64, 32768, 256
  hidden = jax.ShapeDtypeStruct((n, t, d), jnp.float32)
  head = jax.ShapeDtypeStruct((d, v), jnp.float32)
  targets = jax.ShapeDtypeStruct((n, t), jnp.int32)

  def loss(fn):
    def f(h, w_, y):
      lp, ent = fn(h, w_, y)
      return jnp.mean(lp) + 0.1 * jnp.mean(ent)
    return jax.jit(jax.grad(f, argnums=(0, 1)))

  chunked = loss(lambda h, w_, y: token_logprobs_and_entropy(h, w_, y, chunk_size=chunk))
  naive = loss(lambda h, w_, y: _naive(h, w_, y, 1.0))
  ours = chunked.lower(hidden, head, targets).compile().memory_analysis().temp_size_in_bytes
  full = naive.lower(hidden, head, targets).compile().memory_analysis().temp_size_in_bytes
  full_logits = n * t * v * 4
  # Stated bound: a few chunk-sized f32 buffers plus the head gradient; < 64 MiB here.
  bound = 6 * chunk * v * 4 + 2 * d * v * 4
  assert ours <= bound, (ours, bound)
  assert full >= full_logits  # the naive path really materializes the logits


def test_program_size_does_not_grow_with_depth():
  """Layers are scanned: the compiled program of 2 and 12 layers has the same size."""
  import dataclasses
  def hlo_size(num_layers):
    cfg = dataclasses.replace(CONFIG, num_layers=num_layers)
    abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    fn = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    return len(fn.lower(state, tokens).as_text())
  small, deep = hlo_size(2), hlo_size(12)
  assert abs(deep - small) <= 0.02 * small, (small, deep)


def test_unpadded_fast_path_equals_explicit_all_true_mask(model):
  tokens, _ = _batch(4)
  implicit = model(tokens)
  explicit = model(tokens, jnp.ones(tokens.shape, bool))
  np.testing.assert_allclose(implicit, explicit, rtol=1e-6, atol=1e-6)


SCHEMA_CONFIGS = {
    "llama_untied": dict(architecture="LlamaForCausalLM"),
    "qwen2_bias_tied": dict(architecture="Qwen2ForCausalLM", qkv_bias=True, tie_embeddings=True),
    "qwen3_qknorm": dict(architecture="Qwen3ForCausalLM", qk_norm=True),
}


@pytest.mark.parametrize("flags", SCHEMA_CONFIGS.values(), ids=SCHEMA_CONFIGS.keys())
def test_schema_table_gives_the_decoder_its_parameters_and_count(flags):
  cfg = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_layers=3,
                    num_heads=4, num_kv_heads=2, head_dim=6, **flags)
  abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
  shapes = {k: tuple(v.shape) for k, v in flat_params(abstract).items()}
  assert shapes == schema.param_shapes(cfg)
  assert ("lm_head" in shapes) is not cfg.tie_embeddings
  assert ("layers.bq" in shapes) is cfg.qkv_bias and ("layers.q_norm" in shapes) is cfg.qk_norm
  # num_params against the closed form: attention, MLP and two norms per layer,
  # embeddings (once when tied) and the final norm.
  d, f, h, q, k = 16, 24, 6, 4, 2
  attn = 2 * d * h * (q + k) + (h * (q + 2 * k) if cfg.qkv_bias else 0) + (
      2 * h if cfg.qk_norm else 0)
  embed = 40 * d * (1 if cfg.tie_embeddings else 2)
  assert cfg.num_params == 3 * (attn + 3 * d * f + 2 * d) + embed + d
  assert cfg.num_params == sum(math.prod(s) for s in shapes.values())


def test_schema_rows_are_consistent():
  names = [t.name for t in schema.TENSORS]
  assert len(names) == len(set(names)) == 17
  for t in schema.TENSORS:
    assert set(t.axes) <= set(schema.AXIS_SIZES), t.name
    assert t.init in schema.INITS and t.layout in schema.HF_LAYOUTS, t.name
    assert t.per_layer == (t.axes[0] == "layer") == ("{i}" in t.hf) == ("{i}" in t.gguf), t.name
