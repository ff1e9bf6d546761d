"""Grading throughput: completions/s of `grade_batch` in strict mode.

Two workloads, each graded with a fresh `GraderPool` (cache off, workers
started before the clock starts):

* gsm8k: ~1k-token completions (GSM8K test solutions repeated to ~4,000
  characters) ending in a boxed numeric answer written the GSM8K way
  ("\\$1,234", "18 dollars", "18.", "1{,}234", ...), half of them wrong.
  Target (issue 6): >= 500 completions/s on the 2-core dev machine.
* math: MATH500 solutions ending in a boxed answer: half the gold answer
  re-spaced ("(1,2)" -> "(1, 2)", "2 \\sqrt{5}" -> "2\\sqrt{5}"), half the gold
  answer of another problem. "math-symbolic-only" keeps the items that need a
  math-verify check in a worker process (the fast path cannot decide them).
  Reported, no target.

  python benchmarks/grading.py --data ../shared/data            # both workloads
  python benchmarks/grading.py --data ../shared/data --only math --n 300

It also checks the grades (every "correct" variant graded 1, every "wrong" one
0) and prints the counts of timeouts/errors, so a fast but wrong grader shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time

from hicra_jax.data.jsonl import read_jsonl
from hicra_jax.rewards import Check, GraderPool, grade_batch, plan_math, rewards_array

TARGET_CHARS = 4000  # ~1k tokens of English/math text


def _gsm8k_answer_forms(answer: str, i: int) -> str:
  n = int(answer)
  forms = [f"{n}", f"\\${n:,}", f"{n:,} dollars", f"{n}.", f"{n:,}".replace(",", "{,}"),
           f"\\text{{{n} dollars}}", f"{n}.00", f"{n} \\text{{ apples}}"]
  return forms[i % len(forms)]


def gsm8k_workload(data_dir: str, n: int) -> tuple[list[str], list[dict], list[float]]:
  rows = [r for r in read_jsonl(os.path.join(data_dir, "gsm8k", "gsm8k_test.jsonl"))
          if r["answer"].lstrip("-").isdigit()]
  completions, examples, expected = [], [], []
  for i in range(n):
    row = rows[i % len(rows)]
    body = row["solution"].replace("<<", "").replace(">>", " ")
    text = "Let's solve this step by step.\n"
    while len(text) < TARGET_CHARS:
      text += body + "\n"
    correct = i % 2 == 0
    answer = row["answer"] if correct else str(int(row["answer"]) + 1 + i % 7)
    completions.append(f"{text}\nTherefore the answer is $\\boxed{{{_gsm8k_answer_forms(answer, i)}}}$.")
    examples.append({"answer": row["answer"]})
    expected.append(1.0 if correct else 0.0)
  return completions, examples, expected


def _respace(answer: str) -> str:
  """The same answer written differently (spacing; MATH's `10,\\!080` as `10,080`)."""
  if re.fullmatch(r"[-\d,.\\!$ ]+", answer):
    return answer.replace("\\!", "").replace(" ", "")
  if " " in answer:
    return answer.replace(" ", "")
  return answer.replace(",", ", ").replace("=", " = ").replace("+", " + ")


def math_workload(data_dir: str, n: int) -> tuple[list[str], list[dict], list[float]]:
  rows = read_jsonl(os.path.join(data_dir, "math500", "math500_test.jsonl"))
  completions, examples, expected = [], [], []
  for i in range(n):
    j = (i // 2) % len(rows)
    row, other = rows[j], rows[(j + 1) % len(rows)]
    correct = i % 2 == 0 or other["answer"] == row["answer"]
    answer = _respace(row["answer"]) if correct else other["answer"]
    body = row["solution"][:TARGET_CHARS]
    completions.append(f"{body}\nThe final answer is $\\boxed{{{answer}}}$.")
    examples.append({"answer": row["answer"]})
    expected.append(1.0 if correct else 0.0)
  return completions, examples, expected


def symbolic_only(completions, examples, expected):
  """The items whose grading needs a math-verify check (the fast path cannot decide)."""
  keep = [i for i, (c, e) in enumerate(zip(completions, examples))
          if isinstance(plan_math(c, e["answer"]), Check)]
  return ([completions[i] for i in keep], [examples[i] for i in keep],
          [expected[i] for i in keep])


def run(name: str, completions, examples, expected, workers: int, timeout_s: float) -> dict:
  with GraderPool(workers, cache_size=0) as pool:
    pool.wait_ready()
    start = time.perf_counter()
    grades = grade_batch("math_strict", completions, examples, pool=pool, timeout_s=timeout_s)
    seconds = time.perf_counter() - start
    stats = dict(pool.stats)
  got = rewards_array(grades)
  statuses = {}
  for g in grades:
    statuses[g.status] = statuses.get(g.status, 0) + 1
  right_correct = sum(1 for g, e in zip(got, expected) if e == 1.0 and g == 1.0)
  right_wrong = sum(1 for g, e in zip(got, expected) if e == 0.0 and g == 0.0)
  result = {
      "workload": name, "n": len(completions), "seconds": round(seconds, 3),
      "completions_per_s": round(len(completions) / seconds, 1),
      "mean_chars": round(sum(map(len, completions)) / len(completions)),
      "worker_checks": stats.get("checks", 0), "timeouts": stats.get("timeouts", 0),
      "errors": stats.get("errors", 0), "statuses": statuses,
      "correct_variants_graded_1": f"{right_correct}/{sum(1 for e in expected if e == 1.0)}",
      "wrong_variants_graded_0": f"{right_wrong}/{sum(1 for e in expected if e == 0.0)}",
  }
  print(json.dumps(result), flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--data", default="../shared/data",
                      help="folder with gsm8k/gsm8k_test.jsonl and math500/math500_test.jsonl")
  parser.add_argument("--only", choices=("gsm8k", "math"), default=None)
  parser.add_argument("--n", type=int, default=0, help="completions (default 4000 / 1000)")
  parser.add_argument("--workers", type=int, default=None, help="default: min(4, CPUs)")
  parser.add_argument("--timeout", type=float, default=5.0, help="per-item limit (s)")
  args = parser.parse_args()
  workers = args.workers or max(1, min(4, os.cpu_count() or 1))
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{workers} grading workers", flush=True)
  if args.only in (None, "gsm8k"):
    run("gsm8k", *gsm8k_workload(args.data, args.n or 4000), workers, args.timeout)
  if args.only in (None, "math"):
    workload = math_workload(args.data, args.n or 1000)
    run("math", *workload, workers, args.timeout)
    run("math-symbolic-only", *symbolic_only(*workload), workers, args.timeout)


if __name__ == "__main__":
  main()
