"""The jitted update and its pieces: micro-batching, NaN guard, old log-probs, schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hicra_jax.models import Decoder, ModelConfig
from hicra_jax.train import state as state_lib
from hicra_jax.train import step as step_lib
from hicra_jax.train import synthetic

CFG = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=16)
G, P, T, PL = 4, 2, 8, 4
OPT = state_lib.make_optimizer(state_lib.OptimizerConfig(lr=1e-2))
SGD = optax.sgd(1.0)  # param change = -gradient: compares gradients (Adam's first step is ~sign(g))


def _batch(seed=0, advantages=None):
  rng = np.random.default_rng(seed)
  completions = rng.integers(0, 16, (P * G, T)).astype(np.int32)
  completions[0, 2:4] = 5
  cmask = np.ones((P * G, T), bool)
  cmask[3, 5:] = False
  cmask[6, 1:] = False
  seq, att = step_lib.build_sequences([[3, 4, 6, 7], [8, 9]], completions, cmask, G, PL)
  plan, _ = synthetic.ngram_planner(jnp.asarray(completions), jnp.asarray(cmask), pattern=(5, 5))
  if advantages is None:
    rewards = jnp.asarray(rng.random(P * G).astype(np.float32))
    advantages = step_lib.token_advantages(rewards, plan, jnp.asarray(cmask), 0.2,
                                           algorithm="hicra", group_size=G)
  zeros = jnp.zeros(cmask.shape, jnp.float32)
  return step_lib.Batch(jnp.asarray(seq), jnp.asarray(att), jnp.asarray(cmask),
                        jnp.asarray(advantages), zeros, plan, zeros)


def _state(opt=OPT):
  return state_lib.create_train_state(Decoder(CFG, rngs=nnx.Rngs(1)), opt)


def _leaves(state):
  return jax.tree_util.tree_leaves(jax.device_get(state.params))


def test_build_sequences_layout():
  completions = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 8, 9]], np.int32)
  cmask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], bool)
  seq, att = step_lib.build_sequences([[10, 11], [12]], completions, cmask, 2, 3)
  np.testing.assert_array_equal(seq[0], [0, 10, 11, 1, 2, 0])
  np.testing.assert_array_equal(att[1], [0, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(seq[3], [0, 0, 12, 7, 8, 9])
  with pytest.raises(ValueError, match="prompt_len"):
    step_lib.build_sequences([[1, 2, 3, 4], [1]], completions, cmask, 2, 3)


def test_micro_batches_are_strided_and_merge_inverts_split():
  x = jnp.arange(12 * 2).reshape(12, 2)
  parts = step_lib.split_micro_batches(x, 3)
  assert parts.shape == (3, 4, 2)
  np.testing.assert_array_equal(parts[1][:, 0], [2, 8, 14, 20])  # rows 1, 4, 7, 10
  np.testing.assert_array_equal(step_lib.merge_micro_batches(parts), x)


def test_token_advantages_hand_values():
  rewards = jnp.array([1.0, 0.0, 0.0, 0.0])
  plan = jnp.array([[True, False], [True, False], [False, False], [False, False]])
  mask = jnp.array([[True, True], [True, True], [True, False], [True, True]])
  hicra = step_lib.token_advantages(rewards, plan, mask, 0.2, algorithm="hicra", group_size=4)
  grpo = step_lib.token_advantages(rewards, plan, mask, 0.2, algorithm="grpo", group_size=4)
  np.testing.assert_allclose(hicra, [[0.9, 0.75], [-0.2, -0.25], [-0.25, 0], [-0.25, -0.25]],
                             atol=1e-6)
  np.testing.assert_allclose(grpo, [[0.75, 0.75], [-0.25, -0.25], [-0.25, 0], [-0.25, -0.25]],
                             atol=1e-6)


def test_micro_batching_equals_full_batch_and_two_epochs_move_further():
  batch = _batch()
  graphdef, s1 = _state(SGD)
  _, s4 = _state(SGD)
  before = _leaves(s1)
  s1, m1 = step_lib.update(s1, batch, graphdef=graphdef, optimizer=SGD,
                           cfg=step_lib.UpdateConfig(micro_batches=1))
  s4, m4 = step_lib.update(s4, batch, graphdef=graphdef, optimizer=SGD,
                           cfg=step_lib.UpdateConfig(micro_batches=4))
  for a, b, c in zip(_leaves(s1), _leaves(s4), before):
    np.testing.assert_allclose(a - c, b - c, atol=1e-7)
  assert max(float(np.max(np.abs(a - c))) for a, c in zip(_leaves(s1), before)) > 1e-4
  np.testing.assert_allclose(m1["loss"], m4["loss"], atol=1e-7)
  np.testing.assert_allclose(m1["entropy_planning"], m4["entropy_planning"], atol=1e-6)
  assert int(s1.step) == 1
  # Two PPO epochs: the second epoch sees ratios != 1 (clipping statistics move).
  _, s2 = _state()
  s2, m2 = step_lib.update(s2, batch, graphdef=graphdef, optimizer=OPT,
                           cfg=step_lib.UpdateConfig(micro_batches=2, epochs=2))
  assert int(state_lib.optimizer_count(s2)) == 2
  assert m2["approx_kl"] > 0


def test_sampler_old_logprobs_equal_policy_mode_when_they_are_the_policys():
  batch = _batch()
  graphdef, s_pol = _state()
  lp, _ = step_lib.policy_logprobs(graphdef, s_pol.params, batch.tokens, batch.attention,
                                   jnp.float32(1.0), num_completion=T, micro_batches=2)
  _, s_smp = _state()
  s_pol, _ = step_lib.update(s_pol, batch, graphdef=graphdef, optimizer=OPT,
                             cfg=step_lib.UpdateConfig(micro_batches=2))
  batch2 = _batch()
  batch2.sampler_logprobs = lp
  s_smp, m = step_lib.update(s_smp, batch2, graphdef=graphdef, optimizer=OPT,
                             cfg=step_lib.UpdateConfig(micro_batches=2, old_logprobs="sampler"))
  np.testing.assert_allclose(m["ratio_mean"], 1.0, atol=1e-6)
  for a, b in zip(_leaves(s_pol), _leaves(s_smp)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # Off-policy old log-probs change the update.
  _, s_off = _state()
  batch3 = _batch()
  batch3.sampler_logprobs = lp - 0.5
  s_off, m_off = step_lib.update(s_off, batch3, graphdef=graphdef, optimizer=OPT,
                                 cfg=step_lib.UpdateConfig(micro_batches=2, old_logprobs="sampler"))
  assert m_off["ratio_mean"] > 1.2


def test_nan_guard_skips_and_counts_then_resets():
  graphdef, state = _state()
  before = _leaves(state)
  adv = np.zeros((P * G, T), np.float32)
  adv[1, 1] = np.nan
  state, m = step_lib.update(state, _batch(advantages=adv), graphdef=graphdef, optimizer=OPT,
                             cfg=step_lib.UpdateConfig(micro_batches=2))
  assert m["update_finite"] == 0.0
  assert int(state.consecutive_skips) == 1 and int(state.total_skips) == 1
  assert int(state_lib.optimizer_count(state)) == 0
  for a, b in zip(before, _leaves(state)):
    np.testing.assert_array_equal(a, b)
  state, m = step_lib.update(state, _batch(), graphdef=graphdef, optimizer=OPT,
                             cfg=step_lib.UpdateConfig(micro_batches=2))
  assert m["update_finite"] == 1.0
  assert int(state.consecutive_skips) == 0 and int(state.total_skips) == 1


def test_entropy_regularization_changes_the_update():
  batch = _batch()
  graphdef, a = _state()
  _, b = _state()
  a, _ = step_lib.update(a, batch, graphdef=graphdef, optimizer=OPT,
                         cfg=step_lib.UpdateConfig(micro_batches=2))
  b, _ = step_lib.update(b, batch, graphdef=graphdef, optimizer=OPT,
                         cfg=step_lib.UpdateConfig(micro_batches=2, entropy_coef=0.5))
  assert max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b))) > 1e-6


def test_schedule_warmup_and_cosine():
  cfg = state_lib.OptimizerConfig(lr=1.0, warmup_steps=4, schedule="cosine", total_steps=14,
                                  final_lr_fraction=0.1)
  f = state_lib.learning_rate_schedule(cfg)
  np.testing.assert_allclose([float(f(k)) for k in (0, 1, 3, 4, 9, 14, 20)],
                             [0.25, 0.5, 1.0, 1.0, 0.55, 0.1, 0.1], atol=1e-6)
  const = state_lib.learning_rate_schedule(state_lib.OptimizerConfig(lr=2.0))
  assert float(const(0)) == 2.0 and float(const(100)) == 2.0
  with pytest.raises(ValueError, match="schedule"):
    state_lib.OptimizerConfig(schedule="linear")
