"""Several processes, one program (multi-controller JAX): start-up, placement of
host values on a global mesh, reading back this process's rows, and the few
small host collectives that keep every process's decisions identical.

Every process runs the same Python program. Arrays on the mesh are global
(`jax.Array`s spanning all processes' devices); a process reads back only its
addressable shards. Decisions that change control flow (stop, refill, skip)
must come out the same on every process, or the processes would run different
collectives and hang: they are taken from global values, or agreed with
`any_process`.

With one process every function here is a local operation: no collective runs.

N rows of a batch-first array; "local rows" are the rows this process's devices hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

AUTO = "auto"

logger = logging.getLogger("hicra_jax")


# The variables a launcher may set instead of flags (JAX itself reads the first).
ENV_VARIABLES = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
                 "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def cluster_detected() -> bool:
  """Whether JAX's own cluster detection finds a cluster (a TPU VM pod slice, SLURM,
  Open MPI, Kubernetes), i.e. whether a bare `jax.distributed.initialize()` can
  fill in the coordinator, count and id itself."""
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel
    return any(env.is_env_present() for env in clusters.ClusterEnv._cluster_types)  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except  # a private API: fail closed
    return False


def resolve_settings(coordinator_address: str = AUTO, num_processes: int | str = AUTO,
                     process_id: int | str = AUTO, environ=None) -> dict[str, Any]:
  """The explicitly known settings: the given values, else the JAX_* variables (pure).

  Returns only the known ones ({} when everything is left to detection).
  """
  environ = os.environ if environ is None else environ
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  out: dict[str, Any] = {}
  for name, value in given.items():
    if value == AUTO and environ.get(ENV_VARIABLES[name]):
      value = environ[ENV_VARIABLES[name]]
    if value != AUTO:
      out[name] = value if name == "coordinator_address" else int(value)
  return out


def initialize(coordinator_address: str = AUTO, num_processes: int | str = AUTO,
               process_id: int | str = AUTO, *, heartbeat_timeout_s: int = 100) -> bool:
  """Starts jax.distributed when the run spans several processes; returns whether it did.

  Each setting is the given value, else its JAX_* variable (`ENV_VARIABLES`),
  else left to JAX's cluster detection. Nothing known and no cluster detected
  (a laptop, one GPU host): the run stays one process, as is one with
  num_processes 1. On CPU the gloo collectives are selected, so a
  multi-process run also works on a laptop. Must run before anything touches
  a jax backend. A process whose peer dies is terminated by JAX within about
  heartbeat_timeout_s seconds ("another task died"), never left hanging.
  """
  if jax.distributed.is_initialized():
    return True
  known = resolve_settings(coordinator_address, num_processes, process_id)
  if (not known and not cluster_detected()) or known.get("num_processes") == 1:
    return False
  # The CPU backend needs a collectives implementation across processes; it only
  # affects CPU devices, so it is harmless on GPU/TPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**known, heartbeat_timeout_seconds=int(heartbeat_timeout_s))
  logger.info("jax.distributed: process %d of %d, %d local of %d devices",
              jax.process_index(), jax.process_count(), jax.local_device_count(),
              jax.device_count())
  return True


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def is_main() -> bool:
  """Process 0: the one that writes logs, metrics, samples and exports."""
  return jax.process_index() == 0


# ------------------------------------------------------------ host collectives


def allgather(x) -> np.ndarray:
  """[process_count, *x.shape]: every process's host value x (same shape everywhere)."""
  x = np.asarray(x)
  if not is_multiprocess():
    return x[None]
  return np.asarray(multihost_utils.process_allgather(x, tiled=False))


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is True on any (one small collective)."""
  return bool(allgather(np.asarray(bool(flag))).any())


def min_over_processes(value: int) -> int:
  return int(allgather(np.asarray(int(value), np.int64)).min())


def sum_over_processes(value: float) -> float:
  return float(allgather(np.asarray(value, np.float64)).sum())


def check_same(value: Any, what: str) -> None:
  """Raise on every process when the JSON value differs between processes.

  A cheap guard where the processes must agree (e.g. the data stream's state):
  a difference means they diverged and would deadlock or train on wrong data.
  """
  if not is_multiprocess():
    return
  text = json.dumps(value, sort_keys=True, default=str).encode()
  h = np.frombuffer(hashlib.sha256(text).digest()[:8], np.int64)
  gathered = allgather(h)
  if not (gathered == gathered[0]).all():
    raise RuntimeError(f"the processes disagree on {what}: process {jax.process_index()} has "
                       f"{text[:200]!r}; they ran different inputs or code")


def sync(name: str) -> None:
  """A barrier across processes (no-op with one)."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)


def check_shared_directory(directory: str) -> None:
  """Raise on every process when `directory` is not one directory shared by all processes.

  Each process writes a marker file; process 0 must see every one (a gs:// or
  shared-file-system workdir passes; per-host local disks do not). Checkpoints
  and resume need this: every process writes its shards there.
  """
  if not is_multiprocess():
    return
  from etils import epath  # pylint: disable=import-outside-toplevel
  token = int(allgather(np.asarray(np.random.randint(1 << 30), np.int64))[0])
  markers = epath.Path(directory) / ".processes"
  markers.mkdir(parents=True, exist_ok=True)
  mine = markers / f"{token}-{jax.process_index()}"
  mine.write_text("")
  sync("hicra_jax_shared_directory")
  missing = [k for k in range(jax.process_count())
             if is_main() and not (markers / f"{token}-{k}").exists()]
  bad = any_process(bool(missing))
  mine.unlink()
  if bad:
    seen = f"; process 0 cannot see the files of processes {missing}" if missing else ""
    raise RuntimeError(
        f"the workdir {directory!r} is not shared between the run's {jax.process_count()} "
        f"processes{seen}: give every host the same directory on shared storage (a gs:// "
        "path or a shared file system)")


# --------------------------------------------------------- host <-> global arrays


def put(x, sharding=None) -> jax.Array:
  """A host value that every process holds in full, as a global array with `sharding`.

  Each device takes its slice of x (jax.make_array_from_process_local_data
  with the global shape); without a sharding, a plain device array.
  """
  x = np.asarray(x)
  if sharding is None:
    return jnp.asarray(x)
  return jax.make_array_from_process_local_data(sharding, x, x.shape)


def local_rows(x: jax.Array) -> np.ndarray:
  """i64[n_local]: the rows (first-axis indices) of x that this process's devices hold, sorted."""
  if x.is_fully_addressable:
    return np.arange(x.shape[0])
  rows: set[int] = set()
  for shard in x.addressable_shards:
    rows.update(range(x.shape[0])[shard.index[0]])
  return np.asarray(sorted(rows), np.int64)


def read_local_rows(x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """(rows i64[n], values[n, ...]): this process's rows of a batch-first global array.

  Only addressable shards are read (no collective). Each row appears once,
  even where a shard is replicated over other axes (e.g. "tensor").
  """
  if x.is_fully_addressable:
    return np.arange(x.shape[0]), np.asarray(x)
  blocks: dict[int, np.ndarray] = {}
  for shard in x.addressable_shards:
    start = range(x.shape[0])[shard.index[0]].start if x.shape[0] else 0
    if start not in blocks:
      blocks[start] = np.asarray(shard.data)
  starts = sorted(blocks)
  values = np.concatenate([blocks[s] for s in starts])
  rows = np.concatenate([np.arange(s, s + len(blocks[s])) for s in starts])
  return rows.astype(np.int64), values


def gather_rows(rows: np.ndarray, values, num_rows: int) -> np.ndarray:
  """[num_rows, ...]: the global host vector whose rows `rows` this process holds as `values`.

  Every process contributes its rows (the same count everywhere: batches are
  split evenly) and gets all of them back. Rows nobody holds raise.
  """
  values = np.asarray(values)
  if not is_multiprocess():
    if len(rows) != num_rows:
      raise ValueError(f"one process holds {len(rows)} of {num_rows} rows")
    out = np.empty((num_rows,) + values.shape[1:], values.dtype)
    out[np.asarray(rows)] = values
    return out
  all_rows = allgather(np.asarray(rows, np.int64)).reshape(-1)
  all_values = allgather(values).reshape((-1,) + values.shape[1:])
  out = np.empty((num_rows,) + values.shape[1:], values.dtype)
  seen = np.zeros(num_rows, bool)
  out[all_rows], seen[all_rows] = all_values, True
  if not seen.all():
    raise RuntimeError(f"rows {np.flatnonzero(~seen)[:8].tolist()} are held by no process")
  return out


def to_host(x: jax.Array) -> np.ndarray:
  """The whole value of a global array on every process (a collective when it
  spans other processes' devices; keep it to small arrays)."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def tree_to_host(tree: Any) -> Any:
  return jax.tree_util.tree_map(to_host, tree)
