"""Read GGUF checkpoints (llama.cpp format) into Hugging Face conventions.

A GGUF file is turned into what a Hugging Face model directory would hold: a
`config.json`-style dict (`LlamaForCausalLM`, `Qwen2ForCausalLM` or
`Qwen3ForCausalLM`) and a state dict keyed by HF tensor names, float32 numpy
arrays in torch layout `[out, in]`, so the HF safetensors loader can consume it.
The tensors are exactly the decoder's (GGUF and HF names from the schema table,
models/schema.py); a file with others (e.g. MLP or output-projection biases)
is rejected with the tensor's name.

What the conversion undoes, following transformers' own GGUF loader
(`transformers/modeling_gguf_pytorch_utils.py`):

* Dequantization (Q4_1, Q8_0, K-quants, F16, BF16, ...) with `gguf.quants`.
* llama.cpp's `convert_hf_to_gguf.py` permutes the rows of Llama `q_proj` and
  `k_proj` (weight and bias) from HF's rotate-half RoPE layout to GGML's
  interleaved one: `w.reshape(n_head, 2, d // 2, ...).swapaxes(1, 2)` with
  `n_head` = attention heads for q and KV heads for k. `_reverse_permute`
  inverts it. Qwen2/Qwen3 are converted without the permutation.
* Tied embeddings: a file without `output.weight` shares `token_embd.weight`;
  `lm_head.weight` is then absent from the state dict and
  `tie_word_embeddings` is true.
* Llama 3.x RoPE scaling: llama.cpp stores it as a `rope_freqs.weight` tensor of
  per-frequency divisors instead of metadata; `_llama3_rope_scaling` recovers
  the HF `rope_scaling` dict from it (transformers drops that tensor).

Usage::

  config, state_dict = read_gguf(path)
  # or, one tensor at a time (the file is memory-mapped, not read up front):
  ckpt = open_gguf(path)
  for name, array in ckpt.iter_tensors():
    ...
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import Any

import gguf
import numpy as np

from hicra_jax.models import schema
from hicra_jax.models.config import ModelConfig

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3")
_HF_ARCHITECTURE = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
_GGUF_MAGIC = b"GGUF"

# GGUF tensor name -> HF tensor name, from the schema table (the same names as
# gguf-py's TensorNameMap for these architectures, which transformers uses in
# reverse): the global tensors, and the per-layer suffixes after "blk.N.".
_GLOBAL_NAMES, _LAYER_NAMES = schema.gguf_to_hf_names()
_ROPE_FREQS = "rope_freqs.weight"
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


class GGUFError(ValueError):
  """A GGUF file that cannot be read or converted to Hugging Face conventions."""


def _open_reader(path: str):
  """Returns a `gguf.GGUFReader`, with errors that name the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GGUF file {path!r} does not exist")
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic != _GGUF_MAGIC:
    raise GGUFError(f"{path!r} is not a GGUF file: it starts with {magic!r}, "
                    f"expected {_GGUF_MAGIC!r}")
  try:
    reader = gguf.GGUFReader(path)
  except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
    raise GGUFError(f"{path!r} is not a readable GGUF file (truncated or corrupt?): "
                    f"{type(e).__name__}: {e}") from e
  size = os.path.getsize(path)
  for tensor in reader.tensors:
    end = int(tensor.data_offset) + int(tensor.n_bytes)
    if end > size or tensor.data.nbytes != int(tensor.n_bytes):
      raise GGUFError(f"{path!r} is truncated: tensor {tensor.name!r} needs bytes up to {end}, "
                      f"the file has {size}")
  return reader


def _field_value(field) -> Any:
  """Scalar or string value of a metadata field; floats stored as float32 are
  rounded to their shortest decimal form (1e-05, not 9.999999747378752e-06)."""
  value = field.contents()
  if field.types and field.types[0] == gguf.GGUFValueType.FLOAT32:
    value = float(str(np.float32(value)))
  return value


def _read_metadata(reader) -> dict[str, Any]:
  """All metadata fields except arrays (token lists, merges, ...)."""
  meta = {}
  for key, field in reader.fields.items():
    if key.startswith("GGUF.") or not field.types:
      continue
    if field.types[0] == gguf.GGUFValueType.ARRAY:
      continue
    meta[key] = _field_value(field)
  return meta


def _reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverts llama.cpp's `LlamaModel.permute` of q/k rows (weight or bias)."""
  dim = w.shape[0] // n_head // 2
  return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _llama3_factors(rope_theta: float, head_dim: int, factor: float, low_freq_factor: float,
                    high_freq_factor: float, original_max_position_embeddings: float) -> np.ndarray:
  """The `rope_freqs` tensor llama.cpp writes for HF `rope_type: llama3`."""
  freqs = 1.0 / (rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  wavelen = 2 * math.pi / freqs
  old = original_max_position_embeddings
  smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  mid = 1 / ((1 - smooth) / factor + smooth)
  return np.where(wavelen < old / high_freq_factor, 1.0,
                  np.where(wavelen > old / low_freq_factor, factor, mid))


def _llama3_rope_scaling(path: str, factors: np.ndarray, rope_theta: float,
                         head_dim: int) -> dict[str, Any]:
  """HF `rope_scaling` (llama3) reproducing llama.cpp's `rope_freqs` tensor.

  The llama3 formula depends on `low_freq_factor`, `high_freq_factor` and
  `original_max_position_embeddings` only through the ratios
  `original / low` and `original / high`, so `original` is fixed to 8192 (the
  Llama 3.x value) and the two factors are solved from the smoothly
  interpolated frequencies; the result is checked against the whole tensor.
  """
  factors = np.asarray(factors, dtype=np.float64).reshape(-1)
  if factors.shape != (head_dim // 2,):
    raise GGUFError(f"{path!r}: tensor {_ROPE_FREQS!r} has {factors.size} entries, "
                    f"expected head_dim / 2 = {head_dim // 2}")
  factor = float(factors.max())
  old = 8192.0
  candidates = [(1.0, 4.0)]  # Llama 3.1 / 3.2 / 3.3
  freqs = 1.0 / (rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  inside = (factors > 1 + 1e-6) & (factors < factor - 1e-6 * factor)
  if factor > 1 and inside.sum() >= 2:
    smooth = (1 / factors[inside] - 1 / factor) / (1 - 1 / factor)
    x = old * freqs[inside] / (2 * math.pi)  # old / wavelen
    slope, intercept = np.polyfit(x, smooth, 1)
    if slope > 0:
      low = -intercept / slope
      candidates.append((low, low + 1 / slope))
  for low, high in candidates:
    want = _llama3_factors(rope_theta, head_dim, factor, low, high, old)
    if np.allclose(want, factors, rtol=1e-5, atol=1e-6):
      return {
          "rope_type": "llama3",
          "factor": float(str(np.float32(factor))),
          "low_freq_factor": round(float(low), 6),
          "high_freq_factor": round(float(high), 6),
          "original_max_position_embeddings": int(old),
      }
  raise GGUFError(f"{path!r}: tensor {_ROPE_FREQS!r} does not match Llama 3 RoPE scaling; "
                  "other per-frequency RoPE factors are not supported")


class GGUFCheckpoint:
  """An opened GGUF file: HF config, metadata and lazily dequantized tensors.

  The file is memory-mapped; tensors are dequantized one at a time by
  `tensor()` / `iter_tensors()`, so a big file is not held twice in memory.

  Attributes:
    path: the file.
    architecture: GGUF `general.architecture` (one of
      `SUPPORTED_GGUF_ARCHITECTURES`).
    metadata: every non-array metadata field, e.g. `tokenizer.chat_template`.
    config: Hugging Face `config.json`-style dict.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._reader = _open_reader(self.path)
    self.metadata = _read_metadata(self._reader)
    arch = self.metadata.get("general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
      raise GGUFError(f"{self.path!r}: GGUF architecture {arch!r} is not supported; "
                      f"expected one of {list(SUPPORTED_GGUF_ARCHITECTURES)}")
    self.architecture = arch
    self._tensors = {t.name: t for t in self._reader.tensors}
    self._hf_to_gguf = self._map_names()
    self.config = self._build_config()
    self._check_tensors()

  # ---- metadata ------------------------------------------------------------

  @property
  def chat_template(self) -> str | None:
    """The Jinja chat template (`tokenizer.chat_template`), if the file has one."""
    return self.metadata.get("tokenizer.chat_template")

  def _meta(self, key: str, default: Any = None, *, required: bool = False) -> Any:
    full = f"{self.architecture}.{key}"
    if full in self.metadata:
      return self.metadata[full]
    if required:
      raise GGUFError(f"{self.path!r}: metadata key {full!r} is missing")
    return default

  def _shape(self, gguf_name: str) -> tuple[int, ...]:
    """HF (torch) shape of a tensor: GGUF dims reversed."""
    return tuple(int(d) for d in reversed(self._tensors[gguf_name].shape.tolist()))

  def _map_names(self) -> dict[str, str]:
    mapping = {}
    for name in self._tensors:
      if name in _GLOBAL_NAMES:
        mapping[_GLOBAL_NAMES[name]] = name
      elif name == _ROPE_FREQS:
        continue
      else:
        m = _LAYER_RE.match(name)
        if not m or m.group(2) not in _LAYER_NAMES:
          raise GGUFError(f"{self.path!r}: unexpected tensor {name!r} for GGUF architecture "
                          f"{self.architecture!r} (the decoder has no such parameter); this "
                          f"reader knows {sorted(_GLOBAL_NAMES)} and "
                          f"blk.N.{{{', '.join(sorted(_LAYER_NAMES))}}}")
        mapping[f"model.layers.{int(m.group(1))}.{_LAYER_NAMES[m.group(2)]}"] = name
    return mapping

  def _build_config(self) -> dict[str, Any]:
    arch = self.architecture
    if "token_embd.weight" not in self._tensors:
      raise GGUFError(f"{self.path!r}: tensor 'token_embd.weight' is missing")
    vocab_size, hidden = self._shape("token_embd.weight")
    meta_hidden = self._meta("embedding_length", required=True)
    if meta_hidden != hidden:
      raise GGUFError(f"{self.path!r}: {arch}.embedding_length is {meta_hidden} but "
                      f"'token_embd.weight' has width {hidden}")
    meta_vocab = self._meta("vocab_size")
    if meta_vocab is not None and meta_vocab != vocab_size:
      raise GGUFError(f"{self.path!r}: {arch}.vocab_size is {meta_vocab} but "
                      f"'token_embd.weight' has {vocab_size} rows")
    tokens = self._reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens.data) > vocab_size:
      raise GGUFError(f"{self.path!r}: the tokenizer has {len(tokens.data)} tokens but "
                      f"'token_embd.weight' has only {vocab_size} rows")

    num_heads = self._meta("attention.head_count", required=True)
    num_kv_heads = self._meta("attention.head_count_kv", num_heads)
    for key, value in (("attention.head_count", num_heads),
                       ("attention.head_count_kv", num_kv_heads)):
      if not isinstance(value, int) or value <= 0:
        raise GGUFError(f"{self.path!r}: {arch}.{key} is {value!r}, expected a positive int "
                        "(per-layer head counts are not supported)")
    head_dim = self._meta("attention.key_length") or self._meta("rope.dimension_count")
    if head_dim is None:
      head_dim = hidden // num_heads
    rope_dim = self._meta("rope.dimension_count", head_dim)
    if rope_dim != head_dim:
      raise GGUFError(f"{self.path!r}: {arch}.rope.dimension_count is {rope_dim} but head_dim is "
                      f"{head_dim}; partial rotary embeddings are not supported")
    value_dim = self._meta("attention.value_length", head_dim)
    if value_dim != head_dim:
      raise GGUFError(f"{self.path!r}: {arch}.attention.value_length ({value_dim}) differs from "
                      f"attention.key_length ({head_dim}); not supported")

    rope_theta = float(self._meta("rope.freq_base", 10000.0))
    config: dict[str, Any] = {
        "architectures": [_HF_ARCHITECTURE[arch]],
        "model_type": arch,
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": self._meta("feed_forward_length", required=True),
        "num_hidden_layers": self._meta("block_count", required=True),
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(self._meta("attention.layer_norm_rms_epsilon", required=True)),
        "rope_theta": rope_theta,
        "max_position_embeddings": self._meta("context_length", required=True),
        "tie_word_embeddings": "output.weight" not in self._tensors,
    }
    if arch != "qwen2":  # Qwen2 always has q/k/v biases and no `attention_bias` flag.
      config["attention_bias"] = "blk.0.attn_q.bias" in self._tensors
    if arch == "llama":
      config["mlp_bias"] = False  # MLP bias tensors are rejected above: the decoder has none
    rope_scaling = self._rope_scaling(rope_theta, head_dim)
    if rope_scaling is not None:
      config["rope_scaling"] = rope_scaling
    for key, hf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                        ("padding_token_id", "pad_token_id")):
      value = self.metadata.get(f"tokenizer.ggml.{key}")
      if value is not None:
        config[hf_key] = value
    return config

  def _rope_scaling(self, rope_theta: float, head_dim: int) -> dict[str, Any] | None:
    kind = self._meta("rope.scaling.type", "none")
    if _ROPE_FREQS in self._tensors:
      if kind not in ("none", "llama3"):
        raise GGUFError(f"{self.path!r}: both {self.architecture}.rope.scaling.type={kind!r} and "
                        f"a {_ROPE_FREQS!r} tensor; not supported")
      factors = self._dequantize(_ROPE_FREQS)
      return _llama3_rope_scaling(self.path, factors, rope_theta, head_dim)
    if kind == "none":
      return None
    factor = self._meta("rope.scaling.factor")
    if factor is None:
      raise GGUFError(f"{self.path!r}: {self.architecture}.rope.scaling.type is {kind!r} but "
                      "rope.scaling.factor is missing")
    scaling: dict[str, Any] = {"rope_type": kind, "factor": float(factor)}
    original = self._meta("rope.scaling.original_context_length")
    if original is not None:
      scaling["original_max_position_embeddings"] = original
    return scaling

  # ---- tensors -------------------------------------------------------------

  def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
    """HF name -> HF shape of every tensor the decoder has under this file's config."""
    try:
      config = ModelConfig.from_hf(self.config)
    except ValueError as e:
      raise GGUFError(f"{self.path!r}: {e}") from e
    shapes = {}
    for tensor in schema.tensors(config):
      hf_shape = schema.hf_shape(tensor, config)
      shapes.update((name, hf_shape) for name in schema.hf_names(tensor, config))
    return shapes

  def _check_tensors(self) -> None:
    integer_types = {gguf.GGMLQuantizationType[t] for t in ("I8", "I16", "I32", "I64")}
    for name, tensor in self._tensors.items():
      if tensor.tensor_type in integer_types:
        raise GGUFError(f"{self.path!r}: tensor {name!r} has integer type "
                        f"{tensor.tensor_type.name}, expected a float or quantized type")
    expected = self._expected_shapes()
    for hf_name, shape in expected.items():
      gguf_name = self._hf_to_gguf.get(hf_name)
      if gguf_name is None:
        raise GGUFError(f"{self.path!r}: tensor {_gguf_name_of(hf_name)!r} ({hf_name}) is missing")
      if self._shape(gguf_name) != shape:
        raise GGUFError(f"{self.path!r}: tensor {gguf_name!r} ({hf_name}) has shape "
                        f"{list(self._shape(gguf_name))}, expected {list(shape)}")
    extra = sorted(set(self._hf_to_gguf) - set(expected))
    if extra:
      raise GGUFError(f"{self.path!r}: unexpected tensors for this configuration: "
                      f"{[self._hf_to_gguf[n] for n in extra][:8]}")
    self._names = list(expected)

  @property
  def tensor_names(self) -> list[str]:
    """HF names of the state dict, in a stable order."""
    return list(self._names)

  def _dequantize(self, gguf_name: str) -> np.ndarray:
    tensor = self._tensors[gguf_name]
    qtype = tensor.tensor_type
    try:
      if qtype == gguf.GGMLQuantizationType.F64:
        w = np.asarray(tensor.data, dtype=np.float32)
      else:
        w = gguf.quants.dequantize(tensor.data, qtype)
    except NotImplementedError as e:
      raise GGUFError(f"{self.path!r}: tensor {gguf_name!r} has type {qtype.name}, which the "
                      f"installed gguf package cannot dequantize ({e})") from e
    if np.may_share_memory(w, tensor.data) or w.dtype != np.float32:
      w = np.array(w, dtype=np.float32)  # copy out of the read-only memory map
    shape = self._shape(gguf_name)
    if w.shape != shape:
      raise GGUFError(f"{self.path!r}: tensor {gguf_name!r} dequantized to shape {list(w.shape)}, "
                      f"expected {list(shape)}")
    return w

  def tensor(self, hf_name: str) -> np.ndarray:
    """One tensor by HF name, float32 in HF layout (q/k rows un-permuted)."""
    gguf_name = self._hf_to_gguf.get(hf_name)
    if gguf_name is None or hf_name not in self._names:
      raise KeyError(f"{self.path!r} has no tensor {hf_name!r}; see .tensor_names")
    w = self._dequantize(gguf_name)
    if self.architecture == "llama":
      if ".attn_q." in gguf_name:
        w = _reverse_permute(w, self.config["num_attention_heads"])
      elif ".attn_k." in gguf_name:
        w = _reverse_permute(w, self.config["num_key_value_heads"])
    return np.ascontiguousarray(w)

  def iter_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
    """Yields `(hf_name, float32 array)` one tensor at a time."""
    for name in self._names:
      yield name, self.tensor(name)


def _gguf_name_of(hf_name: str) -> str:
  for gguf_name, name in _GLOBAL_NAMES.items():
    if name == hf_name:
      return gguf_name
  m = re.match(r"^model\.layers\.(\d+)\.(.+)$", hf_name)
  if m:
    for gguf_suffix, suffix in _LAYER_NAMES.items():
      if suffix == m.group(2):
        return f"blk.{m.group(1)}.{gguf_suffix}"
  return hf_name


def open_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
  """Opens a GGUF file: config and metadata now, tensors on demand."""
  return GGUFCheckpoint(path)


def read_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Reads a GGUF checkpoint into Hugging Face conventions.

  Args:
    path: a `.gguf` file with architecture llama, qwen2 or qwen3.

  Returns:
    `(config, state_dict)`: a HF `config.json`-style dict and a mapping from HF
    tensor names to float32 numpy arrays in torch layout `[out, in]`.
    `lm_head.weight` is present only when the embeddings are untied.

  Raises:
    FileNotFoundError: no such file.
    GGUFError: not a GGUF file, truncated, unsupported architecture or tensor
      type, missing or unexpected tensors.
  """
  ckpt = open_gguf(path)
  return dict(ckpt.config), dict(ckpt.iter_tensors())
