"""Hugging Face weights in and out, through the schema table (models/schema.py).

Each schema row names one of our parameters' HF tensor and the layout
transform between them; loading and saving both read the table, so they
cannot drift apart.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import tempfile
from typing import Any, Iterable, Iterator

import jax
import ml_dtypes
import numpy as np
from etils import epath
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from hicra_jax import config as config_lib
from hicra_jax import multihost
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


# Qwen2.5-VL: the published checkpoints' names (ours, `visual.*`, `model.*`) and the
# spelling of transformers 5's module tree (`model.visual.*`, `model.language_model.*`).
_VL_ALIASES = (("visual.", "model.visual."), ("model.", "model.language_model."))


class AliasSource:
  """A tensor source that also finds each name under its transformers 5 spelling."""

  def __init__(self, source):
    self._source = source
    self._keys = set(source.keys())

  def keys(self):
    return self._source.keys()

  def get(self, name: str) -> np.ndarray:
    if name not in self._keys:
      for ours, theirs in _VL_ALIASES:
        if name.startswith(ours) and (alias := theirs + name[len(ours):]) in self._keys:
          return self._source.get(alias)
    return self._source.get(name)


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
  if config.is_multimodal:
    source = AliasSource(source)
  params = {}
  for tensor in schema.tensors(config):
    value = _read(source, tensor, config, np_dtype)
    sharding = shardings.get(tensor.name) if shardings else None
    params[tensor.name] = multihost.put(value, sharding)  # each device takes its slice
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


MAX_SHARD_SIZE = "5GB"  # transformers' default
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
_SHARD_FILE = "model-{i:05d}-of-{n:05d}.safetensors"
_WEIGHT_FILE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?")
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
  """Bytes in `size`: an int, or a string such as "5GB" (5 * 10**9), "2GiB" (2 * 2**30), "100"."""
  value = None
  if isinstance(size, int) and not isinstance(size, bool):
    value = size
  elif isinstance(size, str) and (match := _SIZE.fullmatch(size)):
    value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()])
  if value is None or value <= 0:
    raise ValueError(f"max_shard_size {size!r}: expected a positive number of bytes or a "
                     f"string such as '5GB', '500MB' or '2GiB'")
  return value


def _hf_tensors(model: Decoder) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, numpy array in its HF layout and the param's dtype), in schema order.

  One parameter is on the host at a time (per-layer params: all layers of one kind),
  so a writer that consumes this lazily never holds the whole model twice.
  """
  config = model.config
  params = flat_params(model)
  for tensor in schema.tensors(config):
    to_hf = schema.HF_LAYOUTS[tensor.layout][1]
    value = multihost.to_host(params[tensor.name])  # every process takes part
    per_layer = value if tensor.per_layer else value[None]
    for name, layer_value in zip(schema.hf_names(tensor, config), per_layer):
      yield name, np.ascontiguousarray(to_hf(layer_value))


def _hf_sizes(model: Decoder) -> list[tuple[str, int]]:
  """(HF name, bytes) of every HF tensor, in `_hf_tensors` order, without reading a value."""
  config = model.config
  params = flat_params(model)
  return [(name, math.prod(schema.hf_shape(tensor, config)) * params[tensor.name].dtype.itemsize)
          for tensor in schema.tensors(config) for name in schema.hf_names(tensor, config)]


def plan_shards(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
  """Names grouped, in order, into shards of at most `max_bytes` (as transformers does).

  A new shard starts when the next tensor would overflow the current one; a tensor larger
  than `max_bytes` gets a shard of its own.
  """
  shards: list[list[str]] = [[]]
  used = 0
  for name, nbytes in sizes:
    if shards[-1] and used + nbytes > max_bytes:
      shards.append([])
      used = 0
    shards[-1].append(name)
    used += nbytes
  return shards


def to_hf_state_dict(model: Decoder) -> dict[str, np.ndarray]:
  """{HF name: numpy array} in HF layouts, in the params' own dtype."""
  return dict(_hf_tensors(model))


def generation_config(config: ModelConfig, tokenizer=None) -> dict[str, Any]:
  """generation_config.json's special token ids, from the model config and the tokenizer.

  eos_token_id lists the config's end token(s) and the tokenizer's (an instruct model's
  end-of-turn token): engines stop generating on any of them.
  """
  eos = list(config.eos_token_id) if isinstance(config.eos_token_id, tuple) else (
      [] if config.eos_token_id is None else [config.eos_token_id])
  tok_eos = getattr(tokenizer, "eos_token_id", None)
  if tok_eos is not None and tok_eos not in eos:
    eos.append(tok_eos)
  out: dict[str, Any] = {}
  bos = config.bos_token_id if config.bos_token_id is not None else getattr(
      tokenizer, "bos_token_id", None)
  if bos is not None:
    out["bos_token_id"] = int(bos)
  if eos:
    out["eos_token_id"] = int(eos[0]) if len(eos) == 1 else [int(e) for e in eos]
  pad = getattr(tokenizer, "pad_token_id", None)
  if pad is not None:
    out["pad_token_id"] = int(pad)
  return out


def _upload(local_dir: str, dest: epath.Path) -> None:
  """Moves every file under the local `local_dir` to the same place under `dest`
  (copied through epath, then deleted locally), subdirectories included."""
  for root, _, names in os.walk(local_dir):
    relative = os.path.relpath(root, local_dir)
    target = dest if relative == os.curdir else dest / relative
    if names:
      target.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
      source = os.path.join(root, name)
      epath.Path(source).copy(target / name, overwrite=True)
      os.remove(source)


def save_pretrained(model: Decoder, config: ModelConfig, path: str | os.PathLike, *,
                    tokenizer=None, max_shard_size: int | str = MAX_SHARD_SIZE) -> None:
  """Write a HF directory in the layout transformers writes (vLLM, SGLang and others read it).

  config.json; model.safetensors, or model-0000i-of-0000n.safetensors shards of at most
  `max_shard_size` with model.safetensors.index.json; generation_config.json; and, given a
  `tokenizer`, its files with the chat template (tokenizer.save_pretrained). Weight files
  of an earlier export in `path` that this one does not write are removed, so a reader
  never mixes the two.

  `path` is local (`~` expanded) or any etils.epath directory such as gs://bucket/run/policy.
  safetensors and tokenizers write only local files, so for a non-local `path` the files
  are written into a local temporary directory and copied up through epath, each shard as
  soon as it is written (one shard on local disk at a time); the bytes are the same.

  With several processes every process calls this (each tensor is gathered
  from all of them) and process 0 writes.
  """
  if not multihost.is_main():
    for _ in _hf_tensors(model):  # the other processes' part of each gather
      pass
    return
  max_bytes = parse_size(max_shard_size)
  sizes = _hf_sizes(model)
  shards = plan_shards(sizes, max_bytes)
  files = ([SINGLE_FILE] if len(shards) == 1
           else [_SHARD_FILE.format(i=i + 1, n=len(shards)) for i in range(len(shards))])
  dest = config_lib.as_epath(path)
  dest.mkdir(parents=True, exist_ok=True)
  keep = set(files) | ({INDEX_FILE} if len(shards) > 1 else set())
  for child in dest.iterdir():
    if _WEIGHT_FILE.fullmatch(child.name) and child.name not in keep:
      child.unlink()
  local = config_lib.is_local_path(dest)
  with (contextlib.nullcontext(os.fspath(dest)) if local
        else tempfile.TemporaryDirectory(prefix="hicra_export_")) as out:
    publish = (lambda: None) if local else functools.partial(_upload, out, dest)
    _write_hf_files(model, config, out, publish, shards=shards, files=files, sizes=sizes,
                    tokenizer=tokenizer)
    publish()


def _write_hf_files(model: Decoder, config: ModelConfig, out: str, publish, *,
                    shards: list[list[str]], files: list[str], sizes: list[tuple[str, int]],
                    tokenizer) -> None:
  """save_pretrained's files, into the local directory `out`; publish() after each shard."""
  tensors = _hf_tensors(model)  # lazily: one shard's arrays on the host at a time
  weight_map, dtypes = {}, set()
  for shard, file in zip(shards, files):
    arrays = dict(next(tensors) for _ in shard)
    assert list(arrays) == shard  # the plan and the tensors walk the same schema order
    dtypes.update(a.dtype for a in arrays.values())
    save_file(arrays, os.path.join(out, file), metadata={"format": "pt"})
    del arrays
    publish()
    weight_map.update(dict.fromkeys(shard, file))
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(nbytes for _, nbytes in sizes)},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out, INDEX_FILE), "w") as f:
      json.dump(index, f, indent=2)
  hf_config = config.to_hf()
  hf_config["torch_dtype"] = ("bfloat16" if np.dtype(ml_dtypes.bfloat16) in dtypes
                              else "float32")
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  generation = generation_config(config, tokenizer)
  if generation:
    with open(os.path.join(out, GENERATION_CONFIG_FILE), "w") as f:
      json.dump(generation, f, indent=2)
  if tokenizer is not None:
    tokenizer.save_pretrained(out)
