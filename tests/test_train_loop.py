"""The RL loop: reward failures, NaN guard stop, curriculum, dynamic filtering, metrics, configs."""

from __future__ import annotations

import dataclasses
import glob
import gzip
import importlib.machinery
import json
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax import config as config_lib
from hicra_jax import cli
from hicra_jax.commands import train as train_cmd
from hicra_jax.commands.convert import restore_policy
from hicra_jax.models import load_pretrained
from hicra_jax.sampling import GenerationInterrupted
from hicra_jax.train import rollout, synthetic
from hicra_jax.train.build import build_components, text_reward_fn
from hicra_jax.train.loop import NonFiniteError, Trainer
from hicra_jax.train.metrics import STEP_KEYS, WandbWriter
from hicra_jax.train.run_config import WandbConfig
from hicra_jax.train.state import optimizer_count
from hicra_jax.typed_config import to_config_dict
import readme_helpers as readme
from train_helpers import tiny_config


def _trainer(tmp_path, **overrides):
  config = tiny_config(tmp_path, **overrides)
  return Trainer(config, build_components(config)), config


def _jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_every_metric_key_is_in_the_jsonl_and_tensorboard_is_written(tmp_path):
  trainer, config = _trainer(tmp_path, num_steps=2, log__tensorboard=True, eval__every=2,
                             data__eval_size=8, checkpoint__every=1, checkpoint__keep=1,
                             log__dump_rollouts=True)
  try:
    trainer.run()
  finally:
    trainer.close()
  records = _jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2]
  for key in STEP_KEYS:
    assert key in records[0], key
  # Relative perplexity: normalized by the first logged step.
  assert records[0]["rel_ppl_planning"] == records[0]["rel_ppl_execution"] == 1.0
  for c in ("planning", "execution"):
    np.testing.assert_allclose(records[1][f"rel_ppl_{c}"], np.exp(
        records[1][f"log_ppl_{c}"] - records[0][f"log_ppl_{c}"]), rtol=1e-12)
  # Every rollout of each step, gzip JSONL.
  with gzip.open(tmp_path / "rollouts" / "step_000002.jsonl.gz", "rt") as f:
    dump = [json.loads(line) for line in f]
  assert len(dump) == config.rollout.rows
  assert {"step", "example_id", "reward", "completion_ids", "planning_spans"} <= set(dump[0])
  assert {d["step"] for d in dump} == {2}
  assert [d["example_id"] for d in dump[::config.rollout.group_size]] == records[1]["example_ids"]
  assert "eval_accuracy" in records[1] and "eval_reward_mean" in records[1]
  samples = _jsonl(tmp_path / "samples.jsonl")
  assert samples and {"prompt_ids", "completion_ids", "reward", "planning_spans"} <= set(samples[0])
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  # keep last 1 + best 1 by eval accuracy (only step 2 has an eval metric).
  assert trainer.checkpointer.all_steps() == [2]


def test_failing_reward_does_not_stop_the_run(tmp_path):
  trainer, _ = _trainer(tmp_path, num_steps=3)
  calls = []

  def flaky(completions, texts, examples, group_size):
    calls.append(1)
    if len(calls) == 1:
      raise RuntimeError("grader crashed")
    rewards = synthetic.target_fraction_rewards(completions, 5)
    rewards[:3] = np.nan  # a reward that returns NaN counts as a failure too
    return rewards, 2

  trainer.c.reward_fn = flaky
  try:
    trainer.run()
  finally:
    trainer.close()
  records = _jsonl(tmp_path / "metrics.jsonl")
  assert [r["reward_failures"] for r in records] == [64.0, 5.0, 5.0]
  assert records[0]["reward_mean"] == 0.0
  assert all(np.isfinite(r["loss"]) for r in records)


def test_text_reward_counts_grading_errors():
  reward = text_reward_fn("math_strict", timeout_s=5.0)
  rewards, failures = reward(None, ["\\boxed{4}", "\\boxed{5}", "\\boxed{4}", "no"],
                             [{"answer": "4"}, {"question": "no answer field"}], 2)
  np.testing.assert_array_equal(rewards, [1.0, 0.0, 0.0, 0.0])
  assert failures == 2


def test_nan_guard_skips_then_saves_and_stops(tmp_path):
  trainer, _ = _trainer(tmp_path, num_steps=10, guard__max_consecutive_skips=2)
  params = trainer.state.params
  params["lm_head"].set_value(jnp.full_like(params["lm_head"][...], jnp.nan))
  try:
    with pytest.raises(NonFiniteError, match="2 consecutive updates"):
      trainer.run()
  finally:
    trainer.close()
  records = _jsonl(tmp_path / "metrics.jsonl")
  assert [r["update_finite"] for r in records] == [0.0, 0.0]
  assert [r["consecutive_skips"] for r in records] == [1.0, 2.0]
  assert trainer.checkpointer.all_steps() == [2]


def test_curriculum_raises_max_new_tokens_when_truncation_exceeds_threshold(tmp_path):
  trainer, _ = _trainer(tmp_path, num_steps=3, rollout__max_new_tokens=(8, 12),
                        rollout__truncation_threshold=0.2)
  try:
    ms = [trainer.train_step() for _ in range(3)]
  finally:
    trainer.close()
  # No stop tokens: every row is truncated (rate 1.0 > 0.2).
  assert [m["truncation_rate"] for m in ms] == [1.0, 1.0, 1.0]
  assert [m["max_new_tokens"] for m in ms] == [8.0, 12.0, 12.0]
  assert trainer.stage == 1 and trainer.meta()["curriculum_stage"] == 1
  # Below the threshold the length stays.
  trainer2, _ = _trainer(tmp_path / "b", num_steps=1, rollout__max_new_tokens=(8, 12),
                         rollout__truncation_threshold=1.0)
  try:
    trainer2.train_step()
  finally:
    trainer2.close()
  assert trainer2.stage == 0


def test_dynamic_filtering_refills_the_batch(tmp_path):
  trainer, _ = _trainer(tmp_path, num_steps=1, filter__dynamic=True, filter__max_rounds=4)

  def half_constant(completions, texts, examples, group_size):
    rewards = synthetic.target_fraction_rewards(completions, 5)
    rewards += np.arange(len(rewards)) % 2 * 0.01  # every group has a spread ...
    for i, ex in enumerate(examples):  # ... except those of even example ids
      if ex["id"] % 2 == 0:
        rewards[i * group_size:(i + 1) * group_size] = 0.0
    return rewards, 0

  trainer.c.reward_fn = half_constant
  try:
    m = trainer.train_step()
  finally:
    trainer.close()
  assert m["filter_rounds"] >= 2
  assert m["masked_groups"] == 0.0
  assert 0 < m["kept_groups_fraction"] < 1
  assert len(m["example_ids"]) == 8 and all(i % 2 == 1 for i in m["example_ids"])


@pytest.mark.parametrize("override,field", [
    ("algorithm=ppo", "algorithm"),
    ("loss.micro_batch_size=7", "loss.micro_batch_size"),
    ("reward.name=nope", "reward.name"),
    ("data.source=jsonl", "data.path"),
    ("data.source=parquet", "data.path"),
    ("data.source=hf", "data.name"),
    ("rollout.max_new_tokens=(16,8)", "rollout.max_new_tokens"),
    ("model.path=/does/not/exist", "model.path"),
    ("planning.grams=none", "planning.grams"),
    ("rollout.group_size=1", "rollout.group_size"),
    ("log.wandb.mode=cloud", "log.wandb.mode"),
    ("loss.mini_batch_size=24", "loss.mini_batch_size"),  # 64 rows
    ("loss.mini_batch_size=16 --config.loss.micro_batch_size=32", "loss.micro_batch_size"),
    ("rollout.rows_per_call=4", "rollout.rows_per_call"),  # less than a group of 8
    ("rollout.rows_per_call=lots", "rollout.rows_per_call"),
    ("model.attention=flash", "model.attention"),
    ("model.path=nobody/no-such-model", "model.path"),  # a Hub id, offline and not cached
    ("data.source=reasoning_gym --config.data.task=chain_summ --config.model.path=smollm2 "
     "--config.reward.name=gsm8k --config.planning.grams=paper", "data.task"),
])
def test_invalid_configs_fail_fast_naming_the_field(override, field):
  with pytest.raises(config_lib.ConfigError) as err:
    cli.load_command_config("train", ["hicra-jax train", *f"--config.{override}".split()])
  assert err.value.field == field
  assert repr(field) in str(err.value)


def test_convert_exports_the_checkpoint_policy(tmp_path, hermetic_working_directory, capsys):
  # A tiny run in runs/quickstart of the test's working directory, exported by the
  # README's command `hicra-jax convert --config.workdir=runs/quickstart --config.output=...`.
  workdir = hermetic_working_directory / "runs" / "quickstart"
  trainer, _ = _trainer(workdir, num_steps=1, checkpoint__every=1)
  try:
    trainer.run()
    policy = trainer.policy()
  finally:
    trainer.close()
  argv = readme.runnable(readme.readme_command(readme.CONVERT), console=False)
  assert argv[2:] == ["--config.workdir=runs/quickstart", "--config.output=runs/quickstart/hf"]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 0
  assert "exported step 1 of runs/quickstart to runs/quickstart/hf" in capsys.readouterr().out
  loaded, _ = load_pretrained(str(workdir / "hf"))
  tokens = jnp.array([[3, 4, 5, 6, 7]])
  np.testing.assert_allclose(loaded(tokens), policy(tokens), atol=1e-5)
  # The exported policy is the trained one, not the initial random model.
  initial = build_components(tiny_config(tmp_path / "init", num_steps=1)).model
  assert float(jnp.max(jnp.abs(initial(tokens) - policy(tokens)))) > 1e-4
  # Eval's path: the checkpoint restored in place, optionally cast.
  restored, _, tokenizer, step = restore_policy(str(workdir), dtype="bfloat16")
  assert step == 1 and tokenizer is None  # the random model has no tokenizer
  assert restored.embed[...].dtype == jnp.bfloat16
  np.testing.assert_allclose(restored(tokens), policy(tokens), atol=0.05 * float(
      jnp.max(jnp.abs(policy(tokens)))))
  with pytest.raises(config_lib.ConfigError, match="checkpoint steps \\[1\\]") as err:
    restore_policy(str(workdir), step=7)
  assert err.value.field == "step"


def test_kl_to_a_frozen_reference_model(tmp_path):
  trainer, _ = _trainer(tmp_path, num_steps=2, loss__kl_coef=0.5)
  ref_before = jax.tree_util.tree_leaves(jax.device_get(trainer.c.ref_params))
  try:
    ms = [trainer.train_step() for _ in range(2)]
  finally:
    trainer.close()
  assert trainer.update_cfg.kl_coef == 0.5
  assert ms[0]["kl_ref"] == pytest.approx(0.0, abs=1e-7)  # the policy starts as the reference
  assert ms[1]["kl_ref"] > 1e-6
  for a, b in zip(ref_before, jax.tree_util.tree_leaves(jax.device_get(trainer.c.ref_params))):
    np.testing.assert_array_equal(a, b)  # the reference stays frozen


def test_a_workdir_with_checkpoints_needs_resume(tmp_path):
  trainer, config = _trainer(tmp_path, num_steps=1, checkpoint__every=1)
  try:
    trainer.run()
  finally:
    trainer.close()
  # The CLI refuses before building anything; the Trainer refuses too.
  with pytest.raises(config_lib.ConfigError, match="resume=True") as err:
    train_cmd.validate(to_config_dict(config))
  assert err.value.field == "workdir"
  config = train_cmd.validate(to_config_dict(dataclasses.replace(config, resume=True)))
  again = Trainer(config, build_components(config))
  try:
    with pytest.raises(FileExistsError, match="resume=True"):
      again.run()
    assert again.run(resume=True) == {}  # already at num_steps: nothing to do
    assert int(again.state.step) == 1
  finally:
    again.close()


def test_timing_out_grading_gives_zero_reward_and_is_counted():
  reward = text_reward_fn("math_verify", timeout_s=0.001)  # symbolic checks cannot finish
  rewards, failures = reward(None, ["\\boxed{\\sin(x)^2+\\cos(x)^2}", "\\boxed{x^2 + 2x + 1}"],
                             [{"answer": "1"}, {"answer": "(x+1)^2"}], 1)
  np.testing.assert_array_equal(rewards, [0.0, 0.0])
  assert failures == 2


class _FakeWandb:
  """Records the calls the writer makes (the real library is tested offline below)."""

  __spec__ = importlib.machinery.ModuleSpec("wandb", None)  # found by the config check

  def __init__(self):
    self.inits, self.logs, self.finished = [], [], 0

  def init(self, **kwargs):
    self.inits.append(kwargs)
    return self

  def log(self, data, step):
    self.logs.append((step, data))

  def finish(self):
    self.finished += 1


def test_wandb_mirrors_scalars_and_a_resumed_run_keeps_its_run_id(tmp_path, monkeypatch):
  fake = _FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  trainer, config = _trainer(tmp_path, num_steps=1, checkpoint__every=1,
                             log__wandb__project="hicra-tests", log__wandb__mode="offline")
  try:
    trainer.run()
  finally:
    trainer.close()
  config = dataclasses.replace(config, num_steps=2, resume=True)
  again = Trainer(config, build_components(config))
  try:
    again.run(resume=True)
  finally:
    again.close()
  first, second = fake.inits
  assert first["project"] == "hicra-tests" and first["mode"] == "offline"
  assert first["id"] == second["id"] and second["resume"] == "allow"
  assert first["config"]["algorithm"] == "hicra" and first["dir"] == str(tmp_path)
  assert [step for step, _ in fake.logs] == [1, 2] and fake.finished == 2
  records = _jsonl(tmp_path / "metrics.jsonl")
  for (step, logged), record in zip(fake.logs, records):
    assert logged["reward_mean"] == record["reward_mean"] and step == record["step"]
    assert "example_ids" not in logged  # scalars only


def test_wandb_offline_with_the_real_library(tmp_path):
  writer = WandbWriter(str(tmp_path), WandbConfig(project="hicra-tests", mode="offline"),
                       {"algorithm": "hicra"})
  writer.write(1, {"reward_mean": 0.25, "example_ids": [1, 2]})
  writer.close()
  run_id = (tmp_path / "wandb_run_id").read_text().strip()
  runs = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
  assert runs, sorted(glob.glob(str(tmp_path / "wandb" / "*")))


def test_a_signal_mid_rollout_interrupts_it_and_saves_the_last_state(tmp_path, monkeypatch):
  trainer, _ = _trainer(tmp_path, num_steps=3, rollout__signal_check_tokens=2,
                        rollout__max_new_tokens=(8,), checkpoint__every=1)
  real_generate = rollout.generate_arrays
  raised = []

  def generate_then_sigterm(*args, interrupt, **kwargs):
    def sigterm_at_step_2():  # SIGTERM arrives while step 2's rollout decodes
      if int(trainer.state.step) == 1:
        trainer.signals.handle(signal.SIGTERM, None)
      return interrupt()
    try:
      return real_generate(*args, interrupt=sigterm_at_step_2, **kwargs)
    except GenerationInterrupted as e:
      raised.append(str(e))
      raise

  monkeypatch.setattr(rollout, "generate_arrays", generate_then_sigterm)
  try:
    trainer.run()
    # The abandoned step's prompts come again: the stream is back where step 1 left it.
    assert trainer.data.get_state() == trainer.checkpointer.restore_meta(1)["data_state"]
  finally:
    trainer.close()
  assert raised == ["generation interrupted after 3 of 8 tokens"]
  assert int(trainer.state.step) == 1 and trainer.checkpointer.all_steps() == [1]
  assert [r["step"] for r in _jsonl(tmp_path / "metrics.jsonl")] == [1]


def test_a_data_source_without_its_package_fails_in_validation(tmp_path, monkeypatch):
  data = tmp_path / "d.parquet"
  data.write_bytes(b"")
  monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if `hicra-jax[data]` were missing
  with pytest.raises(config_lib.ConfigError, match=r"pyarrow .*hicra-jax\[data\]") as err:
    cli.load_command_config("train", [
        "hicra-jax train", "--config.data.source=parquet", f"--config.data.path={data}",
        "--config.model.path=smollm2", "--config.reward.name=gsm8k",
        "--config.planning.grams=paper"])
  assert err.value.field == "data.source"


def test_evaluate_grades_eval_samples_completions_per_held_out_example(tmp_path):
  trainer, _ = _trainer(tmp_path, data__eval_size=4, eval__samples=3)
  calls = []

  def reward_fn(completions, texts, examples, group_size):
    calls.append((len(completions), len(examples), group_size))
    return np.asarray([1.0, 0.0, 0.5] * len(examples), np.float32), 0

  trainer.c = dataclasses.replace(trainer.c, reward_fn=reward_fn)
  try:
    ev = trainer.evaluate()
  finally:
    trainer.close()
  assert calls == [(12, 4, 3)]
  assert ev == {"eval_accuracy": pytest.approx(1 / 3), "eval_reward_mean": pytest.approx(0.5)}


def test_mini_batches_and_rollout_calls_through_the_trainer(tmp_path):
  """loss.mini_batch_size: one optimizer step per mini-batch; rollout.rows_per_call splits the
  rollout into calls of whole groups without changing a token."""
  whole, _ = _trainer(tmp_path / "whole", num_steps=1)
  split, config = _trainer(tmp_path / "split", num_steps=1, loss__mini_batch_size=16,
                           loss__micro_batch_size=8, rollout__rows_per_call="24")
  try:
    m_whole, m_split = whole.train_step(), split.train_step()
  finally:
    whole.close()
    split.close()
  assert config.rollout.max_rows_per_call == 24 and config.optimizer_steps == 4
  assert (split.update_cfg.mini_batches, split.update_cfg.micro_batches) == (4, 2)
  assert int(optimizer_count(whole.state)) == 1 and int(optimizer_count(split.state)) == 4
  # The same rollout: 64 rows in calls of 3 groups (24 rows) equal one call of 64.
  for key in ("reward_mean", "response_length_mean", "example_ids"):
    assert m_whole[key] == m_split[key], key


def test_the_attention_kernel_of_the_config_reaches_the_policy(tmp_path):
  trainer, _ = _trainer(tmp_path, num_steps=1, model__attention="chunked")
  try:
    assert trainer.c.model.attention_impl == "chunked"
    m = trainer.train_step()
  finally:
    trainer.close()
  assert np.isfinite(m["loss"]) and m["update_finite"] == 1.0


def test_relative_perplexity_starts_at_the_first_step_with_tokens_of_the_class():
  from hicra_jax.train import step_metrics  # pylint: disable=import-outside-toplevel
  reference: dict = {}
  steps = [{"log_ppl_planning": 0.0, "log_ppl_execution": 2.0, "planning_token_ratio": 0.0},
           {"log_ppl_planning": 1.5, "log_ppl_execution": 2.5, "planning_token_ratio": 0.1},
           {"log_ppl_planning": 1.0, "log_ppl_execution": 1.0, "planning_token_ratio": 0.2}]
  rel = []
  for m in steps:
    step_metrics.update_reference_log_ppl(reference, m)
    rel.append(step_metrics.relative_perplexity(m, reference))
  assert reference == {"log_ppl_planning": 1.5, "log_ppl_execution": 2.0}
  np.testing.assert_allclose([r["rel_ppl_planning"] for r in rel], [1.0, 1.0, np.exp(-0.5)])
  np.testing.assert_allclose([r["rel_ppl_execution"] for r in rel],
                             [1.0, np.exp(0.5), np.exp(-1.0)])
