"""`hicra-jax CMD --help`: every config field with its default and a description from its definition."""

from __future__ import annotations

import pytest

from hicra_jax import cli
from hicra_jax import config as config_lib


def _example_config():
  c = config_lib.ConfigDict()
  c.steps = 3  # how many steps
  # A block comment
  # over two lines.
  c.rate = 0.5
  c.mesh = config_lib.ConfigDict(dict(data=1, fsdp=2))  # device mesh sizes
  c.bare = "x"
  return c


def test_descriptions_come_from_trailing_and_preceding_comments():
  rows = {name: text for name, _, text in config_lib.describe_fields(_example_config)}
  assert rows == {"steps": "how many steps", "rate": "A block comment over two lines.",
                  "mesh.data": "device mesh sizes", "mesh.fsdp": "device mesh sizes",
                  "bare": ""}


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_field_of_every_command_is_described(name):
  rows = cli.describe_command(name)
  assert rows, name
  assert [field for field, _, text in rows if not text] == []
  help_text = cli.command_help(name)
  for field, value, text in rows:
    assert f"{field}: {value!r}" in help_text and text in help_text
