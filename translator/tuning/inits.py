"""Initial prompt tables `[T, P, D]`, all in the LM's input-embedding space (`functions.embed`: for Gemma already
multiplied by sqrt(D), like HF's `get_input_embeddings()` output), float32.

  random_vocab    P token ids drawn uniformly from the whole vocabulary (the paper)
  sampled_vocab   P ids drawn from the first `vocab_sample_size` (5,000) rows (Lester et al., 2021)
  class_labels    classification tasks: the tokens of their class names (" fish", " red", ...) one after the
                  other, repeated / cut to P; other tasks fall back to `fallback` (default sampled_vocab)
  text            the tokens of `text` (one string for every task), repeated / cut to P
  uniform         U(-r, r) with r = `uniform_range`; with `match_embedding_rms`, rescaled so that its RMS is
                  the RMS of token embeddings (of 4,096 sampled ids)

Draws are seeded per task by (seed, task name), so a task's initial prompt does not depend on which other
tasks share the table.

  cfg: kind, vocab_sample_size, text, uniform_range, match_embedding_rms, fallback
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from translator.data import dod
from translator.models import functions as F
from translator.models.config import DecoderConfig
from translator.tuning.data import task_seed

KINDS = ("random_vocab", "sampled_vocab", "class_labels", "text", "uniform")


def _cycle(ids: Sequence[int], length: int, what: str) -> np.ndarray:
  if not ids:
    raise ValueError(f"{what} has no tokens; it cannot initialise a prompt")
  return np.resize(np.asarray(ids, np.int32), length)


def init_ids(kind: str, tasks: Sequence[dod.Task], *, prompt_length: int, vocab_size: int, tokenizer=None,
             vocab_sample_size: int = 5000, text: str = "", fallback: str = "sampled_vocab",
             seed: int = 0) -> np.ndarray:
  """Token ids `[T, P]` of an id-based initialisation."""
  encode = lambda s: list(tokenizer.encode(s, add_special_tokens=False))
  rows = []
  for task in tasks:
    rng = np.random.default_rng(task_seed(seed, task.name))
    k = kind
    if k == "class_labels" and not task.classes:
      k = fallback
    if k == "random_vocab":
      rows.append(rng.integers(0, vocab_size, prompt_length))
    elif k == "sampled_vocab":
      rows.append(rng.integers(0, min(vocab_sample_size, vocab_size), prompt_length))
    elif k == "class_labels":
      if tokenizer is None:
        raise ValueError("init kind 'class_labels' needs the LM's tokenizer")
      ids = [i for c in task.classes for i in encode(" " + c)]
      rows.append(_cycle(ids, prompt_length, f"the class names of task {task.name!r}"))
    elif k == "text":
      if tokenizer is None:
        raise ValueError("init kind 'text' needs the LM's tokenizer")
      rows.append(_cycle(encode(text), prompt_length, f"init text {text!r}"))
    else:
      raise ValueError(f"init kind {k!r} is not an id-based kind (random_vocab, sampled_vocab, class_labels, text)")
  return np.stack(rows).astype(np.int32) if rows else np.zeros((0, prompt_length), np.int32)


def _embed(lm_params, config: DecoderConfig, ids):
  return F.embed(lm_params, config, ids).astype(jnp.float32)


def _embedding_rms(lm_params, config: DecoderConfig, ids):
  return jnp.sqrt(jnp.mean(jnp.square(_embed(lm_params, config, ids))))


def initial_prompts(cfg, tasks: Sequence[dod.Task], lm_params, config: DecoderConfig, *, prompt_length: int,
                    sharding: NamedSharding, tokenizer=None, seed: int = 0) -> jax.Array:
  """The initial prompt table `[T, P, D]` float32 placed on `sharding` (see the module docstring)."""
  kind = cfg.kind
  if kind not in KINDS:
    raise ValueError(f"init kind {kind!r} is not one of {KINDS}")
  t, d = len(tasks), config.hidden_size
  embed = jax.jit(_embed, static_argnames=("config",), out_shardings=sharding)
  if kind != "uniform":
    ids = init_ids(kind, tasks, prompt_length=prompt_length, vocab_size=config.vocab_size, tokenizer=tokenizer,
                   vocab_sample_size=cfg.get("vocab_sample_size", 5000), text=cfg.get("text", ""),
                   fallback=cfg.get("fallback", "sampled_vocab"), seed=seed)
    return embed(lm_params, config, ids)  # host ids: the same on every process
  r = cfg.get("uniform_range", 0.5)
  values = np.stack([np.random.default_rng(task_seed(seed, task.name)).uniform(-r, r, (prompt_length, d))
                     for task in tasks]).astype(np.float32)
  if cfg.get("match_embedding_rms", True):
    sample = np.random.default_rng([seed, 11]).integers(0, config.vocab_size, (1, 4096))
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    rms_fn = jax.jit(_embedding_rms, static_argnames=("config",), out_shardings=replicated)
    rms = float(rms_fn(lm_params, config, sample.astype(np.int32)))
    values *= rms / (r / np.sqrt(3.0))  # U(-r, r) has RMS r / sqrt(3)
  return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])
