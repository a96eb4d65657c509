"""Scoring translations: ROUGE-L F1 against the gold instruction, per prompt, per task and per family.

Uses `translator.evaluation.metrics.rouge_l` when that module exists, else rouge-score's RougeScorer
(ROUGE-L, Porter stemming) directly: the same number.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np

from translator.data import dod


@functools.lru_cache(maxsize=1)
def _scorer():
  try:
    from translator.evaluation import metrics  # pylint: disable=g-import-not-at-top
    return lambda prediction, reference: float(metrics.rouge_l(prediction, [reference]))
  except (ImportError, AttributeError):
    from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return lambda prediction, reference: float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def rouge_l(prediction: str, reference: str) -> float:
  return _scorer()(prediction, reference)


def report(task_names: Sequence[str], stores: Sequence[int], references: Sequence[str], predictions: Sequence[str],
           tasks: Mapping[str, dod.Task]) -> dict:
  """{"rouge_l": mean over prompts, "rouge_l_by_family": {...}, "num_prompts", "num_tasks",
  "tasks": {name: {"family", "split", "reference", "rouge_l" (mean over its prompts), "translations": [{"store",
  "text", "rouge_l"}]}}}."""
  scores = [rouge_l(p, r) for p, r in zip(predictions, references)]
  per_task: dict = {}
  for name, s, ref, pred, score in zip(task_names, stores, references, predictions, scores):
    t = tasks[name]
    entry = per_task.setdefault(name, {"family": t.family, "split": t.split, "reference": ref, "translations": []})
    entry["translations"].append({"store": int(s), "text": pred, "rouge_l": score})
  for entry in per_task.values():
    entry["rouge_l"] = float(np.mean([x["rouge_l"] for x in entry["translations"]]))
  by_family = {}
  for f in dod.FAMILIES:
    fam = [sc for name, sc in zip(task_names, scores) if tasks[name].family == f]
    if fam:
      by_family[f] = float(np.mean(fam))
  return {"rouge_l": float(np.mean(scores)) if scores else 0.0, "rouge_l_by_family": by_family,
          "num_prompts": len(scores), "num_tasks": len(per_task), "tasks": dict(sorted(per_task.items()))}
