"""The dataset-of-datasets (DoD) data model that every DoD reader returns, its prompt format and its files.

A DoD is a list of `Task`s. Each task has a natural-language instruction (plus paraphrases), a family
("classification" | "general"), the translator's split of tasks ("train" | "test" | "novel") and its
instances, split into "train" / "valid" / "test" (held-out instances within every task).

The paper's prompt format, with and without an instruction:

    {instruction}\nInput: {x}\nOutput:      target " {y}"
    Input: {x}\nOutput:                      target " {y}"

On disk a DoD is a directory with
  tasks.jsonl     one task per line, sorted by name, keys sorted; instances as `[input, output]` pairs.
  MANIFEST.json   format version, counts per family and split, the SHA-256 of tasks.jsonl, and any
                  metadata the writer passes (e.g. the generator's config).
Both are written atomically (temporary file, then rename), the manifest last.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

FAMILIES = ("classification", "general")
TASK_SPLITS = ("train", "test", "novel")
INSTANCE_SPLITS = ("train", "valid", "test")
FORMAT = "translator.dod/1"
TASKS_FILE = "tasks.jsonl"
MANIFEST_FILE = "MANIFEST.json"


@dataclasses.dataclass(frozen=True)
class Instance:
  input: str
  output: str


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a DoD.

  Attributes:
    name: unique, file-name safe identifier.
    family: one of FAMILIES.
    instruction: the canonical (gold) instruction.
    paraphrases: other wordings of the same instruction.
    classes: the label set of a classification task, in the order the instruction names them; () for
      general tasks.
    split: the translator's split of tasks, one of TASK_SPLITS.
    instances: instance split name (INSTANCE_SPLITS) -> instances.
    meta: JSON-native facts particular to the DoD (the synthetic DoD's ops, class dimensions, ...).
  """

  name: str
  family: str
  instruction: str
  paraphrases: tuple[str, ...]
  classes: tuple[str, ...]
  split: str
  instances: Mapping[str, tuple[Instance, ...]]
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"task {self.name!r}: family {self.family!r} is not one of {FAMILIES}")
    if self.split not in TASK_SPLITS:
      raise ValueError(f"task {self.name!r}: split {self.split!r} is not one of {TASK_SPLITS}")
    unknown = set(self.instances) - set(INSTANCE_SPLITS)
    if unknown:
      raise ValueError(f"task {self.name!r}: instance splits {sorted(unknown)} are not in {INSTANCE_SPLITS}")


def format_prompt(instruction: Optional[str], x: str) -> str:
  """The prompt for input `x`; the instruction, if any, on its own line before `Input:`."""
  body = f"Input: {x}\nOutput:"
  return body if instruction is None else f"{instruction}\n{body}"


def format_target(y: str) -> str:
  """The completion the LM is scored on: the output after one space."""
  return f" {y}"


def format_example(instruction: Optional[str], instance: Instance) -> tuple[str, str]:
  """(prompt, target) of one instance in the paper's format."""
  return format_prompt(instruction, instance.input), format_target(instance.output)


# ---------------------------------------------------------------------------------------------------
# Files.


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp)` on a temporary path in `path`'s directory, syncs it to disk and renames it to `path`,
  so a killed job leaves either the old file or the new one, never half of one."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    write(tmp)
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8, "\n" line ends) to `path` atomically (see `atomic_write`)."""

  def write(tmp: str) -> None:
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
      f.write(text)

  atomic_write(path, write)


def _task_to_json(task: Task) -> str:
  record = {
      "name": task.name,
      "family": task.family,
      "instruction": task.instruction,
      "paraphrases": list(task.paraphrases),
      "classes": list(task.classes),
      "split": task.split,
      "instances": {k: [[i.input, i.output] for i in v] for k, v in task.instances.items()},
      "meta": task.meta,
  }
  return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _task_from_json(line: str) -> Task:
  r = json.loads(line)
  return Task(
      name=r["name"],
      family=r["family"],
      instruction=r["instruction"],
      paraphrases=tuple(r["paraphrases"]),
      classes=tuple(r["classes"]),
      split=r["split"],
      instances={k: tuple(Instance(x, y) for x, y in v) for k, v in r["instances"].items()},
      meta=r["meta"],
  )


def counts(tasks: Sequence[Task]) -> dict[str, Any]:
  """Number of tasks per family and split, and of instances per instance split."""
  by = collections.Counter((t.family, t.split) for t in tasks)
  instances = collections.Counter()
  for t in tasks:
    for k, v in t.instances.items():
      instances[k] += len(v)
  return {
      "tasks": len(tasks),
      "tasks_by_family_and_split": {f: {s: by[f, s] for s in TASK_SPLITS} for f in FAMILIES},
      "instances_by_split": {k: instances[k] for k in INSTANCE_SPLITS},
  }


def task_field(task: Task, field: str) -> str:
  """A task attribute (`family`, `split`, ...) or, failing that, an entry of its `meta` ("" when absent)."""
  value = getattr(task, field) if field in Task.__dataclass_fields__ else task.meta.get(field, "")
  return str(value)


def balanced_sample(tasks: Sequence[Task], count: int, fields: Sequence[str],
                    rng: np.random.Generator) -> list[Task]:
  """At most `count` of `tasks`, balanced over the values of `fields` in turn; the sample keeps their order.

  The first field's groups (e.g. the families) share `count` equally, a group smaller than its share giving
  the rest to the others; each group's quota is split the same way over the next field (e.g. the synthetic
  DoD's input kinds), and drawn uniformly at the last. With no fields, a uniform sample.
  """
  def draw(pool: list[int], quota: int, rest: Sequence[str]) -> list[int]:
    if quota >= len(pool):
      return pool
    if not rest:
      return [pool[i] for i in rng.choice(len(pool), quota, replace=False)]
    groups = collections.defaultdict(list)
    for i in pool:
      groups[task_field(tasks[i], rest[0])].append(i)
    chosen, left = [], quota
    for n_left, key in enumerate(sorted(groups, key=lambda k: (len(groups[k]), k)), start=0):
      share = left // (len(groups) - n_left)  # smallest groups first: what they leave goes to the larger
      part = draw(groups[key], share, rest[1:])
      chosen += part
      left -= len(part)
    return chosen

  return [tasks[i] for i in sorted(draw(list(range(len(tasks))), count, tuple(fields)))]


def write_dod(tasks: Sequence[Task], directory: str, metadata: Optional[Mapping[str, Any]] = None) -> str:
  """Writes `tasks` (sorted by name) and a manifest to `directory`; returns the manifest's path."""
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    dup = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    raise ValueError(f"task names are not unique: {dup[:5]}")
  text = "".join(_task_to_json(t) + "\n" for t in sorted(tasks, key=lambda t: t.name))
  atomic_write_text(os.path.join(directory, TASKS_FILE), text)
  manifest = {
      "format": FORMAT,
      "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
      "bytes": len(text.encode("utf-8")),
      "counts": counts(tasks),
      "metadata": dict(metadata or {}),
  }
  path = os.path.join(directory, MANIFEST_FILE)
  atomic_write_text(path, json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
  return path


def read_manifest(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, MANIFEST_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no DoD manifest at {path}; write one with translator.data.dod.write_dod")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
  return manifest


def read_dod(directory: str, verify: bool = True) -> list[Task]:
  """Reads the tasks written by `write_dod`; with `verify`, checks the manifest's SHA-256."""
  manifest = read_manifest(directory)
  path = os.path.join(directory, TASKS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing but {directory}/{MANIFEST_FILE} exists")
  with open(path, "rb") as f:
    data = f.read()
  if verify and hashlib.sha256(data).hexdigest() != manifest["sha256"]:
    raise ValueError(f"{path} does not match the SHA-256 in its manifest; the DoD was modified or is partial")
  return [_task_from_json(line) for line in data.decode("utf-8").splitlines() if line]


# ---------------------------------------------------------------------------------------------------
# The input-only baseline: how much can be answered without the instruction.


def input_only_majority(train_tasks: Iterable[Task], eval_tasks: Iterable[Task], train_split: str = "train",
                        eval_split: str = "test") -> dict[str, float]:
  """Exact match of the best instruction-free guess that is read off the data.

  For each evaluation input, predict the most frequent output for that exact input string among the
  `train_split` instances of `train_tasks`, falling back to the most frequent output of the same family
  when the string never occurs there (ties: the smallest string). Returns exact match overall, per
  family, and the fraction of evaluation inputs seen in training (`coverage`).
  """
  by_input = collections.defaultdict(collections.Counter)
  by_family = collections.defaultdict(collections.Counter)
  for t in train_tasks:
    for ins in t.instances.get(train_split, ()):
      by_input[ins.input][ins.output] += 1
      by_family[t.family][ins.output] += 1

  def best(counter):
    return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counter else None

  fallback = {f: best(c) for f, c in by_family.items()}
  hits, totals, seen = collections.Counter(), collections.Counter(), 0
  for t in eval_tasks:
    for ins in t.instances.get(eval_split, ()):
      counter = by_input.get(ins.input)
      seen += counter is not None
      guess = best(counter) if counter else fallback.get(t.family)
      totals[t.family] += 1
      hits[t.family] += guess == ins.output
  n = sum(totals.values())
  result = {"exact_match": sum(hits.values()) / max(n, 1), "coverage": seen / max(n, 1)}
  for f in sorted(totals):
    result[f"exact_match/{f}"] = hits[f] / totals[f]
  return result
