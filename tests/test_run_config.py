"""The typed train config: frozen sections that check themselves and name the bad field."""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import pytest

from hicra_jax import config as config_lib
from hicra_jax import typed_config
from hicra_jax.train import run_config
from hicra_jax.train.run_config import (LossConfig, OptimConfig, RolloutConfig, RunConfig,
                                        parse)


def _set(tree: dict, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  for part in parents:
    tree = tree[part]
  tree[leaf] = value


def test_the_default_config_dict_is_the_schema_and_reads_back_unchanged():
  config = run_config.get_config()
  assert parse(config) == RunConfig()
  assert typed_config.to_config_dict(parse(config)).to_dict() == config.to_dict()
  assert parse(config).rollout.max_new_tokens == (8,)  # tuples stay tuples


@pytest.mark.parametrize("field", sorted(config_lib.flat_fields(run_config.get_config())))
def test_every_field_is_checked_and_named(field):
  values = run_config.get_config().to_dict()
  _set(values, field, object())  # no field accepts an arbitrary object
  with pytest.raises(config_lib.ConfigError) as err:
    parse(values)
  assert err.value.field == field
  assert repr(field) in str(err.value)


def test_sections_are_frozen_typed_and_hashable():
  values = run_config.get_config().to_dict()
  values["optim"]["lr"] = 1  # an int where a float is expected
  values["rollout"]["max_new_tokens"] = [8, 16]  # JSON gives lists
  config = parse(values)
  assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
  assert config.rollout.max_new_tokens == (8, 16)
  hash(config)  # usable as a static argument
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.rollout.group_size = 4  # type: ignore[misc]


def test_sections_check_themselves_when_built_in_python():
  assert RunConfig(rollout=RolloutConfig(group_size=4, prompts_per_step=2),
                   loss=LossConfig(micro_batch_size=8)).rollout.rows == 8
  with pytest.raises(config_lib.ConfigError) as err:
    RolloutConfig(group_size=1)
  assert err.value.field == "rollout.group_size"
  with pytest.raises(config_lib.ConfigError) as err:
    OptimConfig(schedule="linear")
  assert err.value.field == "optim.schedule" and "'cosine'" in str(err.value)
  # Fields that depend on each other are checked by the RunConfig.
  with pytest.raises(config_lib.ConfigError) as err:
    RunConfig(rollout=RolloutConfig(group_size=3, prompts_per_step=3))
  assert err.value.field == "loss.micro_batch_size" and "3 x 3 = 9" in str(err.value)


def test_missing_fields_take_defaults_and_unknown_ones_are_named():
  assert parse({"num_steps": 3, "rollout": {"group_size": 4}}) == RunConfig(
      num_steps=3, rollout=RolloutConfig(group_size=4))
  with pytest.raises(config_lib.ConfigError, match="'rollout.groupsize'") as err:
    parse({"rollout": {"groupsize": 4}})
  assert err.value.field == "rollout.groupsize"
  with pytest.raises(config_lib.ConfigError) as err:
    parse({"rollout": 4})
  assert err.value.field == "rollout" and "group_size" in str(err.value)


def test_a_config_dict_is_not_taken_by_the_trainer_untyped():
  from hicra_jax.train.loop import Trainer  # pylint: disable=import-outside-toplevel
  with pytest.raises(TypeError, match="RunConfig"):
    Trainer(run_config.get_config(), None)


def test_the_entropy_bonus_applies_to_entropy_reg_only():
  loss = LossConfig(entropy_coef=0.01)
  assert RunConfig(loss=loss).entropy_coef == 0.0
  assert RunConfig(algorithm="entropy_reg", loss=loss).entropy_coef == 0.01


@dataclasses.dataclass(frozen=True)
class _Inner:
  SECTION: ClassVar[str] = "inner"
  width: int = 2  # how wide
  # A block comment
  # over two lines.
  depth: int = 3


@dataclasses.dataclass(frozen=True)
class _Outer:
  steps: int = 1  # how many steps
  inner: _Inner = typed_config.section(_Inner)  # the inner part
  bare: str = "x"


def test_descriptions_come_from_the_section_sources():
  assert typed_config.schema_descriptions(_Outer) == {
      "steps": "how many steps", "inner": "the inner part", "inner.width": "how wide",
      "inner.depth": "A block comment over two lines."}
  factory = lambda: typed_config.to_config_dict(_Outer())  # noqa: E731
  rows = config_lib.describe_fields(factory, typed_config.schema_descriptions(_Outer))
  assert rows == [("bare", "x", ""), ("inner.depth", 3, "A block comment over two lines."),
                  ("inner.width", 2, "how wide"), ("steps", 1, "how many steps")]


def test_parse_leaves_its_input_alone():
  values = run_config.get_config().to_dict()
  before = copy.deepcopy(values)
  parse(values)
  assert values == before
