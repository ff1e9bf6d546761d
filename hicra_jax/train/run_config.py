"""The `train` run config: frozen, typed sections with their defaults, checking themselves.

`RunConfig` is the schema. The command line and presets work on its ConfigDict
(`get_config()`; `hicra-jax train --config.FIELD=value` overrides any field),
which `parse(config)` turns into a checked `RunConfig` once, before anything
expensive; the trainer reads only the typed sections. Each field's trailing
comment is its `--help` description. In Python:

  config = RunConfig(rollout=RolloutConfig(group_size=4), num_steps=3)
  config = parse(load_config("configs/quickstart.py", ["num_steps=3"]))

Light on purpose (no jax): config files import it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any, ClassVar

from hicra_jax import assets
from hicra_jax import config as config_lib
from hicra_jax import options
from hicra_jax.typed_config import FieldChecker, from_mapping, section, to_config_dict

# Fields of earlier versions that runs saved in their checkpoints; dropped when
# such a run's config is read back (`hicra-jax convert`, eval of a workdir).
RETIRED_FIELDS = ("debug_sleep_in_step_s",)  # a test knob, now TEST_STEP_SLEEP_ENV

RANDOM_MODEL = "random"  # model.path of a randomly initialized model.random (tests, smoke runs)
SYNTHETIC = "synthetic"  # the tiny-model task: its data source, reward ("_target") and SGs
SYNTHETIC_REWARD = "synthetic_target"
DATA_SOURCES = (SYNTHETIC,) + options.DATA_SOURCES


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh sizes (hicra_jax.sharding): all 1 = one device, no mesh; -1 = the rest."""

  SECTION: ClassVar[str] = "model.mesh"
  data: int = 1  # data-parallel axis (rows of a batch)
  fsdp: int = 1  # fully sharded data-parallel axis (rows, and parameters sharded over it)
  tensor: int = 1  # tensor-parallel axis (heads and hidden units)

  def __post_init__(self):
    check = FieldChecker(self)
    for axis in ("data", "fsdp", "tensor"):
      value = getattr(self, axis)
      if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise check.error(axis, "an int >= 1, or -1 (the rest)")


@dataclasses.dataclass(frozen=True)
class RandomModelConfig:
  """The shape of the "random" model (hicra_jax.models.ModelConfig fields)."""

  SECTION: ClassVar[str] = "model.random"
  vocab_size: int = 16  # "random" model: vocabulary size
  hidden_size: int = 32  # "random" model: residual width
  intermediate_size: int = 64  # "random" model: MLP width
  num_layers: int = 2  # "random" model: decoder layers
  num_heads: int = 2  # "random" model: query heads
  num_kv_heads: int = 1  # "random" model: key/value heads
  head_dim: int = 16  # "random" model: width of one head

  def __post_init__(self):
    check = FieldChecker(self)
    for field in dataclasses.fields(self):
      check.integer(field.name, minimum=1)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """The `model` section (named so as not to clash with the architecture's ModelConfig)."""

  SECTION: ClassVar[str] = "model"
  path: str = RANDOM_MODEL  # "smollm2" | "random" | a .gguf file | an HF directory or Hub id
  tokenizer: str = ""  # "": the model's own (unused for "random"); a path or Hub id otherwise
  dtype: str = "float32"  # params (master weights): "float32" | "bfloat16"
  compute_dtype: str = ""  # "": same as dtype
  remat: str = "none"  # per-layer rematerialization: "none" | "full" | "dots" | "dots_no_batch"
  # Attention kernel of prefill and update: "auto" (cudnn on GPU, splash on TPU, xla
  # elsewhere) | "xla" (dense) | "cudnn" | "splash" | "chunked" (memory linear in length).
  attention: str = "auto"
  mesh: MeshConfig = section(MeshConfig)  # device mesh: all 1 = one device; -1 = the rest
  random: RandomModelConfig = section(RandomModelConfig)  # shape of the "random" model

  def __post_init__(self):
    check = FieldChecker(self)
    check.path("path", aliases=options.MODEL_ALIASES + (RANDOM_MODEL,),
               predicate=config_lib.is_model_path,
               expected=config_lib.MODEL_PATH_EXPECTED)
    check.string("tokenizer", empty=True)
    check.choice("dtype", options.DTYPES)
    check.choice("compute_dtype", ("",) + options.DTYPES)
    check.choice("remat", options.REMATS)
    check.choice("attention", options.ATTENTIONS)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where prompts and reference answers come from."""

  SECTION: ClassVar[str] = "data"
  source: str = SYNTHETIC  # "synthetic" | "jsonl" | "parquet" | "hf" | "reasoning_gym"
  path: str = ""  # jsonl / parquet: file path
  name: str = ""  # hf: "dataset[:config]" (Hugging Face Hub name, or cached offline)
  split: str = "train"  # hf: split
  question_field: str = "question"  # jsonl/parquet/hf: the problem's field ("problem": MATH)
  answer_field: str = "answer"  # jsonl/parquet/hf: the reference answer's field
  task: str = ""  # reasoning_gym: dataset name, e.g. "chain_sum"
  task_kwargs: str = "{}"  # reasoning_gym: JSON object of generator options
  size: int = 64  # reasoning_gym / synthetic: examples generated
  eval_size: int = 0  # held-out examples (taken before training examples)
  template: str = "auto"  # prompt template: "auto" | "chat" | "plain"
  prompt_len: int = 4  # synthetic: prompt tokens
  # Vision-language models (JSONL rows with `image` / `images`): each image is resized to
  # hold between these many pixels (0: the model's preprocessor_config.json); 28 x 28
  # pixels make one image token (Qwen2.5-VL).
  image_min_pixels: int = 0  # images: fewest pixels after resizing (0: the model's setting)
  image_max_pixels: int = 0  # images: most pixels after resizing (0: the model's setting)

  def __post_init__(self):
    check = FieldChecker(self)
    source = check.choice("source", DATA_SOURCES)
    for field in ("path", "name", "split", "task"):  # each required by one source only
      check.string(field, empty=True)
    if source in ("jsonl", "parquet"):
      check.path("path", predicate=os.path.isfile, expected=f"an existing {source} file")
    if source == "hf":
      check.string("name")
      check.string("split")
    if source == "reasoning_gym":
      check.string("task")
    for field in ("question_field", "answer_field"):
      check.string(field)
    try:
      if not isinstance(json.loads(self.task_kwargs), dict):
        raise ValueError("not an object")
    except (ValueError, TypeError) as e:
      raise check.error("task_kwargs", "a JSON object string") from e
    check.integer("size", minimum=1)
    check.integer("eval_size", minimum=0)
    check.choice("template", options.TEMPLATES)
    check.integer("prompt_len", minimum=1)
    check.integer("image_min_pixels", minimum=0)
    check.integer("image_max_pixels", minimum=0)
    if 0 < self.image_max_pixels < self.image_min_pixels:
      raise check.error("image_max_pixels", f"0 or >= data.image_min_pixels = "
                        f"{self.image_min_pixels}")

  @property
  def kwargs(self) -> dict[str, Any]:
    """task_kwargs parsed."""
    return json.loads(self.task_kwargs)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """How completions are graded."""

  SECTION: ClassVar[str] = "reward"
  # A hicra_jax.rewards registry name (checked by check_environment: rewards
  # registered in the process count) or "synthetic_target".
  name: str = SYNTHETIC_REWARD
  timeout_s: float = 5.0  # per-item limit of sandboxed checks
  target_token: int = 5  # synthetic_target: the rewarded token

  def __post_init__(self):
    check = FieldChecker(self)
    check.string("name")
    check.number("timeout_s", minimum=0.01)
    check.integer("target_token", minimum=0)


@dataclasses.dataclass(frozen=True)
class PlanningConfig:
  """Which tokens are planning tokens, and HICRA's amplification of them."""

  SECTION: ClassVar[str] = "planning"
  grams: str = SYNTHETIC  # "paper" | an SG file | "synthetic" (token n-gram) | "none"
  synthetic_pattern: tuple[int, ...] = (5, 5)  # "synthetic": the n-gram that counts as planning
  alpha: float = 0.2  # HICRA's amplification (paper: 0.2)

  def __post_init__(self):
    check = FieldChecker(self)
    check.path("grams", aliases=options.SG_ALIASES,
               expected="an SG file (JSON list or text, one phrase a line)")
    check.int_tuple("synthetic_pattern", minimum=0)
    check.number("alpha", minimum=0.0, maximum=1.0)


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """How a step's completions are sampled."""

  SECTION: ClassVar[str] = "rollout"
  prompts_per_step: int = 8  # prompts per RL step
  group_size: int = 8  # samples per prompt (the GRPO group)
  temperature: float = 1.0  # sampling temperature of the rollouts
  top_p: float = 1.0  # nucleus sampling (1: off)
  top_k: int = 0  # top-k sampling (0: off)
  # Curriculum stages: the next value is used when the truncation rate exceeds
  # truncation_threshold (paper: 16K -> 32K at 20%).
  max_new_tokens: tuple[int, ...] = (8,)
  truncation_threshold: float = 0.2  # truncated fraction that moves to the next stage
  # Padded prompt lengths: a prompt takes the smallest bucket that holds it.
  prompt_buckets: tuple[int, ...] = (4, 32, 64, 128, 256, 512, 1024, 2048, 4096)
  old_logprobs: str = "policy"  # "policy" (recomputed) | "sampler"
  # Decode in segments of this many tokens and check for SIGTERM between them,
  # so a preemption does not wait for a whole long rollout (results unchanged).
  signal_check_tokens: int = 256
  # Most rows per generate call (whole groups; each prompt is prefilled once):
  # "auto" sizes the calls from free device memory and the model's KV cache.
  rows_per_call: str = "auto"
  # Continuous batching: > 0 decodes each round's rows through a pool of this many slots,
  # a stopped row's slot taking the next pending row (the same rollout, less idle decode;
  # sampling/slot_pool.py). A multiple of the mesh's batch shards.
  # 0: off (calls of rows_per_call rows, each decoding until its longest row stops).
  refill_slots: int = 0

  def __post_init__(self):
    check = FieldChecker(self)
    check.integer("prompts_per_step", minimum=1)
    check.integer("group_size", minimum=2)
    check.number("temperature", minimum=1e-6)
    check.number("top_p", minimum=1e-6, maximum=1.0)
    check.integer("top_k", minimum=0)
    check.int_tuple("max_new_tokens", increasing=True, expected=(
        "a non-empty increasing tuple of positive ints (curriculum stages)"))
    check.number("truncation_threshold", minimum=0.0, maximum=1.0)
    check.int_tuple("prompt_buckets", expected="a tuple of positive ints")
    check.choice("old_logprobs", options.OLD_LOGPROBS)
    check.integer("signal_check_tokens", minimum=1)
    check.auto_or_int("rows_per_call", minimum=self.group_size, expected=(
        f"'auto' or an int >= rollout.group_size = {self.group_size} (a call holds whole "
        "groups)"))
    check.integer("refill_slots", minimum=0)

  @property
  def rows(self) -> int:
    """Rollout rows per step: prompts_per_step x group_size."""
    return self.prompts_per_step * self.group_size

  @property
  def max_rows_per_call(self) -> int | None:
    """rows_per_call as an int, or None for "auto"."""
    return None if self.rows_per_call == "auto" else int(self.rows_per_call)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """DAPO dynamic filtering: drop groups whose rewards are all equal and refill."""

  SECTION: ClassVar[str] = "filter"
  dynamic: bool = False  # DAPO dynamic filtering with refill
  max_rounds: int = 4  # rollout rounds per step when refilling

  def __post_init__(self):
    check = FieldChecker(self)
    check.boolean("dynamic")
    check.integer("max_rounds", minimum=1)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW and its learning-rate schedule."""

  SECTION: ClassVar[str] = "optim"
  lr: float = 1e-2  # peak learning rate (AdamW)
  warmup_steps: int = 0  # linear warmup over this many optimizer updates
  schedule: str = "constant"  # "constant" | "cosine"
  final_lr_fraction: float = 0.0  # cosine: the final learning rate / lr
  weight_decay: float = 0.0  # AdamW decoupled weight decay
  b1: float = 0.9  # AdamW first-moment decay
  b2: float = 0.999  # AdamW second-moment decay
  eps: float = 1e-8  # AdamW epsilon
  max_grad_norm: float = 1.0  # global-norm gradient clipping (0: off)

  def __post_init__(self):
    check = FieldChecker(self)
    check.number("lr", minimum=1e-12)
    check.integer("warmup_steps", minimum=0)
    check.choice("schedule", options.SCHEDULES)
    check.number("final_lr_fraction", minimum=0.0, maximum=1.0)
    check.number("weight_decay", minimum=0.0)
    check.number("b1", minimum=0.0, maximum=1.0)
    check.number("b2", minimum=0.0, maximum=1.0)
    check.number("eps", minimum=0.0)
    check.number("max_grad_norm", minimum=0.0)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The policy loss, its advantages and the update's batching."""

  SECTION: ClassVar[str] = "loss"
  clip_low: float = 0.2  # PPO ratio clip below: 1 - clip_low
  clip_high: float = 0.28  # clip-higher (DAPO): ratio clip above at 1 + clip_high
  aggregation: str = "token-mean"  # how token losses average (hicra_jax.options.AGGREGATIONS)
  estimator: str = "grpo"  # group baseline: "grpo" (group mean) | "rloo" (leave-one-out)
  scale: str = "none"  # advantage scaling: "none" | "group_std" | "batch_std"
  entropy_coef: float = 0.001  # used by algorithm "entropy_reg" only
  kl_coef: float = 0.0  # > 0 loads a frozen reference copy of the initial policy
  kl_estimator: str = "k3"  # KL estimator of the reference term: "k1" | "k2" | "k3"
  epochs: int = 1  # passes over each rollout batch
  # Rows per optimizer step (DAPO mini-batches; divides prompts x group): the
  # batch is shuffled and split, one optimizer step each. 0: the whole batch.
  mini_batch_size: int = 0
  micro_batch_size: int = 32  # rows per micro-batch (divides the mini-batch)

  def __post_init__(self):
    check = FieldChecker(self)
    check.number("clip_low", minimum=0.0, maximum=0.999)
    check.number("clip_high", minimum=0.0)
    check.choice("aggregation", options.AGGREGATIONS)
    check.choice("estimator", options.ESTIMATORS)
    check.choice("scale", options.SCALES)
    check.number("entropy_coef")
    check.number("kl_coef", minimum=0.0)
    check.choice("kl_estimator", options.KL_ESTIMATORS)
    check.integer("epochs", minimum=1)
    check.integer("mini_batch_size", minimum=0)
    check.integer("micro_batch_size", minimum=1)


@dataclasses.dataclass(frozen=True)
class GuardConfig:
  """The NaN guard: non-finite updates are skipped, too many in a row stop the run."""

  SECTION: ClassVar[str] = "guard"
  max_consecutive_skips: int = 3  # non-finite updates in a row before saving and stopping

  def __post_init__(self):
    FieldChecker(self).integer("max_consecutive_skips", minimum=1)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Periodic evaluation on the held-out examples."""

  SECTION: ClassVar[str] = "eval"
  every: int = 0  # steps (0: never)
  temperature: float = 0.6  # sampling temperature of the evaluation (paper: 0.6)
  samples: int = 1  # completions per prompt (k of avg@k and pass@k for the benchmarks)
  # Benchmarks evaluated at eval steps (avg@k and pass@k, k = samples), as for
  # `hicra-jax evaluate`: names found under data_dir, "name=path.jsonl" or "name=hf:...";
  # on the command line --config.eval.benchmarks="('math500', 'aime24')".
  benchmarks: tuple[str, ...] = ()
  data_dir: str = ""  # folder with <name>/<name>_test.jsonl files ("": defaults)
  limit: int = 0  # problems per benchmark (0: all)
  reward: str = "math_strict"  # grading of the benchmarks (the paper's strict boxed answer)

  def __post_init__(self):
    check = FieldChecker(self)
    check.integer("every", minimum=0)
    check.number("temperature", minimum=1e-6)
    check.integer("samples", minimum=1)
    benchmarks = self.benchmarks
    if (not isinstance(benchmarks, (tuple, list))
        or not all(isinstance(b, str) and b for b in benchmarks)):
      raise check.error("benchmarks", "a tuple of benchmark specs (strings)")
    object.__setattr__(self, "benchmarks", tuple(benchmarks))
    check.string("data_dir", empty=True)
    check.integer("limit", minimum=0)
    check.string("reward")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Orbax checkpoints in workdir/checkpoints."""

  SECTION: ClassVar[str] = "checkpoint"
  every: int = 5  # steps between checkpoints (and at the last step)
  keep: int = 3  # most recent checkpoints kept
  keep_best: int = 1  # best checkpoints by eval accuracy also kept
  async_save: bool = True  # write checkpoints in the background

  def __post_init__(self):
    check = FieldChecker(self)
    check.integer("every", minimum=1)
    check.integer("keep", minimum=1)
    check.integer("keep_best", minimum=0)
    check.boolean("async_save")


@dataclasses.dataclass(frozen=True)
class WandbConfig:
  """Weights & Biases (optional, `pip install 'hicra-jax[wandb]'`): project "" = off."""

  SECTION: ClassVar[str] = "log.wandb"
  project: str = ""  # W&B project ("": no W&B)
  entity: str = ""  # W&B entity ("": your default)
  name: str = ""  # W&B run name ("": W&B picks one)
  mode: str = "online"  # "online" | "offline" (sync later with `wandb sync`) | "disabled"

  def __post_init__(self):
    check = FieldChecker(self)
    for field in ("project", "entity", "name"):
      check.string(field, empty=True)
    check.choice("mode", options.WANDB_MODES)


@dataclasses.dataclass(frozen=True)
class LogConfig:
  """What a run writes besides checkpoints."""

  SECTION: ClassVar[str] = "log"
  tensorboard: bool = True  # also write TensorBoard event files
  samples_per_step: int = 2  # completions per step in samples.jsonl
  # Every rollout of a step (example id, completion, reward, planning spans) to
  # workdir/rollouts/step_XXXXXX.jsonl.gz, for offline analysis (`hicra-jax judge`).
  dump_rollouts: bool = False
  fork_quantile: float = 0.2  # fork tokens: the top share of tokens by entropy (80/20 paper)
  follow_ngram: int = 3  # sg_conditional_entropy: tokens in the n-gram that follows an SG
  wandb: WandbConfig = section(WandbConfig)  # Weights & Biases: project "" = off

  def __post_init__(self):
    check = FieldChecker(self)
    check.boolean("tensorboard")
    check.integer("samples_per_step", minimum=0)
    check.boolean("dump_rollouts")
    check.number("fork_quantile", minimum=1e-6, maximum=1.0)
    check.integer("follow_ngram", minimum=1)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Several processes (hosts) in one run: the start-up of jax.distributed.

  All "auto" (the default): JAX's own cluster detection (a TPU VM pod slice,
  SLURM, Open MPI, the JAX_COORDINATOR_ADDRESS variable); without a cluster
  the run stays one process. Each value may also be given explicitly.
  """

  SECTION: ClassVar[str] = "distributed"
  coordinator_address: str = "auto"  # "host:port" of the coordinator (process 0), or "auto"
  num_processes: str = "auto"  # processes in the run, or "auto"
  process_id: str = "auto"  # this process's index in [0, num_processes), or "auto"
  # A process whose peer died exits (non-zero, JAX's message) after about this long.
  heartbeat_timeout_s: int = 100

  def __post_init__(self):
    check = FieldChecker(self)
    address = check.string("coordinator_address")
    host, _, port = address.rpartition(":")
    if address != "auto" and not (host and port.isdigit() and 0 < int(port) < 65536):
      raise check.error("coordinator_address", "'auto' or 'host:port' (port in 1..65535)")
    count = check.auto_or_int("num_processes", minimum=1)
    index = check.auto_or_int("process_id", minimum=0)
    if count != "auto" and index != "auto" and int(index) >= int(count):
      raise check.error("process_id", f"an int in [0, num_processes = {count})")
    check.integer("heartbeat_timeout_s", minimum=1)

  def initialize_kwargs(self) -> dict[str, Any]:
    """`multihost.initialize`'s arguments ("auto" or an int each)."""
    as_int = lambda v: v if v == "auto" else int(v)
    return dict(coordinator_address=self.coordinator_address,
                num_processes=as_int(self.num_processes), process_id=as_int(self.process_id),
                heartbeat_timeout_s=self.heartbeat_timeout_s)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One training run: the top-level fields and one section per concern.

  Each section checks its own fields; this checks the fields that depend on
  each other. `check_environment` checks what depends on the machine.
  """

  algorithm: str = "hicra"  # "hicra" | "grpo" (clip-higher) | "entropy_reg"
  seed: int = 0  # PRNG seed of sampling, data order and random init
  num_steps: int = 20  # RL steps (one rollout batch and its update each)
  workdir: str = "runs/train"  # checkpoints, metrics, samples and the exported policy
  resume: bool = False  # continue from the latest checkpoint in workdir
  export_policy: bool = True  # write workdir/policy (HF safetensors) at the end
  dry_run: bool = False  # print the per-device memory plan and exit (0: it fits, 2: it does not)
  device_memory_gb: float = 0.0  # memory per device for the plan (0: detected)
  model: ModelSettings = section(ModelSettings)  # the policy model and its device mesh
  data: DataConfig = section(DataConfig)  # prompts and reference answers
  reward: RewardConfig = section(RewardConfig)  # grading of completions
  planning: PlanningConfig = section(PlanningConfig)  # planning tokens (Strategic Grams)
  rollout: RolloutConfig = section(RolloutConfig)  # sampling of a step's completions
  filter: FilterConfig = section(FilterConfig)  # DAPO dynamic filtering
  optim: OptimConfig = section(OptimConfig)  # AdamW and its schedule
  loss: LossConfig = section(LossConfig)  # policy loss and advantages
  guard: GuardConfig = section(GuardConfig)  # NaN guard
  eval: EvalConfig = section(EvalConfig)  # periodic evaluation
  checkpoint: CheckpointConfig = section(CheckpointConfig)  # Orbax checkpoints
  log: LogConfig = section(LogConfig)  # metrics, samples, TensorBoard, W&B
  distributed: DistributedConfig = section(DistributedConfig)  # several processes (hosts)

  def __post_init__(self):
    check = FieldChecker(self)
    check.choice("algorithm", options.ALGORITHMS)
    check.integer("seed", minimum=0)
    check.integer("num_steps", minimum=1)
    check.string("workdir")
    check.boolean("resume")
    check.boolean("export_policy")
    check.boolean("dry_run")
    check.number("device_memory_gb", minimum=0.0)
    source, model = self.data.source, self.model.path
    if source != SYNTHETIC and model == RANDOM_MODEL:
      raise config_lib.field_error("model.path", model, f"a real model (with a tokenizer) for "
                                   f"data.source {source!r}; 'random' works with data.source "
                                   "'synthetic' only")
    if (self.reward.name == SYNTHETIC_REWARD) != (source == SYNTHETIC):
      raise config_lib.field_error("reward.name", self.reward.name, "'synthetic_target' "
                                   "exactly when data.source is 'synthetic'")
    grams = self.planning.grams
    if grams == SYNTHETIC and source != SYNTHETIC:
      raise config_lib.field_error("planning.grams", grams,
                                   "'paper', a file or 'none' for text data")
    if grams == "none" and self.algorithm == "hicra":
      raise config_lib.field_error("planning.grams", grams,
                                   "a Strategic Gram set for algorithm 'hicra'")
    self._check_refill_slots()
    rows, mini, micro = self.rollout.rows, self.loss.mini_batch_size, self.loss.micro_batch_size
    batch = (f"rollout.prompts_per_step x rollout.group_size = "
             f"{self.rollout.prompts_per_step} x {self.rollout.group_size} = {rows}")
    if mini and rows % mini:
      raise config_lib.field_error("loss.mini_batch_size", mini, f"0 or a divisor of {batch}")
    if (mini or rows) % micro:
      raise config_lib.field_error(
          "loss.micro_batch_size", micro, f"a divisor of loss.mini_batch_size = {mini}" if mini
          else f"a divisor of {batch}")

  def _check_refill_slots(self) -> None:
    """The slot pool splits its slots over the batch shards (when both sizes are given;
    otherwise the sampler checks once the mesh is built)."""
    slots, mesh = self.rollout.refill_slots, self.model.mesh
    if slots and mesh.data != -1 and mesh.fsdp != -1 and slots % (mesh.data * mesh.fsdp):
      raise config_lib.field_error(
          "rollout.refill_slots", slots, f"0 or a multiple of the batch shards model.mesh.data "
          f"x model.mesh.fsdp = {mesh.data * mesh.fsdp}")

  @property
  def mini_batch_rows(self) -> int:
    """Rows per optimizer step: loss.mini_batch_size, or the whole batch when 0."""
    return self.loss.mini_batch_size or self.rollout.rows

  @property
  def mini_batches(self) -> int:
    """Optimizer steps per epoch over one rollout batch."""
    return self.rollout.rows // self.mini_batch_rows

  @property
  def optimizer_steps(self) -> int:
    """Optimizer updates of the whole run: num_steps x epochs x mini-batches per batch."""
    return self.num_steps * self.loss.epochs * self.mini_batches

  @property
  def entropy_coef(self) -> float:
    """The entropy bonus of the loss: loss.entropy_coef for "entropy_reg", else 0."""
    return self.loss.entropy_coef if self.algorithm == "entropy_reg" else 0.0


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `train` (a tiny synthetic run; presets override it)."""
  return to_config_dict(RunConfig())


def parse(config: Any) -> RunConfig:
  """The checked, typed `RunConfig` of a ConfigDict or nested mapping (missing fields: defaults).

  Raises:
    ConfigError: naming the first bad or unknown field.
  """
  return from_mapping(RunConfig, config)


def check_environment(config: RunConfig) -> None:
  """Checks what a valid config needs from this machine; raises ConfigError naming the field.

  A fresh workdir unless resuming, the packaged model, the data source's
  package, the reasoning-gym task, a registered reward and the wandb package.
  """
  if not config.resume and config_lib.is_training_workdir(config.workdir):
    raise config_lib.field_error("workdir", config.workdir, "a fresh workdir: this one already "
                                 "holds checkpoints; pass --config.resume=True to continue "
                                 "that run")
  if config.model.path == "smollm2":
    try:
      assets.smollm2_gguf_path()
    except FileNotFoundError as e:
      raise config_lib.field_error("model.path", config.model.path,
                                   f"a resolvable SmolLM2 GGUF ({e})") from e
  source = config.data.source
  needs = {"parquet": "pyarrow", "hf": "datasets"}.get(source)
  if needs and importlib.util.find_spec(needs) is None:
    raise config_lib.field_error("data.source", source, f"the {needs} package for this source "
                                 "(pip install 'hicra-jax[data]')")
  if source == "reasoning_gym":
    # Imported here: reasoning-gym takes seconds to import, and only this source needs it.
    from reasoning_gym.factory import DATASETS  # pylint: disable=import-outside-toplevel
    if config.data.task not in DATASETS:
      raise config_lib.field_error("data.task", config.data.task, f"a reasoning-gym dataset, "
                                   f"e.g. one of {sorted(DATASETS)[:8]} ... ({len(DATASETS)} "
                                   "in all)")
  # Imported here: keeps `hicra-jax --help` and the other commands' validation free of numpy.
  from hicra_jax.rewards.registry import REWARDS  # pylint: disable=import-outside-toplevel
  reward = config.reward.name
  if reward != SYNTHETIC_REWARD and reward not in REWARDS:
    raise config_lib.field_error("reward.name", reward,
                                 f"one of {sorted(REWARDS) + [SYNTHETIC_REWARD]}")
  ev = config.eval
  if ev.reward not in REWARDS:
    raise config_lib.field_error("eval.reward", ev.reward, f"one of {sorted(REWARDS)}")
  if ev.benchmarks:
    data_dir = os.path.expanduser(ev.data_dir) or None
    if data_dir and not os.path.isdir(data_dir):
      raise config_lib.field_error("eval.data_dir", ev.data_dir, "'' or an existing folder")
    from hicra_jax.eval.benchmarks import check_specs  # pylint: disable=import-outside-toplevel
    try:
      check_specs(ev.benchmarks, data_dir)
    except ValueError as e:
      raise config_lib.ConfigError(f"config field eval.{e}", field="eval.benchmarks",
                                   value=ev.benchmarks) from e
    if config.model.path == RANDOM_MODEL:
      raise config_lib.field_error("eval.benchmarks", ev.benchmarks,
                                   "() for the random model (benchmarks need a tokenizer)")
  project = config.log.wandb.project
  if project and importlib.util.find_spec("wandb") is None:
    raise config_lib.field_error("log.wandb.project", project, "the wandb package (pip install "
                                 "'hicra-jax[wandb]'), or '' for off")
