"""The `hicra-jax` CLI and config skeleton: registry, loading, overrides, validation."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hicra_jax import cli
from hicra_jax import config as config_lib
from hicra_jax.commands import generate
import readme_helpers as readme

ROOT = Path(__file__).resolve().parents[1]
GENERATE_CONFIG = str(ROOT / "configs" / "generate_smollm2.py")


def _console_script() -> str:
  script = Path(sys.executable).parent / "hicra-jax"
  if script.exists():
    return str(script)
  found = shutil.which("hicra-jax")
  if found is None:
    pytest.fail("the `hicra-jax` console script is not installed; run `make setup`")
  return found


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
  env = dict(os.environ, HF_HUB_OFFLINE="1")
  return subprocess.run([_console_script(), *args], env=env, text=True,
                        capture_output=True, timeout=timeout, check=False)


@pytest.fixture
def no_run(monkeypatch):
  """Replaces generate's run (the only thing that loads a model) with a failure."""
  def fail(config):
    raise AssertionError(f"run() was reached with an invalid config: {config}")
  monkeypatch.setitem(cli.COMMANDS, "generate",
                      dataclasses.replace(cli.COMMANDS["generate"], run=fail))


def test_registry_lists_generate():
  assert "generate" in cli.COMMANDS
  assert "generate" in cli.usage()
  for name, cmd in cli.COMMANDS.items():
    default = cmd.default_config()
    cmd.validate(default)  # every embedded default config is valid
    assert name in cli.usage()


def test_quickstart_config_with_override():
  config = config_lib.load_config(GENERATE_CONFIG, ["max_new_tokens=7"])
  assert config.max_new_tokens == 7
  assert config.model == "smollm2"
  config = cli.load_command_config(
      "generate", ["hicra-jax", "--config", GENERATE_CONFIG, "--config.max_new_tokens=7"])
  assert config.max_new_tokens == 7


def test_embedded_default_without_config_file():
  config = cli.load_command_config("generate", ["hicra-jax", "--config.dtype=bfloat16"])
  assert config.dtype == "bfloat16"
  assert config.max_new_tokens == generate.get_config().max_new_tokens == 48


def test_prompts_override_repeated_flag():
  config = cli.load_command_config(
      "generate", ["hicra-jax", "--config.prompts='What is 1+1?'",
                   "--config.prompts='What is 2+2?'"])
  assert list(config.prompts) == ["What is 1+1?", "What is 2+2?"]
  config = config_lib.load_config(GENERATE_CONFIG, ["prompts=('Compute 3*4.',)"])
  assert list(config.prompts) == ["Compute 3*4."]


def test_config_file_with_argument(tmp_path):
  path = tmp_path / "preset.py"
  path.write_text(textwrap.dedent("""
      from hicra_jax.commands import generate

      def get_config(size):
        config = generate.get_config()
        config.max_new_tokens = {"small": 4, "large": 64}[size]
        return config
  """))
  assert config_lib.load_config(f"{path}:small").max_new_tokens == 4
  config = cli.load_command_config("generate", ["hicra-jax", f"--config={path}:large"])
  assert config.max_new_tokens == 64


@pytest.mark.parametrize("override, field", [
    ("max_new_tokens=0", "max_new_tokens"),
    ("dtype=float16", "dtype"),
    ("model=/no/such/model.gguf", "model"),
    ("template=jinja", "template"),
    ("seed=-1", "seed"),
    ("prompts=('ok', ' ')", "prompts[1]"),
])
def test_bad_value_raises_config_error_before_loading(override, field, no_run, capsys):
  with pytest.raises(config_lib.ConfigError) as info:
    cli.load_command_config("generate", ["hicra-jax", "--config", GENERATE_CONFIG,
                                         f"--config.{override}"])
  assert info.value.field == field
  assert repr(info.value.value) in str(info.value)
  assert "expected" in str(info.value)
  # Through main(): exit status 2, the field in the message, run() never reached.
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["hicra-jax", "generate", "--config", GENERATE_CONFIG, f"--config.{override}"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert f"config field {field!r}" in err


def test_validation_imports_nothing_heavy():
  code = textwrap.dedent("""
      import sys
      from hicra_jax import cli
      try:
        cli.main(["hicra-jax", "generate", "--config.max_new_tokens=0"])
      except SystemExit as e:
        assert e.code == 2, e.code
      heavy = sorted(m for m in ("jax", "flax", "transformers", "torch", "numpy")
                     if m in sys.modules)
      assert not heavy, heavy
      # A paper preset (it imports hicra_jax.train.presets) with a missing model path.
      try:
        cli.main(["hicra-jax", "train", "--config", sys.argv[1]])
      except SystemExit as e:
        assert e.code == 2, e.code
      heavy = sorted(m for m in ("jax", "flax", "optax", "transformers", "torch")
                     if m in sys.modules)
      assert not heavy, heavy
  """)
  preset = str(ROOT / "configs" / "qwen3_4b_base_hicra.py")
  proc = subprocess.run([sys.executable, "-c", code, preset], capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "config field 'max_new_tokens' = 0" in proc.stderr
  assert "config field 'model.path'" in proc.stderr


def test_unknown_override_field_is_named():
  with pytest.raises(config_lib.ConfigError, match="'max_tokens'") as info:
    config_lib.load_config(GENERATE_CONFIG, ["max_tokens=3"])
  assert "max_new_tokens" in str(info.value)  # lists the known fields
  with pytest.raises(config_lib.ConfigError, match="'max_tokens'"):
    cli.load_command_config("generate", ["hicra-jax", "--config.max_tokens=3"])


def test_config_file_fields_must_match_the_command(tmp_path):
  extra = tmp_path / "extra.py"
  extra.write_text(textwrap.dedent("""
      from hicra_jax.commands import generate

      def get_config():
        config = generate.get_config()
        config.temprature = 0.7
        return config
  """))
  with pytest.raises(config_lib.ConfigError, match="temprature") as info:
    cli.load_command_config("generate", ["hicra-jax", "--config", str(extra)])
  assert info.value.field == "temprature"
  missing = tmp_path / "missing.py"
  missing.write_text(textwrap.dedent("""
      from hicra_jax.commands import generate

      def get_config():
        config = generate.get_config()
        del config["seed"]
        return config
  """))
  with pytest.raises(config_lib.ConfigError, match="'seed' is missing"):
    cli.load_command_config("generate", ["hicra-jax", "--config", str(missing)])


def test_bad_command_lines(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="no_such_config.py"):
    cli.load_command_config("generate", ["hicra-jax", "--config", "no_such_config.py"])
  with pytest.raises(config_lib.ConfigError, match="max_new_tokens"):
    config_lib.load_config(GENERATE_CONFIG, ["max_new_tokens=many"])
  with pytest.raises(config_lib.ConfigError, match="positional"):
    cli.load_command_config("generate", ["hicra-jax", "stray"])
  not_a_dict = tmp_path / "list.py"
  not_a_dict.write_text("def get_config():\n  return [1, 2]\n")
  with pytest.raises(config_lib.ConfigError, match="ConfigDict"):
    cli.load_command_config("generate", ["hicra-jax", "--config", str(not_a_dict)])


def test_unknown_command_lists_commands(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["hicra-jax", "frobnicate"])
  assert info.value.code != 0
  err = capsys.readouterr().err
  assert "unknown command 'frobnicate'" in err
  assert "generate" in err


def test_command_help_shows_default_config(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["hicra-jax", "generate", "--help"])
  assert info.value.code == 0
  out = capsys.readouterr().out
  assert "max_new_tokens: 48" in out


def test_console_script_help():
  proc = _run(["--help"])
  assert proc.returncode == 0, proc.stderr
  assert "generate" in proc.stdout and "usage: hicra-jax" in proc.stdout
  proc = _run(["no-such-command"])
  assert proc.returncode == 2
  assert "generate" in proc.stderr


@pytest.mark.slow
def test_generate_end_to_end():
  """The README's generate command (real SmolLM2 GGUF, bfloat16), 8 new tokens."""
  argv = readme.runnable(readme.readme_command(readme.GENERATE), max_new_tokens=8)
  assert argv[2:4] == ["--config", GENERATE_CONFIG], argv
  proc = _run(argv[1:], timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  n = len(generate.get_config().prompts)
  assert proc.stdout.count("--- completion (") == n, proc.stdout
  lengths = [int(line.split("(")[1].split()[0])
             for line in proc.stdout.splitlines() if line.startswith("--- completion (")]
  assert all(1 <= k <= 8 for k in lengths), lengths
  assert "timings:" in proc.stdout
