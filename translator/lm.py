"""`load_lm`: a Hugging Face checkpoint folder -> an `LM` with jitted logits, hidden states and generation.

    lm = translator.load_lm("path/to/Llama-3.2-1B-Instruct", dtype="bfloat16")
    ids, mask = lm.encode(["Input: 3 4 5\\nOutput:"])
    new_ids = lm.generate(ids, mask=mask, max_new_tokens=16)
    print(lm.decode(new_ids))

`LM` is a thin convenience over the pure functions in `translator.models.functions` and
`translator.models.sampler`, which take `(params, config, ...)` and are what jitted training code calls.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from translator import sharding as sharding_lib
from translator.hf.config import read_config
from translator.hf.weights import load_params
from translator.models import functions as F
from translator.models import sampler
from translator.models.config import DecoderConfig
from translator.models.decoder import DecoderOutput, Patch

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@functools.partial(jax.jit, static_argnames=("config", "return_hidden"))
def _forward(params, config, token_ids, mask, embedded_prefix, patch, return_hidden) -> DecoderOutput:
  return F.forward(params, config, token_ids, mask=mask, embedded_prefix=embedded_prefix, patch=patch,
                   return_hidden=return_hidden)


_embed = jax.jit(F.embed, static_argnums=1)


@dataclasses.dataclass
class LM:
  """A decoder LM: its config, params (a pytree, possibly sharded over `mesh`) and tokenizer."""

  config: DecoderConfig
  params: Any
  tokenizer: Any = None
  path: Optional[str] = None
  mesh: Optional[Mesh] = None

  @property
  def eos_ids(self) -> tuple[int, ...]:
    return self.config.eos_token_ids

  @property
  def pad_id(self) -> int:
    if self.config.pad_token_id is not None:
      return self.config.pad_token_id
    return self.eos_ids[0] if self.eos_ids else 0

  def embed(self, token_ids) -> Array:
    """Input embeddings `[B, T, D]`: the space of an `embedded_prefix`."""
    return _embed(self.params, self.config, jnp.asarray(token_ids))

  def forward(self, token_ids, *, mask=None, embedded_prefix=None, patch: Optional[Patch] = None,
              return_hidden: bool = False) -> DecoderOutput:
    """Logits `[B, P+T, V]`, final hidden states and, with `return_hidden`, the residual stream
    `[L+1, B, P+T, D]`; `patch` replaces parts of that stream (see `translator.models.Patch`)."""
    return _forward(self.params, self.config, jnp.asarray(token_ids), None if mask is None else jnp.asarray(mask),
                    embedded_prefix, patch, return_hidden)

  def logits(self, token_ids, *, mask=None, embedded_prefix=None) -> Array:
    """Logits `[B, P+T, V]` (float32) of `[embedded_prefix][token_ids]`."""
    return self.forward(token_ids, mask=mask, embedded_prefix=embedded_prefix).logits

  def sample(self, token_ids, *, mask=None, embedded_prefix=None, patch: Optional[Patch] = None,
             max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, rng: Optional[Array] = None,
             use_cache: bool = True) -> sampler.SampleOutput:
    """New tokens `[B, max_new_tokens]` (pad after EOS) and their lengths `[B]`; `patch` applies to the
    prompt's residual stream at prefill (InSPEcT)."""
    return sampler.sample(
        self.params, self.config, jnp.asarray(token_ids), mask=None if mask is None else jnp.asarray(mask),
        embedded_prefix=embedded_prefix, patch=patch, max_new_tokens=max_new_tokens, temperature=float(temperature),
        top_p=float(top_p), rng=rng, eos_ids=self.eos_ids, pad_id=self.pad_id, use_cache=use_cache)

  def generate(self, token_ids, *, mask=None, embedded_prefix=None, max_new_tokens: int, temperature: float = 0.0,
               top_p: float = 1.0, rng: Optional[Array] = None) -> Array:
    """New ids `[B, max_new_tokens]`, padded with `pad_id` after EOS. Greedy when temperature is 0."""
    return self.sample(token_ids, mask=mask, embedded_prefix=embedded_prefix, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_p=top_p, rng=rng).tokens

  def encode(self, texts: Sequence[str], *, add_bos: bool = True, padding_side: str = "left",
             length: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask `[B, T]`, padded on `padding_side` to the longest text (or to `length`)."""
    if self.tokenizer is None:
      raise ValueError(f"no tokenizer was found in {self.path}; pass token ids instead")
    rows = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if add_bos and self.config.bos_token_id is not None:
      rows = [[self.config.bos_token_id] + r for r in rows]
    t = max(map(len, rows)) if length is None else length
    ids = np.full((len(rows), t), self.pad_id, np.int32)
    mask = np.zeros((len(rows), t), bool)
    for i, r in enumerate(rows):
      if len(r) > t:
        raise ValueError(f"text {i} has {len(r)} tokens, more than length={t}")
      sl = slice(t - len(r), t) if padding_side == "left" else slice(0, len(r))
      ids[i, sl], mask[i, sl] = r, True
    return ids, mask

  def decode(self, token_ids, lengths=None) -> list[str]:
    """Texts of generated ids `[B, N]`, cut at the first EOS, special tokens dropped."""
    out = []
    for row in np.asarray(token_ids).tolist():
      for j, tok in enumerate(row):
        if tok in self.eos_ids:
          row = row[:j]
          break
      out.append(self.tokenizer.decode(row, skip_special_tokens=True))
    return out


def load_tokenizer(path: str):
  """`transformers.AutoTokenizer` from the checkpoint folder, or None when it holds no tokenizer."""
  if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model",
                                                               "tokenizer_config.json")):
    logging.warning("no tokenizer files in %s; LM.encode/decode are unavailable", path)
    return None
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_lm(path: str, dtype: str = "float32", *, mesh: Optional[Mesh] = None,
            rules: sharding_lib.rules.Rules = sharding_lib.LOGICAL_AXIS_RULES) -> LM:
  """Loads a decoder LM from a local folder in Hugging Face layout.

  Args:
    path: folder with `config.json`, `model.safetensors` (or shards and their index) and tokenizer files.
    dtype: "float32" | "bfloat16" | "float16": the dtype params are stored and computed in.
    mesh: place params straight onto this mesh (see `translator.sharding`); default: the default device.
    rules: logical axis rules for the mesh.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint folder {path} does not exist")
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
  config = read_config(path)
  shardings = None
  if mesh is not None:
    shardings = sharding_lib.shardings(F.abstract_params(config), mesh, rules)
  params = load_params(path, config, dtype=DTYPES[dtype], shardings=shardings)
  return LM(config=config, params=params, tokenizer=load_tokenizer(path), path=path, mesh=mesh)
