"""The jitted update and its pieces: micro-batching, NaN guard, old log-probs, schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hicra_jax import rl
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


# ------------------------------------------------------------------- mini-batches

MOMENTUM = optax.sgd(0.5, momentum=0.9)  # has state (the trace): checks it threads through steps


def _gather(batch, rows):
  return jax.tree_util.tree_map(lambda x: x[np.asarray(rows)], batch)


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b)))


def test_mini_batches_equal_a_sequence_of_single_mini_batch_updates():
  """M = 2 mini-batches x 2 epochs, shuffled = 4 hand-made updates on the permuted slices."""
  batch, key, m = _batch(), jax.random.key(7), 2
  graphdef, ref = _state(MOMENTUM)
  old, _ = step_lib.policy_logprobs(graphdef, ref.params, batch.tokens, batch.attention,
                                    jnp.float32(1.0), num_completion=T)  # the unchanged policy's
  with_old = _gather(batch, np.arange(P * G))
  with_old.sampler_logprobs = old
  one = step_lib.UpdateConfig(micro_batches=2, old_logprobs="sampler")
  losses = []
  for epoch in range(2):
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), P * G))
    for j in range(m):  # mini-batch j: permuted rows j, j + M, ...
      ref, mref = step_lib.update(ref, _gather(with_old, perm[j::m]), graphdef=graphdef,
                                  optimizer=MOMENTUM, cfg=one)
      losses.append(float(mref["loss"]))
  _, got = _state(MOMENTUM)
  got, metrics = step_lib.update(got, batch, key, graphdef=graphdef, optimizer=MOMENTUM,
                                 cfg=step_lib.UpdateConfig(micro_batches=2, mini_batches=m,
                                                           epochs=2))
  assert _max_diff(got, ref) < 1e-6
  assert _max_diff(got, _state(MOMENTUM)[1]) > 1e-3  # it did move
  np.testing.assert_allclose(metrics["loss"], np.mean(losses), atol=1e-6)
  assert int(got.step) == 1 and int(ref.step) == 4
  assert metrics["approx_kl"] > 0  # later steps see a moved policy


def _hand_set_sampler_batch(graphdef, params):
  """Sampler log-probs = policy's - sign(A) x delta: ratios e^0.5 or e^0.1 (or their inverses)."""
  batch = _batch(seed=3)
  lp, _ = step_lib.policy_logprobs(graphdef, params, batch.tokens, batch.attention,
                                   jnp.float32(1.0), num_completion=T)
  adv = np.asarray(batch.advantages)
  delta = np.where(np.arange(P * G) % 3 == 0, 0.1, 0.5)[:, None]  # 0.1: inside the clip range
  batch.sampler_logprobs = lp - np.sign(adv) * delta
  mask = np.asarray(batch.completion_mask)
  hand_high = (mask & (adv > 0) & (delta > 0.3)).sum() / mask.sum()  # e^0.5 > 1 + 0.28
  hand_low = (mask & (adv < 0) & (delta > 0.3)).sum() / mask.sum()  # e^-0.5 < 1 - 0.2
  return batch, hand_high, hand_low


def test_clip_fractions_are_token_means_over_all_mini_batch_steps():
  graphdef, state = _state(optax.sgd(0.0))  # params never move: every step sees the hand ratios
  batch, hand_high, hand_low = _hand_set_sampler_batch(graphdef, state.params)
  assert hand_high > 0.1 and hand_low > 0.1
  state, m = step_lib.update(state, batch, jax.random.key(0), graphdef=graphdef,
                             optimizer=optax.sgd(0.0),
                             cfg=step_lib.UpdateConfig(mini_batches=4, old_logprobs="sampler"))
  np.testing.assert_allclose(m["clip_frac_high"], hand_high, atol=1e-6)
  np.testing.assert_allclose(m["clip_frac_low"], hand_low, atol=1e-6)
  np.testing.assert_allclose(m["clip_frac"], hand_high + hand_low, atol=1e-6)


def test_later_mini_batches_see_a_moved_policy_so_both_clips_bind():
  opt = optax.adam(0.05)
  graphdef, one = _state(opt)
  _, four = _state(opt)
  batch = _batch()
  one, m1 = step_lib.update(one, batch, jax.random.key(1), graphdef=graphdef, optimizer=opt,
                            cfg=step_lib.UpdateConfig(mini_batches=1))
  four, m4 = step_lib.update(four, batch, jax.random.key(1), graphdef=graphdef, optimizer=opt,
                             cfg=step_lib.UpdateConfig(mini_batches=4))
  # One step per batch: the ratio is exactly 1, clip-higher never acts.
  assert m1["clip_frac_high"] == 0.0 and m1["clip_frac_low"] == 0.0
  np.testing.assert_allclose(m1["ratio_mean"], 1.0, atol=1e-6)
  assert m4["clip_frac_high"] > 0.0 and m4["clip_frac_low"] > 0.0
  assert int(state_lib.optimizer_count(four)) == 4 and int(four.step) == 1


def test_micro_batching_inside_a_mini_batch_is_exact():
  batch = _batch(seed=1)
  results = []
  for k in (1, 2, 4):  # 8 rows / 2 mini-batches = 4 rows, in 1, 2 or 4 micro-batches
    graphdef, state = _state(SGD)
    state, m = step_lib.update(state, batch, jax.random.key(5), graphdef=graphdef, optimizer=SGD,
                               cfg=step_lib.UpdateConfig(mini_batches=2, micro_batches=k))
    results.append((state, m))
  for state, m in results[1:]:
    assert _max_diff(state, results[0][0]) < 1e-6
    for key in ("loss", "clip_frac_high", "ratio_mean", "entropy"):
      np.testing.assert_allclose(m[key], results[0][1][key], atol=1e-6)


def test_one_mini_batch_is_the_full_batch_update():
  """M = 1 against a naive full-batch PPO loop: old log-probs of the unchanged policy."""
  batch = _batch(seed=2)
  graphdef, state = _state(MOMENTUM)
  params, opt_state = state.params, state.opt_state
  scores = lambda p: step_lib.completion_logprobs(nnx.merge(graphdef, p), batch.tokens,
                                                  batch.attention, T)[0]
  old = jax.jit(scores)(params)
  ref_losses = []
  loss_and_grad = jax.jit(jax.value_and_grad(lambda p: rl.policy_loss(
      scores(p), old, batch.advantages, batch.completion_mask)[0]))
  for _ in range(2):
    loss, g = loss_and_grad(params)
    updates, opt_state = MOMENTUM.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    ref_losses.append(float(loss))
  state, m = step_lib.update(state, batch, jax.random.key(0), graphdef=graphdef,
                             optimizer=MOMENTUM,
                             cfg=step_lib.UpdateConfig(micro_batches=2, epochs=2))
  for a, b in zip(_leaves(state), jax.tree_util.tree_leaves(jax.device_get(params))):
    np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(m["loss"], np.mean(ref_losses), atol=1e-6)


def test_nan_guard_acts_per_mini_batch_step():
  """Without a key, mini-batch j of 2 is rows j, j + 2, ...: a NaN in row 1 spoils step 2 only."""
  cfg = step_lib.UpdateConfig(mini_batches=2)
  graphdef, state = _state()
  before = _leaves(state)
  adv = np.asarray(_batch().advantages).copy()
  adv[1, 0] = np.nan
  state, m = step_lib.update(state, _batch(advantages=adv), graphdef=graphdef, optimizer=OPT,
                             cfg=cfg)
  assert m["update_finite"] == 0.5
  assert int(state.consecutive_skips) == 1 and int(state.total_skips) == 1
  assert int(state_lib.optimizer_count(state)) == 1
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(before, _leaves(state))) > 1e-4
  adv = np.asarray(_batch().advantages).copy()
  adv[0, 0] = np.nan  # step 1 skipped, step 2 applied: the run of skips ends
  state, m = step_lib.update(state, _batch(advantages=adv), graphdef=graphdef, optimizer=OPT,
                             cfg=cfg)
  assert int(state.consecutive_skips) == 0 and int(state.total_skips) == 2
  assert int(state_lib.optimizer_count(state)) == 2


def test_bad_mini_batch_sizes_fail_clearly():
  with pytest.raises(ValueError, match=r"mini_batches = 0: expected an integer >= 1"):
    step_lib.UpdateConfig(mini_batches=0)
  assert step_lib.UpdateConfig(mini_batches=2, micro_batches=2).split_sizes(8) == (4, 2)
  with pytest.raises(ValueError, match=r"8 rows cannot be split into mini_batches=3"):
    step_lib.UpdateConfig(mini_batches=3).split_sizes(8)
  graphdef, state = _state()
  with pytest.raises(ValueError, match=r"mini-batch of 4 rows .* micro_batches=3 .* = 6"):
    step_lib.update(state, _batch(), graphdef=graphdef, optimizer=OPT,
                    cfg=step_lib.UpdateConfig(mini_batches=2, micro_batches=3))


@pytest.mark.parametrize("mini_batches", [1, 2])
def test_temperature_1_diagnostics_are_the_raw_policy_s(mini_batches):
  """entropy_t1* and log_ppl_* equal a naive T=1 forward pass; entropy_* stay at the
  sampling temperature (0.6), from the same update, with and without a pre-pass."""
  batch = _batch(seed=3)
  graphdef, state = _state(SGD)
  model = nnx.merge(graphdef, state.params)
  logits = np.asarray(model(batch.tokens, batch.attention), np.float64)[:, PL - 1:-1]
  targets = np.asarray(batch.tokens)[:, PL:]

  def naive(temperature):
    z = logits / temperature
    logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(
        -1, keepdims=True)
    ent = -(np.exp(logp) * logp).sum(-1)
    return np.take_along_axis(logp, targets[..., None], -1)[..., 0], ent

  cm = np.asarray(batch.completion_mask)
  plan = cm & np.asarray(batch.planning_mask)
  execu = cm & ~plan
  mean = lambda x, mask: float(x[mask].mean())
  lp1, ent1 = naive(1.0)
  _, ent06 = naive(0.6)
  _, m = step_lib.update(state, batch, jax.random.key(0), graphdef=graphdef, optimizer=SGD,
                         cfg=step_lib.UpdateConfig(micro_batches=2, temperature=0.6,
                                                   mini_batches=mini_batches))
  expected = {"entropy_t1": mean(ent1, cm), "entropy_t1_planning": mean(ent1, plan),
              "entropy_t1_execution": mean(ent1, execu), "log_ppl_planning": mean(-lp1, plan),
              "log_ppl_execution": mean(-lp1, execu), "entropy": mean(ent06, cm),
              "entropy_planning": mean(ent06, plan)}
  assert plan.sum() > 0
  for key, value in expected.items():
    np.testing.assert_allclose(float(m[key]), value, rtol=2e-5, err_msg=key)
  assert abs(expected["entropy_t1"] - expected["entropy"]) > 1e-3  # the two differ
