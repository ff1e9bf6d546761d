"""Hugging Face weights in and out, through the schema table (models/schema.py).

Each schema row names one of our parameters' HF tensor and the layout
transform between them; loading and saving both read the table, so they
cannot drift apart.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from hicra_jax.models import schema
from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder, resolve_dtype


class WeightError(ValueError):
  """A weight file or tensor does not match what the model expects."""


# ---- reading -----------------------------------------------------------------


class SafetensorsSource:
  """Lazy tensor reader over a HF directory (model.safetensors or a sharded index)."""

  def __init__(self, directory: str):
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


def _read(source, tensor: schema.Tensor, config: ModelConfig, dtype) -> np.ndarray:
  """Our full array of `tensor` (per-layer tensors stacked on [L]) from its HF tensor(s)."""
  to_ours = schema.HF_LAYOUTS[tensor.layout][0]
  ours, expected = schema.stored_shape(tensor, config), schema.hf_shape(tensor, config)
  out = np.empty(schema.shape(tensor, config), dtype)
  for i, name in enumerate(schema.hf_names(tensor, config)):
    hf = source.get(name)
    if tuple(hf.shape) != expected:
      raise WeightError(f"tensor {name!r} has shape {tuple(hf.shape)}, expected {expected}")
    value = to_ours(np.asarray(hf), ours).astype(dtype)
    if tensor.per_layer:
      out[i] = value
    else:
      out[...] = value
  return out


def load_params(source, config: ModelConfig, *, dtype="float32", shardings=None) -> dict:
  """{our name: jax.Array} from a tensor source, cast to `dtype`, placed with `shardings`."""
  np_dtype = np.dtype(resolve_dtype(dtype))
  params = {}
  for tensor in schema.tensors(config):
    value = _read(source, tensor, config, np_dtype)
    sharding = shardings.get(tensor.name) if shardings else None
    params[tensor.name] = (jax.device_put(value, sharding) if sharding
                           else jax.numpy.asarray(value))
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
  for tensor in schema.tensors(config):
    to_hf = schema.HF_LAYOUTS[tensor.layout][1]
    value = np.asarray(jax.device_get(params[tensor.name]))
    per_layer = value if tensor.per_layer else value[None]
    for name, layer_value in zip(schema.hf_names(tensor, config), per_layer):
      out[name] = np.ascontiguousarray(to_hf(layer_value))
  return out


def save_pretrained(model: Decoder, config: ModelConfig, path: str) -> None:
  """Write config.json + model.safetensors that transformers' from_pretrained loads."""
  os.makedirs(path, exist_ok=True)
  tensors = to_hf_state_dict(model)
  hf_config = config.to_hf()
  dtype = next(iter(tensors.values())).dtype
  hf_config["torch_dtype"] = "bfloat16" if dtype == ml_dtypes.bfloat16 else "float32"
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
