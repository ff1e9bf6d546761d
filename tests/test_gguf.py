"""Tests for hicra_jax.models.gguf against transformers' own GGUF loader.

Small synthetic GGUF files are written the way llama.cpp's
`convert_hf_to_gguf.py` writes them (q/k row permutation for Llama, per-tensor
quantization, `rope_freqs` for Llama 3 RoPE scaling); the real SmolLM2-135M
Q4_1 file is checked in the slow test.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

import gguf
import torch
import transformers

from hicra_jax.models.gguf import GGUFError, open_gguf, read_gguf

Q = gguf.GGMLQuantizationType

_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

_TINY = {
    "llama": dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "qwen2": dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    # transformers' GGUF loader ignores qwen3.attention.key_length and uses
    # Qwen3Config's default head_dim=128, so the tiny model must use 128 too.
    "qwen3": dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=128),
}


# ---- a miniature llama.cpp converter -----------------------------------------


def _llamacpp_permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
  """`LlamaModel.permute` from llama.cpp's convert_hf_to_gguf.py."""
  if n_head_kv is not None and n_head != n_head_kv:
    n_head = n_head_kv
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _llamacpp_llama3_rope_freqs(theta, head_dim, factor, low, high, old):
  """The `rope_freqs` loop from llama.cpp's LlamaModel.generate_extra_tensors."""
  freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  low_wavelen, high_wavelen = old / low, old / high
  out = []
  for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < high_wavelen:
      out.append(1)
    elif wavelen > low_wavelen:
      out.append(factor)
    else:
      smooth = (old / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, dtype=np.float32)


def _gguf_name(hf_name: str) -> str:
  if hf_name in _GLOBAL:
    return _GLOBAL[hf_name]
  _, _, i, rest = hf_name.split(".", 3)
  module, suffix = rest.rsplit(".", 1)
  return f"blk.{i}.{_LAYER[module]}.{suffix}"


def _random_state_dict(arch: str, cfg: dict, *, tied: bool, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
  hd = cfg["head_dim"]
  q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

  def w(*shape):
    return rng.standard_normal(shape).astype(np.float32) * 0.1

  sd = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": 1 + w(d)}
  if not tied:
    sd["lm_head.weight"] = w(v, d)
  for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    sd.update({
        p + "input_layernorm.weight": 1 + w(d),
        p + "post_attention_layernorm.weight": 1 + w(d),
        p + "self_attn.q_proj.weight": w(q, d),
        p + "self_attn.k_proj.weight": w(kv, d),
        p + "self_attn.v_proj.weight": w(kv, d),
        p + "self_attn.o_proj.weight": w(d, q),
        p + "mlp.gate_proj.weight": w(f, d),
        p + "mlp.up_proj.weight": w(f, d),
        p + "mlp.down_proj.weight": w(d, f),
    })
    if arch == "qwen2":
      sd.update({p + "self_attn.q_proj.bias": w(q), p + "self_attn.k_proj.bias": w(kv),
                 p + "self_attn.v_proj.bias": w(kv)})
    if arch == "qwen3":
      sd.update({p + "self_attn.q_norm.weight": 1 + w(hd),
                 p + "self_attn.k_norm.weight": 1 + w(hd)})
  return sd


def _write_gguf(path, arch: str, cfg: dict, sd: dict, *, qtype=Q.F32, rope_freqs=None,
                extra_tensors=(), skip=(), meta=None) -> str:
  """Writes `sd` as llama.cpp would: names, q/k permutation, quantization."""
  path = os.fspath(path)
  writer = gguf.GGUFWriter(path, arch)
  writer.add_name(f"tiny-{arch}")
  writer.add_block_count(cfg["num_hidden_layers"])
  writer.add_context_length(256)
  writer.add_embedding_length(cfg["hidden_size"])
  writer.add_feed_forward_length(cfg["intermediate_size"])
  writer.add_head_count(cfg["num_attention_heads"])
  writer.add_head_count_kv(cfg["num_key_value_heads"])
  writer.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
  writer.add_layer_norm_rms_eps(1e-6)
  writer.add_rope_dimension_count(cfg["head_dim"])
  writer.add_key_length(cfg["head_dim"])
  writer.add_value_length(cfg["head_dim"])
  writer.add_vocab_size(cfg["vocab_size"])
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_chat_template("{{ messages }}")
  for key, value in (meta or {}).items():
    getattr(writer, key)(value)
  for hf_name, w in sd.items():
    name = _gguf_name(hf_name)
    if name in skip:
      continue
    if arch == "llama" and ".attn_q." in name:
      w = _llamacpp_permute(w, cfg["num_attention_heads"], cfg["num_attention_heads"])
    elif arch == "llama" and ".attn_k." in name:
      w = _llamacpp_permute(w, cfg["num_attention_heads"], cfg["num_key_value_heads"])
    if w.ndim == 2 and qtype != Q.F32:
      writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    else:
      writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
  if rope_freqs is not None:
    writer.add_tensor("rope_freqs.weight", rope_freqs)
  for name, data, raw_dtype in extra_tensors:
    writer.add_tensor(name, data, raw_dtype=raw_dtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def _transformers_load(path: str):
  return transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)


def _assert_matches_transformers(config: dict, sd: dict, model) -> None:
  theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  tied = config["tie_word_embeddings"]
  assert tied == model.config.tie_word_embeddings
  want_names = set(theirs) - ({"lm_head.weight"} if tied else set())
  assert set(sd) == want_names
  for name, value in sd.items():
    assert value.dtype == np.float32, name
    assert value.shape == theirs[name].shape, name
    if not np.array_equal(value, theirs[name]):  # fast path: they are normally identical
      np.testing.assert_allclose(value, theirs[name], rtol=0, atol=1e-6, err_msg=name)
  if tied:
    np.testing.assert_array_equal(sd["model.embed_tokens.weight"], theirs["lm_head.weight"])

  tc = model.config
  assert config["model_type"] == tc.model_type
  assert config["architectures"] == [type(model).__name__]
  for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads",
              "max_position_embeddings", "bos_token_id", "eos_token_id"):
    assert config[key] == getattr(tc, key), key
  # Qwen2Config has no head_dim attribute: it is hidden_size // num_attention_heads.
  tc_head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
  assert config["head_dim"] == tc_head_dim
  for key in ("attention_bias", "mlp_bias"):
    if key in config:
      assert config[key] == getattr(tc, key), key
  assert math.isclose(config["rms_norm_eps"], tc.rms_norm_eps, rel_tol=1e-6)
  assert math.isclose(config["rope_theta"], tc.rope_parameters["rope_theta"], rel_tol=1e-7)
  # Our dict is a valid config.json for the same class, with the same RoPE.
  rebuilt = type(tc)(**config)
  assert rebuilt.rope_parameters["rope_type"] == tc.rope_parameters["rope_type"]


# ---- synthetic files -----------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_llama_roundtrip_undoes_llamacpp_permutation_exactly(tmp_path, tied):
  cfg = _TINY["llama"]
  sd = _random_state_dict("llama", cfg, tied=tied)
  path = _write_gguf(tmp_path / "tiny.gguf", "llama", cfg, sd)
  config, got = read_gguf(path)
  assert set(got) == set(sd)
  for name in sd:
    np.testing.assert_array_equal(got[name], sd[name], err_msg=name)
  assert config["tie_word_embeddings"] is tied
  assert ("lm_head.weight" in got) is not tied
  for key, value in cfg.items():
    assert config[key] == value, key
  assert config["architectures"] == ["LlamaForCausalLM"]
  assert config["bos_token_id"] == 1 and config["eos_token_id"] == 2
  assert config["rms_norm_eps"] == 1e-6  # float32 metadata rounded to its shortest form
  assert "rope_scaling" not in config


@pytest.mark.parametrize("arch,qtype,tied", [
    ("llama", Q.Q8_0, False),
    ("llama", Q.Q4_1, True),
    ("qwen2", Q.Q8_0, True),
    ("qwen3", Q.F16, False),
])
def test_synthetic_matches_transformers(tmp_path, arch, qtype, tied):
  cfg = _TINY[arch]
  sd = _random_state_dict(arch, cfg, tied=tied, seed=1)
  path = _write_gguf(tmp_path / f"tiny-{arch}.gguf", arch, cfg, sd, qtype=qtype)
  config, got = read_gguf(path)
  _assert_matches_transformers(config, got, _transformers_load(path))
  if qtype == Q.F16:
    for name in sd:
      np.testing.assert_allclose(got[name], sd[name], atol=1e-3, err_msg=name)


def test_lazy_iterator_and_metadata(tmp_path):
  cfg = _TINY["llama"]
  sd = _random_state_dict("llama", cfg, tied=True)
  path = _write_gguf(tmp_path / "tiny.gguf", "llama", cfg, sd, qtype=Q.Q8_0)
  ckpt = open_gguf(path)
  assert ckpt.architecture == "llama"
  assert ckpt.chat_template == "{{ messages }}"
  assert ckpt.metadata["general.name"] == "tiny-llama"
  assert set(ckpt.tensor_names) == set(sd)
  _, eager = read_gguf(path)
  for name, value in ckpt.iter_tensors():
    assert value.flags.writeable and value.flags.c_contiguous
    np.testing.assert_array_equal(value, eager[name])
  with pytest.raises(KeyError, match="lm_head.weight"):
    ckpt.tensor("lm_head.weight")


@pytest.mark.parametrize("factor,low,high,old", [
    (32.0, 1.0, 4.0, 8192),   # Llama 3.2
    (8.0, 1.0, 4.0, 8192),    # Llama 3.1
    (16.0, 2.0, 8.0, 16384),  # unusual values: recovered up to the equivalent ratios
])
def test_llama3_rope_scaling_from_rope_freqs(tmp_path, factor, low, high, old):
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: PLC0415
  cfg = dict(_TINY["llama"], head_dim=64, hidden_size=128, intermediate_size=96,
             num_attention_heads=2, num_key_value_heads=1, rope_theta=500000.0)
  sd = _random_state_dict("llama", cfg, tied=True)
  freqs = _llamacpp_llama3_rope_freqs(cfg["rope_theta"], cfg["head_dim"], factor, low, high, old)
  path = _write_gguf(tmp_path / "l3.gguf", "llama", cfg, sd, rope_freqs=freqs)
  config, got = read_gguf(path)
  assert "rope_freqs.weight" not in got and "rope_freqs" not in str(sorted(got))
  scaling = config["rope_scaling"]
  assert scaling["rope_type"] == "llama3" and scaling["factor"] == factor
  if (low, high, old) == (1.0, 4.0, 8192):
    assert scaling == {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

  def inv_freq(rope_scaling):
    c = transformers.LlamaConfig(
        hidden_size=cfg["hidden_size"], num_attention_heads=2, head_dim=cfg["head_dim"],
        max_position_embeddings=131072, rope_theta=cfg["rope_theta"], rope_scaling=rope_scaling)
    return ROPE_INIT_FUNCTIONS["llama3"](c, "cpu")[0].numpy()

  want = inv_freq({"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                   "high_freq_factor": high, "original_max_position_embeddings": old})
  np.testing.assert_allclose(inv_freq(scaling), want, rtol=1e-5)


def test_linear_rope_scaling_metadata(tmp_path):
  cfg = _TINY["llama"]
  sd = _random_state_dict("llama", cfg, tied=True)
  path = _write_gguf(tmp_path / "lin.gguf", "llama", cfg, sd,
                     meta={"add_rope_scaling_type": gguf.RopeScalingType.LINEAR,
                           "add_rope_scaling_factor": 4.0})
  config, _ = read_gguf(path)
  assert config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}


# ---- errors ----------------------------------------------------------------------


def test_not_a_gguf_file(tmp_path):
  path = tmp_path / "config.json"
  path.write_text('{"model_type": "llama"}')
  with pytest.raises(GGUFError, match=r"config\.json.*not a GGUF file"):
    read_gguf(path)
  empty = tmp_path / "empty.gguf"
  empty.write_bytes(b"")
  with pytest.raises(GGUFError, match="empty.gguf.*not a GGUF file"):
    read_gguf(empty)
  with pytest.raises(FileNotFoundError, match="nope.gguf"):
    read_gguf(tmp_path / "nope.gguf")


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.001])
def test_truncated_file(tmp_path, keep):
  cfg = _TINY["llama"]
  path = _write_gguf(tmp_path / "full.gguf", "llama", cfg,
                     _random_state_dict("llama", cfg, tied=True), qtype=Q.Q8_0)
  data = open(path, "rb").read()
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(data[:max(8, int(len(data) * keep))])
  with pytest.raises(GGUFError, match="cut.gguf.*(truncated|not a readable)"):
    read_gguf(cut)


def test_unsupported_architecture(tmp_path):
  path = os.fspath(tmp_path / "gpt2.gguf")
  writer = gguf.GGUFWriter(path, "gpt2")
  writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(GGUFError, match=r"gpt2\.gguf.*'gpt2' is not supported.*llama.*qwen2.*qwen3"):
    read_gguf(path)


def test_missing_tensor(tmp_path):
  cfg = _TINY["llama"]
  path = _write_gguf(tmp_path / "m.gguf", "llama", cfg, _random_state_dict("llama", cfg, tied=True),
                     skip={"blk.1.ffn_up.weight"})
  with pytest.raises(GGUFError, match=r"m\.gguf.*'blk\.1\.ffn_up\.weight'.*missing"):
    read_gguf(path)


def test_unexpected_tensor(tmp_path):
  cfg = _TINY["llama"]
  extra = ("blk.0.ffn_gate_exps.weight", np.zeros((2, 4), np.float32), None)
  path = _write_gguf(tmp_path / "x.gguf", "llama", cfg, _random_state_dict("llama", cfg, tied=True),
                     extra_tensors=[extra])
  with pytest.raises(GGUFError, match=r"x\.gguf.*unexpected tensor 'blk\.0\.ffn_gate_exps"):
    read_gguf(path)


@pytest.mark.parametrize("bias", ["blk.0.attn_output.bias", "blk.0.ffn_gate.bias"])
def test_tensor_without_a_decoder_parameter_is_rejected(tmp_path, bias):
  """Output-projection and MLP biases: the decoder has no such parameter (schema table)."""
  cfg = _TINY["llama"]
  extra = (bias, np.zeros(cfg["hidden_size"], np.float32), None)
  path = _write_gguf(tmp_path / "b.gguf", "llama", cfg, _random_state_dict("llama", cfg, tied=True),
                     extra_tensors=[extra])
  with pytest.raises(GGUFError, match=rf"b\.gguf.*unexpected tensor '{re.escape(bias)}'"):
    read_gguf(path)


def test_wrong_shape(tmp_path):
  cfg = _TINY["llama"]
  sd = _random_state_dict("llama", cfg, tied=True)
  sd["model.layers.0.mlp.down_proj.weight"] = sd["model.layers.0.mlp.down_proj.weight"][:, :32]
  path = _write_gguf(tmp_path / "s.gguf", "llama", cfg, sd)
  with pytest.raises(GGUFError, match=r"s\.gguf.*'blk\.0\.ffn_down\.weight'.*\[64, 32\].*\[64, 96"):
    read_gguf(path)


def test_unsupported_tensor_types(tmp_path):
  cfg = _TINY["llama"]
  sd = _random_state_dict("llama", cfg, tied=True)
  norm = sd.pop("model.norm.weight")
  path = _write_gguf(tmp_path / "i.gguf", "llama", cfg, sd,
                     extra_tensors=[("output_norm.weight", norm.astype(np.int32), None)])
  with pytest.raises(GGUFError, match=r"i\.gguf.*'output_norm\.weight'.*I32"):
    read_gguf(path)
  # A block type that gguf-py cannot dequantize (Q8_1): the error names the tensor.
  block_size, type_size = gguf.GGML_QUANT_SIZES[Q.Q8_1]
  nbytes = 64 // block_size * type_size  # the 64 values of the norm
  path = _write_gguf(tmp_path / "q.gguf", "llama", cfg, sd,
                     extra_tensors=[("output_norm.weight", np.zeros(nbytes, np.uint8), Q.Q8_1)])
  ckpt = open_gguf(path)
  with pytest.raises(GGUFError, match=r"q\.gguf.*'output_norm\.weight'.*Q8_1"):
    ckpt.tensor("model.norm.weight")


# ---- the real SmolLM2-135M Q4_1 file ---------------------------------------------


@pytest.mark.slow
def test_smollm2_matches_transformers(smollm2_path, smollm2_transformers):
  ckpt = open_gguf(smollm2_path)  # read_gguf(path) is (ckpt.config, dict(ckpt.iter_tensors()))
  config, sd = ckpt.config, dict(ckpt.iter_tensors())
  _assert_matches_transformers(config, sd, smollm2_transformers)
  assert config["architectures"] == ["LlamaForCausalLM"]
  assert config["tie_word_embeddings"] is True and "lm_head.weight" not in sd
  assert len(sd) == 2 + 9 * 30
  assert config["rms_norm_eps"] == 1e-5
  assert ckpt.chat_template and "<|im_start|>" in ckpt.chat_template
