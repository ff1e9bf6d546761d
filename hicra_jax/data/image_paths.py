"""Which images a JSONL row names (`image` or `images`) and where they are.

Kept apart from data/images.py (numpy, PIL, transformers' processor) so that
listing examples and validating configs import nothing heavy.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

IMAGE_FIELDS = ("image", "images")


def names_images(row: Mapping[str, Any]) -> bool:
  """Whether a row names images: `image` or `images` present and not None, "" or []."""
  for field in IMAGE_FIELDS:
    value = row.get(field)
    if value is not None and not (isinstance(value, (str, list, tuple)) and len(value) == 0):
      return True
  return False


def image_paths(row: Mapping[str, Any], *, base_dir: str, where: str) -> list[str] | None:
  """The absolute paths of a row's `image` / `images`, or None when it names none
  (`names_images`).

  Raises:
    ValueError: both fields, a value that is not a path or a non-empty list of
      paths, or a path that does not exist (the message names `where`).
  """
  present = [f for f in IMAGE_FIELDS if names_images({f: row.get(f)})]
  if not present:
    return None
  if len(present) > 1:
    raise ValueError(f"{where}: has both 'image' and 'images'; expected one of them")
  value = row[present[0]]
  values = [value] if isinstance(value, str) else value
  if (not isinstance(values, (list, tuple)) or not values
      or not all(isinstance(v, str) and v for v in values)):
    raise ValueError(f"{where}: {present[0]!r} = {value!r}; expected an image path or a "
                     "non-empty list of image paths")
  out = []
  for v in values:
    path = os.path.abspath(os.path.join(base_dir, os.path.expanduser(v)))
    if not os.path.isfile(path):
      raise ValueError(f"{where}: image {v!r} does not exist ({path}; relative paths are "
                       f"resolved against {os.path.abspath(base_dir)!r})")
    out.append(path)
  return out
