"""Config loading and validation helpers shared by every `hicra-jax` command.

Configs are ml-collections `ConfigDict`s. A command has an embedded default
config (a `get_config()` factory inside the package) and presets live in
top-level `configs/*.py` files, each with a `get_config()` (optionally
`get_config(arg)`, selected with `--config configs/x.py:arg`). Fields are
overridden on the command line with `--config.a.b=value`.

Loading is cheap (no jax, no models); validation raises `ConfigError` naming
the field, the bad value and what was expected, before anything expensive.
The path predicates that validation needs (`is_model_path`,
`is_training_workdir`, with `is_local_path` / `as_epath` for workdirs that may
be gs://bucket/run as well as local) live here for the same reason, with the
Hugging Face Hub helpers `is_model_path` uses (`hub_model_id`, `hub_cache_dir`,
`hub_offline`, `cached_hub_snapshot`; models/paths.py resolves ids through them
too).

Example:
  config = load_config("configs/generate_smollm2.py", ["max_new_tokens=7"])
"""

from __future__ import annotations

import inspect
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

ConfigDict = config_dict.ConfigDict
ConfigFactory = Callable[[], ConfigDict]

CONFIG_FLAG = "config"


class ConfigError(ValueError):
  """A config that cannot be used.

  Attributes:
    field: dotted name of the bad field (None when the error is not about one
      field, e.g. an unparsable command line).
    value: the bad value.
    expected: what the field should hold.
  """

  def __init__(self, message: str, *, field: str | None = None,
               value: Any = None, expected: str | None = None):
    super().__init__(message)
    self.field = field
    self.value = value
    self.expected = expected


def field_error(field: str, value: Any, expected: str) -> ConfigError:
  """A `ConfigError` for one field: "config field 'a.b' = 0: expected ..."."""
  return ConfigError(f"config field {field!r} = {value!r}: expected {expected}",
                     field=field, value=value, expected=expected)


# ---------------------------------------------------------------- loading


def config_file_arg(args: Sequence[str],
                    name: str = CONFIG_FLAG) -> str | None:
  """The value of `--config` in args (argv without argv[0]), or None.

  The last occurrence wins, as in absl.
  """
  value = None
  for i, arg in enumerate(args):
    if arg == "--":
      break
    if arg in (f"--{name}", f"-{name}"):
      value = args[i + 1] if i + 1 < len(args) else ""
    elif arg.startswith((f"--{name}=", f"-{name}=")):
      value = arg.split("=", 1)[1]
  return value


def override_fields(args: Sequence[str],
                    name: str = CONFIG_FLAG) -> list[str]:
  """Dotted field names overridden in args, e.g. ["a.b"] for --config.a.b=1."""
  fields = []
  for arg in args:
    if arg == "--":
      break
    for prefix in (f"--{name}.", f"-{name}."):
      if arg.startswith(prefix):
        fields.append(arg[len(prefix):].split("=", 1)[0])
        break
  return fields


def _check_field_exists(config: ConfigDict, field: str) -> None:
  node: Any = config
  parts = field.split(".")
  for i, part in enumerate(parts):
    key = part.split("[", 1)[0]
    if not isinstance(node, ConfigDict):
      raise ConfigError(
          f"cannot override {field!r}: {'.'.join(parts[:i])!r} is a "
          f"{type(node).__name__}, not a nested config", field=field)
    if key not in node:
      known = sorted(".".join(parts[:i] + [k]) for k in node.keys())
      raise ConfigError(f"unknown config field {field!r} in the overrides; "
                        f"expected one of {known}", field=field)
    node = node[key]


def parse_config_argv(
    argv: Sequence[str],
    default: ConfigFactory,
    *,
    flag_values: flags.FlagValues | None = None,
) -> tuple[ConfigDict, list[str]]:
  """Parses `[prog, --config path.py[:arg], --config.a.b=v, ...]`.

  Without `--config`, the overrides apply to `default()` (the command's
  embedded config). Other flags must be defined in `flag_values`.

  Args:
    argv: the command line, argv[0] being the program name.
    default: factory of the embedded default config.
    flag_values: where to define the config flag; a fresh `FlagValues` when
      None (so this can be called any number of times in one process).

  Returns:
    (config, remaining argv): the locked config with overrides applied, and
    the positional arguments absl left over (argv[0] first).

  Raises:
    ConfigError: unknown flag or field, unparsable value, missing file.
  """
  argv = list(argv)
  fv = flags.FlagValues() if flag_values is None else flag_values
  path = config_file_arg(argv[1:])
  if path is not None:
    file_path = path.split(":", 1)[0]
    if not os.path.isfile(file_path):
      raise field_error(f"--{CONFIG_FLAG}", path,
                        "an existing .py file defining get_config()")
  try:
    if path is not None:
      config_flags.DEFINE_config_file(
          CONFIG_FLAG, None, "config file (.py with get_config())",
          flag_values=fv, sys_argv=argv)
    else:
      config_flags.DEFINE_config_dict(
          CONFIG_FLAG, default(), "the command's embedded default config",
          flag_values=fv, sys_argv=argv)
    rest = fv(argv)
  except Exception as e:  # pylint: disable=broad-except
    # Unknown fields, unparsable values and errors inside a config file all
    # surface here, as absl, ml-collections or user-code exceptions.
    overrides = override_fields(argv[1:])
    if overrides and not isinstance(e, flags.Error):
      base = default() if path is None else load_config(path)
      for field in overrides:
        _check_field_exists(base, field)
    message = str(e).strip() or type(e).__name__
    if not isinstance(e, flags.Error):
      message = f"{type(e).__name__}: {message}"
    raise ConfigError(f"bad config or override: {message}") from e
  config = fv[CONFIG_FLAG].value
  if type(config).__name__ == "_ErrorConfig":  # ml-collections defers IOErrors
    raise ConfigError(f"cannot load the config file {path!r}: "
                      f"{vars(config).get('_error')}")
  if not isinstance(config, ConfigDict):
    raise field_error(f"--{CONFIG_FLAG}", path,
                      "a file whose get_config() returns an "
                      f"ml_collections.ConfigDict (got {type(config).__name__})")
  return config, rest


def load_config(
    path: str | None = None,
    overrides: Iterable[str] = (),
    *,
    default: ConfigFactory | None = None,
) -> ConfigDict:
  """Loads a config file (or `default()`) and applies overrides.

  Args:
    path: a config .py file with `get_config()`, optionally `path.py:arg`;
      None to start from `default()`.
    overrides: `"a.b=value"` or `"--config.a.b=value"` strings; values are
      Python literals or bare strings, as on the command line.
    default: factory of the config used when `path` is None.

  Returns:
    The locked ConfigDict.

  Raises:
    ConfigError: as `parse_config_argv`, or leftover positional arguments.
  """
  if path is None and default is None:
    raise ConfigError("load_config needs a config path or a default factory")
  argv = ["hicra-jax"]
  if path is not None:
    argv.append(f"--{CONFIG_FLAG}={os.fspath(path)}")
  for item in overrides:
    if not item.startswith("-"):
      item = f"--{CONFIG_FLAG}.{item}"
    argv.append(item)
  config, rest = parse_config_argv(
      argv, default if default is not None else ConfigDict)
  if rest[1:]:
    raise ConfigError(f"unexpected arguments {rest[1:]!r}; expected "
                      "overrides of the form a.b=value")
  return config


# ------------------------------------------------------------- validation


def get_field(config: ConfigDict, field: str) -> Any:
  """The value at a dotted field name; ConfigError when it does not exist."""
  value: Any = config
  for part in field.split("."):
    if not isinstance(value, ConfigDict) or part not in value:
      raise ConfigError(f"config field {field!r} is missing", field=field)
    value = value[part]
  return value


def check_fields(config: ConfigDict, reference: ConfigDict,
                 prefix: str = "") -> None:
  """Requires `config` to have exactly the fields of `reference` (recursive).

  Catches typos in config files: a preset must start from the command's
  default config (or list the same fields).
  """
  known = set(reference.keys())
  for key in config.keys():
    name = prefix + key
    if key not in known:
      raise ConfigError(
          f"unknown config field {name!r}; expected one of "
          f"{sorted(prefix + k for k in known)}", field=name,
          value=config[key], expected=f"one of {sorted(known)}")
    sub, ref = config[key], reference[key]
    if isinstance(ref, ConfigDict):
      if not isinstance(sub, ConfigDict):
        raise field_error(name, sub, "a nested config with fields "
                          f"{sorted(ref.keys())}")
      check_fields(sub, ref, name + ".")
  missing = sorted(known - set(config.keys()))
  if missing:
    name = prefix + missing[0]
    raise ConfigError(f"config field {name!r} is missing (default: "
                      f"{reference[missing[0]]!r})", field=name)


def _check_number(field: str, value: Any, types: tuple[type, ...], kind: str,
                  minimum: float | None, maximum: float | None) -> Any:
  """A value of `types` (never bool) in [minimum, maximum]; `kind` names it."""
  bounds = [f"{op} {b}" for op, b in ((">=", minimum), ("<=", maximum)) if b is not None]
  expected = kind + (" " + " and ".join(bounds) if bounds else "")
  if (isinstance(value, bool) or not isinstance(value, types)
      or (minimum is not None and value < minimum)
      or (maximum is not None and value > maximum)):
    raise field_error(field, value, expected)
  return value


# Value-level checks: `field` only names the value in the error. The ConfigDict
# checkers below and the typed sections (hicra_jax.typed_config) share them.


def checked_int(field: str, value: Any, minimum: int | None, maximum: int | None) -> int:
  """An int (not bool) in [minimum, maximum]."""
  return _check_number(field, value, (int,), "an integer", minimum, maximum)


def checked_float(field: str, value: Any, minimum: float | None, maximum: float | None) -> float:
  """A real number (int accepted, returned as float) in [minimum, maximum]."""
  return float(_check_number(field, value, (int, float), "a number", minimum, maximum))


def checked_choice(field: str, value: Any, choices: Sequence[Any]) -> Any:
  """One of `choices`."""
  if value not in choices:
    raise field_error(field, value, f"one of {list(choices)!r}")
  return value


def checked_str(field: str, value: Any, empty: bool) -> str:
  """A string (non-empty unless `empty`)."""
  if not isinstance(value, str) or (not empty and not value.strip()):
    raise field_error(field, value, "a string" if empty else "a non-empty string")
  return value


def checked_path(field: str, value: Any, aliases: Sequence[str],
                 predicate: Callable[[str], bool], expected: str) -> str:
  """One of `aliases` or a path satisfying `predicate` (user-expanded)."""
  if aliases:
    expected = f"one of {list(aliases)!r} or {expected}"
  if not isinstance(value, (str, os.PathLike)) or not str(value):
    raise field_error(field, value, expected)
  value = os.fspath(value)
  if value in aliases:
    return value
  if not predicate(os.path.expanduser(value)):
    raise field_error(field, value, expected)
  return value


def check_int(config: ConfigDict, field: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
  """An int (not bool) in [minimum, maximum]."""
  return checked_int(field, get_field(config, field), minimum, maximum)


def check_float(config: ConfigDict, field: str, *,
                minimum: float | None = None,
                maximum: float | None = None) -> float:
  """A real number (int accepted) in [minimum, maximum]."""
  return checked_float(field, get_field(config, field), minimum, maximum)


def check_choice(config: ConfigDict, field: str,
                 choices: Sequence[Any]) -> Any:
  """One of `choices`."""
  return checked_choice(field, get_field(config, field), choices)


def check_str(config: ConfigDict, field: str, *, empty: bool = False) -> str:
  """A string (non-empty unless `empty`)."""
  return checked_str(field, get_field(config, field), empty)


def check_str_list(config: ConfigDict, field: str, *,
                   min_len: int = 1) -> list[str]:
  """A list/tuple of at least `min_len` non-empty strings."""
  value = get_field(config, field)
  expected = f"a list of at least {min_len} non-empty string(s)"
  if isinstance(value, str) or not isinstance(value, (list, tuple)):
    raise field_error(field, value, expected)
  if len(value) < min_len:
    raise field_error(field, value, expected)
  for i, item in enumerate(value):
    if not isinstance(item, str) or not item.strip():
      raise field_error(f"{field}[{i}]", item, "a non-empty string")
  return list(value)


MODEL_PATH_EXPECTED = ("a .gguf file, a Hugging Face model directory or a Hugging Face Hub "
                       "model id (org/name or org/name@revision) in the local Hub cache or, "
                       "online, on the Hub")

# A Hub model id as the Hub spells repo ids (huggingface_hub's validate_repo_id): org/name,
# then maybe @revision (a branch, tag or commit; branches may hold "/", as refs/pr/1 does).
_HUB_ID = re.compile(r"([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([^\s@]+))?")
_HUB_ID_MAX_LEN = 96
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
_TRUE_ENV_VALUES = ("1", "ON", "YES", "TRUE")


def hub_model_id(path: Any) -> tuple[str, str | None] | None:
  """(repo id, revision or None) when `path` reads as a Hub model id, else None.

  The syntax only; the filesystem is not consulted (a local path that exists wins over an
  id: callers look there first). "org/name.gguf" is taken for a missing file, not an id.
  """
  match = _HUB_ID.fullmatch(path) if isinstance(path, str) else None
  if match is None:
    return None
  repo = match.group(1)
  if (len(repo) > _HUB_ID_MAX_LEN or "--" in repo or ".." in repo
      or repo.lower().endswith(".gguf")):
    return None
  return repo, match.group(2)


def hub_cache_dir() -> str:
  """huggingface_hub's cache folder as the environment names it now.

  HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (HF_HOME defaults to
  $XDG_CACHE_HOME/huggingface, then ~/.cache/huggingface). huggingface_hub reads these
  once, when it is imported; reading them at each call honours a later change (tests,
  notebooks), and callers pass the folder to huggingface_hub explicitly.
  """
  home = os.environ.get("HF_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
      "huggingface")
  cache = (os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
           or os.path.join(home, "hub"))
  return os.path.expandvars(os.path.expanduser(cache))


def hub_offline() -> bool:
  """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids reaching the Hub, read now."""
  value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
  return value.upper() in _TRUE_ENV_VALUES


def cached_hub_snapshot(repo_id: str, revision: str | None = None,
                        cache_dir: str | None = None) -> str | None:
  """The folder of `repo_id` at `revision` (None: main) in the Hub cache, or None if absent.

  The cache layout: models--org--name/refs/<branch or tag> holds a commit hash, and
  models--org--name/snapshots/<commit>/ the files downloaded from that commit.
  """
  repo_dir = os.path.join(cache_dir or hub_cache_dir(), "models--" + repo_id.replace("/", "--"))
  revision = revision or "main"
  commit = revision if _COMMIT_HASH.fullmatch(revision) else None
  if commit is None:
    try:
      with open(os.path.join(repo_dir, "refs", revision)) as f:
        commit = f.read().strip()
    except OSError:
      return None
  snapshot = os.path.join(repo_dir, "snapshots", commit)
  return snapshot if commit and os.path.isdir(snapshot) else None


def _has_hf_weights(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "config.json")) and any(
      os.path.isfile(os.path.join(directory, name))
      for name in ("model.safetensors", "model.safetensors.index.json"))


def _on_hub(repo_id: str, revision: str | None) -> bool:
  """Whether the Hub has `repo_id`'s config.json at `revision` (False when unreachable)."""
  # Imported here: only ids neither local nor cached pay for it (no numpy, jax or torch).
  from huggingface_hub import file_exists  # pylint: disable=import-outside-toplevel
  try:
    return file_exists(repo_id, "config.json", revision=revision)
  except Exception:  # pylint: disable=broad-except
    return False  # gated without a token, no network, ...: not usable as it stands


def is_model_path(path: str) -> bool:
  """A .gguf file, a Hugging Face model directory (with config.json), or a Hub model id.

  A Hub id (`hub_model_id`) counts when its snapshot in the local cache (`hub_cache_dir`)
  holds config.json and safetensors weights, or else, unless HF_HUB_OFFLINE is set, when
  the Hub has it (one HEAD request). A local path that exists is never taken for an id.
  """
  if os.path.exists(path):
    if os.path.isfile(path):
      return path.endswith(".gguf")
    return os.path.isfile(os.path.join(path, "config.json"))
  hub = hub_model_id(path)
  if hub is None:
    return False
  snapshot = cached_hub_snapshot(*hub)
  if snapshot is not None and _has_hf_weights(snapshot):
    return True
  return not hub_offline() and _on_hub(*hub)


def is_local_path(path: str | os.PathLike) -> bool:
  """Whether `path` is on the local (os-level) filesystem, i.e. has no `scheme://` prefix.

  Workdirs and export directories may be any etils.epath path: a local one, or
  gs://bucket/run (s3://, ...) where files are objects that cannot be appended
  to and that tools needing a local filename (safetensors, tokenizers) cannot
  write directly. Writers branch on this.
  """
  return "://" not in os.fspath(path)


def as_epath(path: str | os.PathLike):
  """`path` as an `etils.epath.Path` (local paths with `~` expanded).

  etils is imported here, not at module level, so loading configs stays cheap.

  Raises:
    ValueError: a `scheme://` path of a scheme etils.epath does not know.
  """
  from etils import epath  # pylint: disable=import-outside-toplevel
  if is_local_path(path):
    return epath.Path(os.path.expanduser(os.fspath(path)))
  try:
    return epath.Path(path)
  except KeyError:  # etils' registry of URI schemes
    raise ValueError(f"path {os.fspath(path)!r}: unsupported scheme (etils.epath paths are "
                     f"local, gs://, s3://, az:// or hf://)") from None


def is_training_workdir(path: str | os.PathLike) -> bool:
  """Whether `path` (local or e.g. gs://bucket/run) is a training run's workdir holding at
  least one checkpoint (a numbered directory under `checkpoints/`). False for a path of a
  scheme etils.epath does not know."""
  try:
    checkpoints = as_epath(path) / "checkpoints"
  except ValueError:
    return False
  return checkpoints.is_dir() and any(child.name.isdigit() for child in checkpoints.iterdir())


def check_path(config: ConfigDict, field: str, *,
               aliases: Sequence[str] = (),
               predicate: Callable[[str], bool] = os.path.exists,
               expected: str = "an existing file or directory") -> str:
  """One of `aliases` or a path satisfying `predicate`."""
  return checked_path(field, get_field(config, field), aliases, predicate, expected)


def flat_fields(config: ConfigDict, prefix: str = "") -> dict[str, Any]:
  """{"section.field": value} of every leaf field, in ConfigDict (sorted) order."""
  out: dict[str, Any] = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ConfigDict):
      out.update(flat_fields(value, name + "."))
    else:
      out[name] = value
  return out


def source_comments(obj: Any, assignment: str) -> dict[str, str]:
  """{name: comment} of the assignments in obj's source (a function or a class).

  `assignment` is a regex whose group 1 is the assigned name. A name's
  comment is the one at the end of its line, else the comment lines right
  above it.
  """
  source = inspect.getsource(obj)
  comments: dict[int, str] = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      comments[tok.start[0]] = tok.string.lstrip("#").strip()
  lines = source.splitlines()
  pattern = re.compile(assignment)
  out: dict[str, str] = {}
  for number, line in enumerate(lines, start=1):
    match = pattern.match(line)
    if not match:
      continue
    text = comments.get(number)
    if text is None:  # the comment block right above
      above, k = [], number - 1
      while k >= 1 and lines[k - 1].strip().startswith("#"):
        above.insert(0, comments.get(k, ""))
        k -= 1
      text = " ".join(above) if above else None
    if text:
      out[match.group(1)] = text
  return out


def field_descriptions(factory: Callable[[], ConfigDict]) -> dict[str, str]:
  """{"section.field": description} from the comments of a config factory's source.

  A field's description is the comment at the end of the line that assigns it
  (`c.rollout.group_size = 8  # samples per prompt`), else the comment lines
  right above it. Fields set inside a `ConfigDict(dict(a=..., b=...))` literal
  inherit the description of the line that assigns the section.
  """
  return source_comments(factory, r"^\s*\w+\.([\w.]+)\s*=(?!=)")


def describe_fields(factory: Callable[[], ConfigDict],
                    descriptions: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
  """(field, default, description) of every leaf field of factory()'s config.

  `descriptions` ({"section.field": text}) defaults to the comments of the
  factory's source (`field_descriptions`). A field without a description of
  its own takes its section's, if any.
  """
  if descriptions is None:
    descriptions = field_descriptions(factory)
  rows = []
  for name, value in flat_fields(factory()).items():
    parts = name.split(".")
    text = next((descriptions[".".join(parts[:i])] for i in range(len(parts), 0, -1)
                 if ".".join(parts[:i]) in descriptions), "")
    rows.append((name, value, text))
  return rows
