"""Shared test helpers: a small synthetic world (DoD + the project's tokenizer) and tiny random Llamas in HF
layout that read it, so entry points run end to end on the CPU in seconds."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import flax.linen as nn
import jax

from translator.data import dod
from translator.data import synthetic
from translator.data import tokenizer as tok_lib
from translator.hf import export
from translator.models import DecoderConfig
from translator.models import functions as F


def make_world(directory: str, tasks: Optional[Sequence[dod.Task]] = None) -> tuple[str, list[dod.Task]]:
  """Writes `directory/dod` and `directory/tokenizer` (as experiments.make_world does) for the small synthetic
  config; returns (directory, tasks)."""
  tasks = list(tasks if tasks is not None else synthetic.generate(synthetic.small_config()))
  dod.write_dod(tasks, os.path.join(directory, "dod"))
  tok_lib.train_tokenizer(tok_lib.corpus_texts(tasks), os.path.join(directory, "tokenizer"))
  return directory, tasks


def tiny_config(vocab_size: int, **overrides) -> DecoderConfig:
  """A 2-layer Llama of width 32 with the project tokenizer's special ids."""
  kwargs = dict(family="llama", vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                bos_token_id=1, eos_token_ids=(2,), pad_token_id=3)
  kwargs.update(overrides)
  return DecoderConfig(**kwargs)


def make_tiny_lm(directory: str, tokenizer_dir: str, seed: int = 0, **overrides) -> str:
  """A random tiny Llama (see `tiny_config`) with the tokenizer of `tokenizer_dir`, saved in HF layout."""
  vocab = tok_lib.load_tokenizer(tokenizer_dir).get_vocab_size()
  config = tiny_config(vocab, **overrides)
  export.save_lm(directory, config, nn.unbox(F.init_params(config, jax.random.key(seed))),
                 tokenizer_dir=tokenizer_dir)
  return directory
