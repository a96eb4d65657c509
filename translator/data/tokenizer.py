"""A byte-level BPE tokenizer for the synthetic world, saved so that `AutoTokenizer.from_pretrained` loads it.

Special tokens, in id order: `<unk>` 0, `<s>` 1 (bos), `</s>` 2 (eos), `<pad>` 3. The tokenizer adds no
special tokens by itself (no post-processor): callers add bos/eos explicitly. Byte-level, so every
string encodes and decodes back exactly; `<unk>` exists for Hugging Face's sake and is never produced.

Default vocabulary: 1536 = 4 specials + 256 bytes + 1276 merges. BPE on this world's text runs out of
pairs seen twice at ~1545 entries (216 lexicon words, ~330 instruction and template words, the letters
and digits, punctuation), so 1536 makes every lexicon word (with its leading space), every letter
(" b", " B") and nearly every instruction word one token: an example with its instruction is ~28
tokens, the output ~2. 1024 would split two thirds of the lexicon words (~30 tokens per example, and
answers of 2-3 tokens); for a D = 128-256 LM the embedding and output matrices (V x D) cost 0.2-0.4M
parameters each at 1536, a modest part of a 2-5M parameter model.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from translator.data import dod

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD)
DEFAULT_VOCAB_SIZE = 1536
TOKENIZER_FILE = "tokenizer.json"
# GPT-2's pre-tokenization, except that a number is split into single digits (the first keeps the space
# before it): " 13" -> " 1", "3", so every number is spelled by the same 20 digit tokens.
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def corpus_texts(tasks: Sequence[dod.Task], examples_per_task: int = 16) -> Iterator[str]:
  """A text stream representative of what the LMs read: every instruction and paraphrase, and the
  first `examples_per_task` train instances of each task as formatted examples (prompt + target),
  with the canonical instruction, a paraphrase, or no instruction in turn."""
  for task in tasks:
    yield task.instruction
    yield from task.paraphrases
    wordings = (task.instruction,) + task.paraphrases + (None,)
    for j, ins in enumerate(task.instances.get("train", ())[:examples_per_task]):
      prompt, target = dod.format_example(wordings[j % len(wordings)], ins)
      yield prompt + target


def train_tokenizer(texts: Iterable[str], directory: str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    min_frequency: int = 2, model_max_length: int = 2048) -> str:
  """Trains a byte-level BPE on `texts`, writes it to `directory`; returns the tokenizer.json path.

  The vocabulary has at most `vocab_size` entries, fewer when the texts run out of pairs seen
  `min_frequency` times (size a model by `get_vocab_size()`, not by the request).

  Also writes `tokenizer_config.json` and `special_tokens_map.json` for `transformers.AutoTokenizer`.
  """
  if vocab_size < len(SPECIAL_TOKENS) + 256:
    raise ValueError(f"vocab_size={vocab_size} is below {len(SPECIAL_TOKENS) + 256} (specials + 256 bytes)")
  tok = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer)
  for i, s in enumerate(SPECIAL_TOKENS):
    if tok.token_to_id(s) != i:
      raise AssertionError(f"special token {s!r} has id {tok.token_to_id(s)}, expected {i}")

  path = os.path.join(directory, TOKENIZER_FILE)
  dod.atomic_write_text(path, tok.to_str(pretty=True) + "\n")
  specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
  config = dict(specials, tokenizer_class="PreTrainedTokenizerFast", add_bos_token=False, add_eos_token=False,
                clean_up_tokenization_spaces=False, model_max_length=model_max_length)
  for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
    dod.atomic_write_text(os.path.join(directory, name), json.dumps(content, indent=2, sort_keys=True) + "\n")
  return path


def load_tokenizer(directory: str) -> tokenizers.Tokenizer:
  """The raw `tokenizers.Tokenizer` saved by `train_tokenizer`."""
  path = os.path.join(directory, TOKENIZER_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no tokenizer at {path}; train one with translator.data.tokenizer.train_tokenizer")
  return tokenizers.Tokenizer.from_file(path)
