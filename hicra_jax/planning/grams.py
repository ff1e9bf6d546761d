"""Strategic Gram (SG) sets: presets, files, normalization and the matching key.

An SG set is an ordered tuple of distinct phrases. Matching semantics (DESIGN.md,
"Matching semantics of Strategic Grams"):

* entries are stripped of surrounding whitespace;
* the first alphabetic character of a phrase matches either case ("Let's" and
  "let's"); every other character matches literally, except that the straight
  apostrophe ' and the curly apostrophe U+2019 are the same character; a single
  space inside a phrase matches a single space;
* where a phrase begins (ends) with a letter or digit, the character before
  (after) an occurrence must not be a letter or digit; a phrase edge that is
  punctuation ("## step", "hmm,") has no condition on that side. "Letter or
  digit" is Python's `str.isalnum()` (regex `[^\\W_]`);
* a token is a planning token when its character span overlaps an occurrence.

Two entries that match exactly the same occurrences ("Let's" / "let's",
"let's" / "let’s") are duplicates: the first spelling is kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from importlib import resources

APOSTROPHES = ("'", "\u2019")
PRESETS = {"paper": "paper_listing1.json"}
JSON_KEY = "strategic_grams"


def gram_key(gram: str) -> str:
  """The matching key of a phrase: apostrophes straightened, first letter lower-cased.

  Two phrases with the same key match exactly the same occurrences.
  """
  gram = gram.replace(APOSTROPHES[1], APOSTROPHES[0])
  for i, ch in enumerate(gram):
    if ch.isalpha():
      return gram[:i] + _other_case(ch)[0] + gram[i + 1:]
  return gram


def _other_case(ch: str) -> tuple[str, str]:
  """(lower, upper) of one character; a case mapping that is not one character is ignored."""
  lo, up = ch.lower(), ch.upper()
  return (lo if len(lo) == 1 else ch), (up if len(up) == 1 else ch)


def first_alpha_cases(gram: str) -> tuple[int, tuple[str, ...]]:
  """Index of the first alphabetic character and the characters it matches (-1, () if none)."""
  for i, ch in enumerate(gram):
    if ch.isalpha():
      return i, tuple(dict.fromkeys((ch,) + _other_case(ch)))
  return -1, ()


def spelling_variants(gram: str) -> list[str]:
  """Every literal spelling of an occurrence of `gram` (first-letter case x apostrophes)."""
  idx, cases = first_alpha_cases(gram)
  out = [""]
  for i, ch in enumerate(gram):
    if i == idx:
      alts = cases
    elif ch in APOSTROPHES:
      alts = APOSTROPHES
    else:
      alts = (ch,)
    out = [prefix + a for prefix in out for a in alts]
  return list(dict.fromkeys(out))


def normalize_grams(grams: Iterable[str], *, source: str = "grams") -> tuple[str, ...]:
  """Strips entries and removes duplicates (same `gram_key`), keeping the first spelling.

  Args:
    grams: phrases.
    source: names the input in error messages (a preset or file path).

  Returns:
    The SG set, in input order.

  Raises:
    TypeError: an entry is not a string.
    ValueError: an entry is empty after stripping or holds a NUL character, or the set is empty.
  """
  if isinstance(grams, str):
    raise TypeError(f"{source}: expected a sequence of phrases, got a single string {grams!r}")
  seen: dict[str, str] = {}
  for i, gram in enumerate(grams):
    if not isinstance(gram, str):
      raise TypeError(f"{source}: entry {i} is {type(gram).__name__} {gram!r}; expected a string")
    gram = gram.strip()
    if not gram:
      raise ValueError(f"{source}: entry {i} is empty after stripping whitespace")
    if "\x00" in gram:
      raise ValueError(f"{source}: entry {i} {gram!r} contains a NUL character")
    seen.setdefault(gram_key(gram), gram)
  if not seen:
    raise ValueError(f"{source}: the strategic-gram set is empty")
  return tuple(seen.values())


def load_strategic_grams(name_or_path: str | os.PathLike[str]) -> list[str]:
  """Loads an SG set: a preset name, a JSON file or a text file.

  Args:
    name_or_path: `"paper"` (Listing 1 of arXiv 2509.03646, 249 phrases, shipped in
      the package), or a path to
      * a `.json` file holding a list of phrases, or an object with key
        "strategic_grams" (what `hicra-jax extract-sgs` writes);
      * any other file: a text file with one phrase per line (blank lines skipped).

  Returns:
    The phrases, stripped and deduplicated (see `normalize_grams`), in file order.

  Raises:
    ValueError: unknown preset, malformed file, or an empty set.
    FileNotFoundError: the path does not exist.
  """
  if isinstance(name_or_path, str) and name_or_path in PRESETS:
    text = resources.files("hicra_jax.planning").joinpath("data", PRESETS[name_or_path]).read_text(
        encoding="utf-8")
    return list(_from_json(text, f"preset {name_or_path!r}"))
  path = os.fspath(name_or_path)
  if not os.path.exists(path):
    if os.sep not in path and "." not in path:
      raise ValueError(f"unknown strategic-gram preset {path!r}; presets: {sorted(PRESETS)} "
                       "(or give a .json / .txt file path)")
    raise FileNotFoundError(f"strategic-gram file {path!r} does not exist")
  if os.path.isdir(path):
    raise ValueError(f"strategic-gram path {path!r} is a directory; expected a .json or text file")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if path.lower().endswith(".json"):
    return list(_from_json(text, path))
  return list(normalize_grams([line for line in text.splitlines() if line.strip()], source=path))


def _from_json(text: str, source: str) -> tuple[str, ...]:
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{source}: not valid JSON ({e})") from e
  if isinstance(data, dict):
    if JSON_KEY not in data:
      raise ValueError(f"{source}: JSON object without key {JSON_KEY!r} (keys: {sorted(data)}); "
                       f"expected a list of phrases or an object with {JSON_KEY!r}")
    data = data[JSON_KEY]
  if not isinstance(data, list):
    raise ValueError(f"{source}: expected a JSON list of phrases, got {type(data).__name__}")
  return normalize_grams(data, source=source)


def as_gram_tuple(grams: str | os.PathLike[str] | Sequence[str]) -> tuple[str, ...]:
  """A preset name / path (loaded) or a sequence of phrases (normalized)."""
  if isinstance(grams, (str, os.PathLike)):
    return tuple(load_strategic_grams(grams))
  return normalize_grams(grams)
