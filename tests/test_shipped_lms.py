"""The LMs shipped in translator/assets/lms (the embedded default): within the 40 MB budget, target at least 4x
base, loadable by `load_lm`, and following the gold instruction on held-out tasks where the input alone does
not suffice (a sample of what `experiments.eval_lms` measures on every held-out instance)."""

import os

import jax
import pytest

import translator
from translator.data import synthetic
from translator.evaluation import lm_eval


def _folder_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def _num_params(lm) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(lm.params))


@pytest.fixture(scope="module")
def tasks():
  return synthetic.generate(synthetic.default_config())  # the world the shipped LMs were trained on


def test_shipped_lms_fit_the_budget_and_target_is_four_times_base():
  paths = {name: translator.shipped_lm(name) for name in translator.SHIPPED_LMS}
  for name, path in paths.items():
    assert os.path.exists(os.path.join(path, "model.safetensors")), f"{name}: no weights in {path}"
  assert sum(_folder_bytes(p) for p in paths.values()) <= 40 * 2**20
  base, target = (translator.load_lm(paths[n]) for n in ("base", "target"))
  assert _num_params(target) >= 4 * _num_params(base)
  assert base.tokenizer.get_vocab() == target.tokenizer.get_vocab()  # one world, one tokenizer
  assert base.config.family == target.config.family == "llama"


# Floors below what each LM scores on this sample (40 test tasks x 2 validation instances per condition),
# so that a broken export, loader or world shows, and eval_lms's full figures (README) stay the reference.
@pytest.mark.parametrize("name, instruction_floor", [("base", 0.70), ("target", 0.55)])
def test_shipped_lm_follows_the_gold_instruction(tasks, name, instruction_floor):
  items = lm_eval.build_items(tasks, task_splits=("test",), conditions=("instruction", "input_only"),
                              instance_split="valid", instances_per_task=2, tasks_per_split=40)
  lm = translator.load_lm(translator.shipped_lm(name))
  result, _ = lm_eval.evaluate(lm_eval.lm_generate_fn(lm, batch_size=80), items)
  summary = result["summary"]
  instruction = summary["instruction"]["test"]["all"]["exact_match"]
  input_only = summary["input_only"]["test"]["all"]["exact_match"]
  assert instruction >= instruction_floor, (name, instruction)
  assert input_only <= 0.45, (name, input_only)
  assert instruction - input_only >= 0.3, (name, instruction, input_only)
