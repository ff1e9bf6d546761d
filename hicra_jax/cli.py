"""The `hicra-jax` command line.

  hicra-jax <command> [--config path.py[:arg]] [--config.a.b=value ...]
                      [other absl flags, e.g. --verbosity=1]

Every subcommand is one entry of `COMMANDS` below: a help line, the factory of
its embedded default config, a cheap `validate(config)` and `run(config)`.
Adding a command means adding a module under `hicra_jax/commands/` and one
entry here; loading, overrides, field checking, validation and error
reporting are shared.

The config is loaded (from `--config` or the embedded default), checked
against the fields of the default config, and validated before `run` imports
anything heavy. A bad config exits with status 2 and a message naming the
field, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

from hicra_jax import config as config_lib
from hicra_jax import typed_config
from hicra_jax.commands import convert
from hicra_jax.commands import extract_sgs
from hicra_jax.commands import evaluate
from hicra_jax.commands import generate
from hicra_jax.commands import judge
from hicra_jax.commands import report
from hicra_jax.commands import train

PROG = "hicra-jax"
_HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")


@dataclasses.dataclass(frozen=True)
class Command:
  """One subcommand.

  Attributes:
    help: one line shown in the command list.
    default_config: factory of the embedded default config; its fields are
      the only ones a config file or override may set.
    validate: raises ConfigError for a bad config; must be cheap (no jax
      import, no model loading). Returns what `run` takes: the ConfigDict
      itself, or a typed config made from it.
    run: does the work; returns None or an exit status.
    schema: the typed config whose source comments describe the fields in
      `--help` (None: the comments of `default_config`'s source).
    positional: the top-level string field that positional arguments are
      appended to, comma-separated ("": the command takes none).
  """

  help: str
  default_config: config_lib.ConfigFactory
  validate: Callable[[config_lib.ConfigDict], Any]
  run: Callable[[Any], Any]
  schema: type | None = None
  positional: str = ""


# The one place where commands are registered (later: bench).
COMMANDS: dict[str, Command] = {
    "generate": Command(generate.HELP, generate.get_config, generate.validate,
                        generate.run),
    "extract-sgs": Command(extract_sgs.HELP, extract_sgs.get_config,
                           extract_sgs.validate, extract_sgs.run),
    "eval": Command(evaluate.HELP, evaluate.get_config, evaluate.validate, evaluate.run),
    "judge": Command(judge.HELP, judge.get_config, judge.validate, judge.run),
    "train": Command(train.HELP, train.get_config, train.validate, train.run, train.SCHEMA),
    "report": Command(report.HELP, report.get_config, report.validate, report.run,
                      report.SCHEMA, positional="runs"),
    "convert": Command(convert.HELP, convert.get_config, convert.validate, convert.run),
}


def usage() -> str:
  """The top-level usage text with the list of commands."""
  width = max(len(name) for name in COMMANDS)
  lines = [
      f"usage: {PROG} <command> [--config path.py[:arg]] "
      "[--config.field=value ...] [absl flags]",
      "",
      "commands:",
  ]
  lines += [f"  {name:<{width}}  {cmd.help}"
            for name, cmd in sorted(COMMANDS.items())]
  lines += ["", f"`{PROG} <command> --help` shows the command's config fields."]
  return "\n".join(lines)


def describe_command(name: str) -> list[tuple[str, Any, str]]:
  """(field, default, description) of every field of a command's config."""
  cmd = COMMANDS[name]
  descriptions = None if cmd.schema is None else typed_config.schema_descriptions(cmd.schema)
  return config_lib.describe_fields(cmd.default_config, descriptions)


def command_help(name: str) -> str:
  """Help for one command: usage, description, every field with its default and meaning."""
  rows = [(f"{field}: {value!r}", text) for field, value, text in describe_command(name)]
  width = min(max(len(left) for left, _ in rows), 44)
  positional = COMMANDS[name].positional
  return "\n".join([
      f"usage: {PROG} {name} " + (f"[{positional.upper()} ...] " if positional else "")
      + "[--config path.py[:arg]] [--config.field=value ...] [absl flags]",
      "",
      COMMANDS[name].help,
      "",
      "fields with their defaults (override one with --config.<field>=<value>):",
      *(f"  {left:<{width}}  # {text}" if text else f"  {left}" for left, text in rows),
  ])


def load_command_config(
    name: str,
    argv: Sequence[str],
    *,
    flag_values: flags.FlagValues | None = None,
) -> config_lib.ConfigDict:
  """Parses a command's flags and returns its checked, validated config.

  Args:
    name: a registered command.
    argv: the command's arguments, argv[0] being the program name, e.g.
      `["hicra-jax", "--config", "configs/generate_smollm2.py"]`.
    flag_values: where to define the config flag (a fresh FlagValues when
      None); other absl flags given on the command line must be defined in it.

  Returns:
    What the command's `validate` returns: the validated config (typed for
    `train`).

  Raises:
    KeyError: `name` is not registered.
    ConfigError: the command line or the config is bad.
  """
  cmd = COMMANDS[name]
  config, rest = config_lib.parse_config_argv(
      argv, cmd.default_config, flag_values=flag_values)
  if rest[1:] and cmd.positional:  # e.g. `report RUN RUN`: appended to config.runs
    given = config_lib.get_field(config, cmd.positional)
    config[cmd.positional] = ",".join(([given] if given else []) + rest[1:])
  elif rest[1:]:
    raise config_lib.ConfigError(
        f"unexpected positional arguments {rest[1:]!r}; expected only flags "
        "(--config path.py, --config.field=value)")
  config_lib.check_fields(config, cmd.default_config())
  return cmd.validate(config)


def _fail(message: str) -> None:
  print(message, file=sys.stderr)
  sys.exit(2)


def _log_to_stderr() -> None:
  """Shows the package's INFO messages (model loaded, resumed from step n) on stderr."""
  logger = logging.getLogger("hicra_jax")
  if not logger.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # absl's root handler would print it a second time


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point of the `hicra-jax` console script."""
  argv = list(sys.argv if argv is None else argv)
  args = argv[1:]
  if not args or args[0] in _HELP_ARGS or args[0] == "help":
    print(usage(), file=sys.stdout if args else sys.stderr)
    sys.exit(0 if args else 2)
  name = args[0]
  if name not in COMMANDS:
    _fail(f"{PROG}: unknown command {name!r}\n\n{usage()}")
  rest = args[1:]
  flag_args = rest[:rest.index("--")] if "--" in rest else rest
  if any(a in _HELP_ARGS for a in flag_args):
    print(command_help(name))
    sys.exit(0)

  # A fresh FlagValues holding the config flag plus the globally defined absl
  # flags (logging's --verbosity etc.), so main() may run more than once.
  flag_values = flags.FlagValues()
  flag_values.append_flag_values(flags.FLAGS)
  try:
    config = load_command_config(name, [f"{PROG} {name}"] + rest,
                                 flag_values=flag_values)
  except config_lib.ConfigError as e:
    _fail(f"{PROG} {name}: config error: {e}")
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  _log_to_stderr()
  try:
    status = COMMANDS[name].run(config)
  except config_lib.ConfigError as e:
    _exit_now_if_multiprocess(f"{PROG} {name}: config error: {e}")
    _fail(f"{PROG} {name}: config error: {e}")
  except BaseException as e:  # pylint: disable=broad-except
    _exit_now_if_multiprocess(f"{PROG} {name}: {type(e).__name__}: {e}\n"
                              + traceback.format_exc())
    raise
  sys.exit(status or 0)


def _exit_now_if_multiprocess(message: str) -> None:
  """A failure on one process of a multi-process run exits at once (status 1).

  A normal exit would wait at JAX's shutdown barrier for the other processes,
  which are blocked in a collective waiting for this one. Exiting stops this
  process's heartbeats, and JAX's coordination service then terminates the
  others within distributed.heartbeat_timeout_s, with its "another task died"
  message. One process: nothing happens here.
  """
  jax = sys.modules.get("jax")  # never imported just for this
  if jax is None or not jax.distributed.is_initialized() or jax.process_count() < 2:
    return
  print(f"{message}\n{PROG}: process {jax.process_index()} of {jax.process_count()} failed; "
        "exiting now, the other processes stop within distributed.heartbeat_timeout_s",
        file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access


if __name__ == "__main__":
  main()
