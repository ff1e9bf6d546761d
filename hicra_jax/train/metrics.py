"""Metric writers: JSONL + TensorBoard (+ optional Weights & Biases) scalars, a
sample log, a progress line.

Only process 0 writes (`jax.process_index() == 0` is checked by the caller).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from typing import Any, Mapping

import tqdm.auto

from hicra_jax.train.run_config import WandbConfig

# Every key the trainer writes to metrics.jsonl after a step (tests check them).
STEP_KEYS = (
    "step", "reward_mean", "accuracy", "response_length_mean", "response_length_max",
    "truncation_rate", "loss", "grad_norm", "learning_rate", "clip_frac", "clip_frac_low",
    "clip_frac_high", "approx_kl", "entropy", "entropy_planning", "entropy_execution",
    "log_ppl_planning", "log_ppl_execution", "planning_token_ratio", "advantage_planning",
    "advantage_execution", "semantic_entropy", "time_rollout_s", "time_reward_s",
    "time_masks_s", "time_update_s", "time_step_s", "tokens_per_s", "reward_failures",
    "skipped_updates", "consecutive_skips", "max_new_tokens", "filter_rounds",
    "kept_groups_fraction", "masked_groups", "example_ids",
)


def _jsonable(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def _numeric(scalars: Mapping[str, Any]) -> dict[str, float]:
  return {k: v for k, v in scalars.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbWriter:
  """Mirrors step scalars to a Weights & Biases run (`pip install 'hicra-jax[wandb]'`).

  The run id is kept in `workdir/wandb_run_id`, so a resumed training run
  continues the same W&B run instead of starting a new one.
  """

  def __init__(self, workdir: str, options: WandbConfig, config: Mapping[str, Any] | None = None):
    import wandb  # pylint: disable=import-outside-toplevel
    id_path = os.path.join(workdir, "wandb_run_id")
    if os.path.exists(id_path):
      with open(id_path, encoding="utf-8") as f:
        run_id = f.read().strip()
    else:
      run_id = secrets.token_hex(8)
      with open(id_path, "w", encoding="utf-8") as f:
        f.write(run_id + "\n")
    self.run = wandb.init(
        project=options.project, entity=options.entity or None, name=options.name or None,
        mode=options.mode, dir=workdir, id=run_id, resume="allow",
        config=dict(config) if config is not None else None)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run.log(_numeric(scalars), step=int(step))

  def close(self) -> None:
    self.run.finish()


class MetricWriter:
  """Appends one JSON object per step to `metrics.jsonl`; mirrors scalars to
  TensorBoard and, when `wandb.project` is set, to Weights & Biases."""

  def __init__(self, workdir: str, *, tensorboard: bool = True,
               wandb: WandbConfig | None = None, run_config: Mapping[str, Any] | None = None):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.sample_path = os.path.join(workdir, "samples.jsonl")
    self._file = open(self.path, "a", encoding="utf-8")
    self._samples = open(self.sample_path, "a", encoding="utf-8")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._wandb = WandbWriter(workdir, wandb, run_config) if wandb and wandb.project else None

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {k: _jsonable(v) for k, v in scalars.items()}
    record["step"] = int(step)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in _numeric(scalars).items():
        self._tb.add_scalar(key, value, step)
      self._tb.flush()
    if self._wandb is not None:
      self._wandb.write(step, scalars)

  def write_samples(self, step: int, samples: list[Mapping[str, Any]]) -> None:
    for sample in samples:
      self._samples.write(json.dumps({"step": int(step), **sample}) + "\n")
    self._samples.flush()

  def close(self) -> None:
    self._file.close()
    self._samples.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.close()


def _in_notebook() -> bool:
  """True inside a Jupyter / Colab kernel (tqdm's own test), where tqdm.auto draws a widget."""
  ipython = sys.modules.get("IPython")
  try:
    return ipython is not None and "IPKernelApp" in ipython.get_ipython().config
  except Exception:  # pylint: disable=broad-except
    return False


class Progress:
  """A tqdm.auto bar (a widget in a notebook) on a terminal; one summary line per step otherwise.

  The bar carries the step's key metrics as its postfix; in a log file each
  step is one plain line (`line`), so logs stay readable.
  """

  def __init__(self, total_steps: int, start_step: int = 0, stream=None):
    self.total = total_steps
    self.start_step = start_step
    self.t0 = time.perf_counter()
    self.stream = stream or sys.stdout
    tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.bar = None
    if tty or (stream is None and _in_notebook()):
      self.bar = tqdm.auto.tqdm(total=total_steps, initial=start_step, unit="step",
                                file=self.stream, dynamic_ncols=True, mininterval=0)

  @staticmethod
  def metrics_text(m: Mapping[str, Any]) -> str:
    return (f"reward {m.get('reward_mean', 0):.3f} acc {m.get('accuracy', 0):.3f} "
            f"len {m.get('response_length_mean', 0):.0f} loss {m.get('loss', 0):+.4f} "
            f"gnorm {m.get('grad_norm', 0):.3f} plan {m.get('planning_token_ratio', 0):.3f}")

  def line(self, step: int, m: Mapping[str, Any]) -> str:
    done = step - self.start_step
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / max(done, 1) * (self.total - step)
    return (f"step {step}/{self.total} {self.metrics_text(m)} "
            f"{m.get('time_step_s', 0):.1f}s/step eta {eta:.0f}s")

  def update(self, step: int, m: Mapping[str, Any]) -> None:
    if self.bar is None:
      self.stream.write(self.line(step, m) + "\n")
      self.stream.flush()
      return
    self.bar.set_postfix_str(self.metrics_text(m), refresh=False)
    self.bar.update(step - self.bar.n)
    if step >= self.total:
      self.bar.close()
