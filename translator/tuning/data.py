"""Examples of a DoD as token rows for prompt tuning: grain sources, per-task shuffled streams, global batches.

Every task contributes its "train" instances (to the prompt's gradient) and its "valid" instances (to early
stopping and to the final exact match), each capped per task. A training row is the paper's text prompt
and target, `Input: {x}\\nOutput:` + ` {y}` (`dod.format_example` without an instruction: the soft prompt
stands in for it), right-padded to `max_len`:

    before_bos   prefix = [prompt (P)]               tokens = [BOS] Input: x\\nOutput: y [EOS] [pad ...]
    after_bos    prefix = [emb(BOS)][prompt (P)]     tokens =       Input: x\\nOutput: y [EOS] [pad ...]

The loss covers the target tokens only (` y` and EOS): `target_pos[b, j]` is the position, in the whole
`[prefix][tokens]` sequence, whose output predicts target token `target_ids[b, j]` (the position just before
it); at most `max_target_len` per row. A row that does not fit loses input tokens from the left (after BOS);
a target longer than `max_target_len` is cut (both counted and logged).

Generation rows (validation exact match) are the text prompt alone, left-padded to `max_len`.

Data loading is host-sharded and deterministic. `grain.MapDataset.source(examples).map(encode)` gives
random access to tokenized examples; tokenization is lazy, so each process only tokenizes the rows its
devices hold (`make_global`). The order of a task's train instances is the stream
`grain.MapDataset.range(n).shuffle(seed).repeat()`: a fresh permutation per epoch, indexed by how many of the
task's examples were consumed so far. Which tasks fill a step is decided by `schedule.Scheduler` (the same
on every process), so the whole loader position is the scheduler's state.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Optional, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from translator import sharding as sharding_lib
from translator.data import dod

POSITIONS = ("before_bos", "after_bos")


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static shape of every row: prompt length P, token row length L, target slots per row Tt."""

  prompt_length: int
  prompt_position: str
  max_len: int
  max_target_len: int
  bos_id: Optional[int]
  eos_id: Optional[int]
  pad_id: int

  def __post_init__(self):
    if self.prompt_position not in POSITIONS:
      raise ValueError(f"prompt_position {self.prompt_position!r} is not one of {POSITIONS}")
    if self.prompt_position == "after_bos" and self.bos_id is None:
      raise ValueError("prompt_position='after_bos' needs a BOS token, but the LM config has no bos_token_id")
    if self.max_target_len < 1 or self.max_len <= self.max_target_len:
      raise ValueError(f"need 1 <= max_target_len < max_len, got max_target_len={self.max_target_len}, "
                       f"max_len={self.max_len}")

  @property
  def prefix_len(self) -> int:
    """Embedded items before the tokens: the prompt, plus the BOS embedding when after_bos."""
    return self.prompt_length + (self.prompt_position == "after_bos")

  @property
  def bos_in_tokens(self) -> bool:
    return self.prompt_position == "before_bos" and self.bos_id is not None


@dataclasses.dataclass(frozen=True)
class Example:
  task: int  # index of the task in the prompt table
  prompt: str  # "Input: {x}\nOutput:"
  target: str  # " {y}"


class Encoder:
  """Token ids of texts (`tokenizer.encode` without special tokens); the training and generation rows."""

  def __init__(self, tokenizer, layout: Layout, append_eos: bool = True):
    self.tokenizer, self.layout = tokenizer, layout
    self.append_eos = append_eos and layout.eos_id is not None

  def ids(self, text: str) -> list[int]:
    return list(self.tokenizer.encode(text, add_special_tokens=False))

  def prompt_target(self, ex: Example) -> tuple[list[int], list[int], bool]:
    """(prompt ids with BOS if it is a token, target ids with EOS, truncated?) fitted to the layout."""
    lay = self.layout
    head = [lay.bos_id] if lay.bos_in_tokens else []
    prompt = self.ids(ex.prompt)
    target = self.ids(ex.target) + ([lay.eos_id] if self.append_eos else [])
    cut = len(target) > lay.max_target_len
    target = target[:lay.max_target_len]
    room = lay.max_len - len(head) - len(target)
    if len(prompt) > room:
      prompt, cut = prompt[len(prompt) - room:], True
    return head + prompt, target, cut

  def train_row(self, ex: Example) -> dict:
    """tokens, mask `[L]`; target_pos, target_ids, target_mask `[Tt]`; task `[]`; truncated `[]`."""
    lay = self.layout
    prompt, target, cut = self.prompt_target(ex)
    row = prompt + target
    tokens = np.full(lay.max_len, lay.pad_id, np.int32)
    tokens[:len(row)] = row
    mask = np.zeros(lay.max_len, bool)
    mask[:len(row)] = True
    target_pos = np.zeros(lay.max_target_len, np.int32)
    target_ids = np.full(lay.max_target_len, lay.pad_id, np.int32)
    target_mask = np.zeros(lay.max_target_len, bool)
    n = len(target)
    # Token i of the row sits at position prefix_len + i; the output at the position before predicts it.
    target_pos[:n] = lay.prefix_len + len(prompt) + np.arange(n) - 1
    target_ids[:n] = target
    target_mask[:n] = True
    return dict(tokens=tokens, mask=mask, target_pos=target_pos, target_ids=target_ids, target_mask=target_mask,
                task=np.int32(ex.task), truncated=np.bool_(cut))

  def generation_row(self, ex: Example) -> dict:
    """ids, mask `[L]` (left-padded text prompt), task `[]`."""
    lay = self.layout
    prompt, _, _ = self.prompt_target(ex)
    ids = np.full(lay.max_len, lay.pad_id, np.int32)
    mask = np.zeros(lay.max_len, bool)
    ids[lay.max_len - len(prompt):] = prompt
    mask[lay.max_len - len(prompt):] = True
    return dict(ids=ids, mask=mask, task=np.int32(ex.task))

  def lengths(self, ex: Example) -> tuple[int, int]:
    """Untruncated (row length, target length) in tokens."""
    head = 1 if self.layout.bos_in_tokens else 0
    target = len(self.ids(ex.target)) + self.append_eos
    return head + len(self.ids(ex.prompt)) + target, target


def _empty_like(row: dict) -> dict:
  """A row of padding (no token, no target): what empty slots of a step hold."""
  return {k: np.zeros_like(v) for k, v in row.items()}


def stack(rows: Sequence[dict]) -> dict:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def task_seed(seed: int, name: str) -> int:
  return zlib.crc32(f"{seed}/{name}".encode("utf-8"))


class TuningData:
  """The train and valid examples of every task of the prompt table, as grain sources.

  Args:
    tasks: the DoD's tasks, in prompt-table order (task index = position).
    encoder: tokenizer + layout.
    max_train_per_task / max_valid_per_task: caps (0 = all): the first instances of each split.
    seed: of the per-task shuffles.
  """

  def __init__(self, tasks: Sequence[dod.Task], encoder: Encoder, *, max_train_per_task: int = 0,
               max_valid_per_task: int = 0, seed: int = 0):
    self.tasks, self.encoder, self.seed = list(tasks), encoder, seed
    self.train_examples, self.valid_examples = split_examples(tasks, max_train_per_task, max_valid_per_task)
    count = lambda examples: np.bincount([ex.task for ex in examples], minlength=len(self.tasks))
    self.num_train, self.num_valid = count(self.train_examples).tolist(), count(self.valid_examples).tolist()
    self.train_offsets = np.concatenate([[0], np.cumsum(self.num_train)[:-1]]).astype(int).tolist()
    self.valid_offsets = np.concatenate([[0], np.cumsum(self.num_valid)[:-1]]).astype(int).tolist()
    self.train = grain.MapDataset.source(self.train_examples).map(encoder.train_row)
    self.valid = grain.MapDataset.source(self.valid_examples).map(encoder.train_row)
    self.generation = grain.MapDataset.source(self.valid_examples).map(encoder.generation_row)
    self._orders = [grain.MapDataset.range(n).shuffle(seed=task_seed(seed, task.name) % 2**31).repeat()
                    for n, task in zip(self.num_train, self.tasks)]
    self._empty = _empty_like(self.train[0])

  def train_index(self, task: int, cursor: int) -> int:
    """Index into `train_examples` of the `cursor`-th example of `task`'s stream (epoch = cursor // n)."""
    return self.train_offsets[task] + int(self._orders[task][cursor])

  def step_row(self, slot_task: np.ndarray, slot_cursor: np.ndarray, k: int, row: int) -> dict:
    """Row `row` of a step: example `row % k` of slot `row // k` (padding when the slot is empty)."""
    s, j = divmod(row, k)
    t = int(slot_task[s])
    if t >= len(self.tasks):
      return self._empty
    return self.train[self.train_index(t, int(slot_cursor[s]) + j)]

  def valid_rows(self, tasks: Sequence[int]) -> list[int]:
    """Indices into the valid examples of every valid instance of `tasks`."""
    return [self.valid_offsets[t] + i for t in tasks for i in range(self.num_valid[t])]

  def valid_row(self, index: Optional[int]) -> dict:
    return self._empty if index is None else self.valid[index]

  def generation_row(self, index: Optional[int]) -> dict:
    if index is None:
      row = self.generation[0]
      return {k: np.zeros_like(v) for k, v in row.items()}
    return self.generation[index]


def split_examples(tasks: Sequence[dod.Task], max_train_per_task: int = 0,
                   max_valid_per_task: int = 0) -> tuple[list[Example], list[Example]]:
  """(train, valid) examples of every task, grouped by task in table order, capped per task (0 = all): the
  first instances of the task's "train" and "valid" instance splits."""
  cap = lambda items, n: tuple(items[:n]) if n else tuple(items)
  train, valid = [], []
  for t, task in enumerate(tasks):
    tr = cap(task.instances.get("train", ()), max_train_per_task)
    va = cap(task.instances.get("valid", ()), max_valid_per_task)
    if not tr or not va:
      raise ValueError(f"task {task.name!r} has {len(tr)} train and {len(va)} valid instances; prompt tuning "
                       f"needs both (drop it with tuning.data.tunable_tasks)")
    train += [Example(t, *dod.format_example(None, ins)) for ins in tr]
    valid += [Example(t, *dod.format_example(None, ins)) for ins in va]
  return train, valid


def tunable_tasks(tasks: Sequence[dod.Task]) -> tuple[list[dod.Task], list[str]]:
  """(tasks with at least one train and one valid instance, names of the others)."""
  keep = [t for t in tasks if t.instances.get("train") and t.instances.get("valid")]
  dropped = [t.name for t in tasks if not (t.instances.get("train") and t.instances.get("valid"))]
  return keep, dropped


def fit_lengths(encoder: Encoder, examples: Sequence[Example], multiple: int = 8) -> tuple[int, int]:
  """(max_len, max_target_len) that fit every example, rounded up to `multiple`."""
  rows, targets = zip(*(encoder.lengths(ex) for ex in examples))
  up = lambda n: -(-n // multiple) * multiple
  return up(max(rows)), up(max(targets))


# ---------------------------------------------------------------------------------------------------
# Global arrays from rows: each process builds only the rows its devices hold.


def row_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
  """Rows over the `batch` logical axis (data, fsdp), everything else replicated."""
  return sharding_lib.sharding_for(("batch",) + (None,) * (len(shape) - 1), shape, mesh)


def make_global(mesh: Mesh, num_rows: int, build_row: Callable[[int], dict],
                fields: Optional[Sequence[str]] = None) -> dict:
  """A dict of global arrays `[num_rows, ...]`, sharded over `batch`, from `build_row(i) -> {field: array}`.

  Only the rows held by this process's devices are built (host-sharded loading).
  """
  probe = build_row(0) if num_rows else {}
  fields = list(fields or probe)
  out = {}
  needed: Optional[list[int]] = None
  local: dict[int, dict] = {}
  for f in fields:
    shape = (num_rows,) + np.shape(probe[f])
    sharding = row_sharding(mesh, shape)
    if needed is None:  # every field has the same row sharding
      rows = set()
      for index in sharding.addressable_devices_indices_map(shape).values():
        rows.update(range(*index[0].indices(num_rows)))
      needed = sorted(rows)
      local = {i: build_row(i) for i in needed}

    def callback(index, f=f, shape=shape):
      rows = range(*index[0].indices(shape[0]))
      block = np.stack([local[i][f] for i in rows]) if len(rows) else np.zeros((0,) + shape[1:], probe[f].dtype)
      return block[(slice(None),) + tuple(index[1:])]

    out[f] = jax.make_array_from_callback(shape, sharding, callback)
  return out


def replicated(mesh: Mesh, value: np.ndarray) -> jax.Array:
  """The same host value on every device (every process must pass the same value)."""
  value = np.asarray(value)
  sharding = NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

