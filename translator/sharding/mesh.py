"""The one device mesh of the project: axes `data`, `fsdp`, `tensor`.

`data` splits the batch, `fsdp` splits parameters (and the batch), `tensor` splits heads, MLP and
vocabulary. On a pod the same code runs in every process after `jax.distributed.initialize()`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A `(data, fsdp, tensor)` mesh over `devices` (default: all devices of all processes).

  One of the sizes may be -1: it takes whatever the others leave.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not split into data={data}, fsdp={fsdp}, tensor={tensor}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} "
                     f"devices, but there are {len(devices)}")
  # Auto axes: XLA propagates shardings from the explicit in/out shardings of each jitted function.
  axis_types = (AxisType.Auto,) * len(AXES)
  if devices == list(jax.devices()):
    return jax.make_mesh(tuple(sizes), AXES, devices=devices, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(sizes), AXES, axis_types=axis_types)


def mesh_from_config(cfg) -> Mesh:
  """A mesh from a config with fields `data`, `fsdp`, `tensor` (an ml_collections.ConfigDict or dict)."""
  get = cfg.get if hasattr(cfg, "get") else lambda k, d: getattr(cfg, k, d)
  return make_mesh(get("data", -1), get("fsdp", 1), get("tensor", 1))
