"""Attention implementations (models/attention.py) vs a naive numpy reference and each other."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax import options
from hicra_jax.models import (Decoder, KVCache, ModelConfig, model_token_logprobs_and_entropy,
                              schema)
from hicra_jax.models import attention as A
from hicra_jax.models.weights import build_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import attention_memory  # noqa: E402  pylint: disable=wrong-import-position

N, K, R, H = 3, 2, 3, 16  # GQA: 2 key/value heads, 3 query heads each
SCALE = H ** -0.5
BLOCKS = dict(block_q=8, block_kv=16)  # T and S below are not multiples of either


def _qkv(seed, t, s):
  """Random float32 q [N, T, K, R, H], k and v [N, S, K, H] (numpy draws: nothing to compile)."""
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.standard_normal(shape), jnp.float32)
               for shape in ((N, t, K, R, H), (N, s, K, H), (N, s, K, H)))


def _left_padded(s, starts=(0, 5, 20), ends=None):
  """bool[N, S]: row i real on [starts[i], ends[i]) (left padding; right padding when ends < S)."""
  pos = np.arange(s)[None]
  ends = np.full(len(starts), s) if ends is None else np.asarray(ends)
  return jnp.asarray((pos >= np.asarray(starts)[:, None]) & (pos < ends[:, None]))


def reference(q, k, v, query_slots, key_valid):
  """Naive float64 numpy attention with the AttentionMask rule, loop over rows and heads."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  n, t, kh, r, h = q.shape
  s = k.shape[1]
  valid = np.ones((n, s), bool) if key_valid is None else np.asarray(key_valid)
  out = np.zeros_like(q)
  for b in range(n):
    for i, slot in enumerate(np.asarray(query_slots)):
      seen = np.array([(j <= slot and valid[b, j]) or j == slot for j in range(s)])
      for g in range(kh):
        for j in range(r):
          logits = k[b, :, g] @ q[b, i, g, j] * SCALE
          logits = np.where(seen, logits, -np.inf)
          p = np.exp(logits - logits.max())
          out[b, i, g, j] = (p / p.sum()) @ v[b, :, g]
  return out


def _chunked(*args):
  return A.chunked_attention(*args, **BLOCKS)


@pytest.fixture(autouse=True)
def highest_precision():
  with jax.default_matmul_precision("highest"):
    yield


# ---- no cache: training update / plain forward ----------------------------------------------


@pytest.mark.parametrize("padded", [True, False])
def test_no_cache_xla_and_chunked_match_reference(padded):
  t = 37
  q, k, v = _qkv(0, t, t)
  valid = _left_padded(t, ends=(t, t, 30)) if padded else None
  mask = A.AttentionMask.causal(t, valid)
  want = reference(q, k, v, np.arange(t), valid)
  for fn in (A.xla_attention, _chunked, A.chunked_attention):  # default blocks: one block
    got = jax.jit(fn, static_argnums=4)(q, k, v, mask, SCALE)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=str(fn))


def test_dense_mask_is_the_rule():
  slots, valid = jnp.array([2, 3]), _left_padded(5, starts=(0, 3, 1), ends=(5, 5, 3))
  dense = np.asarray(A.attention_mask(slots, valid))
  for b in range(3):
    for i, slot in enumerate([2, 3]):
      for j in range(5):
        assert dense[b, i, j] == ((j <= slot and bool(valid[b, j])) or j == slot)


def _loss(fn, mask, real_NxT=None):
  """A scalar function of the attention output (of the real query positions only, when given)."""
  weights = jnp.cos(jnp.arange(N * K * R * H, dtype=jnp.float32)).reshape(N, 1, K, R, H)
  if real_NxT is not None:
    weights = weights * real_NxT[:, :, None, None, None]
  return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask, SCALE)) * weights)


@pytest.mark.parametrize("cached", [False, True])
def test_chunked_gradients_match_xla(cached):
  if cached:  # prefill of 13 tokens at slots 6..18 of a 29-slot cache
    t, s = 13, 29
    mask = A.AttentionMask.cached(6 + jnp.arange(t), _left_padded(s, ends=(19, 19, 15)))
  else:
    t = s = 37
    mask = A.AttentionMask.causal(t, _left_padded(t, ends=(t, t, 30)))
  q, k, v = _qkv(1, t, s)
  want = jax.jit(jax.grad(_loss(A.xla_attention, mask), (0, 1, 2)))(q, k, v)
  got = jax.jit(jax.grad(_loss(_chunked, mask), (0, 1, 2)))(q, k, v)
  for name, g, w in zip("qkv", got, want):
    assert float(jnp.abs(w).max()) > 0.1  # the check is not vacuous
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")


# ---- with a KV cache: prefill (T > 1) and decode (T = 1) -------------------------------------


@pytest.mark.parametrize("start,t", [(6, 13), (28, 1)])
def test_cache_paths_match_reference(start, t):
  s = 29
  q, k, v = _qkv(2, t, s)
  # Left-padded prompts; slots past the written ones are invalid (not yet filled).
  valid = _left_padded(s, ends=(start + t,) * N)
  slots = start + jnp.arange(t)
  mask = A.AttentionMask.cached(slots, valid)
  want = reference(q, k, v, slots, valid)
  for name in ("xla", "chunked", "cudnn", "splash"):  # cudnn/splash: their cache fallbacks
    fn = _chunked if name == "chunked" else A.get_attention_fn(name)
    got = jax.jit(fn, static_argnums=4)(q, k, v, mask, SCALE)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=name)


# ---- the cuDNN construction, checked through jax's xla implementation ------------------------


def test_fused_causal_attention_construction_matches_reference():
  """cudnn's path (real tokens moved to the front, is_causal + lengths) on real positions."""
  t = 37
  q, k, v = _qkv(3, t, t)
  valid = _left_padded(t, starts=(0, 5, 20), ends=(t, 31, 33))
  want = reference(q, k, v, np.arange(t), valid)
  got = jax.jit(lambda *a: A.fused_causal_attention(*a, SCALE, implementation="xla"))(
      q, k, v, valid)
  real = np.asarray(valid)[:, :, None, None, None]
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=1e-5, rtol=0)
  # A row with no real token stays finite.
  empty = valid.at[1].set(False)
  assert bool(jnp.isfinite(A.fused_causal_attention(q, k, v, empty, SCALE,
                                                    implementation="xla")).all())
  unpadded = A.fused_causal_attention(q, k, v, None, SCALE, implementation="xla")
  np.testing.assert_allclose(unpadded, reference(q, k, v, np.arange(t), None), atol=1e-5, rtol=0)


def test_cudnn_rejects_float32_with_a_clear_error():
  q, k, v = _qkv(0, 4, 4)
  with pytest.raises(ValueError, match="'cudnn' needs bfloat16 or float16 inputs, got float32"):
    A.cudnn_attention(q, k, v, A.AttentionMask.causal(4), SCALE)


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="the cuDNN kernel needs a GPU; on CPU its construction is checked "
                    "above through jax's xla implementation (the device suite runs this)")
def test_cudnn_kernel_matches_reference_on_gpu():
  _assert_kernel_matches_reference(A.cudnn_attention, jnp.bfloat16, atol=3e-2,
                                   ends=(256, 200, 250))


@pytest.mark.skipif(jax.default_backend() != "tpu",
                    reason="the compiled splash kernel needs a TPU; on CPU it runs in TPU "
                    "interpret mode (test_splash_interpret_matches_xla)")
def test_splash_kernel_matches_reference_on_tpu():
  _assert_kernel_matches_reference(A.splash_attention, jnp.float32, atol=1e-2)


def _assert_kernel_matches_reference(kernel, dtype, *, atol, ends=None, t=256):
  """A device kernel on a left/right-padded causal batch of T = t, on real positions."""
  q, k, v = _qkv(4, t, t)
  valid = _left_padded(t, starts=(0, 5, 20), ends=ends)
  want = reference(q, k, v, np.arange(t), valid)
  got = kernel(*(x.astype(dtype) for x in (q, k, v)), A.AttentionMask.causal(t, valid), SCALE)
  real = np.asarray(valid)[:, :, None, None, None]
  np.testing.assert_allclose(np.where(real, np.asarray(got, np.float32), 0),
                             np.where(real, want, 0), atol=atol, rtol=0)


# ---- splash (Pallas TPU kernel) in TPU interpret mode on CPU ----------------------------------


@pytest.mark.slow
def test_splash_interpret_matches_xla():
  from jax.experimental.pallas import tpu as pltpu
  t = 150  # padded to 256 inside (two 128 blocks)
  q, k, v = _qkv(4, t, t)
  valid = _left_padded(t, starts=(0, 7, 100), ends=(t, t, 140))
  mask = A.AttentionMask.causal(t, valid)

  def splash(*args):
    return A.splash_attention(*args, block=128, rows="map")

  want = reference(q, k, v, np.arange(t), valid)
  want_grads = jax.grad(_loss(A.xla_attention, mask, valid), (0, 1, 2))(q, k, v)
  with pltpu.force_tpu_interpret_mode():
    got = jax.jit(splash, static_argnums=4)(q, k, v, mask, SCALE)
    grads = jax.jit(jax.grad(_loss(splash, mask, valid), (0, 1, 2)))(q, k, v)
  # Real positions follow the rule; a padded one sees only itself (its own value).
  real = np.asarray(valid)[:, :, None, None, None]
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=1e-5, rtol=0)
  own_value = np.broadcast_to(np.asarray(v)[:, :, :, None], got.shape)
  np.testing.assert_allclose(np.where(real, 0, got), np.where(real, 0, own_value), atol=1e-5,
                             rtol=0)
  for name, g, w in zip("qkv", grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")


# ---- the whole decoder --------------------------------------------------------------------------

CONFIG = ModelConfig(vocab_size=96, hidden_size=48, intermediate_size=64, num_layers=2,
                     num_heads=6, num_kv_heads=2, head_dim=8, qkv_bias=True,
                     architecture="Qwen2ForCausalLM")


@pytest.fixture(scope="module")
def params():
  """Random weights (numpy draws, larger than the default init so attention is not flat)."""
  rng = np.random.default_rng(0)
  out = {}
  for tensor in schema.tensors(CONFIG):
    shape = schema.shape(tensor, CONFIG)
    scale = 0.1 if len(shape) > 1 and "norm" not in tensor.name else 1.0
    out[tensor.name] = jnp.asarray(1.0 + 0.1 * rng.standard_normal(shape) if "norm" in tensor.name
                                   else scale * rng.standard_normal(shape), jnp.float32)
  return out


def test_decoder_chunked_matches_xla(params, monkeypatch):
  # Small blocks, so the 45 positions and 48 cache slots span several ragged blocks.
  monkeypatch.setitem(A._IMPLS, "chunked", _chunked)
  n, t = 3, 45
  tokens = jnp.asarray(np.random.default_rng(5).integers(0, CONFIG.vocab_size, (n, t)))
  mask = _left_padded(t, starts=(0, 9, 30), ends=(t, t, 40))
  xla = build_model(CONFIG, params, attention_impl="xla")
  chunked = build_model(CONFIG, params, attention_impl="chunked")
  want = nnx.jit(lambda m, x, a: m(x, a))(xla, tokens, mask)
  got = nnx.jit(lambda m, x, a: m(x, a))(chunked, tokens, mask)
  scale = float(jnp.abs(want).max())
  assert scale > 1.0
  np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=0)
  # Prefill 30 tokens into a cache, then decode one token at a time.
  def run(model):
    cache = KVCache.init(CONFIG, n, 48)
    decode = nnx.jit(lambda m, *a: m.decode(*a))
    pieces = []
    for lo, hi in ((0, 30), *((i, i + 1) for i in range(30, t))):
      logits, cache = decode(model, tokens[:, lo:hi], cache, mask[:, lo:hi])
      pieces.append(logits)
    return jnp.concatenate(pieces, axis=1)
  incremental = run(chunked)
  real = np.asarray(mask)[..., None]
  np.testing.assert_allclose(np.where(real, incremental, 0), np.where(real, want, 0),
                             atol=1e-5 * scale, rtol=0)


def test_decoder_chunked_gradients_match_xla(params, monkeypatch):
  """The training update's path: d(mean log-likelihood)/d(params), chunked under remat vs xla."""
  monkeypatch.setitem(A._IMPLS, "chunked", _chunked)
  n, t = 2, 21
  tokens = jnp.asarray(np.random.default_rng(6).integers(0, CONFIG.vocab_size, (n, t)))
  mask = _left_padded(t, starts=(0, 6), ends=(t, 17))

  def grads(model):
    graphdef, state = nnx.split(model)
    def loss(state):
      lp, _ = model_token_logprobs_and_entropy(nnx.merge(graphdef, state), tokens, mask)
      return jnp.sum(lp * mask[:, 1:]) / mask[:, 1:].sum()
    return jax.tree.leaves(jax.jit(jax.grad(loss))(state))

  want = grads(build_model(CONFIG, params, attention_impl="xla"))
  got = grads(build_model(CONFIG, params, attention_impl="chunked", remat="full"))
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, atol=1e-4 * float(jnp.abs(w).max()) + 1e-7, rtol=0)


# ---- selection ---------------------------------------------------------------------------------


def test_names_match_the_option_list_and_auto_is_xla_on_cpu():
  assert A.ATTENTION_IMPLS == options.ATTENTIONS
  assert jax.default_backend() == "cpu"
  q, k, v = _qkv(6, 9, 9)
  mask = A.AttentionMask.causal(9, _left_padded(9, starts=(0, 2, 4)))
  auto = jax.jit(A.get_attention_fn("auto"), static_argnums=4)
  np.testing.assert_array_equal(auto(q, k, v, mask, SCALE),
                                jax.jit(A.xla_attention, static_argnums=4)(q, k, v, mask, SCALE))


def test_bad_names_fail_naming_the_value_and_the_choices():
  with pytest.raises(ValueError, match=r"'flash'.*'auto', 'xla', 'cudnn', 'splash', 'chunked'"):
    A.get_attention_fn("flash")
  with pytest.raises(ValueError, match=r"'flash'.*'chunked'"):
    Decoder(CONFIG, rngs=nnx.Rngs(0), attention_impl="flash")
  with pytest.raises(ValueError, match="block_q 0"):
    A.chunked_attention(*_qkv(0, 4, 4), A.AttentionMask.causal(4), SCALE, block_q=0)


def test_chunked_memory_is_linear_in_length():
  """Compiled temporaries of forward + backward through a 2-layer scan (as in the decoder)
  grow ~2x per doubling of T; dense scores alone would be ~4x and far larger."""
  def temp_bytes(t):
    def f(q, w, valid):
      mask = A.AttentionMask.causal(t, valid)
      def layer(x, w_HxH):
        k = jnp.einsum("ntkrh,hg->ntkrg", x, w_HxH)[:, :, :, 0]
        return A.chunked_attention(x, k, k, mask, SCALE, block_q=128, block_kv=128), None
      return jax.grad(lambda w: jnp.sum(jax.lax.scan(layer, q, w)[0]))(w)
    args = (jax.ShapeDtypeStruct((1, t, 1, 2, 16), jnp.float32),
            jax.ShapeDtypeStruct((2, 16, 16), jnp.float32), jax.ShapeDtypeStruct((1, t), bool))
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes
  small, large = temp_bytes(1024), temp_bytes(2048)
  dense_scores = 2 * 2048 * 2048 * 4  # the f32 [Q, T, T] scores of one layer at T = 2048
  assert large < 2.5 * small, (small, large)
  assert large < dense_scores / 4, (large, dense_scores)


def test_dots_remat_keeps_chunked_attention_linear_and_exact():
  """remat "dots" saves the chunked kernel's output and log-sum-exp (named), not its
  per-block scores: the decoder's update memory grows x1.40 per doubling of T (x3.25, above
  "none", when the policy kept the scores), and the gradients are remat "none"'s."""
  config = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=192, num_layers=4,
                       num_heads=4, num_kv_heads=2, head_dim=16)
  graphdef, state = nnx.split(Decoder(config, rngs=nnx.Rngs(0), attention_impl="chunked"))

  def loss(state, tokens, remat):
    model = nnx.merge(graphdef, state)
    model.remat = remat
    lp, _ = model_token_logprobs_and_entropy(model, tokens, jnp.ones(tokens.shape, bool))
    return jnp.mean(lp)

  grad = jax.jit(jax.grad(loss), static_argnums=2)
  temp = lambda t, remat: grad.lower(state, jax.ShapeDtypeStruct((2, t), jnp.int32),
                                     remat).compile().memory_analysis().temp_size_in_bytes
  small, large = temp(1024, "dots"), temp(2048, "dots")
  assert large < 1.6 * small and large < temp(2048, "none"), (small, large)
  tokens = jax.random.randint(jax.random.key(0), (2, 640), 0, 64)  # two query blocks
  for a, b in zip(jax.tree.leaves(grad(state, tokens, "dots")),
                  jax.tree.leaves(grad(state, tokens, "none"))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_decoder_update_memory_at_8192_is_at_most_2_3x_that_at_4096():
  """Issue 12's bound on the real 2-layer decoder's forward + backward (compiled, not run);
  the figures are benchmarks/attention_memory.py's (RESULTS.md: x1.79 chunked, x3.95 dense)."""
  small, large = (attention_memory.train_step_temp_bytes(attention_memory.TOY, "chunked", 1, t)
                  for t in (4096, 8192))
  assert large <= 2.3 * small, (small, large)
