"""The RL loop (imperative shell): rollout -> rewards -> filter/refill -> masks ->
advantages -> jitted update -> metrics -> eval -> checkpoint.

`Trainer` composes the pure pieces of `hicra_jax.train.step` with the sampler,
a reward function, a planner (SG trie or stand-in) and a data stream. The run
is reproducible: the PRNG key of step s is fold_in(base_key, s), the data
stream's state and the curriculum stage are checkpointed, so a resumed run
repeats exactly what the uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax.data.datasets import ExampleStream
from hicra_jax.sampling import FINISH_LENGTH, GenerationInterrupted, SamplingParams, generate
from hicra_jax.sampling.sampler import bucket_length
from hicra_jax.train import step as step_lib
from hicra_jax.train.checkpoint import Checkpointer
from hicra_jax.train.metrics import MetricWriter, Progress, WandbOptions
from hicra_jax.train.state import (OptimizerConfig, TrainState, create_train_state,
                                   learning_rate_schedule, make_optimizer, optimizer_count)

logger = logging.getLogger("hicra_jax.train")

# (completions: list[list[int]], texts: list[str] | None, examples, group_size)
#   -> (rewards f32[N], number of failed gradings)
RewardFn = Callable[[list, Any, Sequence[Mapping[str, Any]], int], tuple[np.ndarray, int]]
# (tokens i32[N, T], completion_mask bool[N, T]) -> (planning bool[N, T], sg counts i32[N, S])
Planner = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class NonFiniteError(RuntimeError):
  """Too many consecutive non-finite updates; the run saved a checkpoint and stopped."""


@dataclasses.dataclass
class Components:
  """What a run trains on (built by `hicra_jax.commands.train` or a test).

  model: the policy (an nnx Decoder). examples/eval_examples: dicts with
  "prompt_ids" (list[int]) and "id". reward_fn / planner: see the aliases
  above. tokenizer: optional, for texts in the sample log and text rewards.
  stop_ids: the sampler's stop tokens. trie_bytes: the SG trie saved with
  checkpoints (b"" when the planner is not a trie). ref_params: optional
  frozen reference params for the KL term.
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


def safe_rewards(reward_fn: RewardFn, completions, texts, examples, group_size: int
                 ) -> tuple[np.ndarray, int]:
  """reward_fn, with any exception or bad output turned into zero rewards (counted)."""
  n = len(completions)
  try:
    rewards, failures = reward_fn(completions, texts, examples, group_size)
    rewards = np.asarray(rewards, np.float32).reshape(-1)
    if rewards.shape != (n,):
      raise ValueError(f"reward function returned shape {rewards.shape}, expected ({n},)")
    bad = ~np.isfinite(rewards)
    rewards = np.where(bad, 0.0, rewards).astype(np.float32)
    return rewards, int(failures) + int(bad.sum())
  except Exception as e:  # pylint: disable=broad-except
    logger.warning("reward function failed on the whole batch (rewards set to 0): %s: %s",
                   type(e).__name__, e)
    return np.zeros((n,), np.float32), n


def optimizer_config(config) -> OptimizerConfig:
  """The `OptimizerConfig` of a train config (total steps = num_steps x epochs)."""
  return OptimizerConfig(
      lr=float(config.optim.lr), warmup_steps=int(config.optim.warmup_steps),
      schedule=config.optim.schedule, total_steps=max(
          int(config.num_steps) * int(config.loss.epochs), 1),
      final_lr_fraction=float(config.optim.final_lr_fraction),
      weight_decay=float(config.optim.weight_decay), b1=float(config.optim.b1),
      b2=float(config.optim.b2), eps=float(config.optim.eps),
      max_grad_norm=float(config.optim.max_grad_norm))


class Trainer:
  """One training run. `run()` trains to config.num_steps; see module docstring."""

  def __init__(self, config, components: Components):
    self.config = config
    self.c = components
    self.group_size = int(config.rollout.group_size)
    self.prompts_per_step = int(config.rollout.prompts_per_step)
    self.rows = self.group_size * self.prompts_per_step
    opt_cfg = optimizer_config(config)
    self.schedule = learning_rate_schedule(opt_cfg)
    self.optimizer = make_optimizer(opt_cfg)
    self.graphdef, self.state = create_train_state(components.model, self.optimizer)
    entropy_coef = float(config.loss.entropy_coef) if config.algorithm == "entropy_reg" else 0.0
    self.update_cfg = step_lib.UpdateConfig(
        clip_low=float(config.loss.clip_low), clip_high=float(config.loss.clip_high),
        aggregation=config.loss.aggregation, entropy_coef=entropy_coef,
        kl_coef=float(config.loss.kl_coef) if components.ref_params is not None else 0.0,
        kl_estimator=config.loss.kl_estimator,
        micro_batches=self.rows // int(config.loss.micro_batch_size),
        epochs=int(config.loss.epochs), old_logprobs=config.rollout.old_logprobs,
        temperature=float(config.rollout.temperature))
    self.base_key = jax.random.key(int(config.seed))
    self.data = ExampleStream(components.examples, int(config.seed))
    self.stage = 0  # curriculum stage: index into rollout.max_new_tokens
    self.workdir = config.workdir
    self.is_main = jax.process_index() == 0
    self.checkpointer = Checkpointer(
        f"{self.workdir}/checkpoints", keep=int(config.checkpoint.keep),
        keep_best=int(config.checkpoint.keep_best),
        async_save=bool(config.checkpoint.async_save))
    self.writer = None
    if self.is_main:
      wandb = config.log.get("wandb")
      self.writer = MetricWriter(
          self.workdir, tensorboard=bool(config.log.tensorboard),
          wandb=WandbOptions(**wandb.to_dict()) if wandb is not None else None,
          run_config=config.to_dict())
    self._stop_signal = None
    self.last_eval_accuracy = None

  # ------------------------------------------------------------ checkpoints

  @property
  def max_new_tokens(self) -> int:
    return int(self.config.rollout.max_new_tokens[self.stage])

  def meta(self) -> dict[str, Any]:
    from hicra_jax.train.checkpoint import encode_bytes  # pylint: disable=import-outside-toplevel
    return {"data_state": self.data.get_state(), "curriculum_stage": self.stage,
            "config": self.config.to_dict(), "trie_npz_base64": encode_bytes(self.c.trie_bytes)}

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
    return int(self.state.step)

  # ------------------------------------------------------------------ steps

  def policy(self):
    return nnx.merge(self.graphdef, self.state.params)

  def _rollout(self, examples, key, max_new_tokens: int, *, n: int, temperature: float):
    prompts = [list(e["prompt_ids"]) for e in examples]
    params = SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=float(self.config.rollout.top_p),
                            top_k=int(self.config.rollout.top_k), stop_ids=self.c.stop_ids)
    rollout = generate(self.policy(), prompts, params, key,
                       prompt_buckets=tuple(self.config.rollout.prompt_buckets),
                       interrupt=lambda: self._stop_signal is not None,
                       segment_tokens=int(self.config.rollout.signal_check_tokens))
    completions = rollout.token_lists(include_stop=False)
    texts = None
    if self.c.tokenizer is not None:
      texts = [self.c.tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]
    return prompts, rollout, completions, texts

  def collect(self, key):
    """Rollouts and rewards for one step, with dynamic filtering and refill.

    Returns a dict of host arrays for exactly `rows` rows plus counters.
    """
    g, p = self.group_size, self.prompts_per_step
    dynamic = bool(self.config.filter.dynamic)
    rounds = int(self.config.filter.max_rounds) if dynamic else 1
    kept: list[tuple] = []  # per group: (example, prompt, tokens, logprobs, mask, finish, rewards, texts)
    dropped: list[tuple] = []
    t_rollout = t_reward = 0.0
    failures = 0
    generated = 0
    all_rewards = []
    finish_all = []
    lengths_all = []
    used_rounds = 0
    for r in range(rounds):
      used_rounds = r + 1
      examples = self.data.take(p)
      t0 = time.perf_counter()
      prompts, ro, completions, texts = self._rollout(
          examples, jax.random.fold_in(key, r), self.max_new_tokens, n=g,
          temperature=float(self.config.rollout.temperature))
      t1 = time.perf_counter()
      rewards, fails = safe_rewards(self.c.reward_fn, completions, texts, examples, g)
      t2 = time.perf_counter()
      t_rollout += t1 - t0
      t_reward += t2 - t1
      failures += fails
      generated += int(ro.lengths.sum())
      all_rewards.append(rewards)
      finish_all.append(ro.finish_reason)
      lengths_all.append(ro.lengths)
      for i in range(p):
        rows = slice(i * g, (i + 1) * g)
        group = (examples[i], prompts[i], ro.tokens[rows], ro.logprobs[rows],
                 ro.completion_mask[rows], ro.finish_reason[rows], rewards[rows],
                 None if texts is None else texts[rows])
        spread = float(rewards[rows].max() - rewards[rows].min())
        (kept if (not dynamic or spread > 0) else dropped).append(group)
      if len(kept) >= p:
        break
    groups = kept[:p]
    kept_fraction = len(kept) / max(used_rounds * p, 1)
    # Not enough informative groups after max_rounds: fill with dropped ones,
    # which are masked out of the loss (zero advantage, no tokens).
    masked = [False] * len(groups) + [True] * (p - len(groups))
    groups += dropped[:p - len(groups)]
    cat = lambda j: np.concatenate([grp[j] for grp in groups])
    out = {
        "examples": [grp[0] for grp in groups], "prompts": [grp[1] for grp in groups],
        "tokens": cat(2), "logprobs": cat(3), "completion_mask": cat(4), "finish": cat(5),
        "rewards": cat(6), "texts": None if groups[0][7] is None else
        [t for grp in groups for t in grp[7]],
        "loss_row_mask": np.repeat(~np.asarray(masked), g),
        "t_rollout": t_rollout, "t_reward": t_reward, "failures": failures,
        "generated": generated, "filter_rounds": used_rounds, "kept_fraction": kept_fraction,
        "all_rewards": np.concatenate(all_rewards), "all_finish": np.concatenate(finish_all),
        "all_lengths": np.concatenate(lengths_all),
    }
    return out

  def train_step(self) -> dict[str, Any]:
    """One RL step; returns the step's metrics (host floats)."""
    t_start = time.perf_counter()
    step = int(self.state.step)
    key = jax.random.fold_in(self.base_key, step)
    data_state = self.data.get_state()
    try:
      d = self.collect(key)
      if float(self.config.debug_sleep_in_step_s):
        time.sleep(float(self.config.debug_sleep_in_step_s))  # tests: a window to kill a step
    except GenerationInterrupted:
      pass  # a signal arrived mid-rollout (handled below)
    if self._stop_signal is not None:
      self.data.set_state(data_state)  # the abandoned step's prompts come again
      return {}
    g = self.group_size
    t0 = time.perf_counter()
    cmask_host = d["completion_mask"] & d["loss_row_mask"][:, None]
    cmask = jnp.asarray(cmask_host)
    plan, counts = self.c.planner(jnp.asarray(d["tokens"]), cmask)
    rewards = jnp.asarray(d["rewards"])
    adv = step_lib.token_advantages(
        rewards, plan, cmask, float(self.config.planning.alpha),
        algorithm=self.config.algorithm, group_size=g,
        estimator=self.config.loss.estimator, scale=self.config.loss.scale)
    adv.block_until_ready()
    t1 = time.perf_counter()
    prompt_len = bucket_length(max(len(pr) for pr in d["prompts"]),
                               tuple(self.config.rollout.prompt_buckets))
    seq, att = step_lib.build_sequences(d["prompts"], d["tokens"], cmask_host, g, prompt_len)
    seq, att = jnp.asarray(seq), jnp.asarray(att)
    ref = sampler_lp = None  # only uploaded when the update reads them
    if self.update_cfg.old_logprobs == "sampler":
      sampler_lp = jnp.asarray(d["logprobs"])
    if self.update_cfg.kl_coef:
      ref, _ = step_lib.policy_logprobs(
          self.graphdef, self.c.ref_params, seq, att, jnp.float32(self.update_cfg.temperature),
          num_completion=cmask.shape[1], micro_batches=self.update_cfg.micro_batches)
    batch = step_lib.Batch(tokens=seq, attention=att, completion_mask=cmask, advantages=adv,
                           sampler_logprobs=sampler_lp, planning_mask=plan,
                           ref_logprobs=ref)
    mesh = getattr(self.c.model, "mesh", None)
    if mesh is not None:  # rows split over the mesh's data x fsdp axes
      from hicra_jax import sharding  # pylint: disable=import-outside-toplevel
      batch = jax.tree_util.tree_map(
          lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim)), batch)
    lr = float(self.schedule(optimizer_count(self.state)))
    self.state, m = step_lib.update(self.state, batch, graphdef=self.graphdef,
                                    optimizer=self.optimizer, cfg=self.update_cfg)
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    t2 = time.perf_counter()

    from hicra_jax.analysis import semantic_entropy_jax  # pylint: disable=import-outside-toplevel
    lengths = d["all_lengths"]
    truncation = float(np.mean(d["all_finish"] == FINISH_LENGTH))
    all_rewards = d["all_rewards"]
    m.update({
        "reward_mean": float(all_rewards.mean()),
        "accuracy": float(np.mean(all_rewards >= 1.0)),
        "response_length_mean": float(lengths.mean()),
        "response_length_max": float(lengths.max()),
        "truncation_rate": truncation,
        "learning_rate": lr,
        "semantic_entropy": float(semantic_entropy_jax(counts)) + 0.0,
        "time_rollout_s": d["t_rollout"], "time_reward_s": d["t_reward"],
        "time_masks_s": t1 - t0, "time_update_s": t2 - t1,
        "reward_failures": float(d["failures"]),
        "skipped_updates": float(self.state.total_skips),
        "consecutive_skips": float(self.state.consecutive_skips),
        "max_new_tokens": float(self.max_new_tokens),
        "filter_rounds": float(d["filter_rounds"]),
        "kept_groups_fraction": float(d["kept_fraction"]),
        "masked_groups": float((~d["loss_row_mask"]).sum() // g),
        "example_ids": [e.get("id") for e in d["examples"]],
    })
    self._advance_curriculum(truncation)
    m["time_step_s"] = time.perf_counter() - t_start
    m["tokens_per_s"] = d["generated"] / max(m["time_step_s"], 1e-9)
    k = min(int(self.config.log.samples_per_step), self.prompts_per_step)
    # Only the logged rows (the first sample of the first k prompts) leave the device.
    self._samples = self._sample_log(d, np.asarray(plan[:k * g:g]))
    return m

  def _advance_curriculum(self, truncation: float) -> None:
    """Context-length curriculum: next max_new_tokens when truncation > threshold."""
    stages = self.config.rollout.max_new_tokens
    if (truncation > float(self.config.rollout.truncation_threshold)
        and self.stage + 1 < len(stages)):
      self.stage += 1
      logger.info("truncation rate %.2f > %.2f: max_new_tokens -> %d", truncation,
                  self.config.rollout.truncation_threshold, self.max_new_tokens)

  def _sample_log(self, d, plan_KxT) -> list[dict[str, Any]]:
    """Sample log entries of the first sample of the first K prompts (plan: their rows)."""
    out = []
    for i, plan_T in enumerate(plan_KxT):
      row = i * self.group_size
      length = int(d["completion_mask"][row].sum())
      ids = d["tokens"][row, :length].tolist()
      spans, start = [], None
      for t in range(length + 1):
        inside = t < length and bool(plan_T[t])
        if inside and start is None:
          start = t
        elif not inside and start is not None:
          spans.append(ids[start:t])
          start = None
      sample = {"example_id": d["examples"][row // self.group_size].get("id"),
                "reward": float(d["rewards"][row])}
      if self.c.tokenizer is not None:
        decode = lambda x: self.c.tokenizer.decode(x, skip_special_tokens=False)
        sample.update(prompt=decode(d["prompts"][row // self.group_size]),
                      completion=decode(ids), planning_spans=[decode(s) for s in spans])
      else:
        sample.update(prompt_ids=list(d["prompts"][row // self.group_size]),
                      completion_ids=ids, planning_spans=spans)
      out.append(sample)
    return out

  def evaluate(self) -> dict[str, float]:
    """Accuracy (reward >= 1) and mean reward on the held-out examples.

    Each example gets `config.eval.samples` completions (default 1); both
    figures are means over all of them.
    """
    examples = list(self.c.eval_examples)
    if not examples:
      return {}
    n = int(self.config.eval.get("samples", 1))  # runs saved before the field existed: 1
    key = jax.random.fold_in(jax.random.fold_in(self.base_key, int(self.state.step)), 10**6)
    _, ro, completions, texts = self._rollout(
        examples, key, self.max_new_tokens, n=n,
        temperature=float(self.config.eval.temperature))
    rewards, _ = safe_rewards(self.c.reward_fn, completions, texts, examples, n)
    return {"eval_accuracy": float(np.mean(rewards >= 1.0)),
            "eval_reward_mean": float(rewards.mean())}

  # -------------------------------------------------------------------- run

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    self._stop_signal = signum

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
    step, total = int(self.state.step), int(self.config.num_steps)
    every = int(self.config.eval.every)
    if every and (step % every == 0 or step == total) and self._stop_signal is None:
      try:
        ev = self.evaluate()
      except GenerationInterrupted:
        ev = {}  # a signal arrived mid-evaluation: save and stop without it
      m.update(ev)
      self.last_eval_accuracy = ev.get("eval_accuracy")
    if self.writer is not None:
      self.writer.write(step, m)
      self.writer.write_samples(step, self._samples)
    limit = int(self.config.guard.max_consecutive_skips)
    if int(self.state.consecutive_skips) >= limit:
      self.save(force=True)
      self.checkpointer.wait()
      raise NonFiniteError(
          f"{limit} consecutive updates had a non-finite loss or gradient (step {step}); "
          f"saved a checkpoint in {self.checkpointer.directory!r} and stopped. Lower "
          "optim.lr, check the reward and data, or raise guard.max_consecutive_skips.")
    if step % int(self.config.checkpoint.every) == 0 or step == total:
      self.save()
    return m

  def run(self, *, resume: bool = False, progress_stream=None) -> dict[str, Any]:
    """Trains until config.num_steps; returns the last step's metrics.

    SIGTERM (e.g. a preemption): a rollout in flight is abandoned at its next
    decode segment (an update in flight completes), the last completed state is
    saved and the run returns (exit status 0 from the CLI).

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
    total = int(self.config.num_steps)
    progress = Progress(total, start, progress_stream) if self.is_main else None
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals: main thread only
      previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM,)}
    last: dict[str, Any] = {}
    try:
      while int(self.state.step) < total:
        m = self.advance()
        if not m:  # a signal arrived during the rollout: the step was abandoned
          break
        if progress is not None:
          progress.update(int(self.state.step), m)
        last = m
        if self._stop_signal is not None:  # the update finished: it is logged and saved
          break
      if self._stop_signal is not None:
        logger.warning("signal %s: saving step %d and stopping", self._stop_signal,
                       int(self.state.step))
        self.save(force=True)
    finally:
      self.checkpointer.wait()
      for sig, handler in previous.items():
        signal.signal(sig, handler)
    return last

  def close(self) -> None:
    self.checkpointer.close()
    if self.writer is not None:
      self.writer.close()
