"""Token ids as bytes, lossless: what each token id contributes to the decoded text.

The decoded text of a token-id sequence is the concatenation of the tokens'
bytes, decoded as UTF-8 with every invalid sequence replaced by U+FFFD (maximal
subparts, exactly as `bytes.decode("utf-8", "replace")`). Special / added tokens
contribute their literal content. A token's character span is the set of
characters any of whose bytes the token holds; so a character split across
tokens belongs to each of them.

Supported tokenizers: byte-level BPE (GPT-2 / Llama 3 / Qwen / SmolLM2 style,
`ByteLevel` decoder), which is what the paper's model families use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
  """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
  bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return {chr(c): b for b, c in zip(bs, cs)}


def _decoder_types(spec) -> list[str]:
  if not spec:
    return []
  if spec.get("type") == "Sequence":
    return [t for d in spec.get("decoders", []) for t in _decoder_types(d)]
  return [spec.get("type", "?")]


def token_bytes_table(tokenizer) -> list[bytes | None]:
  """The bytes of every token id of a byte-level BPE tokenizer.

  Args:
    tokenizer: a Hugging Face fast tokenizer (`hicra_jax.models.load_tokenizer`).

  Returns:
    `table[i]` = bytes of token id i; None for ids the vocabulary does not define
    (holes). `len(table)` is the vocabulary size (max id + 1).

  Raises:
    ValueError: the tokenizer is not a byte-level BPE tokenizer.
  """
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no backend_tokenizer; expected a "
                     "Hugging Face fast tokenizer")
  decoder = backend.decoder
  types = _decoder_types(json.loads(decoder.__getstate__()) if decoder is not None else None)
  if "ByteLevel" not in types:
    raise ValueError(f"tokenizer decoder {types or None} is not byte-level BPE; SG tries support "
                     "byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM2)")
  vocab = backend.get_vocab(with_added_tokens=True)
  added = {i: tok.content for i, tok in backend.get_added_tokens_decoder().items()}
  size = max(vocab.values()) + 1
  table: list[bytes | None] = [None] * size
  dec = _byte_level_decoder()
  for piece, i in vocab.items():
    if i in added:
      table[i] = added[i].encode("utf-8")
      continue
    try:
      table[i] = bytes(dec[ch] for ch in piece)
    except KeyError as e:
      raise ValueError(f"token {i} {piece!r} holds {e.args[0]!r}, which is not a byte-level "
                       "character; expected a byte-level BPE vocabulary") from e
  return table


def table_fingerprint(table: Sequence[bytes | None]) -> str:
  """A short hash identifying a token byte table (used to pair a trie with its tokenizer)."""
  h = hashlib.sha256()
  for b in table:
    if b is None:
      h.update(b"\xff\xff\xff\xff")
    else:
      h.update(len(b).to_bytes(4, "little") + b)
  return h.hexdigest()[:16]


# ---- UTF-8 with offsets -------------------------------------------------------


def _seq_spec(b: int) -> tuple[int, int, int]:
  """(length, low, high) of a UTF-8 sequence led by byte b; the second byte's valid range."""
  if b < 0x80:
    return 1, 0, 0
  if 0xC2 <= b <= 0xDF:
    return 2, 0x80, 0xBF
  if b == 0xE0:
    return 3, 0xA0, 0xBF
  if 0xE1 <= b <= 0xEC or 0xEE <= b <= 0xEF:
    return 3, 0x80, 0xBF
  if b == 0xED:
    return 3, 0x80, 0x9F
  if b == 0xF0:
    return 4, 0x90, 0xBF
  if 0xF1 <= b <= 0xF3:
    return 4, 0x80, 0xBF
  if b == 0xF4:
    return 4, 0x80, 0x8F
  return 0, 0, 0  # continuation byte or never-valid byte


def decode_utf8(data: bytes) -> tuple[str, np.ndarray, np.ndarray]:
  """Lossy UTF-8 decoding with the byte range of every character.

  Returns:
    (text, starts i64[C+1], valid bool[C]): character c of `text` is
    `data[starts[c]:starts[c+1]]`; `valid[c]` is False where c is a U+FFFD that
    replaces an invalid byte sequence. `text == data.decode("utf-8", "replace")`.
  """
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    return _decode_slow(data)
  arr = np.frombuffer(data, np.uint8)
  starts = np.flatnonzero((arr & 0xC0) != 0x80)
  return text, np.append(starts, len(data)).astype(np.int64), np.ones(len(text), bool)


def _decode_slow(data: bytes) -> tuple[str, np.ndarray, np.ndarray]:
  chars, starts, valid = [], [], []
  i, n = 0, len(data)
  while i < n:
    length, lo, hi = _seq_spec(data[i])
    j = i + 1
    if length > 1:
      k = 1
      while k < length and j < n and ((lo if k == 1 else 0x80) <= data[j]
                                       <= (hi if k == 1 else 0xBF)):
        j += 1
        k += 1
      ok = k == length
    else:
      ok = length == 1
    chars.append(data[i:j].decode("utf-8") if ok else "\ufffd")
    starts.append(i)
    valid.append(ok)
    i = j
  starts.append(n)
  return "".join(chars), np.asarray(starts, np.int64), np.asarray(valid, bool)


def token_edges(table: Sequence[bytes | None]) -> dict[str, np.ndarray]:
  """Per-token edge bytes, for decoding the characters at token boundaries on device.

  Returns:
    token_len i32[V] (byte length; -1 for ids the vocabulary does not define),
    token_head u32[V] (first <= 4 bytes, the first in the lowest 8 bits),
    token_tail u32[V] (last <= 4 bytes, the last in the lowest 8 bits).
  """
  size = len(table)
  length = np.full(size, -1, np.int32)
  head = np.zeros(size, np.uint32)
  tail = np.zeros(size, np.uint32)
  for i, b in enumerate(table):
    if b is None:
      continue
    length[i] = len(b)
    head[i] = int.from_bytes(b[:4], "little")
    tail[i] = int.from_bytes(b[-4:][::-1], "little")
  return {"token_len": length, "token_head": head, "token_tail": tail}


@lru_cache(maxsize=1)
def alnum_bitmap() -> np.ndarray:
  """u32[0x110000 / 32]: bit c is set where chr(c).isalnum() (letters and digits)."""
  bits = np.fromiter((chr(c).isalnum() for c in range(0x110000)), bool, 0x110000)
  words = np.packbits(bits.reshape(-1, 32)[:, ::-1], axis=1, bitorder="big")
  out = words.view(">u4").astype(np.uint32).reshape(-1)
  out.setflags(write=False)
  return out
