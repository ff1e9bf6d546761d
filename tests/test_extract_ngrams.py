"""SG extraction without a model: n-gram normalization, Cluster DF, top-20% selection,
the whole pipeline under fixed cluster labels against a naive reference, input reading
and `extract-sgs` config validation."""

from __future__ import annotations

import collections
import fractions
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hicra_jax import cli
from hicra_jax import config as config_lib
from hicra_jax.commands import extract_sgs
from hicra_jax.planning import extract

# ------------------------------------------------------------- normalization


def test_ngram_normalization():
  text = ("Wait, but let\u2019s try a Different approach. We get $x + 1 = 3$ so x is "
          "two\nand then <<2*3=6>>6 step-by-step we add 12 apples here now")
  occ = list(extract.ngram_occurrences(text, n_min=3, n_max=5))
  keys = [k for k, _ in occ]
  surfaces = dict(occ)
  # One comma is a soft gap: kept in the surface, dropped from the key.
  assert surfaces["wait but let's"] == "wait, but let's"
  # Curly apostrophe straightened; case kept except the first character.
  assert surfaces["let's try a different approach"] == "let's try a Different approach"
  # Breaks: sentence end, math, newline, calculator annotation, numbers.
  assert not any("approach we" in k for k in keys)
  assert "so x is two" in keys and not any("get so" in k for k in keys)
  assert not any("two and" in k for k in keys)
  assert "step-by-step we add" in keys  # a hyphenated word is one word
  assert not any("12" in k or "add apples" in k for k in keys)
  assert "apples here now" in keys
  # Every n in [3, 5] and nothing else.
  assert {len(k.split()) for k in keys} == {3, 4, 5}
  assert extract.document_ngrams(text) == set(keys)
  # keep_numbers=True lets digits in.
  assert "we add 12 apples here" in extract.document_ngrams(text, keep_numbers=True)


def test_latex_environments_and_asy_are_breaks():
  text = ("we see that \\begin{align*} a &= b \\\\ c &= d \\end{align*} and so "
          "[asy]draw(A--B--C);label(A, B, C)[/asy] it follows that")
  keys = extract.document_ngrams(text)
  assert keys == {"we see that", "it follows that"}


# -------------------------------------------- Cluster DF and top-20% selection


def _naive_cluster_df(doc_ids, labels, n_clusters):
  return [sum(1 for ids in doc_ids if any(labels[g] == c for g in ids))
          for c in range(n_clusters)]


def _naive_top(cluster_df, fraction):
  n = len(cluster_df)
  k = max(1, math.ceil(fractions.Fraction(fraction).limit_denominator(10**6) * n))
  return [c for _, c in sorted((-d, c) for c, d in enumerate(cluster_df))][:k]


@given(st.data())
def test_cluster_df_and_selection_match_naive(data):
  n_grams = data.draw(st.integers(1, 30))
  n_clusters = data.draw(st.integers(1, 8))
  labels = np.array(data.draw(st.lists(st.integers(0, n_clusters - 1), min_size=n_grams,
                                       max_size=n_grams)), np.int64)
  doc_ids = [np.array(sorted(ids), np.int64) for ids in data.draw(st.lists(
      st.sets(st.integers(0, n_grams - 1), max_size=6), max_size=25))]
  cdf = extract.cluster_document_frequency(doc_ids, labels, n_clusters)
  assert cdf.tolist() == _naive_cluster_df(doc_ids, labels, n_clusters)
  fraction = data.draw(st.sampled_from([0.2, 0.1, 0.25, 0.5, 1.0, 0.3]))
  assert extract.select_top_clusters(cdf, fraction).tolist() == _naive_top(cdf.tolist(), fraction)


def test_select_top_clusters_exact_size_and_ties():
  # 15 clusters: top 20% is exactly 3 (0.2 * 15 = 3.0000000000000004 in floats).
  cdf = np.array([5] * 15)
  assert extract.select_top_clusters(cdf, 0.2).tolist() == [0, 1, 2]
  assert extract.select_top_clusters(np.array([1, 9, 3, 9, 0]), 0.2).tolist() == [1]
  assert extract.select_top_clusters(np.array([1, 9, 3, 9, 0]), 0.4).tolist() == [1, 3]
  assert extract.select_top_clusters(np.array([], np.int64), 0.2).tolist() == []
  with pytest.raises(ValueError, match="fraction"):
    extract.select_top_clusters(cdf, 0.0)


def test_canonical_labels():
  assert extract.canonical_labels(np.array([7, 7, 2, 9, 2, 7])).tolist() == [0, 0, 1, 2, 1, 0]


# ------------------------------------ the pipeline under fixed cluster labels

VOCAB = ["a", "b", "c", "d", "e"]


def _label_of(key: str) -> int:
  """A fixed clustering: by the first two words (at most 25 clusters)."""
  w = key.split()
  return VOCAB.index(w[0]) * len(VOCAB) + VOCAB.index(w[1])


def _one_hot_embed(keys):
  out = np.zeros((len(keys), len(VOCAB) ** 2), np.float32)
  out[np.arange(len(keys)), [_label_of(k) for k in keys]] = 1.0
  return out


def _naive_extraction(docs, *, min_df, max_candidates, fraction):
  """The paper's procedure written out plainly, for lowercase sentences."""
  doc_sets = []
  for doc in docs:
    grams = set()
    for sentence in doc:
      for n in range(3, 6):
        for i in range(len(sentence) - n + 1):
          grams.add(" ".join(sentence[i:i + n]))
    doc_sets.append(grams)
  df = collections.Counter(g for s in doc_sets for g in s)
  cands = sorted((g for g in df if df[g] >= min_df), key=lambda g: (-df[g], g))
  cands = cands[:max_candidates]
  order = list(dict.fromkeys(_label_of(g) for g in cands))  # clusters by first appearance
  members = {c: [g for g in cands if _label_of(g) == c] for c in order}
  cdf = {c: sum(1 for s in doc_sets if any(g in s for g in members[c])) for c in order}
  k = max(1, math.ceil(fractions.Fraction(fraction).limit_denominator(10**6) * len(order)))
  top = sorted(order, key=lambda c: (-cdf[c], order.index(c)))[:k]
  return sorted(g for c in top for g in members[c]), [cdf[c] for c in order]


@given(docs=st.lists(st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=7),
                              min_size=1, max_size=3), min_size=1, max_size=25),
       min_df=st.integers(1, 3), max_candidates=st.integers(1, 60),
       fraction=st.sampled_from([0.2, 0.5, 1.0]))
def test_pipeline_with_fixed_labels_matches_naive(docs, min_df, max_candidates, fraction):
  texts = [". ".join(" ".join(s) for s in doc) + "." for doc in docs]
  want, want_cdf = _naive_extraction(docs, min_df=min_df, max_candidates=max_candidates,
                                     fraction=fraction)
  result = extract.extract_strategic_grams(
      texts, min_df=min_df, max_candidates=max_candidates, top_fraction=fraction,
      embed_fn=_one_hot_embed)
  assert result.strategic_grams == want
  assert result.cluster_df.tolist() == want_cdf
  meta = result.metadata
  assert meta["clusters"]["n_clusters"] == len(want_cdf)
  assert meta["corpus"]["n_documents"] == len(texts)
  assert sum(c["size"] for c in meta["clusters"]["selected"]) == len(want)


def test_pipeline_empty_corpus_and_no_frequent_ngrams():
  for texts in ([], ["one two three four"]):
    result = extract.extract_strategic_grams(texts, min_df=2, embed_fn=_one_hot_embed)
    assert result.strategic_grams == []
    assert result.metadata["clusters"]["n_clusters"] == 0


def test_kmeans_is_seeded_and_sized():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(40, 8)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  a = extract.cluster_embeddings(emb, algorithm="kmeans", cluster_size=5, seed=3)
  b = extract.cluster_embeddings(emb, algorithm="kmeans", cluster_size=5, seed=3)
  assert a.tolist() == b.tolist()
  assert a.max() + 1 <= 8 and a[0] == 0  # ceil(40 / 5) clusters at most; canonical ids
  with pytest.raises(ValueError, match="algorithm"):
    extract.cluster_embeddings(emb, algorithm="dbscan")


# ------------------------------------------------------------------- input


def test_select_solutions_fields():
  records = [{"completion": "ok one", "reward": 1.0}, {"completion": "bad", "reward": 0.0},
             {"completion": "ok two", "reward": 0.5}, {"completion": "  ", "reward": 1}]
  assert extract.select_solutions(records) == ["ok one", "ok two"]
  assert extract.select_solutions(records, success_threshold=0.7) == ["ok one"]
  records = [{"response": "yes", "correct": True}, {"response": "no", "correct": False}]
  assert extract.select_solutions(records) == ["yes"]
  # No success field: reference solutions, all used.
  assert extract.select_solutions([{"solution": "s1"}, {"solution": "s2"}]) == ["s1", "s2"]
  assert extract.select_solutions([{"x": "t", "ok": 1}], text_field="x",
                                  success_field="ok") == ["t"]
  with pytest.raises(ValueError, match="no text field"):
    extract.select_solutions([{"answer": "1"}])
  with pytest.raises(ValueError, match="record 1 has no field 'reward'"):
    extract.select_solutions([{"text": "a", "reward": 1}, {"text": "b"}])


def test_read_records_jsonl_and_json(tmp_path):
  jsonl = tmp_path / "r.jsonl"
  jsonl.write_text('{"text": "a"}\n\n{"text": "b"}\n')
  assert extract.load_solutions(str(jsonl)) == ["a", "b"]
  js = tmp_path / "r.json"
  js.write_text(json.dumps([{"text": "c", "correct": True}]))
  assert extract.load_solutions(str(js)) == ["c"]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "a"}\nnot json\n')
  with pytest.raises(ValueError, match="bad.jsonl:2"):
    extract.read_records(str(bad))


# ---------------------------------------------------------------- the CLI


def _config(**overrides):
  """The default config with fields replaced, whatever their type (as a config file may)."""
  return config_lib.ConfigDict({**extract_sgs.get_config().to_dict(), **overrides})


def test_extract_sgs_registered_and_default_valid():
  assert "extract-sgs" in cli.COMMANDS
  extract_sgs.validate(extract_sgs.get_config())


@pytest.mark.parametrize("field,value,match", [
    ("input", "/no/such/file.jsonl", "is not a file"),
    ("output", "/no/such/dir/out.json", "existing directory"),
    ("n_min", 0, ">= 1"),
    ("n_max", 2, ">= 3"),
    ("min_df", 0, ">= 1"),
    ("top_fraction", 0.0, r"\(0, 1\]"),
    ("top_fraction", 1.5, "<= 1"),
    ("algorithm", "dbscan", "one of"),
    ("linkage", "ward", "one of"),
    ("distance_threshold", 0.0, "> 0"),
    ("max_candidates", 100_000, "kmeans"),
    ("model", "/no/such/model", "sentence-transformers model directory"),
    ("keep_numbers", 1, "True or False"),
])
def test_extract_sgs_validation(field, value, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    extract_sgs.validate(_config(**{field: value}))


def test_extract_sgs_command_line_overrides(tmp_path):
  data = tmp_path / "a.jsonl"
  data.write_text('{"text": "x"}\n')
  config = cli.load_command_config("extract-sgs", [
      "hicra-jax", f"--config.input={data},{data}", "--config.top_fraction=0.3",
      "--config.algorithm=kmeans", "--config.max_candidates=50000"])
  assert config.top_fraction == 0.3
  assert extract_sgs.input_paths(config.input) == [str(data), str(data)]
  assert extract_sgs.load_documents(config) == ["x", "x"]
