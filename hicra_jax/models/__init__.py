"""One decoder for Llama 3.x, Qwen2/2.5 and Qwen3; HF/GGUF weights in and out."""

from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder, KVCache
from hicra_jax.models.loading import load_pretrained, save_pretrained
from hicra_jax.models.logprobs import (model_token_logprobs_and_entropy,
                                       token_logprobs_and_entropy)
from hicra_jax.models.weights import WeightError


def load_tokenizer(path):
  """A Hugging Face tokenizer from a model directory, a tokenizer.json folder or a .gguf file.

  (Imported lazily: transformers is only needed once a tokenizer is.)
  """
  from hicra_jax.models.tokenizer import load_tokenizer as _load
  return _load(path)


__all__ = ["Decoder", "KVCache", "ModelConfig", "WeightError", "load_pretrained",
           "load_tokenizer", "model_token_logprobs_and_entropy", "save_pretrained",
           "token_logprobs_and_entropy"]
