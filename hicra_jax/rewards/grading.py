"""Math grading: a pure planning step, then (only when needed) a sandboxed check.

Grading a completion against a gold answer happens in two steps:

1. `plan_math(completion, gold, mode=...)` is pure, bounded string work in the
   caller: extract the answer, normalize, and decide at once whenever exact
   string or plain-number comparison can (see `normalize.quick_equal`). It
   returns either a final `Grade` or a `Check`: a JSON-serializable request
   for `math-verify`.
2. A `Check` runs in a worker process of a `GraderPool` (`pool.py`) under a
   hard per-item time limit and a memory limit, so sympy never runs in the
   caller and pathological answers (`\\boxed{9^{9^{9^{9}}}}`) cost at most the
   time limit and give reward 0 with a reason.

`math_reward` chains both and is safe from any thread or process: the time
limit is enforced by killing a worker process, not by SIGALRM in the caller.
`Grade`, `Check` and the statuses are defined in `grades.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from hicra_jax.rewards.extract import MAX_ANSWER_CHARS, extract_all_boxed, extract_boxed
from hicra_jax.rewards.grades import CORRECT, ERROR, INCORRECT, NO_ANSWER, Check, Grade, Plan
from hicra_jax.rewards.normalize import normalize_answer, quick_equal
from hicra_jax.rewards.pool import resolve

logger = logging.getLogger("hicra_jax.rewards")

MODES = ("strict", "verify")
# In "verify" mode without a box, the end of the text that math-verify reads.
VERIFY_TAIL_CHARS = 4096
# "verify": boxes starting in the completion's last this-many characters are one final
# answer given in parts ("\\boxed{k = 45} and \\boxed{n = 2}", a set of solutions).
FINAL_BOXES_CHARS = 400




def gold_to_str(gold: Any) -> str | None:
  """A gold answer as a string: str as is, int/float via str(); None otherwise."""
  if isinstance(gold, str):
    return gold
  if isinstance(gold, bool):
    return None
  if isinstance(gold, (int, float)):
    return str(gold)
  return None


def plan_math(completion: str, gold: Any, *, mode: str = "strict",
              max_answer_chars: int = MAX_ANSWER_CHARS,
              verify_tail_chars: int = VERIFY_TAIL_CHARS) -> Plan:
  """Grades what can be graded cheaply; otherwise says what to check.

  "strict" (the paper): the last `\\boxed{}` of the completion must exist and
  equal the gold answer after normalization or symbolic equivalence.
  "verify": the boxed answer when there is one (as "strict"), and when the
  last FINAL_BOXES_CHARS characters hold several boxes, also their contents
  joined as one answer ("\\boxed{k = 45} and \\boxed{n = 2}" is "k = 45, n = 2",
  which equals "(45, 2)"); with no box, whatever final answer math-verify finds
  in the last `verify_tail_chars` characters ("the answer is 3/4", "$x = 2$",
  a last number), compared symbolically.

  Pure and bounded: never raises for any `completion`/`gold` values.

  Args:
    completion: the model's text (stop token excluded).
    gold: the reference answer (str, or an int/float from a JSON file).
    mode: "strict" or "verify".
    max_answer_chars: longest boxed content considered (longer: no answer).
    verify_tail_chars: see above.

  Returns:
    A final `Grade`, or a `Check` (op "math", payload {"gold", "answer"}, {"gold", "answers"} or
    {"gold", "text"}) for the worker.

  Raises:
    ValueError: unknown `mode` (a programming error, not a grading failure).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  gold_s = gold_to_str(gold)
  if gold_s is None or not normalize_answer(gold_s):
    return Grade(0.0, ERROR, detail=f"gold answer must be a non-empty str or number, got "
                 f"{type(gold).__name__}")
  if not isinstance(completion, str):
    return Grade(0.0, ERROR, detail=f"completion must be a str, got {type(completion).__name__}")
  answer = extract_boxed(completion, max_chars=max_answer_chars)
  if answer is None and mode == "verify":
    return Check("math", {"gold": normalize_answer(gold_s),
                          "text": completion[-verify_tail_chars:]})
  if answer is None:
    return Grade(0.0, NO_ANSWER, detail="no \\boxed{} answer")
  plan = compare_answer(answer, gold_s)
  final_boxes = extract_all_boxed(completion[-FINAL_BOXES_CHARS:], max_chars=max_answer_chars)
  if mode == "verify" and len(final_boxes) > 1 and not (isinstance(plan, Grade)
                                                        and plan.reward == 1.0):
    joined = ", ".join(box.strip() for box in final_boxes)
    candidates = [normalize_answer(answer), normalize_answer(joined)]
    return Check("math", {"gold": normalize_answer(gold_s), "answers": candidates},
                 answer=joined)
  return plan


def compare_answer(answer: str, gold: str) -> Plan:
  """Plan for one extracted answer against a gold string (both as written).

  Returns a `Grade` when `quick_equal` decides, else a "math" `Check`.
  """
  normalized = normalize_answer(answer)
  if not normalized:
    return Grade(0.0, NO_ANSWER, answer=answer, detail="empty answer")
  decided = quick_equal(answer, gold)
  if decided is True:
    return Grade(1.0, CORRECT, answer=answer)
  if decided is False:
    return Grade(0.0, INCORRECT, answer=answer)
  return Check("math", {"gold": normalize_answer(gold), "answer": normalized}, answer=answer)


def grade_math(completion: str, gold: Any, *, mode: str = "strict",
               timeout_s: float | None = None, pool=None) -> Grade:
  """`plan_math`, then the sandboxed check when one is needed.

  Args:
    completion, gold, mode: as in `plan_math`.
    timeout_s: hard limit of the sandboxed check (default `DEFAULT_TIMEOUT_S`).
    pool: a `GraderPool`; None uses the process-wide default pool (started on
      first use).

  Returns:
    The `Grade`; failures are reward 0 with a reason, logged.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  try:
    plan = plan_math(completion, gold, mode=mode)
  except Exception as e:  # pylint: disable=broad-except  # a bug must not kill a run
    logger.warning("grading failed to plan: %s: %s", type(e).__name__, e)
    return Grade(0.0, ERROR, detail=f"{type(e).__name__}: {e}"[:200])
  return resolve(plan, timeout_s=timeout_s, pool=pool)


def math_reward(completion: str, gold: Any, *, mode: str = "strict",
                timeout_s: float | None = None, pool=None) -> float:
  """The reward of a completion for a math problem: 1.0 if correct, else 0.0.

  Modes: "strict" (the paper: the last `\\boxed{}` answer must equal the gold
  answer after normalization or symbolic equivalence) and "verify" (any final
  answer the text states, compared symbolically). GSM8K-style numbers
  ("$1,234", "18 dollars", "18.") grade correctly.

  Safe to call from any thread or process: symbolic checks run in worker
  processes of `pool` (default: a process-wide pool started on first use,
  which takes a second or two) and are killed after `timeout_s`. A
  pathological answer, a crashed worker or any other failure gives 0.0 and a
  logged reason (`grade_math` returns the reason).

  Args:
    completion: the model's text.
    gold: the reference answer (str, int or float).
    mode: "strict" or "verify".
    timeout_s: hard time limit of the symbolic check (default
      `DEFAULT_TIMEOUT_S` seconds).
    pool: a `GraderPool`, or None for the default one.

  Returns:
    1.0 or 0.0.
  """
  return grade_math(completion, gold, mode=mode, timeout_s=timeout_s, pool=pool).reward
