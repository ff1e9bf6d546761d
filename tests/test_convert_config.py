"""Reading a run's saved config back (hicra-jax convert, eval of a workdir) across versions."""

from __future__ import annotations

import pytest

from hicra_jax import config as config_lib
from hicra_jax.commands import convert
from hicra_jax.commands import train as train_cmd


def test_a_saved_config_with_a_retired_field_reads_back_and_new_fields_take_defaults():
  saved = train_cmd.get_config().to_dict()
  saved["debug_sleep_in_step_s"] = 0.25  # saved by runs before the knob left the config
  saved["rollout"]["group_size"] = 4
  del saved["eval"]["samples"]  # a field added after the run was saved
  config = convert.saved_run_config(saved)
  assert "debug_sleep_in_step_s" not in config
  assert config.rollout.group_size == 4
  assert config.eval.samples == train_cmd.get_config().eval.samples


def test_an_unknown_saved_field_fails_naming_it():
  saved = train_cmd.get_config().to_dict()
  saved["frobnicate"] = 1
  with pytest.raises(config_lib.ConfigError, match="frobnicate"):
    convert.saved_run_config(saved)
