"""Shared tiny configs for the trainer tests (one model shape: compiled programs are shared)."""

from __future__ import annotations

from hicra_jax.commands import train as train_cmd
from hicra_jax.train.run_config import RunConfig


def tiny_config(workdir, **overrides) -> RunConfig:
  """The embedded train config (random 2-layer model, synthetic task) plus overrides, validated.

  overrides: dotted names with "__" for ".", e.g. rollout__group_size=4.
  """
  config = train_cmd.get_config()
  config.workdir = str(workdir)
  config.log.tensorboard = False
  config.export_policy = False
  config.checkpoint.async_save = False
  for key, value in overrides.items():
    node = config
    parts = key.split("__")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value
  return train_cmd.validate(config)
