"""Builds a large solution corpus for timing `hicra-jax extract-sgs` at scale.

No public set has 10k solutions of a few hundred words with a correctness
field, so this resamples real ones: each document strings together sentences
drawn at random from the reference solutions of the given JSONL files (GSM8K
train, MATH500, ...) until it has `--words` words, and gets a `reward` of 1
(or 0 for a `--failed` fraction, which the pipeline must skip).

  python benchmarks/extract_sgs_corpus.py --out /tmp/sg10k.jsonl \
      ../shared/data/gsm8k/gsm8k_train.jsonl ../shared/data/math500/math500_test.jsonl
  hicra-jax extract-sgs --config.input=/tmp/sg10k.jsonl --config.output=/tmp/sg10k.json
"""

from __future__ import annotations

import argparse
import json
import random
import re


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("inputs", nargs="+", help="JSONL files with a 'solution' field")
  parser.add_argument("--out", required=True)
  parser.add_argument("--docs", type=int, default=10_000)
  parser.add_argument("--words", type=int, default=300)
  parser.add_argument("--failed", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  sentences = []
  for path in args.inputs:
    with open(path, encoding="utf-8") as f:
      for line in f:
        text = json.loads(line).get("solution") or ""
        if isinstance(text, list):  # OlympiadBench: a list of solutions
          text = "\n".join(text)
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
  rng = random.Random(args.seed)
  total = 0
  with open(args.out, "w", encoding="utf-8") as f:
    for i in range(args.docs):
      doc, n = [], 0
      while n < args.words:
        s = rng.choice(sentences)
        doc.append(s)
        n += len(s.split())
      total += n
      reward = 0.0 if rng.random() < args.failed else 1.0
      f.write(json.dumps({"id": i, "completion": " ".join(doc), "reward": reward}) + "\n")
  print(f"{args.docs} documents, {total / args.docs:.0f} words on average, "
        f"from {len(sentences)} sentences -> {args.out}")


if __name__ == "__main__":
  main()
