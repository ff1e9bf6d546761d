"""Evaluation benchmarks: the paper's protocol per benchmark, and loading from JSONL or the Hub.

A benchmark is a list of examples, each a dict with at least "id" (str),
"problem" (str) and "answer" (str; the gold answer); other fields are kept
(a reward may use them). Sources:

* a JSONL file with those fields (one object per line);
* `hf:<dataset>[:<config>][@<split>]`, loaded with the `datasets` package
  (not a dependency of hicra-jax; install it to use Hub sources). Rows are
  mapped to the fields above: problem from "problem"/"question"/"Problem",
  answer from "answer"/"final_answer"/"Answer"/"expected_answer" (a GSM8K
  solution keeps the text after its last "####", thousands commas removed; a
  list keeps its first element, "$" stripped), id from "id"/"unique_id"/
  "problem_id"/"idx" or the row index.

Benchmarks with images (MathVista-style JSONL): a row may name `image` (a
path) or `images` (a list of paths), relative to the JSONL file's folder or
absolute; the example gets "images" (absolute paths, each checked to exist)
and "where" (file:line). "pid" is also read as the id (MathVista, EMMA), and a
row's "choices" (a list) are appended to the problem text as "Choices:" lines
"(A) ...", "(B) ...". The gold answer stays the row's "answer". Hub sources
with images are not read: convert them to JSONL with local image files.

A spec names a benchmark: `"gsm8k"` (found under a data folder, or its default
Hub source where it has one), `"gsm8k=path/to/file.jsonl"` or
`"aime25=hf:math-ai/aime25@test"`. Nothing here depends on any particular
folder at run time; the test fixtures live in the project's shared data folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hicra_jax.data.image_paths import image_paths, names_images
from hicra_jax.data.jsonl import read_jsonl_numbered


@dataclasses.dataclass(frozen=True)
class BenchmarkInfo:
  """The protocol of a known benchmark.

  Attributes:
    name: the short name used in configs.
    display: the column title in reports (as in the paper's Table 1).
    k: samples per problem by default (avg@k): 32 for AIME, 4 for AMC23, 1 else.
    folder_names: folder / file stems searched in a data folder.
    hub: a default `hf:` source, for the benchmarks whose canonical Hub copy is
      unambiguous; None otherwise.
  """

  name: str
  display: str
  k: int
  folder_names: tuple[str, ...]
  hub: str | None = None


# In the column order of the paper's Table 1, then GSM8K.
KNOWN_BENCHMARKS: dict[str, BenchmarkInfo] = {b.name: b for b in (
    BenchmarkInfo("aime24", "AIME24", 32, ("aime24", "aime_2024"), "hf:HuggingFaceH4/aime_2024@train"),
    BenchmarkInfo("aime25", "AIME25", 32, ("aime25", "aime_2025")),
    BenchmarkInfo("math500", "MATH500", 1, ("math500", "math_500"), "hf:HuggingFaceH4/MATH-500@test"),
    BenchmarkInfo("amc23", "AMC23", 4, ("amc23",)),
    BenchmarkInfo("minerva", "Minerva", 1, ("minerva", "minerva_math")),
    BenchmarkInfo("olympiadbench", "Olympiad", 1, ("olympiadbench", "olympiad_bench")),
    BenchmarkInfo("gsm8k", "GSM8K", 1, ("gsm8k",), "hf:openai/gsm8k:main@test"),
    # The paper's vision-language benchmarks (Table 2): MathVista-style JSONL with local
    # images (see the module docstring); k = 1, pass@1 at temperature 0.6.
    BenchmarkInfo("mathvista", "MathVista", 1, ("mathvista",)),
    BenchmarkInfo("mathvision", "MathVision", 1, ("mathvision", "math_vision")),
    BenchmarkInfo("mathverse", "MathVerse", 1, ("mathverse",)),
    BenchmarkInfo("emma", "EMMA", 1, ("emma",)),
)}
PAPER_BENCHMARKS = ("aime24", "aime25", "math500", "amc23", "minerva", "olympiadbench")
PAPER_VLM_BENCHMARKS = ("mathvista", "mathvision", "mathverse", "emma")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HUB = re.compile(r"hf:(?P<dataset>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?"
                  r"(?:@(?P<split>[\w.-]+))?")


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A loaded benchmark.

  Attributes:
    name: short name (config spelling).
    display: report column title.
    k: samples per problem.
    source: where the examples came from (a path or an `hf:` source).
    examples: dicts with str "id", "problem" and "answer" (and any other fields).
  """

  name: str
  display: str
  k: int
  source: str
  examples: tuple[Mapping[str, Any], ...]


def info(name: str) -> BenchmarkInfo:
  """The protocol of a benchmark name; an unknown name gets k=1 and itself as title."""
  return KNOWN_BENCHMARKS.get(name.lower(), BenchmarkInfo(name, name, 1, (name,)))


def parse_spec(spec: str) -> tuple[str, str | None]:
  """Splits "name" or "name=source" into (name, source or None).

  Raises:
    ValueError: a malformed name or source.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"a benchmark spec must be a non-empty string, got {spec!r}")
  name, sep, source = spec.strip().partition("=")
  name = name.strip()
  if not _NAME.fullmatch(name):
    raise ValueError(f"benchmark name {name!r} in {spec!r}: expected letters, digits, '_', '-' "
                     "or '.' (e.g. 'gsm8k' or 'gsm8k=path/to/test.jsonl')")
  if not sep:
    return name, None
  source = source.strip()
  if not source:
    raise ValueError(f"benchmark spec {spec!r} has an empty source after '='")
  if source.startswith("hf:") and not _HUB.fullmatch(source):
    raise ValueError(f"Hub source {source!r}: expected hf:<dataset>[:<config>][@<split>]")
  return name, source


def resolve_source(spec: str, data_dir: str | None = None) -> tuple[str, str]:
  """(name, source) of a spec: the explicit source, a file under `data_dir`, or the Hub default.

  Under `data_dir`, for each folder name f of the benchmark, the candidates are
  `f/f_test.jsonl`, `f/test.jsonl`, `f_test.jsonl` and `f.jsonl` (the first
  that exists wins).

  Raises:
    ValueError: malformed spec, or a bare name with no file under `data_dir`
      and no default Hub source.
  """
  name, source = parse_spec(spec)
  if source is not None:
    return name, source
  folder_names = info(name).folder_names
  if data_dir:
    tried = []
    for f in folder_names:
      for candidate in (os.path.join(data_dir, f, f"{f}_test.jsonl"),
                        os.path.join(data_dir, f, "test.jsonl"),
                        os.path.join(data_dir, f"{f}_test.jsonl"),
                        os.path.join(data_dir, f"{f}.jsonl")):
        tried.append(candidate)
        if os.path.isfile(candidate):
          return name, candidate
    if info(name).hub is None:
      raise ValueError(f"benchmark {name!r}: none of {tried} exists; give "
                       f"'{name}=path/to/file.jsonl' or '{name}=hf:<dataset>'")
  hub = info(name).hub
  if hub is None:
    raise ValueError(f"benchmark {name!r} has no default source; set a data folder holding "
                     f"{folder_names[0]}/{folder_names[0]}_test.jsonl, or give "
                     f"'{name}=path/to/file.jsonl' or '{name}=hf:<dataset>[:<config>][@<split>]'")
  return name, hub


def check_specs(specs: Sequence[str], data_dir: str | None = None) -> list[tuple[str, str]]:
  """(name, source) of each spec; local sources must exist and names be distinct (no I/O
  beyond file checks).

  Raises:
    ValueError: naming the index of the first bad spec ("benchmarks[i]").
  """
  out = []
  for i, spec in enumerate(specs):
    try:
      name, source = resolve_source(spec, data_dir)
    except ValueError as e:
      raise ValueError(f"benchmarks[{i}] = {spec!r}: {e}") from e
    if not source.startswith("hf:") and not os.path.isfile(source):
      raise ValueError(f"benchmarks[{i}] = {spec!r}: expected an existing file ({source!r})")
    out.append((name, source))
  names = [name for name, _ in out]
  if len(set(names)) != len(names):
    raise ValueError(f"benchmarks = {list(specs)!r}: expected distinct benchmark names")
  return out


# ------------------------------------------------------------------ loading


_PROBLEM_FIELDS = ("problem", "question", "Problem", "Question", "prompt")
_ANSWER_FIELDS = ("answer", "final_answer", "Answer", "expected_answer", "solution_answer")
_ID_FIELDS = ("id", "unique_id", "problem_id", "ID", "idx", "index", "pid")


def _answer_str(value: Any) -> str | None:
  if isinstance(value, (list, tuple)):
    value = value[0] if value else None
    if isinstance(value, str):
      value = value.strip().strip("$").strip()
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if isinstance(value, (int, float)):
    return str(value)
  if not isinstance(value, str):
    return None
  if "####" in value:  # a GSM8K solution: the final answer follows the last ####
    value = value.rsplit("####", 1)[1].strip().replace(",", "")
  return value.strip()


def to_example(row: Mapping[str, Any], index: int, where: str = "", *,
               image_dir: str | None = None, line: int | None = None) -> dict[str, Any]:
  """A benchmark example (str id, problem, answer; other fields kept) from a raw row.

  image_dir: the folder image paths resolve against (a JSONL file's); None: a
  row that names images is an error. line: the row's line in its file (messages).

  Raises:
    ValueError: no problem text, no usable answer, or a bad or missing image
      (the message names the row).
  """
  problem = next((row[f] for f in _PROBLEM_FIELDS if isinstance(row.get(f), str)), None)
  answer = next((a for a in (_answer_str(row.get(f)) for f in _ANSWER_FIELDS if f in row)
                 if a), None)
  if problem is None or not problem.strip():
    raise ValueError(f"{where}row {index}: no problem text (expected one of {_PROBLEM_FIELDS})")
  if answer is None:
    raise ValueError(f"{where}row {index}: no answer (expected one of {_ANSWER_FIELDS})")
  rid = next((row[f] for f in _ID_FIELDS if row.get(f) is not None), index)
  example = dict(row)
  example.update(id=str(rid), problem=problem, answer=answer)
  if names_images(row):
    place = f"{where}line {line} (id {rid})" if line is not None else f"{where}row {index}"
    if image_dir is None:
      raise ValueError(f"{place}: names images; images are read from JSONL benchmarks only "
                       "(convert the source to JSONL with local image files)")
    example["images"] = image_paths(row, base_dir=image_dir, where=place)
    example["where"] = place
    choices = row.get("choices")
    if isinstance(choices, (list, tuple)) and choices:
      example["problem"] = problem + "\nChoices:\n" + "\n".join(
          f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))
  return example


def _load_hub(source: str, loader: Callable[..., Iterable[Mapping[str, Any]]] | None):
  m = _HUB.fullmatch(source)
  if m is None:
    raise ValueError(f"Hub source {source!r}: expected hf:<dataset>[:<config>][@<split>]")
  if loader is None:
    try:  # an optional package, needed by Hub sources only
      import datasets  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"loading {source!r} needs the `datasets` package (pip install "
                        "datasets), or give the benchmark as a JSONL path") from e
    loader = datasets.load_dataset
  args = [m.group("dataset")] + ([m.group("config")] if m.group("config") else [])
  return loader(*args, split=m.group("split") or "test")


def load_benchmark(spec: str, *, data_dir: str | None = None, limit: int = 0,
                   hub_loader: Callable[..., Iterable[Mapping[str, Any]]] | None = None
                   ) -> Benchmark:
  """Loads a benchmark from its spec (see the module docstring).

  Args:
    spec: "name", "name=path.jsonl" or "name=hf:dataset[:config][@split]".
    data_dir: folder searched for bare names (see `resolve_source`).
    limit: keep the first `limit` problems (0: all).
    hub_loader: replaces `datasets.load_dataset` (called as
      `loader(dataset[, config], split=split)`; must return an iterable of
      row mappings).

  Returns:
    The `Benchmark` with the protocol's display name and k.

  Raises:
    ValueError: bad spec, unreadable rows, duplicate ids, or no examples.
    ImportError: a Hub source without the `datasets` package.
  """
  name, source = resolve_source(spec, data_dir)
  if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
    raise ValueError(f"limit must be an int >= 0 (0: all), got {limit!r}")
  lines, image_dir = None, None
  if source.startswith("hf:"):
    rows = _load_hub(source, hub_loader)
  else:
    if not os.path.isfile(source):
      raise ValueError(f"benchmark {name!r}: no such file {source!r}")
    numbered = read_jsonl_numbered(source)
    rows, lines = [row for _, row in numbered], [line for line, _ in numbered]
    image_dir = os.path.dirname(source) or "."
  examples = []
  for i, row in enumerate(rows):
    if limit and len(examples) >= limit:
      break
    examples.append(to_example(row, i, where=f"{source}: ", image_dir=image_dir,
                               line=None if lines is None else lines[i]))
  if not examples:
    raise ValueError(f"benchmark {name!r}: {source!r} holds no examples")
  ids = [e["id"] for e in examples]
  if len(set(ids)) != len(ids):
    dup = next(i for i in ids if ids.count(i) > 1)
    raise ValueError(f"benchmark {name!r}: duplicate problem id {dup!r} in {source!r}")
  meta = info(name)
  return Benchmark(name=name, display=meta.display, k=meta.k, source=source,
                   examples=tuple(examples))


def load_benchmarks(specs: Sequence[str], *, data_dir: str | None = None,
                    limit: int = 0) -> list[Benchmark]:
  """`load_benchmark` for each spec; names must be distinct."""
  out = [load_benchmark(s, data_dir=data_dir, limit=limit) for s in specs]
  names = [b.name for b in out]
  if len(set(names)) != len(names):
    raise ValueError(f"benchmark names must be distinct, got {names}")
  return out
