"""ModelConfig: one decoder, four families (Llama 3.x, Qwen2/2.5, Qwen3, Qwen2.5-VL) as flags.

Qwen2.5-VL (and MiMO-VL, the same architecture) is the Qwen2 decoder plus a
vision tower (`VisionConfig`, `ModelConfig.vision`) and multimodal RoPE
(`ModelConfig.mrope_section`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from hicra_jax.models import schema

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
VISION_ACTIVATIONS = ("silu",)  # Qwen2.5-VL's vision MLP (Qwen2-VL's quick_gelu is another arch)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The Qwen2.5-VL vision tower (HF `vision_config`). Hashable.

  Images are cut into patch_size x patch_size patches (temporal_patch_size
  frames each: a still image is repeated); spatial_merge_size**2 neighbouring
  patches merge into one image token of width out_hidden_size (the language
  model's width). Window attention runs inside windows of window_size pixels;
  the blocks at fullatt_block_indexes attend over the whole image.
  """

  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  out_hidden_size: int
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  in_channels: int = 3
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: int = 2
  rope_theta: float = 10000.0
  hidden_act: str = "silu"

  def __post_init__(self):
    object.__setattr__(self, "fullatt_block_indexes", tuple(self.fullatt_block_indexes))
    for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size",
                 "patch_size", "temporal_patch_size", "spatial_merge_size", "in_channels",
                 "window_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"VisionConfig.{name} must be a positive int, got {value!r}")
    if self.hidden_size % self.num_heads or self.head_dim % 4:
      raise ValueError(f"VisionConfig: hidden_size {self.hidden_size} / num_heads "
                       f"{self.num_heads} must be a whole head_dim divisible by 4 (2D RoPE)")
    if self.window_units < 1:
      raise ValueError(f"VisionConfig.window_size {self.window_size} must be at least "
                       f"patch_size * spatial_merge_size = "
                       f"{self.patch_size * self.spatial_merge_size}")
    bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
    if bad:
      raise ValueError(f"VisionConfig.fullatt_block_indexes {bad} are outside [0, {self.depth})")
    if self.hidden_act not in VISION_ACTIVATIONS:
      raise ValueError(f"VisionConfig.hidden_act {self.hidden_act!r} is not supported; "
                       f"expected one of {VISION_ACTIVATIONS}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch (channels x frames x pixels): pixel_values' width."""
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    """Patches merged into one image token."""
    return self.spatial_merge_size ** 2

  @property
  def merged_hidden_size(self) -> int:
    """Width of a merge unit's concatenated patches (the patch merger's input)."""
    return self.hidden_size * self.merge_unit

  @property
  def window_units(self) -> int:
    """Side of an attention window, in image tokens (merge units)."""
    return self.window_size // self.spatial_merge_size // self.patch_size

  @property
  def window_patches(self) -> int:
    """Patches in one (full) attention window."""
    return self.window_units ** 2 * self.merge_unit

  @property
  def qkv_parts(self) -> int:
    """The fused qkv projection's leading split (query, key, value): sizes the "qkv" axis."""
    return 3

  @classmethod
  def from_hf(cls, config: dict[str, Any]) -> "VisionConfig":
    """From a HF `vision_config` dict (the published `in_chans` or transformers' `in_channels`)."""
    rope = config.get("rope_parameters") or {}
    return cls(
        depth=config["depth"], hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"], num_heads=config["num_heads"],
        out_hidden_size=config["out_hidden_size"], patch_size=config.get("patch_size", 14),
        temporal_patch_size=config.get("temporal_patch_size", 2),
        spatial_merge_size=config.get("spatial_merge_size", 2),
        in_channels=config.get("in_channels", config.get("in_chans", 3)),
        window_size=config.get("window_size", 112),
        fullatt_block_indexes=tuple(config.get("fullatt_block_indexes", (7, 15, 23, 31))),
        tokens_per_second=config.get("tokens_per_second", 2),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        hidden_act=config.get("hidden_act", "silu"))

  def to_hf(self) -> dict[str, Any]:
    """The published `vision_config` fields (Qwen2.5-VL-7B's spelling, `in_chans`)."""
    cfg = {"depth": self.depth, "hidden_act": self.hidden_act, "hidden_size": self.hidden_size,
           "intermediate_size": self.intermediate_size, "num_heads": self.num_heads,
           "in_chans": self.in_channels, "out_hidden_size": self.out_hidden_size,
           "patch_size": self.patch_size, "spatial_merge_size": self.spatial_merge_size,
           "spatial_patch_size": self.patch_size, "window_size": self.window_size,
           "fullatt_block_indexes": list(self.fullatt_block_indexes),
           "tokens_per_second": self.tokens_per_second,
           "temporal_patch_size": self.temporal_patch_size}
    if self.rope_theta != 10000.0:  # not a published field: written only when it differs
      cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
    return cfg


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the decoder. Hashable, so it can be a static argument.

  Family differences are flags: `qkv_bias` (Qwen2), `qk_norm` (Qwen3),
  `rope_scaling` (Llama 3.x), `tie_embeddings`, `head_dim` (may differ from
  hidden_size // num_heads). Qwen2.5-VL: `vision` (the vision tower),
  `mrope_section` (multimodal RoPE: the t / h / w split of head_dim / 2
  frequencies) and the image token ids.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  # Hashable tuple of (key, value) pairs, e.g. (("rope_type", "llama3"), ("factor", 8.0), ...).
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  max_position_embeddings: int = 4096
  tie_embeddings: bool = False
  qkv_bias: bool = False
  qk_norm: bool = False
  architecture: str = "LlamaForCausalLM"
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  vision: VisionConfig | None = None
  mrope_section: tuple[int, ...] | None = None
  image_token_id: int | None = None
  video_token_id: int | None = None
  vision_start_token_id: int | None = None
  vision_end_token_id: int | None = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                 "num_heads", "num_kv_heads", "head_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of "
          f"num_kv_heads ({self.num_kv_heads}) for grouped-query attention")
    if self.architecture not in SUPPORTED_ARCHITECTURES:
      raise ValueError(f"ModelConfig.architecture {self.architecture!r} is not supported; "
                       f"expected one of {sorted(SUPPORTED_ARCHITECTURES)}")
    rope_type = self.rope_dict.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
      raise ValueError(f"rope_scaling type {rope_type!r} is not supported; expected one of "
                       f"{SUPPORTED_ROPE_TYPES}")
    if self.mrope_section is not None:
      object.__setattr__(self, "mrope_section", tuple(self.mrope_section))
    self._check_multimodal()

  def _check_multimodal(self) -> None:
    if (self.family == "qwen2_5_vl") != (self.vision is not None):
      raise ValueError(f"ModelConfig.vision must be given exactly for "
                       f"Qwen2_5_VLForConditionalGeneration; architecture is "
                       f"{self.architecture!r} and vision is {self.vision!r}")
    if self.vision is None:
      return
    if self.head_dim * self.num_heads != self.hidden_size:  # HF's Qwen2.5-VL derives it
      raise ValueError(f"ModelConfig.head_dim {self.head_dim} must be hidden_size / num_heads = "
                       f"{self.hidden_size} / {self.num_heads} for a vision-language model")
    section = self.mrope_section
    if (section is None or len(section) != 3 or any(not isinstance(x, int) or x <= 0 for x in section)
        or sum(section) != self.head_dim // 2):
      raise ValueError(f"ModelConfig.mrope_section must be 3 positive ints (t, h, w) summing to "
                       f"head_dim / 2 = {self.head_dim // 2}, got {section!r}")
    if not isinstance(self.image_token_id, int):
      raise ValueError(f"ModelConfig.image_token_id must be an int for a vision-language model, "
                       f"got {self.image_token_id!r}")

  @property
  def rope_dict(self) -> dict[str, Any]:
    return dict(self.rope_scaling or ())

  @property
  def family(self) -> str:
    return SUPPORTED_ARCHITECTURES[self.architecture]

  @property
  def is_multimodal(self) -> bool:
    """True for a vision-language model (it has a vision tower)."""
    return self.vision is not None

  @property
  def num_params(self) -> int:
    """All parameters, tied embeddings counted once (the schema's tensors, models/schema.py)."""
    return schema.num_params(self)

  # ---- Hugging Face config.json -------------------------------------------------

  @classmethod
  def from_hf(cls, config: str | os.PathLike | dict[str, Any]) -> "ModelConfig":
    """From a HF `config.json` path, a model directory, or its parsed dict.

    Reads both the classic (`rope_theta`, `rope_scaling`) and the transformers 5
    (`rope_parameters`) spellings. Qwen2.5-VL: the published flat layout (text
    fields at the top, rope_scaling {"type": "mrope", "mrope_section": ...}) and
    transformers 5's nested `text_config`; `vision_config` either way.
    """
    if not isinstance(config, dict):
      path = os.fspath(config)
      if os.path.isdir(path):
        path = os.path.join(path, "config.json")
      if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json at {path!r}")
      with open(path) as f:
        config = json.load(f)
    archs = config.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
      model_type = config.get("model_type")
      by_type = {v: k for k, v in SUPPORTED_ARCHITECTURES.items()}
      arch = by_type.get(model_type)
    if arch is None:
      raise ValueError(
          f"unsupported architecture {archs or config.get('model_type')!r}; hicra-jax supports "
          f"{sorted(SUPPORTED_ARCHITECTURES)} (model_type {sorted(SUPPORTED_ARCHITECTURES.values())})")
    family = SUPPORTED_ARCHITECTURES[arch]
    multimodal = family == "qwen2_5_vl"
    if multimodal:  # transformers 5 nests the language model's fields
      config = {**config, **(config.get("text_config") or {})}

    rope = dict(config.get("rope_parameters") or {})
    if config.get("rope_scaling"):
      rope.update(config["rope_scaling"])
    if "type" in rope and "rope_type" not in rope:
      rope["rope_type"] = rope.pop("type")
    rope_theta = rope.pop("rope_theta", None) or config.get("rope_theta", 10000.0)
    rope.pop("type", None)
    mrope_section = rope.pop("mrope_section", None)
    if rope.get("rope_type", "default") in ("default", "mrope"):
      rope = {}
    rope_scaling = tuple(sorted(rope.items())) or None

    num_heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // num_heads
    if family in ("qwen2", "qwen2_5_vl"):
      qkv_bias = True
    else:
      qkv_bias = bool(config.get("attention_bias", False))
    if config.get("mlp_bias"):
      raise ValueError("mlp_bias=True is not supported")
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
      eos = tuple(eos)
    return cls(
        vocab_size=config["vocab_size"],
        hidden_size=hidden,
        intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=config.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope_theta),
        rope_scaling=rope_scaling,
        max_position_embeddings=config.get("max_position_embeddings", 4096),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        qk_norm=family == "qwen3",
        architecture=arch,
        bos_token_id=config.get("bos_token_id"),
        eos_token_id=eos,
        vision=VisionConfig.from_hf(config["vision_config"]) if multimodal else None,
        mrope_section=tuple(mrope_section) if multimodal and mrope_section else None,
        **({name: config.get(name) for name in _VL_TOKEN_FIELDS} if multimodal else {}),
    )

  def to_hf(self) -> dict[str, Any]:
    """A `config.json` dict that transformers loads (classic spelling, read by 4.x and 5.x).

    Qwen2.5-VL: the published flat layout (text fields at the top, rope_scaling
    {"type": "mrope", "mrope_section": ...}, a nested vision_config).
    """
    family = self.family
    cfg: dict[str, Any] = {
        "architectures": [self.architecture],
        "model_type": family,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_scaling": self.rope_dict or None,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_embeddings,
        "torch_dtype": "float32",
    }
    if family == "llama":
      cfg["attention_bias"] = self.qkv_bias
      cfg["mlp_bias"] = False
    if family == "qwen3":
      cfg["attention_bias"] = False
    if family == "qwen2_5_vl":  # the published layout has no head_dim (hidden / heads)
      del cfg["head_dim"]
      cfg.update(rope_scaling={"type": "mrope", "mrope_section": list(self.mrope_section)},
                 use_sliding_window=False, vision_config=self.vision.to_hf())
      cfg.update({name: getattr(self, name) for name in _VL_TOKEN_FIELDS
                  if getattr(self, name) is not None})
    if self.bos_token_id is not None:
      cfg["bos_token_id"] = self.bos_token_id
    if self.eos_token_id is not None:
      eos = self.eos_token_id
      cfg["eos_token_id"] = list(eos) if isinstance(eos, tuple) else eos
    return cfg


_VL_TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id",
                    "vision_end_token_id")
