"""A trained translator on disk, and loading it to translate soft prompts.

    translation.export.save(directory, trainable, record)     # weights.safetensors + translator.json
    tr = translation.export.load(directory)                   # or load(directory, lm_path=...) to move the LM
    tr.translate(prompts)                                     # prompts [N, P, D_src] -> N hard prompts

A translator folder holds
  weights.safetensors   the trainables, one tensor per leaf, named by its path ("encoder/proj/kernel",
                        "lora/model/layers/self_attn/q_proj/lora_a", ...); the decoder's frozen weights are not
                        copied: translator.json names the LM folder they come from (and its hashes).
  translator.json       {"format", "encoder": encoder config, "lora": LoRA config or null, "lm": LM identity,
                         "prompt_shape": [P, D_src], "output_rms", "max_new_tokens", "selection": {...}}
written in that order, each atomically; translator.json is the commit point.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

import translator as translator_lib
from translator.data import dod
from translator.models.lora import LoraConfig
from translator.translation import encoders, step as step_lib

FORMAT = "translator.translator/1"
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "translator.json"


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "/"))
    else:
      out[name] = np.ascontiguousarray(np.asarray(jax.device_get(v), np.float32))
  return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  out: dict = {}
  for name, value in flat.items():
    node = out
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def save(directory: str, trainable: dict, record: dict) -> str:
  """Writes `trainable` ({"encoder", "lora"}) and `record` (see the module docstring); returns the folder."""
  os.makedirs(directory, exist_ok=True)
  flat = flatten({"encoder": trainable["encoder"], "lora": trainable["lora"]})
  path = os.path.join(directory, WEIGHTS_FILE)
  dod.atomic_write(path, lambda tmp: save_file(flat, tmp, metadata={"format": FORMAT}))
  dod.atomic_write_text(os.path.join(directory, RECORD_FILE),
                        json.dumps(dict(record, format=FORMAT), indent=1, sort_keys=True) + "\n")
  return directory


def read(directory: str) -> tuple[dict, dict]:
  """(trainable, record) of a translator folder."""
  record_path = os.path.join(directory, RECORD_FILE)
  if not os.path.exists(record_path):
    raise FileNotFoundError(f"{record_path} is missing: {directory} is not a translator folder (written by "
                            "experiments.train_translator into WORKDIR/translator)")
  with open(record_path, encoding="utf-8") as f:
    record = json.load(f)
  if record.get("format") != FORMAT:
    raise ValueError(f"{record_path}: format {record.get('format')!r} is not {FORMAT!r}")
  with safe_open(os.path.join(directory, WEIGHTS_FILE), framework="numpy") as f:
    flat = {k: f.get_tensor(k) for k in f.keys()}
  tree = unflatten(flat)
  return {"encoder": tree.get("encoder", {}), "lora": tree.get("lora", {})}, record


class Translator:
  """A loaded translator: `translate(prompts [N, P, D_src]) -> N texts` (greedy or sampled, batched, jitted)."""

  def __init__(self, lm, trainable: dict, record: dict, mesh=None):
    self.lm, self.record = lm, record
    lora = None if record.get("lora") is None else LoraConfig.from_dict(record["lora"])
    encoder = encoders.make(record["encoder"], lm.config.hidden_size, record.get("output_rms", 1.0))
    c = lm.config
    self.spec = step_lib.Spec(encoder=encoder, config=c, lora=lora, bos_id=c.bos_token_id,
                              eos_ids=tuple(c.eos_token_ids), pad_id=lm.pad_id)
    self.mesh = mesh or translator_lib.make_mesh(devices=jax.devices()[:1])
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, lm.params)
    self._trainer = step_lib.Trainer(self.mesh, self.spec, shardings, tx=None)
    self.trainable = jax.tree_util.tree_map(jnp.asarray, trainable)
    self.prompt_shape = tuple(record["prompt_shape"])
    self.max_new_tokens = int(record["max_new_tokens"])

  def translate(self, prompts, batch_size: int = 32, max_new_tokens: Optional[int] = None, temperature: float = 0.0,
                rng: Optional[jax.Array] = None) -> list[str]:
    """Greedy texts, or at `temperature` > 0 texts sampled with `rng` (each batch folds in its index)."""
    if temperature > 0.0 and rng is None:
      raise ValueError("sampling translations (temperature > 0) needs an rng")
    prompts = np.asarray(prompts, np.float32)
    if prompts.ndim == 2:
      prompts = prompts[None]
    if prompts.shape[1:] != self.prompt_shape:
      raise ValueError(f"prompts have shape {prompts.shape} but this translator reads [N, {self.prompt_shape[0]}, "
                       f"{self.prompt_shape[1]}] (translator.json prompt_shape)")
    n = max_new_tokens or self.max_new_tokens
    out = []
    for start in range(0, len(prompts), batch_size):
      chunk = prompts[start:start + batch_size]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)]) if len(
          chunk) < batch_size else chunk
      key = None if rng is None else jax.random.fold_in(rng, start)
      tokens = self._trainer.generate(self.trainable, self.lm.params, jnp.asarray(padded), key, max_new_tokens=n,
                                      temperature=temperature)
      out += self.lm.decode(np.asarray(tokens)[:len(chunk)])
    return out


def load(directory: str, lm_path: Optional[str] = None, dtype: Optional[str] = None, mesh=None,
         lm=None) -> Translator:
  """The translator in `directory` over its decoder LM: `lm` when given (an LM already loaded), else the one
  at `lm_path` or translator.json's path."""
  trainable, record = read(directory)
  if lm is None:
    path = lm_path or record["lm"]["path"]
    lm = translator_lib.load_lm(path, dtype or record["lm"].get("dtype", "float32"), mesh=mesh)
  if lm.config.hidden_size != record["lm"]["hidden_size"]:
    raise ValueError(f"the LM at {lm.path} has width {lm.config.hidden_size}; this translator was trained on a "
                     f"width-{record['lm']['hidden_size']} LM ({record['lm']['path']})")
  return Translator(lm, trainable, record, mesh=mesh or lm.mesh)
