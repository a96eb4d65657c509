"""LM evaluation: prompts of the three conditions, exact-match scoring with stub generators (an oracle
scores 1), and the whole `experiments.eval_lms` run on a tiny random Llama with the project tokenizer."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import eval_lms as eval_config
from experiments import eval_lms
from tests import fixtures
import translator
from translator.data import corpus
from translator.data import dod
from translator.data import synthetic
from translator.data import tokenizer as tok_lib
from translator.evaluation import lm_eval
from translator.hf import export
from translator.models import DecoderConfig
from translator.models import functions as F


@pytest.fixture(scope="module")
def tasks():
  return synthetic.generate(synthetic.small_config())


@pytest.fixture(scope="module")
def items(tasks):
  return lm_eval.build_items(tasks, task_splits=("test", "novel"), instances_per_task=4, tasks_per_split=5)


def test_items_cover_splits_conditions_and_instances(tasks, items):
  by_name = {t.name: t for t in tasks}
  assert {(i.split, i.condition) for i in items} == {(s, c) for s in ("test", "novel") for c in lm_eval.CONDITIONS}
  assert len(items) == 2 * 5 * 3 * 4
  for item in items:
    task = by_name[item.task]
    ins = task.instances["test"][item.index]
    assert item.gold == ins.output and item.split == task.split and item.family == task.family
    if item.condition == "instruction":
      assert item.prompt == f"{task.instruction}\nInput: {ins.input}\nOutput:"
    elif item.condition == "input_only":
      assert item.prompt == f"Input: {ins.input}\nOutput:"
    else:  # three train demonstrations in the corpus's few-shot format, drawn per (seed, task, index)
      demos = lm_eval.demonstrations(task, item.index, 3)
      assert len(set(demos)) == 3 and set(demos) <= set(task.instances["train"])
      assert item.prompt == corpus.few_shot_prompt(demos, ins.input)
      assert item.prompt.count("Input: ") == 4 and item.prompt.endswith(f"Input: {ins.input}\nOutput:")
  assert lm_eval.build_items(tasks, instances_per_task=4, tasks_per_split=5) == items  # deterministic


def test_exact_match_normalizes_whitespace_and_cuts_at_newline():
  assert lm_eval.exact_match(" red\nInput: the cow\nOutput: fish", "red")
  assert lm_eval.exact_match("  1. cow 2. owl  ", "1. cow 2. owl")
  assert not lm_eval.exact_match(" redx", "red")
  assert not lm_eval.exact_match("\nred", "red")  # the answer is the first line
  assert not lm_eval.exact_match("", "red")


def test_oracle_scores_one_and_silence_scores_zero(items):
  results, predictions = lm_eval.evaluate(lambda prompts: [f" {i.gold}\nInput: junk" for i in items], items)
  assert len(predictions) == len(items)
  for condition in lm_eval.CONDITIONS:
    for split in ("test", "novel"):
      groups = results["summary"][condition][split]
      assert set(groups) == set(lm_eval.GROUPS)
      assert all(g["exact_match"] == 1.0 for g in groups.values())
      assert groups["all"]["n"] == 20 == groups["classification"]["n"] + groups["general"]["n"]
  assert all(v == 1.0 for v in results["per_task"]["few_shot"]["novel"].values())
  results, _ = lm_eval.evaluate(lambda prompts: [""] * len(prompts), items)
  assert results["summary"]["instruction"]["test"]["all"]["exact_match"] == 0.0


def test_exact_match_per_op_counts_each_op_of_a_task(tasks, items):
  # right on every task that uses the op "count", wrong elsewhere
  by_name = {t.name: t for t in tasks}
  uses_count = lambda i: "count" in [o[0] for o in by_name[i.task].meta.get("ops", ())]
  predictions = [i.gold if uses_count(i) else "wrong" for i in items]
  per_op = lm_eval.score_by_op(items, predictions, tasks)
  for split, ops in per_op["instruction"].items():
    general = [i for i in items if i.condition == "instruction" and i.split == split and i.family == "general"]
    for op, entry in ops.items():
      with_op = [i for i in general if op in [o[0] for o in by_name[i.task].meta["ops"]]]
      assert entry["n"] == len(with_op) > 0
      expected = sum(uses_count(i) for i in with_op) / len(with_op)
      assert entry["exact_match"] == pytest.approx(expected)
    assert sum(e["n"] for e in ops.values()) >= len(general)  # two-op tasks count twice


def test_a_solver_of_the_instruction_prompt_scores_one(tasks, items):
  """The instruction prompt carries the task and the input: reading them back and solving scores 1."""
  by_instruction = {t.instruction: t for t in tasks}

  def solve(prompts):
    out = []
    for p in prompts:
      instruction, _, x = p.rpartition("Input: ")
      task = by_instruction.get(instruction[:-1])
      out.append(" " + synthetic.solve(task, x[:-len("\nOutput:")]) if task else " ?")
    return out

  results, _ = lm_eval.evaluate(solve, items)
  summary = results["summary"]
  assert summary["instruction"]["test"]["all"]["exact_match"] == 1.0
  assert summary["instruction"]["novel"]["all"]["exact_match"] == 1.0
  assert summary["input_only"]["test"]["all"]["exact_match"] == 0.0
  table = lm_eval.markdown_table({"solver": results})
  assert "| solver | test | instruction | 1.000 | 1.000 | 1.000 | 20 |" in table
  assert table.count("\n") == 2 + 2 * 3


def test_parse_lms():
  assert eval_lms.parse_lms("base=/a/hf, /b/target") == [("base", "/a/hf"), ("target", "/b/target")]
  with pytest.raises(ValueError, match="unique"):
    eval_lms.parse_lms("/a/x,/b/x")


def test_eval_lms_runs_end_to_end_on_a_tiny_random_llama(tasks, tmp_path):
  dod_dir, tok_dir = str(tmp_path / "dod"), str(tmp_path / "tok")
  dod.write_dod(tasks, dod_dir)
  tok_lib.train_tokenizer(tok_lib.corpus_texts(tasks), tok_dir)
  vocab = tok_lib.load_tokenizer(tok_dir).get_vocab_size()
  config = DecoderConfig(family="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                         bos_token_id=1, eos_token_ids=(2,), pad_token_id=3)
  lm_dir = str(tmp_path / "tiny")
  export.save_lm(lm_dir, config, nn.unbox(F.init_params(config, jax.random.key(0))), tokenizer_dir=tok_dir)

  cfg = eval_config.get_config()
  cfg.lms = f"tiny={lm_dir}"
  cfg.dod_dir = dod_dir
  cfg.tasks_per_split = 2
  cfg.instances_per_task = 3
  cfg.batch_size = 8
  cfg.max_new_tokens = 6
  cfg.length_multiple = 64
  workdir = str(tmp_path / "eval")
  out = eval_lms.run(cfg, workdir)

  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(out))
  result = saved["lms"]["tiny"]
  assert set(result) == {"path", "seconds", "summary", "per_task", "per_op"}
  assert set(result["summary"]) == set(lm_eval.CONDITIONS)
  for condition in lm_eval.CONDITIONS:
    assert set(result["summary"][condition]) == {"test", "novel"}
    for split in ("test", "novel"):
      groups = result["summary"][condition][split]
      assert set(groups) == set(lm_eval.GROUPS)
      assert groups["all"]["n"] == 2 * 3 and 0.0 <= groups["all"]["exact_match"] <= 1.0
      assert len(result["per_task"][condition][split]) == 2
  with open(os.path.join(workdir, "results.md")) as f:
    assert f.read() == lm_eval.markdown_table({"tiny": {k: result[k] for k in ("summary", "per_task")}})
  with open(os.path.join(workdir, "predictions", "tiny.jsonl")) as f:
    assert len(f.read().splitlines()) == 2 * 2 * 3 * 3


def test_an_answers_file_makes_generation_resumable(tasks, tmp_path):
  """Answers are appended batch by batch; a later call reads them (a line cut short by a crash is skipped and
  ended) and generates only the prompts not in the file."""
  tok_dir = str(tmp_path / "tok")
  tok_lib.train_tokenizer(tok_lib.corpus_texts(tasks), tok_dir)
  lm = translator.load_lm(fixtures.make_tiny_lm(str(tmp_path / "lm"), tok_dir))
  prompts = [dod.format_prompt(t.instruction, ins.input) for t in tasks[:3] for ins in t.instances["test"][:3]]
  kwargs = dict(batch_size=4, max_new_tokens=5)
  plain = lm_eval.lm_generate_fn(lm, **kwargs)(prompts)
  path = str(tmp_path / "answers.jsonl")
  assert lm_eval.lm_generate_fn(lm, answers_path=path, **kwargs)(prompts) == plain
  assert lm_eval.read_answers(path) == dict(zip(prompts, plain))

  # A stopped run: the file holds a planted answer for the first prompt and a line cut short.
  with open(path, "w") as f:
    f.write(json.dumps({"prompt": prompts[0], "answer": "PLANTED"}) + "\n" + '{"prompt": "cut sh')
  again = lm_eval.lm_generate_fn(lm, answers_path=path, **kwargs)(prompts)
  assert again == ["PLANTED"] + plain[1:]
  assert lm_eval.read_answers(path) == dict(zip(prompts, again))
  with pytest.raises(ValueError, match="without prefixes"):
    lm_eval.lm_generate_fn(lm, answers_path=path, **kwargs)(prompts[:1], np.zeros((1, 2, lm.config.hidden_size)))
