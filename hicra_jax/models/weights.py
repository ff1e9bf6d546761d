"""Hugging Face weights in and out, through one declarative name table.

Each row of `WEIGHT_TABLE` maps one of our parameters to an HF tensor name and
names the layout transform between them; loading and saving both read the
table, so they cannot drift apart.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable, NamedTuple

import jax
import numpy as np
from flax import nnx

from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder, param_shapes, resolve_dtype


class WeightError(ValueError):
  """A weight file or tensor does not match what the model expects."""


class Row(NamedTuple):
  ours: str       # our parameter name ("layers.x" rows are per layer, stacked on [L])
  hf: str         # HF name; "{i}" is the layer index
  layout: str     # a key of LAYOUTS
  when: str = ""  # ModelConfig flag that must be true ("!flag": must be false)


WEIGHT_TABLE = (
    Row("embed", "model.embed_tokens.weight", "same"),
    Row("final_norm", "model.norm.weight", "same"),
    Row("lm_head", "lm_head.weight", "linear", "!tie_embeddings"),
    Row("layers.attn_norm", "model.layers.{i}.input_layernorm.weight", "same"),
    Row("layers.mlp_norm", "model.layers.{i}.post_attention_layernorm.weight", "same"),
    Row("layers.wq", "model.layers.{i}.self_attn.q_proj.weight", "heads_in"),
    Row("layers.wk", "model.layers.{i}.self_attn.k_proj.weight", "heads_in"),
    Row("layers.wv", "model.layers.{i}.self_attn.v_proj.weight", "heads_in"),
    Row("layers.wo", "model.layers.{i}.self_attn.o_proj.weight", "heads_out"),
    Row("layers.bq", "model.layers.{i}.self_attn.q_proj.bias", "heads_bias", "qkv_bias"),
    Row("layers.bk", "model.layers.{i}.self_attn.k_proj.bias", "heads_bias", "qkv_bias"),
    Row("layers.bv", "model.layers.{i}.self_attn.v_proj.bias", "heads_bias", "qkv_bias"),
    Row("layers.q_norm", "model.layers.{i}.self_attn.q_norm.weight", "same", "qk_norm"),
    Row("layers.k_norm", "model.layers.{i}.self_attn.k_norm.weight", "same", "qk_norm"),
    Row("layers.w_gate", "model.layers.{i}.mlp.gate_proj.weight", "linear"),
    Row("layers.w_up", "model.layers.{i}.mlp.up_proj.weight", "linear"),
    Row("layers.w_down", "model.layers.{i}.mlp.down_proj.weight", "linear"),
)

# layout -> (HF -> ours, ours -> HF), given our per-layer shape.
LAYOUTS: dict[str, tuple[Callable, Callable]] = {
    "same": (lambda x, s: x, lambda x: x),
    "linear": (lambda x, s: x.T, lambda x: x.T),                       # [out, in] <-> [in, out]
    "heads_in": (lambda x, s: x.T.reshape(s), lambda x: x.reshape(x.shape[0], -1).T),
    "heads_out": (lambda x, s: x.T.reshape(s), lambda x: x.reshape(-1, x.shape[-1]).T),
    "heads_bias": (lambda x, s: x.reshape(s), lambda x: x.reshape(-1)),
}


def active_rows(config: ModelConfig) -> list[Row]:
  def on(row: Row) -> bool:
    if not row.when:
      return True
    flag = row.when.lstrip("!")
    return bool(getattr(config, flag)) != row.when.startswith("!")
  return [r for r in WEIGHT_TABLE if on(r)]


def hf_shape(layout: str, our_shape: tuple[int, ...]) -> tuple[int, ...]:
  return LAYOUTS[layout][1](np.empty(our_shape, np.uint8)).shape


# ---- reading -----------------------------------------------------------------


class SafetensorsSource:
  """Lazy tensor reader over a HF directory (model.safetensors or a sharded index)."""

  def __init__(self, directory: str):
    from safetensors import safe_open
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    elif os.path.isfile(single):
      files, weight_map = ["model.safetensors"], None
    else:
      raise FileNotFoundError(
          f"no model.safetensors or model.safetensors.index.json in {directory!r}")
    self._handles, self._where = {}, {}
    for name in files:
      path = os.path.join(directory, name)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors shard {path!r} listed in the index is missing")
      try:
        handle = safe_open(path, framework="numpy")
      except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightError(f"cannot read safetensors file {path!r}: {e}") from e
      self._handles[path] = handle
      for key in handle.keys():
        self._where[key] = path

  def keys(self) -> Iterable[str]:
    return self._where.keys()

  def get(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise WeightError(f"tensor {name!r} is missing from the checkpoint")
    path = self._where[name]
    try:
      return self._handles[path].get_tensor(name)
    except Exception as e:
      raise WeightError(f"cannot read tensor {name!r} from {path!r}: {e}") from e


class DictSource:
  """Tensor reader over an in-memory {HF name: array} dict (e.g. a dequantized GGUF)."""

  def __init__(self, tensors: dict[str, np.ndarray], origin: str):
    self._tensors, self._origin = tensors, origin

  def keys(self):
    return self._tensors.keys()

  def get(self, name: str) -> np.ndarray:
    if name not in self._tensors:
      raise WeightError(f"tensor {name!r} is missing from {self._origin!r}")
    return self._tensors[name]


def _read(source, row: Row, config: ModelConfig, shape: tuple[int, ...], dtype) -> np.ndarray:
  to_ours = LAYOUTS[row.layout][0]
  per_layer = shape[1:] if row.ours.startswith("layers.") else shape
  names = ([row.hf.format(i=i) for i in range(config.num_layers)]
           if row.ours.startswith("layers.") else [row.hf])
  out = np.empty(shape, dtype)
  for i, name in enumerate(names):
    tensor = source.get(name)
    expected = hf_shape(row.layout, per_layer)
    if tuple(tensor.shape) != expected:
      raise WeightError(f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {expected}")
    value = to_ours(np.asarray(tensor), per_layer).astype(dtype)
    if len(names) > 1:
      out[i] = value
    else:
      out[...] = value
  return out


def load_params(source, config: ModelConfig, *, dtype="float32", shardings=None) -> dict:
  """{our name: jax.Array} from a tensor source, cast to `dtype`, placed with `shardings`."""
  np_dtype = np.dtype(resolve_dtype(dtype))
  shapes = param_shapes(config)
  params = {}
  for row in active_rows(config):
    value = _read(source, row, config, shapes[row.ours], np_dtype)
    sharding = shardings.get(row.ours) if shardings else None
    params[row.ours] = jax.device_put(value, sharding) if sharding else jax.numpy.asarray(value)
  return params


def build_model(config: ModelConfig, params: dict, **options) -> Decoder:
  """A Decoder holding `params` (flat 'a.b' names) without allocating random weights."""
  abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0), **options))
  graphdef, state = nnx.split(abstract)
  return nnx.merge(graphdef, with_params(state, params))


def with_params(state: nnx.State, params: dict) -> nnx.State:
  """`state` with the flat 'a.b' entries of `params` replaced (shapes checked)."""
  pure = nnx.to_pure_dict(state)
  for name, value in params.items():
    node = pure
    *parents, leaf = name.split(".")
    for p in parents:
      node = node[p]
    if tuple(node[leaf].shape) != tuple(value.shape):
      raise WeightError(f"parameter {name!r} has shape {value.shape}, expected {node[leaf].shape}")
    node[leaf] = value
  nnx.replace_by_pure_dict(state, pure)
  return state


def flat_params(model: Decoder) -> dict[str, jax.Array]:
  """{'a.b': array} of every parameter of `model`."""
  out = {}
  def walk(prefix, node):
    for k, v in node.items():
      name = f"{prefix}{k}"
      if isinstance(v, dict):
        walk(name + ".", v)
      else:
        out[name] = v
  walk("", nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return out


# ---- writing -----------------------------------------------------------------


def to_hf_state_dict(model: Decoder) -> dict[str, np.ndarray]:
  """{HF name: numpy array} in HF layouts, in the params' own dtype."""
  config = model.config
  params = flat_params(model)
  out = {}
  for row in active_rows(config):
    to_hf = LAYOUTS[row.layout][1]
    value = np.asarray(jax.device_get(params[row.ours]))
    if row.ours.startswith("layers."):
      for i in range(config.num_layers):
        out[row.hf.format(i=i)] = np.ascontiguousarray(to_hf(value[i]))
    else:
      out[row.hf] = np.ascontiguousarray(to_hf(value))
  return out


def save_pretrained(model: Decoder, config: ModelConfig, path: str) -> None:
  """Write config.json + model.safetensors that transformers' from_pretrained loads."""
  import ml_dtypes
  from safetensors.numpy import save_file
  os.makedirs(path, exist_ok=True)
  tensors = to_hf_state_dict(model)
  hf_config = config.to_hf()
  dtype = next(iter(tensors.values())).dtype
  hf_config["torch_dtype"] = "bfloat16" if dtype == ml_dtypes.bfloat16 else "float32"
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
