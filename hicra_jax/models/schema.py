"""The decoder's parameters, declared once.

Each row of `TENSORS` (the decoder) and `VISION_TENSORS` (the Qwen2.5-VL vision
tower, under `visual.`) is one parameter tensor: its name in the decoder, its
logical axes (which give both its shape and its sharding), its initializer,
its Hugging Face safetensors name and layout, its GGUF (llama.cpp) name, and
the ModelConfig flag it exists under. Everything else is derived from this
table: the decoder's parameters (`Decoder.__init__`), their partition specs
(`models/partition.py`, `hicra_jax.sharding`), HF load and save
(`models/weights.py`), GGUF name mapping and shape checks (`models/gguf.py`)
and `ModelConfig.num_params`.

Rows are in data-flow order; the decoder initializes them in this order, so
the random init of a seed depends on it.

This module imports no other hicra_jax module (config.py imports it for
`num_params`); `config` arguments are ModelConfig instances.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, NamedTuple

import numpy as np

# Logical axis -> the ModelConfig field that sizes it (legend letter in the comment).
AXIS_SIZES = {
    "vocab": "vocab_size",          # V
    "embed": "hidden_size",         # D, split over "fsdp"
    "norm": "hidden_size",          # D of a norm scale (kept whole)
    "q_heads": "num_heads",         # Q
    "kv_heads": "num_kv_heads",     # K
    "head_dim": "head_dim",         # H
    "mlp": "intermediate_size",     # F
    "layer": "num_layers",          # L
    # The Qwen2.5-VL vision tower (ModelConfig.vision; dotted: a VisionConfig field).
    "vision_layer": "vision.depth",
    "vision_embed": "vision.hidden_size",           # split over "fsdp"
    "vision_norm": "vision.hidden_size",            # a norm scale or bias of that width (whole)
    "vision_heads": "vision.num_heads",
    "vision_head_dim": "vision.head_dim",
    "vision_mlp": "vision.intermediate_size",
    "vision_qkv": "vision.qkv_parts",               # the fused projection's query / key / value
    "vision_channels": "vision.in_channels",
    "vision_frames": "vision.temporal_patch_size",
    "vision_pixels": "vision.patch_size",           # a patch's height or width
    "vision_merged": "vision.merged_hidden_size",   # a merge unit's concatenated patches
    "vision_merger_mlp": "vision.merged_hidden_size",
}
STACK_AXES = ("layer", "vision_layer")  # a leading axis of these: one HF tensor per index ({i})
INITS = ("normal", "ones", "zeros")  # normal: std INIT_STD
INIT_STD = 0.02
LAYER_PREFIX = "layers."      # our per-layer tensors: "layers.x", stacked on a leading [L] axis
HF_LAYER = "model.layers.{i}."  # HF per-layer names start with this ({i}: the layer index)
GGUF_LAYER = "blk.{i}."        # GGUF per-layer names start with this


class Tensor(NamedTuple):
  name: str              # our flat name; LAYER_PREFIX names are stacked on [L]
  axes: tuple[str, ...]  # one logical axis (a key of AXIS_SIZES) per dimension
  init: str              # one of INITS
  when: str              # ModelConfig flag that must be true ("!flag": false); "": always
  hf: str                # HF safetensors name; "{i}" is the layer index
  layout: str            # a key of HF_LAYOUTS: the HF tensor's layout relative to ours
  gguf: str              # GGUF name; "{i}" is the layer (blk) index

  @property
  def per_layer(self) -> bool:
    """Stacked on a leading layer axis (decoder layers or vision blocks): one HF tensor each."""
    return self.axes[0] in STACK_AXES

  @property
  def attr(self) -> str:
    """The attribute name on its module (the Decoder, or a holder such as `layers`)."""
    return self.name.rpartition(".")[2]

  @property
  def owner(self) -> str:
    """Dotted path of the holder module ("" for the Decoder itself), e.g. "visual.blocks"."""
    return self.name.rpartition(".")[0]


# Each row: name, logical axes, init, when;  HF name, HF layout, GGUF name.
TENSORS = (
    Tensor("embed", ("vocab", "embed"), "normal", "",
           "model.embed_tokens.weight", "same", "token_embd.weight"),
    Tensor("layers.attn_norm", ("layer", "norm"), "ones", "",
           "model.layers.{i}.input_layernorm.weight", "same", "blk.{i}.attn_norm.weight"),
    Tensor("layers.wq", ("layer", "embed", "q_heads", "head_dim"), "normal", "",
           "model.layers.{i}.self_attn.q_proj.weight", "heads_in", "blk.{i}.attn_q.weight"),
    Tensor("layers.wk", ("layer", "embed", "kv_heads", "head_dim"), "normal", "",
           "model.layers.{i}.self_attn.k_proj.weight", "heads_in", "blk.{i}.attn_k.weight"),
    Tensor("layers.wv", ("layer", "embed", "kv_heads", "head_dim"), "normal", "",
           "model.layers.{i}.self_attn.v_proj.weight", "heads_in", "blk.{i}.attn_v.weight"),
    Tensor("layers.wo", ("layer", "q_heads", "head_dim", "embed"), "normal", "",
           "model.layers.{i}.self_attn.o_proj.weight", "heads_out", "blk.{i}.attn_output.weight"),
    Tensor("layers.bq", ("layer", "q_heads", "head_dim"), "zeros", "qkv_bias",
           "model.layers.{i}.self_attn.q_proj.bias", "heads_bias", "blk.{i}.attn_q.bias"),
    Tensor("layers.bk", ("layer", "kv_heads", "head_dim"), "zeros", "qkv_bias",
           "model.layers.{i}.self_attn.k_proj.bias", "heads_bias", "blk.{i}.attn_k.bias"),
    Tensor("layers.bv", ("layer", "kv_heads", "head_dim"), "zeros", "qkv_bias",
           "model.layers.{i}.self_attn.v_proj.bias", "heads_bias", "blk.{i}.attn_v.bias"),
    Tensor("layers.q_norm", ("layer", "head_dim"), "ones", "qk_norm",
           "model.layers.{i}.self_attn.q_norm.weight", "same", "blk.{i}.attn_q_norm.weight"),
    Tensor("layers.k_norm", ("layer", "head_dim"), "ones", "qk_norm",
           "model.layers.{i}.self_attn.k_norm.weight", "same", "blk.{i}.attn_k_norm.weight"),
    Tensor("layers.mlp_norm", ("layer", "norm"), "ones", "",
           "model.layers.{i}.post_attention_layernorm.weight", "same", "blk.{i}.ffn_norm.weight"),
    Tensor("layers.w_gate", ("layer", "embed", "mlp"), "normal", "",
           "model.layers.{i}.mlp.gate_proj.weight", "linear", "blk.{i}.ffn_gate.weight"),
    Tensor("layers.w_up", ("layer", "embed", "mlp"), "normal", "",
           "model.layers.{i}.mlp.up_proj.weight", "linear", "blk.{i}.ffn_up.weight"),
    Tensor("layers.w_down", ("layer", "mlp", "embed"), "normal", "",
           "model.layers.{i}.mlp.down_proj.weight", "linear", "blk.{i}.ffn_down.weight"),
    Tensor("final_norm", ("norm",), "ones", "",
           "model.norm.weight", "same", "output_norm.weight"),
    Tensor("lm_head", ("embed", "vocab"), "normal", "!tie_embeddings",
           "lm_head.weight", "linear", "output.weight"),
)

# The Qwen2.5-VL vision tower (rows exist when ModelConfig.vision is set). HF names
# are the published checkpoints' (`visual.*`); transformers 5 also reads and writes
# them (weights.py accepts its in-memory `model.visual.*` spelling too). No GGUF names.
_V = "visual.blocks.{i}."
VISION_TENSORS = (
    Tensor("visual.patch_embed",
           ("vision_channels", "vision_frames", "vision_pixels", "vision_pixels", "vision_embed"),
           "normal", "vision", "visual.patch_embed.proj.weight", "conv", ""),
    Tensor("visual.blocks.norm1", ("vision_layer", "vision_norm"), "ones", "vision",
           _V + "norm1.weight", "same", ""),
    Tensor("visual.blocks.wqkv",
           ("vision_layer", "vision_embed", "vision_qkv", "vision_heads", "vision_head_dim"),
           "normal", "vision", _V + "attn.qkv.weight", "heads_in", ""),
    Tensor("visual.blocks.bqkv", ("vision_layer", "vision_qkv", "vision_heads", "vision_head_dim"),
           "zeros", "vision", _V + "attn.qkv.bias", "heads_bias", ""),
    Tensor("visual.blocks.wo", ("vision_layer", "vision_heads", "vision_head_dim", "vision_embed"),
           "normal", "vision", _V + "attn.proj.weight", "heads_out", ""),
    Tensor("visual.blocks.bo", ("vision_layer", "vision_norm"), "zeros", "vision",
           _V + "attn.proj.bias", "same", ""),
    Tensor("visual.blocks.norm2", ("vision_layer", "vision_norm"), "ones", "vision",
           _V + "norm2.weight", "same", ""),
    Tensor("visual.blocks.w_gate", ("vision_layer", "vision_embed", "vision_mlp"), "normal",
           "vision", _V + "mlp.gate_proj.weight", "linear", ""),
    Tensor("visual.blocks.b_gate", ("vision_layer", "vision_mlp"), "zeros", "vision",
           _V + "mlp.gate_proj.bias", "same", ""),
    Tensor("visual.blocks.w_up", ("vision_layer", "vision_embed", "vision_mlp"), "normal",
           "vision", _V + "mlp.up_proj.weight", "linear", ""),
    Tensor("visual.blocks.b_up", ("vision_layer", "vision_mlp"), "zeros", "vision",
           _V + "mlp.up_proj.bias", "same", ""),
    Tensor("visual.blocks.w_down", ("vision_layer", "vision_mlp", "vision_embed"), "normal",
           "vision", _V + "mlp.down_proj.weight", "linear", ""),
    Tensor("visual.blocks.b_down", ("vision_layer", "vision_norm"), "zeros", "vision",
           _V + "mlp.down_proj.bias", "same", ""),
    Tensor("visual.merger_norm", ("vision_norm",), "ones", "vision",
           "visual.merger.ln_q.weight", "same", ""),
    Tensor("visual.merger_w1", ("vision_merged", "vision_merger_mlp"), "normal", "vision",
           "visual.merger.mlp.0.weight", "linear", ""),
    Tensor("visual.merger_b1", ("vision_merger_mlp",), "zeros", "vision",
           "visual.merger.mlp.0.bias", "same", ""),
    Tensor("visual.merger_w2", ("vision_merger_mlp", "embed"), "normal", "vision",
           "visual.merger.mlp.2.weight", "linear", ""),
    Tensor("visual.merger_b2", ("norm",), "zeros", "vision",
           "visual.merger.mlp.2.bias", "same", ""),
)
ALL_TENSORS = TENSORS + VISION_TENSORS
BY_NAME = {t.name: t for t in ALL_TENSORS}

# layout -> (HF -> ours given our shape, ours -> HF). Torch Linear weights are [out, in].
HF_LAYOUTS: dict[str, tuple[Callable, Callable]] = {
    "same": (lambda x, s: x, lambda x: x),
    "linear": (lambda x, s: x.T, lambda x: x.T),                       # [out, in] <-> [in, out]
    "heads_in": (lambda x, s: x.T.reshape(s), lambda x: x.reshape(x.shape[0], -1).T),
    "heads_out": (lambda x, s: x.T.reshape(s), lambda x: x.reshape(-1, x.shape[-1]).T),
    "heads_bias": (lambda x, s: x.reshape(s), lambda x: x.reshape(-1)),
    # Conv3d weight [out, in, frames, h, w] <-> ours [in, frames, h, w, out].
    "conv": (lambda x, s: np.moveaxis(x, 0, -1), lambda x: np.moveaxis(x, -1, 0)),
}


def exists(tensor: Tensor, config: Any) -> bool:
  """Whether `config` has this tensor (its `when` flag holds)."""
  if not tensor.when:
    return True
  return bool(getattr(config, tensor.when.lstrip("!"))) != tensor.when.startswith("!")


def tensors(config: Any) -> tuple[Tensor, ...]:
  """The rows `config` has, in table order (the text rows, then the vision tower's)."""
  return tuple(t for t in ALL_TENSORS if exists(t, config))


def shape(tensor: Tensor, config: Any) -> tuple[int, ...]:
  """Full shape of the tensor under `config` (per-layer tensors include [L])."""
  return tuple(operator.attrgetter(AXIS_SIZES[a])(config) for a in tensor.axes)


def param_shapes(config: Any) -> dict[str, tuple[int, ...]]:
  """Flat 'a.b' name -> shape for every parameter of the decoder under `config`."""
  return {t.name: shape(t, config) for t in tensors(config)}


def num_params(config: Any) -> int:
  """All parameters, tied embeddings counted once."""
  return sum(math.prod(shape(t, config)) for t in tensors(config))


def hf_names(tensor: Tensor, config: Any) -> list[str]:
  """HF safetensors name(s): one per layer for per-layer tensors, else one."""
  if tensor.per_layer:
    return [tensor.hf.format(i=i) for i in range(shape(tensor, config)[0])]
  return [tensor.hf]


def stored_shape(tensor: Tensor, config: Any) -> tuple[int, ...]:
  """Shape of one stored piece: one layer's (without [L]) for per-layer tensors, else the whole."""
  full = shape(tensor, config)
  return full[1:] if tensor.per_layer else full


def hf_shape(tensor: Tensor, config: Any) -> tuple[int, ...]:
  """Shape of each of the tensor's HF tensors (`hf_names`), in its HF layout."""
  # A zero-strided array: the layout's transposes and reshapes run without allocating.
  ours = np.broadcast_to(np.uint8(0), stored_shape(tensor, config))
  return HF_LAYOUTS[tensor.layout][1](ours).shape


def gguf_to_hf_names() -> tuple[dict[str, str], dict[str, str]]:
  """(GGUF -> HF names of the global tensors, GGUF -> HF per-layer name suffixes).

  Per-layer suffixes drop the "blk.{i}." and "model.layers.{i}." prefixes. All
  rows are listed, whatever their `when`: the file's tensors decide the config.
  """
  global_names = {t.gguf: t.hf for t in TENSORS if not t.per_layer}
  layer_names = {t.gguf.removeprefix(GGUF_LAYER): t.hf.removeprefix(HF_LAYER)
                 for t in TENSORS if t.per_layer}
  return global_names, layer_names
