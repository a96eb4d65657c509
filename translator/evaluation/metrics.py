"""Metrics shared by every method (translator, InSPEcT, nearest-token, gold): one implementation each.

  rouge_l        F-measure of ROUGE-L (`rouge-score`, Porter stemming), max over the references;
                 `rouge_l_pairwise` of every pair of a list of texts
  class_scores   recall / precision / F1 of a classification instruction against the task's gold classes
  similarity     cosine of all-MiniLM-L6-v2 sentence embeddings: translator/evaluation/minilm.py

Where a task has several references (paraphrases of its instruction), a prediction scores the maximum
over them (`max_over_references`). Aggregates are plain means over tasks.

Class scores. Both the gold classes and the text are normalised by `normalize`: lower-cased, every
punctuation character (Unicode category P*) replaced by a space, runs of whitespace collapsed to one space
and stripped at both ends ("  Non-Toxic. " -> "non toxic").

  recall     fraction of the (distinct, normalised) gold classes that the prediction mentions: the class
             occurs in the normalised prediction as a whole-word phrase.
  precision  fraction of the distinct items of the prediction's class list (`predicted_classes`) that are
             gold classes (exact match after normalisation); 0 when the list is empty.
  f1         their harmonic mean; 0 when both are 0.

The class list of a prediction (`predicted_classes`):

  1. Regions. With a ":" in the text, each ":" opens a region that runs to the next ":" or the end of its
     sentence (the first ".", "?" or "!" followed by whitespace or the end, or a newline); text before
     the first ":" is ignored. Without a ":" (the fallback), each sentence is a region.
  2. Candidates. In a region, a candidate list starts after each cue: the ":" that opens it, and each
     cue word ("as", "about", "from", "between", "among", "into", "is", "are", "be", "either", "of",
     "with"), and runs to the region's end. A region with no cue at all starts its one candidate at the
     last word before its first separator ("Red, fish or sea?"), or has none without a separator.
  3. Items. A candidate is split at the separators "," ";" "|" "/" and the words "or", "and", "and/or";
     items are normalised, a leading "either" is dropped, empty items and repeats go.
  4. Choice. The candidate with the most items; among those, the fewest words in all (the tightest:
     "Task: Tell whether it is about a, b" gives [a, b], not [tell whether it is about a, b]); among
     those, the one that starts last. No candidate with an item: the list is empty.

  "Classify the following sentence as: red, fish, sea, tool, city" -> [red, fish, sea, tool, city]
  "Possible classes: a, b, c. Classify the sentence."              -> [a, b, c]
  "Categorize the input as red, fish or sea."                      -> [red, fish, sea]   (no colon)
  "Decide whether the review is positive or negative."             -> [positive, negative] (no colon)
  "Summarize the text."                                            -> []

Known limits: a class name containing a separator ("rock and roll") is split (it still counts for
recall, which reads the whole text); without a colon, a prose enumeration with more items than the class
list ("You are given a sentence, a question and a context. Decide if it is true or false.") wins.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, Mapping, Sequence, Union

import numpy as np
from rouge_score import rouge_scorer

References = Union[str, Sequence[str]]

# One scorer for the whole process: building it loads the stemmer.
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _as_list(references: References) -> list[str]:
  refs = [references] if isinstance(references, str) else list(references)
  if not refs:
    raise ValueError("no references given: a prediction needs at least one reference to be scored")
  for r in refs:
    if not isinstance(r, str):
      raise TypeError(f"a reference must be a str, got {type(r).__name__}: {r!r}")
  return refs


def max_over_references(metric: Callable[[str, str], float], prediction: str,
                        references: References) -> float:
  """`max(metric(prediction, r) for r in references)`; `references` may be one string.

  >>> max_over_references(lambda p, r: float(p == r), "b", ["a", "b"])
  1.0
  """
  return max(float(metric(prediction, r)) for r in _as_list(references))


# ---------------------------------------------------------------------------------------------------
# ROUGE-L.


def _tokens(text: str) -> list[str]:
  """rouge-score's tokens of `text`: lower-cased [a-z0-9] words, Porter-stemmed."""
  return _ROUGE._tokenizer.tokenize(text)  # pylint: disable=protected-access


def _rouge_l_single(prediction: str, reference: str) -> float:
  return lcs_fmeasure(_tokens(reference), _tokens(prediction))  # rouge-score's score(target, prediction)


def rouge_l(prediction: str, references: References) -> float:
  """ROUGE-L F-measure with Porter stemming (`rouge-score`), max over `references`.

  rouge-score lower-cases and keeps only [a-z0-9] tokens, so punctuation and case do not count.

  >>> rouge_l("the cat sat", "The cat sat.")
  1.0
  >>> rouge_l("dogs bark", ["the cat sat", "a dog barks"])  # stems: dog bark / a dog bark
  0.8
  >>> rouge_l("", "anything")
  0.0
  """
  return max_over_references(_rouge_l_single, prediction, references)


def rouge_l_pairwise(texts: Sequence[str]) -> np.ndarray:
  """`[N, N]` float64: `rouge_l(texts[i], texts[j])` for every pair, each text tokenised once and each pair
  scored once (ROUGE-L F is symmetric). For N texts that is N tokenisations instead of 2 N^2.

  >>> rouge_l_pairwise(["the cat sat", "a cat sat down", ""]).round(4).tolist()
  [[1.0, 0.5714, 0.0], [0.5714, 1.0, 0.0], [0.0, 0.0, 0.0]]
  """
  tokens = [_tokens(t) for t in texts]
  out = np.zeros((len(texts), len(texts)), np.float64)
  for i, a in enumerate(tokens):
    for j in range(i, len(tokens)):
      out[i, j] = out[j, i] = lcs_fmeasure(tokens[j], a)
  return out


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
  """Length of the longest common subsequence of two token lists, bit-parallel (Hyyro 2004): one pass over `b`
  with `len(a)`-bit integers instead of rouge-score's table (the default's consensus matrices 4.8x faster)."""
  if not a or not b:
    return 0
  masks: dict[str, int] = {}
  for i, token in enumerate(a):
    masks[token] = masks.get(token, 0) | (1 << i)
  full = (1 << len(a)) - 1
  v = full
  for token in b:
    u = v & masks.get(token, 0)
    v = ((v + u) | (v - u)) & full
  return len(a) - bin(v).count("1")


def lcs_fmeasure(target: Sequence[str], prediction: Sequence[str]) -> float:
  """`rouge_scorer._score_lcs(target, prediction).fmeasure` of rouge-score, bit for bit, with `lcs_length`."""
  if not target or not prediction:
    return 0.0
  lcs = lcs_length(target, prediction)
  precision, recall = lcs / len(prediction), lcs / len(target)
  return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_l_batch(predictions: Sequence[str], references: Sequence[References]) -> np.ndarray:
  """`[N]` float64: `rouge_l` of each prediction against its own references."""
  _check_lengths(predictions, references)
  return np.array([rouge_l(p, r) for p, r in zip(predictions, references)], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# Class recall / precision / F1.

_SEPARATORS = re.compile(r"\s*(?:[,;|/]|\band/or\b|\bor\b|\band\b)\s*")
_SENTENCE_END = re.compile(r"[.?!](?=\s|$)|\n")
_CUES = ("as", "about", "from", "between", "among", "into", "is", "are", "be", "either", "of", "with")
_CUE = re.compile(r"\b(?:" + "|".join(_CUES) + r")\b", re.IGNORECASE)


def normalize(text: str) -> str:
  """Lower-case, punctuation (Unicode P*) to spaces, whitespace collapsed and stripped.

  >>> normalize("  Non-Toxic. ")
  'non toxic'
  >>> normalize("SPORTS\\tNews!")
  'sports news'
  """
  chars = (" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
  return " ".join("".join(chars).split())


def _regions(text: str) -> list[tuple[int, int, bool]]:
  """(start, end, opened by a colon) of each region (rule 1 of the module docstring)."""
  ends = [m.start() for m in _SENTENCE_END.finditer(text)] + [len(text)]
  if ":" not in text:
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
    return [(s, e, False) for s, e in zip(starts, ends)]
  colons = [m.end() for m in re.finditer(":", text)]
  return [(s, min([e for e in ends if e >= s] + [c - 1 for c in colons if c > s]), True) for s in colons]


def _items(segment: str) -> list[str]:
  out = []
  for raw in _SEPARATORS.split(segment):
    item = normalize(raw)
    if item.startswith("either "):
      item = item[len("either "):]
    if item and item not in out:
      out.append(item)
  return out


def predicted_classes(prediction: str) -> list[str]:
  """The normalised class list that an instruction names (rule in the module docstring).

  >>> predicted_classes("Classify the following sentence as: Red, fish; SEA, tool or city.")
  ['red', 'fish', 'sea', 'tool', 'city']
  >>> predicted_classes("Possible classes: a, b, c. Classify the sentence.")
  ['a', 'b', 'c']
  >>> predicted_classes("Tell whether the sentence is about red, fish or sea.")
  ['red', 'fish', 'sea']
  >>> predicted_classes("Red, fish or sea?")
  ['red', 'fish', 'sea']
  >>> predicted_classes("Summarize the text.")
  []
  """
  best, best_key = [], None
  for start, end, colon in _regions(prediction):
    region = prediction[start:end]
    starts = ([0] if colon else []) + [m.end() for m in _CUE.finditer(region)]
    first_sep = _SEPARATORS.search(region)
    if not starts and first_sep:
      head = list(re.finditer(r"\S+", region[:first_sep.start()]))
      starts = [head[-1].start()] if head else [first_sep.start()]
    for s in starts:
      items = _items(region[s:])
      key = (len(items), -sum(len(i.split()) for i in items), start + s)
      if items and (best_key is None or key > best_key):
        best, best_key = items, key
  return best


def _mentions(text: str, phrase: str) -> bool:
  return f" {phrase} " in f" {text} "


def class_scores(prediction: str, classes: Sequence[str]) -> dict[str, float]:
  """Recall, precision and F1 of `prediction` against the gold `classes` (rule in the module docstring).

  >>> s = class_scores("Classify the sentence as: red, fish, sea, tool, city", ["Red", "fish", "boat"])
  >>> round(s["recall"], 4), round(s["precision"], 4), round(s["f1"], 4)
  (0.6667, 0.4, 0.5)
  >>> class_scores("", ["red"])
  {'recall': 0.0, 'precision': 0.0, 'f1': 0.0}
  """
  gold = []
  for c in classes:
    n = normalize(c)
    if n and n not in gold:
      gold.append(n)
  if not gold:
    raise ValueError(f"no gold classes to score against (got {list(classes)!r})")
  text = normalize(prediction)
  recall = sum(_mentions(text, g) for g in gold) / len(gold)
  items = predicted_classes(prediction)
  precision = sum(i in gold for i in items) / len(items) if items else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"recall": float(recall), "precision": float(precision), "f1": float(f1)}


def class_scores_batch(predictions: Sequence[str], classes: Sequence[Sequence[str]]) -> list[dict[str, float]]:
  """`class_scores` of each prediction against its own task's classes."""
  _check_lengths(predictions, classes)
  return [class_scores(p, c) for p, c in zip(predictions, classes)]


def mean_scores(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """Mean of each key over tasks (so the aggregate F1 is the mean of per-task F1s, not F1 of the means).

  >>> mean_scores([{"recall": 1.0, "f1": 0.5}, {"recall": 0.0, "f1": 0.25}])
  {'recall': 0.5, 'f1': 0.375}
  """
  if not scores:
    raise ValueError("no scores to average")
  keys = list(scores[0])
  for i, s in enumerate(scores):
    if list(s) != keys:
      raise ValueError(f"scores[{i}] has keys {sorted(s)}, scores[0] has {sorted(keys)}")
  return {k: float(np.mean([s[k] for s in scores])) for k in keys}


def mean_class_scores(predictions: Sequence[str], classes: Sequence[Sequence[str]]) -> dict[str, float]:
  """Mean recall, precision and F1 over tasks: one prediction and one gold class list per task."""
  return mean_scores(class_scores_batch(predictions, classes))


def task_groups(where: Mapping[str, tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
  """{(task split, group): task names} for `where` = {task: (split, family)}; group is "all" or the family.
  Aggregates over tasks are means over these groups.

  >>> task_groups({"a": ("test", "general"), "b": ("test", "classification")})[("test", "all")]
  ['a', 'b']
  """
  groups: dict[tuple[str, str], list[str]] = {}
  for task, (split, family) in where.items():
    groups.setdefault((split, "all"), []).append(task)
    groups.setdefault((split, family), []).append(task)
  return dict(sorted(groups.items()))


def _check_lengths(predictions: Sequence[str], references: Sequence) -> None:
  if isinstance(predictions, str):
    raise TypeError("predictions must be a sequence of strings, got one str")
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} reference entries")
