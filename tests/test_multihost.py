"""hicra_jax.multihost in one process (the multi-process paths run in
tests/test_multiprocess.py) and the `distributed` config section."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from hicra_jax import config as config_lib
from hicra_jax import multihost
from hicra_jax.train.run_config import DistributedConfig, RunConfig


def test_resolve_settings_takes_flags_then_jax_variables():
  assert multihost.resolve_settings(environ={}) == {}
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  assert multihost.resolve_settings(environ=env) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
  assert multihost.resolve_settings("h:1", 2, "auto", environ=env) == {
      "coordinator_address": "h:1", "num_processes": 2, "process_id": 3}


def test_initialize_without_a_cluster_or_with_one_process_stays_single(monkeypatch):
  for name in multihost.ENV_VARIABLES.values():
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(multihost, "cluster_detected", lambda: False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  assert multihost.initialize() is False
  assert multihost.initialize("localhost:1", 1, 0) is False
  assert not called and jax.process_count() == 1


def test_initialize_passes_the_known_settings(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:999")
  monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  monkeypatch.setattr(jax.config, "update", lambda *a: called.append(a))
  assert multihost.initialize("auto", 2, 1, heartbeat_timeout_s=7) is True
  assert ("jax_cpu_collectives_implementation", "gloo") in called
  assert {"coordinator_address": "host0:999", "num_processes": 2, "process_id": 1,
          "heartbeat_timeout_seconds": 7} in called


def test_single_process_collectives_are_local():
  assert multihost.any_process(True) and not multihost.any_process(False)
  assert multihost.min_over_processes(5) == 5
  assert multihost.sum_over_processes(2.5) == 2.5
  multihost.check_same({"a": 1}, "x")  # no other process: nothing to disagree with
  multihost.sync("noop")
  np.testing.assert_array_equal(multihost.allgather([1, 2]), [[1, 2]])


def test_put_read_and_gather_rows_round_trip():
  x = np.arange(24, dtype=np.int32).reshape(8, 3)
  mesh = jax.make_mesh((1,), ("b",), devices=jax.devices()[:1])
  a = multihost.put(x, NamedSharding(mesh, P("b")))
  rows, values = multihost.read_local_rows(a)
  np.testing.assert_array_equal(rows, np.arange(8))
  np.testing.assert_array_equal(values, x)
  np.testing.assert_array_equal(multihost.local_rows(a), np.arange(8))
  np.testing.assert_array_equal(multihost.to_host(a), x)
  shuffled = np.array([3, 0, 7, 1, 2, 6, 5, 4])
  np.testing.assert_array_equal(multihost.gather_rows(shuffled, x[shuffled], 8), x)
  with pytest.raises(ValueError, match="holds 7 of 8 rows"):
    multihost.gather_rows(shuffled[:7], x[shuffled[:7]], 8)


def test_check_shared_directory_is_a_no_op_in_one_process(tmp_path):
  multihost.check_shared_directory(str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("fields, field, expected", [
    (dict(process_id=2, num_processes=2), "distributed.process_id",
     "an int in [0, num_processes = 2)"),
    (dict(process_id=-1), "distributed.process_id", "'auto' or an int >= 0"),
    (dict(num_processes=0), "distributed.num_processes", "'auto' or an int >= 1"),
    (dict(num_processes="two"), "distributed.num_processes", "'auto' or an int >= 1"),
    (dict(coordinator_address="localhost"), "distributed.coordinator_address", "'host:port'"),
    (dict(coordinator_address="h:99999"), "distributed.coordinator_address", "'host:port'"),
    (dict(heartbeat_timeout_s=0), "distributed.heartbeat_timeout_s", ">= 1"),
])
def test_bad_distributed_settings_name_the_field(fields, field, expected):
  with pytest.raises(config_lib.ConfigError, match=field) as e:
    DistributedConfig(**fields)
  assert expected in str(e.value)


def test_distributed_settings_normalize_and_come_from_the_command_line():
  d = DistributedConfig(coordinator_address="10.1.2.3:8476", num_processes=4, process_id="3")
  assert (d.num_processes, d.process_id) == ("4", "3")
  assert d.initialize_kwargs() == {"coordinator_address": "10.1.2.3:8476", "num_processes": 4,
                                   "process_id": 3, "heartbeat_timeout_s": 100}
  assert DistributedConfig().initialize_kwargs()["num_processes"] == "auto"
  assert RunConfig().distributed == DistributedConfig()
