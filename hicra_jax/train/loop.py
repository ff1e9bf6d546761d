"""The RL loop (imperative shell): rollout -> rewards -> filter/refill -> masks ->
advantages -> jitted update -> metrics -> eval -> checkpoint.

`Trainer` holds the train state and the jitted update and orchestrates the
pieces, each in its own module: `rollout` (sampling, rewards, dynamic
filtering), `batch` (planning masks, advantages, the update's `Batch`),
`step_metrics` (the logged scalars), `samples` (the sample log), `signals`
(SIGTERM) and `checkpoint`. The run is reproducible: the PRNG key of step s is
fold_in(base_key, s), the data stream's state and the curriculum stage are
checkpointed, so a resumed run repeats exactly what the uninterrupted one does.

Several processes run the same loop in lockstep: every decision (refill,
curriculum, NaN guard, stop) is taken from global values or agreed with one
small collective (`stopping`), the data stream is global (each process
samples and grades the rows its devices hold), and only process 0 writes
metrics and samples.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from hicra_jax import multihost
from hicra_jax.data import images as images_lib
from hicra_jax.data.datasets import ExampleStream
from hicra_jax.eval import harness
from hicra_jax.eval import report as eval_report
from hicra_jax.sampling import GenerationInterrupted, SamplingParams
from hicra_jax.train import batch as batch_lib
from hicra_jax.train import rollout as rollout_lib
from hicra_jax.train import samples as samples_lib
from hicra_jax.train import step as step_lib
from hicra_jax.train import step_metrics
from hicra_jax.train.batch import Planner
from hicra_jax.train.checkpoint import Checkpointer, encode_bytes
from hicra_jax.train.metrics import MetricWriter, Progress
from hicra_jax.train.rollout import RewardFn, safe_rewards
from hicra_jax.train.run_config import OptimConfig, RunConfig
from hicra_jax.train.signals import StopSignals
from hicra_jax.train.state import (OptimizerConfig, create_train_state, learning_rate_schedule,
                                   make_optimizer, optimizer_count)

__all__ = ["Components", "NonFiniteError", "Planner", "RewardFn", "Trainer", "optimizer_config",
           "safe_rewards", "update_config"]

logger = logging.getLogger("hicra_jax.train")

# Tests only (tests/test_train_resume.py): seconds to sleep between rollout and
# update, a window in which to kill a step. An environment variable, so that no
# user config carries a test knob.
TEST_STEP_SLEEP_ENV = "HICRA_JAX_TEST_STEP_SLEEP_S"

# Streams of a step's key beside the rollout rounds' fold_in(key, round).
EVAL_STREAM, SHUFFLE_STREAM = 10**6, 2 * 10**6


class NonFiniteError(RuntimeError):
  """Too many consecutive non-finite updates; the run saved a checkpoint and stopped."""


@dataclasses.dataclass
class Components:
  """What a run trains on (built by `hicra_jax.train.build` or a test).

  model: the policy (an nnx Decoder). examples/eval_examples: dicts with
  "prompt_ids" (list[int]) and "id". reward_fn / planner: see
  `rollout.RewardFn` and `batch.Planner`. tokenizer: optional, for texts in
  the sample log and text rewards. stop_ids: the sampler's stop tokens.
  trie_bytes: the SG trie saved with checkpoints (b"" when the planner is not
  a trie). ref_params: optional frozen reference params for the KL term.
  benchmarks: loaded benchmarks for avg@k / pass@k at eval steps.
  image_processor: a vision-language model's image processor
  (`hicra_jax.data.images.image_processor`); examples may then carry "images"
  and "image_grid_thw" (`attach_prompt_ids(..., processor=...)`).
  """

  model: Any
  examples: Sequence[Mapping[str, Any]]
  reward_fn: RewardFn
  planner: Planner
  eval_examples: Sequence[Mapping[str, Any]] = ()
  tokenizer: Any = None
  stop_ids: tuple[int, ...] = ()
  trie_bytes: bytes = b""
  ref_params: Any = None
  model_config: Any = None
  benchmarks: Sequence[Any] = ()  # `hicra_jax.eval.Benchmark`s evaluated at eval steps
  image_processor: Any = None  # a vision-language model's image processor (None: text)


def optimizer_config(o: OptimConfig, *, total_steps: int) -> OptimizerConfig:
  """The `OptimizerConfig` of an `optim` section; total_steps: optimizer updates of the run."""
  return OptimizerConfig(
      lr=o.lr, warmup_steps=o.warmup_steps, schedule=o.schedule, total_steps=total_steps,
      final_lr_fraction=o.final_lr_fraction, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
      eps=o.eps, max_grad_norm=o.max_grad_norm)


def update_config(config: RunConfig, *, has_reference: bool) -> step_lib.UpdateConfig:
  """The update's static options of a run (KL only with a reference model)."""
  loss = config.loss
  return step_lib.UpdateConfig(
      clip_low=loss.clip_low, clip_high=loss.clip_high, aggregation=loss.aggregation,
      entropy_coef=config.entropy_coef, kl_coef=loss.kl_coef if has_reference else 0.0,
      kl_estimator=loss.kl_estimator,
      micro_batches=config.mini_batch_rows // loss.micro_batch_size,  # per optimizer step
      mini_batches=config.mini_batches, epochs=loss.epochs,
      old_logprobs=config.rollout.old_logprobs,
      temperature=config.rollout.temperature)


class Trainer:
  """One training run. `run()` trains to config.num_steps; see module docstring."""

  def __init__(self, config: RunConfig, components: Components):
    if not isinstance(config, RunConfig):
      raise TypeError(f"Trainer needs a RunConfig (hicra_jax.train.run_config.parse turns a "
                      f"ConfigDict into one), got {type(config).__name__}")
    self.config = config
    self.c = components
    self.group_size = config.rollout.group_size
    self.prompts_per_step = config.rollout.prompts_per_step
    self.rows = config.rollout.rows
    opt_cfg = optimizer_config(config.optim, total_steps=config.optimizer_steps)
    self.schedule = learning_rate_schedule(opt_cfg)
    self.optimizer = make_optimizer(opt_cfg)
    self.graphdef, self.state = create_train_state(components.model, self.optimizer)
    self.update_cfg = update_config(config, has_reference=components.ref_params is not None)
    self.credit_options = batch_lib.CreditOptions(
        algorithm=config.algorithm, alpha=config.planning.alpha,
        group_size=self.group_size, estimator=config.loss.estimator, scale=config.loss.scale)
    self.base_key = jax.random.key(config.seed)
    self.data = ExampleStream(components.examples, config.seed)
    self.stage = 0  # curriculum stage: index into rollout.max_new_tokens
    self.workdir = config.workdir
    self.mesh = getattr(components.model, "mesh", None)
    # A vision-language model: sampled image tokens never enter the loss (rollout.collect).
    self.exclude_ids = (rollout_lib.vision_token_ids(components.model.config)
                        if components.image_processor is not None else ())
    self.is_main = multihost.is_main()
    self.checkpointer = Checkpointer(
        f"{self.workdir}/checkpoints", keep=config.checkpoint.keep,
        keep_best=config.checkpoint.keep_best, async_save=config.checkpoint.async_save)
    self.writer = None
    if self.is_main:
      self.writer = MetricWriter(self.workdir, tensorboard=config.log.tensorboard,
                                 wandb=config.log.wandb, run_config=dataclasses.asdict(config))
      self.writer.write_config(dataclasses.asdict(config))  # workdir/config.json (report labels)
    self.signals = StopSignals()  # SIGTERM: stop at the next safe point (see run)
    self._stopping = False
    self.last_eval_accuracy = None
    self.last_samples: list[dict[str, Any]] = []  # the last step's sample-log entries
    # Each class's log_ppl_* at its first logged step with tokens: rel_ppl_* divides by it.
    self.reference_log_ppl: dict[str, float] = {}

  # ------------------------------------------------------------ checkpoints

  @property
  def max_new_tokens(self) -> int:
    return self.config.rollout.max_new_tokens[self.stage]

  def stopping(self) -> bool:
    """Whether a stop signal reached any process: the same answer on every process.

    With several processes this is one small collective, so every process
    calls it at the same points (between decode segments, after a rollout,
    after an update). Once True it stays True.
    """
    if not self._stopping:
      self._stopping = multihost.any_process(self.signals.stop_requested)
    return self._stopping

  def meta(self) -> dict[str, Any]:
    data_state = self.data.get_state()
    multihost.check_same(data_state, "the data stream's position")
    return {"data_state": data_state, "curriculum_stage": self.stage,
            "config": dataclasses.asdict(self.config),
            "trie_npz_base64": encode_bytes(self.c.trie_bytes),
            "reference_log_ppl": self.reference_log_ppl}

  def save(self, *, force: bool = False) -> None:
    step = int(self.state.step)
    if step in self.checkpointer.all_steps():
      return
    self.checkpointer.save(step, self.state, self.base_key, self.meta(),
                           eval_accuracy=self.last_eval_accuracy, force=force)

  def restore(self) -> int:
    """Restores the latest checkpoint; returns its step."""
    state, key, meta = self.checkpointer.restore(None, self.state)
    self.state, self.base_key = state, key
    self.data.set_state(meta["data_state"])
    self.stage = int(meta["curriculum_stage"])
    self.reference_log_ppl = dict(meta.get("reference_log_ppl") or {})
    return int(self.state.step)

  # ------------------------------------------------------------------ steps

  def policy(self):
    return nnx.merge(self.graphdef, self.state.params)

  def _sample(self, examples, key, *, n: int, temperature: float) -> rollout_lib.Sampled:
    """n completions per example from the current policy (abandoned on SIGTERM)."""
    params = SamplingParams(n=n, max_new_tokens=self.max_new_tokens, temperature=temperature,
                            top_p=self.config.rollout.top_p, top_k=self.config.rollout.top_k,
                            stop_ids=self.c.stop_ids)
    cap = self.config.rollout.max_rows_per_call  # eval groups may be larger than rollout ones
    return rollout_lib.sample(
        self.policy(), examples, params, key,
        prompt_buckets=self.config.rollout.prompt_buckets,
        segment_tokens=self.config.rollout.signal_check_tokens,
        rows_per_call=None if cap is None else max(cap, n),
        refill_slots=self.config.rollout.refill_slots,
        tokenizer=self.c.tokenizer, interrupt=self.stopping, vision=self._vision(examples))

  def _vision(self, examples):
    """The examples' images (`VisionInputs`, one row each; read and processed now), or None
    for a text model."""
    processor = self.c.image_processor
    if processor is None:
      return None
    return harness.vision_rows(self.c.model.config, [
        images_lib.example_pixel_inputs(e, processor) for e in examples])

  def train_step(self) -> dict[str, Any]:
    """One RL step; returns the step's metrics (host floats), or {} when a signal
    abandoned the rollout (its prompts come again in the next step)."""
    t_start = time.perf_counter()
    key = jax.random.fold_in(self.base_key, int(self.state.step))
    data_state = self.data.get_state()
    try:
      rollouts = rollout_lib.collect(
          functools.partial(self._sample, n=self.group_size,
                            temperature=self.config.rollout.temperature),
          self.data, key, self.c.reward_fn, group_size=self.group_size,
          prompts_per_step=self.prompts_per_step, dynamic_filter=self.config.filter.dynamic,
          max_rounds=self.config.filter.max_rounds, mesh=self.mesh, exclude_ids=self.exclude_ids)
      time.sleep(float(os.environ.get(TEST_STEP_SLEEP_ENV, "0")))  # tests: a window to kill
    except GenerationInterrupted:  # a signal arrived mid-rollout: handled just below
      if not self.stopping():
        raise
    if self.stopping():
      self.data.set_state(data_state)  # the abandoned step's prompts come again
      return {}
    t0 = time.perf_counter()
    credit = batch_lib.token_credit(rollouts, self.c.planner, self.credit_options,
                                    mesh=self.mesh)
    credit.advantages_NxT.block_until_ready()
    t1 = time.perf_counter()
    log = self.config.log
    dynamics = step_metrics.dynamics(rollouts, credit.planning_NxT, credit.sg_counts_NxZ,
                                     fork_quantile=log.fork_quantile,
                                     follow_ngram=log.follow_ngram)  # runs beside the update
    vision = batch_lib.place_vision(rollouts.vision_P, self.mesh)
    batch = batch_lib.assemble_batch(
        rollouts, credit, group_size=self.group_size,
        prompt_buckets=self.config.rollout.prompt_buckets, update_cfg=self.update_cfg,
        graphdef=self.graphdef, ref_params=self.c.ref_params,
        mesh=self.mesh, vision=vision)
    lr = float(self.schedule(optimizer_count(self.state)))
    shuffle_key = jax.random.fold_in(key, SHUFFLE_STREAM)  # mini-batch order
    self.state, update_metrics = step_lib.update(self.state, batch, shuffle_key, vision,
                                                 graphdef=self.graphdef,
                                                 optimizer=self.optimizer, cfg=self.update_cfg)
    update_metrics = {k: float(v) for k, v in jax.device_get(update_metrics).items()}
    t2 = time.perf_counter()
    m = step_metrics.step_metrics(
        update_metrics, rollouts, dynamics, group_size=self.group_size,
        learning_rate=lr, max_new_tokens=self.max_new_tokens,
        skipped_updates=int(self.state.total_skips),
        consecutive_skips=int(self.state.consecutive_skips),
        time_masks_s=t1 - t0, time_update_s=t2 - t1)
    step_metrics.update_reference_log_ppl(self.reference_log_ppl, m)  # kept in checkpoints
    m.update(step_metrics.relative_perplexity(m, self.reference_log_ppl))
    self._advance_curriculum(m["truncation_rate"])
    m.update(step_metrics.step_rate(time.perf_counter() - t_start, rollouts.generated_tokens))
    self.last_samples = samples_lib.sample_log(
        rollouts, credit.planning_NxT, group_size=self.group_size, tokenizer=self.c.tokenizer,
        prompts=min(self.config.log.samples_per_step, self.prompts_per_step))
    if log.dump_rollouts:  # every row (a collective with several processes)
      entries = samples_lib.rollout_entries(rollouts, credit.planning_NxT,
                                            group_size=self.group_size,
                                            tokenizer=self.c.tokenizer)
      if self.is_main:
        samples_lib.write_rollout_dump(self.workdir, int(self.state.step), entries)
    return m

  def _advance_curriculum(self, truncation: float) -> None:
    """Context-length curriculum: next max_new_tokens when truncation > threshold."""
    stages = self.config.rollout.max_new_tokens
    if (truncation > self.config.rollout.truncation_threshold
        and self.stage + 1 < len(stages)):
      self.stage += 1
      logger.info("truncation rate %.2f > %.2f: max_new_tokens -> %d", truncation,
                  self.config.rollout.truncation_threshold, self.max_new_tokens)

  def evaluate(self) -> dict[str, float]:
    """Accuracy (reward >= 1) and mean reward on the held-out examples, and avg@k /
    pass@k on the configured benchmarks (`evaluate_benchmarks`).

    Each example gets `config.eval.samples` completions (default 1); both
    figures are means over all of them.
    """
    out = self.evaluate_benchmarks()
    examples = list(self.c.eval_examples)
    if not examples:
      return out
    n = self.config.eval.samples
    key = jax.random.fold_in(jax.random.fold_in(self.base_key, int(self.state.step)), EVAL_STREAM)
    sampled = self._sample(examples, key, n=n, temperature=self.config.eval.temperature)
    rewards, _ = rollout_lib.grade(sampled, examples, self.c.reward_fn, n)
    return {**out, "eval_accuracy": float(np.mean(rewards >= 1.0)),
            "eval_reward_mean": float(rewards.mean())}

  def evaluate_benchmarks(self) -> dict[str, float]:
    """eval_<benchmark>_avg_at_k and eval_<benchmark>_pass_at_k (k = eval.samples) of the
    current policy, through the eval harness (the paper's protocol at eval.temperature).

    Process 0 writes the full report (table, summary.json, per-sample JSONL)
    to workdir/eval/step_XXXXXX/. A stop signal abandons it between decode segments.
    """
    if not self.c.benchmarks:
      return {}
    ev, step = self.config.eval, int(self.state.step)
    generate_fn = functools.partial(harness.generate_all_rows, interrupt=self.stopping,
                                    segment_tokens=self.config.rollout.signal_check_tokens)
    sampler = harness.ModelSampler(self.policy(), self.c.tokenizer, temperature=ev.temperature,
                                   max_new_tokens=self.max_new_tokens,
                                   template=self.config.data.template, generate_fn=generate_fn,
                                   processor=self.c.image_processor)
    report = harness.evaluate(
        self.c.benchmarks, sampler, label=f"step {step}", k=ev.samples, reward=ev.reward,
        seed=self.config.seed + step, rows_per_batch=max(
            self.config.rollout.max_rows_per_call or self.config.rollout.rows, ev.samples),
        grading_timeout_s=self.config.reward.timeout_s)
    if self.is_main:
      eval_report.write_report(report, os.path.join(self.workdir, "eval", f"step_{step:06d}"))
    out = {}
    for r in report.results:
      out[f"eval_{r.name}_avg_at_k"] = r.avg_at_k
      out[f"eval_{r.name}_pass_at_k"] = r.pass_at_k[str(ev.samples)]
    return out

  # -------------------------------------------------------------------- run

  def advance(self) -> dict[str, Any]:
    """One step of `run`: the RL step, its evaluation, logging, NaN guard and checkpoint.

    Drivers that interleave several trainers (benchmarks/replicate_small.py)
    call this directly. Returns the step's metrics, or {} when a signal
    abandoned the rollout (nothing is logged or saved then).

    Raises:
      NonFiniteError: after config.guard.max_consecutive_skips non-finite
        updates in a row (a checkpoint is saved first).
    """
    self.last_eval_accuracy = None  # a checkpoint carries only its own step's eval
    m = self.train_step()
    if not m:
      return {}
    step, total = int(self.state.step), self.config.num_steps
    every = self.config.eval.every
    if every and (step % every == 0 or step == total) and not self.stopping():
      try:
        ev = self.evaluate()
      except GenerationInterrupted:
        ev = {}  # a signal arrived mid-evaluation: save and stop without it
      m.update(ev)
      self.last_eval_accuracy = ev.get("eval_accuracy")
    if self.writer is not None:
      self.writer.write(step, m)
      self.writer.write_samples(step, self.last_samples)
    limit = self.config.guard.max_consecutive_skips
    if int(self.state.consecutive_skips) >= limit:
      self.save(force=True)
      self.checkpointer.wait()
      raise NonFiniteError(
          f"{limit} consecutive updates had a non-finite loss or gradient (step {step}); "
          f"saved a checkpoint in {self.checkpointer.directory!r} and stopped. Lower "
          "optim.lr, check the reward and data, or raise guard.max_consecutive_skips.")
    if step % self.config.checkpoint.every == 0 or step == total:
      self.save()
    return m

  def run(self, *, resume: bool = False, progress_stream=None) -> dict[str, Any]:
    """Trains until config.num_steps; returns the last step's metrics.

    SIGTERM (e.g. a preemption): a rollout in flight is abandoned at its next
    decode segment (an update in flight completes), the last completed state is
    saved and the run returns (exit status 0 from the CLI; `self.signals`
    tells which signal stopped it).

    Raises:
      NonFiniteError: after config.guard.max_consecutive_skips non-finite
        updates in a row (a checkpoint is saved first).
    """
    if not resume and self.checkpointer.latest_step() is not None:
      raise FileExistsError(
          f"{self.checkpointer.directory!r} already holds checkpoints (latest: step "
          f"{self.checkpointer.latest_step()}); pass resume=True (--config.resume=True) to "
          "continue that run, or choose another workdir")
    if resume and self.checkpointer.latest_step() is not None:
      logger.info("resumed from step %d", self.restore())
    start = int(self.state.step)
    total = self.config.num_steps
    progress = Progress(total, start, progress_stream) if self.is_main else None
    last: dict[str, Any] = {}
    with self.signals:
      try:
        while int(self.state.step) < total:
          m = self.advance()
          if not m:  # a signal arrived during the rollout: the step was abandoned
            break
          if progress is not None:
            progress.update(int(self.state.step), m)
          last = m
          if self.stopping():  # the update finished: it is logged and saved
            break
        if self.stopping():
          logger.warning("signal %s%s: saving step %d and stopping", self.signals.signal,
                         "" if self.signals.stop_requested else " (on another process)",
                         int(self.state.step))
          self.save(force=True)
      finally:
        self.checkpointer.wait()
    return last

  def close(self) -> None:
    self.checkpointer.close()
    if self.writer is not None:
      self.writer.close()
