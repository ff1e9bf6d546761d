"""Sampler throughput vs the decode roofline, and vs transformers' generate.

For each batch size and completion length (stop disabled, so every row runs to
max_new_tokens): tokens/s = generated tokens / wall time (prefill included), and
its ratio to the roofline of the decode steps:

  per step: max(bytes / bandwidth, FLOPs / matmul rate)
    bytes = all weights + KV cache of the valid context at that step
    FLOPs = 2 x params x batch + 4 x batch x context x layers x heads x head_dim

with bandwidth (a large device-to-device copy, read + write counted) and the
matmul rate (bf16 N^3) measured in the same run. Target on the H100: >= 50% of
the roofline at batch 64 and 256. transformers' generate (PyTorch, bf16, same
random config) is timed on the same shapes for the speedup.

  python benchmarks/sampler.py                      # GPU: Qwen2.5-1.5B shape
  python benchmarks/sampler.py --preset cpu-small   # CPU smoke figures
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax.models import Decoder, ModelConfig
from hicra_jax.sampling import SamplingParams, generate

QWEN25_15B = ModelConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                         rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
                         architecture="Qwen2ForCausalLM", eos_token_id=151643)
PRESETS = {
    "qwen2.5-1.5b": dict(config=QWEN25_15B, prompt=256, new=(256, 1024), batches=(1, 16, 64, 256),
                         matmul=8192, copy_mib=2048),
    "cpu-small": dict(config=dataclasses.replace(
        QWEN25_15B, vocab_size=8192, hidden_size=256, intermediate_size=704, num_layers=4,
        num_heads=4, num_kv_heads=2, head_dim=64, eos_token_id=2), prompt=64, new=(64,), batches=(1, 16),
                      matmul=2048, copy_mib=256),
}


def _median_seconds(fn, iters):
  fn()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def measure_bandwidth(mib: int, iters: int = 5) -> float:
  """Bytes/s of a device-to-device copy, read + write counted."""
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  copy = jax.jit(lambda x: x * 1.0)  # a real read + write, not an alias
  seconds = _median_seconds(lambda: copy(x).block_until_ready(), iters)
  return 2 * x.nbytes / seconds


def measure_matmul(n: int, iters: int = 5) -> float:
  a = jnp.ones((n, n), jnp.bfloat16)
  f = jax.jit(lambda a: a @ a)
  return 2 * n**3 / _median_seconds(lambda: f(a).block_until_ready(), iters)


def roofline_seconds(config: ModelConfig, batch: int, prompt: int, new: int, bw: float,
                     rate: float) -> float:
  weight_bytes = config.num_params * 2  # bf16
  kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * 2
  total = 0.0
  for step in range(new):
    context = prompt + step
    bytes_ = weight_bytes + batch * context * kv_per_token
    flops = (2 * config.num_params * batch
             + 4 * batch * context * config.num_layers * config.num_heads * config.head_dim)
    total += max(bytes_ / bw, flops / rate)
  return total


def time_ours(model, config, batch, prompt, new, greedy, iters):
  prompts = np.random.default_rng(0).integers(0, config.vocab_size, (batch, prompt)).tolist()
  params = SamplingParams(max_new_tokens=new, greedy=greedy, temperature=1.0, stop_ids=())
  run = lambda: generate(model, prompts, params, jax.random.key(0), prompt_buckets=(prompt,))
  return _median_seconds(run, iters)


def time_transformers(config, batch, prompt, new, greedy):
  try:
    import torch
    import transformers
  except ImportError:
    return None
  hf_config = transformers.Qwen2Config(**{k: v for k, v in config.to_hf().items()
                                          if k not in ("architectures", "model_type")})
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = transformers.Qwen2ForCausalLM(hf_config).to(device, torch.bfloat16).eval()
  ids = torch.randint(0, config.vocab_size, (batch, prompt), device=device)
  kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=not greedy, pad_token_id=0)
  with torch.no_grad():
    model.generate(ids, **kwargs)
    if device == "cuda":
      torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    if device == "cuda":
      torch.cuda.synchronize()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-1.5b")
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--no_transformers", action="store_true")
  args = parser.parse_args()
  preset = PRESETS[args.preset]
  config = preset["config"]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
        f"{args.preset}: {config.num_params / 1e9:.3f} B params, prompt {preset['prompt']}")
  bw, rate = measure_bandwidth(preset["copy_mib"]), measure_matmul(preset["matmul"])
  print(f"measured: copy bandwidth {bw / 1e9:.1f} GB/s, bf16 matmul {rate / 1e12:.2f} TFLOP/s")
  model = Decoder(config, rngs=nnx.Rngs(0), param_dtype="bfloat16")
  print("| new | batch | mode | tokens/s | roofline tokens/s | ratio | transformers tokens/s | speedup |")
  print("|---|---|---|---|---|---|---|---|")
  for new in preset["new"]:
    for batch in preset["batches"]:
      roof = roofline_seconds(config, batch, preset["prompt"], new, bw, rate)
      for greedy in (True, False):
        seconds = time_ours(model, config, batch, preset["prompt"], new, greedy, args.iters)
        tps = batch * new / seconds
        ref = None if args.no_transformers else time_transformers(
            config, batch, preset["prompt"], new, greedy)
        ref_tps = f"{batch * new / ref:.0f}" if ref else "-"
        speedup = f"{ref / seconds:.2f}x" if ref else "-"
        print(f"| {new} | {batch} | {'greedy' if greedy else 'T=1.0'} | {tps:.0f} | "
              f"{batch * new / roof:.0f} | {roof / seconds:.1%} | {ref_tps} | {speedup} |",
              flush=True)


if __name__ == "__main__":
  main()
