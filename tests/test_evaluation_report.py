"""Portability cells, translation quality and the report, on hand-made tasks and oracle executors."""

import json
import os

import numpy as np
import pytest

from translator.data import dod
from translator.evaluation import portability, report, translation_quality


def _task(name, family, split, instruction, classes=(), paraphrases=()):
  inst = {"train": tuple(dod.Instance(f"{name} t{i}", f"y{i}") for i in range(5)),
          "valid": (dod.Instance(f"{name} v", "yv"),),
          "test": tuple(dod.Instance(f"{name} q{i}", f"a{i}") for i in range(4))}
  return dod.Task(name=name, family=family, instruction=instruction, paraphrases=tuple(paraphrases),
                  classes=tuple(classes), split=split, instances=inst)


TASKS = [
    _task("g1", "general", "test", "Reverse the words.", paraphrases=("Write the words backwards.",)),
    _task("g2", "general", "novel", "Count the letters."),
    _task("c1", "classification", "test", "Classify the sentence as: red, fish, sea", classes=("red", "fish", "sea")),
]


def test_items_of_every_prompt_kind():
  hard = {"g1": "Reverse it.", "c1": ""}
  gold = portability.build_items(TASKS, "gold", instances_per_task=2)
  assert [it.prompt for it in gold[:2]] == [dod.format_prompt("Reverse the words.", "g1 q0"),
                                            dod.format_prompt("Reverse the words.", "g1 q1")]
  assert [it.gold for it in gold[:2]] == ["a0", "a1"] and len(gold) == 6
  method = portability.build_items(TASKS, "translator", hard_prompts=hard, instances_per_task=1)
  # a missing or empty hard prompt runs as the input alone: the method failed on that task
  assert [it.prompt for it in method] == [dod.format_prompt("Reverse it.", "g1 q0"), dod.format_prompt(None, "g2 q0"),
                                          dod.format_prompt(None, "c1 q0")]
  zero = portability.build_items(TASKS, "zero_shot", instances_per_task=1)
  soft = portability.build_items(TASKS, "soft", instances_per_task=1)
  assert [it.prompt for it in zero] == [it.prompt for it in soft]
  few = portability.build_items(TASKS, "few_shot", instances_per_task=1, num_demos=3)
  assert few[0].prompt.count("Input:") == 4 and few[0].prompt.endswith(dod.format_prompt(None, "g1 q0"))
  with pytest.raises(ValueError, match="needs its hard prompts"):
    portability.build_items(TASKS, "inspect")


def test_scores_are_means_over_tasks_per_split_and_family():
  items = portability.build_items(TASKS, "gold", instances_per_task=4)
  # g1 answers right 4/4, g2 2/4, c1 0/4 ("a0 extra" is wrong for exact match, partly right for ROUGE-L)
  answers = {"g1": lambda i: f"a{i}\nmore", "g2": lambda i: f"a{i}" if i < 2 else "no",
             "c1": lambda i: f"a{i} extra"}
  predictions = [answers[it.task](it.index) for it in items]
  s = portability.score(items, predictions)
  assert s["per_task"]["g1"] == {"exact_match": 1.0, "rouge_l": 1.0}
  assert s["per_task"]["g2"]["exact_match"] == 0.5
  assert s["per_task"]["c1"]["exact_match"] == 0.0 and s["per_task"]["c1"]["rouge_l"] == pytest.approx(2 / 3)
  assert s["summary"]["test"]["all"]["exact_match"] == 0.5 and s["summary"]["test"]["all"]["n"] == 8
  assert s["summary"]["test"]["general"]["n_tasks"] == 1
  assert s["summary"]["novel"]["all"]["exact_match"] == 0.5


def test_soft_prefixes_pick_each_items_task_row():
  items = portability.build_items(TASKS, "soft", instances_per_task=2)
  table = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
  names = ["c1", "g1", "g2"]
  prefixes = portability.soft_prefixes(items, names, table)
  assert prefixes.shape == (6, 2, 4)
  np.testing.assert_array_equal(prefixes[0], table[1])  # g1
  np.testing.assert_array_equal(prefixes[5], table[0])  # c1
  with_bos = portability.soft_prefixes(items, names, table, bos_embedding=np.full(4, -1.0))
  assert with_bos.shape == (6, 3, 4) and (with_bos[:, 0] == -1).all()
  with pytest.raises(ValueError, match="no soft prompt for 1 tasks"):
    portability.soft_prefixes(items, ["g1", "g2"], table[:2])


def test_run_cell_passes_prefixes_only_for_soft_prompts():
  seen = {}

  def generate(prompts, prefixes=None):
    seen["prefixes"] = prefixes
    return ["a0"] * len(prompts)

  items = portability.build_items(TASKS[:1], "soft", instances_per_task=2)
  prefixes = np.zeros((2, 3, 4), np.float32)
  score, predictions = portability.run_cell(generate, items, prefixes)
  assert seen["prefixes"] is prefixes and predictions == ["a0", "a0"]
  assert score["per_task"]["g1"]["exact_match"] == 0.5
  portability.run_cell(generate, items)
  assert seen["prefixes"] is None


def _similarity(predictions, references):
  """A stand-in for MiniLM: 1 when the prediction equals a reference, else word overlap (Jaccard)."""
  out = []
  for p, refs in zip(predictions, references):
    a = set(p.lower().split())
    out.append(max(len(a & set(r.lower().split())) / max(len(a | set(r.lower().split())), 1) for r in refs))
  return np.array(out)


def test_translation_quality_uses_every_reference_and_class_scores():
  hard = {"g1": "Write the words backwards.", "g2": "", "c1": "Classify as: red, fish, tree"}
  q = translation_quality.score(TASKS, hard, _similarity)
  assert q["per_task"]["g1"]["rouge_l"] == 1.0 and q["per_task"]["g1"]["cosine"] == 1.0  # the paraphrase
  assert q["per_task"]["g2"] == {"rouge_l": 0.0, "cosine": 0.0}
  c1 = q["per_task"]["c1"]
  assert c1["class_recall"] == pytest.approx(2 / 3) and c1["class_precision"] == pytest.approx(2 / 3)
  assert set(q["summary"]["test"]) == {"all", "general", "classification"}
  assert "class_f1" in q["summary"]["test"]["classification"] and "class_f1" not in q["summary"]["test"]["all"]
  assert q["summary"]["test"]["all"]["rouge_l"] == pytest.approx((1.0 + c1["rouge_l"]) / 2)
  assert q["summary"]["novel"]["general"]["n_tasks"] == 1


def test_results_layout_table_and_figures(tmp_path):
  hard = {m: {"g1": "Reverse the words.", "g2": "x", "c1": "Classify as: red"} for m in report.METHOD_ORDER}
  quality = {m: translation_quality.score(TASKS, hard[m], _similarity) for m in hard}
  execution = {}
  for cell in ["soft@base", "gold@base", "gold@target", "translator@target", "zero_shot@target"]:
    kind = cell.split("@")[0]
    items = portability.build_items(TASKS, kind, hard_prompts=hard.get(kind), instances_per_task=2)
    execution[cell] = portability.score(items, [it.gold if it.index == 0 else "?" for it in items])
  res = report.results(quality, execution, inspect_layers={"layers": [1, 2]}, timing={"tune": 1.0})
  for family in ("general", "classification"):
    for method in report.METHOD_ORDER:
      entry = res["translation"][family][method]
      assert {"rouge_l", "cosine"} <= set(entry)
      assert ({"class_recall", "class_precision", "class_f1"} <= set(entry)) == (family == "classification")
    assert res["execution"][family]["translator@target"]["exact_match"] == 0.5
  assert res["novel"]["execution"]["general"]["gold@base"]["n_tasks"] == 1
  json.dumps(res)  # JSON-native
  table = report.markdown(res)
  assert "| translator | 1.000 |" in table and "| soft |" in table and "(1, 2)" not in table
  assert "InSPEcT layers (source, target): [1, 2]" in table
  written = report.figures(res, quality, execution, str(tmp_path / "figures"))
  assert sorted(os.path.basename(p) for p in written) == ["execution.png", "methods.png", "translation_vs_soft.png"]
  assert all(os.path.getsize(p) > 1000 for p in written)
