"""How well an LM does the tasks of a DoD: exact match on held-out instances under three conditions.

  instruction   the gold instruction and the input:   dod.format_prompt(task.instruction, x)
  input_only    the input alone:                      dod.format_prompt(None, x)
  few_shot      demonstrations, then the input:       corpus.few_shot_prompt(demos, x), `num_demos` train
                instances of the task drawn per (seed, task, instance), the format of the corpus's
                few_shot documents

A prediction is the generated text up to its first newline, stripped; it scores 1 when it equals the gold
output (stripped). Results are exact match per condition, task split ("train" | "test" | "novel") and
family ("classification" | "general" | "all"), plus per task.

Scoring takes a `generate_fn(prompts) -> texts`, so it runs without an LM (tests use an oracle);
`lm_generate_fn` makes one from an `LM`: greedy, batched, with prompts sorted by length, left-padded to a
multiple of `length_multiple` and batches filled to `batch_size`, so a whole run compiles the sampler once
per length bucket; generation stops at EOS or a newline.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
import zlib
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from translator.data import corpus
from translator.data import dod
from translator.models import sampler

CONDITIONS = ("instruction", "input_only", "few_shot")
GROUPS = ("all",) + dod.FAMILIES  # "all", "classification", "general"
GenerateFn = Callable[[Sequence[str]], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class Item:
  """One prompt to score: a task's instance under one condition."""

  task: str
  family: str
  split: str  # the task's split
  condition: str
  index: int  # of the instance within its instance split
  prompt: str
  gold: str


def demonstrations(task: dod.Task, index: int, num_demos: int, seed: int = 0,
                   demo_split: str = "train") -> tuple[dod.Instance, ...]:
  """`num_demos` distinct instances of `task`'s `demo_split`, a function of (seed, task name, index)."""
  pool = task.instances.get(demo_split, ())
  if len(pool) < num_demos:
    raise ValueError(f"task {task.name!r} has {len(pool)} {demo_split} instances, fewer than num_demos={num_demos}")
  rng = np.random.default_rng([seed, zlib.crc32(task.name.encode("utf-8")), index])
  return tuple(pool[i] for i in rng.choice(len(pool), size=num_demos, replace=False))


def prompt(task: dod.Task, x: str, condition: str, demos: Sequence[dod.Instance] = ()) -> str:
  if condition == "instruction":
    return dod.format_prompt(task.instruction, x)
  if condition == "input_only":
    return dod.format_prompt(None, x)
  if condition == "few_shot":
    return corpus.few_shot_prompt(demos, x)
  raise ValueError(f"condition {condition!r} is not one of {CONDITIONS}")


def select_tasks(tasks: Sequence[dod.Task], split: str, max_tasks: int = 0, seed: int = 0) -> list[dod.Task]:
  """The tasks of `split` sorted by name; with `max_tasks` > 0, a seeded sample of that many."""
  chosen = sorted((t for t in tasks if t.split == split), key=lambda t: t.name)
  if 0 < max_tasks < len(chosen):
    rng = np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])
    chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), size=max_tasks, replace=False))]
  return chosen


def build_items(tasks: Sequence[dod.Task], *, task_splits: Sequence[str] = ("test", "novel"),
                conditions: Sequence[str] = CONDITIONS, instance_split: str = "test",
                instances_per_task: int = 30, tasks_per_split: int = 0, num_demos: int = 3,
                seed: int = 0) -> list[Item]:
  """Every (task, instance, condition) to score: the first `instances_per_task` instances of
  `instance_split` of the tasks of each split (all of them, or `tasks_per_split` drawn with `seed`)."""
  for c in conditions:
    if c not in CONDITIONS:
      raise ValueError(f"condition {c!r} is not one of {CONDITIONS}")
  items = []
  for split in task_splits:
    if split not in dod.TASK_SPLITS:
      raise ValueError(f"task split {split!r} is not one of {dod.TASK_SPLITS}")
    chosen = select_tasks(tasks, split, tasks_per_split, seed)
    if not chosen:
      raise ValueError(f"the DoD has no task of split {split!r}")
    for task in chosen:
      instances = task.instances.get(instance_split, ())[:instances_per_task]
      if not instances:
        raise ValueError(f"task {task.name!r} has no {instance_split!r} instances")
      for condition in conditions:
        for i, ins in enumerate(instances):
          demos = demonstrations(task, i, num_demos, seed) if condition == "few_shot" else ()
          items.append(Item(task.name, task.family, split, condition, i, prompt(task, ins.input, condition, demos),
                            ins.output))
  return items


# ---------------------------------------------------------------------------------------------------
# Scoring.


def normalize(text: str) -> str:
  """The answer in a generated text: up to the first newline, stripped."""
  return text.split("\n", 1)[0].strip()


def exact_match(prediction: str, gold: str) -> bool:
  return normalize(prediction) == gold.strip()


def score(items: Sequence[Item], predictions: Sequence[str]) -> dict:
  """Exact match per condition, split and group, and per task.

  Returns {"summary": {condition: {split: {group: {"exact_match": float, "n": int}}}},
           "per_task": {condition: {split: {task: exact_match}}}} with group in GROUPS.
  """
  if len(items) != len(predictions):
    raise ValueError(f"{len(predictions)} predictions for {len(items)} items")
  hits, totals = collections.Counter(), collections.Counter()
  task_hits, task_totals = collections.Counter(), collections.Counter()
  for item, pred in zip(items, predictions):
    ok = exact_match(pred, item.gold)
    for group in ("all", item.family):
      hits[item.condition, item.split, group] += ok
      totals[item.condition, item.split, group] += 1
    task_hits[item.condition, item.split, item.task] += ok
    task_totals[item.condition, item.split, item.task] += 1
  summary, per_task = {}, {}
  for (condition, split, group), n in sorted(totals.items()):
    summary.setdefault(condition, {}).setdefault(split, {})[group] = {
        "exact_match": hits[condition, split, group] / n, "n": n}
  for (condition, split, task), n in sorted(task_totals.items()):
    per_task.setdefault(condition, {}).setdefault(split, {})[task] = task_hits[condition, split, task] / n
  return {"summary": summary, "per_task": per_task}


def score_by_op(items: Sequence[Item], predictions: Sequence[str], tasks: Sequence[dod.Task]) -> dict:
  """Exact match per operation of general tasks whose `meta["ops"]` lists them (the synthetic DoD): a task
  counts towards each of its ops. {condition: {split: {op: {"exact_match", "n", "single_op"}}}}, where
  single_op is the exact match on the tasks of that op alone (None without such a task)."""
  ops_of = {t.name: [o[0] for o in t.meta.get("ops", ())] for t in tasks if t.family == "general"}
  hits, totals = collections.Counter(), collections.Counter()
  for item, pred in zip(items, predictions):
    ops = ops_of.get(item.task)
    if not ops:
      continue
    ok = exact_match(pred, item.gold)
    for op in set(ops):
      hits[item.condition, item.split, op, "any"] += ok
      totals[item.condition, item.split, op, "any"] += 1
    if len(ops) == 1:
      hits[item.condition, item.split, ops[0], "single"] += ok
      totals[item.condition, item.split, ops[0], "single"] += 1
  out: dict = {}
  for (condition, split, op, scope), n in sorted(totals.items()):
    if scope != "any":
      continue
    single = totals[condition, split, op, "single"]
    out.setdefault(condition, {}).setdefault(split, {})[op] = {
        "exact_match": hits[condition, split, op, "any"] / n, "n": n,
        "single_op": hits[condition, split, op, "single"] / single if single else None}
  return out


def evaluate(generate_fn: GenerateFn, items: Sequence[Item]) -> tuple[dict, list[str]]:
  """(score(items, predictions), predictions) with predictions = generate_fn(prompts of items)."""
  predictions = list(generate_fn([item.prompt for item in items]))
  return score(items, predictions), predictions


def markdown_table(results: Mapping[str, Mapping]) -> str:
  """A table with one row per (LM, task split, condition): exact match overall and per family.

  `results` maps an LM name to the `score(...)` dict of that LM."""
  lines = ["| LM | tasks | condition | all | classification | general | n |",
           "|---|---|---|---:|---:|---:|---:|"]
  for name, result in results.items():
    summary = result["summary"]
    splits = sorted({s for by_split in summary.values() for s in by_split}, key=dod.TASK_SPLITS.index)
    for split in splits:
      for condition in CONDITIONS:
        groups = summary.get(condition, {}).get(split)
        if groups is None:
          continue
        cells = [f"{groups[g]['exact_match']:.3f}" if g in groups else "-" for g in GROUPS]
        lines.append(f"| {name} | {split} | {condition} | " + " | ".join(cells) + f" | {groups['all']['n']} |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Generation with an LM.


def read_answers(path: str) -> dict[str, str]:
  """The {prompt: answer} lines of an answer file (`lm_generate_fn`'s `answers_path`); {} when there is none.
  A line cut short (the run stopped while writing it) is skipped."""
  answers = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        answers[row["prompt"]] = row["answer"]
  return answers


def lm_generate_fn(lm, *, batch_size: int = 64, max_new_tokens: int = 24, length_multiple: int = 32,
                   stop_at_newline: bool = True, log_every_s: float = 30.0, add_bos: bool = True,
                   description: str = "", answers_path: Optional[str] = None) -> GenerateFn:
  """Greedy generation with `lm` (a `translator.LM` with a tokenizer) as a `GenerateFn`.

  The function is `generate(prompts, prefixes=None)`: with `prefixes` `[N, P, D]` (soft prompts, in the
  space of `lm.embed`), row i reads `[prefixes[i]][BOS][prompts[i]]` (BOS only with `add_bos`).
  Prompts are encoded with BOS (`add_bos`), sorted by length, and generated `batch_size` at a time, left-padded to the
  next multiple of `length_multiple` (the last batch filled with copies of its first prompt), so the
  sampler compiles once per length bucket. With `stop_at_newline`, a row also stops at the newline token
  (the answer ends there; this only saves time). Texts are decoded up to the first stop token.

  answers_path: a JSON-lines file that makes a long call resumable: each batch's answers are appended to it as
  they are made (by process 0), and prompts already in it are answered from it (calls without prefixes only).
  The prompts left are batched as above, so a resumed call may batch them differently from an uninterrupted
  one: the same answers up to float rounding in the padded rows.
  """
  if lm.tokenizer is None:
    raise ValueError(f"the LM at {lm.path} has no tokenizer; it cannot be evaluated on texts")
  stop_ids = tuple(lm.eos_ids)
  newline = lm.tokenizer.encode("\n", add_special_tokens=False)
  if stop_at_newline and len(newline) == 1:
    stop_ids += tuple(newline)
  bos = 1 if add_bos and lm.config.bos_token_id is not None else 0
  prefix_dtype = lm.embed(np.zeros((1, 1), np.int32)).dtype

  def generate(prompts: Sequence[str], prefixes: Optional[np.ndarray] = None) -> list[str]:
    if prefixes is not None:
      prefixes = np.asarray(prefixes)
      if prefixes.ndim != 3 or len(prefixes) != len(prompts) or prefixes.shape[2] != lm.config.hidden_size:
        raise ValueError(f"prefixes must be [N={len(prompts)}, P, D={lm.config.hidden_size}], got {prefixes.shape}")
    out: list[Optional[str]] = [None] * len(prompts)
    todo = range(len(prompts))
    if answers_path is not None:
      if prefixes is not None:
        raise ValueError("answers_path is for prompts without prefixes (the file is keyed by prompt)")
      saved = read_answers(answers_path)
      if jax.process_index() == 0 and os.path.exists(answers_path) and os.path.getsize(answers_path):
        with open(answers_path, "rb+") as f:  # end a line cut short, so that appended lines stay whole
          f.seek(-1, os.SEEK_END)
          if f.read(1) != b"\n":
            f.write(b"\n")
      out = [saved.get(p) for p in prompts]
      todo = [i for i, answer in enumerate(out) if answer is None]
      if len(todo) < len(prompts):
        logging.info("%s: %d of %d answers read from %s", description, len(prompts) - len(todo), len(prompts),
                     answers_path)
    lengths = {i: len(lm.tokenizer.encode(prompts[i], add_special_tokens=False)) + bos for i in todo}
    order = sorted(todo, key=lambda i: lengths[i])
    start_time = last_log = time.perf_counter()
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      rows = [prompts[i] for i in chunk] + [prompts[chunk[0]]] * (batch_size - len(chunk))
      length = -(-max(lengths[i] for i in chunk) // length_multiple) * length_multiple
      ids, mask = lm.encode(rows, add_bos=bool(bos), length=length)
      prefix = None
      if prefixes is not None:
        prefix = jnp.asarray(prefixes[chunk + [chunk[0]] * (batch_size - len(chunk))], prefix_dtype)
      new = sampler.sample(lm.params, lm.config, jnp.asarray(ids), mask=jnp.asarray(mask), embedded_prefix=prefix,
                           max_new_tokens=max_new_tokens, eos_ids=stop_ids, pad_id=lm.pad_id).tokens
      new = np.asarray(new)
      for j, i in enumerate(chunk):
        row = new[j].tolist()
        cut = next((k for k, tok in enumerate(row) if tok in stop_ids), len(row))
        out[i] = lm.tokenizer.decode(row[:cut], skip_special_tokens=True)
      if answers_path is not None and jax.process_index() == 0:
        with open(answers_path, "a") as f:
          f.writelines(json.dumps({"prompt": prompts[i], "answer": out[i]}) + "\n" for i in chunk)
      now = time.perf_counter()
      done = start + len(chunk)
      if now - last_log >= log_every_s or done == len(order):
        last_log = now
        logging.info("%s generated %d / %d (%.1f prompts/s, prompt length %d)", description, done, len(order),
                     done / max(now - start_time, 1e-9), length)
    return out

  return generate
