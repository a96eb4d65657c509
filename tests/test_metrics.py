"""ROUGE-L and class recall/precision/F1: known values, normalisation, the class-list rule and its fallback."""

import doctest

import numpy as np
import pytest
from rouge_score import rouge_scorer

from translator.evaluation import metrics


def test_docstring_examples():
  assert doctest.testmod(metrics).failed == 0


def test_rouge_l_known_values():
  assert metrics.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
  assert metrics.rouge_l("Classify the sentence.", "classify THE sentence") == 1.0  # case, punctuation
  assert metrics.rouge_l("red fish", "blue boat") == 0.0
  assert metrics.rouge_l("", "blue boat") == 0.0
  # LCS "the cat the mat": 4 of 4 and 6 tokens, P = 1, R = 2/3, F = 0.8.
  assert metrics.rouge_l("the cat the mat", "the cat sat on the mat") == pytest.approx(0.8)
  # LCS "cat mat": 2 of 3 and 6 tokens, P = 2/3, R = 1/3, F = 4/9.
  assert metrics.rouge_l("cat dog mat", "the cat sat on the mat") == pytest.approx(4 / 9)


def test_rouge_l_stems():
  assert metrics.rouge_l("running dogs", "runs dog") == 1.0  # run dog / run dog
  assert metrics.rouge_l("classified sentences", "classify the sentence") == pytest.approx(0.8)


def test_rouge_l_max_over_references():
  refs = ["blue boat", "the cat sat", "cat"]
  assert metrics.rouge_l("the cat sat", refs) == 1.0
  assert metrics.rouge_l("a cat", refs) == pytest.approx(max(metrics.rouge_l("a cat", r) for r in refs))
  assert metrics.rouge_l("a cat", refs) == pytest.approx(2 / 3)  # against "cat": P 1/2, R 1
  with pytest.raises(ValueError, match="no references"):
    metrics.rouge_l("a", [])
  np.testing.assert_allclose(metrics.rouge_l_batch(["the cat sat", "x"], [refs, "y"]), [1.0, 0.0])


def test_rouge_l_pairwise_is_rouge_l_of_every_pair():
  texts = ["the cat sat on the mat", "Running dogs!", "the cat the mat", "", "runs dog", "cat dog mat"]
  pairs = metrics.rouge_l_pairwise(texts)
  assert pairs.shape == (6, 6)
  assert pairs.tolist() == [[metrics.rouge_l(a, b) for b in texts] for a in texts]  # bit for bit, both orders


def test_max_over_references_is_generic():
  length_gap = lambda p, r: -abs(len(p) - len(r))
  assert metrics.max_over_references(length_gap, "abc", ["a", "abcd", "abcdefg"]) == -1.0
  assert metrics.max_over_references(length_gap, "abc", "abc") == 0.0


def test_normalize():
  assert metrics.normalize("  Non-Toxic.  ") == "non toxic"
  assert metrics.normalize("«Sports»\t\nNEWS!!") == "sports news"
  assert metrics.normalize("") == ""


@pytest.mark.parametrize("prediction, classes", [
    ("Classify the following sentence as: red, fish, sea, tool, city", ["red", "fish", "sea", "tool", "city"]),
    ("Classify the following sentence as: Red,FISH ,  sea.; tool!, (city)", ["red", "fish", "sea", "tool", "city"]),
    ("Label the sentence with one of the following classes: red, fish, sea, tool or city.",
     ["red", "fish", "sea", "tool", "city"]),
    ("Possible classes: red, fish, sea, tool, city. Classify the sentence.", ["red", "fish", "sea", "tool", "city"]),
    ("Which of these classes does the sentence belong to: red, fish and sea?", ["red", "fish", "sea"]),
    ("Answer: either yes or no", ["yes", "no"]),
    ("Classify as: positive, negative, or neutral", ["positive", "negative", "neutral"]),
    ("Classify as: a, b, c. Then give one of them with a reason, an explanation and a score.", ["a", "b", "c"]),
    ("Task: Tell whether the sentence is about red, fish or sea.", ["red", "fish", "sea"]),
    ("You are given a sentence, a question and a context. Answer with: yes or no.", ["yes", "no"]),
    ("Classes: red, fish. Output: the label", ["red", "fish"]),
    # No colon: the list after the last cue word, or from the last word before the first separator.
    ("Categorize the input as red, fish, sea, tool or city.", ["red", "fish", "sea", "tool", "city"]),
    ("Tell whether the sentence is about red, fish or sea.", ["red", "fish", "sea"]),
    ("Decide whether the review is positive or negative.", ["positive", "negative"]),
    ("Read the sentence and answer with one of red, fish, sea", ["red", "fish", "sea"]),
    ("Red, fish or sea?", ["red", "fish", "sea"]),
    ("Label the sentence as positive.", ["positive"]),
    ("Summarize the text", []),
    ("", []),
])
def test_predicted_classes(prediction, classes):
  assert metrics.predicted_classes(prediction) == classes


def test_class_scores_perfect_and_variants():
  gold = ["red", "fish", "sea", "tool", "city"]
  for prediction in ["Classify the following sentence as: red, fish, sea, tool, city",
                     "CLASSIFY THE FOLLOWING SENTENCE AS: Red; Fish; Sea; Tool; City.",
                     "classify the following sentence as:red,fish,sea,tool,city",
                     "Classify the following sentence as:   red ,  fish , sea , tool , city   "]:
    assert metrics.class_scores(prediction, gold) == {"recall": 1.0, "precision": 1.0, "f1": 1.0}
  # Gold classes are normalised too.
  assert metrics.class_scores("Classify as: non-toxic, toxic", [" Non Toxic ", "TOXIC."])["f1"] == 1.0


def test_class_scores_partial():
  s = metrics.class_scores("Classify the sentence as: red, fish, boat, car", ["red", "fish", "sea", "tool", "city"])
  assert s["recall"] == pytest.approx(2 / 5)
  assert s["precision"] == pytest.approx(2 / 4)
  assert s["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)


def test_recall_is_whole_word_mentions_anywhere():
  gold = ["red", "sea"]
  # "sea" is mentioned outside the list; "redder" and "seaside" are not "red"/"sea".
  s = metrics.class_scores("Think of the sea, then classify as: red, blue", gold)
  assert s["recall"] == 1.0 and s["precision"] == 0.5
  assert metrics.class_scores("Classify as: redder, seaside", gold)["recall"] == 0.0


def test_class_scores_no_colon_fallback():
  s = metrics.class_scores("Decide whether the review is Positive or negative.", ["positive", "negative", "neutral"])
  assert s == pytest.approx({"recall": 2 / 3, "precision": 1.0, "f1": 0.8})
  # No list at all: the mention still counts for recall; nothing is listed, so precision is 0.
  s = metrics.class_scores("Write something about the sea", ["sea", "red"])
  assert metrics.predicted_classes("Write something about the sea") == ["the sea"]
  assert s == {"recall": 0.5, "precision": 0.0, "f1": 0.0}


def test_class_scores_empty_prediction():
  assert metrics.class_scores("", ["red", "fish"]) == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
  assert metrics.class_scores("   ...  ", ["red", "fish"]) == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
  with pytest.raises(ValueError, match="no gold classes"):
    metrics.class_scores("Classify as: red", [" ", "!"])


def test_aggregate_is_the_mean_over_tasks():
  predictions = ["Classify as: red, fish", "Classify as: sea, boat", ""]
  classes = [["red", "fish"], ["sea", "tool"], ["city"]]
  per_task = metrics.class_scores_batch(predictions, classes)
  assert [s["f1"] for s in per_task] == [1.0, 0.5, 0.0]
  mean = metrics.mean_class_scores(predictions, classes)
  assert mean == pytest.approx({"recall": 0.5, "precision": 0.5, "f1": 0.5})
  with pytest.raises(ValueError, match="2 predictions but 3"):
    metrics.class_scores_batch(predictions[:2], classes)


def test_lcs_fmeasure_is_rouge_scores_bit_for_bit():
  """The bit-parallel LCS against rouge-score's own table on random token lists with many repeats."""
  rng = np.random.default_rng(0)
  for _ in range(3000):
    a, b = (list(rng.choice(list("abcdef"), size=rng.integers(0, 25))) for _ in range(2))
    assert metrics.lcs_length(a, b) == rouge_scorer._lcs_table(a, b)[-1][-1]  # pylint: disable=protected-access
    assert metrics.lcs_fmeasure(a, b) == rouge_scorer._score_lcs(a, b).fmeasure  # pylint: disable=protected-access
  assert metrics.lcs_length(list("x" * 100), list("x" * 70)) == 70  # beyond one machine word
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
  texts = ["The cat sat on the mat.", "cats sitting; a mat", "", "Return the first word, then the LAST word!",
           "return the last words then the first", "x y x y x", "y x y"]
  for p in texts:
    for r in texts:
      assert metrics.rouge_l(p, r) == scorer.score(r, p)["rougeL"].fmeasure  # strings, through the tokenizer
