"""Device mesh and partition rules (axes "data", "fsdp", "tensor").

Parameters are sharded by explicit logical names: the embedding dimension D over
"fsdp", heads and MLP width over "tensor". Activations split their batch over
("data", "fsdp"). A dimension that an axis does not divide is replicated along
that axis instead; in particular a model with fewer KV heads than the tensor
axis keeps its K/V projections replicated over "tensor" (correct, at the cost
of redundant K/V compute), which is the usual choice for GQA.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hicra_jax.models.config import ModelConfig

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")

# Logical axis names of each parameter (per dimension), then logical -> mesh axis.
PARAM_AXES = {
    "embed": ("vocab", "embed"),
    "final_norm": ("norm",),
    "lm_head": ("embed", "vocab"),
    "layers.attn_norm": ("layer", "norm"),
    "layers.mlp_norm": ("layer", "norm"),
    "layers.wq": ("layer", "embed", "q_heads", "head_dim"),
    "layers.wk": ("layer", "embed", "kv_heads", "head_dim"),
    "layers.wv": ("layer", "embed", "kv_heads", "head_dim"),
    "layers.wo": ("layer", "q_heads", "head_dim", "embed"),
    "layers.bq": ("layer", "q_heads", "head_dim"),
    "layers.bk": ("layer", "kv_heads", "head_dim"),
    "layers.bv": ("layer", "kv_heads", "head_dim"),
    "layers.q_norm": ("layer", "head_dim"),
    "layers.k_norm": ("layer", "head_dim"),
    "layers.w_gate": ("layer", "embed", "mlp"),
    "layers.w_up": ("layer", "embed", "mlp"),
    "layers.w_down": ("layer", "mlp", "embed"),
}
LOGICAL_TO_MESH = {
    "vocab": "tensor", "embed": "fsdp", "q_heads": "tensor", "kv_heads": "tensor",
    "mlp": "tensor", "layer": None, "norm": None, "head_dim": None,
}
ACTIVATION_AXES = {"activation": (BATCH, None, None)}


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh with axes ("data", "fsdp", "tensor"); one size may be -1 (the rest)."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = [data, fsdp, tensor]
  for name, s in zip(AXES, sizes):
    if not isinstance(s, int) or (s < 1 and s != -1):
      raise ValueError(f"mesh axis {name!r} size must be a positive int or -1, got {s!r}")
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into a mesh with fixed axes {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                     f"{math.prod(sizes)} devices, but {len(devices)} are available")
  return Mesh(np.asarray(devices).reshape(sizes), AXES)


def _fit(spec: tuple, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Drop mesh axes that do not divide their dimension (replicate there instead)."""
  out = []
  for axis, dim in zip(spec, shape):
    names = (axis,) if isinstance(axis, str) else tuple(axis or ())
    names = tuple(a for a in names if mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in names)
    out.append(None if not names or dim % size else (names[0] if len(names) == 1 else names))
  return P(*out)


def param_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  logical = PARAM_AXES[name]
  return _fit(tuple(LOGICAL_TO_MESH[a] for a in logical), shape, mesh)


def param_shardings(config: ModelConfig, mesh: Mesh) -> dict[str, NamedSharding]:
  """{our parameter name: NamedSharding} for every parameter of `config`."""
  from hicra_jax.models.decoder import param_shapes
  return {name: NamedSharding(mesh, param_spec(name, shape, mesh))
          for name, shape in param_shapes(config).items()}


def activation_sharding(mesh: Mesh, kind: str, ndim: int) -> NamedSharding:
  spec = ACTIVATION_AXES[kind]
  return NamedSharding(mesh, P(*spec[:ndim]))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch-first arrays (tokens, masks): rows split over ("data", "fsdp")."""
  return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch is split (data x fsdp)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def kv_cache_sharding(config: ModelConfig, mesh: Mesh):
  """Shardings of a KVCache: rows over (data, fsdp), kv heads over tensor when divisible."""
  from hicra_jax.models.decoder import KVCache
  kv = _fit((None, BATCH, None, "tensor", None),
            (config.num_layers, batch_shards(mesh), 1, config.num_kv_heads, config.head_dim), mesh)
  rows = NamedSharding(mesh, P(BATCH))
  return KVCache(k=NamedSharding(mesh, kv), v=NamedSharding(mesh, kv),
                 valid=NamedSharding(mesh, P(BATCH, None)), index=NamedSharding(mesh, P()),
                 next_position=rows)


def shard_model(model, mesh: Mesh):
  """Place an existing Decoder's parameters by the rules and attach the mesh (in place)."""
  from flax import nnx
  from hicra_jax.models.weights import flat_params, with_params
  shardings = param_shardings(model.config, mesh)
  placed = {k: jax.device_put(v, shardings[k]) for k, v in flat_params(model).items()}
  nnx.update(model, with_params(nnx.state(model, nnx.Param), placed))
  model.mesh = mesh
  return model
