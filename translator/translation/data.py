"""Translator data: (soft prompt, instruction) pairs read from prompt stores and the DoD.

    table = read_stores(["tune_seed0/prompts", "tune_seed1/prompts"])    # rows [R, P, D] of every store
    splits = split_tasks(tasks, table.task_names, valid_tasks=0.1, seed=0)  # train / valid / test / novel
    pairs = train_pairs(table, tasks_by_name, splits["train"], paraphrases=-1)
    items = eval_items(table, tasks_by_name, splits["valid"])

Tasks are split, never rows: the translator trains on tasks of the DoD split "train" minus a seeded,
family-stratified held-out set (its validation tasks, for epoch selection); DoD "test" and "novel" tasks are
never trained on. Augmentation: every store holds one prompt per task (several stores = several seeds), and
every training task's targets are its instruction and (up to `paraphrases`, -1 = all) of its paraphrases,
so a task gives (stores x (1 + paraphrases)) pairs. Validation pairs each prompt with the gold instruction.

Rows of text are `[BOS][instruction][EOS]`, right-padded to `max_len`; the loss covers every token after BOS.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Mapping, Sequence

import numpy as np

from translator.data import dod
from translator.tuning import store

SPLITS = ("train", "valid", "test", "novel")


@dataclasses.dataclass
class PromptTable:
  """Every row of every store: prompts `[R, P, D]`, the task of each row, the store it came from."""

  prompts: np.ndarray
  task_names: list[str]
  store_index: np.ndarray
  paths: list[str]
  metadata: list[dict]  # per row: the store's task record

  def rows_of(self, names) -> list[int]:
    names = set(names)
    return [i for i, n in enumerate(self.task_names) if n in names]


def read_stores(paths: Sequence[str]) -> PromptTable:
  """Concatenates the prompt stores at `paths` (same P and D) into one table."""
  if isinstance(paths, str):
    paths = [paths]
  if not paths:
    raise ValueError("no prompt store given: set config.stores to a list of prompt store folders")
  tables, names, owner, meta = [], [], [], []
  for s, path in enumerate(paths):
    n, prompts, records = store.read(path)
    if tables and prompts.shape[1:] != tables[0].shape[1:]:
      raise ValueError(f"prompt store {path} has prompts {prompts.shape[1:]} but {paths[0]} has "
                       f"{tables[0].shape[1:]}: every store must share [P, D]")
    tables.append(prompts)
    names += n
    owner += [s] * len(n)
    meta += [records[x] for x in n]
  return PromptTable(np.concatenate(tables).astype(np.float32), names, np.asarray(owner, np.int32), list(paths), meta)


def split_tasks(tasks: Sequence[dod.Task], with_prompts: Sequence[str], valid_tasks: float = 0.1,
                seed: int = 0) -> dict[str, list[str]]:
  """Task names per translator split (see the module docstring), sorted; only tasks that have a prompt.

  valid_tasks: a fraction (< 1) of the DoD's train tasks per family, or a count (>= 1) per family.
  """
  have = set(with_prompts)
  by_split = {s: sorted(t.name for t in tasks if t.split == s and t.name in have) for s in dod.TASK_SPLITS}
  family = {t.name: t.family for t in tasks}
  rng = np.random.default_rng([seed, zlib.crc32(b"translator-valid")])
  valid = []
  for f in dod.FAMILIES:
    pool = [n for n in by_split["train"] if family[n] == f]
    if not pool:
      continue
    k = int(round(valid_tasks * len(pool))) if valid_tasks < 1 else int(valid_tasks)
    k = min(max(k, 1 if valid_tasks > 0 else 0), len(pool) - 1)
    valid += [pool[i] for i in rng.choice(len(pool), k, replace=False)] if k > 0 else []
  valid = sorted(valid)
  train = [n for n in by_split["train"] if n not in set(valid)]
  if not train:
    raise ValueError("no training task for the translator: the prompt stores hold no task of the DoD split "
                     "'train' (did prompt tuning cover task_splits=train?)")
  return {"train": train, "valid": valid, "test": by_split["test"], "novel": by_split["novel"]}


def targets_of(task: dod.Task, paraphrases: int) -> list[str]:
  """The instruction and `paraphrases` of its paraphrases (-1 = all), without duplicates."""
  extra = list(task.paraphrases) if paraphrases < 0 else list(task.paraphrases[:paraphrases])
  return list(dict.fromkeys([task.instruction] + extra))


def train_pairs(table: PromptTable, tasks: Mapping[str, dod.Task], names: Sequence[str],
                paraphrases: int = -1) -> list[tuple[int, str]]:
  """(table row, target text) for every prompt of every task in `names` and every target wording."""
  return [(r, text) for r in table.rows_of(names) for text in targets_of(tasks[table.task_names[r]], paraphrases)]


def eval_items(table: PromptTable, tasks: Mapping[str, dod.Task], names: Sequence[str]) -> list[tuple[int, str]]:
  """(table row, gold instruction) for every prompt of the tasks in `names`."""
  return [(r, tasks[table.task_names[r]].instruction) for r in table.rows_of(names)]


class TextEncoder:
  """`[BOS][text][EOS]` rows, right-padded to `max_len` (0 = fit the texts given to `fit`, rounded up to 8)."""

  def __init__(self, tokenizer, bos_id: int, eos_id: int, pad_id: int, max_len: int = 0):
    if bos_id is None or eos_id is None:
      raise ValueError(f"the translator's decoder needs BOS and EOS ids (got bos={bos_id}, eos={eos_id})")
    self.tokenizer, self.bos_id, self.eos_id, self.pad_id, self.max_len = tokenizer, bos_id, eos_id, pad_id, max_len

  def ids(self, text: str) -> list[int]:
    return [self.bos_id] + self.tokenizer.encode(text, add_special_tokens=False) + [self.eos_id]

  def fit(self, texts: Sequence[str], multiple: int = 8) -> int:
    if not self.max_len:
      longest = max(len(self.ids(t)) for t in texts)
      self.max_len = -(-longest // multiple) * multiple
    return self.max_len

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """tokens, mask `[N, max_len]`; texts longer than max_len are cut (and lose their EOS)."""
    tokens = np.full((len(texts), self.max_len), self.pad_id, np.int32)
    mask = np.zeros((len(texts), self.max_len), bool)
    cut = 0
    for i, t in enumerate(texts):
      ids = self.ids(t)
      cut += len(ids) > self.max_len
      ids = ids[:self.max_len]
      tokens[i, :len(ids)], mask[i, :len(ids)] = ids, True
    if cut:
      logging.warning("%d of %d target texts are longer than max_len=%d tokens and were cut", cut, len(texts),
                      self.max_len)
    return tokens, mask


@dataclasses.dataclass
class Pairs:
  """Encoded pairs: prompt row `[N]` into the table, tokens and mask `[N, T]`."""

  rows: np.ndarray
  tokens: np.ndarray
  mask: np.ndarray

  @classmethod
  def encode(cls, pairs: Sequence[tuple[int, str]], encoder: TextEncoder) -> "Pairs":
    tokens, mask = encoder.encode([t for _, t in pairs])
    return cls(np.asarray([r for r, _ in pairs], np.int32), tokens, mask)

  def __len__(self) -> int:
    return len(self.rows)


def epoch_order(num: int, epoch: int, seed: int) -> np.ndarray:
  """The seeded permutation of `num` pairs for `epoch` (the same on every process and after a resume)."""
  return np.random.default_rng([seed, epoch, zlib.crc32(b"translator-epoch")]).permutation(num)


def batch_rows(order: np.ndarray, step_in_epoch: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pair indices `[batch_size]` of a step and their weights (0 for the padding of a short last batch)."""
  chosen = order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]
  weight = np.zeros(batch_size, np.float32)
  weight[:len(chosen)] = 1.0
  return np.resize(chosen, batch_size) if len(chosen) else np.zeros(batch_size, np.int64), weight
