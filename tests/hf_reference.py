"""Tiny random transformers (PyTorch) models: the independent reference for parity tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers

# name -> (architecture, config kwargs). Covers llama3 rope scaling, Qwen2 bias,
# Qwen3 q/k norm and head_dim != hidden / heads, tied and untied, GQA 1, 2, 4, 7.
TINY_CONFIGS = {
    "llama3_rope_gqa2_untied": ("llama", dict(
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=16))),
    "llama_mha_tied": ("llama", dict(
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)),
    "qwen2_bias_gqa4_tied": ("qwen2", dict(
        num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen2_bias_gqa7_untied": ("qwen2", dict(
        hidden_size=56, num_attention_heads=7, num_key_value_heads=1, tie_word_embeddings=False)),
    "qwen3_qknorm_gqa2_headdim": ("qwen3", dict(
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, tie_word_embeddings=False)),
    "qwen3_qknorm_gqa7_tied": ("qwen3", dict(
        hidden_size=56, num_attention_heads=7, num_key_value_heads=1, head_dim=16,
        tie_word_embeddings=True)),
}

_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
}


def make_hf_model(name: str, seed: int = 0, init_scale: float = 0.1):
  """A tiny float32 HF model with random weights large enough that logits are not flat."""
  family, kwargs = TINY_CONFIGS[name]
  config_cls, model_cls = _CLASSES[family]
  base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=init_scale,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
  base.update(kwargs)
  torch.manual_seed(seed)
  model = model_cls(config_cls(**base)).to(torch.float32).eval()
  with torch.no_grad():  # random norm weights too, so a transposed norm would be caught
    for name_, p in model.named_parameters():
      if name_.endswith("norm.weight") or name_.endswith("bias"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name_ else 0.1 * torch.randn_like(p))
  return model


def hf_logits(model, tokens: list[int]) -> np.ndarray:
  """f32[T, V] logits of one unpadded row."""
  with torch.no_grad():
    out = model(torch.tensor([tokens]), use_cache=False)
  return out.logits[0].float().numpy()


def pad_batch(rows: list[list[int]], side: str, pad_id: int = 0):
  """(tokens i32[N, T], mask bool[N, T]) padded on `side` ("left" or "right")."""
  t = max(len(r) for r in rows)
  tokens = np.full((len(rows), t), pad_id, np.int32)
  mask = np.zeros((len(rows), t), bool)
  for i, r in enumerate(rows):
    sl = slice(t - len(r), t) if side == "left" else slice(0, len(r))
    tokens[i, sl], mask[i, sl] = r, True
  return tokens, mask
