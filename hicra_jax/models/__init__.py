"""One decoder for Llama 3.x, Qwen2/2.5 and Qwen3; HF/GGUF weights in and out."""

from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder, KVCache
from hicra_jax.models.loading import load_pretrained, save_pretrained
from hicra_jax.models.logprobs import (model_token_logprobs_and_entropy,
                                       token_logprobs_and_entropy)
from hicra_jax.models.tokenizer import load_tokenizer
from hicra_jax.models.weights import WeightError

__all__ = ["Decoder", "KVCache", "ModelConfig", "WeightError", "load_pretrained",
           "load_tokenizer", "model_token_logprobs_and_entropy", "save_pretrained",
           "token_logprobs_and_entropy"]
