"""Qwen2.5-VL parity with transformers' PyTorch model (tiny random configs, float32).

The reference is built and saved by transformers (tests/vl_reference.py); ours is
loaded from that directory. Images are generated here and preprocessed by
transformers' own image processor.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from hicra_jax.models import (Decoder, KVCache, ModelConfig, VisionConfig, VisionInputs,
                              check_image_tokens, load_pretrained, num_image_tokens,
                              save_pretrained)
from hicra_jax.models import vision as VT
from vl_reference import (IMAGE, VISION_END, VISION_START, hf_forward, image, make_hf_vl, pad,
                          pixels, prompt)


# Jitted entry points: one compile per shape, instead of op-by-op dispatch.
forward = nnx.jit(lambda model, tokens, mask, vision: model(tokens, mask, vision=vision))
decode = nnx.jit(lambda model, tokens, cache, mask, vision: model.decode(tokens, cache, mask,
                                                                        vision=vision))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  """(transformers model, our model, our config) from the same saved directory."""
  hf = make_hf_vl()
  path = tmp_path_factory.mktemp("qwen25vl")
  hf.save_pretrained(path)
  model, config = load_pretrained(path)
  return hf, model, config


@pytest.fixture(scope="module")
def batch():
  """Three rows, left and right padded: one image, another size with more text, two images."""
  pv_a, grid_a = pixels([image("wide", 1)])
  pv_b, grid_b = pixels([image("small", 2)])
  pv_c, grid_c = pixels([image("square", 3), image("small", 4)])
  rows = [prompt(grid_a, [5, 6, 7], [8, 9]),
          prompt(grid_b, [10], [11, 12, 13, 14, 15, 16]),
          prompt(grid_c, [17, 18], [19])]
  tokens, mask = pad(rows, ["left", "right", "left"])
  return (tokens, mask, np.concatenate([pv_a, pv_b, pv_c]),
          np.concatenate([grid_a, grid_b, grid_c]))


@pytest.fixture(scope="module")
def batch_logits(pair, batch):
  """Our logits f32[N, T, V] of `batch` (images laid out from transformers' packed format)."""
  _, model, config = pair
  tokens, mask, pv, grid = batch
  return np.asarray(forward(model, tokens, mask,
                            VisionInputs.from_packed(config, pv, grid, tokens, mask)))


def _assert_close(ours, ref, mask):
  for i in range(len(ref)):
    got, want = ours[i][mask[i]], ref[i][mask[i]]
    assert np.abs(want).max() > 1.0, "reference logits too flat to make the test meaningful"
    np.testing.assert_array_less(np.abs(got - want).max(), 1e-4 * np.abs(want).max())


def test_text_only_logits_match_transformers(pair):
  hf, model, _ = pair
  rng = np.random.default_rng(0)
  tokens, mask = pad([rng.integers(3, 280, n).tolist() for n in (9, 4, 13)],
                     ["left", "right", "left"])
  ref, _, _ = hf_forward(hf, tokens, mask)
  _assert_close(np.asarray(forward(model, tokens, mask, None)), ref, mask)


def test_one_image_logits_match_transformers(pair):
  hf, model, config = pair
  pv, grid = pixels([image("wide", 1)])
  assert grid.tolist() == [[1, 8, 12]]  # 4 x 6 image tokens: 2 x 3 windows of 2 x 2
  tokens, mask = pad([prompt(grid, [5, 6], [7, 8, 9])], ["left"])
  ref, _, _ = hf_forward(hf, tokens, mask, pv, grid)
  ours = forward(model, tokens, mask, VisionInputs.from_packed(config, pv, grid, tokens, mask))
  _assert_close(np.asarray(ours), ref, mask)


def test_images_of_different_sizes_with_padding_match_transformers(pair, batch, batch_logits):
  hf, _, config = pair
  tokens, mask, pv, grid = batch
  ref, ref_positions, ref_deltas = hf_forward(hf, tokens, mask, pv, grid)
  _assert_close(batch_logits, ref, mask)
  # The multimodal RoPE positions and rope_deltas themselves.
  vision = VisionInputs.from_packed(config, pv, grid, tokens, mask)
  positions, shift = VT.mrope_positions(jnp.asarray(tokens), jnp.asarray(mask), vision,
                                        config.image_token_id)
  np.testing.assert_array_equal(np.asarray(positions)[:, mask], ref_positions[:, mask])
  np.testing.assert_array_equal(np.asarray(shift), ref_deltas)


def test_per_row_layout_equals_packed_and_survives_repeat(pair, batch, batch_logits):
  _, model, config = pair
  tokens, mask, pv, grid = batch
  packed = VisionInputs.from_packed(config, pv, grid, tokens, mask)
  counts = np.prod(grid, axis=1)
  cut = np.cumsum(counts)
  rows = [(pv[:cut[0]], grid[:1]), (pv[cut[0]:cut[1]], grid[1:2]), (pv[cut[1]:], grid[2:])]
  joined = VisionInputs.concatenate([VisionInputs.from_rows(config, rows[:2]),
                                     VisionInputs.from_rows(config, rows[2:], windows=16)])
  for a, b in zip(np.asarray(packed.token_unit_NxU), np.asarray(joined.token_unit_NxU)):
    np.testing.assert_array_equal(a[a >= 0], b[b >= 0])
  assert joined.num_units == 16 * 4 > packed.num_units  # more padding windows: same logits
  got = np.asarray(forward(model, tokens, mask, joined))
  np.testing.assert_allclose(got[mask], batch_logits[mask], rtol=1e-5, atol=1e-5)
  # G = 2 samples per prompt: each row twice in a row; take() selects rows back.
  twice = packed.take(np.repeat(np.arange(3), 2))
  assert twice.num_rows == 6
  for a, b in zip(jax.tree.leaves(twice.take(np.arange(1, 6, 2))), jax.tree.leaves(packed)):
    np.testing.assert_array_equal(a, b)


def test_prefill_with_images_then_decode_matches_full_forward(pair, batch):
  """The cache path: a prefill with images, then text decode at next_position (rope shift)."""
  _, model, config = pair
  tokens, mask, pv, grid = batch
  vision = VisionInputs.from_packed(config, pv, grid, tokens, mask)
  extra = np.array([[20, 21], [22, 23], [24, 25]])
  full_tokens = np.concatenate([tokens, extra], axis=1)
  full_mask = np.concatenate([mask, np.ones_like(extra, bool)], axis=1)
  full = np.asarray(forward(model, full_tokens, full_mask, vision))
  cache = KVCache.init(config, 3, full_tokens.shape[1])
  logits, cache = decode(model, tokens, cache, mask, vision)
  np.testing.assert_allclose(np.asarray(logits)[mask], full[:, :tokens.shape[1]][mask],
                             rtol=1e-4, atol=1e-4)
  for j in range(2):
    step, cache = decode(model, extra[:, j:j + 1], cache, None, None)
    np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, tokens.shape[1] + j],
                               rtol=1e-4, atol=1e-4)


def test_save_then_transformers_load_gives_identical_logits(pair, batch, tmp_path):
  hf, model, config = pair
  tokens, mask, pv, grid = batch
  save_pretrained(model, config, tmp_path)
  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
      tmp_path, dtype=torch.float32).eval()
  want, _, _ = hf_forward(hf, tokens, mask, pv, grid)
  got, _, _ = hf_forward(reloaded, tokens, mask, pv, grid)
  np.testing.assert_array_equal(got, want)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
  assert ModelConfig.from_hf(tmp_path) == config


def test_transformers5_tensor_names_load_too(pair, tmp_path):
  """A checkpoint spelled as transformers 5's modules (model.visual.*, model.language_model.*)."""
  from safetensors.numpy import save_file
  from hicra_jax.models.weights import flat_params, to_hf_state_dict
  _, model, config = pair
  renamed = {}
  for name, value in to_hf_state_dict(model).items():
    if name.startswith("visual."):
      name = "model." + name
    elif name.startswith("model."):
      name = "model.language_model." + name[len("model."):]
    renamed[name] = value
  save_file(renamed, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps(config.to_hf()))
  loaded, _ = load_pretrained(tmp_path)
  for name, value in flat_params(model).items():
    np.testing.assert_array_equal(np.asarray(flat_params(loaded)[name]), np.asarray(value))


# MiMO-VL-7B-RL-2508's config.json, its published fields (written from memory of the
# model card's file: Qwen2_5_VLForConditionalGeneration with MiMo-7B's language model).
MIMO_VL = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
    "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 32768, "max_window_layers": 36,
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 640000, "sliding_window": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151680,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {
        "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 4096,
        "num_heads": 16, "in_chans": 3, "out_hidden_size": 4096, "patch_size": 14,
        "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
        "temporal_patch_size": 2},
}


def test_mimo_vl_config_maps_onto_the_same_model(tmp_path):
  config = ModelConfig.from_hf(MIMO_VL)
  assert config.family == "qwen2_5_vl" and config.is_multimodal
  assert (config.hidden_size, config.num_layers, config.num_heads, config.num_kv_heads,
          config.head_dim) == (4096, 36, 32, 8, 128)
  assert config.mrope_section == (16, 24, 24) and config.rope_theta == 640000.0
  assert config.rope_scaling is None and config.qkv_bias and not config.tie_embeddings
  assert config.image_token_id == 151655
  assert config.vision == VisionConfig(
      depth=32, hidden_size=1280, intermediate_size=4096, num_heads=16, out_hidden_size=4096,
      window_size=112, fullatt_block_indexes=(7, 15, 23, 31), tokens_per_second=2)
  # A small-shaped copy of the same fields: transformers reads the flat published layout,
  # and ours matches it on an image prompt.
  small = json.loads(json.dumps(MIMO_VL))
  small.update(hidden_size=64, intermediate_size=96, num_attention_heads=4,
               num_key_value_heads=2, num_hidden_layers=2, vocab_size=300,
               bos_token_id=1, eos_token_id=2, vision_start_token_id=VISION_START,
               vision_end_token_id=VISION_END, image_token_id=IMAGE, video_token_id=291,
               vision_token_id=294, rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]},
               torch_dtype="float32")
  small["vision_config"].update(depth=3, hidden_size=32, intermediate_size=48, num_heads=2,
                                out_hidden_size=64, fullatt_block_indexes=[2], window_size=56)
  (tmp_path / "config.json").write_text(json.dumps(small))
  hf_config = transformers.AutoConfig.from_pretrained(tmp_path)
  torch.manual_seed(1)
  hf = transformers.Qwen2_5_VLForConditionalGeneration(hf_config).to(torch.float32).eval()
  hf.save_pretrained(tmp_path)
  model, ours = load_pretrained(tmp_path)
  assert ours.vision.fullatt_block_indexes == (2,) and ours.rope_theta == 640000.0
  pv, grid = pixels([image("small", 5)])
  tokens, mask = pad([prompt(grid, [5], [6, 7])], ["left"])
  ref, _, _ = hf_forward(hf, tokens, mask, pv, grid)
  # transformers' argument names, eagerly (the packed images are laid out on the host).
  got = np.asarray(model(tokens, mask, pixel_values=pv, image_grid_thw=grid))
  np.testing.assert_array_less(np.abs(got - ref).max(), 1e-4 * np.abs(ref).max())


# ---- bad input -----------------------------------------------------------------------------


def test_image_token_count_mismatch_names_the_row(pair):
  _, model, config = pair
  pv, grid = pixels([image("small", 2)])
  tokens, mask = pad([[5, 6], prompt(grid, [5], [6])[:-3] + [6]], ["left", "left"])
  with pytest.raises(ValueError, match=r"row 1: 5 image tokens .* do not match image_grid_thw"):
    model(tokens, mask, pixel_values=pv, image_grid_thw=grid)
  vision = VisionInputs.from_rows(config, [None, (pv, grid)])
  with pytest.raises(ValueError, match=r"example-7: 5 image tokens \(id 290\) but its 1 "
                                       r"image\(s\) need 6"):
    check_image_tokens(config, tokens, mask, vision, names=["example-3", "example-7"])
  split = np.array([[5, IMAGE, IMAGE, IMAGE, 6, IMAGE, IMAGE, IMAGE]])
  with pytest.raises(ValueError, match="row 0: the 6 image tokens of image 0 are not contiguous"):
    check_image_tokens(config, split, None, VisionInputs.from_rows(config, [(pv, grid)]))
  assert num_image_tokens(config, grid).tolist() == [6]


def test_bad_pixels_and_grids_are_named(pair):
  _, model, config = pair
  pv, grid = pixels([image("small", 2)])
  with pytest.raises(ValueError, match=r"ex-1: pixel_values has shape \(24, 100\); expected "
                                       r"\[patches, 1176\]"):
    VisionInputs.from_rows(config, [(pv[:, :100], grid)], names=["ex-1"])
  with pytest.raises(ValueError, match="row 0: pixel_values has 23 patches but image_grid_thw"):
    VisionInputs.from_rows(config, [(pv[:23], grid)])
  with pytest.raises(ValueError, match="t != 1: only still images"):
    VisionInputs.from_rows(config, [(np.concatenate([pv, pv]), grid * [2, 1, 1])])
  with pytest.raises(ValueError, match="a row needs 2 window blocks"):
    VisionInputs.from_rows(config, [(pv, grid)], windows=1)
  text_only = ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=1,
                          num_heads=4, num_kv_heads=2, head_dim=16)
  with pytest.raises(ValueError, match="has no vision tower"):
    VisionInputs.from_rows(text_only, [(pv, grid)])


# ---- the vision tower's attention: bidirectional, segments (images), padding ---------------


def test_bidirectional_segment_attention_xla_and_chunked_match_naive():
  from hicra_jax.models import attention as A
  rng = np.random.default_rng(0)
  n, t, h = 2, 21, 8
  q = jnp.asarray(rng.standard_normal((n, t, 2, 1, h)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((n, t, 2, h)), jnp.float32) for _ in range(2))
  segments = np.array([[0] * 9 + [1] * 8 + [-1] * 4, [0] * 5 + [-1] * 3 + [1] * 13])
  valid = segments >= 0
  mask = A.AttentionMask.bidirectional(jnp.asarray(valid), jnp.asarray(segments))
  want = np.zeros(q.shape)
  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  for b in range(n):
    for i in range(t):
      seen = (valid[b] & (segments[b] == segments[b, i])) | (np.arange(t) == i)
      for g in range(2):
        logits = np.where(seen, kn[b, :, g] @ qn[b, i, g, 0] / np.sqrt(h), -np.inf)
        p = np.exp(logits - logits.max())
        want[b, i, g, 0] = p / p.sum() @ vn[b, :, g]
  chunked = lambda *a: A.chunked_attention(*a, block_q=8, block_kv=8)
  with jax.default_matmul_precision("highest"):
    for fn in (A.xla_attention, chunked):
      got = np.asarray(jax.jit(fn, static_argnums=4)(q, k, v, mask, h ** -0.5))
      np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, err_msg=str(fn))
    # The chunked backward (custom VJP) agrees with differentiating the dense path.
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask, h ** -0.5))
                                               * valid[:, :, None, None, None])
    grads = [jax.grad(loss(fn), argnums=(0, 1, 2))(q, k, v) for fn in (A.xla_attention, chunked)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, atol=1e-5)
