"""Compiled temporary memory of a training forward + backward, per attention implementation.

A 2-layer, 64-wide toy decoder (4 query heads, 2 key/value heads, head_dim 16),
one padded row of T tokens, gradient of the mean token log-likelihood (the path
the trainer takes). Only compiles (nothing runs), then prints XLA's
`memory_analysis().temp_size_in_bytes` of the compiled step: the dense "xla"
attention holds [N, Q, T, T] float32 scores (~4x per doubling of T); "chunked"
should grow ~linearly.

  python benchmarks/attention_memory.py                                  # CPU: xla, chunked
  python benchmarks/attention_memory.py --attention chunked --lengths 4096 32768
  python benchmarks/attention_memory.py --attention chunked --remat dots none full
"""

from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from hicra_jax.models import Decoder, ModelConfig, model_token_logprobs_and_entropy
from hicra_jax.models.attention import ATTENTION_IMPLS
from hicra_jax.options import REMATS

TOY = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=16, tie_embeddings=True,
                  architecture="Qwen2ForCausalLM")


def train_step_temp_bytes(config: ModelConfig, attention: str, batch: int, seq: int,
                          chunk: int = 1024, remat: str = "none") -> int:
  """temp_size_in_bytes of the compiled (not run) gradient of the mean token log-likelihood."""
  model = Decoder(config, rngs=nnx.Rngs(0), attention_impl=attention, remat=remat)
  graphdef, state = nnx.split(model)

  def grad_step(state, tokens, mask):
    def loss(state):
      lp, _ = model_token_logprobs_and_entropy(nnx.merge(graphdef, state), tokens, mask,
                                               chunk_size=chunk)
      return -jnp.mean(lp)
    return jax.grad(loss)(state)

  tokens = jax.ShapeDtypeStruct((batch, seq), jnp.int32)  # attention over T = seq
  mask = jax.ShapeDtypeStruct((batch, seq), bool)  # the padded path, as in training
  compiled = jax.jit(grad_step).lower(state, tokens, mask).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--attention", nargs="+", choices=ATTENTION_IMPLS, default=["xla", "chunked"])
  parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 8192, 16384])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--remat", nargs="+", choices=REMATS, default=["none"])
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  print(f"toy decoder: {TOY.num_layers} layers, width {TOY.hidden_size}, {TOY.num_heads} query / "
        f"{TOY.num_kv_heads} kv heads of {TOY.head_dim}; batch {args.batch}; forward + backward")
  for attention, remat in itertools.product(args.attention, args.remat):
    previous = None
    for seq in args.lengths:
      temp = train_step_temp_bytes(TOY, attention, args.batch, seq, remat=remat)
      growth = "" if previous is None else f"  (x{temp / previous:.2f} vs previous length)"
      print(f"attention={attention:8s} remat={remat:13s} T={seq:6d}: temp "
            f"{temp / 2**20:10.1f} MiB{growth}", flush=True)
      previous = temp


if __name__ == "__main__":
  main()
