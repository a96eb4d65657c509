"""The pretraining corpus: determinism per (seed, step), packing, exact tokenization, loss mask, formats of
every document kind, and that novel tasks and held-out instances never reach the LM (checked on the
decoded text of the batches, not on the generator's bookkeeping)."""

import collections
import re

import numpy as np
import pytest

import translator
from translator.data import corpus as corpus_lib
from translator.data import dod
from translator.data import synthetic
from translator.data import tokenizer as tok_lib

BATCH, STEPS = 16, 12  # ~750 documents for the text checks


@pytest.fixture(scope="module")
def tasks():
  return synthetic.generate(synthetic.small_config())


@pytest.fixture(scope="module")
def tok_dir(tasks, tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("tok"))
  tok_lib.train_tokenizer(tok_lib.corpus_texts(tasks), folder)
  return folder


@pytest.fixture(scope="module")
def tokenizer(tok_dir):
  return tok_lib.load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def corpus(tasks, tokenizer):
  return corpus_lib.Corpus(tasks, tokenizer)


@pytest.fixture(scope="module")
def texts(corpus):
  """The decoded text of every document of STEPS batches."""
  out = []
  for step in range(STEPS):
    batch = corpus.batch(step, BATCH, seed=7)
    for row in range(BATCH):
      out += [corpus.decode(doc) for doc in corpus.row_documents(batch, row)]
  return out


# ---------------------------------------------------------------------------------------------------
# Parsing a document's text back into its parts.

_PAIR = re.compile(r"Input: (.*)\nOutput: (.*)")
_COPY = re.compile(r"Input: (.*)\nCopy: (.*)")


def _parse(text):
  """kind, the wordings it names, the class lists it names, and its (input, output) pairs."""
  lines = text.split("\n")
  if len(lines) > 1 and lines[1].startswith(corpus_lib.COPY_PREFIX + " "):
    pairs = [_COPY.fullmatch(a + "\n" + b).groups() for a, b in zip(lines[::2], lines[1::2])]
    assert len(lines) == 2 * len(pairs) and all(x == y for x, y in pairs), text
    return "copy", [], [], pairs
  head = [] if lines[0].startswith("Input: ") else [lines.pop(0)]
  tail = [] if not lines or lines[-1].startswith("Output: ") else [lines.pop()]
  pairs = [_PAIR.fullmatch(a + "\n" + b).groups() for a, b in zip(lines[::2], lines[1::2])]
  assert len(lines) == 2 * len(pairs), text
  wordings, class_lists = [], []
  if head and not pairs:
    kind = "inspect_list"
    for item in head[0].split(corpus_lib.INSPECT_SEPARATOR):
      if item.startswith(corpus_lib.INSTRUCTION_PREFIX + " "):
        wordings.append(item[len(corpus_lib.INSTRUCTION_PREFIX) + 1:])
      else:
        description, _, classes = item.partition(": ")
        assert description == corpus_lib.CLASSIFICATION_DESCRIPTION, text
        class_lists.append(tuple(classes.split(corpus_lib.INSPECT_CLASS_SEPARATOR)))
  elif head:
    kind = "instruction"
    wordings.append(head[0])
  elif tail:
    kind = "describe"
    prefix, _, rest = tail[0].partition(": ")
    if prefix == corpus_lib.INSTRUCTION_PREFIX[:-1]:
      wordings.append(rest)
    else:
      assert prefix == corpus_lib.CLASSIFICATION_DESCRIPTION, text
      class_lists.append(tuple(rest.split(corpus_lib.INSPECT_CLASS_SEPARATOR)))
  else:
    kind = "few_shot" if len(pairs) > 1 else "input_only"
  return kind, wordings, class_lists, pairs


def _wordings(task):
  return (task.instruction,) + task.paraphrases


# ---------------------------------------------------------------------------------------------------


def test_batches_are_a_function_of_seed_and_step(corpus):
  a = corpus.batch(5, 8, seed=3)
  b = corpus.batch(5, 8, seed=3)
  for key in ("tokens", "loss_mask", "segment_ids", "positions", "mask"):
    np.testing.assert_array_equal(a[key], b[key])
  stream = corpus.batches(8, seed=3, start_step=5)
  np.testing.assert_array_equal(next(stream)["tokens"], a["tokens"])  # a resumed run continues exactly
  np.testing.assert_array_equal(next(stream)["tokens"], corpus.batch(6, 8, seed=3)["tokens"])
  assert not np.array_equal(corpus.batch(6, 8, seed=3)["tokens"], a["tokens"])
  assert not np.array_equal(corpus.batch(5, 8, seed=4)["tokens"], a["tokens"])


def test_a_transformers_tokenizer_gives_the_same_batches(tasks, tok_dir, corpus):
  hf = corpus_lib.Corpus(tasks, translator.lm.load_tokenizer(tok_dir))
  np.testing.assert_array_equal(hf.batch(2, 4, seed=1)["tokens"], corpus.batch(2, 4, seed=1)["tokens"])


def test_rows_are_whole_documents_padded_at_the_end(corpus):
  batch = corpus.batch(0, BATCH, seed=0)
  length = corpus.seq_len
  for key in ("tokens", "loss_mask", "segment_ids", "positions"):
    assert batch[key].shape == (BATCH, length) and batch[key].dtype == np.int32, key
  np.testing.assert_array_equal(batch["mask"], batch["segment_ids"] > 0)
  tokens, seg, pos, loss = batch["tokens"], batch["segment_ids"], batch["positions"], batch["loss_mask"]
  for r in range(BATCH):
    n = int((seg[r] > 0).sum())
    assert (seg[r, :n] > 0).all() and (seg[r, n:] == 0).all()  # padding only at the end
    assert (tokens[r, n:] == corpus.pad_id).all() and (loss[r, n:] == 0).all()
    assert (np.diff(seg[r, :n]) >= 0).all() and (np.diff(seg[r, :n]) <= 1).all()
    for s in range(1, int(seg[r].max()) + 1):
      idx = np.flatnonzero(seg[r] == s)
      np.testing.assert_array_equal(pos[r, idx], np.arange(len(idx)))
      assert tokens[r, idx[0]] == corpus.bos_id and tokens[r, idx[-1]] == corpus.eos_id
      assert loss[r, idx[0]] == 0 and loss[r, idx[-1]] == 1  # BOS is never a target, EOS always
      assert (tokens[r, idx[1:-1]] != corpus.bos_id).all() and (tokens[r, idx[1:-1]] != corpus.eos_id).all()
  assert (seg == 0).mean() < 0.15  # little padding
  assert seg.max(axis=1).mean() >= 3  # ~4 documents per 256-token row


def test_documents_are_tokenized_like_their_text(corpus, tokenizer):
  """Pieces tokenized once and concatenated give exactly what tokenizing the document's text gives (and
  what `LM.encode` gives the evaluated prompts)."""
  for doc in corpus.documents(seed=1, step=0, count=400):
    text = corpus.decode(doc.tokens)
    assert doc.tokens == [corpus.bos_id] + tokenizer.encode(text, add_special_tokens=False).ids + [corpus.eos_id]


def test_loss_mask_drops_inputs_and_unconditioned_first_outputs(corpus):
  """The tokens left out of the loss are BOS, the inputs, the wording that opens an instruction document,
  and the first output of a document without an instruction before it; everything else (the wordings after
  demonstrations, outputs, template, EOS) is a target."""
  seen = collections.Counter()
  for doc in corpus.documents(seed=2, step=0, count=300):
    text = corpus.decode(doc.tokens)
    kind, _, _, pairs = _parse(text)
    seen[kind] += 1
    mask = np.array(doc.loss_mask)
    assert doc.loss_mask[0] == 0 and mask[1:].sum() == (mask[1:] == 1).sum()
    dropped = corpus.decode([t for t, m in zip(doc.tokens[1:], doc.loss_mask[1:]) if not m])
    if kind == "instruction":
      expected = text.split("\n")[0] + "".join(" " + x for x, _ in pairs)
    elif kind in ("inspect_list", "copy"):
      expected = "".join(" " + x for x, _ in pairs)
    else:
      expected = " " + pairs[0][0] + " " + pairs[0][1] + "".join(" " + x for x, _ in pairs[1:])
    assert dropped == expected, (kind, text)
  assert set(seen) == {"instruction", "few_shot", "describe", "inspect_list", "copy"}


def test_every_kind_appears_in_its_format_and_share(corpus, texts):
  kinds = collections.Counter(_parse(t)[0] for t in texts)
  weights = dict(corpus.config.kinds)
  total = sum(weights.values())
  assert set(kinds) == {k for k, w in weights.items() if w > 0}
  for kind, count in kinds.items():
    assert abs(count / len(texts) - weights[kind] / total) < 0.06, (kind, count, len(texts))
  examples = {}
  for t in texts:
    examples.setdefault(_parse(t)[0], t)
  pair = r"Input: [^\n]+\nOutput: [^\n]+"
  assert re.fullmatch(rf"[^\n]+\n{pair}(\n{pair})*", examples["instruction"])
  n = corpus.config.few_shot_demos + 1
  assert re.fullmatch(rf"{pair}(\n{pair}){{{n - 1}}}", examples["few_shot"])
  assert re.fullmatch(rf"{pair}(\n{pair}){{2,}}\n(Instruction|Sentence classification): [^\n]+", examples["describe"])
  item = r"(Instruction: [^|\n]+|Sentence classification: \w+(, \w+){4})"
  assert re.fullmatch(rf"{item}( \| {item}){{2,}}", examples["inspect_list"])
  describe = [t for t in texts if _parse(t)[0] == "describe"]
  assert any("\nSentence classification: " in t for t in describe)
  assert any("\nInstruction: " in t for t in describe)
  inspect = [t for t in texts if _parse(t)[0] == "inspect_list"]
  assert any(t.startswith("Sentence classification: ") for t in inspect)
  assert any(t.startswith("Instruction: ") for t in inspect)


def test_no_novel_task_and_no_held_out_instance_reaches_the_corpus(tasks, corpus, texts):
  """Every decoded document is explained by the non-novel tasks' wordings, class sets and train instances.

  Text alone cannot tell a novel task's instance from the same (input, output) pair of another task
  (general tasks share a pool of inputs; a held-out input of one task can be a train input of another),
  so the check is the precise one: each document must be producible from the allowed material, i.e.
  its wordings and class lists belong to non-novel tasks (and to no novel task), and some single such
  task has every (input, output) pair of the document among its train instances, and has the document's
  wording when it has one. Then, for instruction documents, no input is a held-out one of that task.
  """
  seen_tasks = [t for t in tasks if t.split != "novel"]
  novel = [t for t in tasks if t.split == "novel"]
  assert novel and seen_tasks
  by_wording = collections.defaultdict(set)
  for t in seen_tasks:
    for w in _wordings(t):
      by_wording[w].add(t.name)
  novel_wordings = {w for t in novel for w in _wordings(t)}
  assert not novel_wordings & set(by_wording)  # the check below is well-posed
  class_sets = {frozenset(t.classes): t.name for t in seen_tasks if t.classes}
  novel_class_sets = {frozenset(t.classes) for t in novel}
  by_pair = collections.defaultdict(set)
  for t in seen_tasks:
    for ins in t.instances["train"]:
      by_pair[ins.input, ins.output].add(t.name)
  held_out = {t.name: {i.input for s in ("valid", "test") for i in t.instances[s]} for t in seen_tasks}
  train_inputs = {x for x, _ in by_pair}

  counts = collections.Counter()
  for text in texts:
    kind, wordings, class_lists, pairs = _parse(text)
    for w in wordings:
      assert w not in novel_wordings and w in by_wording, (w, text)
    for classes in class_lists:
      assert len(set(classes)) == 5 and frozenset(classes) in class_sets, text
      assert frozenset(classes) not in novel_class_sets, text
    if not pairs:
      continue
    if kind == "copy":  # inputs of any allowed tasks, each a train input of one
      assert all(x in train_inputs for x, _ in pairs), text
      counts[kind] += 1
      continue
    candidates = set.intersection(*(by_pair.get(p, set()) for p in pairs))
    if wordings:
      candidates &= by_wording[wordings[0]]
    if class_lists:
      candidates &= {class_sets[frozenset(class_lists[0])]}
    assert candidates, f"no non-novel task has all the train instances of:\n{text}"
    if kind == "instruction":
      for name in by_wording[wordings[0]]:
        assert not {x for x, _ in pairs} & held_out[name], text
    counts[kind] += 1
  assert counts["instruction"] > 100 and counts["few_shot"] > 20 and counts["describe"] > 20


def test_documents_name_only_allowed_tasks(tasks, corpus):
  split = {t.name: t.split for t in tasks}
  names = {n for doc in corpus.documents(seed=5, step=0, count=500) for n in doc.tasks}
  assert {split[n] for n in names} == {"train", "test"}
  assert {t.split for t in tasks} >= {"novel"}


def test_config_guards(tasks, tokenizer):
  cfg = corpus_lib.corpus_config()
  cfg.task_splits = ("train", "test", "novel")
  with pytest.raises(ValueError, match="novel"):
    corpus_lib.Corpus(tasks, tokenizer, cfg)
  cfg = corpus_lib.corpus_config()
  cfg.kinds.few_shot = -1.0
  with pytest.raises(ValueError, match="non-negative"):
    corpus_lib.Corpus(tasks, tokenizer, cfg)


def test_kinds_can_be_switched_off_and_input_only_on(tasks, tokenizer):
  cfg = corpus_lib.corpus_config()
  cfg.kinds = dict(instruction=0.0, few_shot=0.0, describe=0.0, inspect_list=0.0, input_only=1.0)
  c = corpus_lib.Corpus(tasks, tokenizer, cfg)
  for doc in c.documents(seed=0, step=0, count=20):
    kind, _, _, pairs = _parse(c.decode(doc.tokens))
    assert kind == "input_only" and len(pairs) == 1
    assert c.decode([t for t, m in zip(doc.tokens, doc.loss_mask) if m]) == "Input:\nOutput: " + pairs[0][1]


def test_few_shot_prompt_is_the_corpus_format():
  demos = (dod.Instance("a b", "b a"), dod.Instance("c d e", "e d c"))
  assert corpus_lib.few_shot_prompt(demos, "f g") == (
      "Input: a b\nOutput: b a\nInput: c d e\nOutput: e d c\nInput: f g\nOutput:")
  items = [corpus_lib.inspect_general_item("Do A."), corpus_lib.inspect_general_item("Do B.")]
  assert corpus_lib.inspect_prompt(items, corpus_lib.INSTRUCTION_PREFIX, 3) == (
      "Instruction: Do A. | Instruction: Do B. | Instruction: x x x")
  assert corpus_lib.inspect_classification_item(["red", "fish"]) == "Sentence classification: red, fish"


def test_copy_documents_repeat_inputs_and_learn_only_the_copies(tasks, tokenizer):
  cfg = corpus_lib.corpus_config()
  cfg.kinds.update(instruction=0.0, few_shot=0.0, describe=0.0, inspect_list=0.0, copy=1.0)
  corpus = corpus_lib.Corpus(tasks, tokenizer, cfg)
  train_inputs = {t.name: {i.input for i in t.instances["train"]} for t in tasks}
  for doc in corpus.documents(seed=0, step=0, count=50):
    assert doc.kind == "copy"
    lines = corpus.decode(doc.tokens).split("\n")
    assert 2 * cfg.copy_items[0] <= len(lines) <= 2 * cfg.copy_items[1]
    assert len(doc.tasks) == len(lines) // 2  # the task each input comes from
    for name, x_line, copy_line in zip(doc.tasks, lines[::2], lines[1::2]):
      x = x_line.removeprefix("Input: ")
      assert x in train_inputs[name] and copy_line == corpus_lib.COPY_PREFIX + " " + x
    # Out of the loss: BOS and the inputs; the copies, "Input:", "Copy:" and newlines are learned.
    dropped = corpus.decode([t for t, m in zip(doc.tokens[1:], doc.loss_mask[1:]) if not m])
    assert doc.loss_mask[0] == 0 and dropped == "".join(" " + x.removeprefix("Input: ") for x in lines[::2])
