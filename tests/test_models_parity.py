"""Decoder parity with transformers' PyTorch models (tiny random configs, float32)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hicra_jax.models import ModelConfig, load_pretrained, save_pretrained
from hicra_jax.models.weights import to_hf_state_dict
from hf_reference import TINY_CONFIGS, hf_logits, make_hf_model, pad_batch

ROW_LENGTHS = (11, 3, 17, 8)


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def pair(request, tmp_path_factory):
  """(name, hf_model, our_model, our_config) loaded from the same saved directory."""
  hf = make_hf_model(request.param)
  path = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(path)
  model, config = load_pretrained(path)
  return request.param, hf, model, config


def _rows(vocab: int, seed: int = 0) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  return [rng.integers(3, vocab, size=n).tolist() for n in ROW_LENGTHS]


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_transformers_with_padding(pair, side):
  _, hf, model, config = pair
  rows = _rows(config.vocab_size)
  tokens, mask = pad_batch(rows, side)
  ours = np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)))
  for i, row in enumerate(rows):
    ref = hf_logits(hf, row)
    got = ours[i][mask[i]]
    tol = 1e-4 * np.abs(ref).max()
    np.testing.assert_array_less(np.abs(got - ref).max(), tol)
    assert np.abs(ref).max() > 1.0, "reference logits too flat to make the test meaningful"


def test_config_from_hf_matches_transformers(pair):
  name, hf, _, config = pair
  c = hf.config
  assert config.num_kv_heads == c.num_key_value_heads
  assert config.head_dim == getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)
  assert config.tie_embeddings == c.tie_word_embeddings
  assert config.qkv_bias == (TINY_CONFIGS[name][0] == "qwen2")
  assert config.qk_norm == (TINY_CONFIGS[name][0] == "qwen3")


def test_save_then_transformers_load(pair, tmp_path):
  _, hf, model, config = pair
  save_pretrained(model, config, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
  ours = to_hf_state_dict(model)
  theirs = reloaded.state_dict()
  for key, value in ours.items():
    np.testing.assert_array_equal(theirs[key].numpy(), value, err_msg=key)
  # Every tensor transformers holds is ours (tied lm_head aliases the embedding).
  for key in theirs:
    assert key in ours or (key == "lm_head.weight" and config.tie_embeddings), key
  row = _rows(config.vocab_size, seed=1)[0]
  ref = hf_logits(reloaded, row)
  got = np.asarray(model(jnp.asarray([row])))[0]
  assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_classic_and_v5_rope_spellings_agree():
  classic = dict(architectures=["LlamaForCausalLM"], vocab_size=10, hidden_size=8,
                 intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                 rope_theta=500000.0, rope_scaling=dict(
                     type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                     original_max_position_embeddings=8192))
  v5 = {k: v for k, v in classic.items() if k not in ("rope_theta", "rope_scaling")}
  v5["rope_parameters"] = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                               low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=8192)
  a, b = ModelConfig.from_hf(classic), ModelConfig.from_hf(v5)
  assert a == b
  assert a.rope_theta == 500000.0 and a.rope_dict["rope_type"] == "llama3"
  assert a.num_kv_heads == 2 and a.head_dim == 4
