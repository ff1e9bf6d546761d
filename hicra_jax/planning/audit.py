"""Audit: device planning tokens vs the character-level reference, overall and per SG."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hicra_jax.planning.masks import sg_match_table
from hicra_jax.planning.reference import reference_planning
from hicra_jax.planning.tokens import token_bytes_table
from hicra_jax.planning.trie import SGTrie


class _Agreement:
  """Recall / precision of the device matcher's tokens against the reference's."""

  ref_tokens: int
  dev_tokens: int
  both_tokens: int

  @property
  def recall(self) -> float:
    return self.both_tokens / self.ref_tokens if self.ref_tokens else 1.0

  @property
  def precision(self) -> float:
    return self.both_tokens / self.dev_tokens if self.dev_tokens else 1.0


@dataclasses.dataclass
class SGStats(_Agreement):
  """Token-level agreement for one SG (tokens overlapping its occurrences)."""
  gram: str
  ref_tokens: int = 0
  dev_tokens: int = 0
  both_tokens: int = 0
  ref_occurrences: int = 0
  dev_occurrences: int = 0


@dataclasses.dataclass
class AuditReport(_Agreement):
  """Result of `audit`.

  Attributes:
    rows, tokens: corpus size.
    ref_tokens, dev_tokens, both_tokens: planning tokens by the reference, by the
      device matcher, and by both (union over SGs).
    per_sg: one `SGStats` per SG, in trie order.
    mismatches: up to `max_examples` dicts (row, token, ref, dev, context) for
      tokens where the two disagree.
  """
  rows: int
  tokens: int
  ref_tokens: int
  dev_tokens: int
  both_tokens: int
  per_sg: list[SGStats]
  mismatches: list[dict]

  def summary(self) -> str:
    imperfect = [s for s in self.per_sg if s.recall < 1 or s.precision < 1]
    lines = [f"{self.rows} rows, {self.tokens} tokens, planning tokens: reference "
             f"{self.ref_tokens}, device {self.dev_tokens}; token recall {self.recall:.4%}, "
             f"precision {self.precision:.4%}; SGs seen "
             f"{sum(s.ref_tokens > 0 for s in self.per_sg)}/{len(self.per_sg)}, "
             f"imperfect {len(imperfect)}"]
    for s in sorted(imperfect, key=lambda s: min(s.recall, s.precision))[:10]:
      lines.append(f"  {s.gram!r}: recall {s.recall:.3f} precision {s.precision:.3f} "
                   f"(ref {s.ref_tokens} tok / {s.ref_occurrences} occ, dev {s.dev_tokens} tok / "
                   f"{s.dev_occurrences} occ)")
    for m in self.mismatches[:5]:
      lines.append(f"  row {m['row']} token {m['token']}: ref {m['ref']} dev {m['dev']} "
                   f"in {m['context']!r}")
    return "\n".join(lines)


def _device_occurrences(rows: list[list[int]], trie: SGTrie, mask_rows, budget: int):
  """(row, sg, first, end) of every device-matched occurrence.

  Rows are packed into lines of one width, separated by a masked-out position
  (which breaks the text exactly like a row end), so one compiled shape serves
  the whole corpus.
  """
  longest = max((len(r) for r in rows), default=1)
  width = max(256, 1 << longest.bit_length())  # >= longest + 1
  lines: list[list[tuple[int, int]]] = []  # (row, offset) per line
  used = []
  for i in sorted(range(len(rows)), key=lambda i: -len(rows[i])):
    need = len(rows[i]) + 1
    for k in range(max(0, len(lines) - 8), len(lines)):  # first fit among the last few lines
      if used[k] + need <= width:
        lines[k].append((i, used[k]))
        used[k] += need
        break
    else:
      lines.append([(i, 0)])
      used.append(need)
  per_batch = max(1, budget // width)
  out = []
  for b in range(0, len(lines), per_batch):
    ids = np.zeros((per_batch, width), np.int32)
    cm = np.zeros((per_batch, width), bool)
    where = {}
    for r, line in enumerate(lines[b:b + per_batch]):
      for i, off in line:
        ids[r, off:off + len(rows[i])] = rows[i]
        cm[r, off:off + len(rows[i])] = True if mask_rows is None else mask_rows[i]
        for t in range(off, off + len(rows[i])):
          where[(r, t)] = (i, off)
    table = np.asarray(sg_match_table(ids, trie, cm))
    for r, t, l, k in zip(*np.nonzero(table >= 0)):
      i, off = where[(int(r), int(t))]
      out.append((i, int(table[r, t, l, k]), int(t) - off, int(t + l + 1) - off))
  return out


def audit(trie: SGTrie, tokenizer, texts: Sequence[str] | Sequence[Sequence[int]], *,
          completion_mask: Sequence[Sequence[bool]] | None = None, max_examples: int = 20,
          batch_tokens: int = 1 << 16) -> AuditReport:
  """Compares the device matcher with the character-level reference on a corpus.

  Args:
    trie: the `SGTrie` (built for `tokenizer`).
    tokenizer: the Hugging Face tokenizer the trie was built for.
    texts: strings (tokenized here without special tokens) or token-id rows (e.g.
      a policy's own completions, which need not be canonical tokenizations).
    completion_mask: optional per-row masks (as in `planning_mask`).
    max_examples: how many disagreeing tokens to describe.
    batch_tokens: device batch size in tokens.

  Returns:
    `AuditReport` with token-level recall and precision (device vs reference),
    overall and per SG, and example disagreements.
  """
  table = token_bytes_table(tokenizer)
  trie.check_tokenizer(table)
  if len(texts) and isinstance(texts[0], str):
    rows = [list(r) for r in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
  else:
    rows = [[int(x) for x in r] for r in texts]
  masks = None if completion_mask is None else [list(map(bool, m)) for m in completion_mask]
  grams = trie.grams
  ref = reference_planning(rows, grams, table,
                           None if masks is None else _pad_bool(masks, rows))
  dev = _device_occurrences(rows, trie, masks, batch_tokens)
  per_sg = [SGStats(gram=g) for g in grams]
  ref_sets: list[set] = [set() for _ in grams]
  dev_sets: list[set] = [set() for _ in grams]
  for row, s, a, b in ref.occurrences:
    per_sg[s].ref_occurrences += 1
    ref_sets[s].update((row, t) for t in range(a, b) if ref.mask[row, t])
  for row, s, a, b in dev:
    per_sg[s].dev_occurrences += 1
    dev_sets[s].update((row, t) for t in range(a, b))
  for s, st in enumerate(per_sg):
    st.ref_tokens, st.dev_tokens = len(ref_sets[s]), len(dev_sets[s])
    st.both_tokens = len(ref_sets[s] & dev_sets[s])
  ref_all = set().union(*ref_sets)
  dev_all = set().union(*dev_sets)
  mismatches = []
  for row, t in sorted(ref_all ^ dev_all)[:max_examples]:
    ids = rows[row]
    context = b"".join(table[x] or b"" for x in ids[max(0, t - 6):t + 7]).decode("utf-8", "replace")
    mismatches.append({
        "row": row, "token": t, "token_text": (table[ids[t]] or b"").decode("utf-8", "replace"),
        "ref": [grams[s] for s in range(len(grams)) if (row, t) in ref_sets[s]],
        "dev": [grams[s] for s in range(len(grams)) if (row, t) in dev_sets[s]],
        "context": context})
  return AuditReport(rows=len(rows), tokens=sum(len(r) for r in rows), ref_tokens=len(ref_all),
                     dev_tokens=len(dev_all), both_tokens=len(ref_all & dev_all), per_sg=per_sg,
                     mismatches=mismatches)


def _pad_bool(masks: list[list[bool]], rows: list[list[int]]) -> np.ndarray:
  out = np.zeros((len(rows), max((len(r) for r in rows), default=0)), bool)
  for i, m in enumerate(masks):
    if len(m) != len(rows[i]):
      raise ValueError(f"completion_mask row {i} has {len(m)} entries for {len(rows[i])} tokens")
    out[i, :len(m)] = m
  return out
