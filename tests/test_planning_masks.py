"""Device planning masks / SG counts vs a naive pure-Python implementation of the same rule.

The trie is built for the real SmolLM2 tokenizer (its 49k byte-level vocabulary
splits many Unicode characters into byte tokens, which exercises the boundary
decoding). Sequences are random token ids mixing trie spans (at the first and
last position, adjacent, nested), letters, punctuation, split UTF-8 bytes,
unknown ids and masked-out padding. Shapes are fixed so one compile serves all
hypothesis examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hicra_jax.planning import (SGTrie, decode_utf8, planning_mask, planning_mask_and_counts,
                                reference_planning, sg_match_table, sg_occurrences,
                                token_bytes_table)

GRAMS = ["but", "but wait", "wait", "let's", "let's try", "## step", "hmm,", "so", "so, yes",
         "does this make sense?", "is there a simpler way?", "we can", "step-by-step reasoning",
         "alternatively", "i need to re-evaluate", "that can't be right", "wait, no"]
N, T = 4, 40   # hypothesis batches
W = 48         # width of the other tests' batches (and of padded hypothesis batches)


@pytest.fixture(scope="module")
def setup(smollm2_tokenizer):
  tok = smollm2_tokenizer
  trie = SGTrie.build(GRAMS, tok)
  table = token_bytes_table(tok)
  spans = [tuple(int(x) for x in row[:n]) for row, n in
           zip(np.asarray(trie.span_tokens), np.asarray(trie.span_len))]
  entries = [[(int(s), bool(l), bool(r)) for s, l, r in zip(*e) if s >= 0] for e in zip(
      np.asarray(trie.entry_sg), np.asarray(trie.entry_left), np.asarray(trie.entry_right))]
  enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
  pieces = [enc(s) for s in ["x", "Ab", "9", " ", "\n\n", ",", "?", "(", "**", "'", "\u2019",
                             "\u00e9", "\u2265", "\u4e2d", "\U0001f600", " but", "Let"]]
  byte_tokens = [i for i, b in enumerate(table) if b is not None and len(b) == 1 and b[0] >= 0x80]
  return tok, trie, table, spans, entries, pieces, byte_tokens


def naive(rows, masks, table, spans, entries, num_grams):
  """The token-level rule of the trie, one window and one span at a time."""
  n, t = len(rows), len(rows[0])
  out_mask = np.zeros((n, t), bool)
  counts = np.zeros((n, num_grams), np.int32)
  for i, (row, m) in enumerate(zip(rows, masks)):
    valid = [bool(m[j]) and 0 <= row[j] < len(table) and table[row[j]] is not None
             for j in range(t)]
    # Character just before / after each token, from the decoded segment.
    before_alnum, after_alnum = [False] * t, [False] * t
    j = 0
    while j < t:
      if not valid[j]:
        j += 1
        continue
      k = j
      while k < t and valid[k]:
        k += 1
      data = b"".join(table[row[x]] for x in range(j, k))
      text, starts, _ = decode_utf8(data)
      pos = np.cumsum([0] + [len(table[row[x]]) for x in range(j, k)])
      char_at = lambda b: text[int(np.searchsorted(starts, b, "right")) - 1]  # noqa: E731
      for x in range(j, k):
        b0, b1 = pos[x - j], pos[x - j + 1]
        before_alnum[x] = b0 > 0 and char_at(b0 - 1).isalnum()
        after_alnum[x] = b1 < len(data) and char_at(b1).isalnum()
      j = k
    for p in range(t):
      for span, ents in zip(spans, entries):
        q = p + len(span) - 1
        if q >= t or any(not valid[x] or row[x] != span[x - p] for x in range(p, q + 1)):
          continue
        for s, need_left, need_right in ents:
          if need_left and before_alnum[p]:
            continue
          if need_right and after_alnum[q]:
            continue
          out_mask[i, p:q + 1] = True
          counts[i, s] += 1
  return out_mask, counts


@st.composite
def batches(draw, setup_):
  _, _, table, spans, _, pieces, byte_tokens = setup_
  rows, masks = [], []
  for _ in range(N):
    row = []
    while len(row) < T:
      kind = draw(st.integers(0, 5))
      if kind <= 1:
        row += list(draw(st.sampled_from(spans)))
      elif kind == 2:
        row += list(draw(st.sampled_from(pieces)))
      elif kind == 3:
        row += [draw(st.sampled_from(byte_tokens))]
      elif kind == 4:
        row += [draw(st.sampled_from([-1, len(table) + 3, 0, 1, 2]))]
      else:
        row += [draw(st.integers(0, len(table) - 1))]
    row = row[:T]
    mask = [True] * T
    if draw(st.booleans()):  # right padding
      cut = draw(st.integers(0, T))
      mask[cut:] = [False] * (T - cut)
    for _ in range(draw(st.integers(0, 2))):  # holes anywhere
      mask[draw(st.integers(0, T - 1))] = False
    rows.append(row)
    masks.append(mask)
  return np.asarray(rows, np.int32), np.asarray(masks, bool)


def _given_batches(f):
  # `setup` is a fixture; hypothesis draws through st.data() once it is available.
  return given(data=st.data())(f)


@_given_batches
def test_device_equals_naive_rule_and_is_sound(setup, data):
  _, trie, table, spans, entries, _, _ = setup
  ids, cm = data.draw(batches(setup))
  mask, counts = planning_mask_and_counts(jnp.asarray(ids), trie, jnp.asarray(cm))
  want_mask, want_counts = naive(ids.tolist(), cm.tolist(), table, spans, entries, len(GRAMS))
  np.testing.assert_array_equal(np.asarray(mask), want_mask)
  np.testing.assert_array_equal(np.asarray(counts), want_counts)
  # Soundness: whatever the ids, the device never marks a token the character-level
  # reference does not, nor counts more occurrences.
  ref = reference_planning(ids, trie.grams, table, cm)
  assert not (np.asarray(mask) & ~ref.mask).any()
  assert (np.asarray(counts) <= ref.counts).all()


def _pad(rows):
  """(ids i32[N, W], mask bool[N, W]) for up to N rows of up to W tokens."""
  assert len(rows) <= N and max(map(len, rows)) <= W, "test rows must fit the fixed test shape"
  arr = np.zeros((N, W), np.int32)
  cm = np.zeros((N, W), bool)
  for i, r in enumerate(rows):
    arr[i, :len(r)], cm[i, :len(r)] = r, True
  return arr, cm


def test_canonical_text_equals_reference(setup):
  tok, trie, table, *_ = setup
  texts = ["Let's try it. But wait, no: hmm, so, yes! ## Step 1. Alternatively,so,Wait, no",
           "Does this make sense? Is there a simpler way?\n\nbut wait",
           "(but) **but** \"but\" but\u2019s butter about \u2265but \u00e9but but\u4e2d",
           "I need to re-evaluate; that can\u2019t be right. Step-by-step reasoning, we can"]
  arr, cm = _pad([tok.encode(t, add_special_tokens=False) for t in texts])
  ref = reference_planning(arr, trie.grams, table, cm)
  mask, counts = planning_mask_and_counts(arr, trie, cm)
  np.testing.assert_array_equal(np.asarray(mask), ref.mask)
  np.testing.assert_array_equal(np.asarray(counts), ref.counts)
  assert ref.counts.sum() >= 25 and ref.mask.sum() > 40


def test_first_last_adjacent_nested(setup):
  tok, trie, *_ = setup
  enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
  ids = enc("But wait") + enc(" wait") + enc(" so,") + enc(" yes")
  arr, cm = _pad([ids, ids])
  cm[1, 1] = False  # padding is never planning, even inside an occurrence: the text breaks
  mask, counts = (np.asarray(x) for x in planning_mask_and_counts(arr, trie, cm))
  assert mask[0, :len(ids)].all()  # every token overlaps some occurrence, first to last
  assert not mask[0, len(ids):].any()
  c = dict(zip(GRAMS, counts[0].tolist()))
  assert (c["but"], c["but wait"], c["wait"], c["so"], c["so, yes"]) == (1, 1, 2, 1, 1)
  assert mask[1, 0] and not mask[1, 1] and counts[1, GRAMS.index("but wait")] == 0


def test_jit_and_no_jit_agree(setup):
  _, trie, table, spans, *_ = setup
  rng = np.random.default_rng(0)
  rows = np.concatenate([np.asarray(spans[i] + (0,) * 8)[:8]
                         for i in rng.integers(0, len(spans), N * W // 8)]).reshape(N, W)
  cm = rng.random(rows.shape) > 0.1
  jitted = planning_mask_and_counts(rows, trie, cm)
  with jax.disable_jit():
    plain = planning_mask_and_counts(rows, trie, cm)
  for a, b in zip(jitted, plain):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.asarray(jitted[1]).sum() > 0


@_given_batches
def test_split_and_padding_invariance(setup, data):
  _, trie, *_ = setup
  ids, cm = data.draw(batches(setup))
  mask, counts = (np.asarray(x) for x in planning_mask_and_counts(ids, trie, cm))
  # Separate functions agree with the fused one.
  np.testing.assert_array_equal(np.asarray(planning_mask(ids, trie, cm)), mask)
  np.testing.assert_array_equal(np.asarray(sg_occurrences(ids, trie, cm)), counts)
  # The batch split in two at row k, each part padded with W - T masked columns holding
  # real ids and with fully masked rows back to N rows.
  k = data.draw(st.integers(1, N - 1))
  wide = np.concatenate([ids, ids[:, :W - T]], axis=1)
  wide_cm = np.concatenate([cm, np.zeros((N, W - T), bool)], axis=1)
  parts = []
  for lo, hi in ((0, k), (k, N)):
    part, part_cm = np.roll(wide, -lo, axis=0), np.roll(wide_cm, -lo, axis=0)
    part_cm[hi - lo:] = False
    m, c = (np.asarray(x) for x in planning_mask_and_counts(part, trie, part_cm))
    assert not m[hi - lo:].any() and not c[hi - lo:].any() and not m[:, T:].any()
    parts.append((m[:hi - lo, :T], c[:hi - lo]))
  np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), mask)
  np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), counts)
  # Masked-out positions may hold any id: the result does not change.
  scrambled = np.where(cm, ids, (ids * 7 + 3) % trie.vocab_size)
  np.testing.assert_array_equal(np.asarray(planning_mask(scrambled, trie, cm)), mask)


def test_match_table_and_errors(setup):
  tok, trie, *_ = setup
  ids, cm = _pad([tok.encode("but wait, hmm, so", add_special_tokens=False)])
  table = np.asarray(sg_match_table(ids, trie, cm))
  assert table.shape == (N, W, trie.max_len, trie.entry_sg.shape[1])
  found = sorted((int(t), int(l) + 1, trie.grams[int(table[0, t, l, k])])
                 for t, l, k in zip(*np.nonzero(table[0] >= 0)))
  assert [g for *_, g in found] == ["but", "but wait", "wait", "hmm,", "so"]
  assert (table[1:] < 0).all()
  with pytest.raises(ValueError, match="token_ids must be i32"):
    planning_mask(ids[0], trie)
  with pytest.raises(ValueError, match="completion_mask shape"):
    planning_mask(ids, trie, np.ones((2, 3), bool))
