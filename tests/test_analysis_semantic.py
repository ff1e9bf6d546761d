"""Semantic entropy and the conditional entropy after SGs, against hand computations."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hicra_jax.analysis import (conditional_entropy, semantic_entropy, semantic_entropy_jax,
                                sg_conditional_entropy_text, sg_conditional_entropy_tokens,
                                sg_follow_pairs_text, sg_follow_pairs_tokens)

LN2 = math.log(2)


# ------------------------------------------------------------ semantic entropy


def test_semantic_entropy_hand_values():
  assert semantic_entropy(np.array([2, 2], np.int32)) == pytest.approx(LN2, abs=1e-12)
  assert semantic_entropy([1, 1, 1, 1]) == pytest.approx(math.log(4), abs=1e-12)
  assert semantic_entropy([5, 0, 0]) == 0.0
  # Rows summed: [2, 1, 2] / 5 -> -(2 * 0.4 ln 0.4 + 0.2 ln 0.2).
  counts = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 2]], np.int32)
  hand = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
  assert hand == pytest.approx(1.0549201679861442, abs=1e-15)
  assert semantic_entropy(counts) == pytest.approx(hand, abs=1e-12)


def test_semantic_entropy_sums_rows_before_the_entropy():
  # Each row alone has entropy 0; the batch uses two SGs equally: ln 2.
  assert semantic_entropy(np.eye(2, dtype=np.int32)) == pytest.approx(LN2, abs=1e-12)


def test_semantic_entropy_all_zero_is_zero():
  assert semantic_entropy(np.zeros((4, 7), np.int32)) == 0.0
  assert semantic_entropy(np.zeros((7,), np.int32)) == 0.0
  assert semantic_entropy(np.zeros((0, 3), np.int32)) == 0.0
  assert float(semantic_entropy_jax(np.zeros((4, 7), np.int32))) == 0.0


def test_semantic_entropy_rejects_bad_input():
  with pytest.raises(ValueError, match="non-negative"):
    semantic_entropy([1, -1, 3])
  with pytest.raises(ValueError, match=r"\[Z\] or \[N, Z\]"):
    semantic_entropy(np.zeros((2, 2, 2), np.int32))


@given(hnp.arrays(np.int32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.integers(0, 20)))
def test_semantic_entropy_jax_matches_numpy(counts):
  ours = semantic_entropy(counts)
  assert 0.0 <= ours <= math.log(counts.shape[1]) + 1e-9
  assert float(jax.jit(semantic_entropy_jax)(counts)) == pytest.approx(ours, abs=1e-5)
  # Invariant under scaling the counts and permuting the SGs.
  assert semantic_entropy(3 * counts[:, ::-1]) == pytest.approx(ours, abs=1e-12)


# -------------------------------------------------------- conditional entropy


def test_conditional_entropy_hand_value():
  # S=a: G in {x, x, y, y} -> ln 2; S=b: G in {z, z} -> 0; p(a) = 4/6.
  pairs = [("a", "x"), ("a", "x"), ("a", "y"), ("a", "y"), ("b", "z"), ("b", "z")]
  assert conditional_entropy(pairs) == pytest.approx(4 / 6 * LN2, abs=1e-12)
  assert conditional_entropy([]) == 0.0
  # G a function of S -> 0; S constant -> H(G).
  assert conditional_entropy([("a", 1), ("b", 2), ("a", 1)]) == pytest.approx(0.0, abs=1e-12)
  assert conditional_entropy([("s", 1), ("s", 2), ("s", 3)]) == pytest.approx(math.log(3))


def test_follow_pairs_text_hand_example():
  grams = ["let's try", "let's", "let's break this down", "wait"]
  texts = [
      "Let's try x y z. let\u2019s try x y w. Wait, a b.",
      # nested SGs form one occurrence; the last "wait" has < 2 words after it.
      "Let's break this down now ok. wait x",
  ]
  pairs = sg_follow_pairs_text(texts, grams, n=2)
  assert pairs == [
      ("let's try", ("x", "y")),
      ("let's try", ("x", "y")),
      ("wait", ("a", "b")),
      ("let's break this down", ("now", "ok")),
  ]
  assert sg_conditional_entropy_text(texts, grams, n=2) == 0.0
  # n = 3: "let's try" -> (x y z), (x y w): ln 2; "wait" -> (a, b) is too short;
  # "let's break this down" -> (now ok wait) in 1 occurrence: 0. p = 2/3, 1/3.
  assert sg_conditional_entropy_text(texts, grams, n=3) == pytest.approx(2 / 3 * LN2, abs=1e-12)


def test_follow_pairs_tokens_hand_example():
  ids = np.array([[5, 6, 7, 8, 9, 5, 6, 7, 8, 1],
                  [5, 6, 7, 9, 0, 0, 3, 3, 0, 0]], np.int32)
  plan = np.zeros_like(ids, bool)
  plan[0, [0, 1, 5, 6]] = True
  plan[1, [0, 1, 6, 7]] = True
  done = np.ones_like(plan)
  done[1, 4:] = False  # row 1: padding after 4 tokens; its planning at 6-7 is ignored
  pairs = sg_follow_pairs_tokens(ids, plan, n=2, completion_mask=done)
  assert pairs == [((5, 6), (7, 8)), ((5, 6), (7, 8)), ((5, 6), (7, 9))]
  hand = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
  assert sg_conditional_entropy_tokens(ids, plan, n=2, completion_mask=done) == pytest.approx(
      hand, abs=1e-12)
  # n = 3: row 1's run is followed by only 2 valid tokens -> skipped; row 0: 0.
  assert sg_follow_pairs_tokens(ids, plan, n=3, completion_mask=done) == [
      ((5, 6), (7, 8, 9)), ((5, 6), (7, 8, 1))]
  # Without the completion mask row 1's second run counts too: (3, 3) -> (0, 0).
  assert ((3, 3), (0, 0)) in sg_follow_pairs_tokens(ids, plan, n=2)


def test_follow_pairs_tokens_bad_input():
  with pytest.raises(ValueError, match="planning_mask"):
    sg_follow_pairs_tokens(np.zeros((2, 3), np.int32), np.zeros((2, 4), bool))
  with pytest.raises(ValueError, match="n = 0"):
    sg_follow_pairs_tokens(np.zeros((2, 3), np.int32), np.zeros((2, 3), bool), n=0)
