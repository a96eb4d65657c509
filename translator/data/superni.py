"""Super-NaturalInstructions (SuperNI v2) as a DoD: a reader for a local clone of `allenai/natural-instructions`.

Reads `{root}/tasks/{name}.json` for the names listed in `{root}/{split_dir}/train_tasks.txt` (task split
"train") and `test_tasks.txt` (task split "test": held out from the translator); `excluded_tasks.txt` is
never read. Names listed but missing from `tasks/` are counted, logged and skipped (a partial clone).

Per task (see the repository README's "Task schema"):
* instruction: the `Definition`, a list of strings in the files, its parts stripped and joined with one
  space. Every real file holds exactly one string, so this is `Definition[0]` (what Tk-Instruct uses),
  without dropping text should a file ever hold several.
* instances: `Input: {input}\nOutput:` -> ` {output[0]}` (`dod.format_example`). `output` is a list of
  references: the first is the target, all of them are kept in `meta["references"]` (parallel to the
  instances of each split) for metrics that take the maximum over references.
* English only (`english_only`): `Input_language`, `Output_language` and `Instruction_language` all
  contain "English".
* The paper's filter: an instance is kept when `count_tokens(format_prompt(None, x) + format_target(y))`
  is at most `max_instance_tokens` - the instance as the LM reads it without the instruction, because
  the filter is on instances and the instruction is what the soft prompt stands in for. Then a task is
  kept when at least `min_instances` of its instances pass.
* Instance splits. Test tasks: "test" = the first `test_instances` instances of the file that pass the
  token filter (SuperNI puts its label-balanced evaluation instances first). Train tasks have no "test"
  instances (an empty tuple): all their instances feed tuning, as in the paper. The other instances are
  shuffled with a per-task seeded stream, capped at `max_instances_per_task` and split
  `1 - valid_fraction` / `valid_fraction` into "train" / "valid".
* family: "classification" when the first references of all the file's instances take between 2 and
  `max_classes` distinct values; `classes` is that label set in the order the definition first mentions
  each label (case-insensitive; labels it never mentions follow, sorted). Otherwise "general".
* meta: the file, categories, source, domains, reasoning, instance license, instance ids and references
  per split, and instance counts.

Speed: a task with fewer instances than `min_instances` in the file is rejected before any counting, and
instances are measured lazily in the shuffled order, so at most about `test_instances +
max_instances_per_task` strings per task go through the tokenizer.

Malformed files (invalid JSON, missing or mistyped `Definition`, `Instances`, language fields) raise a
`ValueError` naming the file and the problem, or, with `skip_malformed`, are logged, counted and skipped.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import random
from typing import Any, Callable, Optional, Sequence

import ml_collections

from translator.data import dod

TASKS_DIR = "tasks"
SPLIT_FILES = {"train": "train_tasks.txt", "test": "test_tasks.txt"}
EXCLUDED_FILE = "excluded_tasks.txt"
LANGUAGE_FIELDS = ("Input_language", "Output_language", "Instruction_language")
DOD_NAME = "superni"


def superni_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.root = ""  # a local clone of allenai/natural-instructions (holds tasks/ and splits/)
  c.split_dir = "splits/default"  # the English track
  c.max_instance_tokens = 400  # keep an instance when Input/Output text has at most this many LM tokens
  c.min_instances = 500  # then keep a task when at least this many instances pass
  c.max_instances_per_task = 500  # train + valid instances per task (0 = no cap)
  c.valid_fraction = 0.1
  c.test_instances = 100  # of test tasks: the first N of the file (SuperNI's evaluation instances)
  c.max_classes = 10  # classification: 2..max_classes distinct targets over all instances
  c.english_only = True
  c.skip_malformed = False
  c.seed = 0
  c.max_tasks = 0  # stop after this many kept tasks, in name order (0 = all)
  return c


# ---------------------------------------------------------------------------------------------------
# Split lists and files.


def _read_names(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SuperNI split file {path} does not exist; set split_dir to a folder of "
                            f"allenai/natural-instructions splits holding {sorted(SPLIT_FILES.values())}")
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def read_splits(root: str, split_dir: str) -> dict[str, str]:
  """Task name -> task split ("train" | "test") from the split folder's train and test lists."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"SuperNI root {root} does not exist; set root to a clone of "
                            "allenai/natural-instructions")
  directory = os.path.join(root, split_dir)
  splits = {}
  for split, file in SPLIT_FILES.items():
    for name in _read_names(os.path.join(directory, file)):
      if splits.get(name, split) != split:
        raise ValueError(f"{directory}: task {name} is listed in both {SPLIT_FILES['train']} and "
                         f"{SPLIT_FILES['test']}")
      splits[name] = split
  return splits


def _strings(path: str, record: dict, key: str, required: bool = True) -> list[str]:
  """`record[key]` as a list of strings; a missing optional field is []; non-strings (NaN) are dropped
  from optional fields and are an error in required ones."""
  if key not in record:
    if required:
      raise ValueError(f"{path}: malformed SuperNI task: no {key!r} field")
    return []
  value = record[key]
  if not isinstance(value, list) or (required and not all(isinstance(v, str) for v in value)):
    raise ValueError(f"{path}: malformed SuperNI task: {key!r} should be a list of strings, "
                     f"got {type(value).__name__} {str(value)[:80]!r}")
  return [v for v in value if isinstance(v, str)]


def load_task_file(path: str) -> dict[str, Any]:
  """The checked contents of one task file: definition, languages, instances [(id, input, references)]
  and descriptive fields. Raises ValueError naming `path` and the problem."""
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)  # accepts the bare NaN some files have (task1149's URL)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: malformed SuperNI task: invalid JSON ({e})") from e
  if not isinstance(record, dict):
    raise ValueError(f"{path}: malformed SuperNI task: the top level is a {type(record).__name__}, not an object")
  parts = _strings(path, record, "Definition")
  definition = " ".join(p.strip() for p in parts if p.strip())
  if not definition:
    raise ValueError(f"{path}: malformed SuperNI task: 'Definition' is empty")
  if "Instances" not in record:
    raise ValueError(f"{path}: malformed SuperNI task: no 'Instances' field")
  raw = record["Instances"]
  if not isinstance(raw, list):
    raise ValueError(f"{path}: malformed SuperNI task: 'Instances' should be a list of objects, got "
                     f"{type(raw).__name__}")
  instances = []
  for i, ins in enumerate(raw):
    where = f"{path}: malformed SuperNI task: instance {i}"
    if not isinstance(ins, dict):
      raise ValueError(f"{where} is a {type(ins).__name__}, not an object")
    ident, x, refs = ins.get("id", f"#{i}"), ins.get("input"), ins.get("output")
    if not isinstance(ident, str) or not isinstance(x, str):
      raise ValueError(f"{where} ({ident!r}): 'id' and 'input' should be strings")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
      raise ValueError(f"{where} ({ident}): 'output' should be a non-empty list of strings, got {refs!r:.80}")
    instances.append((ident, x, tuple(refs)))
  return {
      "definition": definition,
      "languages": {k: _strings(path, record, k) for k in LANGUAGE_FIELDS},
      "instances": instances,
      "categories": _strings(path, record, "Categories", required=False),
      "source": _strings(path, record, "Source", required=False),
      "domains": _strings(path, record, "Domains", required=False),
      "reasoning": _strings(path, record, "Reasoning", required=False),
      "instance_license": _strings(path, record, "Instance License", required=False),
  }


def is_english(languages: dict[str, list[str]]) -> bool:
  return all("English" in languages[k] for k in LANGUAGE_FIELDS)


# ---------------------------------------------------------------------------------------------------
# One task.


def class_labels(definition: str, targets: Sequence[str], max_classes: int) -> tuple[str, ...]:
  """The label set of a classification task, () when `targets` are not 2..max_classes distinct values.
  Ordered by where the definition first mentions each label (case-insensitive), unmentioned ones last."""
  labels = set(targets)
  if not 2 <= len(labels) <= max_classes:
    return ()
  text = definition.lower()

  def position(label):
    p = text.find(label.lower()) if label.strip() else -1
    return (p if p >= 0 else math.inf, label)

  return tuple(sorted(labels, key=position))


def _task(cfg, name: str, split: str, path: str, data: dict, count_tokens: Callable[[str], int],
          stats: collections.Counter) -> Optional[dod.Task]:
  """The DoD task, or None when fewer than `min_instances` instances pass the token filter."""
  instances = data["instances"]
  if len(instances) < cfg.min_instances:
    stats["too_few_instances"] += 1
    return None
  measured = collections.Counter()

  def fits(item):
    _, x, refs = item
    measured["measured"] += 1
    ok = count_tokens(dod.format_prompt(None, x) + dod.format_target(refs[0])) <= cfg.max_instance_tokens
    measured["over_token_limit"] += not ok
    return ok

  n_test = cfg.test_instances if split == "test" else 0
  test = [item for item in instances[:n_test] if fits(item)]
  rest = list(instances[n_test:])
  random.Random(f"{cfg.seed}/{DOD_NAME}/{name}").shuffle(rest)
  cap = cfg.max_instances_per_task or math.inf
  pool, passing = [], len(test)
  for i, item in enumerate(rest):
    if len(pool) >= cap and passing >= cfg.min_instances:
      break
    if passing + len(rest) - i < cfg.min_instances:
      break  # cannot reach min_instances any more
    if fits(item):
      passing += 1
      if len(pool) < cap:
        pool.append(item)
  if passing < cfg.min_instances:
    stats["too_few_instances"] += 1
    return None

  n_valid = min(round(cfg.valid_fraction * len(pool)), len(pool) - 1)
  if cfg.valid_fraction > 0 and len(pool) >= 2:
    n_valid = max(n_valid, 1)
  parts = {"train": pool[:len(pool) - n_valid], "valid": pool[len(pool) - n_valid:], "test": test}
  classes = class_labels(data["definition"], [refs[0] for _, _, refs in instances], cfg.max_classes)
  meta = {
      "dod": DOD_NAME,
      "file": os.path.join(TASKS_DIR, os.path.basename(path)),
      "categories": data["categories"],
      "source": data["source"],
      "domains": data["domains"],
      "reasoning": data["reasoning"],
      "instance_license": data["instance_license"],
      "instance_ids": {k: [ident for ident, _, _ in v] for k, v in parts.items()},
      "references": {k: [list(refs) for _, _, refs in v] for k, v in parts.items()},
      "instances_in_file": len(instances),
      "instances_measured": measured["measured"],
      "instances_over_token_limit": measured["over_token_limit"],
  }
  return dod.Task(
      name=name, family="classification" if classes else "general", instruction=data["definition"],
      paraphrases=(), classes=classes, split=split,
      instances={k: tuple(dod.Instance(x, refs[0]) for _, x, refs in v) for k, v in parts.items()},
      meta=meta)


# ---------------------------------------------------------------------------------------------------
# Entry point.


def read_superni(cfg: ml_collections.ConfigDict, count_tokens: Callable[[str], int]) -> list[dod.Task]:
  """The English SuperNI tasks of the train and test task lists that pass the filters, sorted by name.

  Args:
    cfg: see `superni_config`.
    count_tokens: the length of a string in the LM's tokenizer, without special tokens, e.g.
      `lambda s: len(tokenizer.encode(s, add_special_tokens=False))`.
  """
  if not 0 <= cfg.valid_fraction < 1:
    raise ValueError(f"valid_fraction={cfg.valid_fraction} should be in [0, 1)")
  splits = read_splits(cfg.root, cfg.split_dir)
  tasks_dir = os.path.join(cfg.root, TASKS_DIR)
  if not os.path.isdir(tasks_dir):
    raise FileNotFoundError(f"SuperNI task folder {tasks_dir} does not exist")
  present = {f[:-len(".json")] for f in os.listdir(tasks_dir) if f.endswith(".json")}
  stats = collections.Counter(listed=len(splits), missing=len(set(splits) - present))
  if stats["missing"]:
    logging.info("SuperNI: %d of the %d tasks listed in %s have no file in %s; skipped", stats["missing"],
                 len(splits), os.path.join(cfg.root, cfg.split_dir), tasks_dir)

  tasks = []
  for name in sorted(set(splits) & present):
    if cfg.max_tasks and len(tasks) >= cfg.max_tasks:
      break
    path = os.path.join(tasks_dir, name + ".json")
    try:
      data = load_task_file(path)
    except ValueError as e:
      if not cfg.skip_malformed:
        raise
      stats["malformed"] += 1
      logging.warning("SuperNI: skipping a malformed task (skip_malformed=True): %s", e)
      continue
    if cfg.english_only and not is_english(data["languages"]):
      stats["not_english"] += 1
      continue
    task = _task(cfg, name, splits[name], path, data, count_tokens, stats)
    if task is not None:
      tasks.append(task)

  by_split = collections.Counter(t.split for t in tasks)
  logging.info("SuperNI: %d tasks (%d train, %d test) of %d listed; skipped %d missing, %d malformed, "
               "%d not English, %d with fewer than %d instances of at most %d tokens", len(tasks),
               by_split["train"], by_split["test"], stats["listed"], stats["missing"], stats["malformed"],
               stats["not_english"], stats["too_few_instances"], cfg.min_instances, cfg.max_instance_tokens)
  return tasks
