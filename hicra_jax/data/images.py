"""Images of vision-language examples (the Qwen2.5-VL family): paths, checks, prompt tokens, pixels.

An example may carry `image` (one path) or `images` (a list of paths) beside
its question and answer; relative paths resolve against the folder of the
file that lists them. Each image becomes one placeholder
`<|vision_start|><|image_pad|><|vision_end|>` in front of the question (where
Qwen2.5-VL's chat template puts an image item), and each `<|image_pad|>` token
is then repeated t*h*w / merge_size**2 times, the image's token count, as
transformers' Qwen2.5-VL processor does.

Pixels go through transformers' own Qwen2-VL image processor, PIL backend
(numpy, no torch). Its resize depends on the image's size only, so the grid
and the prompt's tokens come from the image header when the examples load
(`image_grid`); the pixels are read and processed per step (`pixel_inputs`),
which checks that the processor's grid is the one the prompt was built for.

  processor = image_processor("/models/Qwen2.5-VL-7B-Instruct")
  paths = image_paths(row, base_dir="data/", where="train.jsonl:3")  # data/image_paths.py
  grid_Ix3 = [image_grid(processor, p, where) for p in paths]
  prompt = expand_image_tokens(ids, grid_Ix3, image_token_id(tokenizer), processor.merge_size,
                               where)
  inputs = pixel_inputs(paths, processor, where, expected_grid=grid_Ix3)
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Mapping, Sequence

import numpy as np

from hicra_jax.data.prompts import encode_prompts

IMAGE_PAD = "<|image_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END
PROCESSOR_FILE = "preprocessor_config.json"
# PIL modes that convert to 8-bit RGB without loss of meaning (alpha is composited onto
# white by the processor). 16-bit and float modes ("I;16", "I", "F") would be clipped.
SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")


@dataclasses.dataclass(frozen=True)
class PixelInputs:
  """One example's images, preprocessed.

  pixel_values: f32[P, D], the patches of all its images in order (D = channels
  x temporal_patch_size x patch_size**2); image_grid_thw: i32[I, 3], (t, h, w)
  patches of each image (P = sum of t*h*w).
  """

  pixel_values: np.ndarray
  image_grid_thw: np.ndarray


def image_processor(model_dir: str | None = None, **kwargs):
  """transformers' Qwen2-VL image processor (PIL backend, numpy: no torch).

  model_dir: a Qwen2.5-VL model folder, whose preprocessor_config.json sets
  min/max pixels, patch and merge sizes; None: the processor's defaults.
  kwargs: overrides (e.g. min_pixels, max_pixels).

  Raises:
    FileNotFoundError: model_dir has no preprocessor_config.json.
  """
  cls = _processor_class()
  if model_dir is None:
    return cls(**kwargs)
  if not os.path.isfile(os.path.join(model_dir, PROCESSOR_FILE)):
    raise FileNotFoundError(f"{model_dir!r} has no {PROCESSOR_FILE}: a vision-language model "
                            "folder holds its image processor's settings there")
  return cls.from_pretrained(model_dir, **kwargs)


def _processor_class():
  # Imported here: transformers takes seconds to import and only images need it.
  try:  # transformers 5: the PIL backend has its own class (the default one needs torchvision)
    from transformers import Qwen2VLImageProcessorPil  # pylint: disable=import-outside-toplevel
    return Qwen2VLImageProcessorPil
  except ImportError:  # transformers 4: the default class is the numpy/PIL one
    from transformers import Qwen2VLImageProcessor  # pylint: disable=import-outside-toplevel
    return Qwen2VLImageProcessor


def _pixel_bounds(processor) -> tuple[int, int]:
  """(min_pixels, max_pixels) of a processor (transformers 4 and 5 spell them differently)."""
  size = processor.size
  get = lambda key: getattr(size, key, None) if not isinstance(size, Mapping) else size.get(key)
  low = get("shortest_edge") or getattr(processor, "min_pixels", None)
  high = get("longest_edge") or getattr(processor, "max_pixels", None)
  if not low or not high:
    raise ValueError(f"image processor size {size!r}: expected shortest_edge (min pixels) and "
                     "longest_edge (max pixels)")
  return int(low), int(high)


def open_image(path: str, where: str, *, load: bool = True):
  """The PIL image at `path`, its mode checked; load=False reads the header only.

  Raises:
    ValueError: not a readable image, or a mode outside SUPPORTED_MODES (names `where`).
  """
  # Imported here: only image examples need PIL.
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  try:
    image = Image.open(path)
    if load:
      image.load()
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f"{where}: cannot read image {path!r}: {e}") from e
  if image.mode not in SUPPORTED_MODES:
    raise ValueError(f"{where}: image {path!r} has mode {image.mode!r}; expected one of "
                     f"{list(SUPPORTED_MODES)} (convert 16-bit or float images to 8-bit RGB)")
  return image


def image_grid(processor, path: str, where: str) -> tuple[int, int, int]:
  """(t, h, w) patches the processor will make of the image at `path` (header only)."""
  with open_image(path, where, load=False) as image:
    width, height = image.size
  return grid_of_size(processor, height, width, where=f"{where}: image {path!r}")


def grid_of_size(processor, height: int, width: int, *, where: str = "") -> tuple[int, int, int]:
  """(1, h, w) patches of a height x width image: the processor's own smart resize."""
  # The resize rule of the processor itself, from its own module (transformers 4 and 5).
  smart_resize = importlib.import_module(type(processor).__module__).smart_resize
  low, high = _pixel_bounds(processor)
  factor = processor.patch_size * processor.merge_size
  try:
    h, w = smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
  except ValueError as e:  # e.g. an aspect ratio above 200
    raise ValueError(f"{where}: {e}") from e
  return 1, h // processor.patch_size, w // processor.patch_size


def image_token_counts(grid_Ix3, merge_size: int) -> list[int]:
  """Tokens of each image in the language model: t*h*w / merge_size**2."""
  grid = np.asarray(grid_Ix3, np.int64).reshape(-1, 3)
  return [int(n) for n in grid.prod(axis=1) // (merge_size * merge_size)]


def image_token_id(tokenizer) -> int:
  """The id of `<|image_pad|>` in a Qwen2.5-VL-family tokenizer.

  Raises:
    ValueError: the tokenizer has no such token (not a vision-language tokenizer).
  """
  token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
  if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
    raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no {IMAGE_PAD} "
                     "token: examples with images need a Qwen2.5-VL-family tokenizer")
  return token_id


def placeholder_prompt(question: str, num_images: int) -> str:
  """The user text of a question with images: one placeholder per image, then the question."""
  return IMAGE_PLACEHOLDER * num_images + question


def expand_image_tokens(prompt_ids: Sequence[int], grid_Ix3, pad_id: int, merge_size: int,
                        where: str) -> list[int]:
  """prompt_ids with its i-th `<|image_pad|>` repeated as many times as image i has tokens.

  Raises:
    ValueError: the prompt holds a number of `<|image_pad|>` tokens other than
      the number of images (e.g. the question text spells the token itself).
  """
  counts = image_token_counts(grid_Ix3, merge_size)
  found = sum(1 for t in prompt_ids if t == pad_id)
  if found != len(counts):
    raise ValueError(f"{where}: the prompt holds {found} {IMAGE_PAD} tokens for {len(counts)} "
                     f"images; expected one per image (does the text spell {IMAGE_PAD}?)")
  out: list[int] = []
  images = iter(counts)
  for t in prompt_ids:
    out.extend([t] * next(images) if t == pad_id else [t])
  return out


def check_image_tokens(prompt_ids: Sequence[int], grid_Ix3, pad_id: int, merge_size: int,
                       where: str) -> None:
  """Raises ValueError (naming `where`) unless the prompt's `<|image_pad|>` count is the
  images' token count, sum of t*h*w / merge_size**2 over image_grid_thw."""
  counts = image_token_counts(grid_Ix3, merge_size)
  found = sum(1 for t in prompt_ids if t == pad_id)
  if found != sum(counts):
    raise ValueError(f"{where}: the prompt holds {found} {IMAGE_PAD} tokens but image_grid_thw "
                     f"{np.asarray(grid_Ix3).tolist()} makes {sum(counts)} ({counts} per image, "
                     f"t*h*w / merge_size**2 with merge_size {merge_size})")


def encode_image_prompts(tokenizer, processor, questions: Sequence[str],
                         images: Sequence[Sequence[str]], wheres: Sequence[str],
                         **encode_kwargs) -> list[tuple[list[int], list[list[int]]]]:
  """(prompt ids, image_grid_thw as [[t, h, w], ...]) of each question with its images.

  images[i]: question i's image paths (may be empty); wheres[i]: how messages
  name it. encode_kwargs: `encode_prompts`'s (system, instruction, template,
  chat_template_kwargs). Grids come from the image headers (`image_grid`).

  Raises:
    ValueError: naming wheres[i]: an unreadable image, an unsupported mode, or
      image tokens that do not match the grid (see `expand_image_tokens`).
  """
  pad_id = image_token_id(tokenizer)
  merge = processor.merge_size
  texts = [placeholder_prompt(q, len(paths)) for q, paths in zip(questions, images)]
  out = []
  for prompt, paths, where in zip(encode_prompts(tokenizer, texts, **encode_kwargs), images,
                                  wheres):
    grid = [list(image_grid(processor, p, where)) for p in paths]
    if grid:
      prompt = expand_image_tokens(prompt, grid, pad_id, merge, where)
    else:  # a prompt without images must hold no image-pad token
      check_image_tokens(prompt, grid, pad_id, merge, where)
    out.append((prompt, grid))
  return out


def pixel_inputs(paths: Sequence[str], processor, where: str,
                 expected_grid=None) -> PixelInputs:
  """The processed pixels of one example's images (in order).

  expected_grid: i32[I, 3] the example's prompt was built for; the processor's
  grid must equal it.

  Raises:
    ValueError: an unreadable image, an unsupported mode, or a grid other than
      expected_grid (the image changed since the examples were loaded).
  """
  images = [open_image(p, where) for p in paths]
  out = processor(images=images)
  grid = np.asarray(out["image_grid_thw"], np.int32).reshape(-1, 3)
  expected = None if expected_grid is None else np.asarray(expected_grid).reshape(-1, 3)
  if expected is not None and not np.array_equal(grid, expected):
    raise ValueError(f"{where}: the image processor made image_grid_thw {grid.tolist()} but the "
                     f"prompt was built for {expected.tolist()} (did an image "
                     "change after the examples were loaded?)")
  return PixelInputs(pixel_values=np.asarray(out["pixel_values"], np.float32),
                     image_grid_thw=grid)


def example_pixel_inputs(example: Mapping[str, Any], processor) -> PixelInputs | None:
  """The pixels of an example from `attach_prompt_ids(..., processor=...)` (None: no images),
  checked against the image_grid_thw its prompt was built for."""
  if not example.get("images"):
    return None
  where = f"example {example.get('id')} ({example.get('where', '')})"
  return pixel_inputs(example["images"], processor, where,
                      expected_grid=example["image_grid_thw"])
