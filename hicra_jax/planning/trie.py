"""SGTrie: the token-id patterns of an SG set for one tokenizer, as a pytree of arrays.

A *span* is a token-id sequence that is the minimal covering of an SG
occurrence in running text: its first token holds the occurrence's first
character (possibly after other characters, e.g. " Let", "(L", "\\n\\n"), its
last token holds the last character (possibly followed by others, e.g. "?\\n\\n").
Each span carries up to E *entries* (sg index, needs-left-check,
needs-right-check): the occurrences whose minimal covering it is. A left
(right) check is needed when the SG starts (ends) with a letter/digit and the
occurrence starts (ends) exactly at the span's edge: the neighbouring token's
edge character must then not be a letter/digit; it is decoded on device from the
neighbouring tokens' bytes (a character may be split across tokens).

Spans live in a perfect hash table (hash and displace) keyed by a rolling hash
of the token ids and the span length (`hashing.py`): the device matcher
(`masks.py`) hashes every window of every length <= max_len, reads the one slot
its key can be in and verifies the span's ids against the window.

Leaves (arrays) and static metadata (U spans, W = max_len, E entries per span):
  span_tokens  i32[U, W]   ids, -1 padded         span_len  i32[U]
  slots        i32[num_slots]   span index or -1
  disp         u32[num_buckets] displacement per bucket
  entry_sg     i32[U, E]   -1 = no entry          entry_left/right bool[U, E]
  token_len    i32[V]      bytes per token (-1: not a token)
  token_head/tail u32[V]   first / last <= 4 bytes of each token (boundary characters)
  alnum_bits   u32[34816]  bit c set where chr(c).isalnum()
  meta: grams, max_len W, hash_seed, tokenizer name and vocabulary fingerprint.

`SGTrie.build` harvests the spans (`build.py`); `save` / `load` round-trip a trie.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hicra_jax.planning.build import build_trie_arrays
from hicra_jax.planning.tokens import table_fingerprint

FORMAT = "hicra-jax.sgtrie"
FORMAT_VERSION = 1
_ARRAYS = ("span_tokens", "span_len", "slots", "disp", "entry_sg", "entry_left", "entry_right",
           "token_len", "token_head", "token_tail", "alnum_bits")
_DTYPES = {"span_tokens": np.int32, "span_len": np.int32, "slots": np.int32, "disp": np.uint32,
           "entry_sg": np.int32, "entry_left": np.bool_, "entry_right": np.bool_,
           "token_len": np.int32, "token_head": np.uint32, "token_tail": np.uint32,
           "alnum_bits": np.uint32}


@dataclasses.dataclass(frozen=True)
class TrieMeta:
  """Static (hashable) part of an SGTrie: jit specializes on it."""
  grams: tuple[str, ...]
  max_len: int
  hash_seed: int
  tokenizer: str = ""
  fingerprint: str = ""


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class SGTrie:
  """Token-id patterns of an SG set for one tokenizer (see module docstring).

  Build with `SGTrie.build(grams, tokenizer)`; pass it into jitted code as an
  argument (`planning_mask(token_ids, trie)`); `save` / `load` round-trip it.
  """
  span_tokens: jax.Array
  span_len: jax.Array
  slots: jax.Array
  disp: jax.Array
  entry_sg: jax.Array
  entry_left: jax.Array
  entry_right: jax.Array
  token_len: jax.Array
  token_head: jax.Array
  token_tail: jax.Array
  alnum_bits: jax.Array
  meta: TrieMeta

  # ---- pytree ----
  def tree_flatten(self):
    return tuple(getattr(self, k) for k in _ARRAYS), self.meta

  @classmethod
  def tree_unflatten(cls, meta, leaves):
    return cls(*leaves, meta=meta)

  # ---- properties ----
  @property
  def grams(self) -> tuple[str, ...]:
    return self.meta.grams

  @property
  def num_grams(self) -> int:
    return len(self.meta.grams)

  @property
  def max_len(self) -> int:
    return self.meta.max_len

  @property
  def num_spans(self) -> int:
    return int(self.span_len.shape[0])

  @property
  def vocab_size(self) -> int:
    return int(self.token_len.shape[0])

  def __repr__(self) -> str:
    return (f"SGTrie(grams={self.num_grams}, spans={self.num_spans}, max_len={self.max_len}, "
            f"entries/span<={self.entry_sg.shape[1]}, slots={self.slots.shape[0]}, "
            f"vocab={self.vocab_size}, "
            f"tokenizer={self.meta.tokenizer!r})")

  # ---- construction ----
  @classmethod
  def build(cls, grams, tokenizer, **kwargs) -> SGTrie:
    """Builds the trie of an SG set for a byte-level BPE tokenizer.

    Args:
      grams: a preset name ("paper"), an SG file path, or a sequence of phrases.
      tokenizer: a Hugging Face fast tokenizer (`hicra_jax.models.load_tokenizer`).
      **kwargs: see `hicra_jax.planning.build.build_trie_arrays`.

    Returns:
      The trie, on the default device.
    """
    arrays, meta = build_trie_arrays(grams, tokenizer, **kwargs)
    return cls.from_numpy(arrays, TrieMeta(**meta))

  @classmethod
  def from_numpy(cls, arrays: dict[str, np.ndarray], meta: TrieMeta) -> SGTrie:
    """Validates host arrays and places them on the default device."""
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
      raise ValueError(f"SGTrie arrays missing: {missing}")
    a = {k: np.asarray(arrays[k]).astype(_DTYPES[k], copy=False) for k in _ARRAYS}
    u, w = a["span_tokens"].shape if a["span_tokens"].ndim == 2 else (-1, -1)
    m = a["slots"].shape[0] if a["slots"].ndim == 1 else 0
    problems = []
    if w != meta.max_len:
      problems.append(f"span_tokens shape {a['span_tokens'].shape} vs max_len {meta.max_len}")
    if a["span_len"].shape != (u,):
      problems.append(f"span_len shape {a['span_len'].shape}, expected ({u},)")
    b = a["disp"].shape[0] if a["disp"].ndim == 1 else 0
    if b == 0 or b & (b - 1):
      problems.append(f"disp shape {a['disp'].shape}: expected a power-of-two length")
    for k in ("entry_sg", "entry_left", "entry_right"):
      if a[k].ndim != 2 or a[k].shape[0] != u or a[k].shape != a["entry_sg"].shape:
        problems.append(f"{k} shape {a[k].shape}, expected ({u}, E)")
    if m == 0 or m & (m - 1):
      problems.append(f"slots shape {a['slots'].shape}: expected a power-of-two length")
    v = a["token_len"].shape
    for k in ("token_head", "token_tail"):
      if len(v) != 1 or a[k].shape != v:
        problems.append(f"{k} shape {a[k].shape}, expected token_len's {v}")
    if a["alnum_bits"].shape != (0x110000 // 32,):
      problems.append(f"alnum_bits shape {a['alnum_bits'].shape}, expected ({0x110000 // 32},)")
    if not problems and (a["entry_sg"].max(initial=-1) >= len(meta.grams)
                         or a["slots"].max(initial=-1) >= u):
      problems.append("entry_sg / slots index out of range")
    if problems:
      raise ValueError("invalid SGTrie arrays: " + "; ".join(problems))
    return cls(**{k: jnp.asarray(v) for k, v in a.items()}, meta=meta)

  # ---- persistence (npz + json, no pickle) ----
  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes one compressed .npz file: the arrays plus a JSON metadata member."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
      f.write(save_bytes(self))

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> SGTrie:
    """Reads a file written by `save`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not an SGTrie file (or of an unknown version).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"SGTrie file {path!r} does not exist")
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
      raise ValueError(f"{path!r} is not an SGTrie file (.npz written by SGTrie.save): {e}") from e
    if "meta_json" not in arrays:
      raise ValueError(f"{path!r} is not an SGTrie file: no metadata member 'meta_json'")
    try:
      meta = json.loads(arrays.pop("meta_json").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path!r}: unreadable SGTrie metadata ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
      raise ValueError(f"{path!r}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                       f"expected {FORMAT!r} version {FORMAT_VERSION}")
    fields = {f.name for f in dataclasses.fields(TrieMeta)}
    tm = TrieMeta(**{k: (tuple(v) if k == "grams" else v) for k, v in meta.items() if k in fields})
    return cls.from_numpy(arrays, tm)

  def check_tokenizer(self, token_bytes: Sequence[bytes | None]) -> None:
    """Raises ValueError unless `token_bytes` is the table the trie was built from."""
    fp = table_fingerprint(token_bytes)
    if self.meta.fingerprint and fp != self.meta.fingerprint:
      raise ValueError(f"tokenizer mismatch: the trie was built for {self.meta.tokenizer!r} "
                       f"(vocabulary fingerprint {self.meta.fingerprint}), got fingerprint {fp}")


def save_bytes(trie: SGTrie) -> bytes:
  """The bytes `SGTrie.save` would write (for size checks and embedding)."""
  buf = io.BytesIO()
  meta = {"format": FORMAT, "version": FORMAT_VERSION, **dataclasses.asdict(trie.meta)}
  meta["grams"] = list(meta["grams"])
  arrays = {k: np.asarray(getattr(trie, k)) for k in _ARRAYS}
  arrays["meta_json"] = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                                      np.uint8)
  np.savez_compressed(buf, **arrays)
  return buf.getvalue()
