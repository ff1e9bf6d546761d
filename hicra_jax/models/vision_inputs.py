"""Images -> the vision tower's per-row inputs, laid out on the host (numpy).

transformers' Qwen2.5-VL image processor (`Qwen2VLImageProcessorPil`, numpy)
turns images into patches, packed over a batch: pixel_values f32[sum t*h*w, C]
and image_grid_thw [I, 3] (frames t, patch rows h, patch columns w per image).
The processor orders each image's patches by merge unit (spatial_merge_size**2
neighbouring patches, one image token) row-major over the merged grid
(h' = h / merge, w' = w / merge).

`VisionInputs` keeps one row per token row instead, so rows shard, slice and
repeat like tokens. Inside a row, patches sit in window order: the image's
merged grid is cut into windows of window_units x window_units tokens, and
each window gets a block of window_patches slots (slots past the image's edge
are padding). Window attention is then attention inside consecutive blocks,
full attention is attention within an image (segment ids), and everything the
model needs (2D RoPE positions, the image each patch belongs to, the unit that
feeds each image-pad token, multimodal RoPE offsets) is precomputed here from
image_grid_thw, so the jitted model sees only arrays whose shapes depend on
the number of windows, rounded up to a bucket.

Shape letters (beyond hicra_jax's legend): X patch slots of a row, U merge-unit
slots of a row (X = U * merge_unit; also the most image tokens a row can hold),
C a flattened patch (VisionConfig.patch_dim).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from hicra_jax.models.config import ModelConfig, VisionConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class VisionInputs:
  """The images of N rows, for the vision tower and the multimodal RoPE.

  patches_NxXxC: f32 flattened pixel patches (zeros in padding slots).
  patch_hw_NxXx2: i32 (patch row, patch column) in its image: the 2D RoPE positions.
  patch_image_NxX: i32 the patch's image index within its row; -1 for padding.
  token_unit_NxU: i32 for the row's k-th image-pad token, the merge-unit slot whose
    embedding it takes; -1 past the row's image tokens.
  token_start_NxU: i32 rank of the first image token of the k-th token's image.
  token_hw_NxUx2: i32 (row, column) of the k-th image token in its image's merged grid.
  rope_shift_NxU1: i32[N, U + 1] how far the multimodal RoPE position of a token
    that follows the row's first k image tokens is shifted from its count of
    earlier tokens: the sum of max(h', w') - h' * w' over the images those k complete.
  """

  patches_NxXxC: np.ndarray | jax.Array
  patch_hw_NxXx2: np.ndarray | jax.Array
  patch_image_NxX: np.ndarray | jax.Array
  token_unit_NxU: np.ndarray | jax.Array
  token_start_NxU: np.ndarray | jax.Array
  token_hw_NxUx2: np.ndarray | jax.Array
  rope_shift_NxU1: np.ndarray | jax.Array

  @property
  def num_rows(self) -> int:
    return self.patches_NxXxC.shape[0]

  @property
  def num_units(self) -> int:
    return self.token_unit_NxU.shape[1]

  def take(self, rows) -> "VisionInputs":
    """The rows at the index array `rows` (micro-batches, shuffles, a prompt's G samples)."""
    return jax.tree.map(lambda x: x[rows], self)

  @classmethod
  def from_rows(cls, config: ModelConfig, rows: Sequence[tuple | None], *,
                windows: int | None = None, names: Sequence[str] | None = None
                ) -> "VisionInputs":
    """One entry per token row: (pixel_values, image_grid_thw) of its images, in the order
    they appear in its tokens, as the image processor returns them, or None (no image).

    windows: window blocks per row (default: `bucket_windows` of the most any row needs,
    so a few shapes compile); smaller than a row needs is an error.
    names: what error messages call the rows (default "row n").
    """
    vision = _vision(config)
    layouts = [_RowLayout(vision, row, _name(names, n)) for n, row in enumerate(rows)]
    need = max([lay.windows for lay in layouts] + [1])
    if windows is None:
      windows = bucket_windows(need)
    elif windows < need:
      raise ValueError(f"VisionInputs: windows={windows} but a row needs {need} window blocks")
    units = windows * vision.window_units ** 2
    arrays = [lay.arrays(units) for lay in layouts]
    return cls(*(np.stack(parts) for parts in zip(*arrays)))

  @classmethod
  def from_packed(cls, config: ModelConfig, pixel_values, image_grid_thw, tokens_NxT,
                  attention_mask=None, *, windows: int | None = None,
                  names: Sequence[str] | None = None) -> "VisionInputs":
    """transformers' batch format: every image of the batch packed, given to the rows in
    the order of their image-pad tokens (as Qwen2_5_VLModel's masked_scatter does)."""
    tokens, mask = _host_tokens(tokens_NxT, attention_mask)
    grid = _grid(image_grid_thw, "image_grid_thw")
    per_image = num_image_tokens(config, grid)
    patches = np.prod(grid, axis=1)
    starts = np.concatenate([[0], np.cumsum(patches)])
    counts = ((tokens == config.image_token_id) & mask).sum(axis=1)
    rows, image = [], 0
    for n, count in enumerate(counts):
      first = image
      while image < len(grid) and per_image[first:image].sum() < count:
        image += 1
      if per_image[first:image].sum() != count:
        raise ValueError(
            f"{_name(names, n)}: {count} image tokens (id {config.image_token_id}) do not "
            f"match image_grid_thw: the images from index {first} give "
            f"{per_image[first:].tolist()} tokens each")
      rows.append(None if image == first else (
          np.asarray(pixel_values)[starts[first]:starts[image]], grid[first:image]))
    if image != len(grid):
      raise ValueError(f"image_grid_thw has {len(grid)} images but the tokens hold image "
                       f"tokens for only {image}")
    vision = cls.from_rows(config, rows, windows=windows, names=names)
    check_image_tokens(config, tokens, mask, vision, names=names)
    return vision

  @classmethod
  def concatenate(cls, parts: Sequence["VisionInputs"]) -> "VisionInputs":
    """The rows of all parts, padded to the largest part's window count."""
    units = max(p.num_units for p in parts)
    def pad(p: VisionInputs) -> VisionInputs:
      extra_u = units - p.num_units
      extra_x = extra_u * (p.patches_NxXxC.shape[1] // p.num_units)
      def along(x, extra, **kw):
        return np.pad(np.asarray(x), [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2), **kw)
      return cls(along(p.patches_NxXxC, extra_x), along(p.patch_hw_NxXx2, extra_x),
                 along(p.patch_image_NxX, extra_x, constant_values=-1),
                 along(p.token_unit_NxU, extra_u, constant_values=-1),
                 along(p.token_start_NxU, extra_u), along(p.token_hw_NxUx2, extra_u),
                 along(p.rope_shift_NxU1, extra_u, mode="edge"))
    padded = [pad(p) for p in parts]
    return cls(*(np.concatenate(x) for x in zip(*(dataclasses.astuple(p) for p in padded))))


def bucket_windows(windows: int) -> int:
  """The window-block count rows of `windows` blocks are padded to: a power of two up to 8,
  then a multiple of an eighth of the power of two below (8 sizes per doubling: at most
  12.5% padding, and few compiled shapes)."""
  if windows <= 8:
    return 1 << max(windows - 1, 0).bit_length()
  step = 1 << ((windows - 1).bit_length() - 4)
  return -(-windows // step) * step


def num_image_tokens(config: ModelConfig, image_grid_thw) -> np.ndarray:
  """i64[I]: image-pad tokens each image takes in the prompt (t * h * w / merge**2)."""
  grid = _grid(image_grid_thw, "image_grid_thw")
  return np.prod(grid, axis=1) // _vision(config).merge_unit


def check_image_tokens(config: ModelConfig, tokens_NxT, attention_mask, vision: VisionInputs,
                       names: Sequence[str] | None = None) -> None:
  """Raise a ValueError naming the row when its image-pad tokens do not match its images:
  a different count than image_grid_thw implies, or an image's tokens not contiguous."""
  tokens, mask = _host_tokens(tokens_NxT, attention_mask)
  token_unit = np.asarray(vision.token_unit_NxU)
  token_start = np.asarray(vision.token_start_NxU)
  if len(tokens) != len(token_unit):
    raise ValueError(f"{len(tokens)} token rows but VisionInputs has {len(token_unit)} rows")
  for n in range(len(tokens)):
    where = np.flatnonzero((tokens[n] == config.image_token_id) & mask[n])
    expected = int((token_unit[n] >= 0).sum())
    starts = np.unique(token_start[n, :expected])
    sizes = np.diff(np.append(starts, expected)).tolist()
    if len(where) != expected:
      raise ValueError(
          f"{_name(names, n)}: {len(where)} image tokens (id {config.image_token_id}) but its "
          f"{len(sizes)} image(s) need {expected} (t*h*w/{_vision(config).merge_unit} per "
          f"image from image_grid_thw: {sizes})")
    for i, (s, size) in enumerate(zip(starts, sizes)):
      if where[s + size - 1] - where[s] != size - 1:
        raise ValueError(f"{_name(names, n)}: the {size} image tokens of image {i} are not "
                         f"contiguous (positions {where[s]}..{where[s + size - 1]})")


# ---- one row's layout ------------------------------------------------------------------------


class _RowLayout:
  """Where each patch and image token of one row goes (see the module docstring)."""

  def __init__(self, vision: VisionConfig, row, name: str):
    self.vision, self.name = vision, name
    self.pixels = np.zeros((0, vision.patch_dim), np.float32)
    self.grid = np.zeros((0, 3), np.int64)
    if row is not None:
      pixel_values, image_grid_thw = row
      self.grid = _grid(image_grid_thw, f"{name}: image_grid_thw")
      self.pixels = np.asarray(pixel_values, np.float32)
      self._check()
    m, ws = vision.spatial_merge_size, vision.window_units
    merged = self.grid[:, 1:] // m
    self.window_grid = -(-merged // ws)  # windows down and across each image
    self.windows = int(np.prod(self.window_grid, axis=1).sum())

  def _check(self):
    v, grid, name = self.vision, self.grid, self.name
    if self.pixels.ndim != 2 or self.pixels.shape[1] != v.patch_dim:
      raise ValueError(f"{name}: pixel_values has shape {self.pixels.shape}; expected "
                       f"[patches, {v.patch_dim}] (channels {v.in_channels} x frames "
                       f"{v.temporal_patch_size} x {v.patch_size}x{v.patch_size} pixels)")
    if (grid[:, 0] != 1).any():
      raise ValueError(f"{name}: image_grid_thw {grid.tolist()} has t != 1: only still "
                       f"images are supported (no video)")
    if (grid[:, 1:] % v.spatial_merge_size).any() or (grid[:, 1:] <= 0).any():
      raise ValueError(f"{name}: image_grid_thw {grid.tolist()}: h and w must be positive "
                       f"multiples of spatial_merge_size {v.spatial_merge_size}")
    if int(np.prod(grid, axis=1).sum()) != len(self.pixels):
      raise ValueError(f"{name}: pixel_values has {len(self.pixels)} patches but "
                       f"image_grid_thw {grid.tolist()} gives {int(np.prod(grid, axis=1).sum())}")

  def arrays(self, units: int) -> tuple[np.ndarray, ...]:
    v = self.vision
    m, ws, mu = v.spatial_merge_size, v.window_units, v.merge_unit
    patches = np.zeros((units * mu, v.patch_dim), np.float32)
    patch_hw = np.zeros((units * mu, 2), np.int32)
    patch_image = np.full((units * mu,), -1, np.int32)
    token_unit = np.full((units,), -1, np.int32)
    token_start = np.zeros((units,), np.int32)
    token_hw = np.zeros((units, 2), np.int32)
    rope_shift = np.zeros((units + 1,), np.int32)
    window0 = token0 = pixel0 = 0
    for i, ((_, h, w), (wh, ww)) in enumerate(zip(self.grid, self.window_grid)):
      hm, wm = h // m, w // m
      uh, uw = (a.reshape(-1) for a in np.meshgrid(np.arange(hm), np.arange(wm), indexing="ij"))
      # Unit (uh, uw) -> its window's block, at its cell in the window.
      slot = (window0 + (uh // ws) * ww + uw // ws) * ws * ws + (uh % ws) * ws + uw % ws
      k = token0 + np.arange(hm * wm)  # the units' tokens, row-major as in the prompt
      token_unit[k], token_start[k] = slot, token0
      token_hw[k] = np.stack([uh, uw], axis=1)
      rope_shift[token0 + hm * wm:] += max(hm, wm) - hm * wm
      j = np.arange(mu)  # the unit's patches, (row, column) inside the unit
      patch_slots = (slot[:, None] * mu + j).reshape(-1)
      patches[patch_slots] = self.pixels[pixel0:pixel0 + hm * wm * mu]
      patch_hw[patch_slots] = np.stack([(uh[:, None] * m + j // m).reshape(-1),
                                        (uw[:, None] * m + j % m).reshape(-1)], axis=1)
      patch_image[patch_slots] = i
      window0 += wh * ww
      token0 += hm * wm
      pixel0 += h * w
    return patches, patch_hw, patch_image, token_unit, token_start, token_hw, rope_shift


# ---- helpers -----------------------------------------------------------------------------------


def _vision(config: ModelConfig) -> VisionConfig:
  if config.vision is None:
    raise ValueError(f"{config.architecture} has no vision tower: images need a Qwen2.5-VL "
                     f"model (Qwen2_5_VLForConditionalGeneration)")
  return config.vision


def _name(names, n: int) -> str:
  return f"row {n}" if names is None else str(names[n])


def _grid(image_grid_thw, what: str) -> np.ndarray:
  grid = np.asarray(image_grid_thw)
  if grid.ndim != 2 or grid.shape[1] != 3 or not np.issubdtype(grid.dtype, np.integer):
    raise ValueError(f"{what}: expected integers of shape [images, 3] (t, h, w), got "
                     f"{grid.dtype} {grid.shape}")
  return grid.astype(np.int64)


def _host_tokens(tokens_NxT, attention_mask):
  tokens = np.asarray(tokens_NxT)
  mask = (np.ones(tokens.shape, bool) if attention_mask is None
          else np.asarray(attention_mask).astype(bool))
  return tokens, mask
