"""Soft prompt tuning of a whole dataset of datasets in one sharded job: a prompt table `[T, P, D]` trained
jointly against a frozen LM, with per-task optimizer state, validation and early stopping.

  data.Layout, data.Encoder, data.TuningData   rows of the paper's format; grain sources; global batches
  schedule.Scheduler                           which tasks fill a step; per-task epochs and early stopping
  inits.initial_prompts                        random_vocab | sampled_vocab | class_labels | text | uniform
  step.Tuner, step.TuneState                   the jitted, sharded train step, validation loss, generation
  store.write / store.read                     the prompt store (prompts.safetensors + metadata.json)

The mechanics are described in implementation.md ("Prompt tuning") and in each module's docstring.
"""

from translator.tuning import data, inits, schedule, step, store
from translator.tuning.store import read

__all__ = ["data", "inits", "schedule", "step", "store", "read"]
