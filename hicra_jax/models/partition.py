"""Partition rules of the decoder's arrays on a ("data", "fsdp", "tensor") mesh.

Parameters are split by their logical axes (models/schema.py) through
`LOGICAL_TO_MESH`: the model width D over "fsdp"; vocabulary V, heads Q / K and
MLP width F over "tensor". Batch-first arrays (tokens, activations, KV caches)
split their rows N over `BATCH`. A dimension that an axis does not divide is
kept whole along that axis instead (replicated); in particular a model with
fewer KV heads than the tensor axis keeps its K/V projections replicated over
"tensor" (correct, at the cost of redundant K/V compute), the usual choice for
GQA.

The rules live here, inside models, because the decoder (activation
constraints) and `load_pretrained(mesh=...)` use them; `hicra_jax.sharding`
builds meshes and places whole models and caches with them.
"""

from __future__ import annotations

import math

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hicra_jax.models import schema
from hicra_jax.models.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")

# Logical axis (models/schema.py) -> the mesh axis that splits it (None: kept whole).
LOGICAL_TO_MESH = {
    "vocab": "tensor", "embed": "fsdp", "q_heads": "tensor", "kv_heads": "tensor",
    "mlp": "tensor", "layer": None, "norm": None, "head_dim": None,
    # The vision tower: its width over "fsdp", heads and MLP widths over "tensor".
    "vision_embed": "fsdp", "vision_heads": "tensor", "vision_mlp": "tensor",
    "vision_merged": "fsdp", "vision_merger_mlp": "tensor", "vision_layer": None,
    "vision_norm": None, "vision_head_dim": None, "vision_qkv": None, "vision_channels": None,
    "vision_frames": None, "vision_pixels": None,
}


def fit_spec(mesh_axes: tuple, shape: tuple[int, ...], mesh: Mesh) -> P:
  """PartitionSpec of `mesh_axes` (per dimension: None, an axis, or a tuple of axes).

  Axes of size 1 are dropped, and so are axes that do not divide their
  dimension (that dimension is then replicated).
  """
  out = []
  for axis, dim in zip(mesh_axes, shape):
    names = (axis,) if isinstance(axis, str) else tuple(axis or ())
    names = tuple(a for a in names if mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in names)
    out.append(None if not names or dim % size else (names[0] if len(names) == 1 else names))
  return P(*out)


def param_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  """PartitionSpec of the parameter `name` (a schema name) of `shape` on `mesh`."""
  axes = schema.BY_NAME[name].axes
  return fit_spec(tuple(LOGICAL_TO_MESH[a] for a in axes), shape, mesh)


def param_shardings(config: ModelConfig, mesh: Mesh) -> dict[str, NamedSharding]:
  """{parameter name: NamedSharding} for every parameter of `config`."""
  return {name: NamedSharding(mesh, param_spec(name, shape, mesh))
          for name, shape in schema.param_shapes(config).items()}


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch-first arrays (tokens [N, T], masks, activations [N, T, D]): rows N over BATCH."""
  return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch is split (data x fsdp)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]
