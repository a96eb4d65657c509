"""The pretraining corpus of the project's LMs: documents built from a DoD, packed into fixed-length rows.

The LMs must (1) follow an instruction in the paper's format, (2) continue `Input: x\\nOutput:` when the
task is carried by what comes before (demonstrations, later a soft prompt), (3) say which task a set of
demonstrations shows, and (4) read and write the " | "-joined description lists of InSPEcT. One document
kind per ability, with these exact texts (`W` a wording of the task's instruction: the canonical one or a
paraphrase; `<s>`/`</s>` the BOS/EOS tokens):

  instruction   <s>W\\nInput: x1\\nOutput: y1[\\nInput: x2\\nOutput: y2 ...]</s>
                  k >= 1 examples after one instruction; the first is exactly the paper's prompt + target.
  few_shot      <s>Input: x1\\nOutput: y1\\nInput: x2\\nOutput: y2\\nInput: x3\\nOutput: y3\\nInput: x\\nOutput: y</s>
                  demonstrations then a query: `few_shot_prompt(demos, x)` + " y".
  describe      <s>Input: x1\\nOutput: y1\\n...\\nInstruction: W</s>
                  or, for classification, <s>...\\nSentence classification: c1, c2, c3, c4, c5</s>.
  inspect_list  <s>Instruction: W1 | Instruction: W2 | Instruction: W3</s>           (general tasks)
                <s>Sentence classification: c1, ..., c5 | Sentence classification: ...</s>  (classification)
                  items of distinct tasks of one family: the demonstrations of InSPEcT's prompts.
  input_only    <s>Input: x\\nOutput: y</s>   weight 0 by default (see below).
  copy          <s>Input: x1\\nCopy: x1\\nInput: x2\\nCopy: x2 ...</s>   inputs of the family's tasks, repeated:
                  practice in copying items from the context, which most general ops need (first, upper,
                  join_and, ...) and which small LMs learn late (an LM that cannot copy writes plausible
                  items that are not in the input). "Copy:" is not the task format, so it teaches no task.

The InSPEcT baseline builds its prompts from the same constants (`INSPECT_*`, `inspect_prompt`), and the
LM evaluation its few-shot prompts from `few_shot_prompt`, so the LMs are measured in the formats they read.

Loss mask: `loss_mask[b, t]` weighs the loss of predicting `tokens[b, t]` from the positions before it
(so `loss_mask[:, 0]` is 0). It is 1 on outputs, instruction wordings, class lists, the template tokens
("Input:", "\\n", " |", ...) and EOS; 0 on BOS, the wording that opens an instruction document (see
`loss_on_opening_instructions`), padding, inputs `x` (random lists and sentences: their
tokens are unpredictable, learning them spends capacity on nothing the tasks need) and on the first output
of a document whose context does not determine it (the first demonstration of few_shot and describe):
training on an output with no task evidence is exactly input-only training, which teaches the model to
guess the task from the input. For the same reason input_only documents are off: the project measures how
much the instruction (or soft prompt) matters, so the LM should not learn a task-marginal guess for
`Input: x\\nOutput:` (on the synthetic DoD the best such guess scores ~0.15 exact match, see
`dod.input_only_majority`).

Packing: each row holds whole documents, first fit (a document that does not fit waits for a later row
of the same batch while new ones fill the rest), padded with `<pad>`. Documents of a row
attend to each other (the decoder has no segment masking); every document starts with BOS, so the model
learns that a BOS resets the task, and a row's documents are of unrelated tasks. `segment_ids` (1, 2, ...
per document, 0 on padding) and `positions` (within each document) are returned for a trainer that masks
segments. On the default synthetic DoD documents are 52 (instruction), 57 (few_shot), 65 (copy), 81 (describe)
and 87 (inspect_list) tokens on average, at most ~130; at seq_len 256 a row holds ~4 and ~6% is padding; the
default mixture gives instruction documents 65% of the tokens, describe and few_shot 10% each, copy 8%,
inspect_list 7%. A batch of 64 x 256 takes ~5 ms (2 CPU cores).

No curriculum: every op of the general tasks occurs in many tasks of each batch, single ops are 18% of the
general tasks, and the model learns an op inside compositions as readily as alone; nothing suggests that
ordering the tasks by difficulty would pay for the extra knob.

Determinism: batch `step` of seed `seed` is a function of (tasks, tokenizer, config, seed, step) only: it
draws from `np.random.default_rng([seed, step])`, so a resumed run continues exactly with
`batches(batch_size, seed, start_step=step)`.

Only tasks of the translator's splits "train" and "test" and their instance split "train" are read:
novel tasks and held-out instances never enter the corpus.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import ml_collections
import numpy as np
import tokenizers

from translator.data import dod
from translator.data import tokenizer as tok_lib

# ---------------------------------------------------------------------------------------------------
# Formats (shared with the LM evaluation and the InSPEcT baseline).

EXAMPLE_SEPARATOR = "\n"  # between an instruction and an example, and between examples
INSTRUCTION_PREFIX = "Instruction:"  # before a wording of the instruction (describe, inspect lists)
INSPECT_SEPARATOR = " | "  # between the items of an InSPEcT description list
INSPECT_GENERAL_ITEM = INSTRUCTION_PREFIX + " {instruction}"  # "Instruction: Reverse the order of the words."
INSPECT_CLASSIFICATION_ITEM = "{description}: {classes}"  # "Sentence classification: red, fish, sea, tool, city"
INSPECT_CLASS_SEPARATOR = ", "
CLASSIFICATION_DESCRIPTION = "Sentence classification"  # the description of a task without meta["description"]
INSPECT_PLACEHOLDER = "x"  # InSPEcT's query item ends with placeholders " x x ... x" that get patched

COPY_PREFIX = "Copy:"  # copy documents: "Input: x\nCopy: x"
KINDS = ("instruction", "few_shot", "describe", "inspect_list", "input_only", "copy")
TASK_SPLITS = ("train", "test")  # the LM may see these tasks; never "novel"
INSTANCE_SPLIT = "train"  # the LM may see these instances; never "valid" or "test"


def example_text(x: str, y: str) -> str:
  """One demonstration: `Input: x\\nOutput: y` (the paper's prompt without instruction, and its target)."""
  return dod.format_prompt(None, x) + dod.format_target(y)


def few_shot_prompt(demos: Sequence[dod.Instance], x: str) -> str:
  """Demonstrations, then the query: the prompt of a few_shot document (and of the few-shot evaluation)."""
  return "".join(example_text(d.input, d.output) + EXAMPLE_SEPARATOR for d in demos) + dod.format_prompt(None, x)


def classification_description(task: dod.Task) -> str:
  return task.meta.get("description", CLASSIFICATION_DESCRIPTION)


def inspect_general_item(instruction: str) -> str:
  return INSPECT_GENERAL_ITEM.format(instruction=instruction)


def inspect_classification_item(classes: Sequence[str], description: str = CLASSIFICATION_DESCRIPTION) -> str:
  return INSPECT_CLASSIFICATION_ITEM.format(description=description, classes=INSPECT_CLASS_SEPARATOR.join(classes))


def inspect_prompt(items: Sequence[str], query_prefix: str, num_placeholders: int) -> str:
  """An InSPEcT prompt: demonstration items, then `query_prefix` (e.g. "Instruction:" or "Sentence
  classification:") and `num_placeholders` placeholders, all joined by INSPECT_SEPARATOR:
  "Instruction: p1 | Instruction: p2 | Instruction: p3 | Instruction: x x x x"."""
  query = query_prefix + (" " + INSPECT_PLACEHOLDER) * num_placeholders
  return INSPECT_SEPARATOR.join(list(items) + [query])


# ---------------------------------------------------------------------------------------------------
# Configuration.


def corpus_config() -> ml_collections.ConfigDict:
  """Defaults of the corpus; the pretraining config nests it (e.g. `config.corpus`)."""
  c = ml_collections.ConfigDict()
  c.seq_len = 256  # tokens per row; documents are ~20-130 tokens (~57 on average): ~4 whole ones per row
  # Probability of each document kind (normalized). Instruction following is what the acceptance
  # measures and what the translated prompts need: 70% of the documents, 65% of the tokens. few_shot
  # teaches the model to take the task from the context (what a soft prompt does, 10% of the tokens);
  # describe and inspect_list teach it to verbalise a task from examples and to read and write InSPEcT's
  # lists (10% and 7%); copy documents (8%) practise copying from the context. With copy documents and
  # without the opening-wording loss, the base LM after 1,000 of its steps scored 0.71 exact match on the
  # held-out classification tasks against 0.49 with neither, general tasks 0.24 both times (test
  # instances, 8 per task). input_only: off, see the module docstring.
  c.kinds = ml_collections.ConfigDict(dict(instruction=0.70, few_shot=0.10, describe=0.07, inspect_list=0.05,
                                           input_only=0.0, copy=0.08))
  c.general_share = 0.7  # of documents: general tasks (harder: 1-2 composed ops) vs classification
  c.canonical_prob = 0.5  # a wording is the canonical instruction with this probability, else a paraphrase
  c.instruction_shots = (1, 4)  # examples after one instruction, uniform in [lo, hi]
  c.few_shot_demos = 3  # demonstrations before the query (the few-shot evaluation uses 3)
  c.describe_demos = (3, 5)  # demonstrations before "Instruction:", uniform in [lo, hi]
  c.describe_classes_prob = 0.5  # a classification describe document ends in "Sentence classification: ..."
  c.inspect_items = (3, 4)  # items of an inspect_list document, uniform in [lo, hi]
  c.copy_items = (2, 4)  # inputs of a copy document, each repeated, uniform in [lo, hi]
  c.loss_on_inputs = False  # inputs are unpredictable; their loss only adds noise
  c.loss_on_instructions = True  # wordings and class lists: the model must be able to write them
  # The wording that opens an instruction document: nothing before it says which task comes, so its loss
  # only teaches the distribution of instructions, while its gradient (a few nats per token, most of the
  # loss once outputs are learned) competes with the outputs'. The wordings after demonstrations
  # (describe, inspect_list) keep their loss: there the context determines them.
  c.loss_on_opening_instructions = False
  c.loss_on_first_output = False  # the first output of a document without instruction is a pure guess
  c.task_splits = TASK_SPLITS
  c.max_waiting = 8  # documents that may wait for a later row while new ones fill the end of a row
  return c


# ---------------------------------------------------------------------------------------------------
# Random draws.


class _Draws:
  """Uniform draws from `np.random.default_rng([seed, step])`, a block at a time (fast in Python)."""

  def __init__(self, seed: int, step: int):
    if seed < 0 or step < 0:
      raise ValueError(f"seed={seed} and step={step} must be non-negative")
    self._rng = np.random.default_rng([seed, step])
    self._block: list[float] = []
    self._i = 0

  def uniform(self) -> float:
    if self._i == len(self._block):
      self._block = self._rng.random(2048).tolist()
      self._i = 0
    self._i += 1
    return self._block[self._i - 1]

  def below(self, n: int) -> int:
    return min(int(self.uniform() * n), n - 1)

  def between(self, lo_hi) -> int:
    lo, hi = lo_hi
    return lo + self.below(hi - lo + 1)

  def distinct(self, n: int, k: int) -> list[int]:
    """`k` distinct indices below `n`, in draw order."""
    if k > n:
      raise ValueError(f"cannot draw {k} distinct items from {n}")
    out = []
    while len(out) < k:
      i = self.below(n)
      if i not in out:
        out.append(i)
    return out

  def shuffled(self, items: Sequence) -> list:
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
      j = self.below(i + 1)
      items[i], items[j] = items[j], items[i]
    return items


# ---------------------------------------------------------------------------------------------------
# Documents.


@dataclasses.dataclass
class Document:
  """One document: token ids (BOS ... EOS), the loss weight of each token, its kind and task names."""

  kind: str
  tasks: tuple[str, ...]
  tokens: list[int] = dataclasses.field(default_factory=list)
  loss_mask: list[int] = dataclasses.field(default_factory=list)

  def add(self, ids: list[int], weight: int) -> None:
    self.tokens += ids
    self.loss_mask += [weight] * len(ids)


@dataclasses.dataclass
class _TaskTokens:
  """A task's material, tokenized once. Every piece starts at a pre-token boundary of the whole text (a
  space, a newline or a document start), so concatenated pieces are the tokenization of the document."""

  name: str
  family: str
  wordings: list[list[int]]  # "W" (at a document start), canonical first
  spaced_wordings: list[list[int]]  # " W" (after "Instruction:")
  inputs: list[list[int]]  # " x" of each train instance
  outputs: list[list[int]]  # " y"
  classes: list[list[int]]  # " c" of each class (classification)
  description: list[int]  # "Sentence classification:" (classification)
  spaced_description: list[int]  # " Sentence classification:" (after " |")


@dataclasses.dataclass(frozen=True)
class _Settings:
  """The config as plain Python values (ConfigDict attribute access is slow in the inner loop)."""

  canonical_prob: float
  instruction_shots: tuple[int, int]
  few_shot_demos: int
  describe_demos: tuple[int, int]
  describe_classes_prob: float
  inspect_items: tuple[int, int]
  w_inputs: int
  w_instructions: int
  w_opening: int
  w_first_output: int
  copy_items: tuple[int, int]
  max_waiting: int


class Corpus:
  """Pretraining batches from the non-novel tasks of a DoD.

      corpus = Corpus.from_dirs(dod_dir, tokenizer_dir, corpus_config())
      batch = corpus.batch(step, 64, seed=0)                # the same arrays for the same (step, seed)
      for batch in corpus.batches(64, seed=0, start_step=step): ...   # resume at `step`

  A batch is a dict of int32 arrays `[B, L]`: `tokens` (BOS/EOS around every document, `<pad>` after the
  last one), `loss_mask` (weight of predicting `tokens[:, t]` from `tokens[:, :t]`), `segment_ids` (1, 2, ...
  per document, 0 on padding) and `positions` (within each document); and `mask` (bool `[B, L]`, False on
  padding, which is only at the end of a row).

  `tokenizer`: the raw `tokenizers.Tokenizer` (`translator.data.tokenizer.load_tokenizer`) or a fast
  `transformers` tokenizer (`translator.lm.load_tokenizer`), whose backend is used.
  """

  def __init__(self, tasks: Sequence[dod.Task], tokenizer: tokenizers.Tokenizer,
               config: Optional[ml_collections.ConfigDict] = None):
    self.config = cfg = config or corpus_config()
    if "novel" in cfg.task_splits:
      raise ValueError("corpus task_splits include 'novel'; novel tasks must never be in pretraining")
    unknown = set(cfg.task_splits) - set(dod.TASK_SPLITS)
    if unknown:
      raise ValueError(f"corpus task_splits {sorted(unknown)} are not in {dod.TASK_SPLITS}")
    tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)  # a transformers fast tokenizer's core
    self.tokenizer = tokenizer
    self.bos_id, self.eos_id, self.pad_id = (tokenizer.token_to_id(t) for t in (tok_lib.BOS, tok_lib.EOS,
                                                                                tok_lib.PAD))
    if None in (self.bos_id, self.eos_id, self.pad_id):
      raise ValueError(f"the tokenizer lacks one of {tok_lib.BOS}, {tok_lib.EOS}, {tok_lib.PAD}")
    self.seq_len = int(cfg.seq_len)
    self._s = _Settings(
        canonical_prob=float(cfg.canonical_prob), instruction_shots=tuple(cfg.instruction_shots),
        few_shot_demos=int(cfg.few_shot_demos), describe_demos=tuple(cfg.describe_demos),
        describe_classes_prob=float(cfg.describe_classes_prob), inspect_items=tuple(cfg.inspect_items),
        w_inputs=int(cfg.loss_on_inputs), w_instructions=int(cfg.loss_on_instructions),
        w_opening=int(cfg.loss_on_instructions and cfg.loss_on_opening_instructions),
        w_first_output=int(cfg.loss_on_first_output), copy_items=tuple(cfg.copy_items),
        max_waiting=int(cfg.max_waiting))

    weights = {k: float(cfg.kinds.get(k, 0.0)) for k in KINDS}
    extra = set(cfg.kinds.keys()) - set(KINDS)
    if extra or min(weights.values()) < 0 or sum(weights.values()) <= 0:
      raise ValueError(f"corpus kinds {dict(cfg.kinds)} must be non-negative weights of {KINDS}, not all 0")
    total = sum(weights.values())
    self._kinds = [k for k in KINDS if weights[k] > 0]
    self._kind_cdf = np.cumsum([weights[k] / total for k in self._kinds]).tolist()

    selected = sorted((t for t in tasks if t.split in cfg.task_splits), key=lambda t: t.name)
    self.tasks = {f: [t for t in selected if t.family == f] for f in dod.FAMILIES}
    need_instances = max(self._s.instruction_shots[0], self._s.few_shot_demos + 1, self._s.describe_demos[1])
    for t in selected:
      n = len(t.instances.get(INSTANCE_SPLIT, ()))
      if n < need_instances:
        raise ValueError(f"task {t.name!r} has {n} {INSTANCE_SPLIT} instances; the corpus needs at least "
                         f"{need_instances} (lower few_shot_demos / describe_demos)")
    share = {"classification": 1.0 - cfg.general_share, "general": cfg.general_share}
    self._families = [f for f in dod.FAMILIES if self.tasks[f] and share[f] > 0]
    if not self._families:
      raise ValueError(f"no task of splits {tuple(cfg.task_splits)} and a family of positive share")
    self._family_cdf = (np.cumsum([share[f] for f in self._families]) /
                        sum(share[f] for f in self._families)).tolist()
    self._material = {f: self._tokenize(self.tasks[f]) for f in dod.FAMILIES}

    enc = self._encode
    self._newline, self._input, self._output = enc(EXAMPLE_SEPARATOR), enc("Input:"), enc("Output:")
    self._copy = enc(COPY_PREFIX)
    self._instruction, self._bar = enc(INSTRUCTION_PREFIX), enc(INSPECT_SEPARATOR.rstrip())
    self._bar_instruction = enc(INSPECT_SEPARATOR + INSTRUCTION_PREFIX)
    self._comma = enc(INSPECT_CLASS_SEPARATOR.rstrip())
    if self._bar_instruction != self._bar + enc(" " + INSTRUCTION_PREFIX):
      raise AssertionError(f"{INSPECT_SEPARATOR + INSTRUCTION_PREFIX!r} does not split after ' |'")
    self._masks = {}  # (len x, len y, first-output weight) -> loss mask of one example

  @classmethod
  def from_dirs(cls, dod_dir: str, tokenizer_dir: str, config: Optional[ml_collections.ConfigDict] = None):
    return cls(dod.read_dod(dod_dir), tok_lib.load_tokenizer(tokenizer_dir), config)

  # ----- Tokenizing the material once ------------------------------------------------------------------

  def _encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def _tokenize(self, tasks: Sequence[dod.Task]) -> list[_TaskTokens]:
    """Each distinct string once (general tasks share their inputs), in one batch call."""
    strings = set()
    for t in tasks:
      wordings = (t.instruction,) + t.paraphrases
      strings.update(wordings)
      strings.update(" " + w for w in wordings)
      strings.update(" " + i.input for i in t.instances[INSTANCE_SPLIT])
      strings.update(" " + i.output for i in t.instances[INSTANCE_SPLIT])
      strings.update(" " + c for c in t.classes)
      if t.family == "classification":
        strings.update((classification_description(t) + ":", " " + classification_description(t) + ":"))
    strings = sorted(strings)
    ids = {s: e.ids for s, e in zip(strings, self.tokenizer.encode_batch(strings, add_special_tokens=False))}
    out = []
    for t in tasks:
      wordings = (t.instruction,) + t.paraphrases
      train = t.instances[INSTANCE_SPLIT]
      desc = classification_description(t) + ":" if t.family == "classification" else ""
      out.append(_TaskTokens(
          name=t.name, family=t.family, wordings=[ids[w] for w in wordings],
          spaced_wordings=[ids[" " + w] for w in wordings], inputs=[ids[" " + i.input] for i in train],
          outputs=[ids[" " + i.output] for i in train], classes=[ids[" " + c] for c in t.classes],
          description=ids[desc] if desc else [], spaced_description=ids[" " + desc] if desc else []))
    return out

  # ----- One document -----------------------------------------------------------------------------------

  def _pick_family(self, d: _Draws) -> str:
    u = d.uniform()
    return next((f for f, c in zip(self._families, self._family_cdf) if u < c), self._families[-1])

  def _wording(self, d: _Draws, task: _TaskTokens, spaced: bool) -> list[int]:
    options = task.spaced_wordings if spaced else task.wordings
    if len(options) == 1 or d.uniform() < self._s.canonical_prob:
      return options[0]
    return options[1 + d.below(len(options) - 1)]

  def _example_mask(self, nx: int, ny: int, first: int) -> list[int]:
    key = (nx, ny, first)
    mask = self._masks.get(key)
    if mask is None:
      mask = ([1] * len(self._input) + [self._s.w_inputs] * nx + [1] * len(self._newline) +
              [1] * len(self._output) + [first] * ny)
      self._masks[key] = mask
    return mask

  def _examples(self, doc: Document, task: _TaskTokens, indices: Sequence[int], first_weight: int,
                budget: Optional[int] = None) -> None:
    """`Input: x\\nOutput: y` for each index, separated by newlines; stops before passing `budget` tokens."""
    nl = self._newline
    for n, i in enumerate(indices):
      x, y = task.inputs[i], task.outputs[i]
      tokens = self._input + x + nl + self._output + y
      if n:
        if budget is not None and len(doc.tokens) + len(nl) + len(tokens) + 1 > budget:
          break
        doc.tokens += nl
        doc.loss_mask += [1] * len(nl)
      doc.tokens += tokens
      doc.loss_mask += self._example_mask(len(x), len(y), first_weight if n == 0 else 1)

  def _class_list(self, doc: Document, d: _Draws, task: _TaskTokens, weight: int) -> None:
    for n, c in enumerate(d.shuffled(task.classes)):
      if n:
        doc.add(self._comma, weight)
      doc.add(c, weight)

  def _document(self, d: _Draws) -> Document:
    """A random document (see the module docstring for the kinds)."""
    s = self._s
    u = d.uniform()
    kind = next((k for k, c in zip(self._kinds, self._kind_cdf) if u < c), self._kinds[-1])

    if kind == "inspect_list":
      family = self._pick_family(d)
      pool = self._material[family]
      items = [pool[i] for i in d.distinct(len(pool), min(d.between(s.inspect_items), len(pool)))]
      doc = Document(kind, tuple(x.name for x in items), [self.bos_id], [0])
      for j, task in enumerate(items):
        if family == "general":
          doc.add(self._instruction if j == 0 else self._bar_instruction, 1)
          doc.add(self._wording(d, task, spaced=True), s.w_instructions)
        else:
          if j:
            doc.add(self._bar, 1)
          doc.add(task.description if j == 0 else task.spaced_description, 1)
          self._class_list(doc, d, task, s.w_instructions)
      doc.add([self.eos_id], 1)
      return doc

    pool = self._material[self._pick_family(d)]
    task = pool[d.below(len(pool))]
    doc = Document(kind, (task.name,), [self.bos_id], [0])
    n_train = len(task.inputs)
    if kind == "instruction":
      doc.add(self._wording(d, task, spaced=False), s.w_opening)
      doc.add(self._newline, 1)
      shots = min(d.between(s.instruction_shots), n_train)
      self._examples(doc, task, d.distinct(n_train, shots), 1, budget=self.seq_len)
    elif kind == "few_shot":
      self._examples(doc, task, d.distinct(n_train, s.few_shot_demos + 1), s.w_first_output)
    elif kind == "describe":
      self._examples(doc, task, d.distinct(n_train, d.between(s.describe_demos)), s.w_first_output)
      doc.add(self._newline, 1)
      if task.family == "classification" and d.uniform() < s.describe_classes_prob:
        doc.add(task.description, 1)
        self._class_list(doc, d, task, s.w_instructions)
      else:
        doc.add(self._instruction, 1)
        doc.add(self._wording(d, task, spaced=True), s.w_instructions)
    elif kind == "copy":  # inputs of other tasks of the family (`task`, drawn above, is not one of them)
      sources = []
      for n in range(d.between(s.copy_items)):
        other = pool[d.below(len(pool))]
        sources.append(other.name)
        x = other.inputs[d.below(len(other.inputs))]
        if n:
          doc.add(self._newline, 1)
        doc.add(self._input, 1)
        doc.add(x, s.w_inputs)
        doc.add(self._newline, 1)
        doc.add(self._copy, 1)
        doc.add(x, 1)
      doc.tasks = tuple(sources)
    else:  # input_only
      self._examples(doc, task, [d.below(n_train)], 1)
    doc.add([self.eos_id], 1)
    return doc

  def documents(self, step: int, count: int, seed: int = 0) -> list[Document]:
    """`count` documents of the stream of (seed, step): the documents batch `step` starts packing."""
    d = _Draws(seed, step)
    return [self._document(d) for _ in range(count)]

  # ----- Batches ------------------------------------------------------------------------------------------

  def batch(self, step: int, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch `step` of the stream `seed`: arrays `[batch_size, seq_len]` (see the class docstring).

    Packing: a row takes the documents waiting from earlier rows that fit, then new documents; a new one
    that does not fit waits (at most `max_waiting` wait, so the mixture is not skewed towards short
    documents); the row is closed when nothing fits and the waiting list is full. The documents still
    waiting after the last row are dropped (a few of ~4 * batch_size)."""
    d = _Draws(seed, step)
    length = self.seq_len
    max_waiting = self._s.max_waiting
    tokens = np.full((batch_size, length), self.pad_id, np.int32)
    loss_mask = np.zeros((batch_size, length), np.int32)
    segment_ids = np.zeros((batch_size, length), np.int32)
    positions = np.zeros((batch_size, length), np.int32)
    waiting: list[Document] = []
    for b in range(batch_size):
      row_tokens, row_loss, row_seg, row_pos = [], [], [], []
      while True:
        room = length - len(row_tokens)
        doc = next((w for w in waiting if len(w.tokens) <= room), None)
        if doc is not None:
          waiting.remove(doc)
        elif len(waiting) < max_waiting or not row_tokens:
          doc = self._document(d)
          if len(doc.tokens) > length:  # only with a tiny seq_len: cut it
            doc.tokens, doc.loss_mask = doc.tokens[:length], doc.loss_mask[:length]
          if len(doc.tokens) > room and row_tokens:
            waiting.append(doc)
            continue
        else:
          break
        n = len(doc.tokens)
        row_seg += [row_seg[-1] + 1 if row_seg else 1] * n
        row_tokens += doc.tokens
        row_loss += doc.loss_mask
        row_pos += range(n)
        if n == room:
          break
      n = len(row_tokens)
      tokens[b, :n] = row_tokens
      loss_mask[b, :n] = row_loss
      segment_ids[b, :n] = row_seg
      positions[b, :n] = row_pos
    return {"tokens": tokens, "loss_mask": loss_mask, "segment_ids": segment_ids, "positions": positions,
            "mask": segment_ids > 0}

  def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """The infinite stream `batch(step, batch_size, seed)` for step = start_step, start_step + 1, ..."""
    step = start_step
    while True:
      yield self.batch(step, batch_size, seed)
      step += 1

  # ----- Inspection ---------------------------------------------------------------------------------------

  def decode(self, ids: Sequence[int]) -> str:
    """Text of token ids, BOS/EOS/pad dropped."""
    specials = (self.bos_id, self.eos_id, self.pad_id)
    return self.tokenizer.decode([int(i) for i in ids if int(i) not in specials], skip_special_tokens=False)

  @staticmethod
  def row_documents(batch: dict[str, np.ndarray], row: int) -> list[np.ndarray]:
    """Token ids `[n]` of each document of one row of a batch."""
    seg = batch["segment_ids"][row]
    return [batch["tokens"][row][seg == s] for s in range(1, int(seg.max()) + 1)]
