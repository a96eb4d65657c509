"""The synthetic DoD: determinism, counts, held-out and novel splits, labels, files, and how much the
instruction matters (the input-only oracle)."""

import collections
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from translator.data import dod
from translator.data import synthetic
from translator.data import synthetic_lexicon as lex

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cfg():
  return synthetic.small_config()


@pytest.fixture(scope="module")
def tasks(cfg):
  return synthetic.generate(cfg)


@pytest.fixture(scope="module")
def full_tasks():
  return synthetic.generate(synthetic.default_config())  # ~4 s


def _by_split(tasks):
  out = collections.defaultdict(list)
  for t in tasks:
    out[t.split].append(t)
  return out


def _files_digest(directory):
  return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
          for name in sorted(os.listdir(directory))}


def test_same_seed_writes_identical_files_other_seed_differs(cfg, tasks, tmp_path):
  dod.write_dod(tasks, str(tmp_path / "a"))
  dod.write_dod(synthetic.generate(cfg), str(tmp_path / "b"))
  other = cfg.copy_and_resolve_references()
  other.seed = 1
  dod.write_dod(synthetic.generate(other), str(tmp_path / "c"))
  a, b, c = (_files_digest(str(tmp_path / d)) for d in "abc")
  assert a == b
  assert a[dod.TASKS_FILE] != c[dod.TASKS_FILE]


def test_output_does_not_depend_on_python_hash_seed(cfg, tasks, tmp_path):
  code = ("import sys; from translator.data import dod, synthetic; "
          "dod.write_dod(synthetic.generate(synthetic.small_config()), sys.argv[1])")
  env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=REPO)
  subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub")], check=True, env=env, cwd=REPO)
  dod.write_dod(tasks, str(tmp_path / "here"))
  assert _files_digest(str(tmp_path / "sub")) == _files_digest(str(tmp_path / "here"))


def test_counts(cfg, tasks):
  c = dod.counts(tasks)["tasks_by_family_and_split"]
  for family, n in (("classification", cfg.num_classification_tasks), ("general", cfg.num_general_tasks)):
    assert c[family]["train"] + c[family]["test"] == n
    assert c[family]["test"] == pytest.approx(cfg.test_fraction * n, abs=1)
  assert c["classification"]["novel"] + c["general"]["novel"] == cfg.num_novel_tasks
  n_train = cfg.instances_per_task - cfg.valid_instances - cfg.test_instances
  for t in tasks:
    sizes = {k: len(v) for k, v in t.instances.items()}
    assert sizes == {"train": n_train, "valid": cfg.valid_instances, "test": cfg.test_instances}, t.name


def test_default_config_has_2000_tasks_of_300_instances(full_tasks):
  assert len(full_tasks) >= 2000
  assert len({t.name for t in full_tasks}) == len(full_tasks)
  assert all(sum(len(v) for v in t.instances.values()) == 300 for t in full_tasks)
  novel = [t for t in full_tasks if t.split == "novel"]
  assert 40 <= len(novel) <= 60
  assert {t.family for t in novel} == {"classification", "general"}


def test_instance_splits_are_disjoint_and_outputs_are_correct(tasks):
  for t in tasks:
    inputs = [i.input for v in t.instances.values() for i in v]
    assert len(set(inputs)) == len(inputs), t.name
    for v in t.instances.values():
      for i in v:
        assert synthetic.solve(t, i.input) == i.output, (t.name, i)


def test_paraphrases(tasks):
  for t in tasks:
    assert len(t.paraphrases) >= 5
    assert len(set(t.paraphrases + (t.instruction,))) == len(t.paraphrases) + 1, t.name


def test_held_out_general_signatures_never_occur_in_train(full_tasks):
  split = _by_split([t for t in full_tasks if t.family == "general"])
  train_sigs = {t.meta["signature"] for t in split["train"]}
  test_sigs = {t.meta["signature"] for t in split["test"]}
  assert test_sigs and not test_sigs & train_sigs
  train_ops = {name for s in train_sigs for name in s.split(">")}
  assert {name for s in test_sigs for name in s.split(">")} <= train_ops
  assert len(test_sigs) >= 20  # the test tasks spread over many signatures
  assert {len(t.meta["ops"]) for t in split["test"]} == {1, 2}


def test_held_out_class_sets_differ_from_every_train_set(cfg, tasks):
  split = _by_split([t for t in tasks if t.family == "classification"])
  max_shared = 5 - cfg.min_test_class_difference
  for t in split["test"]:
    for u in split["train"]:
      assert len(set(t.classes) & set(u.classes)) <= max_shared, (t.name, u.name)


def test_novel_tasks_occur_nowhere_else(tasks):
  split = _by_split(tasks)
  others = split["train"] + split["test"]
  assert split["novel"]
  known_sets = {frozenset(t.classes) for t in others if t.family == "classification"}
  known_ops = {(t.meta["kind"], str(t.meta["ops"])) for t in others if t.family == "general"}
  known_sigs = {t.meta["signature"] for t in others if t.family == "general"}
  for t in split["novel"]:
    assert t.name not in {u.name for u in others}
    if t.family == "classification":
      assert frozenset(t.classes) not in known_sets
    else:
      assert (t.meta["kind"], str(t.meta["ops"])) not in known_ops
      assert (t.meta["signature"] in known_sigs) == (t.meta["novelty"] == "params")
  assert {t.meta.get("novelty") for t in split["novel"]} == {"classes", "signature", "params"}


def test_classification_label_depends_on_the_task(tasks):
  cls = [t for t in tasks if t.family == "classification"]
  labels_by_word = collections.defaultdict(set)
  for t in cls:
    assert len(t.classes) == 5 and len(set(t.classes)) == 5
    assert all(c in t.instruction for c in t.classes), t.instruction
    assert all(c in p for p in t.paraphrases for c in t.classes), t.name
    outputs = collections.Counter(i.output for v in t.instances.values() for i in v)
    assert outputs[lex.NONE_LABEL] > 0  # out-of-class inputs exist
    assert set(outputs) <= set(t.classes) | {lex.NONE_LABEL}
    assert len(set(outputs) - {lex.NONE_LABEL}) >= 4
    for v in t.instances.values():
      for i in v:
        (word,) = [w for w in re.findall("[a-z]+", i.input.lower()) if w in lex.WORDS]
        labels_by_word[word].add(i.output)
  # Most words get several labels (a kind, a colour, a place, "none") across tasks.
  assert sum(len(v) >= 3 for v in labels_by_word.values()) > 0.8 * len(labels_by_word)


def test_every_word_has_three_categories_and_none_is_reserved():
  assert len(lex.WORDS) >= 200
  for w, cats in lex.WORDS.items():
    assert [lex.CATEGORIES[c].dimension for c in cats] == list(lex.DIMENSIONS)
  assert lex.NONE_LABEL not in lex.CATEGORIES and lex.NONE_LABEL not in lex.WORDS
  assert not set(lex.WORDS) & set(lex.CATEGORIES)


def test_round_trip_and_tamper_detection(tasks, tmp_path):
  d = str(tmp_path / "dod")
  dod.write_dod(tasks, d, metadata={"config": synthetic.small_config().to_dict()})
  assert dod.read_dod(d) == sorted(tasks, key=lambda t: t.name)
  manifest = dod.read_manifest(d)
  assert manifest["counts"]["tasks"] == len(tasks)
  assert manifest["metadata"]["config"]["seed"] == 0
  assert not [f for f in os.listdir(d) if f.endswith(".tmp")]
  with open(os.path.join(d, dod.TASKS_FILE), "a", encoding="utf-8") as f:
    f.write("\n")
  with pytest.raises(ValueError, match="SHA-256"):
    dod.read_dod(d)
  with pytest.raises(FileNotFoundError, match="MANIFEST"):
    dod.read_dod(str(tmp_path / "missing"))


def test_format():
  ins = dod.Instance("cow, duck", "cow")
  assert dod.format_example("Return the first word.", ins) == (
      "Return the first word.\nInput: cow, duck\nOutput:", " cow")
  assert dod.format_prompt(None, "3 1") == "Input: 3 1\nOutput:"


def test_input_only_oracle_is_low_on_held_out_tasks(full_tasks):
  """Predict, for each held-out test input, the majority output of that exact input string across the
  translator-train tasks: the best guess without the instruction. Low means the instruction matters."""
  split = _by_split(full_tasks)
  result = dod.input_only_majority(split["train"], split["test"])
  print(f"input-only oracle on held-out tasks: {result}")
  assert result["coverage"] > 0.85  # the inputs do recur across tasks, so the oracle is informed
  assert result["exact_match"] < 0.25
  assert result["exact_match/classification"] < 0.35
  assert result["exact_match/general"] < 0.15


def test_excluded_ops_take_no_part_and_unknown_ones_are_refused(cfg):
  c = cfg.copy_and_resolve_references()
  c.exclude_ops = ("reverse", "upper", "next")
  tasks = synthetic.generate(c)
  used = {op for t in tasks if t.family == "general" for op, _ in t.meta["ops"]}
  assert used and not used & {"reverse", "upper", "next"}
  assert sum(t.family == "general" for t in tasks) == c.num_general_tasks + c.num_novel_tasks // 2
  c.exclude_ops = ("reverse", "no_such_op")
  with pytest.raises(ValueError, match="no_such_op"):
    synthetic.generate(c)


def test_balanced_sample_gives_small_groups_all_their_tasks(full_tasks):
  train = sorted((t for t in full_tasks if t.split == "train"), key=lambda t: t.name)
  kinds = collections.Counter((t.family, t.meta.get("kind", "")) for t in train)
  rng = lambda: np.random.default_rng(0)
  sample = dod.balanced_sample(train, 400, ("family", "kind"), rng())
  got = collections.Counter((t.family, t.meta.get("kind", "")) for t in sample)
  assert len(sample) == len({t.name for t in sample}) == 400
  assert got["classification", ""] == 200  # the families share the 400 equally
  # Within general, letters (13) and digits (84) are below their shares (200 / 3, then 187 / 2) and come
  # whole; words take the rest.
  small = [("general", "letters"), ("general", "digits")]
  assert kinds[small[0]] < 200 // 3 and kinds[small[1]] < (200 - kinds[small[0]]) // 2 < kinds["general", "words"]
  assert all(got[k] == kinds[k] for k in small)
  assert got["general", "words"] == 200 - sum(kinds[k] for k in small)
  assert [t.name for t in sample] == sorted(t.name for t in sample)  # order kept
  assert sample == dod.balanced_sample(train, 400, ("family", "kind"), rng())  # seeded
  uniform = dod.balanced_sample(train, 400, (), rng())
  assert {t.name for t in uniform} == {train[i].name for i in rng().choice(len(train), 400, replace=False)}
  assert dod.balanced_sample(train[:10], 400, ("family",), rng()) == train[:10]
