"""On-device planning masks and SG counts: pure JAX, jittable, no host round trip.

For every start position t and every length l <= trie.max_len, the window
token_ids[:, t:t+l] is hashed (rolling, uint32); its (hash, l) key names one
slot of the trie's perfect hash table, and the span in that slot, if any, is
verified id by id against the window. Each of the span's entries is an
occurrence of one SG, subject to the boundary checks at the window's edges
(the neighbouring token's edge character is not a letter/digit, or there is
no neighbouring token). Matched windows mark their tokens (the union over
overlapping and nested occurrences) and add one to their SG's count.

Positions outside `completion_mask`, and ids outside the vocabulary, break the
text: no window crosses them and they are never marked (so padding is never
planning and results do not depend on how a batch is padded or split).
Work per token: 8 gathers for the boundary bytes, then per window length
(a `lax.scan` over l = 1..max_len) one hash update, 3 + 3E small gathers (E entries
per span) and one max_len-wide row compare.

The entry points are `jax.jit`-compiled with no static arguments: the trie is a
pytree whose metadata (SG list, max_len, hash seed) is static aux data, so a new
SG set or tokenizer compiles once, while arrays of the same structure do not
recompile. Nothing is donated (callers keep using token_ids). Bucket N and T as
the trainer does to avoid recompiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hicra_jax.planning.hashing import hash_step, key_hashes, slot_index
from hicra_jax.planning.trie import SGTrie


def _shift(x_NxT: jax.Array, d: int, fill) -> jax.Array:
  """y[:, t] = x[:, t - d] (d > 0: from the left; d < 0: from the right), `fill` outside."""
  n, t = x_NxT.shape
  if abs(d) >= t:
    return jnp.full((n, t), fill, x_NxT.dtype)
  pad = jnp.full((n, abs(d)), fill, x_NxT.dtype)
  if d > 0:
    return jnp.concatenate([pad, x_NxT[:, :t - d]], axis=1)
  return jnp.concatenate([x_NxT[:, -d:], pad], axis=1)


def _byte_mask(count):
  """u32 mask of the low `count` bytes (count in 0..4)."""
  shift = (8 * jnp.minimum(count, 3)).astype(jnp.uint32)
  return jnp.where(count >= 4, jnp.uint32(0xFFFFFFFF), (jnp.uint32(1) << shift) - 1)


def _gather_bytes(ids, valid, edge, length, direction: int):
  """The <= 4 bytes of the stream before (direction=+1) / after (-1) each token position.

  Before position t: the last bytes of tokens t-1, t-2, ... (the nearest byte in the
  lowest 8 bits); after position t: the first bytes of tokens t+1, t+2, ... . The
  stream stops at a break (an invalid position) or the row edge.
  Returns (bytes u32[N, T], count i32[N, T]).
  """
  acc = jnp.zeros(ids.shape, jnp.uint32)
  cnt = jnp.zeros(ids.shape, jnp.int32)
  alive = jnp.ones(ids.shape, bool)
  for d in range(1, 5):
    v = _shift(valid, direction * d, False)
    x = jnp.maximum(_shift(ids, direction * d, 0), 0)
    alive = alive & v
    take = alive & (cnt < 4)
    n = jnp.minimum(length[x], 4 - cnt)
    part = (edge[x] & _byte_mask(n)) << (8 * jnp.minimum(cnt, 3)).astype(jnp.uint32)
    acc = jnp.where(take, acc | part, acc)
    cnt = jnp.where(take, cnt + n, cnt)
  return acc, cnt


def _utf8_spec(lead):
  """(sequence length or 0 if `lead` cannot start a character, low, high of the 2nd byte)."""
  need = jnp.where(lead < 0x80, 1, jnp.where((lead >= 0xC2) & (lead <= 0xDF), 2, jnp.where(
      (lead >= 0xE0) & (lead <= 0xEF), 3, jnp.where((lead >= 0xF0) & (lead <= 0xF4), 4, 0))))
  lo = jnp.where(lead == 0xE0, 0xA0, jnp.where(lead == 0xF0, 0x90, 0x80))
  hi = jnp.where(lead == 0xED, 0x9F, jnp.where(lead == 0xF4, 0x8F, 0xBF))
  return need, lo, hi


def _is_alnum(cp, ok, bits):
  word = bits[jnp.clip(cp >> 5, 0, bits.shape[0] - 1)]
  return ok & (((word >> (cp & 31).astype(jnp.uint32)) & 1) == 1)


def _char_before_alnum(acc, cnt, bits):
  """Is the last character of the stream (bytes `acc`, nearest first) a letter/digit?"""
  b = [((acc >> (8 * i)) & 0xFF).astype(jnp.int32) for i in range(4)]
  # The last decoding attempt starts at the nearest byte that is not a continuation byte.
  start = jnp.full(cnt.shape, -1, jnp.int32)
  for i in (3, 2, 1, 0):
    start = jnp.where((i < cnt) & ((b[i] & 0xC0) != 0x80), i, start)
  lead = jnp.select([start == i for i in range(4)], b, 0)
  need, lo, hi = _utf8_spec(lead)
  second = jnp.select([start == i for i in range(1, 4)], b[:3], 0x80)
  ok = (start >= 0) & (need == start + 1) & ((need == 1) | ((second >= lo) & (second <= hi)))
  cont = [bi & 0x3F for bi in b]
  cp = jnp.select(
      [need == 1, need == 2, need == 3, need == 4],
      [lead, ((lead & 0x1F) << 6) | cont[0], ((lead & 0x0F) << 12) | (cont[1] << 6) | cont[0],
       ((lead & 0x07) << 18) | (cont[2] << 12) | (cont[1] << 6) | cont[0]], 0)
  return _is_alnum(cp, ok, bits)


def _char_after_alnum(acc, cnt, bits):
  """Is the first character of the stream (bytes `acc`, nearest first) a letter/digit?"""
  b = [((acc >> (8 * i)) & 0xFF).astype(jnp.int32) for i in range(4)]
  need, lo, hi = _utf8_spec(b[0])
  ok = (cnt >= 1) & (need >= 1) & (need <= cnt) & ((need == 1) | ((b[1] >= lo) & (b[1] <= hi)))
  for i in (2, 3):
    ok = ok & ((need <= i) | ((b[i] & 0xC0) == 0x80))
  cont = [bi & 0x3F for bi in b]
  cp = jnp.select(
      [need == 1, need == 2, need == 3, need == 4],
      [b[0], ((b[0] & 0x1F) << 6) | cont[1], ((b[0] & 0x0F) << 12) | (cont[1] << 6) | cont[2],
       ((b[0] & 0x07) << 18) | (cont[1] << 12) | (cont[2] << 6) | cont[3]], 0)
  return _is_alnum(cp, ok, bits)


def _match_table(token_ids_NxT: jax.Array, trie: SGTrie,
                 completion_mask_NxT: jax.Array | None) -> jax.Array:
  """sg_WxNxTxE[l-1, n, t, e]: the SG index of the occurrence whose minimal covering
  is token_ids[n, t:t+l] (entry slot e of the matched span), or -1; W = trie.max_len.
  """
  ids = jnp.asarray(token_ids_NxT)
  if ids.ndim != 2:
    raise ValueError(f"token_ids must be i32[N, T], got shape {ids.shape}")
  ids = ids.astype(jnp.int32)
  n, t = ids.shape
  max_len = trie.meta.max_len
  vocab = trie.token_len.shape[0]
  in_vocab = (ids >= 0) & (ids < vocab)
  ids = jnp.where(in_vocab, ids, 0)
  valid = in_vocab & (trie.token_len[ids] >= 0)
  if completion_mask_NxT is not None:
    cm = jnp.asarray(completion_mask_NxT)
    if cm.shape != ids.shape:
      raise ValueError(f"completion_mask shape {cm.shape} != token_ids shape {ids.shape}")
    valid = valid & cm.astype(bool)
  # Boundary checks: the character just before token t / just after token t, decoded
  # from the byte stream (a character may be split across tokens).
  acc, cnt = _gather_bytes(ids, valid, trie.token_tail, trie.token_len, +1)
  left_ok = ~_char_before_alnum(acc, cnt, trie.alnum_bits)
  acc, cnt = _gather_bytes(ids, valid, trie.token_head, trie.token_len, -1)
  right_ok_pad = jnp.concatenate(
      [~_char_after_alnum(acc, cnt, trie.alnum_bits), jnp.ones((n, max_len), bool)], axis=1)
  ids = jnp.where(valid, ids, -1)
  ids_pad = jnp.concatenate([ids, jnp.full((n, max_len), -1, jnp.int32)], axis=1)
  window = jnp.stack([ids_pad[:, j:j + t] for j in range(max_len)], axis=-1)  # [N, T, W]
  # Per window length l: the token ids[t + l - 1] and the right-boundary check after it.
  xs = (jnp.arange(1, max_len + 1, dtype=jnp.int32), jnp.moveaxis(window, -1, 0),
        jnp.stack([right_ok_pad[:, j:j + t] for j in range(max_len)]))
  cols = jnp.arange(max_len, dtype=jnp.int32)
  num_slots = trie.slots.shape[0]

  def one_length(carry, x):
    h, all_valid = carry
    l, cur, right_ok = x
    all_valid = all_valid & (cur >= 0)
    h = hash_step(h, cur.astype(jnp.uint32))
    a, b = key_hashes(h, l)
    span = trie.slots[slot_index(a, b, trie.disp, num_slots)]
    sc = jnp.maximum(span, 0)
    same = (trie.span_tokens[sc] == window) | (cols >= l)  # [N, T, W]
    found = (span >= 0) & all_valid & (trie.span_len[sc] == l) & jnp.all(same, axis=-1)
    sg = trie.entry_sg[sc]  # [N, T, E]
    ok = (found[..., None] & (sg >= 0) & (left_ok[..., None] | ~trie.entry_left[sc])
          & (right_ok[..., None] | ~trie.entry_right[sc]))
    return (h, all_valid), jnp.where(ok, sg, -1)

  init = (jnp.full((n, t), trie.meta.hash_seed, jnp.uint32), jnp.ones((n, t), bool))
  _, sg = jax.lax.scan(one_length, init, xs)
  return sg


def _mask_from(sg_WxNxTxE: jax.Array) -> jax.Array:
  max_len, n, t, _ = sg_WxNxTxE.shape
  lengths = jnp.arange(1, max_len + 1, dtype=jnp.int32)[:, None, None, None]
  cover = jnp.max(jnp.where(sg_WxNxTxE >= 0, lengths, 0), axis=(0, 3))  # longest window at t
  out = cover > 0
  for j in range(1, min(max_len, t)):
    out = out | (_shift(cover, j, 0) > j)  # a window starting j tokens earlier covers t
  return out


def _counts_from(sg_WxNxTxE: jax.Array, num_grams: int) -> jax.Array:
  n = sg_WxNxTxE.shape[1]
  rows = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :, None, None], sg_WxNxTxE.shape)
  idx = jnp.where(sg_WxNxTxE >= 0, sg_WxNxTxE, num_grams)  # out of bounds: dropped
  return jnp.zeros((n, num_grams), jnp.int32).at[rows, idx].add(1, mode="drop")


@jax.jit
def planning_mask(token_ids: jax.Array, trie: SGTrie,
                  completion_mask: jax.Array | None = None) -> jax.Array:
  """Planning tokens: bool[N, T], True where a token overlaps an SG occurrence.

  Args:
    token_ids: i32[N, T] token ids.
    trie: `SGTrie` built for the tokenizer of `token_ids` (a pytree argument).
    completion_mask: bool[N, T] or None; positions outside it are never planning
      and break the text (so padding never matters).
  """
  return _mask_from(_match_table(token_ids, trie, completion_mask))


@jax.jit
def sg_occurrences(token_ids: jax.Array, trie: SGTrie,
                   completion_mask: jax.Array | None = None) -> jax.Array:
  """Occurrences of each SG per row: i32[N, Z] (Z = trie.num_grams).

  Arguments as `planning_mask`. An occurrence is counted once per start position;
  overlapping and nested occurrences of different SGs each count for their SG.
  """
  return _counts_from(_match_table(token_ids, trie, completion_mask), trie.num_grams)


@jax.jit
def planning_mask_and_counts(token_ids: jax.Array, trie: SGTrie,
                             completion_mask: jax.Array | None = None
                             ) -> tuple[jax.Array, jax.Array]:
  """(planning_mask bool[N, T], sg_occurrences i32[N, Z]) in one pass."""
  sg = _match_table(token_ids, trie, completion_mask)
  return _mask_from(sg), _counts_from(sg, trie.num_grams)


@jax.jit
def sg_match_table(token_ids: jax.Array, trie: SGTrie,
                   completion_mask: jax.Array | None = None) -> jax.Array:
  """Every matched occurrence: i32[N, T, W, E], the SG index (or -1) of the occurrence
  covering exactly token_ids[n, t:t+w+1] (entry slot e). For audits and debugging.
  """
  return jnp.transpose(_match_table(token_ids, trie, completion_mask), (1, 2, 0, 3))
