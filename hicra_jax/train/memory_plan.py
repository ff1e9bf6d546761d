"""A run's per-device memory plan, from its config and the model's config.json alone.

`hicra-jax train --config.dry_run=True` prints it; a real run checks it before
loading weights. Nothing here loads weights; only `plan_on_this_machine` reads
the devices (their count and memory):

  model_config = read_model_config(run.model)      # config.json (or GGUF metadata) only
  plan = memory_plan(run, model_config, devices=8, device_bytes=80 * 2**30, platform="gpu")
  print(plan.report()); plan.fits; plan.advice()

A run holds three kinds of memory per device, at different times:

  resident   params + AdamW state (+ the KL reference copy), for the whole run
  rollout    one generate call: its KV cache and its logits
  update     the gradients, the update's batch and one micro-batch's activations

Rollout and update never overlap (the KV cache is freed before the update), so
the peak is resident + max(rollout, update). Each item's formula is in the
docstring of the function computing it (`_weights`, `memory_plan` (the rollout),
`update_batch_bytes`, `activation_bytes`). They are estimates: XLA's buffer
assignment can reuse or duplicate a buffer; tests/test_memory_plan.py holds the
activations within a factor of 2 of XLA's compiled temp memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax

from hicra_jax import config as config_lib
from hicra_jax.models import KVCache, ModelConfig, VisionConfig
from hicra_jax import sharding
from hicra_jax.data.images import PROCESSOR_FILE
from hicra_jax.models.attention import BLOCK, auto_kernel
from hicra_jax.models.gguf import open_gguf
from hicra_jax.models.paths import resolve_model
from hicra_jax.models.vision_inputs import bucket_windows
from hicra_jax.sampling.sampler import prompts_per_call
from hicra_jax.train.run_config import RANDOM_MODEL, MeshConfig, ModelSettings, RunConfig

GIB = 1024 ** 3
# Qwen2.5-VL-7B-Instruct's preprocessor_config.json max_pixels (16384 image tokens).
QWEN25_VL_MAX_PIXELS = 12845056
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
# Rows of the flattened [N*T] axis whose float32 logits the update holds at once
# (models/logprobs.py token_logprobs_and_entropy's default chunk_size).
LOGITS_CHUNK = 512
MEMORY_EFFICIENT = ("chunked", "cudnn", "splash")  # attention kernels linear in the length


def read_model_config(model: ModelSettings) -> ModelConfig:
  """The architecture of a `model` section, read from config.json (or GGUF metadata) only.

  "random" -> model.random; a .gguf file or "smollm2" -> its metadata (no tensor
  is read); a directory -> its config.json; a Hub id -> only its config.json is
  resolved (from the cache, or downloaded unless HF_HUB_OFFLINE is set).

  Raises:
    FileNotFoundError: no config.json / GGUF file where the path points.
  """
  if model.path == RANDOM_MODEL:
    return ModelConfig(**dataclasses.asdict(model.random))
  path = resolve_model(model.path, files=("config.json",))
  if path.endswith(".gguf"):
    return ModelConfig.from_hf(dict(open_gguf(path).config))
  return ModelConfig.from_hf(path if os.path.isdir(path) else os.path.dirname(path))


def mesh_sizes(mesh: MeshConfig, devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with the -1 axis resolved to the rest of `devices`.

  Raises:
    ValueError: the sizes cannot cover `devices` (as sharding.make_mesh would say).
  """
  if (mesh.data, mesh.fsdp, mesh.tensor) == (1, 1, 1):  # no mesh: one device, whatever else
    return 1, 1, 1
  return sharding.mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, devices)


def resolve_attention(attention: str, compute_dtype: str, platform: str) -> str:
  """The kernel "auto" picks on `platform` (models/attention.py auto_attention); others as is."""
  if attention != "auto":
    return attention
  return auto_kernel(platform, half_precision=compute_dtype == "bfloat16")


def _per_token_layer_elements(config: ModelConfig, remat: str) -> int:
  """Activation elements one layer keeps per token for its backward under `remat` (no attention).

  `_layer_elements` with the decoder's widths."""
  return _layer_elements(config.hidden_size, config.intermediate_size,
                         config.num_heads * config.head_dim,
                         config.num_kv_heads * config.head_dim, remat)


def _layer_elements(d: int, f: int, qw: int, kw: int, remat: str) -> int:
  """Activation elements a pre-norm attention + gated-MLP block keeps per position.

  With D = hidden, F = intermediate, Qw = heads x head_dim, Kw = kv heads x head_dim
  (the vision tower's blocks: D = Qw = Kw):
    "none"          4D + 3Qw + 3Kw + 4F: the layer input, both norm outputs, the
                    residual after attention, q/k/v before and q/k after RoPE, the
                    attention output, gate, up, silu(gate) and silu(gate) x up
    "dots"          2D + 2Qw + 2Kw + 2F: every matmul output (q, k, v, attention
                    output, wo, gate, up, down)
    "dots_no_batch" 2D + Qw + 2Kw + 2F: the projections' outputs (the attention
                    einsums have batch dims and are recomputed)
    "full"          D: the layer input only (the scan carry)
  """
  return {"none": 4 * d + 3 * qw + 3 * kw + 4 * f,
          "dots": 2 * d + 2 * qw + 2 * kw + 2 * f,
          "dots_no_batch": 2 * d + qw + 2 * kw + 2 * f,
          "full": d}[remat]


def activation_bytes(config: ModelConfig, *, rows: int, seq_len: int, remat: str,
                     attention: str, compute_bytes: int) -> int:
  """Bytes of one micro-batch's forward + backward activations on one device.

  tokens = rows x seq_len (rows: the micro-batch rows on this device), c =
  compute_bytes, L = layers, Q = query heads, V = vocab:

    saved     L x tokens x (elements(remat) x c + attention residual): what the
              layer scan keeps for the backward (`_per_token_layer_elements`);
              the attention residual is, for "none" and "dots", Q x S x (4 + c)
              per token for xla (float32 scores and the probabilities) and Q x 4
              (the log-sum-exp) for the memory-efficient kernels; nothing otherwise
    one layer tokens x 2 x elements("none") x c: the layer the backward recomputes,
              with its cotangents, plus its attention working set: xla 3 x Q x S x 4
              per token (scores, probabilities, their gradient), memory-efficient
              kernels 2 x rows x Q x BLOCK x BLOCK x 4 (one block pair of scores and
              its gradient at a time; their O(T) outputs are in the cotangents)
    stream    tokens x D x (3 x c + 4): embeddings, final norm (float32 inside) and
              the hidden-state cotangent
    logits    3 x LOGITS_CHUNK x V x 4 + D x V x 4: one chunk of float32 logits
              with its softmax and gradient, and the float32 head gradient
  """
  d, v, q = config.hidden_size, config.vocab_size, config.num_heads
  tokens = rows * seq_len
  dense = attention not in MEMORY_EFFICIENT
  saved_attention = 0
  if remat in ("none", "dots"):
    saved_attention = q * seq_len * (4 + compute_bytes) if dense else q * 4
  per_token = _per_token_layer_elements(config, remat) * compute_bytes + saved_attention
  saved = config.num_layers * tokens * per_token
  one_layer = tokens * 2 * _per_token_layer_elements(config, "none") * compute_bytes
  if dense:
    one_layer += tokens * q * seq_len * 4 * 3
  else:
    one_layer += 2 * rows * q * min(BLOCK, seq_len) ** 2 * 4
  stream = tokens * d * (3 * compute_bytes + 4)
  logits = 3 * min(LOGITS_CHUNK, tokens) * v * 4 + d * v * 4
  return saved + one_layer + stream + logits


def image_patch_slots(vision: VisionConfig, max_pixels: int) -> int:
  """Patch slots X of a row holding one square image of at most max_pixels pixels.

  The processor resizes an image to sides that are multiples of patch_size x
  spatial_merge_size (28 px for Qwen2.5-VL): a square one of max_pixels has
  floor(sqrt(max_pixels) / 28) image tokens a side. `VisionInputs` lays it out in
  windows of window_units x window_units tokens, their count rounded up by
  `bucket_windows`, each a block of window_patches slots.
  """
  side = max(1, math.isqrt(max_pixels) // (vision.patch_size * vision.spatial_merge_size))
  windows = (-(-side // vision.window_units)) ** 2
  return bucket_windows(windows) * vision.window_patches


def vision_activation_bytes(config: ModelConfig, *, rows: int, patch_slots: int, remat: str,
                            attention: str, compute_bytes: int) -> int:
  """Bytes of the vision tower's forward + backward activations for one micro-batch's rows.

  patches = rows x patch_slots (X), c = compute_bytes, J / F / Q the tower's
  width, MLP width and heads, W = window_patches, depth blocks of which B attend
  fully (the decoder's kernel: "xla" dense, else "chunked"), the rest in windows
  (always dense):

    saved     patches x depth x (elements(remat) x c + attention residuals):
              `_layer_elements(J, F, J, J, remat)`; every block keeps both
              attentions' residuals (lax.cond picks one per block): under "none"
              and "dots" Q x W x (4 + c) for windows, and for full attention
              Q x X x (4 + c) dense or Q x 4 chunked
    one block patches x 2 x elements("none") x c, plus the larger attention working
              set: windows patches x Q x W x 12; full, dense patches x Q x X x 12,
              chunked 2 x rows x Q x BLOCK x BLOCK x 4
    ends      patches x (C x 4 + J x (5c + 4)): the float32 pixels, the patch
              embedding, the merger's norm (float32 inside) and its 4J-wide hidden
              layer with GELU and gradient (per merge unit of 4 patches), plus
              units x D x c of image embeddings
  """
  v = config.vision
  j, f, q, c, w = v.hidden_size, v.intermediate_size, v.num_heads, compute_bytes, v.window_patches
  patches = rows * patch_slots
  full_blocks = len(v.fullatt_block_indexes)
  dense_full = attention not in MEMORY_EFFICIENT
  keeps_scores = remat in ("none", "dots")
  window_residual = q * w * (4 + c) if keeps_scores else 0
  full_residual = 0
  if keeps_scores:
    full_residual = q * patch_slots * (4 + c) if dense_full else q * 4
  # The blocks pick window or full attention with lax.cond, whose backward keeps both
  # branches' residuals (one of them zeros) in every block.
  saved = patches * v.depth * (_layer_elements(j, f, j, j, remat) * c + window_residual
                               + (full_residual if full_blocks else 0))
  full_work = (patches * q * patch_slots * 12 if dense_full
               else 2 * rows * q * min(BLOCK, patch_slots) ** 2 * 4)
  one_block = (patches * 2 * _layer_elements(j, f, j, j, "none") * c
               + max(patches * q * w * 12, full_work if full_blocks else 0))
  units = patches // v.merge_unit
  ends = patches * (v.patch_dim * 4 + j * (5 * c + 4)) + units * config.hidden_size * c
  return saved + one_block + ends


def image_max_pixels(config: RunConfig) -> int:
  """The most pixels an image keeps after resizing: data.image_max_pixels, else the model
  folder's preprocessor_config.json, else Qwen2.5-VL's published default."""
  if config.data.image_max_pixels:
    return config.data.image_max_pixels
  folder = resolve_model(config.model.path, files=(PROCESSOR_FILE,))
  path = os.path.join(folder, PROCESSOR_FILE)
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      processor = json.load(f)
    size = processor.get("size") or {}
    value = processor.get("max_pixels") or size.get("longest_edge")
    if value:
      return int(value)
  return QWEN25_VL_MAX_PIXELS


def update_batch_bytes(rows: int, seq_len: int, completion_len: int, *, sampler: bool,
                       kl: bool) -> int:
  """Bytes of the update's `Batch` on one device (rows: the batch's rows on it).

  Per row: seq_len x 5 (int32 tokens, bool attention) + completion_len x (4 + 1 + 1 + 4)
  (float32 advantages, bool completion and planning masks, float32 old log-probs),
  + completion_len x 4 for the sampler's log-probs and again for the reference's.
  """
  per_completion = 10 + 4 * sampler + 4 * kl
  return rows * (seq_len * 5 + completion_len * per_completion)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Per-device bytes of a run; `fits`, `report()` and `advice()` read them.

  Items (bytes per device): params, optimizer, gradients, reference (resident or
  update, see the module docstring), kv_cache, rollout_logits (one generate call),
  update_batch, activations (one micro-batch). device_bytes: the memory of one
  device, None when unknown (then `fits` is True: nothing to check against).
  """

  params: int
  optimizer: int
  gradients: int
  reference: int
  kv_cache: int
  rollout_logits: int
  update_batch: int
  activations: int
  device_bytes: int | None
  devices: int
  mesh: tuple[int, int, int]  # (data, fsdp, tensor), resolved
  rows_per_call: int  # rollout rows of one generate call (all shards)
  micro_rows: int  # micro-batch rows on one device
  seq_len: int  # update sequence: largest prompt bucket + largest max_new_tokens
  attention: str  # resolved kernel
  remat: str
  # A vision-language model: the tower's micro-batch activations, one image of
  # `image_max_pixels` per row (image_patches slots each); 0 for a text model.
  vision_activations: int = 0
  image_patches: int = 0
  # What `advice` re-plans from (not figures: left out of equality and repr).
  config: RunConfig = dataclasses.field(compare=False, repr=False, default=None)
  model_config: ModelConfig = dataclasses.field(compare=False, repr=False, default=None)
  platform: str = dataclasses.field(compare=False, repr=False, default="gpu")

  @property
  def resident(self) -> int:
    return self.params + self.optimizer + self.reference

  @property
  def rollout(self) -> int:
    return self.kv_cache + self.rollout_logits

  @property
  def update(self) -> int:
    return self.gradients + self.update_batch + self.activations + self.vision_activations

  @property
  def total(self) -> int:
    """The peak: resident + the larger of the rollout and the update."""
    return self.resident + max(self.rollout, self.update)

  @property
  def fits(self) -> bool:
    return self.device_bytes is None or self.total <= self.device_bytes

  def report(self) -> str:
    """One line per item in GiB, the phases, the peak and the device memory."""
    data, fsdp, tensor = self.mesh
    attention = self.attention
    if self.config is not None and self.config.model.attention == "auto":
      attention = f"auto -> {attention} on {self.platform}"
    lines = [f"memory plan per device ({self.devices} devices, mesh data={data} fsdp={fsdp} "
             f"tensor={tensor}; attention {attention}, remat {self.remat})"]
    items = (("params", self.params), ("optimizer state (AdamW)", self.optimizer),
             ("KL reference params", self.reference),
             (f"rollout KV cache ({self.rows_per_call} rows/call)", self.kv_cache),
             ("rollout logits", self.rollout_logits),
             ("gradients (accumulator + micro-batch)", self.gradients),
             ("update batch", self.update_batch),
             (f"update activations ({self.micro_rows} rows x {self.seq_len} tokens)",
              self.activations))
    if self.image_patches:
      items += ((f"vision tower activations ({self.micro_rows} rows x {self.image_patches} "
                 "patches)", self.vision_activations),)
    phases = f"+ max(rollout {self.rollout / GIB:.2f}, update {self.update / GIB:.2f})"
    items += (("= resident (params, optimizer, reference)", self.resident),
              (phases, max(self.rollout, self.update)), ("total (peak)", self.total))
    lines += [f"  {name:<52} {value / GIB:9.2f} GiB" for name, value in items]
    if self.device_bytes is None:
      lines.append(f"  {'device memory':<52} {'unknown':>9}     (not checked)")
    else:
      verdict = "fits" if self.fits else "DOES NOT FIT"
      lines.append(f"  {'device memory':<52} {self.device_bytes / GIB:9.2f} GiB  {verdict}")
    return "\n".join(lines)

  def advice(self) -> list[tuple[str, str]]:
    """(field, suggestion) pairs, applied in turn, until the plan fits; [] when it fits.

    Greedy: each round re-plans every candidate change on the config so far and
    takes the one with the lowest peak, until the plan fits or nothing lowers it.
    Candidates: loss.micro_batch_size (the largest divisor of the mini-batch that
    fits, else the smallest), rollout.rows_per_call ("auto" for an int),
    model.mesh.fsdp (all devices on fsdp), model.mesh.tensor (KV heads and
    weights split over it; the rest on fsdp), on one device twice the devices,
    model.remat ("full"), model.attention (a memory-efficient kernel).
    """
    advice, plan = [], self
    while not plan.fits and len(advice) < 8:
      options = [c for c in _candidates(plan) if c[2].total < plan.total]
      if not options:
        break
      field, value, better = min(options, key=lambda c: c[2].total)
      advice.append((field, f"{field}={value}: peak {better.total / GIB:.2f} GiB "
                     f"(saves {(plan.total - better.total) / GIB:.2f} GiB; "
                     f"{'fits' if better.fits else 'still over'})"))
      plan = better
    return advice


def _candidates(plan: MemoryPlan) -> list[tuple[str, str, MemoryPlan]]:
  """(field, new value, re-planned MemoryPlan) of each single change `advice` considers."""
  config, model_config, devices = plan.config, plan.model_config, plan.devices
  replan = lambda c, devices=devices: memory_plan(
      c, model_config, devices=devices, device_bytes=plan.device_bytes, platform=plan.platform)
  out = []
  shards = plan.mesh[0] * plan.mesh[1]
  mini, micro = config.mini_batch_rows, config.loss.micro_batch_size
  smaller = [m for m in range(micro - 1, 0, -1) if mini % m == 0]
  smaller = [m for m in smaller if m % shards == 0] or smaller  # whole rows on each shard
  if smaller:
    plans = [(m, replan(_replace(config, "loss", micro_batch_size=m))) for m in smaller]
    m, p = next(((m, p) for m, p in plans if p.fits), plans[-1])
    out.append(("loss.micro_batch_size", str(m), p))
  if config.rollout.max_rows_per_call is not None:
    out.append(("rollout.rows_per_call", "auto",
                replan(_replace(config, "rollout", rows_per_call="auto"))))
  if devices == 1:
    mesh = MeshConfig(data=1, fsdp=2, tensor=1)
    out.append(("model.mesh.fsdp", "2 (on 2 devices)",
                replan(_replace(config, "model", mesh=mesh), devices=2)))
  if devices > 1 and plan.mesh != (1, devices, 1):
    mesh = MeshConfig(data=1, fsdp=devices, tensor=1)
    out.append(("model.mesh.fsdp", f"{devices} (data=1, tensor=1)",
                replan(_replace(config, "model", mesh=mesh))))
  tensors = [t for t in range(2, devices + 1) if devices % t == 0 and t != plan.mesh[2]
             and model_config.num_kv_heads % t == 0 and model_config.num_heads % t == 0]
  if tensors:
    plans = [(t, replan(_replace(config, "model", mesh=MeshConfig(
        data=1, fsdp=devices // t, tensor=t)))) for t in tensors]
    t, p = min(plans, key=lambda tp: tp[1].total)
    out.append(("model.mesh.tensor", f"{t} (model.mesh.fsdp={devices // t}, data=1)", p))
  if plan.remat != "full":
    out.append(("model.remat", "full", replan(_replace(config, "model", remat="full"))))
  if plan.attention not in MEMORY_EFFICIENT:
    kernel = {"gpu": "cudnn", "tpu": "splash"}.get(plan.platform, "chunked")
    if kernel == "cudnn" and _compute_dtype(config) != "bfloat16":
      kernel = "chunked"  # cuDNN flash attention takes half precision only
    out.append(("model.attention", kernel, replan(_replace(config, "model", attention=kernel))))
  return out


def _replace(config: RunConfig, section: str, **changes) -> RunConfig:
  """`config` with some fields of one section changed (checked again by the section)."""
  return dataclasses.replace(config, **{
      section: dataclasses.replace(getattr(config, section), **changes)})


def _weights(config: RunConfig, model_config: ModelConfig, param_shards: int) -> tuple[int, ...]:
  """(params, optimizer, gradients, reference) bytes per device.

  P = model_config.num_params, p = the param dtype's bytes, sharded P / (fsdp x
  tensor) (rounded up; the few replicated norm vectors are ignored):
    params      P x p
    optimizer   2 x P x p: AdamW's two moments (optax keeps them in the params' dtype)
    gradients   2 x P x p: the micro-batch accumulator and one micro-batch's gradient
    reference   P x p when loss.kl_coef > 0 (a frozen copy of the initial policy), else 0
  """
  per = -(-model_config.num_params // param_shards) * DTYPE_BYTES[config.model.dtype]
  return per, 2 * per, 2 * per, per if config.loss.kl_coef > 0 else 0


def rollout_prompts_per_call(config: RunConfig, model_config: ModelConfig, *, shards: int,
                             free_bytes: int | None) -> int:
  """Prompts one generate call takes: the sampler's own rule (`prompts_per_call`)."""
  per_row = KVCache.num_bytes(model_config, 1, _slots(config), _compute_dtype(config))
  return prompts_per_call(config.rollout.prompts_per_step, config.rollout.group_size, per_row,
                          shards=shards, rows_per_call=config.rollout.max_rows_per_call,
                          free_bytes=free_bytes)


def _slots(config: RunConfig) -> int:
  """Tokens of the longest sequence: the largest prompt bucket + the largest max_new_tokens."""
  return max(config.rollout.prompt_buckets) + max(config.rollout.max_new_tokens)


def _compute_dtype(config: RunConfig) -> str:
  return config.model.compute_dtype or config.model.dtype


def memory_plan(config: RunConfig, model_config: ModelConfig, *, devices: int,
                device_bytes: int | None, platform: str = "gpu") -> MemoryPlan:
  """The per-device memory plan of a run.

  Args:
    config: the run (model dtype, remat, attention, mesh; rollout and loss sizes).
    model_config: the architecture (`read_model_config`).
    devices: how many devices the run uses (the mesh's -1 axis takes the rest).
    device_bytes: memory of one device, or None when unknown (the plan then never fails).
    platform: "gpu" | "tpu" | "cpu": what model.attention "auto" picks.

  Returns:
    MemoryPlan. The rollout's KV cache (`KVCache.num_bytes`, models/decoder.py) is
    rows_per_call x slots x L x K x H x 2 x c (+ a bool per slot) (with
    rollout.refill_slots: that many rows, plus the prompts' KV of prompts_per_step x
    the largest prompt bucket, which the slot pool keeps) over the batch
    shards (data x fsdp) and, when "tensor" divides the KV heads, over tensor; its
    logits rows_per_call x V x 4 over the batch shards. The update's sequence is the
    same slots; the activations are `activation_bytes` of ceil(micro_batch_size /
    batch shards) rows (a vision-language model adds `vision_activation_bytes` of
    those rows, one image of `image_max_pixels` each: the update runs a row's
    prompt images through the tower per row); the batch is `update_batch_bytes` of
    the step's rollout rows over the batch shards (the whole batch is on device
    through the update).
  """
  data, fsdp, tensor = mesh_sizes(config.model.mesh, devices)
  shards = data * fsdp
  params, optimizer, gradients, reference = _weights(config, model_config, fsdp * tensor)
  compute = _compute_dtype(config)
  compute_bytes = DTYPE_BYTES[compute]
  free = None if device_bytes is None else device_bytes - params - optimizer - reference
  slots = _slots(config)
  kv_shards = shards * (tensor if model_config.num_kv_heads % tensor == 0 else 1)
  if config.rollout.refill_slots:
    # The slot pool (sampling/slot_pool.py): S rows of the full length, plus the KV of the
    # step's prompts, kept for the refills.
    rows = config.rollout.refill_slots
    prompt_kv = KVCache.num_bytes(model_config, config.rollout.prompts_per_step,
                                  max(config.rollout.prompt_buckets), compute)
  else:
    prompts = rollout_prompts_per_call(config, model_config, shards=shards, free_bytes=free)
    rows, prompt_kv = prompts * config.rollout.group_size, 0
  kv = -(-(KVCache.num_bytes(model_config, rows, slots, compute) + prompt_kv) // kv_shards)
  logits = -(-rows // shards) * model_config.vocab_size * 4
  attention = resolve_attention(config.model.attention, compute, platform)
  micro_rows = -(-config.loss.micro_batch_size // shards)
  activations = activation_bytes(model_config, rows=micro_rows, seq_len=slots,
                                 remat=config.model.remat, attention=attention,
                                 compute_bytes=compute_bytes)
  vision_activations = image_patches = 0
  if model_config.is_multimodal:
    image_patches = image_patch_slots(model_config.vision, image_max_pixels(config))
    vision_activations = vision_activation_bytes(
        model_config, rows=micro_rows, patch_slots=image_patches, remat=config.model.remat,
        attention=attention, compute_bytes=compute_bytes)
  batch = update_batch_bytes(-(-config.rollout.rows // shards), slots,
                             max(config.rollout.max_new_tokens),
                             sampler=config.rollout.old_logprobs == "sampler",
                             kl=config.loss.kl_coef > 0)
  return MemoryPlan(params=params, optimizer=optimizer, gradients=gradients, reference=reference,
                    kv_cache=kv, rollout_logits=logits, update_batch=batch,
                    activations=activations, device_bytes=device_bytes, devices=devices,
                    mesh=(data, fsdp, tensor), rows_per_call=rows, micro_rows=micro_rows,
                    seq_len=slots, attention=attention, remat=config.model.remat,
                    vision_activations=vision_activations, image_patches=image_patches,
                    config=config, model_config=model_config, platform=platform)


def plan_on_this_machine(config: RunConfig) -> MemoryPlan:
  """The run's plan on this machine's devices (the one function here that reads them).

  Memory per device: config.device_memory_gb (GiB) when > 0, else the first
  device's `memory_stats()["bytes_limit"]`, else unknown (CPU: the plan never
  fails). A dry run with an explicit mesh (no -1) plans for that mesh's device
  count, so one machine can plan a cluster's run.

  Raises:
    ConfigError: naming model.mesh when its sizes do not cover the devices.
  """
  devices = jax.devices()
  count = len(devices)
  mesh = config.model.mesh
  sizes = (mesh.data, mesh.fsdp, mesh.tensor)
  if config.dry_run and -1 not in sizes:
    count = math.prod(sizes)
  device_bytes = None
  if config.device_memory_gb > 0:
    device_bytes = int(config.device_memory_gb * GIB)
  else:
    local = jax.local_devices()[0]  # another process's devices report no memory stats
    stats = local.memory_stats() if hasattr(local, "memory_stats") else None
    if stats and "bytes_limit" in stats:
      device_bytes = int(stats["bytes_limit"])
  try:
    return memory_plan(config, read_model_config(config.model), devices=count,
                       device_bytes=device_bytes, platform=jax.default_backend())
  except ValueError as e:  # mesh sizes that do not cover the devices
    raise config_lib.field_error(
        "model.mesh", dataclasses.asdict(mesh),
        f"a mesh over the {count} devices of the run's {jax.process_count()} process(es): "
        f"{e}") from e
