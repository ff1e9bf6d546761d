"""Hostile input, time limits, worker failures, threads and processes; the reward registry."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hicra_jax import rewards
from hicra_jax.rewards import (Check, GraderPool, Grade, extract_boxed, grade_batch, grade_math,
                               math_reward, plan_math)

# Slack over an item's time limit for pipe round trips on a loaded 2-core machine.
SLACK_S = 1.5



@pytest.fixture(scope="module", autouse=True)
def started_default_pool():
  """Starts the process-wide pool up front: its startup is not charged to any item's limit."""
  rewards.default_pool().wait_ready()


# LaTeX-flavoured pieces: hypothesis joins them into completions that exercise
# the brace matcher, the normalizer and math-verify's parser.
_PIECES = st.sampled_from([
    "\\boxed{", "\\boxed", "\\fbox{", "{", "}", "\\{", "\\}", "\\", "$", "$$", "^", "_", "(",
    ")", "[", "]", ",", ".", "-", "+", "/", "%", "\\%", " ", "\n", "\\frac", "\\sqrt", "\\text{",
    "\\left(", "\\right)", "\\infty", "\\pi", "\\times", "10^{", "e", "x", "=", "####",
    "answer is", "1", "2", "9", "0", "12", "1,000", "3.5", "\\cup", "\\begin{pmatrix}",
    "\\end{pmatrix}", "&", "\\\\", "<answer>", "</answer>", "\u2212", "dollars",
])
LATEXISH = st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=60)


@given(text=LATEXISH)
@settings(max_examples=300)
def test_fuzz_extract_boxed(text):
  start = time.perf_counter()
  out = extract_boxed(text)
  assert time.perf_counter() - start < 0.5
  assert out is None or (isinstance(out, str) and out in text)
  assert rewards.extract_gsm8k_answer(text) is None or isinstance(
      rewards.extract_gsm8k_answer(text), str)
  assert isinstance(rewards.normalize_answer(text), str)


@given(completion=LATEXISH, gold=st.sampled_from(["1", "\\frac{1}{2}", "(1,2)", "x+1", "18"]),
       mode=st.sampled_from(["strict", "verify"]))
@settings(max_examples=40)
def test_fuzz_math_reward(completion, gold, mode):
  timeout_s = 1.0
  start = time.perf_counter()
  grade = grade_math(completion, gold, mode=mode, timeout_s=timeout_s)
  assert time.perf_counter() - start < timeout_s + SLACK_S
  assert grade.reward in (0.0, 1.0)
  assert grade.status in rewards.STATUSES


@pytest.mark.parametrize("completion,status", [
    ("\\boxed{9^{9^{9^{9}}}}", "timeout"),
    ("\\boxed{10^{10^{10}}}", "timeout"),
    ("\\boxed{(10^{8})!}", "timeout"),
    ("\\boxed{" + "{" * 2_500_000 + "}" * 2_500_000 + "}", "no_answer"),  # 5 MB of braces
    ("\\boxed{" + "{" * 5_000_000, "no_answer"),
    ("\\boxed{" + "(" * 1000 + "1" + ")" * 1000 + "}", None),
    ("\\boxed{" + "9" * 2000 + "}", "incorrect"),
    ("\\boxed{1e999999999}", "incorrect"),
    ("word " * 1_000_000, "no_answer"),
])
@pytest.mark.parametrize("mode", ["strict", "verify"])
def test_pathological_completions_get_zero_within_the_limit(completion, status, mode):
  timeout_s = 2.0
  start = time.perf_counter()
  grade = grade_math(completion, "1", mode=mode, timeout_s=timeout_s)
  elapsed = time.perf_counter() - start
  assert grade.reward == 0.0
  assert elapsed < timeout_s + SLACK_S, (elapsed, grade)
  if status is not None and mode == "strict":
    assert grade.status == status, grade
  assert grade.status != "error", grade


def test_hard_limit_kills_a_worker_stuck_in_c_and_replaces_it():
  # With the soft (in-worker) limit off, the only fence is the parent killing the
  # process: a big-integer power never returns to the interpreter loop.
  with GraderPool(1, soft_timeout_fraction=0.0) as pool:
    pool.wait_ready()
    before = pool.worker_pids()
    start = time.perf_counter()
    grade = pool.run(plan_math("\\boxed{9^{9^{9^{9}}}}", "1"), timeout_s=1.5)
    assert time.perf_counter() - start < 1.5 + SLACK_S
    assert grade == Grade(0.0, "timeout", "9^{9^{9^{9}}}", "no result within 1.5s; worker killed")
    assert pool.worker_pids() != before
    assert pool.run(plan_math("\\boxed{\\frac{2}{4}}", "0.5"), timeout_s=30).reward == 1.0
    assert pool.stats["restarts"] == 1


def test_a_worker_that_dies_gives_zero_with_a_reason_and_is_replaced():
  with GraderPool(1, soft_timeout_fraction=0.0) as pool:
    pool.wait_ready()
    pid = pool.worker_pids()[0]
    result = {}

    def grade():
      result["grade"] = pool.run(plan_math("\\boxed{9^{9^{9^{9}}}}", "1"), timeout_s=60)

    thread = threading.Thread(target=grade)
    start = time.perf_counter()
    thread.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert time.perf_counter() - start < 10
    assert result["grade"].reward == 0.0
    assert result["grade"].status == "error"
    assert result["grade"].detail == "worker killed by SIGKILL while grading"
    assert pool.worker_pids() != [pid]
    assert pool.run(plan_math("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"), timeout_s=30).reward == 1.0


def test_worker_limits_and_protocol_errors():
  with GraderPool(1, memory_limit_mb=1536) as pool:
    pool.wait_ready()
    with open(f"/proc/{pool.worker_pids()[0]}/limits", encoding="utf-8") as f:
      limits = {line[:26].strip(): line[26:].split() for line in f}
    assert int(limits["Max address space"][0]) == 1536 * 1024 * 1024
    grade = pool.run(Check("no_such_op", {}, answer="x"))
    assert grade == Grade(0.0, "error", "x", "unknown op 'no_such_op'")
    grade = pool.run(Check("reasoning_gym", {"dataset": "no_such_dataset", "answer": "1",
                                             "entry": {}}, needs=("reasoning_gym",)))
    assert grade.status == "error" and "no_such_dataset" in grade.detail
  assert pool.run(Check("ping", {})).detail == "grading pool is closed"
  with pytest.raises(ValueError):
    GraderPool(0)
  with pytest.raises(ValueError):
    pool.run(Check("ping", {}), timeout_s=0)


def test_cache_and_deduplication():
  with GraderPool(2) as pool:
    check = plan_math("\\boxed{\\frac{6}{8}}", "0.75")
    assert isinstance(check, Check)
    assert pool.run(check).reward == 1.0
    assert pool.run(check).reward == 1.0
    assert pool.stats["checks"] == 1 and pool.stats["cache_hits"] == 1
    completions = ["\\boxed{\\frac{1}{4}}", "\\boxed{0.25}", "\\boxed{\\frac{2}{8}}",
                   "\\boxed{\\frac{1}{4}}", "no box", "\\boxed{\\sqrt{1/16}}"]
    grades = grade_batch("math_strict", completions, [{"answer": "\\frac14"}] * 6, pool=pool)
    assert [g.reward for g in grades] == [1, 1, 1, 1, 0, 1]
    assert [g.answer for g in grades] == ["\\frac{1}{4}", "0.25", "\\frac{2}{8}", "\\frac{1}{4}",
                                          None, "\\sqrt{1/16}"]
    # "0.25" vs "\frac14" is decided by math-verify too; the duplicate \frac{1}{4} runs once.
    assert pool.stats["checks"] == 1 + 4


def test_math_reward_from_many_threads():
  cases = [("\\boxed{\\frac{1}{2}}", "0.5", 1.0), ("\\boxed{3}", "4", 0.0),
           ("\\boxed{x^2-1}", "(x-1)(x+1)", 1.0), ("\\boxed{[1,2)}", "[1,2]", 0.0),
           ("\\boxed{9^{9^{9^{9}}}}", "1", 0.0), ("\\boxed{18 dollars}", "18", 1.0)] * 3
  results = [None] * len(cases)

  def work(i):
    completion, gold, _ = cases[i]
    results[i] = math_reward(completion, gold, timeout_s=3.0)

  threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(120)
  assert results == [expected for _, _, expected in cases]


def test_math_reward_inside_a_daemonic_process():
  # multiprocessing pool workers are daemonic and may not start multiprocessing
  # children; the grading workers are plain subprocesses, so this works.
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(1) as mp_pool:
    got = mp_pool.starmap(math_reward, [("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"),
                                        ("\\boxed{2\\sqrt{3}}", "\\sqrt{8}")])
  assert got == [1.0, 0.0]


# ------------------------------------------------------------------ registry


def test_registry():
  assert set(rewards.REWARDS) >= {"math_strict", "math_verify", "gsm8k", "reasoning_gym",
                                  "format"}
  with pytest.raises(ValueError, match="unknown reward 'nope'"):
    rewards.get_reward("nope")
  with pytest.raises(ValueError, match="already registered"):
    rewards.register_reward("format", lambda c, e: Grade(1.0, "correct"))
  fmt = rewards.get_reward("format")
  assert fmt("so \\boxed{7}", {}) == 1.0
  assert fmt("so 7", {}) == 0.0
  assert fmt("\\boxed{ }", {}) == 0.0
  strict, verify = rewards.get_reward("math_strict"), rewards.get_reward("math_verify")
  assert strict("the answer is 7", {"answer": "7"}) == 0.0
  assert verify("the answer is 7", {"answer": "7"}) == 1.0
  assert strict.grade("\\boxed{7}", {}).status == "error"  # no gold
  assert strict.grade("\\boxed{7}", "not a mapping").status == "error"  # type: ignore[arg-type]

  def broken(completion, example):
    raise RuntimeError("bug")

  reward = rewards.Reward("broken", broken)
  assert reward.grade("x", {}) == Grade(0.0, "error", None, "RuntimeError: bug")


def test_grade_batch_rows_follow_groups():
  examples = [{"answer": "1"}, {"answer": "2"}]
  completions = ["\\boxed{1}", "\\boxed{2}", "\\boxed{1.0}", "\\boxed{2}", "\\boxed{1}", "x"]
  grades = grade_batch("math_strict", completions, examples, group_size=3)
  np.testing.assert_array_equal(rewards.rewards_array(grades), [1, 0, 1, 1, 0, 0])
  assert rewards.rewards_array(grades).dtype == np.float32
  with pytest.raises(ValueError, match="expected 4"):
    grade_batch("math_strict", completions, examples, group_size=2)


def test_reasoning_gym_reward_uses_the_dataset_verifier():
  import reasoning_gym  # pylint: disable=g-import-not-at-top
  entries = list(reasoning_gym.create_dataset("basic_arithmetic", size=3, seed=7))
  entries += list(reasoning_gym.create_dataset("leg_counting", size=2, seed=7))
  reward = rewards.get_reward("reasoning_gym")
  completions, expected = [], []
  for i, entry in enumerate(entries):
    good = entry["answer"]
    completions += [f"So the result is \\boxed{{{good}}}", f"<answer>{good}</answer>",
                    "<answer>-123456789</answer>", "I give up"]
    expected += [1.0, 1.0, 0.0, 0.0]
  grades = grade_batch(reward, completions, entries, group_size=4, timeout_s=5.0)
  assert [g.reward for g in grades] == expected
  assert [g.status for g in grades[:4]] == ["correct", "correct", "incorrect", "no_answer"]
  assert reward.grade("\\boxed{1}", {"answer": "1"}).status == "error"  # not a rg entry
