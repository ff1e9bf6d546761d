"""The character-level reference matcher: the definition the device masks must reproduce.

Host-side and deliberately simple: every literal spelling of every SG is found
with `str.find` in the decoded text (see `tokens.decode_utf8`), overlapping
occurrences included, and the letter/digit boundary conditions are checked on
the neighbouring characters. A row of token ids is split into segments at
positions outside the completion mask and at ids the vocabulary does not
define; each segment is decoded and matched on its own (a segment edge is a
text start / end). A token is a planning token when its character span
overlaps an occurrence; counts are occurrences per SG (every start position of
every SG).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from hicra_jax.planning.grams import spelling_variants
from hicra_jax.planning.tokens import decode_utf8

_SEP = "\x00"  # joins segments; never inside an SG (normalize_grams rejects it), not alnum


@lru_cache(maxsize=8)
def _literals(grams: tuple[str, ...]) -> tuple[tuple[str, int, bool, bool], ...]:
  """(literal spelling, sg index, needs left boundary, needs right boundary) of every variant."""
  return tuple((lit, s, g[0].isalnum(), g[-1].isalnum())
               for s, g in enumerate(grams) for lit in spelling_variants(g))


def iter_matches(text: str, grams: tuple[str, ...]):
  """Yields (start, end, sg_index) of every occurrence, SG by SG, overlapping ones included.

  Each SG is searched as each of its literal spellings (`spelling_variants`: the
  first letter in either case, each apostrophe straight or curly); an occurrence
  needs a non-alnum character (or the text edge) before / after it where the SG
  starts / ends with a letter or digit.
  """
  n = len(text)
  for lit, s, left, right in _literals(grams):
    size = len(lit)
    pos = text.find(lit)
    while pos >= 0:
      end = pos + size
      if not ((left and pos > 0 and text[pos - 1].isalnum())
              or (right and end < n and text[end].isalnum())):
        yield pos, end, s
      pos = text.find(lit, pos + 1)


def reference_occurrences(text: str, grams: Sequence[str]) -> list[tuple[int, int, int]]:
  """All occurrences of the SGs in a text, character-level.

  Args:
    text: any string.
    grams: an SG set (already normalized: stripped, deduplicated).

  Returns:
    Sorted (start, end, sg_index) character ranges, overlapping occurrences included.
  """
  return sorted(iter_matches(text, tuple(grams)))


@dataclasses.dataclass
class ReferenceResult:
  """Reference planning tokens of a batch.

  Attributes:
    mask: bool[N, T] planning tokens.
    counts: i32[N, Z] occurrences of each SG per row.
    occurrences: (row, sg, first_token, end_token) per occurrence; tokens
      [first_token, end_token) overlap it.
  """
  mask: np.ndarray
  counts: np.ndarray
  occurrences: list[tuple[int, int, int, int]]


def reference_planning(token_ids: Sequence[Sequence[int]] | np.ndarray, grams: Sequence[str],
                       token_bytes: Sequence[bytes | None],
                       completion_mask: np.ndarray | None = None) -> ReferenceResult:
  """Planning tokens and SG counts of token-id rows by the character-level rule.

  Args:
    token_ids: i32[N, T] (or a list of variable-length rows).
    grams: the SG set (normalized).
    token_bytes: `tokens.token_bytes_table(tokenizer)`.
    completion_mask: bool[N, T] or None (all real tokens). Positions outside it,
      and ids outside the vocabulary, break the text and are never planning.

  Returns:
    `ReferenceResult`.
  """
  rows = [list(map(int, r)) for r in token_ids]
  n, t = len(rows), max((len(r) for r in rows), default=0)
  vocab = len(token_bytes)
  segments = []  # (row, token index of each token in the segment)
  for i, row in enumerate(rows):
    cur: list[int] = []
    for j, tok in enumerate(row):
      ok = 0 <= tok < vocab and token_bytes[tok] is not None
      if completion_mask is not None:
        ok = ok and bool(completion_mask[i][j])
      if ok:
        cur.append(j)
      elif cur:
        segments.append((i, cur))
        cur = []
    if cur:
      segments.append((i, cur))
  texts, char_to_byte, tok_byte_ends, tok_nonempty, char_base = [], [], [], [], [0]
  for i, idx in segments:
    pieces = [token_bytes[rows[i][j]] for j in idx]
    data = b"".join(pieces)
    text, starts, _ = decode_utf8(data)
    texts.append(text)
    char_to_byte.append(starts)
    tok_byte_ends.append(np.cumsum([len(p) for p in pieces]))
    tok_nonempty.append(np.asarray([len(p) > 0 for p in pieces]))
    char_base.append(char_base[-1] + len(text) + 1)
  mask = np.zeros((n, t), bool)
  counts = np.zeros((n, len(grams)), np.int32)
  occurrences = []
  big = _SEP.join(texts)
  base = np.asarray(char_base[:-1])
  for start, end, s in iter_matches(big, tuple(grams)):
    k = int(np.searchsorted(base, start, side="right")) - 1
    row, idx = segments[k]
    b0 = char_to_byte[k][start - base[k]]
    b1 = char_to_byte[k][end - base[k]]
    ends = tok_byte_ends[k]
    first = int(np.searchsorted(ends, b0, side="right"))   # first token with end > b0
    last = int(np.searchsorted(ends, b1, side="left"))     # last token with end >= b1
    toks = [j for j, keep in zip(idx[first:last + 1], tok_nonempty[k][first:last + 1]) if keep]
    mask[row, toks] = True
    counts[row, s] += 1
    occurrences.append((row, s, toks[0], toks[-1] + 1))
  occurrences.sort()
  return ReferenceResult(mask=mask, counts=counts, occurrences=occurrences)
