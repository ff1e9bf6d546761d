"""The sampler with images (Qwen2.5-VL): prompts prefilled with their vision embeddings,
decoding unchanged; greedy output equals a teacher-forced reference from the model's own
forward pass (images included), and the slot pool (continuous batching) gives the same rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax.models import ModelConfig, VisionConfig, VisionInputs, schema
from hicra_jax.models.weights import build_model
from hicra_jax.sampling import SamplingParams, generate, generate_arrays, run_pool
from hicra_jax.train import rollout as rollout_lib

IMAGE = 290
CONFIG = ModelConfig(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, qkv_bias=True, architecture="Qwen2_5_VLForConditionalGeneration",
    mrope_section=(4, 2, 2), image_token_id=IMAGE, eos_token_id=2,
    vision=VisionConfig(depth=2, hidden_size=32, intermediate_size=48, num_heads=2,
                        out_hidden_size=64, window_size=56, fullatt_block_indexes=(1,)))


@pytest.fixture(scope="module")
def model():
  """Random weights (drawn in numpy: nothing to compile) large enough for clear greedy picks."""
  rng = np.random.default_rng(0)
  params = {name: (0.3 * rng.normal(size=shape) + (1.0 if name.endswith("norm") or "norm1" in name
                                                   or "norm2" in name else 0.0)).astype(np.float32)
            for name, shape in schema.param_shapes(CONFIG).items()}
  return build_model(CONFIG, params)


def _prompts():
  """Three prompts: two with images of different sizes (one of them two images), one text only."""
  rng = np.random.default_rng(1)
  grids = [[[1, 8, 12]], None, [[1, 4, 6], [1, 4, 4]]]
  rows, prompts = [], []
  for grid in grids:
    text = rng.integers(3, 280, 4).tolist()
    if grid is None:
      rows.append(None)
      prompts.append(text)
      continue
    grid = np.array(grid)
    pv = rng.normal(size=(int(np.prod(grid, axis=1).sum()), CONFIG.vision.patch_dim))
    rows.append((pv.astype(np.float32), grid))
    ids = text[:2]
    for _, h, w in grid:
      ids += [292] + [IMAGE] * int(h * w // 4) + [293]
    prompts.append(ids + text[2:])
  return prompts, VisionInputs.from_rows(CONFIG, rows)


def test_greedy_generation_with_images_equals_teacher_forced_forward(model):
  prompts, vision = _prompts()
  params = SamplingParams(n=2, max_new_tokens=6, greedy=True, stop_ids=())
  out = generate(model, prompts, params, jax.random.key(0), vision=vision)
  assert out.completion_mask.all()
  np.testing.assert_array_equal(out.tokens[0::2], out.tokens[1::2])  # greedy: G rows agree
  # Teacher forcing: prompt + completion through the plain forward pass, all rows at once
  # (left padded), each with its images.
  seqs = [prompt + out.tokens[2 * p].tolist() for p, prompt in enumerate(prompts)]
  t = max(map(len, seqs))
  tokens = np.zeros((3, t), np.int32)
  mask = np.zeros((3, t), bool)
  for i, seq in enumerate(seqs):
    tokens[i, t - len(seq):], mask[i, t - len(seq):] = seq, True
  forward = nnx.jit(lambda m, t, a, v: m(t, a, vision=v))
  logits = np.asarray(forward(model, tokens, mask, vision))[:, t - 7:t - 1]  # predict the 6
  np.testing.assert_array_equal(logits.argmax(-1), out.tokens[0::2])
  logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), out.tokens[0::2, :, None],
                            axis=-1)[..., 0]
  np.testing.assert_allclose(out.logprobs[0::2], logp, atol=2e-4)
  # The images change the first token's distribution (rows 0 and 2): the test sees them.
  blind = np.asarray(forward(model, tokens, mask, None))[:, t - 7:t - 1]
  blind_logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(blind)),
                                  out.tokens[0::2, :, None], axis=-1)[..., 0]
  assert (np.abs(blind_logp - logp)[[0, 2]].max(axis=1) > 1e-2).all()
  np.testing.assert_allclose(blind_logp[1], logp[1], atol=1e-5)  # the text-only prompt


def test_image_token_mismatch_names_the_prompt(model):
  prompts, vision = _prompts()
  prompts[2] = prompts[2][:-6] + prompts[2][-5:]  # one image token short
  with pytest.raises(ValueError, match="prompt 2: 9 image tokens .* need 10"):
    generate(model, prompts, SamplingParams(n=1, max_new_tokens=2, greedy=True),
             jax.random.key(0), vision=vision)


def test_slot_pool_with_images_gives_the_samplers_rows(model):
  """Two slots for six ragged rows: refilled slots take their prompt's KV and RoPE shift."""
  prompts, vision = _prompts()
  params = SamplingParams(n=2, max_new_tokens=8, temperature=1.0, stop_ids=(125, 143, 196, 271))
  key = jax.random.key(3)
  reference = generate_arrays(model, prompts, params, key, vision=vision)
  pooled, stats = run_pool(model, prompts, params, key, slots=2, vision=vision)
  lengths = np.asarray(reference.completion_mask).sum(axis=1)
  ended_at_once = np.asarray(reference.stopped) & (lengths == 1)  # such rows need no slot
  assert len(set(lengths.tolist())) > 1  # ragged
  assert stats.refills == int((~ended_at_once).sum()) > 2  # slots were refilled
  for field in ("tokens", "completion_mask", "stopped"):
    np.testing.assert_array_equal(getattr(pooled, field), getattr(reference, field), err_msg=field)
  mask = np.asarray(reference.completion_mask)
  np.testing.assert_allclose(np.asarray(pooled.logprobs)[mask],
                             np.asarray(reference.logprobs)[mask], atol=1e-5)
  # The trainer's path (rollout.refill_slots) with images: the same rows.
  examples = [{"prompt_ids": p} for p in prompts]
  sample = lambda slots: rollout_lib.sample(model, examples, params, key, prompt_buckets=(64,),
                                            segment_tokens=256, refill_slots=slots, vision=vision)
  np.testing.assert_array_equal(sample(2).rollout.tokens, sample(0).rollout.tokens)
