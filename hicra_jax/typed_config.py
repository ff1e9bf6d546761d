"""Frozen, typed config sections that check themselves.

A section is a frozen dataclass: each field has a type, a default and, in a
trailing comment, the description `hicra-jax CMD --help` prints. Its
`__post_init__` checks every field with a `FieldChecker`, which names a bad
field by its dotted path ("rollout.group_size") exactly as the ConfigDict
checkers of `hicra_jax.config` do, and raises the same `ConfigError`:

  @dataclasses.dataclass(frozen=True)
  class EvalConfig:
    SECTION: ClassVar[str] = "eval"
    every: int = 0  # steps between evaluations (0: never)

    def __post_init__(self):
      FieldChecker(self).integer("every", minimum=0)

The command line speaks ConfigDict (presets, `--config.a.b=value`): the
default ConfigDict is `to_config_dict(Schema())` and a loaded one becomes typed,
once, with `from_mapping(Schema, config)`.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hicra_jax import config as config_lib

T = TypeVar("T")


def section_name(cls_or_obj: Any) -> str:
  """The dotted prefix of a section class ("" for the top level)."""
  return getattr(cls_or_obj, "SECTION", "")


class FieldChecker:
  """Checks (and normalizes) the fields of a frozen section in its __post_init__.

  Ints given to float fields become floats and lists become tuples, in place,
  so the section is typed and hashable after its checks.
  """

  def __init__(self, section: Any):
    self.section = section
    self.prefix = section_name(section)

  def name(self, field: str) -> str:
    return f"{self.prefix}.{field}" if self.prefix else field

  def value(self, field: str) -> Any:
    return getattr(self.section, field)

  def error(self, field: str, expected: str) -> config_lib.ConfigError:
    """A ConfigError naming `field` of this section, its value and `expected`."""
    return config_lib.field_error(self.name(field), self.value(field), expected)

  def _set(self, field: str, value: Any) -> Any:
    object.__setattr__(self.section, field, value)  # frozen: normalized once, here
    return value

  def integer(self, field: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    return config_lib.checked_int(self.name(field), self.value(field), minimum, maximum)

  def number(self, field: str, *, minimum: float | None = None,
             maximum: float | None = None) -> float:
    return self._set(field, config_lib.checked_float(self.name(field), self.value(field),
                                                    minimum, maximum))

  def boolean(self, field: str) -> bool:
    if not isinstance(self.value(field), bool):
      raise self.error(field, "True or False")
    return self.value(field)

  def choice(self, field: str, choices: Sequence[Any]) -> Any:
    return config_lib.checked_choice(self.name(field), self.value(field), choices)

  def string(self, field: str, *, empty: bool = False) -> str:
    return config_lib.checked_str(self.name(field), self.value(field), empty)

  def path(self, field: str, *, aliases: Sequence[str] = (),
           predicate: Callable[[str], bool] = os.path.exists,
           expected: str = "an existing file or directory") -> str:
    return config_lib.checked_path(self.name(field), self.value(field), aliases, predicate,
                                  expected)

  def auto_or_int(self, field: str, *, minimum: int = 0, expected: str = "") -> str:
    """"auto" or an int >= minimum (a digit string from the command line), stored as a
    string: one type, as in the ConfigDict."""
    value = self.value(field)
    if isinstance(value, str) and value.strip().isdigit():
      value = int(value)
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int)
                            or value < minimum):
      raise self.error(field, expected or f"'auto' or an int >= {minimum}")
    return self._set(field, str(value))

  def int_tuple(self, field: str, *, minimum: int = 1, increasing: bool = False,
                expected: str = "") -> tuple[int, ...]:
    """A non-empty tuple (or list) of ints >= minimum, optionally non-decreasing."""
    value = self.value(field)
    expected = expected or f"a non-empty tuple of ints >= {minimum}"
    if (not isinstance(value, (tuple, list)) or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value)
        or (increasing and list(value) != sorted(value))):
      raise self.error(field, expected)
    return self._set(field, tuple(value))


def section(cls: type[T]) -> T:
  """A dataclass field holding a sub-section with its own defaults."""
  return dataclasses.field(default_factory=cls)


def from_mapping(cls: type[T], values: Any, prefix: str = "") -> T:
  """Builds the (nested) frozen dataclass `cls` from a ConfigDict or a mapping.

  Missing fields take their defaults; an unknown field is a ConfigError naming it.
  Each section checks itself as it is built: sub-sections first, in the order
  `cls` declares them, then `cls` itself.
  """
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  for key in values.keys():
    if key not in names:
      raise config_lib.ConfigError(
          f"unknown config field {prefix + key!r}; expected one of "
          f"{sorted(prefix + n for n in names)}", field=prefix + key)
  kwargs = {}
  for key in (name for name in names if name in values):
    value, kind = values[key], hints[key]
    if dataclasses.is_dataclass(kind):
      if not isinstance(value, (Mapping, config_lib.ConfigDict)):
        raise config_lib.field_error(prefix + key, value, f"a nested config with fields "
                                     f"{[f.name for f in dataclasses.fields(kind)]}")
      value = from_mapping(kind, value, f"{prefix}{key}.")
    kwargs[key] = value
  return cls(**kwargs)


def to_config_dict(obj: Any) -> config_lib.ConfigDict:
  """The ConfigDict of a (nested) dataclass instance; tuples stay tuples."""
  return config_lib.ConfigDict(dataclasses.asdict(obj))


def schema_descriptions(cls: type, prefix: str = "") -> dict[str, str]:
  """{"section.field": description} of a (nested) dataclass, from its source comments."""
  comments = config_lib.source_comments(cls, r"^\s+(\w+)\s*:[^=]*=")
  hints = typing.get_type_hints(cls)
  out: dict[str, str] = {}
  for field in dataclasses.fields(cls):
    if field.name in comments:
      out[prefix + field.name] = comments[field.name]
    if dataclasses.is_dataclass(hints[field.name]):
      out.update(schema_descriptions(hints[field.name], f"{prefix}{field.name}."))
  return out
