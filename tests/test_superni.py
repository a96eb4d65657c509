"""The SuperNI reader on the real sample files: splits, English filter, token and size filters, the 90/10
split, references, families, the NaN quirk, malformed files and missing paths."""

import json
import logging
import os
import shutil

import pytest
import transformers

from translator.data import dod
from translator.data import superni
from translator.data import tokenizer as tok_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "superni_sample"))
TRAIN = ("task1146_country_capital", "task1149_item_check_edible", "task1191_food_veg_nonveg",
         "task1192_food_flavor_profile", "task833_poem_sentiment_classification")
TEST = ("task1155_bard_analogical_reasoning_trash_or_treasure", "task121_zest_text_modification",
        "task1562_zest_text_modification")

pytestmark = pytest.mark.skipif(not os.path.isdir(SAMPLE), reason=f"no SuperNI sample at {SAMPLE}")


def _words(s):
  return len(s.split())


def _cfg(root=SAMPLE, **overrides):
  c = superni.superni_config()
  c.root = str(root)
  c.min_instances = 100  # the sample's tasks have 101-546 instances
  c.update(overrides)
  return c


def _raw(name, root=SAMPLE):
  with open(os.path.join(root, "tasks", name + ".json"), encoding="utf-8") as f:
    return json.load(f)


def _clone(tmp_path, names=TRAIN + TEST):
  """A copy of the sample's split lists and of the task files `names`, to edit."""
  root = tmp_path / "natural-instructions"
  shutil.copytree(os.path.join(SAMPLE, "splits"), root / "splits")
  (root / "tasks").mkdir()
  for name in names:
    shutil.copy(os.path.join(SAMPLE, "tasks", name + ".json"), root / "tasks" / (name + ".json"))
  return root


def _ids(task):
  return {k: task.meta["instance_ids"][k] for k in dod.INSTANCE_SPLITS}


@pytest.fixture(scope="module")
def tasks():
  return {t.name: t for t in superni.read_superni(_cfg(), _words)}


def test_split_assignment_follows_the_real_split_files_and_missing_tasks_are_reported(caplog):
  with caplog.at_level(logging.INFO):
    tasks = superni.read_superni(_cfg(), _words)
  assert [t.name for t in tasks] == sorted(TRAIN + TEST)
  assert {t.name: t.split for t in tasks} == {**{n: "train" for n in TRAIN}, **{n: "test" for n in TEST}}
  # The same, read straight off the split files.
  listed = {s: open(os.path.join(SAMPLE, "splits", "default", f"{s}_tasks.txt")).read().split()
            for s in ("train", "test", "excluded")}
  assert (len(listed["train"]), len(listed["test"]), len(listed["excluded"])) == (756, 119, 738)
  assert all(t.name in listed[t.split] for t in tasks)
  assert "867 of the 875 tasks listed" in caplog.text


def test_excluded_and_unlisted_task_files_are_not_read(tmp_path):
  root = _clone(tmp_path, names=("task833_poem_sentiment_classification",))
  src = root / "tasks" / "task833_poem_sentiment_classification.json"
  shutil.copy(src, root / "tasks" / "task1295_adversarial_qa_question_answering.json")  # excluded
  (root / "tasks" / "task9999_unlisted.json").write_text("not json")  # in no split list: never opened
  assert [t.name for t in superni.read_superni(_cfg(root), _words)] == ["task833_poem_sentiment_classification"]


def test_instruction_is_the_definition_and_instances_use_the_first_reference(tasks):
  for name, task in tasks.items():
    raw = _raw(name)
    assert len(raw["Definition"]) == 1 and task.instruction == raw["Definition"][0].strip()
    by_id = {ins["id"]: ins for ins in raw["Instances"]}
    for split, instances in task.instances.items():
      ids, refs = task.meta["instance_ids"][split], task.meta["references"][split]
      assert len(ids) == len(refs) == len(instances)
      for ident, ref, ins in zip(ids, refs, instances):
        assert ins == dod.Instance(by_id[ident]["input"], by_id[ident]["output"][0])
        assert ref == by_id[ident]["output"]
  # task121 has instances with 2 and 3 references: all are kept.
  all_refs = [r for refs in tasks["task121_zest_text_modification"].meta["references"].values() for r in refs]
  assert max(len(r) for r in all_refs) == 3
  assert tasks["task833_poem_sentiment_classification"].meta["categories"] == ["Sentiment Analysis"]
  assert tasks["task1146_country_capital"].meta["source"] == ["country_capital_city_dataset"]
  assert tasks["task1149_item_check_edible"].meta["domains"] == ["Commonsense", "Food"]


def test_nan_quirk_file_loads_and_the_dod_round_trips_as_strict_json(tasks, tmp_path):
  (url,) = _raw("task1149_item_check_edible")["URL"]
  assert url != url  # a bare NaN, which Python's json accepts
  task = tasks["task1149_item_check_edible"]
  json.dumps(dict(task.meta), allow_nan=False)  # no NaN leaks into the DoD
  dod.write_dod(list(tasks.values()), str(tmp_path))
  assert dod.read_dod(str(tmp_path)) == sorted(tasks.values(), key=lambda t: t.name)


def test_test_tasks_hold_the_first_100_instances_and_train_tasks_none(tasks):
  for name, task in tasks.items():
    ids = _ids(task)
    if task.split == "test":
      assert ids["test"] == [ins["id"] for ins in _raw(name)["Instances"][:100]]
    else:
      assert ids["test"] == []
    assert len(ids["train"]) + len(ids["valid"]) == min(500, len(_raw(name)["Instances"]) - len(ids["test"]))


def test_90_10_split_is_disjoint_and_deterministic(tasks):
  again = {t.name: t for t in superni.read_superni(_cfg(), _words)}
  other = {t.name: t for t in superni.read_superni(_cfg(seed=1), _words)}
  for name, task in tasks.items():
    ids = _ids(task)
    assert not set(ids["train"]) & set(ids["valid"]) and not set(ids["train"] + ids["valid"]) & set(ids["test"])
    n = len(ids["train"]) + len(ids["valid"])
    assert len(ids["valid"]) == round(0.1 * n)
    assert again[name] == task
    assert set(_ids(other[name])["test"]) == set(ids["test"])
    assert _ids(other[name])["train"] != ids["train"]  # another seed, another shuffle


def test_size_filter_and_cap():
  # The paper's thresholds: only task1155 (546 instances) has 500; 100 test + 446 tuning instances.
  (task,) = superni.read_superni(_cfg(min_instances=500), _words)
  assert task.name == TEST[0] and {k: len(v) for k, v in task.instances.items()} == {
      "train": 401, "valid": 45, "test": 100}
  assert [t.name for t in superni.read_superni(_cfg(min_instances=230), _words)] == [
      "task1146_country_capital", TEST[0], "task833_poem_sentiment_classification"]
  assert [t.name for t in superni.read_superni(_cfg(max_tasks=2), _words)] == list(sorted(TRAIN + TEST)[:2])
  # A cap stops the token counting early: 100 test + 50 tuning instances measured.
  capped = {t.name: t for t in superni.read_superni(_cfg(max_instances_per_task=50), _words)}
  for t in capped.values():
    n = min(50, t.meta["instances_in_file"] - len(t.instances["test"]))  # task121: 127 - 100
    assert (len(t.instances["train"]), len(t.instances["valid"])) == (n - round(0.1 * n), round(0.1 * n))
  assert capped[TEST[0]].meta["instances_measured"] == 150


def _expected_ids(name, count, limit):
  return {ins["id"] for ins in _raw(name)["Instances"]
          if count(dod.format_prompt(None, ins["input"]) + dod.format_target(ins["output"][0])) <= limit}


def _kept_ids(task):
  return {i for v in _ids(task).values() for i in v}


def test_token_filter_with_whitespace_tokens():
  name = "task121_zest_text_modification"  # inputs of 2 questions: 9-28 words
  limit = 30
  cfg = _cfg(max_instance_tokens=limit, min_instances=1, max_instances_per_task=0)
  tasks = {t.name: t for t in superni.read_superni(cfg, _words)}
  expected = _expected_ids(name, _words, limit)
  assert 0 < len(expected) < 127 and _kept_ids(tasks[name]) == expected
  assert tasks[name].meta["instances_over_token_limit"] == 127 - len(expected)
  assert all(_words(dod.format_prompt(None, i.input) + dod.format_target(i.output)) <= limit
             for v in tasks[name].instances.values() for i in v)
  # Then the size filter counts the instances that pass, not the file's.
  cfg.min_instances = len(expected) + 1
  assert name not in {t.name for t in superni.read_superni(cfg, _words)}


def test_token_filter_with_a_real_tokenizer(tmp_path):
  texts = [ins["input"] + " " + ins["output"][0] for f in os.listdir(os.path.join(SAMPLE, "tasks"))
           for ins in _raw(f[:-5])["Instances"]]
  tok_lib.train_tokenizer(texts, str(tmp_path), vocab_size=800)
  tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / tok_lib.TOKENIZER_FILE))

  def count(s):
    return len(tok.encode(s, add_special_tokens=False))

  name = "task1562_zest_text_modification"
  lengths = sorted(count(dod.format_prompt(None, ins["input"]) + dod.format_target(ins["output"][0]))
                   for ins in _raw(name)["Instances"])
  limit = lengths[len(lengths) // 2]
  cfg = _cfg(max_instance_tokens=limit, min_instances=1, max_instances_per_task=0)
  task = {t.name: t for t in superni.read_superni(cfg, count)}[name]
  expected = _expected_ids(name, count, limit)
  assert 0 < len(expected) < len(lengths) and _kept_ids(task) == expected
  assert _ids(task)["test"] == [i["id"] for i in _raw(name)["Instances"][:100] if i["id"] in expected]


def test_families(tasks):
  assert tasks["task1149_item_check_edible"].family == "classification"
  assert tasks["task1149_item_check_edible"].classes == ("1", "2")
  assert tasks["task833_poem_sentiment_classification"].classes == ("positive", "negative")
  assert tasks["task1191_food_veg_nonveg"].classes == ("non vegetarian", "vegetarian")  # the definition's order
  assert tasks["task1155_bard_analogical_reasoning_trash_or_treasure"].family == "classification"
  for name in ("task1146_country_capital", "task121_zest_text_modification", "task1562_zest_text_modification"):
    assert (tasks[name].family, tasks[name].classes) == ("general", ())
  for task in tasks.values():
    if task.family == "classification":
      assert all(i.output in task.classes for v in task.instances.values() for i in v)


@pytest.mark.parametrize("edit, problem", [
    (lambda text, record: text[:len(text) // 2], "invalid JSON"),
    (lambda text, record: json.dumps({k: v for k, v in record.items() if k != "Definition"}), "'Definition'"),
    (lambda text, record: json.dumps({**record, "Instances": {"id": "x"}}), "'Instances'"),
    (lambda text, record: json.dumps({**record, "Instances": [{"id": "x", "input": "a", "output": "b"}]}),
     "'output'"),
])
def test_malformed_file_raises_naming_it_or_is_skipped(tmp_path, caplog, edit, problem):
  root = _clone(tmp_path)
  path = root / "tasks" / "task1192_food_flavor_profile.json"
  text = path.read_text(encoding="utf-8")
  path.write_text(edit(text, json.loads(text)), encoding="utf-8")
  with pytest.raises(ValueError, match="task1192_food_flavor_profile.json") as info:
    superni.read_superni(_cfg(root), _words)
  assert problem in str(info.value)
  with caplog.at_level(logging.INFO):
    tasks = superni.read_superni(_cfg(root, skip_malformed=True), _words)
  assert sorted(t.name for t in tasks) == sorted(n for n in TRAIN + TEST if n != "task1192_food_flavor_profile")
  assert "task1192_food_flavor_profile.json" in caplog.text and "1 malformed" in caplog.text


def test_non_english_task_is_dropped(tmp_path):
  root = _clone(tmp_path, names=("task833_poem_sentiment_classification", "task1146_country_capital"))
  path = root / "tasks" / "task833_poem_sentiment_classification.json"
  record = json.loads(path.read_text(encoding="utf-8"))
  record["Output_language"] = ["Spanish"]
  path.write_text(json.dumps(record), encoding="utf-8")
  assert [t.name for t in superni.read_superni(_cfg(root), _words)] == ["task1146_country_capital"]
  assert len(superni.read_superni(_cfg(root, english_only=False), _words)) == 2


def test_missing_root_or_split_file_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
    superni.read_superni(_cfg(tmp_path / "nowhere"), _words)
  root = _clone(tmp_path, names=())
  os.remove(root / "splits" / "default" / "test_tasks.txt")
  with pytest.raises(FileNotFoundError, match="test_tasks.txt"):
    superni.read_superni(_cfg(root), _words)
