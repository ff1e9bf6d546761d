"""Answer normalization and exact numeric comparison: the cheap, pure fast path.

`math-verify` does the real parsing and symbolic equivalence (in a sandboxed
worker, see `pool.py`). This module holds only what the tests showed it misses
or what must be fast enough to grade GSM8K-style answers without sympy:

* GSM8K-style numbers: `$1,234.50`, `\\$18`, `18.` (trailing period),
  `18 dollars`, `\\text{18 dollars}`, `1\\,000` / `1{,}000` / `1 000`
  (thousands separators), `1.5e3` (scientific e-notation).
* Exact comparison of plain numbers with `decimal.Decimal` (no float rounding,
  no exponent expansion: `1e999999999` is compared, never computed).

All functions are pure, linear-time on inputs capped at `MAX_NORMALIZE_CHARS`,
and never raise for a str input.
"""

from __future__ import annotations

import dataclasses
import decimal
import re

MAX_NORMALIZE_CHARS = 4096

_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textnormal|mbox|mathrm|mathbf)\s{0,4}\{")
_UNICODE = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00a0": " ", "\u2009": " ",
                          "\u202f": " ", "\u2007": " "})
# A thin-space / group separator between digit groups of three: 1\,000, 1{,}000, 1~000.
_GROUP_SEP = re.compile(r"(?<=\d)(?:\\[,;:! ]|~|\{,\}|,\\!\s?)(?=\d{3}(?!\d))")
_DFRAC = re.compile(r"\\[dt]frac(?![A-Za-z])")
_DOLLAR = re.compile(r"\\\$")
_NUM = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
# A number followed by a unit: "\text{ cm}" (any letters), or after whitespace bare words
# of >= 2 letters ("18 dollars"; "4xy" is algebra, not a unit).
_NUM_UNIT = re.compile(
    r"(?P<num>" + _NUM + r")(?:"
    r"\s{0,8}\\(?:text|mbox|mathrm|textrm)\s{0,4}\{\s{0,8}(?P<tunit>[A-Za-z][A-Za-z .\-/]{0,40})\}"
    r"|\s{1,8}(?P<unit>[A-Za-z]{2,40}(?:[ .\-/]{1,2}[A-Za-z]{1,40}){0,4}))\.?")
# Bare words that are mathematics, not units ("2 pi", "3 and 4").
_NOT_UNITS = frozenset({"pi", "and", "or", "to", "sqrt", "infty", "mod", "pmod", "cdot", "times",
                        "dots", "ldots", "cdots", "frac", "log", "ln", "sin", "cos", "tan", "plus",
                        "minus", "over", "divided"})
_THOUSANDS_COMMA = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_THOUSANDS_SPACE = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")
# Scientific notation: 1.5e3, 1.5E+3, 1.5 \times 10^{3}, 1.5\cdot 10^3 (mantissa with at
# most 200 digits, exponent with at most 6).
_E_NOTATION = re.compile(r"(?P<m>-?(?:\d{1,200}(?:\.\d{1,200})?|\.\d{1,200}))[eE](?P<e>[+-]?\d{1,6})")
_TIMES_TEN = re.compile(
    r"(?P<m>-?(?:\d{1,200}(?:\.\d{1,200})?|\.\d{1,200}))\s{0,4}\\(?:times|cdot)\s{0,4}10\s{0,4}"
    r"\^\s{0,4}(?:\{\s{0,4}(?P<e1>[+-]?\d{1,6})\s{0,4}\}|(?P<e2>\d))")
_PLAIN_NUMBER = re.compile(
    r"(?P<sign>-)?(?P<digits>\d{1,200}(?:\.\d{0,200})?|\.\d{1,200})"
    r"(?:\\times10\^\{(?P<exp>[+-]?\d{1,6})\})?\s{0,4}(?P<pct>\\?%)?")


def normalize_answer(answer: str) -> str:
  """A canonical string form of a short answer, for exact string comparison.

  Rules, in order: strip; unicode minus/dashes and non-breaking or thin
  spaces become ASCII; unwrap an enclosing `$...$`, `$$...$$`, `\\(...\\)` or
  `\\[...\\]`; unwrap a whole-answer `\\text{...}` (also `\\textbf`, `\\mbox`,
  `\\mathrm`, ...); `\\dfrac`/`\\tfrac` become `\\frac`; `\\$` is removed
  (and a leading bare `$`); group separators between digit triples (`\\,`,
  `\\!`, `~`, `{,}`, MATH's `,\\!`) become commas; one trailing period is dropped; a number
  followed by a unit (`\\text{...}` or bare words such as "dollars", not
  "pi"/"and") keeps only the number; thousands separators of a whole-answer
  number (commas, or single spaces) are removed; a whole-answer number in
  scientific notation (`2e27`, `2 \\times 10^{27}`, `2\\cdot10^27`) becomes
  `2\\times10^{27}` (the form math-verify reads; it misreads `2e27`).

  Two answers with equal non-empty normalized forms are equal. The converse
  does not hold (use `math-verify` for that).

  Args:
    answer: a short answer string (e.g. the content of a box). Longer than
      `MAX_NORMALIZE_CHARS` is returned stripped but otherwise unchanged.

  Returns:
    The normalized string ("" for blank input).
  """
  if not isinstance(answer, str):
    return ""
  s = answer.strip()
  if len(s) > MAX_NORMALIZE_CHARS:
    return s
  s = s.translate(_UNICODE).strip()
  for _ in range(3):
    before = s
    s = _unwrap(s)
    if s == before:
      break
  s = _DFRAC.sub(r"\\frac", s)
  s = _DOLLAR.sub("", s).strip()
  if s.startswith("$") and "$" not in s[1:]:
    s = s[1:].strip()
  s = _GROUP_SEP.sub(",", s)
  if s.endswith(".") and not s.endswith("..") and len(s) > 1:
    s = s[:-1].rstrip()
  m = _NUM_UNIT.fullmatch(s)
  if m is not None:
    unit = m.group("unit")
    if m.group("tunit") is not None or unit.split()[0].lower() not in _NOT_UNITS:
      s = m.group("num")
  if _THOUSANDS_COMMA.fullmatch(s):
    s = s.replace(",", "")
  elif _THOUSANDS_SPACE.fullmatch(s):
    s = s.replace(" ", "")
  m = _E_NOTATION.fullmatch(s) or _TIMES_TEN.fullmatch(s)
  if m is not None:
    exponent = m.groupdict().get("e") or m.groupdict().get("e1") or m.groupdict().get("e2")
    exponent = exponent.lstrip("+")
    s = f"{m.group('m')}\\times10^{{{exponent}}}"
  return s


def _unwrap(s: str) -> str:
  """One layer of math delimiters or of a whole-answer text command, removed."""
  for left, right in _WRAPPERS:
    if len(s) >= len(left) + len(right) + 1 and s.startswith(left) and s.endswith(right):
      inner = s[len(left):-len(right)]
      if left == "$" and "$" in inner:
        continue  # "$a$ and $b$": not one wrapper
      return inner.strip()
  m = _TEXT_WRAPPER.match(s)
  if m is not None and s.endswith("}") and _closing_brace(s, m.end() - 1) == len(s) - 1:
    return s[m.end():-1].strip()
  return s


def _closing_brace(s: str, open_index: int) -> int:
  """Index of the brace closing the one at `open_index` (escapes skipped), or -1."""
  depth = 0
  i = open_index
  while i < len(s):
    c = s[i]
    if c == "\\":
      i += 2
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return i
    i += 1
  return -1


@dataclasses.dataclass(frozen=True)
class PlainNumber:
  """A plain decimal number read from an answer.

  Attributes:
    value: the exact value (percent not applied: "50%" has value 50).
    percent: written with a percent sign.
    integer: written without a decimal point or exponent.
  """

  value: decimal.Decimal
  percent: bool
  integer: bool


def parse_plain_number(answer: str) -> PlainNumber | None:
  """Reads a normalized answer that is exactly one plain number.

  Accepted: optional "-", digits with an optional decimal part (or ".5"), an
  optional exponent in the normalized form `\\times10^{d}` (at most 6 digits)
  and an optional `%` / `\\%`.
  Anything else (fractions, LaTeX, "1/2", "10^{3}") gives None.

  Args:
    answer: the output of `normalize_answer`.

  Returns:
    The number, or None.
  """
  if not isinstance(answer, str) or len(answer) > 420:
    return None
  m = _PLAIN_NUMBER.fullmatch(answer)
  if m is None:
    return None
  text = (m.group("sign") or "") + m.group("digits")
  if m.group("exp") is not None:
    text += "e" + m.group("exp")
  try:
    value = decimal.Decimal(text)
  except decimal.InvalidOperation:
    return None
  return PlainNumber(value=value, percent=m.group("pct") is not None,
                     integer="." not in m.group("digits") and m.group("exp") is None)


def numbers_equal(a: PlainNumber, b: PlainNumber) -> bool | None:
  """Exact comparison of two plain numbers; None when it cannot decide alone.

  Equal values with the same percent flag are equal. With a percent sign on
  one side only, both readings count (as in math-verify): "12.5%" equals 12.5
  (the sign as a unit) and 0.125. Two different integers (same percent flag)
  are different. Everything else (different non-integers that `math-verify`
  might consider equal after rounding) is left to the symbolic check.
  """
  if a.percent != b.percent:
    pct, plain = (a, b) if a.percent else (b, a)
    if pct.value == plain.value or pct.value == plain.value * 100:
      return True
    return None
  if a.value == b.value:
    return True
  if a.integer and b.integer:
    return False
  return None


def quick_equal(answer: str, gold: str) -> bool | None:
  """The fast decision for a (answer, gold) pair: True, False or None (undecided).

  True when the normalized forms are equal and non-empty, or both are plain
  numbers that `numbers_equal` finds equal; False when `numbers_equal` says so;
  None otherwise (the pair needs `math-verify`).
  """
  a, g = normalize_answer(answer), normalize_answer(gold)
  if not a or not g:
    return None
  if a == g:
    return True
  na, ng = parse_plain_number(a), parse_plain_number(g)
  if na is None or ng is None:
    return None
  return numbers_equal(na, ng)
