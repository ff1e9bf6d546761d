"""What grading produces: a `Grade`, or a `Check` that a sandboxed worker must run.

`grading.py` and the reward registry plan grades; `pool.py` runs checks in
worker processes and turns their results into grades.

Statuses (`Grade.status`): "correct", "incorrect", "partial" (a verifier's
score strictly between 0 and 1), "no_answer" (nothing to grade), "timeout"
and "error" (the check failed; reward 0, reason in `Grade.detail`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Union

CORRECT, INCORRECT, PARTIAL = "correct", "incorrect", "partial"
NO_ANSWER, TIMEOUT, ERROR = "no_answer", "timeout", "error"
STATUSES = (CORRECT, INCORRECT, PARTIAL, NO_ANSWER, TIMEOUT, ERROR)
# Seconds a sandboxed check may run before its worker is killed ("a few seconds").
DEFAULT_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class Grade:
  """The outcome of grading one completion.

  Attributes:
    reward: in [0, 1]; 0 for every failure.
    status: one of `STATUSES`.
    answer: the extracted answer as written in the completion (None when there
      is none, or when a checker found it).
    detail: a short human-readable reason (empty when there is nothing to say).
  """

  reward: float
  status: str
  answer: str | None = None
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class Check:
  """A request for a sandboxed worker (see `pool.py` and `_worker.py`).

  Two checks are the same request when `op`, `payload` and `needs` are equal;
  `key()` is that identity as a string (used for caching).

  Attributes:
    op: the worker operation ("math" or "reasoning_gym").
    payload: JSON-serializable arguments of the operation.
    answer: the extracted answer, reported in the resulting `Grade`.
    needs: modules the worker must import before the timed request (import
      time is not charged to the item's time limit).
  """

  op: str
  payload: Mapping[str, Any]
  answer: str | None = None
  needs: tuple[str, ...] = ()

  def key(self) -> str:
    return json.dumps([self.op, self.payload, list(self.needs)], sort_keys=True,
                      ensure_ascii=False)


Plan = Union[Grade, Check]
