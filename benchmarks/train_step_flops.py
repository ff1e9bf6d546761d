"""Train-step FLOP/s of the decoder vs a plain bf16 matmul on the same device.

Forward + backward of the mean token log-likelihood (the chunked
`token_logprobs_and_entropy` path the trainer uses), random bf16 weights.

  FLOPs/step = 6 * P * tokens + 12 * B * T^2 * layers * heads * head_dim
  (P = all parameters, tied embeddings counted once)

Prints achieved FLOP/s and its ratio to the FLOP/s of an N^3 bf16 matmul measured
in the same run (target >= 45% on an H100 with the default `qwen2.5-1.5b` shape).
--attention picks the implementation (models/attention.py; default "auto": cudnn
on GPU, splash on TPU, xla elsewhere); --seq and --batch override the preset's
shape (long sequences, up to 32768: "chunked", "cudnn" or "splash", whose memory
is linear in T; "xla" holds [B, Q, T, T] scores). With --check_attention it also
compares the chosen implementation against the dense XLA path on a left/right-padded
batch at float32 "highest" matmul precision (bf16 for cudnn, which needs it).

  python benchmarks/train_step_flops.py                      # GPU: Qwen2.5-1.5B, 16 x 2048
  python benchmarks/train_step_flops.py --preset cpu-small   # CPU smoke figure
  python benchmarks/train_step_flops.py --attention chunked --batch 1 --seq 32768
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from hicra_jax.models import Decoder, ModelConfig, model_token_logprobs_and_entropy
from hicra_jax.models.attention import ATTENTION_IMPLS

PRESETS = {
    # Qwen2.5-1.5B: tied embeddings, q/k/v bias, GQA 12:2, head_dim 128.
    "qwen2.5-1.5b": dict(config=ModelConfig(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
        num_kv_heads=2, head_dim=128, rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
        architecture="Qwen2ForCausalLM"), batch=16, seq=2048, matmul=8192),
    "cpu-small": dict(config=ModelConfig(
        vocab_size=8192, hidden_size=256, intermediate_size=704, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=64, tie_embeddings=True, qkv_bias=True,
        architecture="Qwen2ForCausalLM"), batch=4, seq=256, matmul=2048),
}


def step_flops(config: ModelConfig, batch: int, seq: int) -> float:
  attn = 12 * batch * seq**2 * config.num_layers * config.num_heads * config.head_dim
  return 6 * config.num_params * batch * seq + attn


def time_fn(fn, *args, iters: int) -> float:
  """Median seconds per call after a compile + warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def matmul_flops_per_s(n: int, iters: int) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  f = jax.jit(lambda a, b: a @ b)
  return 2 * n**3 / time_fn(f, a, b, iters=iters)


def train_step_flops_per_s(config, batch, seq, *, attention_impl, remat, chunk, iters):
  model = Decoder(config, rngs=nnx.Rngs(0), param_dtype="bfloat16", attention_impl=attention_impl,
                  remat=remat)
  graphdef, state = nnx.split(model)
  tokens = jax.random.randint(jax.random.key(2), (batch, seq + 1), 0, config.vocab_size)

  @jax.jit
  def grad_step(state, tokens):
    def loss(state):
      lp, _ = model_token_logprobs_and_entropy(nnx.merge(graphdef, state), tokens, chunk_size=chunk)
      return -jnp.mean(lp)
    return jax.value_and_grad(loss)(state)

  # FLOPs count the T = seq predicted positions of a seq + 1 token input.
  seconds = time_fn(grad_step, state, tokens, iters=iters)
  return step_flops(config, batch, seq) / seconds, seconds


def check_attention(config: ModelConfig, attention: str) -> tuple[float, float]:
  """Max |logit diff| on real tokens of `attention` vs dense XLA, left/right-padded batch.

  float32 weights at "highest" matmul precision; bfloat16 for cudnn (its kernel takes no
  float32). -> (max |diff|, max |logit|).
  """
  from hicra_jax.models.weights import build_model, flat_params
  cudnn = attention in ("cudnn", "auto") and jax.default_backend() == "gpu"
  dtype = "bfloat16" if cudnn else "float32"
  small = ModelConfig(**{**config.__dict__, "num_layers": 2})
  base = Decoder(small, rngs=nnx.Rngs(0), param_dtype=dtype)
  params = flat_params(base)
  xla = build_model(small, params, param_dtype=dtype, attention_impl="xla")
  other = build_model(small, params, param_dtype=dtype, attention_impl=attention)
  tokens = jax.random.randint(jax.random.key(3), (4, 256), 0, small.vocab_size)
  starts = jnp.array([0, 17, 100, 0])[:, None]
  ends = jnp.array([256, 256, 256, 200])[:, None]
  pos = jnp.arange(256)[None]
  mask = (pos >= starts) & (pos < ends)
  with jax.default_matmul_precision("highest"):
    a = jax.jit(lambda t, m: xla(t, m))(tokens, mask)
    b = jax.jit(lambda t, m: other(t, m))(tokens, mask)
  diff = jnp.where(mask[..., None], jnp.abs(a - b), 0).max()
  return float(diff), float(jnp.abs(a).max())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-1.5b")
  parser.add_argument("--attention", choices=ATTENTION_IMPLS, default="auto",
                      help="auto: cudnn on GPU (bf16), splash on TPU, xla elsewhere")
  parser.add_argument("--seq", type=int, default=None, help="tokens per row (preset's if unset)")
  parser.add_argument("--batch", type=int, default=None, help="rows (preset's if unset)")
  parser.add_argument("--remat", default="dots_no_batch")
  parser.add_argument("--chunk", type=int, default=1024, help="logprob chunk size")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--target", type=float, default=0.45)
  parser.add_argument("--check_attention", action="store_true")
  args = parser.parse_args()

  preset = PRESETS[args.preset]
  config = preset["config"]
  batch, seq = args.batch or preset["batch"], args.seq or preset["seq"]
  attention = args.attention
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  print(f"shape: {args.preset}, P = {config.num_params / 1e9:.3f} B params, "
        f"{batch} x {seq} tokens, "
        f"attention={attention}, remat={args.remat}, chunk={args.chunk}")
  peak = matmul_flops_per_s(preset["matmul"], args.iters)
  print(f"bf16 matmul {preset['matmul']}^3: {peak / 1e12:.2f} TFLOP/s")
  achieved, seconds = train_step_flops_per_s(config, batch, seq, attention_impl=attention,
                                             remat=args.remat, chunk=args.chunk, iters=args.iters)
  ratio = achieved / peak
  print(f"train step: {seconds * 1e3:.1f} ms, {step_flops(config, batch, seq) / 1e12:.2f} TFLOP, "
        f"{achieved / 1e12:.2f} TFLOP/s")
  print(f"ratio to matmul: {ratio:.1%} (target {args.target:.0%}: "
        f"{'MET' if ratio >= args.target else 'NOT MET'}; {ratio / args.target:.2f}x of target)")
  if args.check_attention:
    needs = {"cudnn": "gpu", "splash": "tpu"}.get(attention)
    if needs is not None and jax.default_backend() != needs:
      print(f"check_attention: {attention} needs a {needs.upper()}; not run")
    else:
      diff, scale = check_attention(config, attention)
      print(f"{attention} vs xla attention, padded batch: max |logit diff| {diff:.4g} "
            f"(max |logit| {scale:.3g})")


if __name__ == "__main__":
  main()
