"""Metric writers: JSONL + TensorBoard (+ optional Weights & Biases) scalars, a
sample log, a progress line.

Only process 0 writes (`jax.process_index() == 0` is checked by the caller).

The workdir is any etils.epath path: local, or gs://bucket/run (s3://, ...).
Every file goes through epath; see `_LineFile` for how the JSONL logs are
appended to on object stores, which have no append.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import secrets
import sys
import time
from typing import Any, Mapping

import tqdm.std
from etils import epath

from hicra_jax import config as config_lib
from hicra_jax.train.run_config import WandbConfig

logger = logging.getLogger("hicra_jax.train")

CONFIG_FILE = "config.json"

# Every key the trainer writes to metrics.jsonl after a step (tests check them).
STEP_KEYS = (
    "step", "reward_mean", "accuracy", "response_length_mean", "response_length_max",
    "truncation_rate", "loss", "grad_norm", "learning_rate", "clip_frac", "clip_frac_low",
    "clip_frac_high", "approx_kl", "entropy", "entropy_planning", "entropy_execution",
    "entropy_t1", "entropy_t1_planning", "entropy_t1_execution", "log_ppl_planning",
    "log_ppl_execution", "rel_ppl_planning", "rel_ppl_execution", "planning_token_ratio",
    "advantage_planning", "advantage_execution", "semantic_entropy", "sg_conditional_entropy",
    "fork_top_entropy_planning_fraction", "fork_planning_top_entropy_fraction",
    "time_rollout_s", "time_reward_s",
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


class _LineFile:
  """A text file that lines are appended to, through etils.epath.

  A local path keeps one handle open in append mode, flushed after each write.
  Object stores (gs://, s3://: any path with a scheme) cannot append to an
  object, so there the file's content is read back once when opened and the
  whole file is rewritten after each write (in UTF-8). Either way a file that
  already exists, e.g. when a run resumes, is continued, never truncated. The
  rewrite costs the file's size per write: a few hundred bytes a step for
  metrics, a few completions a step for the sample log.
  """

  def __init__(self, path: epath.Path):
    self.path = path
    self._handle = None
    self._text: list[str] = []
    if config_lib.is_local_path(path):
      self._handle = path.open("a", encoding="utf-8")
    elif path.exists():
      self._text.append(path.read_bytes().decode("utf-8"))

  def write_lines(self, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if self._handle is not None:
      self._handle.write(text)
      self._handle.flush()
      return
    if self._text and not self._text[-1].endswith("\n"):
      self._text.append("\n")  # a previous writer's cut-off last line stays on its own
    self._text.append(text)
    self.path.write_bytes("".join(self._text).encode("utf-8"))

  def close(self) -> None:
    if self._handle is not None:
      self._handle.close()


# tensorboardX writes event files to these schemes itself, given these modules
# (`record_writer.py`); it has no writer for other schemes (az://, hf://).
_TENSORBOARD_SCHEMES = {"gs": "google.cloud.storage", "s3": "boto3"}
_warned: set[str] = set()


def _warn_once(message: str, *args: Any) -> None:
  if message not in _warned:
    _warned.add(message)
    logger.warning(message, *args)


def _module_available(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):  # a parent package missing
    return False


def _tensorboard_writer(logdir: epath.Path):
  """A tensorboardX SummaryWriter on `logdir`, or None (with a warning, once) when
  tensorboardX cannot write there: a non-local scheme it has no writer for, or one
  whose client library is missing."""
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  if config_lib.is_local_path(logdir):
    return SummaryWriter(os.fspath(logdir))
  scheme = str(logdir).split("://", 1)[0]
  needs = _TENSORBOARD_SCHEMES.get(scheme)
  if needs is None or not _module_available(needs):
    _warn_once("TensorBoard is off: tensorboardX cannot write to %s://%s (metrics.jsonl "
               "and samples.jsonl are still written)", scheme,
               f" without the {needs} module" if needs else " paths")
    return None
  try:
    return SummaryWriter(str(logdir))
  except Exception as e:  # pylint: disable=broad-except
    _warn_once("TensorBoard is off: tensorboardX cannot write to %s (%s)", logdir, e)
    return None


def wandb_run_id(workdir: str | os.PathLike) -> str:
  """The W&B run id kept in `workdir/wandb_run_id` (local or e.g. gs://), created
  (16 hex digits) on first use."""
  id_path = config_lib.as_epath(workdir) / "wandb_run_id"
  if id_path.exists():
    return id_path.read_text().strip()
  run_id = secrets.token_hex(8)
  id_path.parent.mkdir(parents=True, exist_ok=True)
  id_path.write_text(run_id + "\n")
  return run_id


class WandbWriter:
  """Mirrors step scalars to a Weights & Biases run (`pip install 'hicra-jax[wandb]'`).

  The run id is kept in `workdir/wandb_run_id`, so a resumed training run
  continues the same W&B run instead of starting a new one.
  """

  def __init__(self, workdir: str | os.PathLike, options: WandbConfig,
               config: Mapping[str, Any] | None = None):
    import wandb  # pylint: disable=import-outside-toplevel
    run_id = wandb_run_id(workdir)
    # W&B keeps its own files in a local directory: the workdir when it is local, else
    # W&B's default (WANDB_DIR, or ./wandb).
    root = config_lib.as_epath(workdir)
    local_dir = os.fspath(root) if config_lib.is_local_path(root) else None
    self.run = wandb.init(
        project=options.project, entity=options.entity or None, name=options.name or None,
        mode=options.mode, dir=local_dir, id=run_id, resume="allow",
        config=dict(config) if config is not None else None)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run.log(_numeric(scalars), step=int(step))

  def close(self) -> None:
    self.run.finish()


class MetricWriter:
  """Appends one JSON object per step to `metrics.jsonl`; mirrors scalars to
  TensorBoard and, when `wandb.project` is set, to Weights & Biases.

  `workdir` is local or any etils.epath path (gs://bucket/run). Reopening a
  workdir (a resumed run) continues its metrics.jsonl and samples.jsonl. On a
  non-local workdir that tensorboardX cannot write to, TensorBoard is skipped
  with a warning.
  """

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True,
               wandb: WandbConfig | None = None, run_config: Mapping[str, Any] | None = None):
    root = config_lib.as_epath(workdir)
    root.mkdir(parents=True, exist_ok=True)
    self.root = root
    self.path = str(root / "metrics.jsonl")
    self.sample_path = str(root / "samples.jsonl")
    self._file = _LineFile(root / "metrics.jsonl")
    self._samples = _LineFile(root / "samples.jsonl")
    self._tb_dir = root / "tensorboard"
    self._tb = _tensorboard_writer(self._tb_dir) if tensorboard else None
    self._wandb = WandbWriter(workdir, wandb, run_config) if wandb and wandb.project else None

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {k: _jsonable(v) for k, v in scalars.items()}
    record["step"] = int(step)
    self._file.write_lines([json.dumps(record)])
    if self._tb is not None:
      def add(tb):
        for key, value in _numeric(scalars).items():
          tb.add_scalar(key, value, step)
        tb.flush()
      self._tensorboard(add)
    if self._wandb is not None:
      self._wandb.write(step, scalars)

  def write_config(self, run_config: Mapping[str, Any]) -> None:
    """Writes the run's config to workdir/config.json (replaced on resume)."""
    (self.root / CONFIG_FILE).write_text(
        json.dumps(run_config, indent=2, sort_keys=True, default=str) + "\n")

  def write_samples(self, step: int, samples: list[Mapping[str, Any]]) -> None:
    if samples:
      self._samples.write_lines([json.dumps({"step": int(step), **sample}) for sample in samples])

  def _tensorboard(self, action) -> None:
    """action(SummaryWriter). On a non-local workdir a failure (an upload) turns TensorBoard
    off with a warning instead of stopping the run: it only mirrors metrics.jsonl."""
    try:
      action(self._tb)
    except Exception as e:  # pylint: disable=broad-except
      if config_lib.is_local_path(self._tb_dir):
        raise
      _warn_once("TensorBoard is off: writing to %s failed (%s)", self._tb_dir, e)
      self._tb = None

  def close(self) -> None:
    self._file.close()
    self._samples.close()
    if self._tb is not None:
      self._tensorboard(lambda tb: tb.close())
    if self._wandb is not None:
      self._wandb.close()


def _in_notebook() -> bool:
  """True inside a Jupyter / Colab kernel (tqdm's own test), false in a terminal IPython."""
  ipython = sys.modules.get("IPython")
  try:
    return ipython is not None and "IPKernelApp" in ipython.get_ipython().config
  except Exception:  # pylint: disable=broad-except
    return False


def _notebook_bar(total: int, initial: int):
  """A tqdm widget bar, or None when ipywidgets is missing (no widget to draw)."""
  if not _module_available("ipywidgets"):
    return None
  import tqdm.notebook  # pylint: disable=import-outside-toplevel
  try:
    return tqdm.notebook.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                              mininterval=0)
  except ImportError:  # an ipywidgets tqdm cannot use (tqdm says which in the message)
    return None


class Progress:
  """The trainer's progress display, chosen by where it is shown.

  - A terminal (`stream.isatty()`): a tqdm bar carrying the step's key metrics
    as its postfix, redrawn in place.
  - A Jupyter / Colab notebook (no `stream` given): a tqdm widget bar with the
    same postfix, plus one plain line per step below it, so the step history
    stays in the saved notebook (where widgets do not render, e.g. on GitHub).
    Without ipywidgets only the lines.
  - Anything else (a log file, captured output): one plain line per step (`line`).
  """

  def __init__(self, total_steps: int, start_step: int = 0, stream=None):
    self.total = total_steps
    self.start_step = start_step
    self.t0 = time.perf_counter()
    self.stream = stream or sys.stdout
    self.bar = None
    self.lines = True  # a plain line per step
    if hasattr(self.stream, "isatty") and self.stream.isatty():
      self.bar = tqdm.std.tqdm(total=total_steps, initial=start_step, unit="step",
                               file=self.stream, dynamic_ncols=True, mininterval=0)
      self.lines = False  # the bar redraws its line in place: no other lines between
    elif stream is None and _in_notebook():
      self.bar = _notebook_bar(total_steps, start_step)

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
    if self.lines:
      self.stream.write(self.line(step, m) + "\n")
      self.stream.flush()
    if self.bar is None:
      return
    self.bar.set_postfix_str(self.metrics_text(m), refresh=False)
    self.bar.update(step - self.bar.n)
    if step >= self.total:
      self.bar.close()
