"""Answer extraction from model text: pure, linear-time string functions.

Every function here is safe on hostile input: no regular expression that can
backtrack badly, scans bounded by `max_chars` past the point of interest, and no
evaluation of anything. Long texts cost one C-level `rfind` over the text.

Equality: extracted answers are returned verbatim (a substring of the input,
stripped of surrounding whitespace); normalization lives in `normalize.py`.
"""

from __future__ import annotations

import re

# Longest answer (characters inside the box) that extraction returns. MATH-style
# answers are a few dozen characters; a longer "answer" is junk or an attack.
MAX_ANSWER_CHARS = 2048

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# An escaped character (\{, \}, \\, ...) or a brace; used to match braces.
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
# The argument of `\boxed 5` (no braces): one run of non-space characters.
_UNBRACED_ARG = re.compile(r"[^\s$]+")
_UNBRACED_TRAILING = ".,;:"


def extract_boxed(text: str, *, max_chars: int = MAX_ANSWER_CHARS) -> str | None:
  """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`.

  Braces nest (`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`) and escaped braces
  `\\{`, `\\}` do not count (`\\boxed{\\{1, 2\\}}` gives `\\{1, 2\\}`). The
  brace-less form `\\boxed 5` gives the run of non-space characters after the
  command, without trailing `.,;:` (so "is \\boxed 18." gives "18").

  Only the last occurrence of either command counts: when it is malformed (no
  closing brace, no argument) or its content is longer than `max_chars`,
  the result is None even when an earlier box is well formed.

  Args:
    text: model output (any length; only the tail after the last command is
      scanned, and at most `max_chars` characters of it).
    max_chars: the longest content returned.

  Returns:
    The stripped content (possibly "" for `\\boxed{}`), or None when there is no
    usable box. Never raises for a str input.
  """
  if not isinstance(text, str):
    return None
  start, command = _last_command(text)
  if start < 0:
    return None
  return _box_argument(text, start + len(command), max_chars)


def extract_all_boxed(text: str, *, max_chars: int = MAX_ANSWER_CHARS) -> list[str]:
  """The contents of every well-formed `\\boxed{...}` / `\\fbox{...}` in `text`, in order.

  Each box is read as `extract_boxed` reads the last one; malformed boxes and
  contents longer than `max_chars` are left out. Never raises for a str input.
  """
  if not isinstance(text, str):
    return []
  found, end = [], len(text)
  while True:
    start, command = _last_command(text[:end])
    if start < 0:
      return found[::-1]
    argument = _box_argument(text, start + len(command), max_chars)
    if argument is not None:
      found.append(argument)
    end = start


def _last_command(text: str) -> tuple[int, str]:
  """(index, command) of the last `\\boxed` / `\\fbox` that is a whole command name."""
  best, best_cmd = -1, ""
  for command in _BOX_COMMANDS:
    end = len(text)
    while True:
      i = text.rfind(command, 0, end)
      if i < 0:
        break
      nxt = text[i + len(command):i + len(command) + 1]
      if not nxt.isalpha():  # `\boxedfoo` is another command
        if i > best:
          best, best_cmd = i, command
        break
      end = i
  return best, best_cmd


def _box_argument(text: str, pos: int, max_chars: int) -> str | None:
  """The argument of a box command whose name ends at `pos`."""
  n = len(text)
  i = pos
  while i < n and i - pos <= max_chars and text[i] in " \t":
    i += 1
  if i >= n:
    return None
  if text[i] != "{":
    if text[i].isspace() or i == pos:
      return None  # `\boxed` then a newline, or directly followed by punctuation
    match = _UNBRACED_ARG.match(text, i, min(n, i + max_chars + 1))
    if match is None:
      return None
    arg = match.group(0).rstrip(_UNBRACED_TRAILING)
    if len(match.group(0)) > max_chars or not arg or "{" in arg or "}" in arg:
      return None
    return arg
  depth = 0
  limit = min(n, i + max_chars + 2)
  for m in _BRACE_OR_ESCAPE.finditer(text, i, limit):
    token = m.group(0)
    if token == "{":
      depth += 1
    elif token == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1:m.start()].strip()
  return None  # unclosed within the limit


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_tagged(text: str, tag: str = "answer", *,
                   max_chars: int = MAX_ANSWER_CHARS) -> str | None:
  """The stripped content of the last `<tag>...</tag>` (reasoning-gym's format).

  Args:
    text: model output.
    tag: the tag name (letters, digits, `_` and `-`).
    max_chars: the longest content returned (longer gives None).

  Returns:
    The content, or None when there is no closed tag pair.
  """
  if not isinstance(text, str):
    return None
  if not re.fullmatch(r"[A-Za-z0-9_-]+", tag):
    raise ValueError(f"tag must be letters, digits, '_' or '-', got {tag!r}")
  open_tag, close_tag = f"<{tag}>", f"</{tag}>"
  end = text.rfind(close_tag)
  if end < 0:
    return None
  start = text.rfind(open_tag, 0, end)
  if start < 0:
    return None
  content = text[start + len(open_tag):end].strip()
  return content if len(content) <= max_chars else None


# GSM8K-style final answers. Numbers: optional sign and $, digits with optional
# thousands commas and decimals. Bounded quantifiers keep the scan linear.
_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_HASHES_RE = re.compile(r"####\s{0,8}(" + _NUMBER + r")")
_ANSWER_IS_RE = re.compile(
    r"answer\s{0,4}(?:is\s{0,4}:?|:|=)\s{0,4}(?:\*\*)?\s{0,4}(" + _NUMBER + r")", re.IGNORECASE)
# The tail of a text searched for a GSM8K-style answer.
GSM8K_TAIL_CHARS = 4096


def extract_gsm8k_answer(text: str, *, tail_chars: int = GSM8K_TAIL_CHARS) -> str | None:
  """The final answer of a GSM8K-style solution, first rule that applies:

  1. the last `\\boxed{...}` (see `extract_boxed`);
  2. the number after the last `####` (the dataset's own format);
  3. the number after the last "answer is" / "answer:";
  4. the last number in the text.

  Rules 2-4 look at the last `tail_chars` characters only.

  Args:
    text: model output.
    tail_chars: how much of the end of the text rules 2-4 scan.

  Returns:
    The answer string as written (e.g. "$1,234.50"), or None.
  """
  if not isinstance(text, str):
    return None
  boxed = extract_boxed(text)
  if boxed is not None:
    return boxed
  tail = text[-tail_chars:]
  for pattern in (_HASHES_RE, _ANSWER_IS_RE):
    last = None
    for last in pattern.finditer(tail):
      pass
    if last is not None:
      return last.group(1).strip()
  last = None
  for last in _NUMBER_RE.finditer(tail):
    pass
  return last.group(0).strip() if last is not None else None
