"""`hicra-jax train`: RL of a reasoning policy with HICRA, GRPO or entropy regularization.

  hicra-jax train --config configs/quickstart.py
  hicra-jax train --config configs/qwen3_4b_instruct_2507_hicra.py --config.algorithm=grpo
  hicra-jax train --config ... --config.resume=True      # continue the run in workdir

Writes into `workdir`: checkpoints/ (Orbax), metrics.jsonl, samples.jsonl,
tensorboard/ event files and, at the end, policy/ (a Hugging Face directory).
"""

from __future__ import annotations

import logging
import os

from hicra_jax import config as config_lib
from hicra_jax.train import run_config
from hicra_jax.train.run_config import RunConfig

HELP = "train a policy with HICRA / GRPO / entropy regularization (RL with verifiable rewards)"

# The schema lives in the library (presets build on it); the CLI serves it as is.
get_config = run_config.get_config
SCHEMA = RunConfig


def validate(config: config_lib.ConfigDict) -> RunConfig:
  """The typed run config; raises ConfigError naming the first bad field, before anything runs."""
  run = run_config.parse(config)
  run_config.check_environment(run)
  return run


def run(config: RunConfig) -> int:
  """Builds the components and trains; returns the exit status."""
  # Imported here: keeps `hicra-jax --help` and config validation from importing jax.
  # pylint: disable=import-outside-toplevel
  from hicra_jax import multihost, sharding
  from hicra_jax.models import save_pretrained
  from hicra_jax.train import memory_plan
  from hicra_jax.train.build import build_components, make_mesh
  from hicra_jax.train.loop import NonFiniteError, Trainer
  # pylint: enable=import-outside-toplevel
  # Before anything touches a jax backend: several processes share one run.
  multihost.initialize(**config.distributed.initialize_kwargs())
  multihost.check_shared_directory(config.workdir)
  plan = memory_plan.plan_on_this_machine(config)  # config.json only: no weights yet
  advice = plan.advice()
  if config.dry_run:
    print(plan.report(), flush=True)
    if not plan.fits:
      print("to fit, change in this order:\n" + "\n".join(f"  {line}" for _, line in advice)
            if advice else "no change of the config that the plan knows makes it fit", flush=True)
    return 0 if plan.fits else 2
  if not plan.fits:  # before loading any weights
    field = advice[0][0] if advice else "model.mesh.fsdp"
    raise config_lib.ConfigError(
        f"the run needs {plan.total / memory_plan.GIB:.2f} GiB per device, more than the "
        f"{plan.device_bytes / memory_plan.GIB:.2f} GiB it has: change {field} first ("
        + "; ".join(line for _, line in advice) + "); `--config.dry_run=True` prints the plan",
        field=field)
  logging.getLogger("hicra_jax.train").info(
      "memory plan: %.2f GiB per device%s", plan.total / memory_plan.GIB,
      "" if plan.device_bytes is None else f" of {plan.device_bytes / memory_plan.GIB:.2f} GiB")
  mesh = make_mesh(config.model.mesh)
  if mesh is not None:  # each generate() call splits its prompts over the batch shards
    shards = sharding.batch_shards(mesh)
    for field, value in (("rollout.prompts_per_step", config.rollout.prompts_per_step),
                         ("data.eval_size", config.data.eval_size)):
      if value % shards:
        raise config_lib.field_error(field, value, f"a multiple of the mesh's batch shards "
                                     f"(data x fsdp = {shards})")
  components = build_components(config)
  trainer = Trainer(config, components)
  try:
    trainer.run(resume=config.resume)
  except NonFiniteError as e:
    print(f"hicra-jax train: {e}", flush=True)
    return 3
  except FileExistsError as e:
    raise config_lib.field_error("workdir", config.workdir, f"a fresh workdir ({e})") from e
  finally:
    trainer.close()
  if trainer.stopping():
    if multihost.is_main():
      print(f"stopped by a signal at step {int(trainer.state.step)}; resume with "
            f"--config.resume=True", flush=True)
    return 0
  if config.export_policy and components.model_config is not None:
    path = os.path.join(config.workdir, "policy")
    save_pretrained(trainer.policy(), components.model_config, path,
                    tokenizer=components.tokenizer)
    if multihost.is_main():
      print(f"exported the policy to {path}", flush=True)
  return 0
