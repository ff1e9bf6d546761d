"""The real SmolLM2-135M-Instruct: our GGUF load vs transformers' load of the same file."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hicra_jax.data import encode_prompts
from hf_reference import pad_batch

PROMPTS = [
    "What is 17 * 23?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "to her friends in May. How many clips did Natalia sell altogether in April and May?",
    "Let's try a different approach: factor x^2 - 5x + 6.",
]


@pytest.fixture(scope="module")
def prompt_ids(smollm2_tokenizer):
  return encode_prompts(smollm2_tokenizer, PROMPTS)


@pytest.mark.slow
def test_logits_match_transformers_on_real_chat_prompts(smollm2_ours, smollm2_transformers,
                                                        prompt_ids):
  model, config = smollm2_ours
  assert config.num_layers == 30 and config.vocab_size == 49152 and config.tie_embeddings
  tokens, mask = pad_batch(prompt_ids, "left")
  ours = np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)))
  for i, ids in enumerate(prompt_ids):
    with torch.no_grad():
      ref = smollm2_transformers(torch.tensor([ids])).logits[0].numpy()
    got = ours[i][mask[i]]
    assert np.abs(got - ref).max() <= 1e-3, np.abs(got - ref).max()
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
