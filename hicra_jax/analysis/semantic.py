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
import functools
from collections.abc import Hashable, Iterable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from hicra_jax.planning.extract import WORD_RE
from hicra_jax.planning.grams import normalize_grams
from hicra_jax.planning.hashing import fmix32
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


# ------------------------------------------------- token ids, on device


_HASH_BASE = 0x9E3779B1  # odd, so invertible mod 2^32: B^k never wraps to 0


@functools.partial(jax.jit, static_argnames=("n",))
def sg_conditional_entropy_jax(token_ids_NxT, planning_NxT, completion_mask_NxT=None,
                               *, n: int = 3):
  """`sg_conditional_entropy_tokens` on device: jittable, static shapes, f32[].

  H(Y | X) in nats, where each maximal run of planning tokens (planning &
  completion mask, never crossing a row end) is one occurrence with
  X = the run's token ids and Y = the n token ids right after the run's last
  token; an occurrence counts only if those n positions lie in the same row
  and inside the completion mask (same pairs as `sg_follow_pairs_tokens`).
  From the empirical counts c_x, c_xy over the M valid occurrences,

    H(Y | X) = H(X, Y) - H(X) = (1/M) sum_occurrences ln(c_x / c_xy)
             = mean over occurrences of -ln p(y | x),

  computed in that second form (a mean of non-negative terms, no
  cancellation between two large entropies). 0.0 when M == 0; clamped >= 0.

  Args:
    token_ids_NxT: i32[N, T].
    planning_NxT: bool[N, T] (`hicra_jax.planning.planning_mask`).
    completion_mask_NxT: bool[N, T], or None for all positions valid.
    n: tokens in the following n-gram (static).

  Returns:
    f32[] scalar.

  Method (every array has the static size L = N * T, one slot per token):
  a run starts where a token is planning and the previous one in its row is
  not (row ends are breaks); a token's offset in its run is its index minus
  the cumulative max of run-start indices. X is a 32-bit polynomial hash,
  sum_i fmix32(tok_i) * B^i mod 2^32 over the run (B odd; uint32 products
  and sums wrap), read at the run's last token as the difference of one
  wrapping prefix sum and mixed with the run length. Y hashes the n shifted
  token ids the same way. One 2-key `lax.sort` on (X, Y), with invalid slots
  given X = 2^32 - 1 (valid X are clamped to 2^32 - 2) so the M valid pairs
  come first, puts equal X and equal (X, Y) next to each other; each pair's
  c_x and c_xy are its group's last minus first index (reverse cummin /
  cummax of the boundaries). No scatter, no data-dependent shape.

  Hash collisions (32-bit): two distinct SG runs are merged when their X
  hashes coincide; two distinct (run, n-gram) pairs only when both their X
  and Y hashes coincide (for the same run: the n-grams' Y hashes). With D
  distinct values the expected number of colliding couples is about
  D^2 / 2^33: ~1e-4 at D = 1,000, ~0.01 at D = 10,000, ~1 at D ~ 93,000
  distinct SG runs in one batch (or ~93,000 distinct n-grams after one SG).
  Merging two runs raises H(Y | X) by at most their share (c_x1 + c_x2) / M
  times ln 2; merging two joint singletons lowers it by 2 ln 2 / M. SG runs
  come from a fixed gram set, so realistic batches are far below the point
  where this matters. Counts are float32, exact up to L = 2^24 slots (e.g.
  512 x 32768).
  """
  if n < 1:
    raise ValueError(f"n = {n!r}: expected an integer >= 1")
  ids = jnp.asarray(token_ids_NxT)
  if ids.ndim != 2:
    raise ValueError(f"token_ids has shape {ids.shape}; expected [N, T]")
  num_rows, t_len = ids.shape
  length = num_rows * t_len
  plan = jnp.asarray(planning_NxT, bool)
  valid = (jnp.ones(ids.shape, bool) if completion_mask_NxT is None
           else jnp.asarray(completion_mask_NxT, bool))
  if plan.shape != ids.shape or valid.shape != ids.shape:
    raise ValueError(f"token_ids {ids.shape}, planning {plan.shape} and "
                     f"completion_mask {valid.shape} must all be [N, T]")
  if length == 0:
    return jnp.zeros((), jnp.float32)

  tok = ids.reshape(-1).astype(jnp.int32)
  valid = valid.reshape(-1)
  plan = plan.reshape(-1) & valid
  idx = jnp.arange(length, dtype=jnp.int32)
  col = idx % t_len

  def shift(x, k, fill):  # x[i + k], `fill` past the end (k > 0)
    return jnp.concatenate([x[k:], jnp.full((min(k, length),), fill, x.dtype)])

  prev_plan = jnp.concatenate([jnp.zeros((1,), bool), plan[:-1]]) & (col != 0)
  next_plan = shift(plan, 1, False) & (col != t_len - 1)
  starts = plan & ~prev_plan
  last = plan & ~next_plan
  start_pos = lax.cummax(jnp.where(starts, idx, 0))
  offset = idx - start_pos  # position in the run; < T

  # X: wrapping polynomial hash of the run, read at its last token.
  base = jnp.full((max(t_len, n),), _HASH_BASE, jnp.uint32)
  powers = jnp.concatenate([jnp.ones((1,), jnp.uint32),
                            jnp.cumprod(base[:-1], dtype=jnp.uint32)])
  terms = jnp.where(plan, fmix32(tok.astype(jnp.uint32)) * powers[offset],
                    jnp.uint32(0))
  prefix = jnp.cumsum(terms, dtype=jnp.uint32)
  run_sum = prefix - (prefix - terms)[start_pos]  # wraps mod 2^32
  run_len = (offset + 1).astype(jnp.uint32)
  x_hash = fmix32(run_sum ^ fmix32(run_len * jnp.uint32(0x27D4EB2F)))

  # Y: hash of the n tokens after the run; the pair counts only if all n lie
  # in the row and the completion mask.
  ok = last & (col + n < t_len)
  y_sum = jnp.zeros((length,), jnp.uint32)
  for k in range(1, n + 1):
    ok = ok & shift(valid, k, False)
    y_sum = y_sum + fmix32(shift(tok, k, 0).astype(jnp.uint32)) * powers[k - 1]
  y_hash = fmix32(y_sum ^ jnp.uint32(0x165667B1))
  num_pairs = ok.sum(dtype=jnp.int32)

  # Sort on (X, Y); invalid slots take X = 2^32 - 1, which valid X never
  # takes (clamped to 2^32 - 2), so the M valid pairs come first.
  top = jnp.uint32(0xFFFFFFFF)
  x_key = jnp.where(ok, jnp.minimum(x_hash, top - jnp.uint32(1)), top)
  y_key = jnp.where(ok, y_hash, top)
  x_key, y_key = lax.sort((x_key, y_key), num_keys=2)

  def changed(x):  # x[i] != x[i - 1], True at i = 0
    return jnp.concatenate([jnp.ones((1,), bool), x[1:] != x[:-1]])

  new_x = changed(x_key)
  new_xy = new_x | changed(y_key)

  def group_size(new):
    first = lax.cummax(jnp.where(new, idx, 0))
    ends = shift(new, 1, True)  # next element starts a group, or past the end
    after_last = lax.cummin(jnp.where(ends, idx + 1, length), reverse=True)
    return (after_last - first).astype(jnp.float32)

  ratio = group_size(new_x) / group_size(new_xy)
  nll = jnp.where(idx < num_pairs, jnp.log(ratio), 0.0)
  h = nll.sum() / jnp.maximum(num_pairs, 1).astype(jnp.float32)
  return jnp.where(num_pairs > 0, jnp.maximum(h, 0.0), 0.0)
