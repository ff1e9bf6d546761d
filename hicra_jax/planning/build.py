"""Building an SGTrie's arrays: harvest the token spans a tokenizer really produces for each SG.

Matching the ids of a phrase tokenized alone misses most occurrences: in running
text a byte-level BPE tokenizes "Let's" as "Let" + "'s" at a line start,
" Let" + "'s" after a space, "(L" + "et" + "’s" after a bracket (Qwen), and a
final "?" merges with the following newlines ("?\\n\\n"). So each spelling
variant v of each SG (first letter in either case x straight/curly apostrophes)
is tokenized inside many contexts and the token span covering it is recorded:

* left contexts X (in "X v\\n"): start of text, whitespace runs, every ASCII
  punctuation character, common Unicode punctuation, markdown/LaTeX openers, and
  every string that some vocabulary token puts in front of a prefix of v (a
  token "(L" gives X = "(");
* right contexts Y (in "\\nv Y"): end of text, whitespace, punctuation, and every
  string some vocabulary token puts after a suffix of v (a token "?\\n\\n" gives
  Y = "\\n\\n");
* joint contexts (X v Y) for a small grid and for tokens that contain all of v.

To keep this cheap (a few seconds per tokenizer), contexts are first tried on
the variant's first (last) word only; contexts that tokenize that word the same
way form a class, and the whole variant is then tokenized in one representative
context per class. Left and right variations are combined (the tokens a left
context changes are replaced in the right variants and vice versa), so an
unusual left context next to an unusual right context is covered without
tokenizing every pair.

Every candidate span is then checked on its own bytes by the reference matcher
(`reference.py`), for all SGs: an occurrence is an entry of the span when it
starts in the first token and ends in the last, with its boundary characters
inside the span decidable from the span alone; a boundary at the span's edge
becomes a device-side check of the neighbouring token. Patterns are therefore
sound by construction (they never mark a token the reference would not),
whatever context they came from; the contexts only decide recall.
"""

from __future__ import annotations

import bisect
import collections
import string
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hicra_jax.planning.grams import as_gram_tuple, spelling_variants
from hicra_jax.planning.hashing import HASH_OFFSET, fmix32, hash_step, key_hashes, slot_index
from hicra_jax.planning.reference import iter_matches
from hicra_jax.planning.tokens import (alnum_bitmap, decode_utf8, table_fingerprint,
                                      token_bytes_table, token_edges)

_PUNCT = [c for c in string.punctuation]
_UNICODE_PUNCT = list("\u201c\u201d\u2018\u2019\u00ab\u00bb\u2039\u203a\u201e\u201a\u2014\u2013"
                      "\u2010\u2011\u2212\u2026\u00b7\u2022\u25cf\u25aa\u2192\u2190\u21d2\u21d4"
                      "\u2234\u2235\u00d7\u00f7\u00b1\u2264\u2265\u2260\u2248\u221e\u00b0\u00a7"
                      "\u00b6\u2020\u2032\u2033\u3001\u3002\uff0c\uff1a\uff1b\uff01\uff1f\uff08"
                      "\uff09\u3010\u3011\u300c\u300d\u300a\u300b\u00bf\u00a1\u2705\u274c\u2713"
                      "\u2714\u2717\u27a4\U0001f449\U0001f914\u00a0\u200b\u3000\u2003\u2009")
_SPACES = [" ", "\n", "\n\n", "\n\n\n", "\t", "  ", "   ", " \n", "\n ", "\r\n", "\r\n\r\n",
           " \n\n", "\n\t"]
GENERIC_LEFT = tuple(dict.fromkeys(
    [""] + _SPACES + _PUNCT + _UNICODE_PUNCT
    + [" " + c for c in _PUNCT]
    + ["**", "***", "__", "##", "###", "####", "#####", "- ", "* ", "+ ", "1. ", "1) ", "a) ",
       "> ", "\\(", "\\[", "$$", "\\text{", "\\textbf{", "\\mathrm{", "**Step 1:** ", "Step 1: ",
       "---\n", "| ", "...", "..", "```\n", "``", "''", "\"'", "('", "(\"", "[\"", "'(", "*(",
       "(*", "**(", "<", "</", "/>", "->", "=>", "-->", ":**", "**:", ".**", "?**", "!**",
       "x\"", "x(", "x'", "x*", "x-", "x/", "x_", "x\u2019", "x\u201c", "1\"", "1(", "$x$ ",
       "\\\\", "\\n", "\\t", "%", "{{", "}}", "\")", "\u201c\u2018", "\u2018\u201c"]))
GENERIC_RIGHT = tuple(dict.fromkeys(
    [""] + _SPACES + _PUNCT + _UNICODE_PUNCT
    + [c + " " for c in _PUNCT] + [c + "\n" for c in _PUNCT] + [c + "\n\n" for c in _PUNCT]
    + [c + c for c in _PUNCT]
    + ["**", "***", "**\n", "**\n\n", ":**", "?**", ".**", "...", "\u2026\n", "?\"", "?\u201d",
       ".\"", ".\u201d", ",\"", ",\u201d", "\")", "\u201d)", ")\n", ").", "),", ")?", ")\n\n",
       "$.", "$,", " $", "\\)", "\\]", "}", "}$", "?!", "!?", "??", "?.", "?,", "?)", "?:",
       ":\n\n", ":\n", ". ", ", ", "; ", "? ", "! ", "- ", " -", " (", " [", " x", " 1", "\t\n",
       "\n1.", "\n-", "\n**", "\n\n**", "\n\n#", "<", "</", "x"]))
SHORT_RIGHT = ("", " ", "\n", "\n\n", ",", ".", "?", "!", ":", ";", ")", "]", "}", "'", "\u2019",
               "\"", "\u201d", "*", "**", "-", "$", "\\", "_", "/", "\t", "\u2014", "\u2026",
               "x")
JOINT_LEFT = ("", " ", "\n", "(", "**", "\"", "\u201c", "'", "\u2018", "$")
JOINT_RIGHT = ("", " ", ",", ".", "?", ":", "\n\n", "!", ")", "**", "\"", "\u201d", "'", "\u2019",
               "?\n\n", ".\n\n")
BASE_LEFT = "\n"
BASE_RIGHT = "\n"


def build_trie_arrays(grams, tokenizer, *, extra_left: Iterable[str] = (),
                      extra_right: Iterable[str] = (), batch_size: int = 8192,
                      table_load: float = 0.5) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The host arrays and metadata of an `SGTrie` (see the module docstring for the method).

  `SGTrie.build` calls this and places the result on the default device.

  Args:
    grams: a preset name ("paper"), an SG file path, or a sequence of phrases.
    tokenizer: a Hugging Face fast byte-level BPE tokenizer.
    extra_left, extra_right: more context strings to tokenize each variant in.
    batch_size: strings per tokenizer batch call.
    table_load: maximum load factor of the hash table.

  Returns:
    (arrays, meta): numpy arrays named as the `SGTrie` leaves, and the fields of
    its `TrieMeta`.
  """
  grams = as_gram_tuple(grams)
  table = token_bytes_table(tokenizer)
  added = set(tokenizer.backend_tokenizer.get_added_tokens_decoder())
  vocab = _VocabIndex(table, added)
  harvest = _Harvest(table, tokenizer, batch_size)
  variants = [v for g in grams for v in spelling_variants(g)]
  # Stage 1: contexts that change how the first (last) word is tokenized, per word.
  # A word is keyed with what follows (precedes) it inside the variant: a space, or
  # nothing (single-word variants), since a punctuation edge merges with it.
  left_ctx: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
  right_ctx: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
  for v in variants:
    xs, ys = vocab.left_contexts(v), vocab.right_contexts(v)
    left_ctx[_first_word(v)] |= xs | set(extra_left)
    right_ctx[_last_word(v)] |= ys | set(extra_right)
    # A punctuation edge sits in a punctuation run of unbounded length, whose BPE
    # depends on the characters further out: one more level of context.
    if not v[0].isalnum():
      left_ctx[_first_word(v)] |= {c + x for x in xs for c in _PUNCT + _UNICODE_PUNCT}
    if not v[-1].isalnum():
      right_ctx[_last_word(v)] |= {y + c for y in ys for c in _PUNCT + ["\n", " "]}
  left_reps = {w: harvest.context_classes(w, set(GENERIC_LEFT) | xs, left=True)
               for w, xs in left_ctx.items()}
  right_reps = {w: harvest.context_classes(
      w, set(GENERIC_RIGHT if not w[0][-1].isalnum() else SHORT_RIGHT) | ys, left=False)
                for w, ys in right_ctx.items()}
  # Stage 2: each variant in one representative context of each class, plus joint contexts.
  for v in variants:
    joints = set(vocab.joint_contexts(v))
    if " " not in v:
      joints |= {(x, y) for x in JOINT_LEFT for y in JOINT_RIGHT}
    harvest.add_variant(v, left_reps[_first_word(v)], right_reps[_last_word(v)], sorted(joints))
  spans = harvest.spans()
  entries = span_entries(spans, table, grams)
  return _assemble(entries, grams, table, tokenizer, table_load)


def _first_word(v: str) -> tuple[str, str]:
  """(first word, what follows it in v: " " or "")."""
  return (v[:v.index(" ")], " ") if " " in v else (v, "")


def _last_word(v: str) -> tuple[str, str]:
  """(last word, what precedes it in v: " " or "")."""
  return (v[v.rindex(" ") + 1:], " ") if " " in v else (v, "")


class _VocabIndex:
  """Vocabulary token strings, sorted forwards and reversed, for context discovery."""

  def __init__(self, table: Sequence[bytes | None], added: set[int]):
    strings = []
    for i, b in enumerate(table):
      if b is None or i in added or not b:
        continue
      try:
        strings.append(b.decode("utf-8"))
      except UnicodeDecodeError:
        continue
    self.fwd = sorted(set(strings))
    self.rev = sorted(s[::-1] for s in self.fwd)
    self.joined = "\x00" + "\x00".join(self.fwd) + "\x00"
    self._cache: dict[tuple[str, str], frozenset[str]] = {}

  def _with_prefix(self, sorted_list: list[str], prefix: str) -> list[str]:
    lo = bisect.bisect_left(sorted_list, prefix)
    hi = bisect.bisect_left(sorted_list, prefix + "\U0010ffff")
    return sorted_list[lo:hi]

  def _before(self, piece: str) -> frozenset[str]:
    """X != "" with a token X + piece, X[-1] not alnum when piece[0] is."""
    key = ("before", piece)
    if key not in self._cache:
      out = set()
      for r in self._with_prefix(self.rev, piece[::-1]):
        x = r[len(piece):][::-1]
        if x and (not piece[0].isalnum() or not x[-1].isalnum()):
          out.add(x)
      self._cache[key] = frozenset(out)
    return self._cache[key]

  def _after(self, piece: str) -> frozenset[str]:
    """Y != "" with a token piece + Y, Y[0] not alnum when piece[-1] is."""
    key = ("after", piece)
    if key not in self._cache:
      out = set()
      for s in self._with_prefix(self.fwd, piece):
        y = s[len(piece):]
        if y and (not piece[-1].isalnum() or not y[0].isalnum()):
          out.add(y)
      self._cache[key] = frozenset(out)
    return self._cache[key]

  def left_contexts(self, v: str) -> set[str]:
    """X such that some token is X + v[:k] (k >= 1), X non-empty, boundary-compatible."""
    return set().union(*(self._before(v[:k]) for k in range(1, len(v) + 1)))

  def right_contexts(self, v: str) -> set[str]:
    """Y such that some token is v[j:] + Y (j < len(v)), Y non-empty, boundary-compatible."""
    return set().union(*(self._after(v[j:]) for j in range(len(v))))

  def joint_contexts(self, v: str) -> set[tuple[str, str]]:
    """(X, Y) such that some token is X + v + Y with both non-empty."""
    out = set()
    start = self.joined.find(v)
    while start >= 0:
      a = self.joined.rfind("\x00", 0, start) + 1
      b = self.joined.find("\x00", start + len(v))
      x, y = self.joined[a:start], self.joined[start + len(v):b]
      if x and y and "\x00" not in x:
        out.add((x, y))
      start = self.joined.find(v, start + 1)
    return out


Placed = tuple[tuple[int, int, int], ...]  # (token id, start, end) in bytes relative to v


class _Harvest:
  """Tokenizes variants in contexts and collects the covering token spans."""

  def __init__(self, table, tokenizer, batch_size: int):
    self.table = table
    self.backend = tokenizer.backend_tokenizer
    self.batch_size = batch_size
    self.jobs: list[tuple[str, int, int]] = []     # (text, v start byte, v end byte)
    self.variants: list[tuple[int, int, int]] = []  # job index ranges: base, lefts | rights

  def _encode(self, texts: Sequence[str]) -> list[list[int]]:
    out = []
    for i in range(0, len(texts), self.batch_size):
      enc = self.backend.encode_batch(list(texts[i:i + self.batch_size]), add_special_tokens=False)
      out.extend(e.ids for e in enc)
    return out

  def _place(self, text: str, ids: Sequence[int], b0: int, b1: int) -> Placed | None:
    """Tokens overlapping bytes [b0, b1) of `text`, with offsets relative to b0."""
    pieces = [self.table[t] or b"" for t in ids]
    if b"".join(pieces) != text.encode("utf-8"):
      return None  # the normalizer changed the text: nothing to read off
    placed, pos = [], 0
    for t, p in zip(ids, pieces):
      if pos < b1 and b0 < pos + len(p):
        placed.append((t, pos - b0, pos + len(p) - b0))
      pos += len(p)
    return tuple(placed)

  def context_classes(self, word: tuple[str, str], contexts: set[str], *,
                      left: bool) -> list[str]:
    """One representative context per distinct tokenization of a word in a context.

    `word` is (text, neighbour inside the variant): the word is tokenized as
    context + text + neighbour (left) or neighbour + text + context (right), the
    neighbour standing for the rest of the variant (the base context if none).
    """
    text_, inner = word
    contexts = sorted(contexts, key=lambda c: (len(c), c))
    if left:
      pad = inner or BASE_RIGHT
      texts = [c + text_ + pad for c in contexts]
      offsets = [len(c.encode("utf-8")) for c in contexts]
    else:
      pad = inner or BASE_LEFT
      texts = [pad + text_ + c for c in contexts]
      offsets = [len(pad.encode("utf-8"))] * len(contexts)
    size = len(text_.encode("utf-8"))
    reps: dict[Placed, str] = {}
    for c, text, ids, p0 in zip(contexts, texts, self._encode(texts), offsets):
      placed = self._place(text, ids, p0, p0 + size)
      if placed is not None:
        reps.setdefault(placed, c)
    return list(reps.values())

  def add_variant(self, v: str, lefts: Sequence[str], rights: Sequence[str],
                  joints: Sequence[tuple[str, str]]) -> None:
    vb = len(v.encode("utf-8"))
    first = len(self.jobs)
    for x, y in ([(BASE_LEFT, BASE_RIGHT)] + [(x, BASE_RIGHT) for x in lefts]
                 + [(BASE_LEFT, y) for y in rights] + list(joints)):
      p = len(x.encode("utf-8"))
      self.jobs.append((x + v + y, p, p + vb))
    self.variants.append((first, first + 1 + len(lefts), first + 1 + len(lefts) + len(rights)))

  def spans(self) -> set[tuple[int, ...]]:
    texts = list(dict.fromkeys(t for t, _, _ in self.jobs))
    ids_of = dict(zip(texts, self._encode(texts)))
    placements = [self._place(t, ids_of[t], b0, b1) for t, b0, b1 in self.jobs]
    spans = {tuple(t for t, _, _ in p) for p in placements if p}
    for first, lo, mid in self.variants:
      base = placements[first]
      if not base:
        continue
      lefts = {p for p in placements[first + 1:lo] if p and p != base}
      rights = {p for p in placements[lo:mid] if p and p != base}
      for left in lefts:
        for right in rights:
          combined = combine(base, left, right)
          if combined:
            spans.add(tuple(t for t, _, _ in combined))
    return spans


def combine(base: Placed, left: Placed, right: Placed) -> Placed | None:
  """Base span with its left part replaced as in `left` and its right part as in `right`.

  `left` must share a suffix with `base` and `right` a prefix; the replaced
  regions must not overlap. Returns None when they cannot be combined.
  """
  m = 0
  while m < min(len(left), len(base)) and left[-1 - m] == base[-1 - m]:
    m += 1
  n = 0
  while n < min(len(right), len(base)) and right[n] == base[n]:
    n += 1
  if m == 0 or n == 0:
    return None
  lo, hi = len(base) - m, n  # base[lo:hi] survives in both
  if lo > hi:
    return None
  return left[:len(left) - m] + base[lo:hi] + right[n:]


def span_entries(spans: Iterable[tuple[int, ...]], table: Sequence[bytes | None],
                 grams: Sequence[str]) -> dict[tuple[int, ...], list[tuple[int, bool, bool]]]:
  """The occurrences each span is the minimal covering of, checked on the span's bytes alone.

  Returns:
    span -> [(sg, needs_left_check, needs_right_check)], one entry per occurrence (an SG
    can occur twice in one span); spans without entries dropped.
  """
  spans = [s for s in sorted(set(spans)) if all(table[t] for t in s)]
  datas = [b"".join(table[t] for t in s) for s in spans]
  # NUL separators: ASCII, so no UTF-8 sequence runs across two spans.
  text, starts, valid = decode_utf8(b"\x00".join(datas))
  byte_base = np.cumsum([0] + [len(d) + 1 for d in datas])[:-1]
  char_base = np.searchsorted(starts, byte_base)  # each span starts a character
  out: dict[tuple[int, ...], list[tuple[int, bool, bool]]] = collections.defaultdict(list)
  for cs, ce, s in iter_matches(text, tuple(grams)):
    gram = grams[s]
    k = int(np.searchsorted(char_base, cs, side="right")) - 1
    span, total = spans[k], len(datas[k])
    b0, b1 = starts[cs] - byte_base[k], starts[ce] - byte_base[k]
    if not (b0 < len(table[span[0]]) and b1 > total - len(table[span[-1]])):
      continue  # not the minimal covering of this occurrence
    need_left = need_right = False
    if gram[0].isalnum():
      if b0 == 0:
        need_left = True
      elif not valid[cs - 1]:
        continue  # the character before depends on bytes outside the span
    if gram[-1].isalnum():
      if b1 == total:
        need_right = True
      elif not valid[ce]:
        continue
    out[span].append((s, need_left, need_right))
  return dict(out)


def window_hashes(span_tokens: np.ndarray, span_len: np.ndarray, seed: int) -> np.ndarray:
  """Rolling hash u32[U] of each padded span i32[U, W], as the device computes it."""
  h = np.full(span_tokens.shape[0], seed, np.uint32)
  for j in range(span_tokens.shape[1]):
    nxt = hash_step(h, span_tokens[:, j].astype(np.int64).astype(np.uint32))
    h = np.where(j < span_len, nxt, h)
  return h


def perfect_hash(a: np.ndarray, b: np.ndarray, load: float,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Hash-and-displace table: key i goes to slot fmix32(a[i] ^ disp[b[i] mod B]) mod M, no
  collisions (a must be distinct).

  Returns:
    (slots i32[num_slots] key index or -1, disp u32[num_buckets]), both lengths powers of
    two.
  """
  u = len(a)
  size = 1 << max(4, int(np.ceil(np.log2(max(1, u) / load))))
  nb = 1 << max(0, int(np.ceil(np.log2(max(1, u) / 2))))
  slots = np.full(size, -1, np.int32)
  disp = np.zeros(nb, np.uint32)
  buckets = collections.defaultdict(list)
  for i, x in enumerate((b & np.uint32(nb - 1)).tolist()):
    buckets[x].append(i)
  rng = np.random.default_rng(seed)
  for key in sorted(buckets, key=lambda k: (-len(buckets[k]), k)):
    members = np.asarray(buckets[key])
    for attempt in range(1 << 20):
      d = np.uint32(0 if attempt == 0 else rng.integers(1, 1 << 32))
      pos = (fmix32(a[members] ^ d) & np.uint32(size - 1)).astype(np.int64)
      if len(set(pos.tolist())) == len(pos) and (slots[pos] < 0).all():
        slots[pos] = members
        disp[key] = d
        break
    else:
      raise RuntimeError("perfect hashing failed; lower the table load")
  if u and not (slots[slot_index(a, b, disp, size)] == np.arange(u)).all():
    raise RuntimeError("internal error: perfect hash table does not map every key to itself")
  return slots, disp


def _assemble(entries, grams, table, tokenizer,
              table_load: float) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  spans = sorted(entries, key=lambda s: (len(s), s))
  if not spans:
    raise ValueError("no SG occurrence could be tokenized with this tokenizer")
  u = len(spans)
  max_len = max(len(s) for s in spans)
  e = max(len(occurrences) for occurrences in entries.values())
  span_tokens = np.full((u, max_len), -1, np.int32)
  span_len = np.zeros(u, np.int32)
  entry_sg = np.full((u, e), -1, np.int32)
  entry_left = np.zeros((u, e), bool)
  entry_right = np.zeros((u, e), bool)
  for i, s in enumerate(spans):
    span_tokens[i, :len(s)] = s
    span_len[i] = len(s)
    for j, (sg, left, right) in enumerate(sorted(entries[s])):
      entry_sg[i, j], entry_left[i, j], entry_right[i, j] = sg, left, right
  for attempt in range(64):
    seed = (HASH_OFFSET + attempt * 0x9E3779B1) & 0xFFFFFFFF
    a, b = key_hashes(window_hashes(span_tokens, span_len, seed), span_len)
    if len(set(a.tolist())) == u:
      break  # the slot hash identifies a span
  else:
    raise RuntimeError("could not find a collision-free hash seed for the SG spans")
  slots, disp = perfect_hash(a, b, table_load)
  name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
  meta = dict(grams=tuple(grams), max_len=int(max_len), hash_seed=int(seed), tokenizer=str(name),
              fingerprint=table_fingerprint(table))
  arrays = dict(span_tokens=span_tokens, span_len=span_len, slots=slots, disp=disp,
                entry_sg=entry_sg, entry_left=entry_left, entry_right=entry_right,
                alnum_bits=alnum_bitmap(), **token_edges(table))
  return arrays, meta
