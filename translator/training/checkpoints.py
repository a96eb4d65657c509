"""Orbax checkpoints with auto-resume: the train state (arrays) plus a JSON record (data position, ...).

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=500)
    state, extra = ckpt.restore_or(state)        # the latest checkpoint if there is one, else `state`
    ...
    ckpt.maybe_save(step, state, {"data_step": step})
    ckpt.close()

Saves are atomic (orbax writes to a temporary folder and renames it), so a killed job resumes from the last
complete checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with items `state` (pytree) and `extra` (JSON)."""

  def __init__(self, directory: str, *, every: int, max_to_keep: int = 2):
    self.every = every
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "extra"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def restore_or(self, state: Any) -> tuple[Any, dict]:
    """(restored state, extra) from the latest checkpoint, shaped and sharded like `state`; else (state, {})."""
    step = self.latest_step()
    if step is None:
      return state, {}
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()))
    return out["state"], dict(out["extra"] or {})

  def save(self, step: int, state: Any, extra: Optional[dict] = None) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra or {})), force=True)
    self._manager.wait_until_finished()

  def maybe_save(self, step: int, state: Any, extra: Optional[dict] = None) -> bool:
    if step % self.every:
      return False
    self.save(step, state, extra)
    return True

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
