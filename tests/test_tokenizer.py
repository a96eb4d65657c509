"""The byte-level BPE tokenizer: Hugging Face loading, special ids, exact round trips, determinism."""

import hashlib
import os

import pytest
import transformers

from translator.data import dod
from translator.data import synthetic
from translator.data import synthetic_lexicon as lex
from translator.data import tokenizer as tok_lib


@pytest.fixture(scope="module")
def tasks():
  return synthetic.generate(synthetic.small_config())


@pytest.fixture(scope="module")
def folder(tasks, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tok"))
  tok_lib.train_tokenizer(tok_lib.corpus_texts(tasks), d)
  return d


def test_loads_through_auto_tokenizer_with_special_ids(folder):
  tok = transformers.AutoTokenizer.from_pretrained(folder)
  assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
  # A small corpus runs out of frequent pairs before the default size; the full DoD fills it.
  assert 1400 <= len(tok) == tok_lib.load_tokenizer(folder).get_vocab_size() <= tok_lib.DEFAULT_VOCAB_SIZE
  ids = tok("Input: cow\nOutput:")["input_ids"]
  assert tok.bos_token_id not in ids and tok.eos_token_id not in ids  # callers add them


def test_round_trips_text_and_agrees_with_raw_tokenizer(folder, tasks):
  hf = transformers.AutoTokenizer.from_pretrained(folder)
  raw = tok_lib.load_tokenizer(folder)
  texts = ["  odd  spacing ,. é 😀\n\tx", "13 + 7 = 20"]
  for t in tasks[::7]:
    texts += ["".join(dod.format_example(t.instruction, i)) for i in t.instances["test"]]
  for text in texts:
    ids = hf(text)["input_ids"]
    assert ids == raw.encode(text).ids
    assert hf.decode(ids) == text
    assert raw.decode(ids) == text


def test_world_words_are_single_tokens(folder):
  raw = tok_lib.load_tokenizer(folder)
  single = [w for w in lex.WORD_LIST if len(raw.encode(" " + w).ids) == 1]
  assert len(single) >= 0.9 * len(lex.WORD_LIST)
  for c in lex.LETTERS + "0123456789":
    assert len(raw.encode(" " + c).ids) == 1, c
  assert raw.encode(" 13").tokens == ["Ġ1", "3"]  # numbers are spelled digit by digit


def test_training_is_deterministic(folder, tasks, tmp_path):
  tok_lib.train_tokenizer(tok_lib.corpus_texts(tasks), str(tmp_path))
  for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    digests = [hashlib.sha256(open(os.path.join(d, name), "rb").read()).hexdigest() for d in (folder, tmp_path)]
    assert digests[0] == digests[1], name


def test_rejects_too_small_vocab(tmp_path):
  with pytest.raises(ValueError, match="vocab_size"):
    tok_lib.train_tokenizer(["a"], str(tmp_path), vocab_size=100)
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    tok_lib.load_tokenizer(str(tmp_path / "none"))
