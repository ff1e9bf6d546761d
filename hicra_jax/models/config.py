"""ModelConfig: one decoder, three families (Llama 3.x, Qwen2/2.5, Qwen3) as flags."""

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
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the decoder. Hashable, so it can be a static argument.

  Family differences are flags: `qkv_bias` (Qwen2), `qk_norm` (Qwen3),
  `rope_scaling` (Llama 3.x), `tie_embeddings`, `head_dim` (may differ from
  hidden_size // num_heads).
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

  @property
  def rope_dict(self) -> dict[str, Any]:
    return dict(self.rope_scaling or ())

  @property
  def family(self) -> str:
    return SUPPORTED_ARCHITECTURES[self.architecture]

  @property
  def num_params(self) -> int:
    """All parameters, tied embeddings counted once (the schema's tensors, models/schema.py)."""
    return schema.num_params(self)

  # ---- Hugging Face config.json -------------------------------------------------

  @classmethod
  def from_hf(cls, config: str | os.PathLike | dict[str, Any]) -> "ModelConfig":
    """From a HF `config.json` path, a model directory, or its parsed dict.

    Reads both the classic (`rope_theta`, `rope_scaling`) and the transformers 5
    (`rope_parameters`) spellings.
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

    rope = dict(config.get("rope_parameters") or {})
    if config.get("rope_scaling"):
      rope.update(config["rope_scaling"])
    if "type" in rope and "rope_type" not in rope:
      rope["rope_type"] = rope.pop("type")
    rope_theta = rope.pop("rope_theta", None) or config.get("rope_theta", 10000.0)
    rope.pop("type", None)
    if rope.get("rope_type", "default") == "default":
      rope = {}
    rope_scaling = tuple(sorted(rope.items())) or None

    num_heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // num_heads
    if family == "qwen2":
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
    )

  def to_hf(self) -> dict[str, Any]:
    """A `config.json` dict that transformers loads (classic spelling, read by 4.x and 5.x)."""
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
    if self.bos_token_id is not None:
      cfg["bos_token_id"] = self.bos_token_id
    if self.eos_token_id is not None:
      eos = self.eos_token_id
      cfg["eos_token_id"] = list(eos) if isinstance(eos, tuple) else eos
    return cfg
