"""Portability: a task's soft prompt on its own LM against hard prompts on any LM, on held-out instances.

Prompt kinds (`PROMPTS`), for an instance input x of a task:

  soft           [soft prompt][BOS] Input: x\\nOutput:     the tuned prompt as an embedded prefix (the tuning
                                                         layout: before BOS, or `[BOS embedding][prompt]`
                                                         and no BOS token when tuned after BOS)
  gold           {instruction}\\nInput: x\\nOutput:          dod.format_prompt with the task's instruction
  translator, inspect, nearest_token, ...               the same with the method's hard prompt for the task
  zero_shot      Input: x\\nOutput:                        the input alone
  few_shot       three demonstrations, then the input    lm_eval.demonstrations / corpus.few_shot_prompt

A run of one prompt kind on one model is a "cell" named "<prompt>@<model>" (e.g. "translator@target").
Every cell is scored on the same instances with one scorer: exact match (the first line of the answer,
stripped, equals the gold output: lm_eval.exact_match) and ROUGE-L of that answer against the gold output
(metrics.rouge_l). Aggregates are means over tasks of per-task means, per task split and family
("all", "classification", "general").

Executors are `GenerateFn`s: a local LM (`lm_eval.lm_generate_fn`, batched and jitted) or an
OpenAI-compatible chat API (`translator.execution.api.as_generate_fn`). Soft prompts need a local LM.
"""

from __future__ import annotations

import collections
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from translator.data import dod
from translator.evaluation import lm_eval
from translator.evaluation import metrics

HARD = ("gold",)  # hard prompts every run has; methods add theirs (translator, inspect, nearest_token, ...)
BASELINE_PROMPTS = ("zero_shot", "few_shot")
SOFT = "soft"
GenerateFn = Callable[..., Sequence[str]]


def cell(prompt_kind: str, model: str) -> str:
  return f"{prompt_kind}@{model}"


def select_instances(task: dod.Task, instance_split: str, per_task: int) -> tuple[dod.Instance, ...]:
  instances = task.instances.get(instance_split, ())[:per_task or None]
  if not instances:
    raise ValueError(f"task {task.name!r} has no {instance_split!r} instances to execute prompts on")
  return instances


def build_items(tasks: Sequence[dod.Task], prompt_kind: str, *, hard_prompts: Optional[Mapping[str, str]] = None,
                instance_split: str = "test", instances_per_task: int = 0, num_demos: int = 3,
                seed: int = 0) -> list[lm_eval.Item]:
  """The items of `prompt_kind` for every instance of every task (condition = prompt_kind).

  hard_prompts: task name -> hard prompt, for a method's prompt kind ("gold" uses the instruction). A task
  without a hard prompt gets the empty instruction (scored, not skipped: the method failed on it)."""
  items = []
  for task in tasks:
    for i, ins in enumerate(select_instances(task, instance_split, instances_per_task)):
      if prompt_kind in (SOFT, "zero_shot"):
        text = dod.format_prompt(None, ins.input)
      elif prompt_kind == "few_shot":
        text = lm_eval.prompt(task, ins.input, "few_shot", lm_eval.demonstrations(task, i, num_demos, seed))
      elif prompt_kind == "gold":
        text = dod.format_prompt(task.instruction, ins.input)
      else:
        if hard_prompts is None:
          raise ValueError(f"prompt kind {prompt_kind!r} needs its hard prompts (task name -> text)")
        hard = hard_prompts.get(task.name, "").strip()
        text = dod.format_prompt(hard or None, ins.input)
      items.append(lm_eval.Item(task.name, task.family, task.split, prompt_kind, i, text, ins.output))
  return items


def soft_prefixes(items: Sequence[lm_eval.Item], task_names: Sequence[str], prompts: np.ndarray,
                  bos_embedding: Optional[np.ndarray] = None) -> np.ndarray:
  """`[N, P(+1), D]` prefixes of soft items: each item's task prompt from the table `prompts [T, P, D]`
  (rows named by `task_names`), after `bos_embedding` `[D]` for prompts tuned after BOS."""
  row = {name: r for r, name in enumerate(task_names)}
  missing = sorted({it.task for it in items if it.task not in row})
  if missing:
    raise ValueError(f"no soft prompt for {len(missing)} tasks, e.g. {missing[:3]}: the prompt store does not "
                     "cover them (tune_prompts task_splits)")
  return with_bos(np.asarray(prompts)[[row[it.task] for it in items]], bos_embedding)


def with_bos(prefixes: np.ndarray, bos_embedding: Optional[np.ndarray]) -> np.ndarray:
  """`[N, P, D]` soft prompts as their LM reads them: after `bos_embedding` `[D]` when given (prompts tuned
  after BOS), else unchanged."""
  if bos_embedding is None:
    return prefixes
  bos = np.broadcast_to(np.asarray(bos_embedding, prefixes.dtype), (len(prefixes), 1, prefixes.shape[-1]))
  return np.concatenate([bos, prefixes], axis=1)


def score(items: Sequence[lm_eval.Item], predictions: Sequence[str]) -> dict:
  """{"summary": {split: {group: {"exact_match", "rouge_l", "n_tasks", "n"}}},
      "per_task": {task: {"exact_match", "rouge_l"}}}; group in lm_eval.GROUPS."""
  if len(items) != len(predictions):
    raise ValueError(f"{len(predictions)} predictions for {len(items)} items")
  per_task: dict[str, dict[str, list]] = collections.defaultdict(lambda: {"exact_match": [], "rouge_l": []})
  where = {}
  for item, pred in zip(items, predictions):
    answer = lm_eval.normalize(pred)
    per_task[item.task]["exact_match"].append(float(answer == item.gold.strip()))
    per_task[item.task]["rouge_l"].append(metrics.rouge_l(answer, item.gold.strip()))
    where[item.task] = (item.split, item.family)
  task_means = {t: {k: float(np.mean(v)) for k, v in m.items()} for t, m in sorted(per_task.items())}
  summary: dict = {}
  for (split, group), names in metrics.task_groups(where).items():
    summary.setdefault(split, {})[group] = {
        "exact_match": float(np.mean([task_means[t]["exact_match"] for t in names])),
        "rouge_l": float(np.mean([task_means[t]["rouge_l"] for t in names])),
        "n_tasks": len(names), "n": sum(len(per_task[t]["exact_match"]) for t in names)}
  return {"summary": summary, "per_task": task_means}


def run_cell(generate_fn: GenerateFn, items: Sequence[lm_eval.Item],
             prefixes: Optional[np.ndarray] = None) -> tuple[dict, list[str]]:
  """(score, predictions) of one cell: `generate_fn(prompts)` or, for soft prompts, `(prompts, prefixes)`."""
  prompts = [it.prompt for it in items]
  predictions = list(generate_fn(prompts) if prefixes is None else generate_fn(prompts, prefixes))
  return score(items, predictions), predictions
