"""Tiny random Qwen2.5-VL models in transformers (PyTorch) and test images: the reference
for the vision-language parity, sharding and sampler tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers
from PIL import Image

IMAGE, VIDEO, VISION_START, VISION_END = 290, 291, 292, 293
VOCAB = 300
# A small copy of Qwen2.5-VL-7B's fields: GQA, mrope sections summing to head_dim / 2,
# a vision tower whose windows (56 px = 2 x 2 image tokens) split the test images,
# window blocks 0 and 2 and a full-attention block 1.
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                 mrope_section=[4, 2, 2]))
VISION = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
              patch_size=14, temporal_patch_size=2, spatial_merge_size=2, window_size=56,
              fullatt_block_indexes=[1], hidden_act="silu", tokens_per_second=2)
TOKENS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START,
              vision_end_token_id=VISION_END)
# Image sizes (height, width) in pixels: multiples of 28, so the processor keeps them.
SIZES = {"wide": (112, 168), "small": (56, 84), "square": (84, 84)}


def make_hf_vl(seed: int = 0, text=None, vision=None, init_scale: float = 0.1):
  """A tiny float32 Qwen2_5_VLForConditionalGeneration with random weights (norms and
  biases too, so a transposed or missing one is caught)."""
  config = transformers.Qwen2_5_VLConfig(
      text_config={**TEXT, **(text or {}), "initializer_range": init_scale},
      vision_config={**VISION, **(vision or {}), "initializer_range": init_scale},
      **TOKENS)
  torch.manual_seed(seed)
  model = transformers.Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "ln_q" in name or name.endswith("norm1.weight") or (
          name.endswith("norm2.weight")):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
  return model


def processor():
  """transformers' own (numpy) Qwen2.5-VL image processor, sized for small test images."""
  return transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=28 * 28 * 64)


def image(size: str, seed: int = 0) -> Image.Image:
  """A random RGB image of SIZES[size] (smooth enough to survive resizing unchanged)."""
  h, w = SIZES[size]
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, size=(h // 14, w // 14, 3), dtype=np.uint8)
  return Image.fromarray(np.kron(coarse, np.ones((14, 14, 1), np.uint8)))


def pixels(images: list[Image.Image]):
  """(pixel_values f32[patches, C], image_grid_thw i64[I, 3]) from the processor."""
  out = processor()(images=images, return_tensors="np")
  return np.asarray(out["pixel_values"]), np.asarray(out["image_grid_thw"])


def prompt(grid, before: list[int], after: list[int], merge: int = 2) -> list[int]:
  """before + each image's <vision_start> <image_pad> * n <vision_end> + after."""
  out = list(before)
  for t, h, w in np.asarray(grid):
    out += [VISION_START] + [IMAGE] * int(t * h * w // merge ** 2) + [VISION_END]
  return out + list(after)


def pad(rows: list[list[int]], sides: list[str], pad_id: int = 0):
  """(tokens i64[N, T], mask bool[N, T]): row i padded on sides[i] ("left" or "right")."""
  t = max(len(r) for r in rows)
  tokens = np.full((len(rows), t), pad_id, np.int64)
  mask = np.zeros((len(rows), t), bool)
  for i, (r, side) in enumerate(zip(rows, sides)):
    sl = slice(t - len(r), t) if side == "left" else slice(0, len(r))
    tokens[i, sl], mask[i, sl] = r, True
  return tokens, mask


def hf_forward(model, tokens, mask, pixel_values=None, image_grid_thw=None):
  """transformers' logits f32[N, T, V] and its 3D positions i64[3, N, T] and rope_deltas [N]."""
  ids = torch.as_tensor(tokens)
  am = torch.as_tensor(mask.astype(np.int64))
  types = (ids == IMAGE).int()
  grid = None if image_grid_thw is None else torch.as_tensor(image_grid_thw)
  with torch.no_grad():
    positions, deltas = model.model.get_rope_index(ids, types, image_grid_thw=grid,
                                                   attention_mask=am)
    kwargs = {} if pixel_values is None else dict(
        pixel_values=torch.as_tensor(pixel_values), image_grid_thw=grid)
    out = model(input_ids=ids, attention_mask=am, position_ids=positions,
                mm_token_type_ids=types, use_cache=False, **kwargs)
  return out.logits.float().numpy(), positions.numpy(), deltas[:, 0].numpy()
