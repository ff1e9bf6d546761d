"""The one JSONL reader (datasets, benchmarks, SG extraction inputs)."""

from __future__ import annotations

import json
from typing import Any


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The JSON objects of a JSONL file (blank lines skipped).

  Raises:
    ValueError: a line that is not a JSON object (the message names the line).
  """
  return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str) -> list[tuple[int, dict[str, Any]]]:
  """(line number from 1, object) of each non-blank line of a JSONL file (`read_jsonl`)."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ValueError(f"{path}:{number}: not valid JSON: {e}") from e
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
      rows.append((number, row))
  return rows
