"""The grading worker process: `python -m hicra_jax.rewards._worker [--memory-mb N]`.

Started by `GraderPool` (pool.py) as a fresh interpreter (never forked from the
caller, so it holds no JAX state). Protocol: JSON lines. The worker writes
`{"ready": true, "pid": ...}` once it has imported math-verify and warmed it
up, then answers each request line with exactly one response line:

  request:  {"id": int, "op": "math" | "reasoning_gym" | "load" | "ping",
             "soft_timeout": float seconds (optional), ...payload}
  response: {"id": int, "ok": true, "score": float, "detail"?: str, "answer"?: str}
            {"id": int, "ok": false, "status": "timeout" | "error", "detail": str}

Limits: the address space is capped (`--memory-mb`, 0 for none), so a huge
expression raises MemoryError instead of exhausting the machine; a soft
timeout (SIGALRM in this process's main thread, where it works) stops
Python-level work early; the parent kills the process at the hard limit for
work stuck in C (big-integer powers). Model text is only parsed, never
evaluated. The worker exits when its stdin closes (the parent is gone).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
from typing import Any

MAX_DETAIL_CHARS = 200


class _SoftTimeout(BaseException):
  """Raised by the alarm; a BaseException so that libraries' `except Exception` let it through."""


def _on_alarm(signum, frame):  # pylint: disable=unused-argument
  raise _SoftTimeout()


def _limit_memory(megabytes: int) -> None:
  if megabytes <= 0:
    return
  try:
    # Imported here: POSIX only (absent on Windows), where the limit is skipped.
    import resource  # pylint: disable=g-import-not-at-top
    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
      limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  except (ImportError, ValueError, OSError):  # not available on this platform
    pass


# ------------------------------------------------------------------ math


@functools.lru_cache(maxsize=None)
def _math_verify():
  # Imported on first use: math-verify pulls in sympy (seconds), timed apart from any item.
  import math_verify  # pylint: disable=g-import-not-at-top
  for name in ("math_verify", "latex2sympy2_extended"):
    logging.getLogger(name).setLevel(logging.CRITICAL)
  return math_verify


@functools.lru_cache(maxsize=4)
def _configs(boxed_first: bool):
  mv = _math_verify()
  return (mv.LatexExtractionConfig(boxed_match_priority=0 if boxed_first else 50),
          mv.ExprExtractionConfig())


def _parse(text: str, boxed_first: bool = True) -> list:
  return _math_verify().parse(text, _configs(boxed_first), parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
  return _parse("\\boxed{" + gold + "}")


def _op_math(request: dict[str, Any]) -> dict[str, Any]:
  """Symbolic equivalence of an answer (or of a text's final answer) with the gold."""
  gold = _parse_gold(str(request["gold"]))
  if not gold:
    return {"score": 0.0, "detail": "gold answer could not be parsed"}
  if request.get("answers") is not None:  # several readings of one answer: any may match
    verify = _math_verify().verify
    ok = any(verify(gold, _parse("\\boxed{" + str(a) + "}"), timeout_seconds=None)
             for a in request["answers"] if a)
    return {"score": 1.0 if ok else 0.0, "answer": None}
  if request.get("answer") is not None:
    pred = _parse("\\boxed{" + str(request["answer"]) + "}")
    found = None
  else:
    pred = _parse(str(request.get("text", "")))
    strings = [p for p in pred if isinstance(p, str)]
    found = strings[0][:MAX_DETAIL_CHARS] if strings else None
    if not pred:
      return {"score": 0.0, "detail": "no answer found", "no_answer": True}
  ok = _math_verify().verify(gold, pred, timeout_seconds=None)
  return {"score": 1.0 if ok else 0.0, "answer": found}


# --------------------------------------------------------- reasoning-gym


@functools.lru_cache(maxsize=None)
def _rg_score_fn(dataset: str):
  # Imported on first use: reasoning-gym takes seconds, and only its own checks need it.
  import reasoning_gym  # pylint: disable=g-import-not-at-top
  return reasoning_gym.get_score_answer_fn(dataset)


def _op_reasoning_gym(request: dict[str, Any]) -> dict[str, Any]:
  """The reasoning-gym dataset's own verifier."""
  score = _rg_score_fn(str(request["dataset"]))(request["answer"], request["entry"])
  score = float(score)
  if not score == score:  # NaN
    return {"score": 0.0, "detail": "verifier returned NaN"}
  return {"score": min(max(score, 0.0), 1.0)}


# ------------------------------------------------------------------ loop

_LOADABLE = ("math_verify", "reasoning_gym")


def _op_load(request: dict[str, Any]) -> dict[str, Any]:
  module = request.get("module")
  if module not in _LOADABLE:
    raise ValueError(f"cannot load {module!r}; expected one of {_LOADABLE}")
  __import__(module)
  return {"score": 1.0}


_OPS = {
    "math": _op_math,
    "reasoning_gym": _op_reasoning_gym,
    "load": _op_load,
    "ping": lambda request: {"score": 1.0, "detail": str(os.getpid())},
}


def handle(request: dict[str, Any]) -> dict[str, Any]:
  """One response for one request (never raises, except on interpreter exit)."""
  rid = request.get("id")
  op = _OPS.get(request.get("op"))
  if op is None:
    return {"id": rid, "ok": False, "status": "error", "detail": f"unknown op {request.get('op')!r}"}
  soft = request.get("soft_timeout")
  try:
    if soft:
      signal.setitimer(signal.ITIMER_REAL, float(soft))
    try:
      result = op(request)
    finally:
      signal.setitimer(signal.ITIMER_REAL, 0)
  except _SoftTimeout:
    return {"id": rid, "ok": False, "status": "timeout", "detail": f"soft time limit {soft:.2f}s"}
  except MemoryError:
    return {"id": rid, "ok": False, "status": "error", "detail": "memory limit exceeded"}
  except RecursionError:
    return {"id": rid, "ok": False, "status": "error", "detail": "recursion limit exceeded"}
  except Exception as e:  # pylint: disable=broad-except
    # Only the exception type and a bounded message: str() of a huge sympy object can hang.
    message = str(e)[:MAX_DETAIL_CHARS] if isinstance(e, (ValueError, KeyError, TypeError)) else ""
    return {"id": rid, "ok": False, "status": "error",
            "detail": f"{type(e).__name__}: {message}".rstrip(": ")}
  return {"id": rid, "ok": True, **result}


def _warm_up() -> None:
  """Imports math-verify and runs a few checks so that the first request is not slow."""
  for gold, answer in (("\\frac{1}{2}", "0.5"), ("(1, 2)", "(1,2)"), ("x^2+1", "1+x^2"),
                       ("[0, 1)", "[0,1)"), ("\\{1,2\\}", "\\{2,1\\}"), ("\\text{B}", "B")):
    handle({"id": None, "op": "math", "gold": gold, "answer": answer})


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--memory-mb", type=int, default=0)
  args = parser.parse_args(argv)
  # The protocol owns the original stdout; anything a library prints goes to stderr.
  out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  signal.signal(signal.SIGALRM, _on_alarm)
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
  _limit_memory(args.memory_mb)
  _warm_up()
  out.write(json.dumps({"ready": True, "pid": os.getpid()}).encode() + b"\n")
  for line in sys.stdin.buffer:
    if not line.strip():
      continue
    try:
      request = json.loads(line)
      if not isinstance(request, dict):
        raise ValueError("a request must be a JSON object")
    except ValueError as e:
      response = {"id": None, "ok": False, "status": "error", "detail": f"bad request: {e}"}
    else:
      response = handle(request)
    out.write(json.dumps(response, ensure_ascii=True).encode() + b"\n")


if __name__ == "__main__":
  main()
