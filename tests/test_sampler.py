"""The sampler against transformers' generate, the model's own log-probs, and statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from scipy import stats

from hicra_jax.models import (Decoder, ModelConfig, load_pretrained,
                              model_token_logprobs_and_entropy)
from hicra_jax.sampling import generate_arrays
from hicra_jax.sampling import (FINISH_LENGTH, FINISH_STOP, GenerationInterrupted, SamplingParams,
                                generate, num_compilations)
from hicra_jax.sampling import sampler as sampler_lib
from hf_reference import make_hf_model

FAMILIES = ["llama3_rope_gqa2_untied", "qwen2_bias_gqa4_tied", "qwen3_qknorm_gqa7_tied"]
PROMPT_LENGTHS = (1, 5, 9, 13, 17, 22, 26, 31)
NEW_TOKENS = 64
TINY = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=8, eos_token_id=2)


def _prompts(vocab, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, vocab, size=n).tolist() for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module")
def tiny_model():
  m = Decoder(TINY, rngs=nnx.Rngs(1))
  from hicra_jax.models.weights import build_model, flat_params
  return build_model(TINY, {k: v * (4.0 if v.ndim > 1 else 1.0) for k, v in flat_params(m).items()})


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_transformers_generate(family, tmp_path):
  hf = make_hf_model(family, init_scale=0.3)
  hf.generation_config.eos_token_id = None
  hf.save_pretrained(tmp_path)
  model, config = load_pretrained(tmp_path)
  prompts = _prompts(config.vocab_size)
  rollout = generate(model, prompts, SamplingParams(max_new_tokens=NEW_TOKENS, greedy=True,
                                                    stop_ids=()), jax.random.key(0))
  assert rollout.completion_mask.all() and (rollout.finish_reason == FINISH_LENGTH).all()
  full_rows = 0
  for i, prompt in enumerate(prompts):
    with torch.no_grad():
      out = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                        pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    ref_tokens = out.sequences[0, len(prompt):].numpy()
    ref_logits = torch.stack(out.logits, 1)[0].numpy()  # [64, V]
    top2 = np.sort(ref_logits, axis=-1)[:, -2:]
    near_tie = np.flatnonzero(top2[:, 1] - top2[:, 0] < 1e-4)
    compared = int(near_tie[0]) + 1 if len(near_tie) else NEW_TOKENS  # the tie itself may differ
    ours = rollout.tokens[i]
    np.testing.assert_array_equal(ours[:compared - (compared < NEW_TOKENS)],
                                  ref_tokens[:compared - (compared < NEW_TOKENS)])
    # Our logits (teacher-forced on the reference sequence) at every compared position.
    seq = jnp.asarray([prompt + ref_tokens.tolist()])
    our_logits = np.asarray(model(seq))[0, len(prompt) - 1:-1]
    diff = np.abs(our_logits[:compared] - ref_logits[:compared]).max()
    assert diff <= 1e-4 * np.abs(ref_logits).max()
    full_rows += compared == NEW_TOKENS
  assert full_rows >= 6, f"only {full_rows} of 8 rows compared to the end"


@pytest.mark.slow
def test_smollm2_batched_chat_prompts_match_transformers(smollm2_ours, smollm2_transformers,
                                                         smollm2_tokenizer):
  from hicra_jax.data import encode_prompts
  model, _ = smollm2_ours
  problems = ["What is 17 * 23?",
              "A train travels 60 km in 45 minutes. What is its average speed in km/h? "
              "Explain each step.",
              "Solve for x: 3x + 7 = 22."]
  prompt_ids = encode_prompts(smollm2_tokenizer, problems)
  assert len({len(p) for p in prompt_ids}) == 3
  params = SamplingParams.for_tokenizer(smollm2_tokenizer, max_new_tokens=64, greedy=True)
  rollout = generate(model, prompt_ids, params, jax.random.key(0))
  eos = list(params.stop_ids)
  for ids, got in zip(prompt_ids, rollout.token_lists()):
    with torch.no_grad():
      out = smollm2_transformers.generate(torch.tensor([ids]), max_new_tokens=64,
                                          do_sample=False, eos_token_id=eos, pad_token_id=eos[0])
    assert got == out[0, len(ids):].tolist()


def test_rows_are_independent_of_the_batch(tiny_model):
  prompts = _prompts(TINY.vocab_size, seed=3)
  params = SamplingParams(max_new_tokens=12, greedy=True, stop_ids=())
  batched = generate(tiny_model, prompts, params, jax.random.key(0)).tokens
  for i in (0, 4, 7):
    alone = generate(tiny_model, [prompts[i]], params, jax.random.key(0)).tokens[0]
    np.testing.assert_array_equal(alone, batched[i])


def _first_token_logits(model, prompt):
  return np.asarray(model(jnp.asarray([prompt])))[0, -1].astype(np.float64)


def test_fixed_key_is_reproducible(tiny_model):
  params = SamplingParams(n=4, max_new_tokens=8, temperature=0.9, top_p=0.95, top_k=10)
  a = generate(tiny_model, [[3, 4, 5], [6]], params, jax.random.key(7))
  b = generate(tiny_model, [[3, 4, 5], [6]], params, jax.random.key(7))
  c = generate(tiny_model, [[3, 4, 5], [6]], params, jax.random.key(8))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert not np.array_equal(a.tokens, c.tokens)


def _interrupt_at(check: int | None):
  """(calls, interrupt): interrupt() counts its calls and says stop at call `check`."""
  calls = []

  def interrupt():
    calls.append(1)
    return check is not None and len(calls) >= check
  return calls, interrupt


def test_segmented_decoding_gives_the_same_rollout_and_can_be_interrupted(tiny_model):
  params = SamplingParams(n=3, max_new_tokens=21, temperature=0.9, top_p=0.95)
  prompts = [[3, 4, 5], [6], [7, 8, 9, 10, 11]]
  whole = generate(tiny_model, prompts, params, jax.random.key(5))
  decode_programs = sampler_lib._TRACES["decode"]  # pylint: disable=protected-access
  calls, never = _interrupt_at(None)
  segmented = generate(tiny_model, prompts, params, jax.random.key(5), interrupt=never,
                       segment_tokens=4)
  for field in ("tokens", "logprobs", "completion_mask", "lengths", "finish_reason"):
    np.testing.assert_array_equal(getattr(whole, field), getattr(segmented, field), field)
  assert whole.lengths.max() > 13  # so several segments ran
  # Checked after positions 5, 9, 13, 17 unless every row stopped first.
  assert 1 <= len(calls) <= 4
  # Segments reuse the whole call's decode program (the end position is traced).
  assert sampler_lib._TRACES["decode"] == decode_programs  # pylint: disable=protected-access
  _, second = _interrupt_at(2)
  with pytest.raises(GenerationInterrupted, match="after 9 of 21 tokens"):
    generate(tiny_model, prompts, SamplingParams(n=3, max_new_tokens=21, stop_ids=()),
             jax.random.key(5), interrupt=second, segment_tokens=4)


def test_temperature_sampling_matches_softmax_chi_square(tiny_model):
  prompt, temperature, draws = [3, 9, 4], 0.7, 4000
  rollout = generate(tiny_model, [prompt], SamplingParams(n=draws, max_new_tokens=1,
                                                          temperature=temperature, stop_ids=()),
                     jax.random.key(11))
  logits = _first_token_logits(tiny_model, prompt) / temperature
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  counts = np.bincount(rollout.tokens[:, 0], minlength=TINY.vocab_size)
  keep = probs * draws >= 5  # chi-square validity; pool the rare tail
  observed = np.append(counts[keep], counts[~keep].sum())
  expected = np.append(probs[keep], probs[~keep].sum()) * draws
  observed, expected = observed[expected > 0], expected[expected > 0]
  assert stats.chisquare(observed, expected).pvalue > 1e-3
  # The log-probs are the untruncated log softmax(logits / T) at the drawn token.
  np.testing.assert_allclose(rollout.logprobs[:, 0],
                             (logits - np.log(np.exp(logits).sum()))[rollout.tokens[:, 0]],
                             rtol=1e-4, atol=1e-4)


def test_top_p_and_top_k_stay_inside_their_sets(tiny_model):
  prompt = [5, 6]
  logits = _first_token_logits(tiny_model, prompt)
  order = np.argsort(-logits)
  probs = np.exp(logits - logits.max())
  probs = probs[order] / probs.sum()
  nucleus = set(order[:int(np.searchsorted(np.cumsum(probs), 0.6) + 1)].tolist())
  top_p = generate(tiny_model, [prompt], SamplingParams(n=2000, max_new_tokens=1, top_p=0.6,
                                                        stop_ids=()), jax.random.key(2))
  assert set(top_p.tokens[:, 0].tolist()) <= nucleus
  top_k = generate(tiny_model, [prompt], SamplingParams(n=2000, max_new_tokens=1, top_k=3,
                                                        stop_ids=()), jax.random.key(3))
  assert set(top_k.tokens[:, 0].tolist()) <= set(order[:3].tolist())
  assert len(set(top_k.tokens[:, 0].tolist())) == 3


def test_logprobs_and_raw_entropy_equal_teacher_forced_recomputation(tiny_model):
  """Log-probs at the sampling temperature; the device rollout's entropy at temperature 1."""
  prompts = [[3, 4, 5, 6], [7], [8, 9]]
  temperature = 0.8
  params = SamplingParams(n=2, max_new_tokens=10, temperature=temperature)
  arrays = generate_arrays(tiny_model, prompts, params, jax.random.key(5))
  rollout = arrays.to_host(params.n)
  np.testing.assert_array_equal(rollout.tokens,
                                generate(tiny_model, prompts, params, jax.random.key(5)).tokens)
  entropy = np.asarray(arrays.entropy)
  for row, comp in enumerate(rollout.token_lists()):
    prompt = prompts[rollout.prompt_index[row]]
    seq = jnp.asarray([prompt + comp])
    lp, _ = model_token_logprobs_and_entropy(tiny_model, seq, temperature=temperature)
    _, ent1 = model_token_logprobs_and_entropy(tiny_model, seq, temperature=1.0)
    np.testing.assert_allclose(rollout.logprobs[row, :len(comp)], np.asarray(lp)[0, len(prompt) - 1:],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy[row, :len(comp)], np.asarray(ent1)[0, len(prompt) - 1:],
                               rtol=1e-5, atol=1e-5)
    assert (entropy[row, len(comp):] == 0).all()


def test_stop_handling(tiny_model):
  stop = (2, 7)
  params = SamplingParams(n=8, max_new_tokens=20, temperature=1.5, stop_ids=stop)
  r = generate(tiny_model, [[3, 4], [5, 6, 8]], params, jax.random.key(9))
  assert r.tokens.shape == (16, 20)
  assert set(r.finish_reason.tolist()) == {FINISH_STOP, FINISH_LENGTH}, "want both kinds of rows"
  for row in range(16):
    n = r.lengths[row]
    assert r.completion_mask[row, :n].all() and not r.completion_mask[row, n:].any()
    assert (r.tokens[row, n:] == 0).all() and (r.logprobs[row, n:] == 0).all()
    earlier = [t for t in r.tokens[row, :n - 1] if t in stop]
    assert not earlier, "a row continued after its stop token"
    if r.finish_reason[row] == FINISH_STOP:
      assert r.tokens[row, n - 1] in stop
    else:
      assert n == 20 and r.tokens[row, n - 1] not in stop
  # Defaults: stop_ids None means the model's EOS (2).
  assert SamplingParams().resolved_stop_ids(TINY.eos_token_id) == (2,)
  assert SamplingParams(stop_ids=()).resolved_stop_ids(2) == ()


def test_calls_of_whole_groups_give_the_same_rollout(tiny_model, monkeypatch):
  """rows_per_call (or the memory limit) splits the batch; per-row keys keep every token."""
  params = SamplingParams(n=3, max_new_tokens=12, temperature=0.9, top_p=0.95, stop_ids=())
  prompts = [[3, 4, 5], [6], [7, 8, 9, 10, 11], [12, 13], [5]]
  whole = generate(tiny_model, prompts, params, jax.random.key(5))
  calls = []
  one_call = sampler_lib._generate_call  # pylint: disable=protected-access

  def counted(model, chunk, *args, **kwargs):
    calls.append((len(chunk), kwargs["first_row"]))
    return one_call(model, chunk, *args, **kwargs)
  monkeypatch.setattr(sampler_lib, "_generate_call", counted)
  chunked = generate(tiny_model, prompts, params, jax.random.key(5), rows_per_call=7)
  assert calls == [(2, 0), (2, 6), (1, 12)]  # 7 rows -> 2 whole groups of 3 per call
  slots = 32 + params.max_new_tokens  # the default bucket of these prompts
  per_row = sampler_lib.kv_cache_bytes(tiny_model, 1, slots)
  limit = int(per_row * 3 * 3 / 0.75) + 1  # "auto": KV of 3 groups in 75% of the memory
  calls.clear()
  auto = generate(tiny_model, prompts, params, jax.random.key(5), memory_limit_bytes=limit)
  assert calls == [(3, 0), (2, 9)]
  for other in (chunked, auto):
    for field in ("tokens", "completion_mask", "lengths", "finish_reason", "prompt_index"):
      np.testing.assert_array_equal(getattr(whole, field), getattr(other, field), field)
    # Other batch shapes round the matmuls differently in the last bits.
    np.testing.assert_allclose(whole.logprobs, other.logprobs, atol=1e-5)
  assert len(set(map(tuple, whole.tokens.tolist()))) > 10  # rows differ: real sampling
  with pytest.raises(ValueError, match="rows_per_call must be None or an int >= n = 3"):
    generate(tiny_model, prompts, params, jax.random.key(5), rows_per_call=2)


def test_buckets_bound_the_number_of_compilations(tiny_model):
  params = SamplingParams(n=2, max_new_tokens=4, greedy=True)
  before = num_compilations()
  for length in (3, 7, 12, 16, 20, 33, 40, 64):
    generate(tiny_model, [[4] * length, [5] * 2], params, jax.random.key(0),
             prompt_buckets=(16, 64))
  assert num_compilations() - before == 2


def test_kv_memory_error_for_an_impossible_request(tiny_model):
  """Calls are sized to the memory, but one group (64 rows x 32800 slots: 0.54 GB) must fit."""
  params = SamplingParams(n=64, max_new_tokens=32768)
  with pytest.raises(MemoryError, match=r"KV cache needs 0.50 GiB .* only 0.06 GiB is free"):
    generate(tiny_model, [[3]] * 1024, params, jax.random.key(0), memory_limit_bytes=2**26)
  with pytest.raises(MemoryError, match=r"KV cache needs 1.00 GiB"):  # 2 groups asked for
    generate(tiny_model, [[3]] * 2, params, jax.random.key(0), memory_limit_bytes=2**30 - 1,
             rows_per_call=128)


def test_bad_params_are_clear_errors():
  with pytest.raises(ValueError, match="temperature"):
    SamplingParams(temperature=0.0)
  with pytest.raises(ValueError, match="top_p"):
    SamplingParams(top_p=1.5)
  with pytest.raises(ValueError, match="n"):
    SamplingParams(n=0)
  with pytest.raises(ValueError, match="empty"):
    generate(None, [[1], []], SamplingParams(), jax.random.key(0))


@pytest.mark.slow
def test_sharded_greedy_equals_unsharded_on_8_devices():
  import json
  import os
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  script = os.path.join(os.path.dirname(__file__), "sampler_sharding_check.py")
  proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  for mesh, r in json.loads(line[len("RESULT "):]).items():
    assert r["tokens_equal"] and r["mask_equal"], mesh
    assert r["logprob_diff"] <= 1e-4, mesh


def test_decode_segments_cover_every_step_with_windows_that_hold_the_slots_in_use():
  for prompt_len, new, every in [(4, 300, None), (128, 1000, 256), (200, 57, None), (8, 2, 1),
                                 (1000, 5000, 300)]:
    segments = sampler_lib.decode_segments(prompt_len, new, segment_tokens=every, min_window=128)
    slots = prompt_len + new
    step = 1
    for until, window in segments:
      assert step < until <= new
      if every:
        assert until - step <= every
      width = slots if window is None else window
      assert prompt_len + until - 1 <= width <= slots  # the last step's slots fit
      assert window is None or window >= 128
      step = until
    assert step == new or new == 1
  assert sampler_lib.decode_segments(4, 300, windowed=False) == [(300, None)]
  assert sampler_lib.decode_segments(128, 1000, min_window=128) == [
      (129, 256), (385, 512), (897, 1024), (1000, None)]
  assert sampler_lib.decode_segments(128, 1000) == [(897, 1024), (1000, None)]  # MIN_WINDOW
  assert sampler_lib.decode_segments(64, 500) == [(500, None)]  # small caches: one program


def test_windowed_decode_equals_reading_every_slot(tiny_model, monkeypatch):
  """Same tokens (greedy and seeded sampling) and log-probs (to float32 rounding); fewer KV
  bytes read."""
  monkeypatch.setattr(sampler_lib, "MIN_WINDOW", 128)  # windows at this small size
  prompts = [[3, 4, 5, 6], [7], [8, 9]]
  for params in (SamplingParams(n=2, max_new_tokens=300, greedy=True, stop_ids=()),
                 SamplingParams(n=2, max_new_tokens=300, temperature=0.9, top_p=0.9,
                                stop_ids=(2,))):
    full = generate(tiny_model, prompts, params, jax.random.key(3), decode_window=False)
    windowed = generate(tiny_model, prompts, params, jax.random.key(3), decode_window=True)
    np.testing.assert_array_equal(windowed.tokens, full.tokens)
    np.testing.assert_array_equal(windowed.completion_mask, full.completion_mask)
    # Equal up to float32 summation order (softmax sums over fewer, zero-weight slots).
    np.testing.assert_allclose(windowed.logprobs, full.logprobs, rtol=2e-6, atol=0)
  slots = 32 + 300  # prompt bucket 32
  read = lambda windowed: sampler_lib.decode_kv_bytes(
      tiny_model, 6, sampler_lib.decode_segments(32, 300, windowed=windowed), slots)
  assert read(True) < 0.8 * read(False)
