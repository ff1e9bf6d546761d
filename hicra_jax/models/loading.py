"""load_pretrained / save_pretrained: HF directories, Hub ids and GGUF files <-> Decoder."""

from __future__ import annotations

import os

from hicra_jax.models import partition, weights
from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder
from hicra_jax.models.gguf import read_gguf
from hicra_jax.models.paths import resolve_model


def load_pretrained(path: str | os.PathLike, *, dtype="float32", mesh=None,
                    **options) -> tuple[Decoder, ModelConfig]:
  """Load a HF model directory (config.json + safetensors), a Hub model id or a .gguf file.

  Args:
    path: a directory with config.json and model.safetensors (or a sharded
      index; a Qwen2.5-VL / MiMO-VL directory loads its vision tower too), a
      .gguf file (dequantized to `dtype`), "smollm2" (the packaged SmolLM2
      GGUF), or a Hugging Face Hub id "org/name" / "org/name@revision" when
      no local path of that name exists (from the Hub cache or, unless
      HF_HUB_OFFLINE is set, downloaded: models/paths.py `resolve_model`).
    dtype: parameter dtype, "float32" or "bfloat16".
    mesh: optional jax Mesh; each parameter is placed with its sharding
      (models/partition.py rules) as it is read.
    **options: Decoder options (compute_dtype, attention_impl, remat).
  Returns:
    (model, config).
  """
  path = resolve_model(path)
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


def save_pretrained(model: Decoder, config: ModelConfig, path: str | os.PathLike, *,
                    tokenizer=None, max_shard_size: int | str = weights.MAX_SHARD_SIZE) -> None:
  """Write a HF directory in the layout transformers writes, which downstream engines read.

  Args:
    model: the Decoder to export (its params' dtype is the files' dtype).
    config: its ModelConfig (-> config.json).
    path: the directory to write (created; earlier weight files in it are replaced).
    tokenizer: optional transformers tokenizer, written with its chat template
      (tokenizer.save_pretrained); its special tokens also go to generation_config.json.
    max_shard_size: the largest safetensors file, in bytes or as "5GB", "500MB", "2GiB".
      Weights that fit are one model.safetensors; more are model-0000i-of-0000n.safetensors
      with model.safetensors.index.json, as transformers writes them.
  """
  weights.save_pretrained(model, config, os.fspath(path), tokenizer=tokenizer,
                          max_shard_size=max_shard_size)
