"""Operations of the synthetic DoD's general tasks, with the phrases that describe them.

A general task applies one op, or two ops in sequence, to a short list of items of one kind (3-5 in the default DoD):
  words    lexicon words, written "cow, tulip, hammer"
  digits   distinct digits 0-9, written "4 7 1"
  letters  distinct lowercase letters, written "b q a"
An op is a *transform* when its output is again a list (`Op.out` is a kind) and a *value* op otherwise
(`Op.out == VALUE`); only a transform can be the first of two ops. An op returns None when the input is
not acceptable (a filter that would keep nothing or everything, "the bird" without exactly one bird,
...); tasks only use inputs every op of theirs accepts.

Op names are shared across kinds where the operation is the same ("reverse", "first", "count", ...),
so a task's *signature*, the tuple of its op names, does not depend on the kind; held-out tasks are
chosen by signature.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Union

from translator.data import synthetic_lexicon as lex

KINDS = ("words", "digits", "letters")
VALUE = "value"
NOUNS = {"words": ("word", "words"), "digits": ("number", "numbers"), "letters": ("letter", "letters")}
SEPARATORS = {"words": ", ", "digits": " ", "letters": " "}

Output = Union[list, str, None]


@dataclasses.dataclass(frozen=True)
class Op:
  """One operation.

  name: shared across kinds for the same operation.
  kind: the kind of list it reads.
  out: the kind of list it writes, or VALUE.
  phrases: imperative phrases describing it (the first is canonical); placeholders `{n}`/`{ns}` (the
    kind's noun), and the param's fields (see `param_fields`).
  fn: (items, param) -> list, str, or None when the input is not acceptable.
  params: the values of its parameter; ("",) when it has none.
  param_kind: "category" | "letter" | "number" | "".
  reorder_only: the output is a permutation of the input (reverse, sort).
  order_free: the output does not depend on the input's order (count, max, sort, ...).
  length_preserving: the output has as many items as the input.
  """

  name: str
  kind: str
  out: str
  phrases: tuple[str, ...]
  fn: Callable[[list, str], Output]
  params: tuple[str, ...] = ("",)
  param_kind: str = ""
  reorder_only: bool = False
  order_free: bool = False
  length_preserving: bool = False

  @property
  def is_transform(self) -> bool:
    return self.out != VALUE

  def phrase(self, index: int, param: str) -> str:
    n, ns = NOUNS[self.kind]
    return self.phrases[index].format(n=n, ns=ns, **param_fields(self.param_kind, param))


def param_fields(param_kind: str, param: str) -> dict[str, str]:
  if param_kind == "category":
    c = lex.CATEGORIES[param]
    return dict(name=c.name, is_=c.is_, are=c.are, are_not=c.are_not, plural=c.plural)
  if param_kind == "letter":
    return dict(x=param)
  if param_kind == "number":
    return dict(k=param)
  return {}


# ---------------------------------------------------------------------------------------------------
# Functions. Items are strings; digit ops read them as integers.


def _filter(keep: Callable[[str], bool]):
  def fn(xs, p):
    r = [x for x in xs if keep(x, p)]
    return r if 0 < len(r) < len(xs) else None
  return fn


def _at_least(n: int, f: Callable[[list, str], Output]):
  return lambda xs, p: f(xs, p) if len(xs) >= n else None


def _ints(f):
  return lambda xs, p: f([int(x) for x in xs], p)


def _the_cat(xs, p):
  r = [w for w in xs if p in lex.WORDS[w]]
  return r[0] if len(r) == 1 else None


def _shift(step: int, forbidden: str):
  def fn(xs, p):
    if any(x.lower() == forbidden for x in xs):
      return None
    return [chr(ord(x) + step) for x in xs]
  return fn


def _lower_key(x):
  return x.lower()


_CATEGORY_NAMES = tuple(lex.CATEGORIES)
# The most frequent first letters of the lexicon (ties by letter), for "words starting with x".
_FIRST_LETTERS = tuple(sorted(
    {w[0] for w in lex.WORDS}, key=lambda c: (-sum(w[0] == c for w in lex.WORDS), c)))[:8]

# ---------------------------------------------------------------------------------------------------
# Phrases shared by the three kinds.

_REVERSE = ("reverse the order of the {ns}", "write the {ns} in reverse order", "list the {ns} backwards",
            "give the {ns} from last to first", "turn the list of {ns} around",
            "put the {ns} in the opposite order")
_SORT_ALPHA = ("sort the {ns} alphabetically", "put the {ns} in alphabetical order",
               "arrange the {ns} from A to Z", "order the {ns} alphabetically",
               "list the {ns} in alphabetical order", "sort the list of {ns} by the alphabet")
_DROP_FIRST = ("remove the first {n}", "drop the first {n}", "delete the first {n} of the list",
               "leave out the first {n}", "keep all {ns} except the first", "skip the first {n}")
_DROP_LAST = ("remove the last {n}", "drop the last {n}", "delete the last {n} of the list",
              "leave out the last {n}", "keep all {ns} except the last", "skip the last {n}")
_FIRST = ("return the first {n}", "give the first {n} of the list", "output the {n} that comes first",
          "write down the first {n}", "take the first {n}", "pick the first {n} in the list")
_LAST = ("return the last {n}", "give the last {n} of the list", "output the {n} that comes last",
         "write down the last {n}", "take the last {n}", "pick the final {n} in the list")
_SECOND = ("return the second {n}", "give the second {n} of the list", "output the {n} in second place",
           "write down the second {n}", "take the second {n}", "pick the {n} that comes second")
_COUNT = ("count the {ns}", "return how many {ns} there are", "give the number of {ns}",
          "say how many {ns} are in the list", "output the length of the list",
          "tell how many {ns} the list has")
_ALPHA_FIRST = ("return the {n} that comes first in alphabetical order", "give the alphabetically first {n}",
                "find the {n} that is first in the alphabet", "output the earliest {n} in alphabetical order",
                "pick the {n} closest to the start of the alphabet", "write the {n} that sorts first alphabetically")
_ALPHA_LAST = ("return the {n} that comes last in alphabetical order", "give the alphabetically last {n}",
               "find the {n} that is last in the alphabet", "output the latest {n} in alphabetical order",
               "pick the {n} closest to the end of the alphabet", "write the {n} that sorts last alphabetically")


def _generic(kind: str) -> list[Op]:
  sort_key = (lambda x: int(x)) if kind == "digits" else _lower_key
  ops = [
      Op("reverse", kind, kind, _REVERSE, lambda xs, p: xs[::-1], reorder_only=True, length_preserving=True),
      Op("drop_first", kind, kind, _DROP_FIRST, _at_least(2, lambda xs, p: xs[1:])),
      Op("drop_last", kind, kind, _DROP_LAST, _at_least(2, lambda xs, p: xs[:-1])),
      Op("first", kind, VALUE, _FIRST, lambda xs, p: xs[0]),
      Op("last", kind, VALUE, _LAST, lambda xs, p: xs[-1]),
      Op("second", kind, VALUE, _SECOND, _at_least(2, lambda xs, p: xs[1])),
      Op("count", kind, VALUE, _COUNT, lambda xs, p: str(len(xs)), order_free=True),
  ]
  if kind != "digits":
    ops += [
        Op("sort", kind, kind, _SORT_ALPHA, lambda xs, p: sorted(xs, key=sort_key), reorder_only=True,
           order_free=True, length_preserving=True),
        Op("alpha_first", kind, VALUE, _ALPHA_FIRST, _at_least(2, lambda xs, p: min(xs, key=sort_key)),
           order_free=True),
        Op("alpha_last", kind, VALUE, _ALPHA_LAST, _at_least(2, lambda xs, p: max(xs, key=sort_key)),
           order_free=True),
    ]
  return ops


def _words() -> list[Op]:
  cat = dict(params=_CATEGORY_NAMES, param_kind="category")
  return _generic("words") + [
      Op("keep_cat", "words", "words",
         ("keep only the words that {are}", "remove the words that {are_not}", "keep the {plural} and drop the rest",
          "select the words that {are}", "filter the list to the {plural}", "list only the {plural}"),
         _filter(lambda w, p: p in lex.WORDS[w]), **cat),
      Op("drop_cat", "words", "words",
         ("remove the words that {are}", "keep only the words that {are_not}", "delete the {plural} from the list",
          "drop every word that {is_}", "filter out the {plural}", "list the words except the {plural}"),
         _filter(lambda w, p: p not in lex.WORDS[w]), **cat),
      Op("keep_letter", "words", "words",
         ("keep only the words that start with {x}", "remove the words that do not start with {x}",
          "select the words beginning with {x}", "list only the words whose first letter is {x}",
          "filter the list to words starting with {x}", "keep the words that begin with the letter {x}"),
         _filter(lambda w, p: w[0] == p), params=_FIRST_LETTERS, param_kind="letter"),
      Op("first_letters", "words", "letters",
         ("take the first letter of each word", "write the first letter of every word",
          "replace each word by its first letter", "list the initial letters of the words",
          "give the first letter of each word", "turn each word into its first letter"),
         lambda xs, p: [w[0] for w in xs], length_preserving=True),
      Op("count_cat", "words", VALUE,
         ("count the words that {are}", "return how many words {are}", "give the number of {plural}",
          "say how many of the words {are}", "count the {plural} in the list", "tell how many {plural} there are"),
         lambda xs, p: str(sum(p in lex.WORDS[w] for w in xs)), order_free=True, **cat),
      Op("the_cat", "words", VALUE,
         ("return the word that {is_}", "find the word that {is_}", "give the only word that {is_}",
          "output the one word that {is_}", "pick the word that {is_}", "name the word in the list that {is_}"),
         _the_cat, order_free=True, **cat),
      Op("join_and", "words", VALUE,
         ('join the words with "and"', 'connect the words using the word "and"',
          'write the words separated by "and"', 'put "and" between the words', 'link the words with "and"',
          'combine the words into one phrase with "and"'),
         _at_least(2, lambda xs, p: " and ".join(xs))),
      Op("join_semicolon", "words", VALUE,
         ("separate the words with semicolons", 'join the words with ";"', "write the words separated by semicolons",
          "put a semicolon between the words", "list the words with semicolons between them",
          "replace the commas with semicolons"),
         _at_least(2, lambda xs, p: "; ".join(xs))),
      Op("numbered", "words", VALUE,
         ("number the words", "write the words as a numbered list", "put a number before each word",
          "number each word starting from 1", "make a numbered list of the words",
          "label the words 1, 2, 3 and so on"),
         _at_least(2, lambda xs, p: " ".join(f"{i}. {w}" for i, w in enumerate(xs, 1)))),
  ]


def _digits() -> list[Op]:
  d = "digits"
  return _generic(d) + [
      Op("sort", d, d,
         ("sort the numbers from smallest to largest", "put the numbers in increasing order",
          "arrange the numbers in ascending order", "order the numbers from low to high",
          "list the numbers from the smallest up", "sort the list of numbers in increasing order"),
         lambda xs, p: sorted(xs, key=int), reorder_only=True, order_free=True, length_preserving=True),
      Op("sort_desc", d, d,
         ("sort the numbers from largest to smallest", "put the numbers in decreasing order",
          "arrange the numbers in descending order", "order the numbers from high to low",
          "list the numbers from the largest down", "sort the list of numbers in decreasing order"),
         lambda xs, p: sorted(xs, key=int, reverse=True), reorder_only=True, order_free=True,
         length_preserving=True),
      Op("add", d, d,
         ("add {k} to each number", "increase every number by {k}", "add {k} to every number in the list",
          "raise each number by {k}", "make each number {k} larger", "write each number plus {k}"),
         _ints(lambda xs, p: [str(x + int(p)) for x in xs]), params=("1", "2", "3"), param_kind="number",
         length_preserving=True),
      Op("double", d, d,
         ("double each number", "multiply every number by 2", "write each number times two",
          "make each number twice as big", "double every number in the list", "replace each number by its double"),
         _ints(lambda xs, p: [str(2 * x) for x in xs]), length_preserving=True),
      Op("keep_even", d, d,
         ("keep only the even numbers", "remove the odd numbers", "select the even numbers",
          "list only the even numbers", "filter the list to the even numbers", "drop every odd number"),
         _filter(lambda x, p: int(x) % 2 == 0)),
      Op("keep_odd", d, d,
         ("keep only the odd numbers", "remove the even numbers", "select the odd numbers",
          "list only the odd numbers", "filter the list to the odd numbers", "drop every even number"),
         _filter(lambda x, p: int(x) % 2 == 1)),
      Op("keep_gt", d, d,
         ("keep only the numbers greater than {k}", "remove the numbers that are not greater than {k}",
          "select the numbers larger than {k}", "list only the numbers above {k}",
          "filter the list to numbers bigger than {k}", "drop every number that is {k} or less"),
         _filter(lambda x, p: int(x) > int(p)), params=("3", "4", "5", "6"), param_kind="number"),
      Op("max", d, VALUE,
         ("return the largest number", "give the biggest number", "find the maximum",
          "output the highest number", "pick the largest value in the list", "write the greatest number"),
         _at_least(2, _ints(lambda xs, p: str(max(xs)))), order_free=True),
      Op("min", d, VALUE,
         ("return the smallest number", "give the lowest number", "find the minimum",
          "output the least number", "pick the smallest value in the list", "write the tiniest number"),
         _at_least(2, _ints(lambda xs, p: str(min(xs)))), order_free=True),
      Op("sum", d, VALUE,
         ("add up the numbers", "return the sum of the numbers", "give the total of the numbers",
          "compute the sum", "output what the numbers add up to", "write the sum of all the numbers"),
         _ints(lambda xs, p: str(sum(xs)) if 2 <= len(xs) <= 3 else None), order_free=True),
      Op("range", d, VALUE,
         ("return the difference between the largest and the smallest number",
          "subtract the smallest number from the largest", "give the range of the numbers",
          "compute the largest number minus the smallest",
          "output how far apart the largest and smallest numbers are", "write the maximum minus the minimum"),
         _at_least(2, _ints(lambda xs, p: str(max(xs) - min(xs)))), order_free=True),
      Op("count_even", d, VALUE,
         ("count the even numbers", "return how many numbers are even", "give the number of even numbers",
          "say how many even numbers there are", "count how many of the numbers are even",
          "tell how many even numbers the list has"),
         _ints(lambda xs, p: str(sum(x % 2 == 0 for x in xs))), order_free=True),
  ]


def _letters() -> list[Op]:
  l = "letters"

  def vowel(x, p):
    return x.lower() in lex.VOWELS

  return _generic(l) + [
      Op("upper", l, l,
         ("write the letters in uppercase", "capitalize every letter", "turn each letter into a capital letter",
          "make all the letters uppercase", "convert the letters to capitals", "change every letter to uppercase"),
         lambda xs, p: [x.upper() for x in xs] if all(x.islower() for x in xs) else None,
         length_preserving=True),
      Op("next", l, l,
         ("replace each letter with the next letter of the alphabet",
          "shift every letter one step forward in the alphabet", "write the letter after each letter",
          "move each letter forward by one", "give the following letter for each letter",
          "advance every letter by one in the alphabet"),
         _shift(1, "z"), length_preserving=True),
      Op("prev", l, l,
         ("replace each letter with the previous letter of the alphabet",
          "shift every letter one step back in the alphabet", "write the letter before each letter",
          "move each letter back by one", "give the preceding letter for each letter",
          "step every letter back by one in the alphabet"),
         _shift(-1, "a"), length_preserving=True),
      Op("keep_vowels", l, l,
         ("keep only the vowels", "remove the consonants", "select the vowels", "list only the vowels",
          "filter the letters to the vowels", "drop every consonant"),
         _filter(vowel)),
      Op("count_vowels", l, VALUE,
         ("count the vowels", "return how many vowels there are", "give the number of vowels",
          "say how many of the letters are vowels", "count how many vowels the list has",
          "tell how many vowels appear"),
         lambda xs, p: str(sum(vowel(x, p) for x in xs)), order_free=True),
  ]


OPS: dict[tuple[str, str], Op] = {(op.kind, op.name): op for op in _words() + _digits() + _letters()}

# Sentence frames. A single op: `{A}` is its phrase capitalized, `{a}` as is, `{ns}` the input's noun.
SINGLE_FRAMES = ("{A}.", "Your task: {a}.", "Given a list of {ns}, {a}.", "In this task, {a}.", "Please {a}.",
                 "{A} and write the result.")
# Two ops: `{a}`/`{A}` the first, `{b}` the second.
PAIR_FRAMES = ("{A}, then {b}.", "First {a}, and then {b}.", "{A}. After that, {b}.", "{A} and then {b}.",
               "Given a list of {ns}, {a}; then {b}.", "Do two steps: {a}, then {b}.",
               "In this task, first {a}; next, {b}.")

Step = tuple[Op, str]  # an op and its param


def compatible(first: Op, second: Op) -> bool:
  """Whether `second` after `first` makes a task that is neither ill-typed nor a disguised single op."""
  if not first.is_transform or second.kind != first.out or first.name == second.name:
    return False
  if first.reorder_only and (second.order_free or second.reorder_only):
    return False  # e.g. reverse then max is max, sort_desc then reverse is sort
  if {first.name, second.name} == {"next", "prev"}:
    return False  # the identity
  if first.length_preserving and second.name == "count":
    return False
  return first.param_kind not in ("category", "letter") or second.param_kind not in ("category", "letter")


def apply(steps: Sequence[Step], items: list) -> Optional[str]:
  """The task's output for `items`, formatted; None when an op does not accept its input."""
  value, kind = items, steps[0][0].kind
  for op, param in steps:
    value = op.fn(value, param)
    if value is None:
      return None
    kind = op.out
  return SEPARATORS[kind].join(value) if kind != VALUE else value


def describe(steps: Sequence[Step], frame: int, phrases: Sequence[int]) -> str:
  """The instruction for `steps` with the given frame and phrase indices (all 0: canonical)."""
  texts = [op.phrase(i, p) for (op, p), i in zip(steps, phrases)]
  ns = NOUNS[steps[0][0].kind][1]
  a = texts[0]
  fields = dict(a=a, A=a[0].upper() + a[1:], ns=ns)
  if len(steps) == 1:
    return SINGLE_FRAMES[frame].format(**fields)
  return PAIR_FRAMES[frame].format(b=texts[1], **fields)
