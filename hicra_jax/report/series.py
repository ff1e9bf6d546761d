"""Pure functions on metric series: relative perplexity, smoothing, tail means, judge fractions.

Values are plain Python floats; NaN marks a missing or non-finite value, and
no function here raises on one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

NAN = float("nan")


def is_finite(value: Any) -> bool:
  """True for a finite int or float (not a bool)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def relative_perplexity(steps: Sequence[int], log_ppl: Sequence[float]) -> list[float]:
  """The paper's relative perplexity: perplexity divided by its value at the start.

  With ppl_t = exp(log_ppl_t), the value at step t is
  ppl_t / ppl_s0 = exp(log_ppl_t - log_ppl_s0), where s0 is the earliest step
  with a finite log_ppl (normally the first logged step, where it is 1).

  Args:
    steps: the steps, aligned with `log_ppl` (any order).
    log_ppl: the mean negative log-likelihood (nats per token) of one token class
      at each step, e.g. metrics.jsonl's log_ppl_planning.

  Returns:
    One value per input, in input order: NaN where log_ppl is not finite, and
    everywhere when no value is finite; +inf where the ratio overflows.
  """
  if len(steps) != len(log_ppl):
    raise ValueError(f"steps and log_ppl differ in length ({len(steps)} vs {len(log_ppl)})")
  finite = [(s, v) for s, v in zip(steps, log_ppl) if is_finite(v)]
  if not finite:
    return [NAN] * len(log_ppl)
  reference = min(finite, key=lambda pair: pair[0])[1]
  out = []
  for value in log_ppl:
    if not is_finite(value):
      out.append(NAN)
      continue
    try:
      out.append(math.exp(value - reference))
    except OverflowError:
      out.append(math.inf)
  return out


def smooth(values: Sequence[float], window: int) -> list[float]:
  """Trailing moving average over logged points.

  Point i becomes the mean of the finite values among values[i - window + 1 .. i]
  (fewer at the start), so a smoothed curve never uses later steps. Non-finite
  values are left out of each mean; a window without a finite value gives NaN.
  window = 1 returns the values unchanged (as floats).
  """
  if isinstance(window, bool) or not isinstance(window, int) or window < 1:
    raise ValueError(f"window must be an int >= 1, got {window!r}")
  values = [float(v) for v in values]
  if window == 1:
    return values
  out = []
  for i in range(len(values)):
    chunk = [v for v in values[max(0, i - window + 1):i + 1] if math.isfinite(v)]
    out.append(math.fsum(chunk) / len(chunk) if chunk else NAN)
  return out


def tail_mean(steps: Sequence[int], values: Sequence[float], last: int = 0
              ) -> tuple[float, list[int]]:
  """(mean, steps used) of the finite values among the last `last` logged points
  (all points when last is 0). The mean is NaN when none is finite."""
  if last < 0:
    raise ValueError(f"last must be >= 0, got {last}")
  pairs = list(zip(steps, values))
  if last:
    pairs = pairs[-last:]
  used = [(s, float(v)) for s, v in pairs if is_finite(v)]
  if not used:
    return NAN, []
  return math.fsum(v for _, v in used) / len(used), [s for s, _ in used]


def judge_fractions(per_step: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
  """The paper's Fig. 4 numbers from `hicra-jax judge` counts.

  Per step, with n = A + B + C + D (judged failures; "unparsed" verdicts are
  left out of n), "planning_strategy" = C / n (flawed high-level plan) and
  "others" = (A + B + D) / n. Steps with n = 0 or non-integer keys are left out.

  Returns:
    {"steps": [...], "planning_strategy": [...], "others": [...], "judged": [n, ...],
    "unparsed": [...]}, steps increasing.
  """
  rows = []
  for key, counts in per_step.items():
    try:
      step = int(key)
    except (TypeError, ValueError):
      continue
    if not isinstance(counts, Mapping):
      continue
    get = lambda letter: counts.get(letter, 0) if is_finite(counts.get(letter, 0)) else 0
    a, b, c, d, unparsed = (get(x) for x in ("A", "B", "C", "D", "unparsed"))
    judged = a + b + c + d
    if judged > 0:
      rows.append((step, c / judged, (a + b + d) / judged, judged, unparsed))
  rows.sort()
  return {"steps": [r[0] for r in rows], "planning_strategy": [r[1] for r in rows],
          "others": [r[2] for r in rows], "judged": [r[3] for r in rows],
          "unparsed": [r[4] for r in rows]}


def json_number(value: float) -> float | None:
  """A value for JSON: None for NaN or +-inf (JSON has no such numbers)."""
  return float(value) if is_finite(value) else None
