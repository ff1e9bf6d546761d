"""One decoder for Llama 3.x, Qwen2/2.5, Qwen3 and Qwen2.5-VL; HF/GGUF weights in and out."""

from hicra_jax.models.config import ModelConfig, VisionConfig
from hicra_jax.models.decoder import Decoder, KVCache
from hicra_jax.models.loading import load_pretrained, save_pretrained
from hicra_jax.models.logprobs import (model_token_logprobs_and_entropy,
                                       token_logprobs_and_entropy)
from hicra_jax.models.tokenizer import load_tokenizer
from hicra_jax.models.vision_inputs import VisionInputs, check_image_tokens, num_image_tokens
from hicra_jax.models.weights import WeightError

__all__ = ["Decoder", "KVCache", "ModelConfig", "VisionConfig", "VisionInputs", "WeightError",
           "check_image_tokens", "load_pretrained", "load_tokenizer",
           "model_token_logprobs_and_entropy", "num_image_tokens", "save_pretrained",
           "token_logprobs_and_entropy"]
