"""Logical axis names -> mesh axes, in one table, and the shardings they give.

Every parameter and activation names its axes logically (`embed`, `mlp`, `vocab`, ...); this table is the
only place that says how they map onto the mesh. Soft prompts have axes of their own that map to no mesh
axis, so a prompt table stays replicated and exports as one array.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, Any]]

LOGICAL_AXIS_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("length", None),
    ("prompt_tasks", None),
    ("prompt_length", None),
    ("prompt_embed", None),
)


def spec_for(logical: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
             rules: Rules = LOGICAL_AXIS_RULES) -> PartitionSpec:
  """The PartitionSpec of an array with `shape` and logical axes `logical`.

  A mesh axis is used at most once, and only where it divides the dimension (a small model on a big mesh
  stays replicated where it must, rather than failing).
  """
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name, dim in zip(logical, shape):
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule; add it to LOGICAL_AXIS_RULES")
    target = table.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    kept = []
    for axis in axes:
      size = mesh.shape[axis]
      if axis in used or size == 1 or dim % (math.prod(mesh.shape[a] for a in kept) * size):
        continue
      kept.append(axis)
    used.update(kept)
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*out)


def shardings(boxed_tree: Any, mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES) -> Any:
  """NamedShardings for a tree of `nn.Partitioned` boxes (e.g. `jax.eval_shape` of a Flax init)."""

  def one(leaf):
    if isinstance(leaf, nn.Partitioned):
      return NamedSharding(mesh, spec_for(leaf.names, leaf.value.shape, mesh, rules))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree_util.tree_map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def sharding_for(logical: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                 rules: Rules = LOGICAL_AXIS_RULES) -> NamedSharding:
  return NamedSharding(mesh, spec_for(logical, shape, mesh, rules))
