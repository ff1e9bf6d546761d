"""Semantic entropy of SG usage and conditional entropy of what follows an SG.

The paper (section 3) tracks two diagnostics of planning behaviour:

* Semantic entropy: the Shannon entropy of the frequency distribution of
  Strategic Grams used in a batch of rollouts. With counts c_s (summed over
  rows) and p_s = c_s / sum(c), H = -sum_s p_s ln p_s, in nats. It grows when
  the policy uses a more diverse set of strategies.
* Conditional entropy of the procedural n-grams that follow an SG:
  H(G | S) = sum_s p(s) H(G | S = s), with S the SG at an occurrence and G the
  n units right after it, estimated from empirical frequencies over all
  occurrences. Low values mean an SG is followed by stereotyped execution.

Conventions (ours; the paper gives none):
* All-zero counts (no SG used) have semantic entropy 0.0, not NaN: a batch
  without SGs has no strategic diversity, and metric logs stay finite.
* An "occurrence" is a maximal run of planning (a run of planning tokens, or
  a union of overlapping SG occurrences in text): nested or overlapping SGs
  ("let's" inside "let's break this down") form one occurrence whose S is the
  whole run. G is the n tokens (token version) or n words (text version:
  `hicra_jax.planning.extract.WORD_RE`, lowercased) right after the run; an
  occurrence with fewer than n units after it (end of text or of the
  completion mask) is skipped.
* With no occurrence, the conditional entropy is 0.0.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from hicra_jax.planning.extract import WORD_RE
from hicra_jax.planning.grams import normalize_grams
from hicra_jax.planning.reference import reference_occurrences

Pair = tuple[Hashable, Hashable]


def entropy_of_counts(counts) -> float:
  """Shannon entropy (nats) of the distribution proportional to `counts`.

  Args:
    counts: non-negative numbers, any shape (flattened).

  Returns:
    -sum p ln p over the non-zero entries; 0.0 when all counts are zero.

  Raises:
    ValueError: a negative or non-finite count.
  """
  c = np.asarray(counts, np.float64).ravel()
  if c.size and (not np.all(np.isfinite(c)) or c.min() < 0):
    raise ValueError("counts must be finite and non-negative; got min "
                     f"{c.min()!r}")
  total = c.sum()
  if total <= 0:
    return 0.0
  p = c[c > 0] / total
  return float(-(p * np.log(p)).sum())


def semantic_entropy(sg_counts) -> float:
  """Semantic entropy (nats) of a batch from its SG counts.

  Args:
    sg_counts: i32[N, Z] occurrences of each SG per row
      (`hicra_jax.planning.sg_occurrences`), or i32[Z] counts of the batch.
      Rows are summed first: the entropy of the batch's SG distribution, not
      a mean of per-row entropies.

  Returns:
    H in nats, in [0, ln Z]; 0.0 when no SG occurs.

  Raises:
    ValueError: a negative count, or an input that is not 1-D or 2-D.
  """
  c = np.asarray(sg_counts)
  if c.ndim not in (1, 2):
    raise ValueError(f"sg_counts has shape {c.shape}; expected [Z] or [N, Z]")
  return entropy_of_counts(c.sum(axis=0) if c.ndim == 2 else c)


def semantic_entropy_jax(sg_counts):
  """`semantic_entropy` as a jittable JAX function: f32[] from i32[N, Z] or i32[Z].

  Same definition (rows summed, 0.0 for all-zero counts); no input checks,
  for use inside jitted metric code.
  """
  c = jnp.asarray(sg_counts, jnp.float32)
  if c.ndim == 2:
    c = c.sum(axis=0)
  total = c.sum()
  p = c / jnp.maximum(total, 1e-30)
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  return jnp.where(total > 0, -plogp.sum(), 0.0)


def conditional_entropy(pairs: Iterable[Pair]) -> float:
  """H(Y | X) in nats from observed (x, y) pairs (empirical frequencies).

  H(Y | X) = sum_x p(x) H(Y | X = x) = H(X, Y) - H(X); 0.0 for no pairs.
  """
  joint = collections.Counter(pairs)
  if not joint:
    return 0.0
  marginal = collections.Counter()
  for (x, _), c in joint.items():
    marginal[x] += c
  return max(0.0, entropy_of_counts(list(joint.values()))
             - entropy_of_counts(list(marginal.values())))


# ----------------------------------------------------------------- text


def _normalize_phrase(text: str) -> str:
  return " ".join(text.split()).replace("\u2019", "'").lower()


def sg_follow_pairs_text(texts: Iterable[str], grams: Sequence[str], *,
                         n: int = 3) -> list[tuple[str, tuple[str, ...]]]:
  """(SG, following words) at every SG occurrence in texts.

  Args:
    texts: completions.
    grams: the SG set (matching semantics of DESIGN.md, via
      `hicra_jax.planning.reference.reference_occurrences`).
    n: words in the following n-gram.

  Returns:
    Per occurrence (maximal union of overlapping matches), the matched text
    normalized (whitespace collapsed, apostrophes straightened, lowercased)
    and the next n words, lowercased.
  """
  if n < 1:
    raise ValueError(f"n = {n!r}: expected an integer >= 1")
  grams = normalize_grams(grams)
  pairs = []
  for text in texts:
    spans: list[list[int]] = []
    for start, end, _ in reference_occurrences(text, grams):
      if spans and start < spans[-1][1]:
        spans[-1][1] = max(spans[-1][1], end)
      else:
        spans.append([start, end])
    for start, end in spans:
      follow = []
      for m in WORD_RE.finditer(text, end):
        follow.append(m.group().lower().replace("\u2019", "'"))
        if len(follow) == n:
          break
      if len(follow) == n:
        pairs.append((_normalize_phrase(text[start:end]), tuple(follow)))
  return pairs


def sg_conditional_entropy_text(texts: Iterable[str], grams: Sequence[str],
                                *, n: int = 3) -> float:
  """H(following n words | SG) in nats over all SG occurrences in texts."""
  return conditional_entropy(sg_follow_pairs_text(texts, grams, n=n))


# --------------------------------------------------------------- token ids


def sg_follow_pairs_tokens(token_ids, planning_mask, *, n: int = 3,
                           completion_mask=None
                           ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """(SG token ids, next n token ids) at every run of planning tokens.

  Args:
    token_ids: i32[N, T].
    planning_mask: bool[N, T] (`hicra_jax.planning.planning_mask`).
    n: tokens in the following n-gram.
    completion_mask: bool[N, T] or None (all positions valid). Planning
      outside it is ignored, and the n following tokens must lie inside it.

  Returns:
    Per maximal run of planning tokens: (its token ids, the next n token ids).
  """
  if n < 1:
    raise ValueError(f"n = {n!r}: expected an integer >= 1")
  ids = np.asarray(token_ids)
  plan = np.asarray(planning_mask, bool)
  if ids.ndim != 2 or plan.shape != ids.shape:
    raise ValueError(f"token_ids {ids.shape} and planning_mask {plan.shape} "
                     "must both be [N, T]")
  valid = (np.ones_like(plan) if completion_mask is None
           else np.asarray(completion_mask, bool))
  if valid.shape != ids.shape:
    raise ValueError(f"completion_mask {valid.shape} must be {ids.shape}")
  plan = plan & valid
  pairs = []
  t = ids.shape[1]
  for row in range(ids.shape[0]):
    p, v, r = plan[row], valid[row], ids[row]
    j = 0
    while j < t:
      if not p[j]:
        j += 1
        continue
      start = j
      while j < t and p[j]:
        j += 1
      nxt = slice(j, j + n)
      if j + n <= t and v[nxt].all():
        pairs.append((tuple(r[start:j].tolist()), tuple(r[nxt].tolist())))
  return pairs


def sg_conditional_entropy_tokens(token_ids, planning_mask, *, n: int = 3,
                                  completion_mask=None) -> float:
  """H(next n token ids | SG token ids) in nats over all planning runs."""
  return conditional_entropy(sg_follow_pairs_tokens(
      token_ids, planning_mask, n=n, completion_mask=completion_mask))
