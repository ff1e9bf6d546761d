"""`hicra-jax train`: RL of a reasoning policy with HICRA, GRPO or entropy regularization.

  hicra-jax train --config configs/quickstart.py
  hicra-jax train --config configs/qwen3_4b_instruct_2507_hicra.py --config.algorithm=grpo
  hicra-jax train --config ... --config.resume=True      # continue the run in workdir

Writes into `workdir`: checkpoints/ (Orbax), metrics.jsonl, samples.jsonl,
tensorboard/ event files and, at the end, policy/ (a Hugging Face directory).
"""

from __future__ import annotations

import importlib.util
import json
import os

from hicra_jax import config as config_lib
from hicra_jax import options
from hicra_jax.train import run_config

HELP = "train a policy with HICRA / GRPO / entropy regularization (RL with verifiable rewards)"

ALGORITHMS = options.ALGORITHMS
DATA_SOURCES = ("synthetic",) + options.DATA_SOURCES  # synthetic: the tiny-model task
MODEL_ALIASES = ("smollm2", "random")
SG_ALIASES = ("paper", "synthetic", "none")
DTYPES = options.DTYPES

# The schema lives in the library (presets build on it); the CLI serves it as is.
get_config = run_config.get_config


def validate(config: config_lib.ConfigDict) -> None:
  """Checks every field before anything expensive; raises ConfigError naming it."""
  cl = config_lib
  cl.check_choice(config, "algorithm", ALGORITHMS)
  cl.check_int(config, "seed", minimum=0)
  cl.check_int(config, "num_steps", minimum=1)
  workdir = cl.check_str(config, "workdir")
  if not config.resume and cl.is_training_workdir(workdir):
    raise cl.field_error("workdir", workdir, "a fresh workdir: this one already holds "
                         "checkpoints; pass --config.resume=True to continue that run")
  model = cl.check_path(config, "model.path", aliases=MODEL_ALIASES, predicate=cl.is_model_path,
                        expected="a .gguf file or a Hugging Face model directory")
  if model == "smollm2":
    # Imported here: keeps `hicra-jax --help` from importing jax.
    from hicra_jax.models.assets import smollm2_gguf_path  # pylint: disable=import-outside-toplevel
    try:
      smollm2_gguf_path()
    except FileNotFoundError as e:
      raise cl.field_error("model.path", model, f"a resolvable SmolLM2 GGUF ({e})") from e
  for axis in ("data", "fsdp", "tensor"):
    value = cl.get_field(config, f"model.mesh.{axis}")
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
      raise cl.field_error(f"model.mesh.{axis}", value, "an int >= 1, or -1 (the rest)")
  cl.check_choice(config, "model.dtype", DTYPES)
  cl.check_choice(config, "model.compute_dtype", ("",) + DTYPES)
  for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
               "num_kv_heads", "head_dim"):
    cl.check_int(config, f"model.random.{name}", minimum=1)
  source = cl.check_choice(config, "data.source", DATA_SOURCES)
  needs = {"parquet": "pyarrow", "hf": "datasets"}.get(source)
  if needs and importlib.util.find_spec(needs) is None:
    raise cl.field_error("data.source", source, f"the {needs} package for this source "
                         "(pip install 'hicra-jax[data]')")
  if source in ("jsonl", "parquet"):
    cl.check_path(config, "data.path", predicate=os.path.isfile,
                  expected=f"an existing {source} file")
  if source == "hf":
    cl.check_str(config, "data.name")
    cl.check_str(config, "data.split")
  if source == "reasoning_gym":
    task = cl.check_str(config, "data.task")
    # Imported here: reasoning-gym takes seconds to import, and only this source needs it.
    from reasoning_gym.factory import DATASETS  # pylint: disable=import-outside-toplevel
    if task not in DATASETS:
      raise cl.field_error("data.task", task, f"a reasoning-gym dataset, e.g. one of "
                           f"{sorted(DATASETS)[:8]} ... ({len(DATASETS)} in all)")
  try:
    kwargs = json.loads(config.data.task_kwargs)
    if not isinstance(kwargs, dict):
      raise ValueError("not an object")
  except (ValueError, TypeError) as e:
    raise cl.field_error("data.task_kwargs", config.data.task_kwargs,
                         "a JSON object string") from e
  cl.check_int(config, "data.size", minimum=1)
  cl.check_int(config, "data.eval_size", minimum=0)
  cl.check_int(config, "data.prompt_len", minimum=1)
  if source != "synthetic" and model == "random":
    raise cl.field_error("model.path", model, "a real model (with a tokenizer) for data.source "
                         f"{source!r}; 'random' works with data.source 'synthetic' only")
  reward = cl.check_str(config, "reward.name")
  # Imported here: keeps `hicra-jax --help` from importing numpy.
  from hicra_jax.rewards.registry import REWARDS  # pylint: disable=import-outside-toplevel
  if reward != "synthetic_target" and reward not in REWARDS:
    raise cl.field_error("reward.name", reward,
                         f"one of {sorted(REWARDS) + ['synthetic_target']}")
  if (reward == "synthetic_target") != (source == "synthetic"):
    raise cl.field_error("reward.name", reward, "'synthetic_target' exactly when data.source "
                         "is 'synthetic'")
  cl.check_float(config, "reward.timeout_s", minimum=0.01)
  grams = cl.check_path(config, "planning.grams", aliases=SG_ALIASES,
                        expected="an SG file (JSON list or text, one phrase a line)")
  if grams == "synthetic" and source != "synthetic":
    raise cl.field_error("planning.grams", grams, "'paper', a file or 'none' for text data")
  if grams == "none" and config.algorithm == "hicra":
    raise cl.field_error("planning.grams", grams, "a Strategic Gram set for algorithm 'hicra'")
  cl.check_float(config, "planning.alpha", minimum=0.0, maximum=1.0)
  p = cl.check_int(config, "rollout.prompts_per_step", minimum=1)
  g = cl.check_int(config, "rollout.group_size", minimum=2)
  cl.check_float(config, "rollout.temperature", minimum=1e-6)
  cl.check_float(config, "rollout.top_p", minimum=1e-6, maximum=1.0)
  cl.check_int(config, "rollout.top_k", minimum=0)
  stages = config.rollout.max_new_tokens
  if (not isinstance(stages, (tuple, list)) or not stages
      or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in stages)
      or list(stages) != sorted(stages)):
    raise cl.field_error("rollout.max_new_tokens", stages,
                         "a non-empty increasing tuple of positive ints (curriculum stages)")
  cl.check_float(config, "rollout.truncation_threshold", minimum=0.0, maximum=1.0)
  buckets = config.rollout.prompt_buckets
  if not isinstance(buckets, (tuple, list)) or not buckets or any(
      isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in buckets):
    raise cl.field_error("rollout.prompt_buckets", buckets, "a tuple of positive ints")
  cl.check_choice(config, "rollout.old_logprobs", ("policy", "sampler"))
  cl.check_int(config, "rollout.signal_check_tokens", minimum=1)
  cl.check_int(config, "filter.max_rounds", minimum=1)
  cl.check_float(config, "optim.lr", minimum=1e-12)
  cl.check_int(config, "optim.warmup_steps", minimum=0)
  cl.check_choice(config, "optim.schedule", options.SCHEDULES)
  cl.check_float(config, "optim.final_lr_fraction", minimum=0.0, maximum=1.0)
  cl.check_float(config, "optim.weight_decay", minimum=0.0)
  cl.check_float(config, "optim.max_grad_norm", minimum=0.0)
  cl.check_float(config, "loss.clip_low", minimum=0.0, maximum=0.999)
  cl.check_float(config, "loss.clip_high", minimum=0.0)
  cl.check_choice(config, "loss.aggregation", options.AGGREGATIONS)
  cl.check_choice(config, "loss.estimator", options.ESTIMATORS)
  cl.check_choice(config, "loss.scale", options.SCALES)
  cl.check_float(config, "loss.entropy_coef")
  cl.check_float(config, "loss.kl_coef", minimum=0.0)
  cl.check_choice(config, "loss.kl_estimator", options.KL_ESTIMATORS)
  cl.check_int(config, "loss.epochs", minimum=1)
  mb = cl.check_int(config, "loss.micro_batch_size", minimum=1)
  if (p * g) % mb:
    raise cl.field_error("loss.micro_batch_size", mb, f"a divisor of rollout.prompts_per_step x "
                         f"rollout.group_size = {p} x {g} = {p * g}")
  cl.check_int(config, "guard.max_consecutive_skips", minimum=1)
  cl.check_int(config, "eval.every", minimum=0)
  cl.check_float(config, "eval.temperature", minimum=1e-6)
  cl.check_int(config, "eval.samples", minimum=1)
  cl.check_int(config, "checkpoint.every", minimum=1)
  cl.check_int(config, "checkpoint.keep", minimum=1)
  cl.check_int(config, "checkpoint.keep_best", minimum=0)
  cl.check_int(config, "log.samples_per_step", minimum=0)
  cl.check_choice(config, "log.wandb.mode", options.WANDB_MODES)
  for name in ("project", "entity", "name"):
    cl.check_str(config, f"log.wandb.{name}", empty=True)
  project = config.log.wandb.project
  if project and importlib.util.find_spec("wandb") is None:
    raise cl.field_error("log.wandb.project", project,
                         "the wandb package (pip install 'hicra-jax[wandb]'), or '' for off")


def run(config: config_lib.ConfigDict) -> int:
  """Builds the components and trains; returns the exit status."""
  # Imported here: keeps `hicra-jax --help` and config validation from importing jax.
  # pylint: disable=import-outside-toplevel
  from hicra_jax import sharding
  from hicra_jax.models import save_pretrained
  from hicra_jax.train.build import build_components, make_mesh
  from hicra_jax.train.loop import NonFiniteError, Trainer
  # pylint: enable=import-outside-toplevel
  mesh = make_mesh(config)
  if mesh is not None:  # each generate() call splits its prompts over the batch shards
    shards = sharding.batch_shards(mesh)
    for field in ("rollout.prompts_per_step", "data.eval_size"):
      value = config_lib.get_field(config, field)
      if value % shards:
        raise config_lib.field_error(field, value, f"a multiple of the mesh's batch shards "
                                     f"(data x fsdp = {shards})")
  components = build_components(config)
  trainer = Trainer(config, components)
  try:
    trainer.run(resume=bool(config.resume))
  except NonFiniteError as e:
    print(f"hicra-jax train: {e}", flush=True)
    return 3
  except FileExistsError as e:
    raise config_lib.field_error("workdir", config.workdir, f"a fresh workdir ({e})") from e
  finally:
    trainer.close()
  if trainer.signals.stop_requested:
    print(f"stopped by signal {trainer.signals.signal} at step {int(trainer.state.step)}; "
          f"resume with --config.resume=True", flush=True)
    return 0
  if config.export_policy and components.model_config is not None:
    path = os.path.join(config.workdir, "policy")
    save_pretrained(trainer.policy(), components.model_config, path)
    print(f"exported the policy to {path}", flush=True)
  return 0
