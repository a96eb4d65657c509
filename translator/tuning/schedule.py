"""Which tasks fill each step, when each task is validated, and when it stops: the paper's per-task jobs,
interleaved in one joint job.

The paper tunes each task alone: batches of 8 of its train examples, AdamW, validation loss after every
epoch, stop after `patience` epochs without improvement or after `max_epochs`, keep the best prompt. Here
a step holds `tasks_per_step` slots (S) of `examples_per_task` rows (k) each: one slot is one task's
update on k of its examples, exactly the paper's batch. Because every task has its own optimizer state and
step count (see `step.py`), a task's prompt follows the same trajectory it would in its own job (up to
which examples its batches hold); the joint job only decides the interleaving:

* Slots go to the active tasks with the fewest updates so far (ties: a fixed seeded order of the tasks), so
  tasks advance round-robin and no task waits more than a round.
* A task's examples come from its own shuffled stream (data.py); `seen[t]` counts them, and its epoch is
  `seen[t] / num_train[t]`. When a task completes an epoch it leaves the rotation ("pending") until it is
  validated: the validation loss of its current prompt on its valid instances (token-weighted mean).
* Pending tasks are validated together (one batched pass) as soon as the remaining active tasks can no
  longer fill a step, so evaluation batches are large and no step has empty slots while work remains.
  Steps have empty slots only when fewer than S tasks are left at all.
* After a validation: a better loss (by more than `min_delta`) makes the current prompt the task's best
  and resets its patience; otherwise it uses one. A task stops when its patience runs out ("patience") or
  after `max_epochs` validated epochs ("max_epochs"). A stopped task gets no more slots, so its prompt
  (and its best prompt) never change again.

All of this is host-side integer bookkeeping, identical on every process; its state goes into the
checkpoint as JSON (`to_json` / `load_json`), so a resumed job continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

ACTIVE, PENDING, STOPPED, FINISHED, CUT = 0, 1, 2, 3, 4
STATUS_NAMES = {ACTIVE: "active", PENDING: "pending", STOPPED: "patience", FINISHED: "max_epochs", CUT: "max_steps"}


@dataclasses.dataclass
class Plan:
  """One step: slot s trains task `task[s]` (T = empty) on its stream positions `cursor[s] ...+k-1`."""

  task: np.ndarray  # [S] int32
  cursor: np.ndarray  # [S] int64


class Scheduler:
  """Per-task progress, validation and early stopping of a joint prompt-tuning job."""

  _FIELDS = ("seen", "updates", "evals", "bad", "status", "best_loss", "best_epoch", "last_loss")

  def __init__(self, num_train: Sequence[int], *, tasks_per_step: int, examples_per_task: int, max_epochs: int,
               patience: int, min_delta: float = 0.0, seed: int = 0):
    if tasks_per_step < 1 or examples_per_task < 1 or max_epochs < 1 or patience < 1:
      raise ValueError(f"tasks_per_step={tasks_per_step}, examples_per_task={examples_per_task}, max_epochs="
                       f"{max_epochs} and patience={patience} must all be >= 1")
    self.num_train = np.asarray(num_train, np.int64)
    if (self.num_train < 1).any():
      raise ValueError("every task needs at least one train example")
    self.num_tasks = len(self.num_train)
    self.S, self.k = tasks_per_step, examples_per_task
    self.max_epochs, self.patience, self.min_delta = max_epochs, patience, min_delta
    self.priority = np.random.default_rng([seed, 7]).permutation(self.num_tasks)
    t = self.num_tasks
    self.seen = np.zeros(t, np.int64)  # train examples consumed
    self.updates = np.zeros(t, np.int64)  # optimizer updates (slots) received
    self.evals = np.zeros(t, np.int64)  # validations done (= epochs completed)
    self.bad = np.zeros(t, np.int64)  # validations since the best one
    self.status = np.zeros(t, np.int64)
    self.best_loss = np.full(t, np.inf)
    self.best_epoch = np.zeros(t, np.int64)  # the validation (epoch) of the best loss; 0 = none yet
    self.last_loss = np.full(t, np.nan)

  # ----- Planning -------------------------------------------------------------------------------------------

  @property
  def done(self) -> bool:
    return not np.isin(self.status, (ACTIVE, PENDING)).any()

  def count(self, status: int) -> int:
    return int((self.status == status).sum())

  def needs_eval(self) -> bool:
    """Pending tasks exist and the active ones cannot fill a step."""
    return self.count(PENDING) > 0 and self.count(ACTIVE) < self.S

  def pending(self) -> np.ndarray:
    return np.flatnonzero(self.status == PENDING)

  def unfinished(self) -> np.ndarray:
    return np.flatnonzero(np.isin(self.status, (ACTIVE, PENDING)))

  def plan(self) -> Plan:
    """The next step's slots: the S active tasks with the fewest updates (then by the seeded priority)."""
    active = np.flatnonzero(self.status == ACTIVE)
    order = active[np.lexsort((self.priority[active], self.updates[active]))][:self.S]
    order = np.sort(order)
    task = np.full(self.S, self.num_tasks, np.int32)
    task[:len(order)] = order
    cursor = np.zeros(self.S, np.int64)
    cursor[:len(order)] = self.seen[order]
    return Plan(task=task, cursor=cursor)

  def commit(self, plan: Plan) -> None:
    """Records that `plan` was trained; tasks that completed an epoch become pending."""
    tasks = plan.task[plan.task < self.num_tasks]
    self.seen[tasks] += self.k
    self.updates[tasks] += 1
    epoch_done = self.seen[tasks] >= (self.evals[tasks] + 1) * self.num_train[tasks]
    self.status[tasks[epoch_done]] = PENDING

  def record(self, tasks: np.ndarray, losses: np.ndarray, final_status: Optional[int] = None) -> np.ndarray:
    """Records validation losses of `tasks`; returns a `[T]` bool mask of the tasks whose prompt became best.

    final_status: stop these tasks with this status whatever the outcome (the step budget ran out).
    """
    improved = np.zeros(self.num_tasks, bool)
    for t, loss in zip(np.asarray(tasks), np.asarray(losses, np.float64)):
      self.evals[t] += 1
      self.last_loss[t] = loss
      if loss < self.best_loss[t] - self.min_delta:
        self.best_loss[t], self.best_epoch[t], self.bad[t] = loss, self.evals[t], 0
        improved[t] = True
      else:
        self.bad[t] += 1
      if final_status is not None:
        self.status[t] = final_status
      elif self.bad[t] >= self.patience:
        self.status[t] = STOPPED
      elif self.evals[t] >= self.max_epochs:
        self.status[t] = FINISHED
      else:
        self.status[t] = ACTIVE
    return improved

  # ----- Reporting ----------------------------------------------------------------------------------------

  def epochs(self) -> np.ndarray:
    return self.seen / self.num_train

  def step_bound(self) -> int:
    """Steps if every task ran all `max_epochs` and every step were full (for progress reports)."""
    turns = np.ceil(self.max_epochs * self.num_train / self.k).sum()
    return int(math.ceil(turns / self.S))

  def turns_bound(self) -> int:
    """Most slots any run can use: no step has zero tasks, so also a bound on the steps."""
    return int(np.ceil(self.max_epochs * self.num_train / self.k).sum()) + self.num_tasks

  def summary(self) -> dict:
    counts = {name: self.count(code) for code, name in STATUS_NAMES.items()}
    finite = np.isfinite(self.best_loss)
    return {**{f"tasks/{k}": v for k, v in counts.items()},
            "valid/best_loss_mean": float(self.best_loss[finite].mean()) if finite.any() else float("nan"),
            "epochs/mean": float(self.epochs().mean())}

  def task_record(self, t: int) -> dict:
    return {"status": STATUS_NAMES[int(self.status[t])], "updates": int(self.updates[t]),
            "examples_seen": int(self.seen[t]), "epochs": float(self.seen[t] / self.num_train[t]),
            "validations": int(self.evals[t]), "best_epoch": int(self.best_epoch[t]),
            "best_valid_loss": float(self.best_loss[t]), "last_valid_loss": float(self.last_loss[t])}

  # ----- Checkpointing ------------------------------------------------------------------------------------

  def to_json(self) -> dict:
    """JSON-native state (floats survive exactly: Python writes the shortest repr that reads back equal)."""
    out = {"num_train": self.num_train.tolist()}
    for f in self._FIELDS:
      values = getattr(self, f)
      out[f] = [None if not np.isfinite(v) else float(v) for v in values] if values.dtype.kind == "f" \
          else values.tolist()
    return out

  def load_json(self, state: dict) -> None:
    if state["num_train"] != self.num_train.tolist():
      raise ValueError("the checkpoint's scheduler has other tasks or train sizes than this job: was the config "
                       "or the DoD changed? Use a fresh workdir.")
    for f in self._FIELDS:
      current = getattr(self, f)
      if current.dtype.kind == "f":
        fill = np.inf if f == "best_loss" else np.nan
        setattr(self, f, np.asarray([fill if v is None else v for v in state[f]], np.float64))
      else:
        setattr(self, f, np.asarray(state[f], np.int64))
