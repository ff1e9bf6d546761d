"""Qwen2.5-VL vision tower: forward time per image at given image sizes.

Random weights of the given vision config (default: Qwen2.5-VL-7B's: depth 32,
width 1280, 16 heads, MLP 3420, 112 px windows, full attention at blocks 7, 15,
23, 31). Each image is a random RGB picture preprocessed by transformers' own
image processor (with Qwen2.5-VL-7B's preprocessor_config.json pixel limits, min
3136, max 12845056: 1024 x 1024 becomes 1036 x 1036, 74 x 74 patches), laid out
by VisionInputs.from_rows (window blocks padded, as in training); the jitted
tower runs `--repeats` times after a first (compiling) call. Prints, per size:
patches, image tokens, first-call time (compile + one run), ms per image and
achieved GFLOP/s (matmul FLOPs of the padded layout).

  python benchmarks/vision_tower.py --small                    # CPU smoke run (tiny tower)
  python benchmarks/vision_tower.py --sizes 448 --repeats 1    # the 7B tower on CPU
  python benchmarks/vision_tower.py --dtype bfloat16           # GPU / TPU
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from PIL import Image

from hicra_jax.models import ModelConfig, VisionConfig, VisionInputs, schema
from hicra_jax.models.vision import vision_tower

QWEN25_VL_7B = VisionConfig(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                            out_hidden_size=3584, window_size=112,
                            fullatt_block_indexes=(7, 15, 23, 31))
SMALL = VisionConfig(depth=4, hidden_size=64, intermediate_size=128, num_heads=4,
                     out_hidden_size=128, window_size=112, fullatt_block_indexes=(3,))


def model_config(vision: VisionConfig) -> ModelConfig:
  """A ModelConfig around the tower (only the vision rows are ever allocated)."""
  return ModelConfig(vocab_size=8, hidden_size=vision.out_hidden_size, intermediate_size=8,
                     num_layers=1, num_heads=1, num_kv_heads=1, head_dim=vision.out_hidden_size,
                     qkv_bias=True, architecture="Qwen2_5_VLForConditionalGeneration",
                     mrope_section=(vision.out_hidden_size // 2, 0, 0), image_token_id=0,
                     vision=vision)


def random_params(config: ModelConfig, dtype) -> dict:
  """The vision rows of the schema, random normal(0.02) (ones for norms), nested by owner."""
  params: dict = {}
  key = jax.random.key(0)
  for tensor in schema.VISION_TENSORS:
    key, sub = jax.random.split(key)
    shape = schema.shape(tensor, config)
    value = (jnp.ones(shape, dtype) if tensor.init == "ones"
             else schema.INIT_STD * jax.random.normal(sub, shape, dtype))
    node = params
    for part in tensor.owner.split(".")[1:]:  # below "visual"
      node = node.setdefault(part, {})
    node[tensor.attr] = value
  return params


def flops_per_row(vision: VisionConfig, patches: int) -> float:
  """Matmul FLOPs of one padded row: projections and MLPs per patch, attention per pair."""
  d, f, wp = vision.hidden_size, vision.intermediate_size, vision.window_patches
  dense = 2 * patches * (vision.patch_dim * d + vision.depth * (4 * d * d + 3 * d * f))
  full = len(vision.fullatt_block_indexes)
  attention = 4 * d * patches * (full * patches + (vision.depth - full) * wp)
  merger = 2 * (patches // vision.merge_unit) * vision.merged_hidden_size * (
      vision.merged_hidden_size + vision.out_hidden_size)
  return float(dense + attention + merger)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--small", action="store_true", help="a 4-block, 64-wide tower (CPU)")
  parser.add_argument("--sizes", nargs="+", type=int, default=[448, 1024],
                      help="square image sides in pixels")
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  parser.add_argument("--attention", choices=["xla", "chunked"], default="chunked",
                      help="full-attention blocks: dense scores or memory-linear chunks")
  parser.add_argument("--images", type=int, default=1, help="images per call (rows)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  vision = SMALL if args.small else QWEN25_VL_7B
  config = model_config(vision)
  dtype = jnp.dtype(args.dtype)
  params = random_params(config, dtype)
  processor = transformers.Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  print(f"tower: {'small' if args.small else 'Qwen2.5-VL-7B'} depth {vision.depth}, width "
        f"{vision.hidden_size}, {vision.num_heads} heads, MLP {vision.intermediate_size}; "
        f"{args.dtype}; full attention {args.attention}; {args.images} image(s) per call")
  run = jax.jit(lambda p, v: vision_tower(p, vision, v, dtype=dtype,
                                          full_attention=args.attention))
  rng = np.random.default_rng(0)
  print("| image | patches (padded) | tokens | first call s | ms / image | GFLOP/s |")
  print("|---|---|---|---|---|---|")
  for side in args.sizes:
    picture = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    out = processor(images=[picture], return_tensors="np")
    row = (out["pixel_values"], out["image_grid_thw"])
    inputs = VisionInputs.from_rows(config, [row] * args.images)
    inputs = jax.tree.map(jnp.asarray, inputs)
    grid = out["image_grid_thw"][0]
    slots = inputs.patches_NxXxC.shape[1]
    start = time.perf_counter()
    run(params, inputs).block_until_ready()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.repeats):
      run(params, inputs).block_until_ready()
    per_image = (time.perf_counter() - start) / args.repeats / args.images
    gflops = flops_per_row(vision, slots) / per_image / 1e9
    print(f"| {side}x{side} ({grid[1] * 14}x{grid[2] * 14}) | {int(np.prod(grid))} ({slots}) | "
          f"{int(np.prod(grid)) // vision.merge_unit} | {compile_s:.1f} | "
          f"{per_image * 1e3:.1f} | {gflops:.1f} |")


if __name__ == "__main__":
  main()
