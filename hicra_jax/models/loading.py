"""load_pretrained / save_pretrained: HF directories and GGUF files -> Decoder."""

from __future__ import annotations

import os

from hicra_jax.models import partition, weights
from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder
from hicra_jax.models.gguf import read_gguf


def load_pretrained(path: str | os.PathLike, *, dtype="float32", mesh=None,
                    **options) -> tuple[Decoder, ModelConfig]:
  """Load a HF model directory (config.json + safetensors) or a .gguf file.

  Args:
    path: a directory with config.json and model.safetensors (or a sharded
      index), or a .gguf file (dequantized to `dtype`).
    dtype: parameter dtype, "float32" or "bfloat16".
    mesh: optional jax Mesh; each parameter is placed with its sharding
      (models/partition.py rules) as it is read.
    **options: Decoder options (compute_dtype, attention_impl, remat).
  Returns:
    (model, config).
  """
  path = os.fspath(path)
  if path.endswith(".gguf"):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"GGUF file {path!r} does not exist")
    hf_config, tensors = read_gguf(path)
    config = ModelConfig.from_hf(hf_config)
    source = weights.DictSource(tensors, path)
  elif os.path.isdir(path):
    config = ModelConfig.from_hf(path)
    source = weights.SafetensorsSource(path)
  else:
    raise FileNotFoundError(
        f"model path {path!r} is neither a Hugging Face model directory nor a .gguf file")
  shardings = None if mesh is None else partition.param_shardings(config, mesh)
  params = weights.load_params(source, config, dtype=dtype, shardings=shardings)
  model = weights.build_model(config, params, param_dtype=dtype, mesh=mesh, **options)
  return model, config


def save_pretrained(model: Decoder, config: ModelConfig, path: str | os.PathLike) -> None:
  """Write a HF directory (config.json + model.safetensors) that transformers loads."""
  weights.save_pretrained(model, config, os.fspath(path))
