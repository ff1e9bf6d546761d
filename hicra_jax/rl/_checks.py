"""Input checks shared by the RL core: static shapes, dtypes and option names.

Every check runs on static information (shapes, dtypes, Python values), so it
works unchanged under `jax.jit`. Values that may be traced (alpha, clip
ranges, coefficients) are checked only when they are concrete.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_option(name: str, value: Any, allowed: Sequence[str]) -> str:
  """Returns `value` if it is one of `allowed`, else raises a ValueError naming `name`."""
  if not isinstance(value, str) or value not in allowed:
    raise ValueError(f"{name}={value!r} is not supported; expected one of {tuple(allowed)}")
  return value


def check_rank(name: str, x: Any, ranks: Sequence[int], expected: str) -> jax.Array:
  """Converts `x` to an array and checks its rank; `expected` describes the shape."""
  x = jnp.asarray(x)
  if x.ndim not in ranks:
    raise ValueError(f"{name} must have shape {expected}, got shape {tuple(x.shape)}")
  return x


def check_shape(name: str, x: Any, shape: tuple[int, ...], expected: str) -> jax.Array:
  """Converts `x` to an array and checks that its shape equals `shape`."""
  x = jnp.asarray(x)
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} must have shape {expected} = {tuple(shape)}, "
                     f"got shape {tuple(x.shape)}")
  return x


def as_float(name: str, x: Any) -> jax.Array:
  """`x` as a real array of at least float32 (float64 stays float64 under x64)."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.floating):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
  if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
    return x.astype(jnp.float32)
  raise ValueError(f"{name} must be a real array, got dtype {x.dtype}")


def check_mask(name: str, x: Any, shape: tuple[int, ...] | None = None,
               expected: str = "") -> jax.Array:
  """A bool mask (bool or integer 0/1 input), optionally of a given shape.

  Float masks are rejected: a weight in [0, 1] would be silently binarized.
  """
  x = jnp.asarray(x)
  if not (x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.integer)):
    raise ValueError(f"{name} must be a bool (or integer 0/1) mask, got dtype {x.dtype}")
  if shape is not None and tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} must have shape {expected} = {tuple(shape)}, "
                     f"got shape {tuple(x.shape)}")
  return x.astype(jnp.bool_)


def check_group_size(group_size: Any, n: int, *, minimum: int = 1, why: str = "") -> int:
  """Checks that `group_size` is a Python int >= `minimum` dividing the row count `n`."""
  if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
    raise ValueError(f"group_size must be a Python int (static under jit), got {group_size!r}")
  group_size = int(group_size)
  if group_size < minimum:
    raise ValueError(f"group_size must be >= {minimum}{why}, got {group_size}")
  if n % group_size:
    raise ValueError(f"group_size={group_size} does not divide the number of rows N={n}; "
                     f"rows must be P prompts x G samples (row i belongs to prompt i // G)")
  return group_size


def concrete(x: Any) -> float | None:
  """The Python float value of a scalar if it is concrete, None if traced."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return float(np.asarray(x))
  except (TypeError, ValueError):
    return None


def check_range(name: str, x: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
  """Raises a ValueError if the concrete scalar `x` lies outside [lo, hi] (or open ends)."""
  shape = tuple(x.shape) if isinstance(x, jax.core.Tracer) else np.shape(x)
  if shape:
    raise ValueError(f"{name} must be a scalar, got shape {shape}")
  v = concrete(x)
  if v is None:
    return
  bad = (v != v or (lo is not None and (v <= lo if lo_open else v < lo))
         or (hi is not None and (v >= hi if hi_open else v > hi)))
  if bad:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    raise ValueError(f"{name} must lie in {left}{lo_s}, {hi_s}{right}, got {v:g}")
