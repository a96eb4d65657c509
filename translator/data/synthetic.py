"""A deterministic, seeded generator of the synthetic dataset of datasets (DoD).

Two families, mirroring the paper's two DoDs:

* classification: 5 classes drawn from the 33 categories of `synthetic_lexicon` (12 kinds, 11 colours,
  10 places). Every word is in exactly 3 categories (a kind, a colour, a place); an input is a short
  sentence around one word; its label is the one class of the task that contains the word, or
  `NONE_LABEL` ("none") when none does (`out_of_class_fraction` of the inputs). Words in two of the
  task's classes are never inputs of that task. The instruction names the 5 classes; "none" is a
  convention of the DoD and is never named. So the label of a sentence depends on the task: "the
  salmon" is "fish", "pink", "river" or "none" depending on the classes.
* general: one op or two ops in sequence (`synthetic_ops`) on a list of 3-5 words, digits or letters.
  All tasks of a kind draw their inputs from one shared pool of lists, so an input says little about
  which op to apply, and no output of a task covers more than `max_output_share` of its instances.
  Shares of general tasks: `single_op_share` one op, `pair_to_list_share` two ops ending in a list,
  the rest two ops ending in a value (a word, letter, number or formatted string).

How much the instruction matters: predicting each held-out test input's majority output over the
translator-train tasks (`dod.input_only_majority`) scores 0.18 exact match with the default config
(classification 0.27, general 0.07).

Splits of tasks (the translator's; the LM may see every non-novel task in pretraining):
* test: classification tasks whose class set shares at most 5 - `min_test_class_difference` classes with
  any train task's; general tasks whose signature (the tuple of op names, e.g. ("keep_cat", "first"))
  never occurs among train tasks, while each op of it does.
* novel: never in pretraining nor in the translator's training. Classification: fresh class sets.
  General: half from signatures reserved for them (meta novelty "signature"), half fresh parameters of
  a train signature (novelty "params").
Instance splits within every task: train / valid / test (240 / 30 / 30 by default), inputs distinct.

Randomness: every stream is a `random.Random` seeded with a string ("{seed}/{purpose}"), which Python
hashes with SHA-512, so the output depends on the seed only (not on PYTHONHASHSEED or on the order in
which tasks are built).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import random
from typing import Optional, Sequence

import ml_collections

from translator.data import dod
from translator.data import synthetic_lexicon as lex
from translator.data import synthetic_ops as ops_lib


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_classification_tasks = 1150  # translator train + test
  c.num_general_tasks = 900  # translator train + test
  c.num_novel_tasks = 48  # half per family; never in pretraining
  c.test_fraction = 0.1  # of each family's non-novel tasks
  c.instances_per_task = 300
  c.valid_instances = 30
  c.test_instances = 30
  c.num_paraphrases = 6
  c.min_items = 3
  c.max_items = 5
  c.single_op_share = 0.18  # of general tasks: one op (~all feasible single-op tasks of the ops below)
  c.pair_to_list_share = 0.27  # two ops, the second a transform (the output is a list); the rest end in a value
  c.max_output_share = 0.5  # no output of a general task is more frequent than this
  # Op names (synthetic_ops.py) no general task uses: the ops a 2M-parameter LM does not learn within the
  # pretraining budget of the embedded default (3 CPU hours for both LMs): letter arithmetic and spelling
  # (next, prev, first_letters, keep_vowels, count_vowels, keep_letter), arithmetic with carries (sum,
  # range, add, double), alphabetical order (sort, alpha_first, alpha_last) and long formats (numbered,
  # join_semicolon). () puts every op back (a DoD for larger LMs).
  c.exclude_ops = ("next", "prev", "first_letters", "keep_vowels", "count_vowels", "keep_letter", "sum", "range",
                   "add", "double", "alpha_first", "alpha_last", "sort", "numbered", "join_semicolon")
  c.pool_size = 12000  # input lists per kind, shared by all general tasks of that kind
  c.themed_fraction = 0.5  # word lists built around 2-3 members of one category
  c.out_of_class_fraction = 0.2
  c.min_test_class_difference = 2
  c.min_class_members = 3  # unambiguous members each class of a task must have
  return c


def small_config() -> ml_collections.ConfigDict:
  """A fast configuration for tests (~1 s)."""
  c = default_config()
  c.num_classification_tasks = 60
  c.num_general_tasks = 90
  c.num_novel_tasks = 8
  c.test_fraction = 0.2
  c.instances_per_task = 40
  c.valid_instances = 5
  c.test_instances = 5
  c.pool_size = 3000
  return c


def _rng(cfg, *purpose: str) -> random.Random:
  return random.Random("/".join((str(cfg.seed),) + purpose))


def _split_instances(cfg, pairs: Sequence[tuple[str, str]]) -> dict[str, tuple[dod.Instance, ...]]:
  n_valid, n_test = cfg.valid_instances, cfg.test_instances
  n_train = len(pairs) - n_valid - n_test
  if n_train <= 0:
    raise ValueError(f"instances_per_task={len(pairs)} leaves no train instances "
                     f"after valid_instances={n_valid} and test_instances={n_test}")
  inst = [dod.Instance(x, y) for x, y in pairs]
  return {"train": tuple(inst[:n_train]), "valid": tuple(inst[n_train:n_train + n_valid]),
          "test": tuple(inst[n_train + n_valid:])}


def _paraphrase_choices(rng: random.Random, combos: list, k: int) -> list:
  """`k` combos other than the first (canonical), in a random order."""
  if len(combos) - 1 < k:
    raise ValueError(f"only {len(combos) - 1} paraphrase templates, {k} requested")
  return rng.sample(combos[1:], k)


# ---------------------------------------------------------------------------------------------------
# Classification.


def _label(word: str, classes: Sequence[str]) -> Optional[str]:
  """The class of `classes` that contains `word`, NONE_LABEL if none does, None if several do."""
  hits = [c for c in classes if c in lex.WORDS[word]]
  return hits[0] if len(hits) == 1 else (lex.NONE_LABEL if not hits else None)


def _usable_class_set(cfg, classes: Sequence[str]) -> bool:
  labels = [_label(w, classes) for w in lex.WORD_LIST]
  return all(labels.count(c) >= cfg.min_class_members for c in classes) and lex.NONE_LABEL in labels


def _class_sets(cfg, n_test: int, n_train: int, n_novel: int):
  rng = _rng(cfg, "classification", "class_sets")
  names = sorted(lex.CATEGORIES)
  seen = set()

  def draw():
    while True:
      s = tuple(sorted(rng.sample(names, 5)))
      if s not in seen:
        seen.add(s)
        if _usable_class_set(cfg, s):
          return s

  test = [draw() for _ in range(n_test)]
  novel = [draw() for _ in range(n_novel)]
  max_shared = 5 - cfg.min_test_class_difference
  train = []
  while len(train) < n_train:
    s = draw()
    if all(len(set(s) & set(t)) <= max_shared for t in test):
      train.append(s)
  return train, test, novel


def _classification_task(cfg, class_set: tuple[str, ...], split: str, novelty: str = "") -> dod.Task:
  name = "cls-" + "-".join(class_set)
  rng = _rng(cfg, "task", name)
  classes = list(class_set)
  rng.shuffle(classes)

  def text(template, order):
    return template.format(classes=", ".join(order), classes_or=", ".join(order[:-1]) + " or " + order[-1])

  paraphrases = []
  for template in _paraphrase_choices(rng, list(lex.CLASSIFICATION_TEMPLATES), cfg.num_paraphrases):
    order = list(classes)
    rng.shuffle(order)
    paraphrases.append(text(template, order))

  labels = {w: _label(w, classes) for w in lex.WORD_LIST}
  inside = [w for w in lex.WORD_LIST if labels[w] not in (None, lex.NONE_LABEL)]
  outside = [w for w in lex.WORD_LIST if labels[w] == lex.NONE_LABEL]
  n = cfg.instances_per_task
  n_out = round(cfg.out_of_class_fraction * n)
  pairs, inputs = [], set()
  for words, count in ((outside, n_out), (inside, n - n_out)):
    if len(words) * len(lex.SENTENCE_TEMPLATES) < 2 * count:
      raise ValueError(f"task {name}: {len(words)} words cannot give {count} distinct inputs; "
                       "lower instances_per_task")
    goal = len(pairs) + count
    while len(pairs) < goal:
      word = rng.choice(words)
      x = lex.fill_sentence(rng.choice(lex.SENTENCE_TEMPLATES), word)
      if x not in inputs:
        inputs.add(x)
        pairs.append((x, labels[word]))
  rng.shuffle(pairs)
  meta = {"dimensions": [lex.CATEGORIES[c].dimension for c in classes]}
  if novelty:
    meta["novelty"] = novelty
  return dod.Task(name=name, family="classification", instruction=text(lex.CLASSIFICATION_TEMPLATES[0], classes),
                  paraphrases=tuple(paraphrases), classes=tuple(classes), split=split,
                  instances=_split_instances(cfg, pairs), meta=meta)


# ---------------------------------------------------------------------------------------------------
# General.


class _Pools:
  """Shared input lists per kind, and for words an index: category or first letter -> lists with a member."""

  def __init__(self, cfg):
    self.lists = {}
    for kind in ops_lib.KINDS:
      rng = _rng(cfg, "pool", kind)
      seen, lists = set(), []
      while len(lists) < cfg.pool_size:
        items = tuple(self._draw(cfg, rng, kind))
        if items not in seen:
          seen.add(items)
          lists.append(items)
      self.lists[kind] = lists
    self.index = {}
    for i, items in enumerate(self.lists["words"]):
      keys = {w[0] for w in items} | {c for w in items for c in lex.WORDS[w]}
      for key in sorted(keys):
        self.index.setdefault(key, []).append(i)

  @staticmethod
  def _draw(cfg, rng, kind):
    n = rng.randint(cfg.min_items, cfg.max_items)
    if kind == "digits":
      return rng.sample("0123456789", n)
    if kind == "letters":
      return rng.sample(lex.LETTERS, n)
    if rng.random() < cfg.themed_fraction:
      members = lex.MEMBERS[rng.choice(sorted(lex.CATEGORIES))]
      words = rng.sample(members, rng.randint(2, min(3, n)))
      words += rng.sample([w for w in lex.WORD_LIST if w not in words], n - len(words))
      rng.shuffle(words)
      return words
    return rng.sample(lex.WORD_LIST, n)

  def candidates(self, steps) -> range | list[int]:
    for op, param in steps:
      if op.kind == "words" and op.param_kind in ("category", "letter"):
        return self.index.get(param, [])
    return range(len(self.lists[steps[0][0].kind]))


def _enumerate_specs(exclude: Sequence[str] = ()) -> dict[tuple[str, ...], list[tuple[ops_lib.Step, ...]]]:
  """Every single op and compatible pair with every parameter, grouped by signature; ops named in `exclude`
  take no part."""
  unknown = sorted(set(exclude) - {op.name for op in ops_lib.OPS.values()})
  if unknown:
    raise ValueError(f"exclude_ops names unknown ops {unknown}; the ops are in translator/data/synthetic_ops.py")
  ops = [op for op in ops_lib.OPS.values() if op.name not in exclude]
  by_sig = {}
  for op in ops:
    for p in op.params:
      by_sig.setdefault((op.name,), []).append(((op, p),))
    if not op.is_transform:
      continue
    for op2 in ops:
      if ops_lib.compatible(op, op2):
        for p, p2 in itertools.product(op.params, op2.params):
          by_sig.setdefault((op.name, op2.name), []).append(((op, p), (op2, p2)))
  return {sig: by_sig[sig] for sig in sorted(by_sig)}


def _general_name(steps) -> str:
  return "gen-" + steps[0][0].kind + "".join(f"-{op.name}" + (f"_{p}" if p else "") for op, p in steps)


def _general_task(cfg, pools: _Pools, steps, split: str, novelty: str = "") -> Optional[dod.Task]:
  """The task, or None when the shared pool has too few inputs its ops accept."""
  name = _general_name(steps)
  rng = _rng(cfg, "task", name)
  kind = steps[0][0].kind
  lists, candidates = pools.lists[kind], pools.candidates(steps)
  n = cfg.instances_per_task
  if len(candidates) < n:
    return None
  max_per_output = math.ceil(cfg.max_output_share * n)
  pairs, used, per_output = [], set(), collections.Counter()
  for _ in range(25 * n):
    i = candidates[rng.randrange(len(candidates))]
    if i in used:
      continue
    used.add(i)
    y = ops_lib.apply(steps, list(lists[i]))
    if y is not None and per_output[y] < max_per_output:
      per_output[y] += 1
      pairs.append((ops_lib.SEPARATORS[kind].join(lists[i]), y))
      if len(pairs) == n:
        break
  else:
    return None

  frames = ops_lib.SINGLE_FRAMES if len(steps) == 1 else ops_lib.PAIR_FRAMES
  combos = list(itertools.product(range(len(frames)), *(range(len(op.phrases)) for op, _ in steps)))
  paraphrases = tuple(ops_lib.describe(steps, c[0], c[1:])
                      for c in _paraphrase_choices(rng, combos, cfg.num_paraphrases))
  meta = {"kind": kind, "ops": [[op.name, p] for op, p in steps],
          "signature": ">".join(op.name for op, _ in steps)}
  if novelty:
    meta["novelty"] = novelty
  return dod.Task(name=name, family="general", instruction=ops_lib.describe(steps, 0, [0] * len(steps)),
                  paraphrases=paraphrases, classes=(), split=split, instances=_split_instances(cfg, pairs),
                  meta=meta)


def _round_robin(cfg, pools, specs, sigs, cursor, quota, split, novelty=""):
  """Up to `quota` feasible tasks, one signature at a time, so that parameterized ones do not crowd out
  the rest. Advances `cursor` (signature -> next spec to try); returns (signature, task) pairs."""
  out = []
  while len(out) < quota:
    progressed = False
    for sig in sigs:
      while cursor[sig] < len(specs[sig]) and len(out) < quota:
        steps = specs[sig][cursor[sig]]
        cursor[sig] += 1
        task = _general_task(cfg, pools, steps, split, novelty)
        if task is not None:
          out.append((sig, task))
          progressed = True
          break
    if not progressed:
      raise ValueError(f"only {len(out)} of {quota} requested general {split} tasks of signatures {sigs[:3]}... "
                       "are feasible; lower num_general_tasks or num_novel_tasks, or raise pool_size")
  return out


def _group(specs, sig) -> str:
  if len(sig) == 1:
    return "single"
  return "pair_to_list" if specs[sig][0][-1][0].is_transform else "pair_to_value"


def _general_tasks(cfg, n_tasks: int, n_novel: int) -> list[dod.Task]:
  rng = _rng(cfg, "general")
  pools = _Pools(cfg)
  specs = _enumerate_specs(tuple(cfg.get("exclude_ops", ())))
  for sig in specs:
    rng.shuffle(specs[sig])
  order = list(specs)
  rng.shuffle(order)
  novel_sigs = [s for s in order if len(s) == 2][:n_novel // 2]
  order = [s for s in order if s not in novel_sigs]
  cursor = {sig: 0 for sig in specs}

  # Train + test tasks, in the configured shares of single ops, pairs ending in a list, and the rest.
  quotas = {"single": round(cfg.single_op_share * n_tasks), "pair_to_list": round(cfg.pair_to_list_share * n_tasks)}
  quotas["pair_to_value"] = n_tasks - sum(quotas.values())
  chosen = {sig: [] for sig in order}
  for group, quota in quotas.items():
    sigs = [s for s in order if _group(specs, s) == group]
    for sig, task in _round_robin(cfg, pools, specs, sigs, cursor, quota, "train"):
      chosen[sig].append(task)

  # Held-out signatures, each op of which still occurs in a train signature; none larger than `cap`, so
  # that the test tasks spread over many signatures.
  test_sigs, n_test = set(), 0
  target = round(cfg.test_fraction * n_tasks)
  cap = max(1, target // 12)
  realized = [s for s in order if chosen[s]]
  for sig in rng.sample(realized, len(realized)):
    if n_test + len(chosen[sig]) > target or len(chosen[sig]) > cap:
      continue
    rest = [s for s in realized if s != sig and s not in test_sigs]
    if all(any(name in s for s in rest) for name in sig):
      test_sigs.add(sig)
      n_test += len(chosen[sig])
  tasks = [dataclasses.replace(t, split="test") if sig in test_sigs else t for sig in order for t in chosen[sig]]

  # Novel: one task of each reserved signature, then fresh parameters of train signatures.
  novel = [t for _, t in _round_robin(cfg, pools, specs, novel_sigs, cursor, len(novel_sigs), "novel",
                                      novelty="signature")]
  spare = [s for s in realized if s not in test_sigs]
  novel += [t for _, t in _round_robin(cfg, pools, specs, spare, cursor, n_novel - len(novel), "novel",
                                       novelty="params")]
  return tasks + novel


# ---------------------------------------------------------------------------------------------------
# Entry points.


def generate(cfg: Optional[ml_collections.ConfigDict] = None) -> list[dod.Task]:
  """All tasks of the synthetic DoD, sorted by name."""
  cfg = cfg or default_config()
  if cfg.valid_instances + cfg.test_instances >= cfg.instances_per_task:
    raise ValueError(f"instances_per_task={cfg.instances_per_task} must exceed valid_instances + test_instances")
  n_cls_novel = cfg.num_novel_tasks // 2
  n_cls_test = round(cfg.test_fraction * cfg.num_classification_tasks)
  train, test, novel = _class_sets(cfg, n_cls_test, cfg.num_classification_tasks - n_cls_test, n_cls_novel)
  tasks = [_classification_task(cfg, s, "train") for s in train]
  tasks += [_classification_task(cfg, s, "test") for s in test]
  tasks += [_classification_task(cfg, s, "novel", novelty="classes") for s in novel]
  tasks += _general_tasks(cfg, cfg.num_general_tasks, cfg.num_novel_tasks - n_cls_novel)
  return sorted(tasks, key=lambda t: t.name)


def steps_of(task: dod.Task) -> list[ops_lib.Step]:
  """The ops (with params) of a general task."""
  steps, kind = [], task.meta["kind"]
  for name, p in task.meta["ops"]:
    op = ops_lib.OPS[kind, name]
    steps.append((op, p))
    kind = op.out
  return steps


def solve(task: dod.Task, x: str) -> Optional[str]:
  """The output of a synthetic task for any input `x` of its family; None if the task rejects `x`."""
  if task.family == "classification":
    words = [w for w in (t.strip(".?!,").lower() for t in x.split()) if w in lex.WORDS]
    if len(words) != 1:
      return None
    return _label(words[0], task.classes)
  kind = task.meta["kind"]
  return ops_lib.apply(steps_of(task), x.split(ops_lib.SEPARATORS[kind]))
