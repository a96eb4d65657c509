"""Metric writers: JSONL (one line per write) and TensorBoard event files, from process 0 only; and a
progress reporter that logs steps/s and an ETA."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Mapping, Optional

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files in `workdir/tb`."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:
        logging.warning("tensorboardX is not installed: no TensorBoard event files, JSONL only")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}, sort_keys=True) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Logs `step/total`, steps/s and the ETA every `every` steps (process 0)."""

  def __init__(self, total: int, first_step: int = 0, every: int = 50, name: str = "train"):
    self.total, self.every, self.name = total, every, name
    self._t0, self._s0 = time.perf_counter(), first_step

  def __call__(self, step: int, message: str = "") -> Optional[float]:
    if step % self.every and step != self.total:
      return None
    elapsed = time.perf_counter() - self._t0
    rate = (step - self._s0) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    if jax.process_index() == 0:
      logging.info("%s %d/%d  %.2f steps/s  eta %s  %s", self.name, step, self.total, rate,
                   time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?", message)
    return rate
