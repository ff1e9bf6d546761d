"""Every accelerator figure of the project in one process, in one time box (issue 17).

  python benchmarks/device_suite.py                      # H200/H100: Qwen2.5-1.5B shape, <= 480 s
  python benchmarks/device_suite.py --preset cpu-small   # the same code on CPU (a test runs it)
  python benchmarks/device_suite.py --sections ceilings,masks --budget_s 120

Sections (each independent: a failure is recorded with its error and the suite
goes on; one that would start after `--budget_s` seconds, or with less time left
than its own estimate, is skipped with a note):

  ceilings          bf16 N^3 matmul rate (random data) and device copy bandwidth
                    (read + write bytes/s): the measured ceilings every ratio below uses
  attention_parity  chunked / cuDNN / splash attention vs the dense XLA path on a
                    left/right-padded batch, float32 at "highest" matmul precision
                    (bfloat16 for cuDNN, which takes no float32)
  update_mfu        decoder forward + backward, 16 x 2048, bf16, per attention
                    implementation the backend has: FLOP/s vs the measured matmul rate
                    and vs the published bf16 peak
  sampler           generate() tokens/s and fraction of the decode roofline at batch 64
                    and 256 (prompt 256, 256 new tokens forced), and Tunix's vanilla
                    sampler on the same workload when `tunix` is importable
  masks             planning_mask_and_counts at 512 x 4096 and 128 x 16384
  rl_step           one full HICRA step, 64 prompts x 8, 1024 new tokens, forced then
                    ragged: the split (rollout / reward / masks / update) and update MFU;
                    then ragged through a pool of refill_slots slots (continuous
                    batching) and, without refill, in calls of as many rows
  sampler_scaling   tokens/s at batch 1..512 (prompt 256) and at contexts 1K..32K
                    (batch 16); last, since it is the least needed

Each section prints as it finishes (flushed) and rewrites `device_suite.json`
(every number, device, versions, per-section wall time, the targets as ratios)
and `device_suite.md` (tables) in `--out` (default $OUT when set, else
benchmarks/out/), so a run killed by a timeout still leaves what it measured.

The section bodies reuse the single-purpose scripts beside this file
(train_step_flops.py, sampler.py, planning_mask.py, rl_step.py); their docstrings
define the FLOP counts and the roofline. benchmarks/README.md has the device
command, the wheels to carry (Tunix among them) and the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if importlib.util.find_spec("hicra_jax") is None:  # not installed (a device image): the checkout
  sys.path.append(os.path.dirname(HERE))
import planning_mask as mask_bench  # noqa: E402  (benchmarks/planning_mask.py)
import rl_step as rl_bench  # noqa: E402  (benchmarks/rl_step.py)
import sampler as sampler_bench  # noqa: E402  (benchmarks/sampler.py)
import train_step_flops as flops_bench  # noqa: E402  (benchmarks/train_step_flops.py)

from hicra_jax.models import Decoder, ModelConfig  # noqa: E402
from hicra_jax.models.attention import ATTENTION_IMPLS, auto_kernel  # noqa: E402
from hicra_jax.sampling import SamplingParams, generate  # noqa: E402

# Published dense bf16 peaks (vendor datasheets, no sparsity), matched in order
# against jax's device_kind; a device not listed gets no "vs published" ratio.
PUBLISHED_BF16_PEAK = (
    ("H100 PCIe", 756e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12),
)

# Qwen2.5-1.5B (published config: tied embeddings, q/k/v bias, GQA 12:2, head_dim
# 128), as benchmarks/sampler.py has it; long contexts need 32K positions.
QWEN25_15B = dataclasses.replace(sampler_bench.QWEN25_15B, max_position_embeddings=131072)
TINY = dataclasses.replace(  # cpu-small: compiles in about a second per program
    QWEN25_15B, vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2,
    num_heads=4, num_kv_heads=2, head_dim=16, eos_token_id=2)

ORDER = ("ceilings", "attention_parity", "update_mfu", "sampler", "masks", "rl_step",
         "sampler_scaling")

PRESETS = {
    "qwen2.5-1.5b": dict(
        model=QWEN25_15B, budget_s=480.0, efficiency=0.25,
        # Seconds a section (or one item of it) should have left to start: rough
        # H200 estimates, compilation included. A skipped item is recorded.
        min_s=dict(ceilings=0, attention_parity=15, update_mfu=40, sampler=40, masks=15,
                   rl_step=150, sampler_scaling=20),
        item_s=dict(update_mfu=35, sampler=15, tunix=25, sampler_scaling=15, rl_step=45),
        ceilings=dict(matmul=8192, copy_mib=2048, iters=10),
        update_mfu=dict(batch=16, seq=2048, remat="dots_no_batch", chunk=1024, iters=3),
        sampler=dict(prompt=256, new=256, batches=(64, 256), modes=("T=1.0", "greedy"),
                     tunix_mode="greedy", iters=2),
        sampler_scaling=dict(prompt=256, new=256, batches=(1, 16, 64, 256, 512),
                             contexts=(1024, 8192, 32768), context_batch=16, mode="T=1.0",
                             iters=1),
        masks=dict(shapes=((512, 4096), (128, 16384)), iters=10),
        rl_step=dict(rl_bench.PRESETS["qwen2.5-1.5b"], stop_every=300, attention="auto",
                     refill_slots=256),
    ),
    "cpu-small": dict(
        model=TINY, budget_s=480.0,
        min_s={}, item_s={},
        ceilings=dict(matmul=512, copy_mib=64, iters=3),
        update_mfu=dict(batch=2, seq=128, remat="dots_no_batch", chunk=64, iters=2),
        sampler=dict(prompt=32, new=32, batches=(4, 16), modes=("T=1.0", "greedy"),
                     tunix_mode="greedy", iters=3),
        sampler_scaling=dict(prompt=32, new=32, batches=(1, 4, 16), contexts=(128,),
                             context_batch=4, mode="T=1.0", iters=3),
        masks=dict(shapes=((16, 512), (4, 2048)), iters=3),
        rl_step=dict(prompts=2, group=4, prompt_len=16, new=16, micro=8, dtype="float32",
                     compute="float32", remat="none", stop_every=10, attention="auto",
                     refill_slots=4),
    ),
}

TARGETS_DOC = {
    "decode_roofline_b64": "sampler T=1.0 at batch 64: >= 50% of the decode roofline",
    "decode_roofline_b256": "sampler T=1.0 at batch 256: >= 50% of the decode roofline",
    "vs_tunix_b64": "sampler greedy vs Tunix greedy at batch 64: >= 1.4x tokens/s",
    "vs_tunix_b256": "sampler greedy vs Tunix greedy at batch 256: >= 2x tokens/s",
    "update_mfu": "update (auto attention) >= 45% of the measured matmul rate",
    "masks_512x4096": "mask + counts at 512 x 4096 <= 5 ms",
    "masks_share_rl_step": "masks + advantages < 1% of the forced RL step",
    "rl_update_mfu": "RL step update >= 40% of the measured matmul rate (issue 7)",
}


class BudgetExceeded(Exception):
  """Raised inside a section when its next item would not fit in the time box."""


class Suite:
  """The shared state of one run: clock, ceilings, results, and the two output files."""

  def __init__(self, preset: str, out: str, budget_s: float, data_dir: str):
    self.preset_name, self.p = preset, PRESETS[preset]
    self.out, self.budget_s, self.data_dir = out, budget_s, data_dir
    self.t0 = time.perf_counter()
    self.backend = jax.default_backend()
    self.device_kind = jax.devices()[0].device_kind
    self.peak = published_peak(self.device_kind)
    self.matmul_rate: float | None = None  # FLOP/s, set by ceilings
    self.bandwidth: float | None = None  # bytes/s, set by ceilings
    self.shared: dict = {}  # objects later sections reuse (the sampler model, the trie)
    self.report = {
        "suite": "device_suite", "preset": preset, "device": self.device_kind,
        "backend": self.backend, "device_count": jax.device_count(), "jax": jax.__version__,
        "jaxlib": _version("jaxlib"), "flax": _version("flax"), "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "budget_s": budget_s,
        "published_bf16_peak_tflops": None if self.peak is None else self.peak / 1e12,
        "elapsed_s": 0.0, "finished": False, "sections": {}, "targets": {},
    }

  def elapsed(self) -> float:
    return time.perf_counter() - self.t0

  def left(self) -> float:
    return self.budget_s - self.elapsed()

  def need(self, seconds: float, what: str) -> None:
    """Raise BudgetExceeded unless `seconds` remain for `what`."""
    if self.left() < seconds:
      raise BudgetExceeded(f"budget: {self.elapsed():.0f} s of {self.budget_s:.0f} s used, "
                           f"{what} needs ~{seconds:.0f} s")

  def item_budget(self, section: str) -> float:
    return self.p["item_s"].get(section, 0.0)

  # ------------------------------------------------------------------ running

  def run(self, name: str, fn) -> None:
    entry = {"status": "running"}
    self.report["sections"][name] = entry
    start = time.perf_counter()
    try:
      self.need(max(self.p["min_s"].get(name, 0.0), 1e-9), name)
      entry["items"] = {}
      notes = fn(self, self.p[name] if name in self.p else {}, entry["items"])
      if notes:
        entry["notes"] = notes
      entry["status"] = "ok"
    except BudgetExceeded as e:
      entry.update(status="skipped", skipped=str(e))
    except Exception as e:  # pylint: disable=broad-except
      entry.update(status="error", error=_error(e),
                   traceback=traceback.format_exc(limit=-4)[-2000:])
    except BaseException as e:  # SIGTERM / Ctrl-C: keep what was measured, then stop
      entry.update(status="interrupted", error=_error(e))
      raise
    finally:
      entry["wall_s"] = round(time.perf_counter() - start, 3)
      entry["ended_at_s"] = round(self.elapsed(), 3)
      gc.collect()
      self.write()
      print(self.section_text(name), flush=True)

  # ------------------------------------------------------------------ output

  def write(self) -> None:
    self.report["elapsed_s"] = round(self.elapsed(), 3)
    try:
      self.report["targets"] = targets(self)
    except Exception as e:  # pylint: disable=broad-except  (never lose the figures to this)
      self.report["targets"] = {"error": {"doc": "targets", "target": "-", "note": _error(e)}}
    os.makedirs(self.out, exist_ok=True)
    for name, text in (("device_suite.json", json.dumps(_finite(self.report), indent=1)),
                       ("device_suite.md", self.markdown())):
      tmp = os.path.join(self.out, name + ".tmp")
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
      os.replace(tmp, os.path.join(self.out, name))

  def section_text(self, name: str) -> str:
    entry = self.report["sections"][name]
    head = f"## {name}: {entry['status']} ({entry.get('wall_s', 0):.1f} s; " \
           f"ended at {entry.get('ended_at_s', self.elapsed()):.0f} s)"
    lines = [head]
    for key in ("skipped", "error"):
      if key in entry:
        lines.append(f"{key}: {entry[key]}")
    if entry.get("notes"):
      lines.append("; ".join(f"{k}: {_fmt(v)}" for k, v in entry["notes"].items()))
    if entry.get("items"):
      lines += ["", *_table(entry["items"])]
    return "\n".join(lines) + "\n"

  def markdown(self) -> str:
    r = self.report
    lines = [f"# device_suite ({r['preset']})", "",
             f"{r['device']} ({r['backend']}, {r['device_count']} device(s)), jax {r['jax']}, "
             f"flax {r['flax']}, Python {r['python']}; started {r['started']}; "
             f"{r['elapsed_s']:.0f} s of a {r['budget_s']:.0f} s budget"
             f"{'' if r['finished'] else ' (unfinished)'}.", "",
             "## Targets (ratio >= 1: met)", "",
             "| target | value | target | ratio | met | note |", "|---|---|---|---|---|---|"]
    for name, t in r["targets"].items():
      lines.append(f"| {name} | {_fmt(t.get('value'))} | {t['target']} | {_fmt(t.get('ratio'))} "
                   f"| {_fmt(t.get('met'))} | {_cell(t.get('note', ''))} |")
    lines += ["", "## Sections", "", "| section | status | wall s | note |", "|---|---|---|---|"]
    for name, entry in r["sections"].items():
      note = entry.get("skipped") or entry.get("error") or ""
      lines.append(f"| {name} | {entry['status']} | {entry.get('wall_s', 0):.1f} | "
                   f"{_cell(note)} |")
    for name in r["sections"]:
      lines += ["", self.section_text(name).replace("## ", "### ", 1)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers


def _version(dist: str) -> str | None:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def published_peak(device_kind: str) -> float | None:
  for name, peak in PUBLISHED_BF16_PEAK:
    if name.lower() in device_kind.lower():
      return peak
  return None


def _error(e: BaseException) -> str:
  text = f"{type(e).__name__}: {e}".strip()
  return text if len(text) <= 600 else text[:600] + " ..."


def _finite(x):
  """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists."""
  if isinstance(x, dict):
    return {str(k): _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, (np.generic,)):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _fmt(v) -> str:
  if isinstance(v, np.generic):
    v = v.item()
  if v is None:
    return "-"
  if isinstance(v, bool):
    return "yes" if v else "NO"
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, (list, tuple)):
    return "x".join(str(x) for x in v)
  return str(v)


def _cell(v) -> str:
  return _fmt(v).replace("|", "/").replace("\n", " ")


def _table(items: dict) -> list[str]:
  """Markdown rows: one per item, one column per metric (union over items, first-seen order)."""
  cols = []
  for metrics in items.values():
    for k in metrics:
      if k not in cols:
        cols.append(k)
  rows = ["| item | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for name, metrics in items.items():
    rows.append(f"| {name} | " + " | ".join(_cell(metrics.get(c)) for c in cols) + " |")
  return rows


def first_and_median(fn, iters: int) -> tuple[float, float]:
  """(seconds of the first call, compilation included; median seconds of `iters` more)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, (sorted(times)[len(times) // 2] if times else first)


def guarded(items: dict, name: str, suite: Suite, section: str, fn,
            estimate_s: float = 0.0) -> dict | None:
  """items[name] = fn() (a dict), or {"error": ...}, or {"skipped": budget}; returns it.

  Skipped when less than the section's per-item time (preset item_s) plus
  `estimate_s` is left."""
  try:
    suite.need(suite.item_budget(section) + estimate_s, f"{section} {name}")
    items[name] = fn()
  except BudgetExceeded as e:
    items[name] = {"skipped": str(e)}
  except Exception as e:  # pylint: disable=broad-except
    items[name] = {"error": _error(e)}
    print(f"{section} {name}: {items[name]['error']}", flush=True)
  gc.collect()
  return items[name]


def needs_backend(impl: str, backend: str) -> str | None:
  """None when attention `impl` runs on `backend`, else the skip reason."""
  need = {"cudnn": "gpu", "splash": "tpu"}.get(impl)
  return None if need is None or backend == need else f"not on {need.upper()}"


def _ratio(value, base):
  return None if value is None or not base else value / base


# ---------------------------------------------------------------------- a) ceilings


def section_ceilings(s: Suite, p: dict, items: dict):
  n, mib = p["matmul"], p["copy_mib"]
  s.matmul_rate = flops_bench.matmul_flops_per_s(n, p["iters"])
  items["bf16 matmul"] = {"size": n, "tflops": s.matmul_rate / 1e12,
                          "fraction_of_published": _ratio(s.matmul_rate, s.peak)}
  s.bandwidth = sampler_bench.measure_bandwidth(mib, p["iters"])
  items["copy"] = {"size": f"{mib} MiB", "gb_per_s": s.bandwidth / 1e9}


# ---------------------------------------------------------------------- b) update MFU


def section_update_mfu(s: Suite, p: dict, items: dict):
  config = s.p["model"]
  auto = auto_kernel(s.backend, half_precision=True)
  flops = flops_bench.step_flops(config, p["batch"], p["seq"])
  # The auto kernel first (what training runs), then the option list's others, dense xla last.
  others = [a for a in ATTENTION_IMPLS if a not in ("auto", "xla")]
  for impl in dict.fromkeys([auto, *others, "xla"]):
    skip = needs_backend(impl, s.backend)
    if skip:
      items[impl] = {"skipped": skip}
      continue

    def one(impl=impl):
      achieved, seconds = flops_bench.train_step_flops_per_s(
          config, p["batch"], p["seq"], attention_impl=impl, remat=p["remat"], chunk=p["chunk"],
          iters=p["iters"])
      return {"step_ms": seconds * 1e3, "tflops": achieved / 1e12,
              "mfu_vs_matmul": _ratio(achieved, s.matmul_rate),
              "mfu_vs_published": _ratio(achieved, s.peak)}
    guarded(items, impl, s, "update_mfu", one)
  return {"params_B": config.num_params / 1e9, "tokens": f"{p['batch']} x {p['seq']}",
          "step_tflop": flops / 1e12, "remat": p["remat"], "auto_kernel": auto}


# ---------------------------------------------------------------------- c) sampler (+ Tunix)


def _prompts(batch: int, length: int, vocab: int) -> list[list[int]]:
  # Ids >= 1: Tunix treats its pad id (0 here) inside a prompt as padding.
  return np.random.default_rng(0).integers(1, vocab, (batch, length)).tolist()


def _sampler_model(s: Suite) -> Decoder:
  if "sampler_model" not in s.shared:
    # "auto" attention: the trainer's; the prefill of long contexts needs a linear-memory kernel.
    s.shared["sampler_model"] = Decoder(s.p["model"], rngs=nnx.Rngs(0), param_dtype="bfloat16",
                                        attention_impl="auto")
  return s.shared["sampler_model"]


def time_ours(s: Suite, batch: int, prompt: int, new: int, mode: str, iters: int) -> dict:
  model, config = _sampler_model(s), s.p["model"]
  prompts = _prompts(batch, prompt, config.vocab_size)
  params = SamplingParams(max_new_tokens=new, greedy=mode == "greedy", temperature=1.0,
                          stop_ids=())  # forced: no stop token
  first, seconds = first_and_median(
      lambda: generate(model, prompts, params, jax.random.key(0), prompt_buckets=(prompt,)).tokens,
      iters)
  roof = None  # without measured ceilings (their section failed) there is no roofline
  if s.bandwidth and s.matmul_rate:
    roof = sampler_bench.roofline_seconds(config, batch, prompt, new, s.bandwidth, s.matmul_rate)
  return {"batch": batch, "prompt": prompt, "new": new, "mode": mode,
          "tokens_per_s": batch * new / seconds,
          "roofline_tokens_per_s": None if roof is None else batch * new / roof,
          "roofline_fraction": _ratio(roof, seconds), "seconds": seconds, "first_call_s": first}


class _IdsTokenizer:
  """Tunix's Sampler takes strings; here a "string" is space-separated token ids."""

  def encode(self, text, **_):
    return [int(t) for t in text.split()]

  def decode(self, ids, **_):  # pylint: disable=unused-argument
    return ""

  def bos_id(self):
    return None  # falsy: Tunix prepends no BOS

  def eos_id(self):
    return -1  # never sampled: every row runs to max_generation_steps

  def pad_id(self):
    return 0


TUNIX_SHIMS: list[str] = []


def _tunix_jax_shims() -> None:
  """Tunix 0.1.7 uses two jax APIs deprecated since jax 0.8 (untested on a jax without them):
  `jax.interpreters.pxla.thread_resources` (read on every forward) and the module
  `jax.experimental.shard_map` (its TPU splash path only). Put them back when missing."""
  import warnings  # pylint: disable=import-outside-toplevel
  from jax.interpreters import pxla  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if not hasattr(pxla, "thread_resources"):
      from jax._src import mesh as jax_mesh  # pylint: disable=import-outside-toplevel
      pxla.thread_resources = jax_mesh.thread_resources
      TUNIX_SHIMS.append("pxla.thread_resources")
    try:
      importlib.import_module("jax.experimental.shard_map")
    except ImportError:
      shim = types.ModuleType("jax.experimental.shard_map")
      shim.shard_map = jax.shard_map
      sys.modules["jax.experimental.shard_map"] = shim
      TUNIX_SHIMS.append("jax.experimental.shard_map")


def import_tunix():
  """(tunix.generate.sampler, tunix.models.qwen2.model, version); ImportError if absent.

  Only these two modules are imported: when the package itself is not imported
  yet, a bare `tunix` package object stands in for tunix/__init__.py, which
  imports Tunix's whole trainer stack (and so needs a dozen more packages).
  """
  spec = importlib.util.find_spec("tunix")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("not installed")
  version = _version("google-tunix") or "unknown"
  _tunix_jax_shims()
  if "tunix" not in sys.modules:
    pkg = types.ModuleType("tunix")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__, pkg.__version__ = spec, version
    sys.modules["tunix"] = pkg
  import tunix.generate.sampler as tunix_sampler  # pylint: disable=import-outside-toplevel
  import tunix.models.qwen2.model as tunix_qwen2  # pylint: disable=import-outside-toplevel
  return tunix_sampler, tunix_qwen2, version


def tunix_sampler_for(config: ModelConfig, cache_size: int):
  """A Tunix Sampler over a random bf16 Tunix Qwen2 of `config`'s shape."""
  tunix_sampler, tunix_qwen2, _ = import_tunix()
  fields = {f.name for f in dataclasses.fields(tunix_qwen2.ModelConfig)}
  kwargs = dict(num_layers=config.num_layers, vocab_size=config.vocab_size,
                embed_dim=config.hidden_size, hidden_dim=config.intermediate_size,
                num_heads=config.num_heads, head_dim=config.head_dim,
                num_kv_heads=config.num_kv_heads, rope_theta=int(config.rope_theta),
                norm_eps=config.rms_norm_eps, use_tied_embedding=config.tie_embeddings,
                dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  model = tunix_qwen2.Qwen2(tunix_qwen2.ModelConfig(**{k: v for k, v in kwargs.items()
                                                       if k in fields}), rngs=nnx.Rngs(0))
  cache = tunix_sampler.CacheConfig(cache_size=cache_size, num_layers=config.num_layers,
                                    num_kv_heads=config.num_kv_heads, head_dim=config.head_dim)
  return tunix_sampler.Sampler(model, _IdsTokenizer(), cache)


def time_tunix(s: Suite, batch: int, prompt: int, new: int, mode: str, iters: int) -> dict:
  config = s.p["model"]
  key = ("tunix", prompt + new)
  if key not in s.shared:
    s.shared[key] = tunix_sampler_for(config, prompt + new)
  sampler = s.shared[key]
  texts = [" ".join(map(str, row)) for row in _prompts(batch, prompt, config.vocab_size)]
  # greedy: Tunix's default mode (top_p=None); "T=1.0" goes through its top-p path.
  sample = dict(temperature=0.0) if mode == "greedy" else dict(temperature=1.0, top_p=1.0)

  def run():
    out = sampler(texts, max_generation_steps=new, max_prompt_length=prompt, eos_tokens=[-1],
                  seed=0, **sample)
    lengths = {len(t) for t in out.tokens}
    if lengths != {new}:
      raise RuntimeError(f"Tunix returned lengths {sorted(lengths)[:5]}, expected {new}")
    return out.tokens
  first, seconds = first_and_median(run, iters)
  return {"batch": batch, "prompt": prompt, "new": new, "mode": mode,
          "tokens_per_s": batch * new / seconds, "seconds": seconds, "first_call_s": first}


def section_sampler(s: Suite, p: dict, items: dict):
  for batch in p["batches"]:
    for mode in p["modes"]:
      row = guarded(items, f"b{batch} {mode}", s, "sampler",
                    lambda b=batch, m=mode: time_ours(s, b, p["prompt"], p["new"], m, p["iters"]))
      s.shared[("ours", batch, p["prompt"], mode)] = row
  notes = {"params_B": s.p["model"].num_params / 1e9, "prompt": p["prompt"], "new": p["new"],
           "stop": "none (forced)"}
  try:
    _, _, version = import_tunix()
  except Exception as e:  # pylint: disable=broad-except
    notes["tunix"] = "not installed" if isinstance(e, ModuleNotFoundError) and \
        str(e) == "not installed" else f"import failed: {_error(e)}"
    for batch in p["batches"]:
      items[f"tunix b{batch} {p['tunix_mode']}"] = {"skipped": f"tunix {notes['tunix']}"}
    return notes
  notes["tunix"] = version
  if TUNIX_SHIMS:
    notes["tunix_jax_shims"] = ", ".join(TUNIX_SHIMS)
  for batch in p["batches"]:
    mode = p["tunix_mode"]
    row = guarded(items, f"tunix b{batch} {mode}", s, "tunix",
                  lambda b=batch, m=mode: time_tunix(s, b, p["prompt"], p["new"], m, p["iters"]))
    ours = s.shared.get(("ours", batch, p["prompt"], mode)) or {}
    if "tokens_per_s" in row and "tokens_per_s" in ours:
      row["ours_speedup"] = ours["tokens_per_s"] / row["tokens_per_s"]
  s.shared.pop(("tunix", p["prompt"] + p["new"]), None)
  return notes


def _generate_estimate(s: Suite, batch: int, prompt: int, new: int, calls: int) -> float:
  """Rough seconds of `calls` generate() calls: prefill at its FLOPs and the decode
  roofline, both at the preset's assumed efficiency (compilation: the item time)."""
  if not (s.bandwidth and s.matmul_rate):
    return 0.0
  c = s.p["model"]
  prefill = (2 * c.num_params * batch * prompt
             + 2 * batch * prompt**2 * c.num_layers * c.num_heads * c.head_dim) / s.matmul_rate
  roof = sampler_bench.roofline_seconds(c, batch, prompt, new, s.bandwidth, s.matmul_rate)
  return calls * (prefill + roof) / s.p.get("efficiency", 1.0)


def section_sampler_scaling(s: Suite, p: dict, items: dict):
  rows = [(b, p["prompt"]) for b in p["batches"]]
  rows += [(p["context_batch"], c) for c in p["contexts"]]
  for batch, prompt in rows:
    name = f"b{batch} ctx{prompt}"
    done = s.shared.get(("ours", batch, prompt, p["mode"]))
    if done and "tokens_per_s" in done:
      items[name] = dict(done, note="from the sampler section")
      continue
    guarded(items, name, s, "sampler_scaling",
            lambda b=batch, c=prompt: time_ours(s, b, c, p["new"], p["mode"], p["iters"]),
            estimate_s=_generate_estimate(s, batch, prompt, p["new"], 1 + p["iters"]))
  return {"new": p["new"], "mode": p["mode"]}


# ---------------------------------------------------------------------- d) masks


def _trie(s: Suite):
  if "trie" not in s.shared:
    # pylint: disable=import-outside-toplevel
    from hicra_jax import assets
    from hicra_jax.models import load_tokenizer
    from hicra_jax.planning import SGTrie, load_strategic_grams
    start = time.perf_counter()
    tok = load_tokenizer(assets.qwen3_tokenizer_dir())
    trie = SGTrie.build(load_strategic_grams("paper"), tok)
    s.shared.update(tokenizer=tok, trie=trie, trie_build_s=time.perf_counter() - start)
  return s.shared["trie"]


def section_masks(s: Suite, p: dict, items: dict):
  from hicra_jax.planning import planning_mask, planning_mask_and_counts  # pylint: disable=C0415
  trie = _trie(s)
  ids = mask_bench.corpus_ids(s.shared["tokenizer"], s.data_dir)
  real = os.path.isfile(os.path.join(s.data_dir, "math500", "math500_test.jsonl"))
  rng = np.random.default_rng(0)
  for n, t in p["shapes"]:
    def one(n=n, t=t):
      tokens = np.tile(ids, -(-n * t // len(ids)))[:n * t].reshape(n, t)
      mask = np.arange(t)[None, :] < rng.integers(t // 2, t + 1, size=n)[:, None]
      tokens_d, mask_d = jax.device_put(tokens), jax.device_put(mask)
      first, both, (m, c) = mask_bench.time_fn(planning_mask_and_counts, tokens_d, trie, mask_d,
                                               iters=p["iters"])
      _, mask_only, _ = mask_bench.time_fn(planning_mask, tokens_d, trie, mask_d,
                                           iters=p["iters"])
      return {"mask_counts_ms": both * 1e3, "mask_only_ms": mask_only * 1e3,
              "tokens_per_s": n * t / both, "first_call_s": first,
              "planning_fraction": float(jnp.sum(m)) / float(mask.sum()),
              "occurrences": int(jnp.sum(c))}
    guarded(items, f"{n}x{t}", s, "masks", one)
  return {"trie": repr(trie), "trie_build_s": s.shared["trie_build_s"],
          "corpus": "MATH500 + GSM8K solutions" if real else "SG list sentences (no data dir)"}


# ---------------------------------------------------------------------- e) RL step


def _rl_trainer(s: Suite, p: dict, workdir: str, stop_ids: tuple[int, ...]):
  """A Trainer as benchmarks/rl_step.py builds it (random model, synthetic reward, SG trie)."""
  # pylint: disable=import-outside-toplevel
  from hicra_jax.commands import train as train_cmd
  from hicra_jax.planning import planning_mask_and_counts
  from hicra_jax.train import synthetic
  from hicra_jax.train.loop import Components, Trainer
  # pylint: enable=import-outside-toplevel
  mcfg, trie = s.p["model"], _trie(s)
  c = train_cmd.get_config()
  c.workdir, c.num_steps = workdir, 3
  c.model.dtype, c.model.compute_dtype, c.model.remat = p["dtype"], p["compute"], p["remat"]
  c.rollout.prompts_per_step, c.rollout.group_size = p["prompts"], p["group"]
  c.rollout.max_new_tokens, c.rollout.prompt_buckets = (p["new"],), (p["prompt_len"],)
  c.rollout.truncation_threshold = 1.0
  c.loss.micro_batch_size, c.optim.lr = p["micro"], 1e-6
  c.log.tensorboard, c.export_policy = False, False
  c.checkpoint.every, c.checkpoint.async_save = 10**6, True
  model = Decoder(mcfg, rngs=nnx.Rngs(0), param_dtype=p["dtype"], compute_dtype=p["compute"],
                  remat=p["remat"], attention_impl=p["attention"])
  rng = np.random.default_rng(0)
  examples = [{"id": i, "prompt_ids": rng.integers(1, mcfg.vocab_size, p["prompt_len"]).tolist()}
              for i in range(4 * p["prompts"])]
  comps = Components(model=model, examples=examples, reward_fn=synthetic.synthetic_reward_fn(5),
                     planner=lambda t, m: planning_mask_and_counts(t, trie, m), stop_ids=stop_ids)
  return Trainer(train_cmd.validate(c), comps)


SPLIT = ("step_s", "rollout_s", "reward_s", "masks_s", "update_s")  # the trainer's time_* metrics


def section_rl_step(s: Suite, p: dict, items: dict):
  mcfg = s.p["model"]
  n, seq = p["prompts"] * p["group"], p["prompt_len"] + p["new"]
  flops = 6 * mcfg.num_params * n * seq \
      + 12 * n * seq**2 * mcfg.num_layers * mcfg.num_heads * mcfg.head_dim
  # Ragged: about 1 in stop_every vocabulary ids stops a row. Forced: as many stop
  # ids, all outside the vocabulary (never sampled), so both phases run the same
  # compiled programs: one trainer, one compilation, steps 1 (compiles), 2 (forced),
  # 3 (ragged).
  ragged = tuple(range(7, mcfg.vocab_size, p["stop_every"]))
  forced = tuple(range(mcfg.vocab_size + 7, mcfg.vocab_size + 7 + len(ragged)))
  workdir = tempfile.mkdtemp(prefix="device_suite_rl_")
  start = time.perf_counter()
  try:
    trainer = _rl_trainer(s, p, workdir, forced)
  except BaseException:
    shutil.rmtree(workdir, ignore_errors=True)
    raise
  notes = {"rows": n, "prompt": p["prompt_len"], "new": p["new"], "micro": p["micro"],
           "dtype": f"{p['dtype']} master, {p['compute']} compute",
           "stop_ids_ragged": len(ragged), "trainer_build_s": time.perf_counter() - start}

  def step():
    row = trainer.train_step()
    if not row:
      raise RuntimeError("train_step returned no metrics (interrupted)")
    step_s = row["time_step_s"]
    out = {k: row[f"time_{k}"] for k in SPLIT}
    update_rate = flops / row["time_update_s"]
    out.update(masks_fraction=row["time_masks_s"] / step_s, mean_length=row["response_length_mean"],
               tokens_per_s=row["tokens_per_s"],
               rollout_tokens_per_s=row["tokens_per_s"] * step_s / row["time_rollout_s"],
               update_tflops=update_rate / 1e12,
               update_mfu_vs_matmul=_ratio(update_rate, s.matmul_rate),
               update_mfu_vs_published=_ratio(update_rate, s.peak))
    return out
  try:
    row = step()
    items["compile (forced)"] = {k: row[k] for k in SPLIT}
    guarded(items, "forced", s, "rl_step", step)
    trainer.c = dataclasses.replace(trainer.c, stop_ids=ragged)
    guarded(items, "ragged", s, "rl_step", step)
    if p.get("refill_slots"):
      slots = p["refill_slots"]
      notes["refill_slots"] = slots
      # With refill first (the figure wanted), then without, in calls of as many rows.
      for name, fields in (("ragged refill", dict(refill_slots=slots)),
                           ("ragged calls", dict(refill_slots=0, rows_per_call=str(slots)))):
        guarded(items, name, s, "rl_step", lambda fields=fields: _step_with(
            trainer, step, p, **fields))
      with_refill = items["ragged refill"].get("rollout_tokens_per_s")
      without = items["ragged calls"].get("rollout_tokens_per_s")
      notes["refill_speedup_rollout"] = _ratio(with_refill, without)
  finally:
    trainer.close()
    shutil.rmtree(workdir, ignore_errors=True)
  notes["update_flop"] = flops
  return notes


def _step_with(trainer, step, p: dict, **rollout_fields) -> dict:
  """step() with these rollout settings, after one untimed rollout that compiles their
  sampler programs (recorded as warmup_s)."""
  config = trainer.config
  trainer.config = dataclasses.replace(config, rollout=dataclasses.replace(
      config.rollout, **rollout_fields))
  rng = np.random.default_rng(1)
  examples = [{"prompt_ids": rng.integers(1, trainer.c.model.config.vocab_size,
                                          p["prompt_len"]).tolist()} for _ in range(p["prompts"])]
  start = time.perf_counter()
  trainer._sample(examples, jax.random.key(1), n=p["group"],  # pylint: disable=protected-access
                  temperature=config.rollout.temperature)
  warmup_s = time.perf_counter() - start
  return {**step(), "warmup_s": warmup_s}


# ---------------------------------------------------------------------- f) attention parity


PARITY_TOL = {"float32": 1e-4, "bfloat16": 5e-2}  # max |logit diff| / max |logit|


def section_attention_parity(s: Suite, p: dict, items: dict):  # pylint: disable=unused-argument
  for impl in (a for a in ATTENTION_IMPLS if a not in ("auto", "xla")):
    skip = needs_backend(impl, s.backend)
    if skip:
      items[f"{impl} vs xla"] = {"skipped": skip}
      continue

    def one(impl=impl):
      diff, scale = flops_bench.check_attention(s.p["model"], impl)
      dtype = "bfloat16" if impl == "cudnn" else "float32"
      rel = diff / max(scale, 1e-30)
      return {"dtype": dtype, "max_abs_diff": diff, "max_abs_logit": scale, "relative": rel,
              "tolerance": PARITY_TOL[dtype], "ok": rel <= PARITY_TOL[dtype]}
    guarded(items, f"{impl} vs xla", s, "attention_parity", one)
  return {"batch": "4 x 256, rows padded left (17, 100) and right (200)", "layers": 2,
          "precision": "highest"}


SECTIONS = {"ceilings": section_ceilings, "attention_parity": section_attention_parity,
            "update_mfu": section_update_mfu, "sampler": section_sampler,
            "masks": section_masks, "rl_step": section_rl_step,
            "sampler_scaling": section_sampler_scaling}
assert tuple(SECTIONS) == ORDER


# ---------------------------------------------------------------------- targets


def targets(s: Suite) -> dict:
  """Every target as value / target ratio (>= 1 met); value None when not measured."""
  sec = {k: v.get("items", {}) for k, v in s.report["sections"].items()}
  out = {}

  def add(name, value, target, ratio, note=""):
    out[name] = {"doc": TARGETS_DOC[name], "value": value, "target": target, "ratio": ratio,
                 "met": None if ratio is None else ratio >= 1.0, "note": note}

  # The preset's two sampler batches stand for 64 and 256 (cpu-small: smaller ones).
  sampler, batches = sec.get("sampler", {}), s.p["sampler"]["batches"]
  for i, (b, want) in enumerate(((64, 1.4), (256, 2.0))):
    batch = batches[min(i, len(batches) - 1)]
    row = sampler.get(f"b{batch} T=1.0", {})
    frac = row.get("roofline_fraction")
    add(f"decode_roofline_b{b}", frac, 0.5, _ratio(frac, 0.5),
        row.get("skipped") or row.get("error") or f"batch {batch}")
    row = sampler.get(f"tunix b{batch} greedy", {})
    speed = row.get("ours_speedup")
    add(f"vs_tunix_b{b}", speed, want, _ratio(speed, want),
        row.get("skipped") or row.get("error") or f"batch {batch}")
  mfu = sec.get("update_mfu", {})
  auto = auto_kernel(s.backend, half_precision=True)
  val = mfu.get(auto, {}).get("mfu_vs_matmul")
  best = max(((r["mfu_vs_matmul"], k) for k, r in mfu.items() if r.get("mfu_vs_matmul")),
             default=None)
  add("update_mfu", val, 0.45, _ratio(val, 0.45),
      f"{auto}" + ("" if best is None else f"; best {best[1]} {best[0]:.1%}"))
  masks = sec.get("masks", {})
  key = "512x4096" if "512x4096" in masks else next(iter(masks), None)
  ms = masks.get(key, {}).get("mask_counts_ms") if key else None
  add("masks_512x4096", ms, 5.0, None if not ms else 5.0 / ms, key or "")
  rl = sec.get("rl_step", {}).get("forced", {})
  share = rl.get("masks_fraction")
  add("masks_share_rl_step", share, 0.01, None if not share else 0.01 / share)
  val = rl.get("update_mfu_vs_matmul")
  add("rl_update_mfu", val, 0.40, _ratio(val, 0.40), "forced step")
  return out


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-1.5b")
  parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "out"),
                      help="folder for device_suite.json/.md (default: $OUT, else benchmarks/out)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="time box in seconds (default: the preset's, 480); later sections are "
                           "skipped with a note")
  parser.add_argument("--sections", default=",".join(ORDER),
                      help=f"comma-separated subset of {','.join(ORDER)} (ceilings always run)")
  parser.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"),
                      help="MATH500/GSM8K jsonl folder of the mask corpus (else SG sentences)")
  args = parser.parse_args(argv)
  wanted = {x.strip() for x in args.sections.split(",") if x.strip()}
  unknown = wanted - set(ORDER)
  if unknown:
    parser.error(f"unknown sections {sorted(unknown)}; expected some of {ORDER}")
  budget = args.budget_s if args.budget_s is not None else PRESETS[args.preset]["budget_s"]
  suite = Suite(args.preset, os.path.abspath(args.out), budget, args.data)
  r = suite.report
  print(f"device_suite {args.preset}: {r['device']} ({r['backend']} x{r['device_count']}), "
        f"jax {r['jax']}, flax {r['flax']}; budget {budget:.0f} s; out {suite.out}", flush=True)

  def on_term(signum, frame):  # a timeout's SIGTERM: record the section in flight, then stop
    raise KeyboardInterrupt(f"signal {signum}")
  try:
    previous = signal.signal(signal.SIGTERM, on_term)
  except ValueError:  # not the main thread: no handler
    previous = None
  try:
    for name in ORDER:
      if name == "ceilings" or name in wanted:
        suite.run(name, SECTIONS[name])
    r["finished"] = True
  except KeyboardInterrupt:
    print("interrupted; partial results written", flush=True)
  finally:
    suite.write()
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
  print("## targets (ratio >= 1: met)")
  for name, t in r["targets"].items():
    print(f"{name}: value {_fmt(t['value'])}, target {t['target']}, ratio {_fmt(t['ratio'])} "
          f"({'n/a' if t['met'] is None else 'MET' if t['met'] else 'NOT MET'}) {t['note']}")
  print(f"wrote {os.path.join(suite.out, 'device_suite.json')} and device_suite.md "
        f"({suite.elapsed():.1f} s)", flush=True)
  return 0 if r["finished"] else 1


if __name__ == "__main__":
  sys.exit(main())
