"""The character-level reference matcher: DESIGN.md semantics, vs a naive spec transcription."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from hicra_jax.planning import decode_utf8, reference_occurrences, reference_planning

APOS = ("'", "\u2019")


def naive_occurrences(text: str, grams) -> list[tuple[int, int, int]]:
  """DESIGN.md, "Matching semantics of Strategic Grams", transcribed char by char."""
  out = []
  for s, g in enumerate(grams):
    first_alpha = next((i for i, c in enumerate(g) if c.isalpha()), -1)
    for i in range(len(text) - len(g) + 1):
      ok = True
      for j, c in enumerate(g):
        t = text[i + j]
        if j == first_alpha:
          ok = t in (c, c.lower(), c.upper())
        elif c in APOS:
          ok = t in APOS
        else:
          ok = t == c
        if not ok:
          break
      if not ok:
        continue
      if g[0].isalnum() and i > 0 and text[i - 1].isalnum():
        continue
      end = i + len(g)
      if g[-1].isalnum() and end < len(text) and text[end].isalnum():
        continue
      out.append((i, end, s))
  return sorted(out)


_ALPHABET = "aAbBsS1 ,.?'\u2019#-\n\u00e9\u4e2d"
_GRAMS = st.lists(st.text(alphabet=_ALPHABET, min_size=1, max_size=4).map(str.strip).filter(bool),
                  min_size=1, max_size=4, unique=True)


@given(text=st.text(alphabet=_ALPHABET, max_size=40), grams=_GRAMS)
def test_reference_equals_naive_transcription(text, grams):
  # Grams may differ only in case/apostrophe (normalize_grams would merge them): no matter.
  assert reference_occurrences(text, grams) == naive_occurrences(text, grams)


@given(data=st.binary(max_size=40))
def test_decode_utf8_matches_python_and_offsets(data):
  text, starts, valid = decode_utf8(data)
  assert text == data.decode("utf-8", "replace")
  assert len(starts) == len(text) + 1 and starts[0] == 0 and starts[-1] == len(data)
  for c, ch in enumerate(text):
    piece = data[starts[c]:starts[c + 1]]
    if valid[c]:
      assert piece.decode("utf-8") == ch
    else:
      assert ch == "\ufffd" and piece.decode("utf-8", "replace").startswith("\ufffd")


def test_semantics_examples():
  grams = ["but", "but wait", "let's", "## step", "hmm,", "what am i missing?", "x2"]

  def found(text):
    return [(text[a:b], grams[s]) for a, b, s in reference_occurrences(text, grams)]

  assert found("But wait, let\u2019s see") == [("But", "but"), ("But wait", "but wait"),
                                                  ("let\u2019s", "let's")]
  assert found("about butter, rebut") == []                 # letters at either edge
  # Digits block a match, "_" does not.
  assert found("but2 2but _but_ (but)") == [("but", "but"), ("but", "but")]
  assert found("### step, ## steps, ## Step1 ##step") == [("## step", "## step")]
  assert found("hmm,, uhmm, Hmm,x") == [("hmm,", "hmm,"), ("Hmm,", "hmm,")]
  assert found("What am i missing?? What am I missing?") == [
      ("What am i missing?", "what am i missing?")]         # only the first letter is case-free
  assert found("LET'S BUT") == []
  assert found("ax2 x2y x2") == [("x2", "x2")]
  assert found("but\u00e9 \u00e9but but\u4e2d \u2019but\u2019") == [("but", "but")]


# A tiny byte-level vocabulary: ids are indices.
TABLE = [b"Let", b"'s", b" try", b" ", b"x", b"\xe2", b"\x89\xa5", b"but", b" but", b",", b"\n",
         None, b"\xc3", b"\xa9", b"Bu", b"t"]


def test_reference_planning_tokens_counts_and_breaks():
  grams = ["let's", "but", "let's try"]
  rows = [[0, 1, 2, 8, 9],      # "Let's try but,"
          [4, 7, 3, 14, 15],    # "xbut Bu|t": "xbut" is no occurrence; "But" split over 2 tokens
          [7, 11, 7, 10, 7]]    # id 11 is a hole: it breaks the text like padding
  res = reference_planning(rows, grams, TABLE)
  assert res.mask.tolist() == [[True, True, True, True, False],
                               [False, False, False, True, True],
                               [True, False, True, False, True]]
  assert res.counts.tolist() == [[1, 1, 1], [0, 1, 0], [0, 3, 0]]
  assert (0, 2, 0, 3) in res.occurrences and (1, 1, 3, 5) in res.occurrences
  # A completion mask breaks the text too: "but" then "but" would be "butbut" otherwise.
  res = reference_planning([[7, 7, 7]], ["but"], TABLE, np.array([[True, False, True]]))
  assert res.mask.tolist() == [[True, False, True]] and res.counts.tolist() == [[2]]
  res = reference_planning([[7, 7]], ["but"], TABLE)
  assert res.mask.tolist() == [[False, False]]


def test_reference_planning_characters_split_across_tokens():
  # "\u2265" (>=, bytes e2 89 a5) split over two tokens is not a letter: "but" after it matches.
  res = reference_planning([[5, 6, 7], [12, 13, 7], [7, 12, 13], [7, 12, 9]], ["but"], TABLE)
  # "\u00e9" (c3 a9) split over two tokens IS a letter: no match next to it, either side;
  # a lone c3 before "," is U+FFFD, not a letter.
  assert res.mask.tolist() == [[False, False, True], [False, False, False],
                               [False, False, False], [True, False, False]]
