"""Bad inputs to the model loaders: each a clear error naming the file/tensor and shapes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hicra_jax.models import ModelConfig, WeightError, load_pretrained
from hf_reference import make_hf_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  path = tmp_path_factory.mktemp("good")
  make_hf_model("qwen2_bias_gqa4_tied").save_pretrained(path)
  return path


def _copy(src, dst, *, config_edit=None, tensors_edit=None):
  os.makedirs(dst, exist_ok=True)
  config = json.load(open(os.path.join(src, "config.json")))
  if config_edit:
    config_edit(config)
  json.dump(config, open(os.path.join(dst, "config.json"), "w"))
  tensors = load_file(os.path.join(src, "model.safetensors"))
  if tensors_edit:
    tensors_edit(tensors)
  save_file(tensors, os.path.join(dst, "model.safetensors"))
  return dst


def test_unsupported_architecture_lists_supported(saved, tmp_path):
  def edit(c):
    c["architectures"], c["model_type"] = ["MistralForCausalLM"], "mistral"
  path = _copy(saved, tmp_path / "m", config_edit=edit)
  with pytest.raises(ValueError, match=r"MistralForCausalLM.*LlamaForCausalLM.*Qwen2ForCausalLM"):
    load_pretrained(path)


def test_unsupported_rope_type(saved, tmp_path):
  def edit(c):
    c["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}
  with pytest.raises(ValueError, match=r"'yarn'.*llama3"):
    load_pretrained(_copy(saved, tmp_path / "m", config_edit=edit))


def test_missing_safetensors(saved, tmp_path):
  path = tmp_path / "m"
  _copy(saved, path)
  os.remove(path / "model.safetensors")
  with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
    load_pretrained(path)


def test_missing_shard_listed_in_index(saved, tmp_path):
  path = tmp_path / "m"
  _copy(saved, path)
  os.rename(path / "model.safetensors", path / "model-00001-of-00002.safetensors")
  tensors = load_file(path / "model-00001-of-00002.safetensors")
  index = {"weight_map": {k: "model-00001-of-00002.safetensors" for k in tensors}}
  index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
  json.dump(index, open(path / "model.safetensors.index.json", "w"))
  with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002\.safetensors"):
    load_pretrained(path)


def test_corrupt_safetensors(saved, tmp_path):
  path = tmp_path / "m"
  _copy(saved, path)
  with open(path / "model.safetensors", "r+b") as f:
    f.write(b"\xff" * 64)  # clobber the header
  with pytest.raises(WeightError, match=r"model\.safetensors"):
    load_pretrained(path)


def test_wrong_shape_names_tensor_and_both_shapes(saved, tmp_path):
  def edit(t):
    t["model.layers.1.mlp.up_proj.weight"] = np.zeros((95, 64), np.float32)
  path = _copy(saved, tmp_path / "m", tensors_edit=edit)
  with pytest.raises(WeightError,
                     match=r"'model\.layers\.1\.mlp\.up_proj\.weight'.*\(95, 64\).*\(96, 64\)"):
    load_pretrained(path)


def test_missing_tensor_is_named(saved, tmp_path):
  def edit(t):
    del t["model.layers.0.self_attn.k_proj.bias"]
  path = _copy(saved, tmp_path / "m", tensors_edit=edit)
  with pytest.raises(WeightError, match=r"'model\.layers\.0\.self_attn\.k_proj\.bias'.*missing"):
    load_pretrained(path)


def test_unknown_dtype(saved):
  with pytest.raises(ValueError, match=r"'float16'.*bfloat16.*float32"):
    load_pretrained(saved, dtype="float16")


def test_missing_path_and_not_a_model(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    load_pretrained(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_pretrained(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"x\.gguf"):
    load_pretrained(tmp_path / "x.gguf")


def test_bad_model_config_values():
  with pytest.raises(ValueError, match="num_kv_heads"):
    ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=3,
                num_kv_heads=2, head_dim=4)
  with pytest.raises(ValueError, match="hidden_size"):
    ModelConfig(vocab_size=8, hidden_size=0, intermediate_size=8, num_layers=1, num_heads=2,
                num_kv_heads=2, head_dim=4)
