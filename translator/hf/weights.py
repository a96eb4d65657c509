"""Import Hugging Face safetensors weights into the decoder's parameter tree.

Reads a single `model.safetensors` or shards listed in `model.safetensors.index.json`, lazily: each
device reads only the slice of each tensor that it holds (`jax.make_array_from_callback`). Every leaf
of the tree is filled from the file (nothing keeps a random init); every tensor of the file must be used.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from translator.hf.config import read_config
from translator.models import functions as F
from translator.models.config import DecoderConfig

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Tensors some checkpoints carry that the decoder recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def tensor_files(path: str) -> dict[str, str]:
  """Maps each tensor name to the safetensors file that holds it."""
  index = os.path.join(path, INDEX)
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map")
    if not weight_map:
      raise ValueError(f"{index} has no 'weight_map'")
    files = {name: os.path.join(path, file) for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not os.path.exists(file):
        raise FileNotFoundError(f"shard {file} listed in {index} does not exist")
    return files
  single = os.path.join(path, SINGLE)
  if not os.path.exists(single):
    raise FileNotFoundError(f"no {SINGLE} or {INDEX} in {path}")
  with safe_open(single, framework="flax") as f:
    return {name: single for name in f.keys()}


def hf_names(path: tuple[str, ...], num_layers: int) -> tuple[list[str], bool]:
  """HF tensor names for a leaf of our tree (one per layer for stacked leaves) and whether to transpose."""
  *modules, leaf = path
  suffix = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}[leaf]
  transpose = leaf == "kernel"
  if modules[:2] == ["model", "layers"]:
    rest = ".".join(modules[2:])
    return [f"model.layers.{i}.{rest}.{suffix}" for i in range(num_layers)], transpose
  return [".".join(modules) + "." + suffix], transpose


def input_embeddings(path: str) -> np.ndarray:
  """The input embeddings `[V, D]` (float32) of every token of the LM in folder `path`: the space of an
  embedded prefix (Gemma's scaling included), read from its one embedding tensor without loading the rest."""
  config = read_config(path)
  (name,), _ = hf_names(("model", "embed_tokens", "embedding"), config.num_hidden_layers)
  files = tensor_files(path)
  if name not in files:
    raise KeyError(f"tensor {name!r} is missing from the checkpoint in {path}")
  with safe_open(files[name], framework="flax") as f:
    table = np.asarray(f.get_tensor(name), np.float32)
  if table.shape != (config.vocab_size, config.hidden_size):
    raise ValueError(f"tensor {name!r} in {files[name]} has shape {table.shape}, the config in {path} implies "
                     f"{(config.vocab_size, config.hidden_size)}")
  params = {"model": {"embed_tokens": {"embedding": jnp.asarray(table)}}}
  return np.asarray(F.embed(params, config, jnp.arange(config.vocab_size, dtype=jnp.int32)[None])[0])


def load_params(path: str, config: DecoderConfig, *, dtype: Any = jnp.float32,
                shardings: Optional[Any] = None) -> dict:
  """The decoder's params from the safetensors in folder `path`, cast to `dtype`.

  shardings: a tree of `jax.sharding.Sharding` matching the params (e.g. from
  `translator.sharding.shardings`); each array is placed straight onto it. Default: the default device.
  Raises on a missing tensor, a shape mismatch or a tensor that the decoder does not use.
  """
  files = tensor_files(path)
  abstract = nn.unbox(F.abstract_params(config))
  flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
  sharding_leaves = (jax.tree_util.tree_leaves(shardings) if shardings is not None else [None] * len(flat))
  if len(sharding_leaves) != len(flat):
    raise ValueError(f"shardings has {len(sharding_leaves)} leaves, the params {len(flat)}")
  dtype = jnp.dtype(dtype)
  used: set[str] = set()
  leaves = []
  with contextlib.ExitStack() as stack:
    handles = {file: stack.enter_context(safe_open(file, framework="flax")) for file in sorted(set(files.values()))}

    def tensor_slice(name: str, index: tuple) -> np.ndarray:
      return np.asarray(handles[files[name]].get_slice(name)[index])

    for (key_path, target), sharding in zip(flat, sharding_leaves):
      key = tuple(k.key for k in key_path)
      names, transpose = hf_names(key, config.num_hidden_layers)
      stacked = len(names) > 1 or key[:2] == ("model", "layers")
      per_tensor_shape = target.shape[1:] if stacked else target.shape
      expected = per_tensor_shape[::-1] if transpose else per_tensor_shape
      for name in names:
        if name not in files:
          raise KeyError(f"tensor {name!r} (for {'/'.join(key)}) is missing from the checkpoint in {path}")
        shape = tuple(handles[files[name]].get_slice(name).get_shape())
        if shape != tuple(expected):
          raise ValueError(f"tensor {name!r} in {files[name]} has shape {shape}, the config in {path} "
                           f"implies {tuple(expected)}")
        used.add(name)

      def read(index: tuple, names=names, transpose=transpose, stacked=stacked) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (len(target.shape) - len(index))
        layer_index, inner = (index[0], index[1:]) if stacked else (slice(None), index)
        inner = inner[::-1] if transpose else inner
        parts = []
        for name in (names[layer_index] if stacked else names):
          part = tensor_slice(name, inner)
          parts.append(part.T if transpose else part)
        out = np.stack(parts) if stacked else parts[0]
        return out.astype(dtype)

      if sharding is None:
        leaves.append(jnp.asarray(read(())))
      else:
        leaves.append(jax.make_array_from_callback(target.shape, sharding, read))

  unused = sorted(n for n in files if n not in used and not n.endswith(_IGNORED_SUFFIXES)
                  and not (n == "lm_head.weight" and config.tie_word_embeddings))
  if unused:
    shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
    raise ValueError(f"the checkpoint in {path} has tensors the decoder does not use: {shown}. "
                     f"Is config.json describing this checkpoint?")
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract), leaves)
