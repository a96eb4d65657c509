"""How close a method's hard prompt is to the task's instruction: one scorer for every method.

For each task with a hard prompt (translator, InSPEcT, nearest-token, ...):

  rouge_l          metrics.rouge_l against the instruction and its paraphrases (max over them)
  cosine           MiniLM cosine against the same references (max over them); `similarity_fn` is injected
                   (default: all-MiniLM-L6-v2 in JAX, translator/evaluation/minilm.py)
  class_recall, class_precision, class_f1
                   classification tasks only: metrics.class_scores against the task's classes

Aggregates are means over tasks, per task split and family ("classification", "general"); "all" holds
rouge_l and cosine over both families.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from translator.data import dod
from translator.evaluation import metrics

SimilarityFn = Callable[[Sequence[str], Sequence[Sequence[str]]], np.ndarray]
TEXT_METRICS = ("rouge_l", "cosine")
CLASS_METRICS = ("class_recall", "class_precision", "class_f1")


def references(task: dod.Task) -> list[str]:
  """The instruction and its paraphrases, without repeats."""
  return list(dict.fromkeys([task.instruction] + list(task.paraphrases)))


def default_similarity(predictions: Sequence[str], refs: Sequence[Sequence[str]]) -> np.ndarray:
  from translator.evaluation import minilm  # pylint: disable=g-import-not-at-top
  return minilm.similarity_batch(predictions, refs)


def score(tasks: Sequence[dod.Task], hard_prompts: Mapping[str, str],
          similarity_fn: Optional[SimilarityFn] = None) -> dict:
  """{"summary": {split: {group: {metric: mean, "n_tasks": n}}}, "per_task": {task: {metric: value}}}.

  Every task of `tasks` is scored; a task without a hard prompt scores as the empty text."""
  similarity_fn = similarity_fn or default_similarity
  texts = [hard_prompts.get(t.name, "") for t in tasks]
  refs = [references(t) for t in tasks]
  cosine = np.asarray(similarity_fn(texts, refs), np.float64) if tasks else np.zeros(0)
  per_task = {}
  for task, text, ref, cos in zip(tasks, texts, refs, cosine):
    row = {"rouge_l": metrics.rouge_l(text, ref), "cosine": float(cos)}
    if task.family == "classification":
      cls = metrics.class_scores(text, task.classes)
      row.update(class_recall=cls["recall"], class_precision=cls["precision"], class_f1=cls["f1"])
    per_task[task.name] = row
  summary: dict = {}
  for (split, group), names in metrics.task_groups({t.name: (t.split, t.family) for t in tasks}).items():
    keys = TEXT_METRICS + (CLASS_METRICS if group == "classification" else ())
    entry = {k: float(np.mean([per_task[n][k] for n in names])) for k in keys}
    entry["n_tasks"] = len(names)
    summary.setdefault(split, {})[group] = entry
  return {"summary": summary, "per_task": per_task}
