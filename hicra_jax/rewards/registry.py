"""The reward registry: a config names a reward, each a function of (completion, example).

A reward's core is its *plan* function `(completion, example) -> Grade | Check`:
pure and bounded, it either grades at once or returns the `Check` a sandboxed
worker must run (see `grading.py`, `pool.py`). A `Reward` wraps it:

  reward = get_reward("math_strict")
  reward(completion, example)          # -> float (1.0 / 0.0)
  reward.grade(completion, example)    # -> Grade(reward, status, answer, detail)
  grade_batch(reward, completions, examples, group_size=G)   # -> list[Grade]

An example is a mapping with at least "answer" (the gold answer; str, int or
float). Registered rewards:

  math_strict    the paper: the last \\boxed{} must equal the gold answer
                 (normalization or math-verify equivalence)
  math_verify    any final answer the text states (boxed first), math-verify
  gsm8k          boxed, else "#### x", else "the answer is x", else the last
                 number; exact numeric comparison (math-verify for the rest)
  reasoning_gym  a reasoning-gym entry ("question", "answer", "metadata" with
                 "source_dataset"), scored by that dataset's own verifier on the
                 boxed (or <answer>-tagged) answer; partial credit possible
  format         1.0 when the completion has a non-empty \\boxed{} answer
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hicra_jax.rewards.extract import extract_boxed, extract_gsm8k_answer, extract_tagged
from hicra_jax.rewards.grades import CORRECT, ERROR, NO_ANSWER, Check, Grade, Plan
from hicra_jax.rewards.grading import compare_answer, gold_to_str, plan_math
from hicra_jax.rewards.normalize import normalize_answer
from hicra_jax.rewards.pool import GraderPool, resolve, resolve_many

logger = logging.getLogger("hicra_jax.rewards")

PlanFn = Callable[[str, Mapping[str, Any]], Plan]


@dataclasses.dataclass(frozen=True)
class Reward:
  """A named reward.

  Attributes:
    name: the registry name.
    plan: `(completion, example) -> Grade | Check`, pure; may raise only on a
      bug (a raising plan gives an "error" grade).
    description: one line for help texts.
  """

  name: str
  plan: PlanFn
  description: str = ""

  def safe_plan(self, completion: str, example: Mapping[str, Any]) -> Plan:
    """`plan`, with any exception turned into an error grade (logged)."""
    try:
      if not isinstance(example, Mapping):
        return Grade(0.0, ERROR, detail=f"example must be a mapping, got {type(example).__name__}")
      return self.plan(completion, example)
    except Exception as e:  # pylint: disable=broad-except
      logger.warning("reward %s failed to plan: %s: %s", self.name, type(e).__name__, e)
      return Grade(0.0, ERROR, detail=f"{type(e).__name__}: {e}"[:200])

  def grade(self, completion: str, example: Mapping[str, Any], *,
            timeout_s: float | None = None, pool: GraderPool | None = None) -> Grade:
    """The full `Grade` of one completion (sandboxed check when needed)."""
    return resolve(self.safe_plan(completion, example), timeout_s=timeout_s, pool=pool)

  def __call__(self, completion: str, example: Mapping[str, Any]) -> float:
    """The reward in [0, 1] (0 for every failure)."""
    return self.grade(completion, example).reward


REWARDS: dict[str, Reward] = {}


def register_reward(name: str, plan: PlanFn, description: str = "", *,
                    replace: bool = False) -> Reward:
  """Adds a reward to `REWARDS` and returns it.

  Raises:
    ValueError: `name` is taken (and not `replace`) or not an identifier-like str.
  """
  if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
    raise ValueError(f"reward name must be letters, digits, '_' or '-', got {name!r}")
  if name in REWARDS and not replace:
    raise ValueError(f"reward {name!r} is already registered; pass replace=True to replace it")
  reward = Reward(name, plan, description)
  REWARDS[name] = reward
  return reward


def get_reward(name: str | Reward) -> Reward:
  """The registered reward called `name` (a `Reward` is returned as is).

  Raises:
    ValueError: unknown name (the message lists the registered ones).
  """
  if isinstance(name, Reward):
    return name
  if name not in REWARDS:
    raise ValueError(f"unknown reward {name!r}; expected one of {sorted(REWARDS)}")
  return REWARDS[name]


def grade_batch(reward: str | Reward, completions: Sequence[str],
                examples: Sequence[Mapping[str, Any]], *, group_size: int = 1,
                timeout_s: float | None = None, pool: GraderPool | None = None) -> list[Grade]:
  """Grades a batch: cheap decisions in the caller, checks in parallel in the pool.

  Row layout (DESIGN.md): completion i belongs to example i // group_size.

  Args:
    reward: a registry name or a `Reward`.
    completions: N texts.
    examples: N / group_size examples.
    group_size: G, the completions per example.
    timeout_s: per-item hard limit of the sandboxed checks.
    pool: a `GraderPool` (default: the process-wide one).

  Returns:
    N grades, in order.

  Raises:
    ValueError: unknown reward, or len(completions) != len(examples) * group_size.
  """
  reward = get_reward(reward)
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
  if len(completions) != len(examples) * group_size:
    raise ValueError(f"got {len(completions)} completions for {len(examples)} examples x "
                     f"group_size {group_size}; expected {len(examples) * group_size}")
  plans = [reward.safe_plan(c, examples[i // group_size]) for i, c in enumerate(completions)]
  return resolve_many(plans, timeout_s=timeout_s, pool=pool)


def rewards_array(grades: Sequence[Grade]) -> np.ndarray:
  """f32[N] rewards of grades."""
  return np.asarray([g.reward for g in grades], dtype=np.float32)


# ---------------------------------------------------------------- the plans


def _gold(example: Mapping[str, Any]) -> str | Grade:
  gold = gold_to_str(example.get("answer"))
  if gold is None or not normalize_answer(gold):
    return Grade(0.0, ERROR, detail="example has no usable 'answer' (a non-empty str or number)")
  return gold


def plan_math_strict(completion: str, example: Mapping[str, Any]) -> Plan:
  gold = _gold(example)
  return gold if isinstance(gold, Grade) else plan_math(completion, gold, mode="strict")


def plan_math_verify(completion: str, example: Mapping[str, Any]) -> Plan:
  gold = _gold(example)
  return gold if isinstance(gold, Grade) else plan_math(completion, gold, mode="verify")


def plan_gsm8k(completion: str, example: Mapping[str, Any]) -> Plan:
  gold = _gold(example)
  if isinstance(gold, Grade):
    return gold
  answer = extract_gsm8k_answer(completion) if isinstance(completion, str) else None
  if answer is None:
    return Grade(0.0, NO_ANSWER, detail="no final answer")
  return compare_answer(answer, gold)


def plan_format(completion: str, example: Mapping[str, Any]) -> Plan:  # pylint: disable=unused-argument
  answer = extract_boxed(completion) if isinstance(completion, str) else None
  if answer is None or not answer.strip():
    return Grade(0.0, NO_ANSWER, answer=answer, detail="no non-empty \\boxed{} answer")
  return Grade(1.0, CORRECT, answer=answer)


def _jsonable(value: Any) -> Any:
  if hasattr(value, "item") and callable(value.item):  # numpy scalars
    return value.item()
  if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
    return value.tolist()
  if isinstance(value, (set, frozenset)):
    return sorted(value, key=repr)
  raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def plan_reasoning_gym(completion: str, example: Mapping[str, Any]) -> Plan:
  metadata = example.get("metadata")
  dataset = metadata.get("source_dataset") if isinstance(metadata, Mapping) else None
  if not isinstance(dataset, str) or not dataset:
    return Grade(0.0, ERROR, detail="example is not a reasoning-gym entry (no "
                 "metadata['source_dataset'])")
  if not isinstance(completion, str):
    return Grade(0.0, ERROR, detail=f"completion must be a str, got {type(completion).__name__}")
  answer = extract_boxed(completion)
  if answer is None:
    answer = extract_tagged(completion, "answer")
  if answer is None:
    return Grade(0.0, NO_ANSWER, detail="no \\boxed{} or <answer></answer> answer")
  entry = {"question": example.get("question", ""), "answer": example.get("answer"),
           "metadata": metadata}
  try:
    entry = json.loads(json.dumps(entry, default=_jsonable))
  except (TypeError, ValueError) as e:
    return Grade(0.0, ERROR, answer=answer, detail=f"example is not JSON-serializable: {e}")
  return Check("reasoning_gym", {"dataset": dataset, "answer": answer, "entry": entry},
               answer=answer, needs=("reasoning_gym",))


register_reward("math_strict", plan_math_strict,
                "the paper: last \\boxed{} answer equals the gold answer (normalized / math-verify)")
register_reward("math_verify", plan_math_verify,
                "any final answer the text states (boxed first), compared with math-verify")
register_reward("gsm8k", plan_gsm8k,
                "boxed, '#### x', 'the answer is x' or the last number; exact numeric match")
register_reward("reasoning_gym", plan_reasoning_gym,
                "a reasoning-gym entry scored by its dataset's own verifier")
register_reward("format", plan_format, "1.0 when the completion has a non-empty \\boxed{} answer")
