"""README.md's examples, parsed for the tests that run them (so the README cannot rot).

Fenced ```python blocks are run by tests/test_readme.py; the `hicra-jax eval`,
`generate` and `convert` commands of the fenced ```sh blocks are run, with small
overrides, by the tests named next to the keys below. Each key is a few tokens
that single out one README command; a test looks its command up by its key, so a
README edit that drops or changes the command fails that test instead of leaving
it testing something the README no longer says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Keys of the README commands that tests run (tokens that single out one command).
GENERATE = ("generate", "--config.dtype=bfloat16")       # test_cli.py::test_generate_end_to_end
EVAL_GSM8K = ("eval", "--config.limit=5")                 # test_eval.py::test_end_to_end_...
EVAL_MODEL_PATH = ("eval", "--config.model=/path/to/model")  # test_readme.py
EVAL_TRAINING_RUN = ("eval", "--config.model=runs/quickstart")  # test_train_configs.py::test_quickstart_...
CONVERT = ("convert",)                                    # test_readme.py
TESTED = (GENERATE, EVAL_GSM8K, EVAL_MODEL_PATH, EVAL_TRAINING_RUN, CONVERT)

# Relative paths in the README's commands that name the repository's files (they are
# relative to the checkout); the tests run elsewhere, so these become absolute. Others
# (runs/quickstart, eval_results) stay relative: they resolve in the test's directory.
_REPOSITORY_PREFIXES = ("configs/", "benchmarks/", "../shared/")


def _text() -> str:
  return README.read_text(encoding="utf-8")


def fenced_blocks(language: str) -> list[str]:
  """The README's ```<language> blocks, in order."""
  return re.findall(rf"^```{language}\n(.*?)^```$", _text(), flags=re.M | re.S)


def python_blocks() -> list[str]:
  return fenced_blocks("python")


def shell_commands() -> list[list[str]]:
  """Every command of the README's ```sh blocks as argv (continuations joined, comments cut)."""
  commands = []
  for block in fenced_blocks("sh"):
    for line in block.replace("\\\n", " ").splitlines():
      argv = shlex.split(line, comments=True)
      if argv:
        commands.append(argv)
  return commands


def inline_commands() -> list[list[str]]:
  """`hicra-jax ...` code spans of the README's prose (a span may wrap across lines)."""
  prose = re.sub(r"^```.*?^```$", "", _text(), flags=re.M | re.S)
  return [shlex.split(span.replace("\n", " ")) for span in re.findall(r"`(hicra-jax [^`]+)`", prose)]


def matches(argv: list[str], key: tuple[str, ...]) -> bool:
  return argv[0] == "hicra-jax" and all(token in argv[1:] for token in key)


def readme_command(key: tuple[str, ...]) -> list[str]:
  """The one README ```sh command (argv) that holds every token of `key`."""
  found = [argv for argv in shell_commands() if matches(argv, key)]
  assert len(found) == 1, (f"README.md should hold exactly one `hicra-jax` command with "
                           f"{key}; found {found}")
  return found[0]


def console_script() -> str:
  """The installed `hicra-jax` console script (the one the README's commands call)."""
  script = Path(sys.executable).parent / "hicra-jax"
  found = str(script) if script.exists() else shutil.which("hicra-jax")
  assert found, "the `hicra-jax` console script is not installed; run `make setup`"
  return found


def runnable(argv: list[str], *, replace: dict[str, str] | None = None,
             console: bool = True, **overrides) -> list[str]:
  """The README command `argv`, made runnable from a test's working directory.

  `hicra-jax` becomes the console script (console=False: drops it, for cli.main);
  repository paths become absolute; `replace` maps README placeholders (e.g.
  "/path/to/model") to values, each of which must occur; `overrides` set
  `--config.<field>` values ("__" for "."), replacing the README's value where it
  gives one, else appended.
  """
  out = []
  for token in argv[1:]:
    name, sep, value = token.partition("=")
    if not sep:
      name, value = "", token
    for old, new in (replace or {}).items():
      value = value.replace(old, new)
    if value.startswith(_REPOSITORY_PREFIXES):
      value = os.path.normpath(ROOT / value)
    out.append(f"{name}={value}" if sep else value)
  for old in replace or {}:
    assert any(old in token for token in argv), f"{old!r} is no longer in {shlex.join(argv)}"
  for field, value in overrides.items():
    flag = f"--config.{field.replace('__', '.')}"
    out = [token for token in out if not token.startswith(flag + "=")] + [f"{flag}={value}"]
  head = [console_script()] if console else ["hicra-jax"]
  return head + out
