"""Learning: a tiny random model learns a synthetic verifiable reward under GRPO and HICRA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax.models import Decoder, ModelConfig
from hicra_jax.train import state as state_lib
from hicra_jax.train import step as step_lib
from hicra_jax.train import synthetic
from hicra_jax.train.build import build_components
from hicra_jax.train.loop import Trainer
from train_helpers import tiny_config

NUM_STEPS = 20


@pytest.mark.parametrize("algorithm", ["grpo", "hicra"])
def test_reward_goes_from_below_02_to_above_08(tmp_path, algorithm):
  config = tiny_config(tmp_path, algorithm=algorithm, num_steps=NUM_STEPS,
                       checkpoint__every=NUM_STEPS)
  trainer = Trainer(config, build_components(config))
  history = []
  try:
    for _ in range(NUM_STEPS):
      history.append(trainer.train_step())
  finally:
    trainer.close()
  rewards = [m["reward_mean"] for m in history]
  assert rewards[0] < 0.2, rewards
  assert max(rewards[-3:]) > 0.8, rewards
  # The planted SG (the target token twice) occurs: planning tokens exist.
  ratios = [m["planning_token_ratio"] for m in history]
  assert max(ratios) > 0, ratios
  assert all(m["update_finite"] == 1.0 for m in history)


def _fixed_batch(planning: bool):
  cfg = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_layers=2,
                    num_heads=2, num_kv_heads=1, head_dim=16)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  g, p, t = 4, 2, 8
  completions = rng.integers(0, 16, (p * g, t)).astype(np.int32)
  if planning:
    completions[0, 2:4] = 5  # planted SG occurrences in two rows
    completions[5, 0:2] = 5
  cmask = np.ones((p * g, t), bool)
  cmask[3, 6:] = False
  prompts = [[3, 4, 6, 7], [8, 9]]
  seq, att = step_lib.build_sequences(prompts, completions, cmask, g, 4)
  rewards = jnp.asarray(rng.random(p * g).astype(np.float32))
  plan, _ = synthetic.ngram_planner(jnp.asarray(completions), jnp.asarray(cmask), pattern=(5, 5))
  return model, seq, att, completions, cmask, rewards, plan, g


def _update_params(algorithm: str, planning: bool):
  model, seq, att, completions, cmask, rewards, plan, g = _fixed_batch(planning)
  opt = state_lib.make_optimizer(state_lib.OptimizerConfig(lr=1e-2))
  graphdef, state = state_lib.create_train_state(model, opt)
  adv = step_lib.token_advantages(rewards, plan, jnp.asarray(cmask), 0.2, algorithm=algorithm,
                                  group_size=g)
  batch = step_lib.Batch(jnp.asarray(seq), jnp.asarray(att), jnp.asarray(cmask), adv,
                         jnp.zeros(cmask.shape, jnp.float32), plan,
                         jnp.zeros(cmask.shape, jnp.float32))
  new_state, metrics = step_lib.update(state, batch, graphdef=graphdef, optimizer=opt,
                                       cfg=step_lib.UpdateConfig(micro_batches=2))
  return jax.tree_util.tree_leaves(jax.device_get(new_state.params)), metrics, plan


def test_hicra_update_differs_from_grpo_on_a_fixed_batch():
  hicra, m_hicra, plan = _update_params("hicra", planning=True)
  grpo, _, _ = _update_params("grpo", planning=True)
  assert int(plan.sum()) == 4
  assert m_hicra["planning_token_ratio"] > 0
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(hicra, grpo))
  assert diff > 1e-6
  # Without planning tokens HICRA is GRPO exactly.
  hicra0, _, plan0 = _update_params("hicra", planning=False)
  grpo0, _, _ = _update_params("grpo", planning=False)
  assert int(plan0.sum()) == 0
  for a, b in zip(hicra0, grpo0):
    np.testing.assert_array_equal(a, b)
