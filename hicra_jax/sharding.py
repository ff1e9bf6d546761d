"""Device meshes (axes "data", "fsdp", "tensor") and placement of models, batches and KV caches.

The partition rules themselves are in `hicra_jax.models.partition` (the
decoder and `load_pretrained(mesh=...)` apply them too): each parameter is
split by its logical axes from the schema table, the model width D over
"fsdp" and heads, vocabulary and MLP width over "tensor"; batch-first arrays
split their rows N over ("data", "fsdp"). This module sits above models and
imports from it, never the other way.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from hicra_jax.models.config import ModelConfig
from hicra_jax.models.decoder import Decoder, KVCache
from hicra_jax.models.partition import (BATCH, MESH_AXES, batch_sharding, batch_shards,
                                        fit_spec, param_shardings)
from hicra_jax.models.weights import flat_params, with_params

# Re-exported: callers place batches and parameters through this module.
__all__ = ["BATCH", "MESH_AXES", "batch_sharding", "batch_shards", "kv_cache_sharding",
           "make_mesh", "param_shardings", "shard_model"]


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with the one -1 axis resolved to the rest of `num_devices` (pure).

  Raises:
    ValueError: a bad size, two -1 axes, or sizes that do not cover `num_devices`.
  """
  sizes = [data, fsdp, tensor]
  for name, s in zip(MESH_AXES, sizes):
    if not isinstance(s, int) or (s < 1 and s != -1):
      raise ValueError(f"mesh axis {name!r} size must be a positive int or -1, got {s!r}")
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices cannot be split into a mesh with fixed axes {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                     f"{math.prod(sizes)} devices, but {num_devices} are available")
  return sizes[0], sizes[1], sizes[2]


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh with axes ("data", "fsdp", "tensor"); one size may be -1 (the rest of the devices).

  `devices` defaults to all of them. Built by `jax.make_mesh` (device order
  fitted to the hardware topology), with Auto axes: shardings propagate from
  the arrays' NamedShardings (jax.make_mesh's own default is Explicit).
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes = mesh_shape(data, fsdp, tensor, len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def kv_cache_sharding(config: ModelConfig, mesh: Mesh) -> KVCache:
  """Shardings of a KVCache: rows N over the batch axes, KV heads K over "tensor" when divisible."""
  kv_LxNxSxKxH = fit_spec((None, BATCH, None, "tensor", None),
                          (config.num_layers, batch_shards(mesh), 1, config.num_kv_heads,
                           config.head_dim), mesh)
  return KVCache(k=NamedSharding(mesh, kv_LxNxSxKxH), v=NamedSharding(mesh, kv_LxNxSxKxH),
                 valid=batch_sharding(mesh, 2), index=NamedSharding(mesh, P()),
                 next_position=batch_sharding(mesh, 1))


def shard_model(model: Decoder, mesh: Mesh) -> Decoder:
  """Place an existing Decoder's parameters by the rules and attach the mesh (in place)."""
  shardings = param_shardings(model.config, mesh)
  placed = {k: jax.device_put(v, shardings[k]) for k, v in flat_params(model).items()}
  nnx.update(model, with_params(nnx.state(model, nnx.Param), placed))
  model.mesh = mesh
  return model
