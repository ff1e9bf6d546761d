"""save_pretrained: sharded safetensors + index, tokenizer with its chat template and
generation_config.json, loaded back by transformers (the reference) from local files only."""

from __future__ import annotations

import dataclasses
import json
import os
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hicra_jax import assets
from hicra_jax.models import load_pretrained, load_tokenizer, save_pretrained
from hicra_jax.models.weights import generation_config, parse_size, to_hf_state_dict
from hf_reference import hf_logits, make_hf_model

ROW = [5, 17, 3, 99, 42, 8, 120]
SHARD_BYTES = 40_000  # the tiny model holds ~200 kB of float32 weights: several shards


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
  """(model, config) of a tiny random untied Llama 3 model, loaded from transformers' save."""
  path = tmp_path_factory.mktemp("source")
  make_hf_model("llama3_rope_gqa2_untied", seed=3).save_pretrained(path)
  return load_pretrained(path)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
  return load_tokenizer(assets.smollm2_gguf_path())


def _shards(path) -> list[str]:
  return sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))


def test_sharded_export_loads_in_transformers(ours, smollm2_tokenizer, tmp_path):
  model, config = ours
  save_pretrained(model, config, tmp_path, tokenizer=smollm2_tokenizer,
                  max_shard_size=SHARD_BYTES)
  shards = _shards(tmp_path)
  assert len(shards) >= 2 and "model.safetensors" not in shards, shards
  assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  state = to_hf_state_dict(model)
  assert set(index["weight_map"]) == set(state)
  assert set(index["weight_map"].values()) == set(shards)
  assert index["metadata"]["total_size"] == sum(v.nbytes for v in state.values())
  for shard in shards:  # each under the limit (a tensor larger than it would stand alone)
    tensors = [state[k] for k, v in index["weight_map"].items() if v == shard]
    assert sum(t.nbytes for t in tensors) <= SHARD_BYTES or len(tensors) == 1, shard

  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, local_files_only=True, dtype=torch.float32)
  for key, value in state.items():
    np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value, err_msg=key)
  ref = hf_logits(reloaded, ROW)
  got = np.asarray(model(jnp.asarray([ROW])))[0]
  assert np.abs(ref).max() > 1.0, "reference logits too flat to make the test meaningful"
  np.testing.assert_array_less(np.abs(got - ref).max(), 1e-4 * np.abs(ref).max())


def test_exported_tokenizer_and_generation_config(ours, smollm2_tokenizer, tmp_path):
  model, config = ours
  save_pretrained(model, config, tmp_path, tokenizer=smollm2_tokenizer,
                  max_shard_size=SHARD_BYTES)
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
  assert smollm2_tokenizer.chat_template and tok.chat_template == smollm2_tokenizer.chat_template
  messages = [{"role": "user", "content": "What is 12 * 7?"}]
  assert (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
          == smollm2_tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=True))
  text = "Let's try a different approach: 12 * 7 = 84."
  assert tok(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]
  assert load_tokenizer(tmp_path)(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]

  # The model config's ids (bos 1, eos 2: hf_reference) and the tokenizer's end of turn.
  generation = transformers.GenerationConfig.from_pretrained(tmp_path, local_files_only=True)
  assert config.bos_token_id == 1 and config.eos_token_id == 2
  eos = smollm2_tokenizer.eos_token_id
  assert generation.bos_token_id == 1
  assert generation.eos_token_id == (2 if eos == 2 else [2, eos])
  assert generation.pad_token_id == smollm2_tokenizer.pad_token_id


def test_single_file_when_it_fits_and_stale_shards_removed(ours, tmp_path):
  model, config = ours
  save_pretrained(model, config, tmp_path, max_shard_size=SHARD_BYTES)
  assert len(_shards(tmp_path)) >= 2
  save_pretrained(model, config, tmp_path)  # default 5GB: one file, the shards go
  assert _shards(tmp_path) == ["model.safetensors"]
  assert not (tmp_path / "model.safetensors.index.json").exists()
  assert not (tmp_path / "tokenizer.json").exists()  # no tokenizer given
  generation = json.loads((tmp_path / "generation_config.json").read_text())
  assert generation == {"bos_token_id": 1, "eos_token_id": 2}
  reloaded, _ = load_pretrained(tmp_path)
  np.testing.assert_array_equal(np.asarray(reloaded(jnp.asarray([ROW]))),
                                np.asarray(model(jnp.asarray([ROW]))))


def test_parse_size():
  assert parse_size("5GB") == 5 * 10**9
  assert parse_size("2GiB") == 2 * 2**30
  assert parse_size("1.5MB") == 1_500_000
  assert parse_size(" 500 kb ") == 500_000
  assert parse_size("100") == parse_size(100) == 100
  for bad in (0, -1, "", "5 parsecs", "GB", True, 1.5, None):
    with pytest.raises(ValueError, match="max_shard_size"):
      parse_size(bad)


def test_generation_config_merges_end_tokens(ours):
  _, config = ours
  tokenizer = types.SimpleNamespace(bos_token_id=0, eos_token_id=9, pad_token_id=None)
  multi_eos = dataclasses.replace(config, eos_token_id=(2, 7), bos_token_id=None)
  assert generation_config(multi_eos, tokenizer) == {"bos_token_id": 0,
                                                     "eos_token_id": [2, 7, 9]}
  assert generation_config(dataclasses.replace(config, eos_token_id=(2, 9)), tokenizer) == {
      "bos_token_id": 1, "eos_token_id": [2, 9]}
  assert generation_config(dataclasses.replace(config, eos_token_id=None,
                                               bos_token_id=None)) == {}
