"""`hicra-jax convert`: export a training checkpoint's policy as a Hugging Face directory.

  hicra-jax convert --config.workdir=runs/quickstart --config.output=runs/quickstart/hf_step10
  hicra-jax convert --config.workdir=runs/quickstart --config.step=5 --config.output=out

Reads the run's config from the checkpoint, rebuilds the model skeleton,
restores the params and writes safetensors + config.json (transformers loads it).
"""

from __future__ import annotations

import os

from hicra_jax import config as config_lib
from hicra_jax.train import run_config
from hicra_jax.train.run_config import ModelSettings, OptimConfig
from hicra_jax.typed_config import from_mapping

HELP = "export a training checkpoint's policy as a Hugging Face directory (safetensors)"


def get_config() -> config_lib.ConfigDict:
  c = config_lib.ConfigDict()
  c.workdir = "runs/quickstart"  # the training run's workdir (holds checkpoints/)
  c.step = -1  # -1: the latest checkpoint
  c.output = "runs/quickstart/hf"  # the directory to write
  return c


def validate(config: config_lib.ConfigDict) -> config_lib.ConfigDict:
  """Field types only: the embedded default must validate before any run exists."""
  config_lib.check_str(config, "workdir")
  config_lib.check_int(config, "step", minimum=-1)
  config_lib.check_str(config, "output")
  return config


def _check_workdir(config: config_lib.ConfigDict) -> None:
  config_lib.check_path(config, "workdir", predicate=config_lib.is_training_workdir,
                        expected="a training workdir with checkpoints/<step>/")


def saved_run_config(saved: dict) -> config_lib.ConfigDict:
  """A run's saved config over today's defaults (a ConfigDict, its values unchecked).

  Fields added since the run was saved take their defaults; retired fields
  (run_config.RETIRED_FIELDS) are dropped; any other field this version no
  longer knows fails with ConfigError. Only the sections a restore needs are
  checked (by `restore_policy`): the data file or a custom reward of the run
  need not exist where its policy is exported.
  """
  config = run_config.get_config()
  config.update({k: v for k, v in saved.items() if k not in run_config.RETIRED_FIELDS})
  config_lib.check_fields(config, run_config.get_config())
  return config


def restore_policy(workdir: str, step: int | None = None, *, dtype: str | None = None):
  """(policy Decoder, ModelConfig, tokenizer or None, step) of a training checkpoint.

  Reads the run's config from the checkpoint, rebuilds the model skeleton and
  restores the params of `step` (None: the latest). dtype: cast the params
  (and compute) to this dtype; None keeps the run's.
  """
  # Imported here: keeps `hicra-jax --help` from importing jax.
  # pylint: disable=import-outside-toplevel
  from flax import nnx
  from hicra_jax.models.weights import build_model, flat_params
  from hicra_jax.train.build import load_model
  from hicra_jax.train.checkpoint import Checkpointer
  from hicra_jax.train.loop import optimizer_config
  from hicra_jax.train.state import create_train_state, make_optimizer
  # pylint: enable=import-outside-toplevel
  ckpt = Checkpointer(os.path.join(os.path.expanduser(workdir), "checkpoints"))
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise config_lib.field_error("workdir", workdir, "a workdir with at least one checkpoint")
    if step not in ckpt.all_steps():
      raise config_lib.field_error("step", step, f"one of the checkpoint steps "
                                   f"{ckpt.all_steps()} in {workdir!r} (or -1: the latest)")
    meta = ckpt.restore_meta(step)
    config = saved_run_config(meta["config"])
    settings = from_mapping(ModelSettings, config.model, "model.")
    model, model_config, tokenizer = load_model(settings, seed=config.seed)
    optimizer = make_optimizer(optimizer_config(from_mapping(OptimConfig, config.optim, "optim."),
                                                total_steps=config.num_steps * config.loss.epochs))
    graphdef, template = create_train_state(model, optimizer)
    state, _, _ = ckpt.restore(step, template)
  finally:
    ckpt.close()
  policy = nnx.merge(graphdef, state.params)
  if dtype is not None and dtype != settings.dtype:
    params = {k: v.astype(dtype) for k, v in flat_params(policy).items()}
    policy = build_model(model_config, params, param_dtype=dtype, remat=policy.remat)
  return policy, model_config, tokenizer, step


def export_checkpoint(workdir: str, output: str, step: int | None = None) -> int:
  """Writes the policy of checkpoint `step` (None: latest) to `output`; returns the step."""
  # Imported here: keeps `hicra-jax --help` from importing jax.
  from hicra_jax.models import save_pretrained  # pylint: disable=import-outside-toplevel
  policy, model_config, tokenizer, step = restore_policy(workdir, step)
  save_pretrained(policy, model_config, output, tokenizer=tokenizer)
  return step


def run(config: config_lib.ConfigDict) -> None:
  _check_workdir(config)
  step = export_checkpoint(config.workdir, config.output,
                           None if config.step < 0 else int(config.step))
  print(f"exported step {step} of {config.workdir} to {config.output}")
