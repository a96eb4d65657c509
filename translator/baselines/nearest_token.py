"""Nearest-token projection: each soft-prompt vector becomes the vocabulary token whose input embedding is
closest in cosine; the hard prompt is the text of those tokens.

    out = nearest_token.project(lm, prompts)     # prompts [N, P, D] -> out.ids [N, P], out.texts [N]

Cosine is scale-invariant, so the raw embedding table `[V, D]` serves for every family: Gemma's inputs
(`embed(ids)` = table * sqrt(D), the space where soft prompts live) have the same nearest rows as the table.
A row of norm zero has cosine 0 with everything. Ties go to the lowest id.

The vocabulary is scanned in chunks of `chunk` rows with a running (best cosine, id) per vector, so memory
is `[M, chunk]` for M = batch_size * P vectors, whatever V is; prompts go through in batches of a fixed
size, so the projection compiles once.

Letters: N prompts, P prompt length, D width, V vocabulary, M vectors of a batch, C rows of a chunk.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Projection:
  """ids `[N, P]` the nearest token of each vector; texts: the decoded ids of each prompt (special tokens
  dropped); cosines `[N, P]` the cosine of each vector with its token's embedding."""

  ids: np.ndarray
  texts: list[str]
  cosines: np.ndarray


def _unit(x: Array) -> Array:
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("chunk",))
def nearest_ids(table: Array, vectors: Array, allowed: Array, chunk: int = 8192) -> tuple[Array, Array]:
  """The row of `table` `[V, D]` with the highest cosine to each of `vectors` `[M, D]`, among rows where
  `allowed` `[V]` holds: (ids `[M]` int32, cosines `[M]` float32). Scans the table `chunk` rows at a time."""
  v, d = table.shape
  chunk = min(chunk, v)
  num_chunks = -(-v // chunk)
  pad = num_chunks * chunk - v
  rows = jnp.pad(table, ((0, pad), (0, 0))).reshape(num_chunks, chunk, d)
  keep = jnp.pad(allowed, (0, pad)).reshape(num_chunks, chunk)  # padded rows are never allowed
  q = _unit(vectors)

  def body(carry, xs):
    best, best_id = carry
    block, ok, offset = xs
    cos = jnp.where(ok[None, :], jnp.einsum("md,cd->mc", q, _unit(block), precision=_HIGHEST), -jnp.inf)
    top = jnp.max(cos, axis=-1)
    index = jnp.min(jnp.where(cos == top[:, None], jnp.arange(chunk, dtype=jnp.int32), chunk), axis=-1)
    better = top > best  # strict: an earlier chunk keeps a tie (lowest id)
    return (jnp.where(better, top, best), jnp.where(better, offset + index, best_id)), None

  m = vectors.shape[0]
  init = (jnp.full((m,), -jnp.inf, jnp.float32), jnp.zeros((m,), jnp.int32))
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
  (best, best_id), _ = jax.lax.scan(body, init, (rows, keep, offsets))
  return best_id, best


def embedding_table(lm) -> Array:
  """The LM's input embedding table `[V, D]` (unscaled)."""
  return lm.params["model"]["embed_tokens"]["embedding"]


def special_ids(lm) -> list[int]:
  """Ids of the tokenizer's special tokens and of the config's BOS, EOS and pad tokens, sorted."""
  ids = set(lm.eos_ids)
  for i in (lm.config.bos_token_id, lm.config.pad_token_id):
    if i is not None:
      ids.add(int(i))
  if lm.tokenizer is not None:
    ids.update(int(i) for i in lm.tokenizer.all_special_ids)
  return sorted(ids)


def project(lm, prompts, *, exclude: Sequence[int] = (), exclude_special: bool = False, batch_size: int = 32,
            chunk: int = 8192) -> Projection:
  """The nearest token of every soft-prompt vector, and the prompt's text.

  Args:
    lm: a `translator.LM` (with a tokenizer for the texts).
    prompts: `[N, P, D]` soft prompts in the space of `lm.embed` (any scale: cosine ignores it).
    exclude: ids never chosen.
    exclude_special: also never choose `special_ids(lm)` (BOS, EOS, pad, ...). Either way the texts drop
      special tokens.
    batch_size: prompts per jitted call (the last call is padded to it).
    chunk: vocabulary rows per step of the scan.
  """
  if lm.tokenizer is None:
    raise ValueError(f"no tokenizer was found in {lm.path}; use nearest_ids(table, vectors, allowed) for ids alone")
  prompts = np.asarray(prompts)
  table = embedding_table(lm)
  v, d = table.shape
  if prompts.ndim != 3 or prompts.shape[2] != d:
    raise ValueError(f"prompts have shape {prompts.shape}; expected [N, P, D={d}] for this LM")
  allowed = np.ones((v,), bool)
  banned = list(exclude) + (special_ids(lm) if exclude_special else [])
  bad = [i for i in banned if not 0 <= i < v]
  if bad:
    raise ValueError(f"excluded ids {bad} are outside the vocabulary [0, {v})")
  allowed[banned] = False
  if not allowed.any():
    raise ValueError("every token id is excluded; nothing to project onto")
  n, p, _ = prompts.shape
  ids, cosines = np.zeros((n, p), np.int32), np.zeros((n, p), np.float32)
  allowed = jnp.asarray(allowed)
  for lo in range(0, n, batch_size):
    rows = prompts[lo:lo + batch_size]
    m = rows.shape[0]
    rows = np.concatenate([rows, np.zeros((batch_size - m, p, d), rows.dtype)]) if m < batch_size else rows
    got_ids, got_cos = nearest_ids(table, jnp.asarray(rows.reshape(batch_size * p, d)), allowed, chunk=chunk)
    ids[lo:lo + m] = np.asarray(got_ids).reshape(batch_size, p)[:m]
    cosines[lo:lo + m] = np.asarray(got_cos).reshape(batch_size, p)[:m]
  texts = [lm.tokenizer.decode(r, skip_special_tokens=True) for r in ids.tolist()]
  return Projection(ids=ids, texts=texts, cosines=cosines)

