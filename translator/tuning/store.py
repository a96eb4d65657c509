"""The prompt store: the output of prompt tuning and the input of the translator.

    names, prompts, metadata = translator.tuning.store.read("WORKDIR/prompts")
    prompts.shape            # [T, P, D] float32, row i is the best prompt of task names[i]
    metadata[names[i]]       # that task's record (below)

A store is a folder with two files, written in this order, each atomically (temporary file + rename):

  prompts.safetensors   one tensor "prompts" `[T, P, D]` float32; its header metadata repeats the format and
                        the ordered task names (JSON), so the file alone is self-describing.
  metadata.json         {"format", "names" (row order), "shape", "prompts_sha256" (of prompts.safetensors),
                         "tasks": [one record per row]}: the commit point. `read` checks the names, the shape
                        and the hash, so a store whose writer died between the two files is refused.

One array plus an ordered name list (rather than a tensor per task) keeps the table a single contiguous
read for the translator, which consumes all rows at once. Each task record is self-contained:
  name, index, family, task_split, classes, num_train, num_valid,
  lm: {path, family, hidden_size, vocab_size, dtype, config_sha256, weights_sha256}, tokenizer: {path, sha256},
  prompt_length, prompt_position, init: {kind, ...}, optimizer: {...}, seed,
  status ("patience" | "max_epochs" | "max_steps"), updates (optimizer steps of this prompt), examples_seen,
  epochs, validations, best_epoch, best_valid_loss, last_valid_loss, valid_exact_match, valid_examples_scored.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from translator.data import dod

FORMAT = "translator.prompts/1"
PROMPTS_FILE = "prompts.safetensors"
METADATA_FILE = "metadata.json"
TENSOR = "prompts"


def sha256_file(path: str, chunk: int = 1 << 24) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def lm_identity(path: str, config, dtype: str, hash_weights: bool = True) -> dict[str, Any]:
  """Where the LM came from and hashes of its config.json and weight files (sorted names, bytes in order)."""
  out = {"path": os.path.abspath(path), "family": config.family, "hidden_size": config.hidden_size,
         "vocab_size": config.vocab_size, "num_hidden_layers": config.num_hidden_layers, "dtype": dtype}
  config_file = os.path.join(path, "config.json")
  out["config_sha256"] = sha256_file(config_file) if os.path.exists(config_file) else None
  if hash_weights:
    h = hashlib.sha256()
    for name in sorted(f for f in os.listdir(path) if f.endswith(".safetensors")):
      h.update(name.encode("utf-8"))
      h.update(bytes.fromhex(sha256_file(os.path.join(path, name))))
    out["weights_sha256"] = h.hexdigest()
  return out


def tokenizer_identity(path: str) -> dict[str, Any]:
  files = [f for f in ("tokenizer.json", "tokenizer.model") if os.path.exists(os.path.join(path, f))]
  return {"path": os.path.abspath(path), "file": files[0] if files else None,
          "sha256": sha256_file(os.path.join(path, files[0])) if files else None}


def write(directory: str, names: Sequence[str], prompts: np.ndarray, tasks: Sequence[dict]) -> str:
  """Writes a store (see the module docstring); returns the metadata path. `tasks[i]` describes row i."""
  prompts = np.ascontiguousarray(np.asarray(prompts, np.float32))
  names = list(names)
  if prompts.ndim != 3 or prompts.shape[0] != len(names) or len(tasks) != len(names):
    raise ValueError(f"prompts {prompts.shape}, {len(names)} names and {len(tasks)} task records do not match "
                     "([T, P, D], T, T)")
  if len(set(names)) != len(names):
    raise ValueError("task names in a prompt store must be unique")
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, PROMPTS_FILE)
  dod.atomic_write(path, lambda tmp: save_file({TENSOR: prompts}, tmp,
                                                metadata={"format": FORMAT, "names": json.dumps(names)}))
  meta = {"format": FORMAT, "names": names, "shape": list(prompts.shape), "dtype": "float32",
          "prompts_sha256": sha256_file(path), "tasks": [dict(t, name=n, index=i) for i, (n, t) in
                                                          enumerate(zip(names, tasks))]}
  meta_path = os.path.join(directory, METADATA_FILE)
  dod.atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True, allow_nan=True) + "\n")
  return meta_path


def read(path: str, verify: bool = True) -> tuple[list[str], np.ndarray, dict[str, dict]]:
  """(names, prompts `[T, P, D]` float32, {name: task record}) of the store at `path` (the folder, or its
  prompts.safetensors); with `verify`, checks the file against the hash in metadata.json."""
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  meta_path = os.path.join(directory, METADATA_FILE)
  tensor_path = os.path.join(directory, PROMPTS_FILE)
  for p in (meta_path, tensor_path):
    if not os.path.exists(p):
      raise FileNotFoundError(f"{p} is missing: {directory} is not a complete prompt store (written by "
                              "experiments.tune_prompts)")
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
  if verify and sha256_file(tensor_path) != meta["prompts_sha256"]:
    raise ValueError(f"{tensor_path} does not match the SHA-256 in {meta_path}: the store is partial or modified")
  with safe_open(tensor_path, framework="numpy") as f:
    header = f.metadata() or {}
    prompts = f.get_tensor(TENSOR)
  names = list(meta["names"])
  if json.loads(header.get("names", "null")) != names or list(prompts.shape) != meta["shape"]:
    raise ValueError(f"{tensor_path} and {meta_path} disagree on the task names or the shape {prompts.shape}")
  return names, prompts, {t["name"]: t for t in meta["tasks"]}

