"""Save the decoder's params in Hugging Face layout (`config.json`, `model.safetensors`), so that the
project's own LMs load through the same `load_lm` as real checkpoints, and `transformers` loads them too.

Only the Llama family is written (the project trains Llama-architecture LMs); the config is written in the
transformers 5 layout (`rope_parameters`, `dtype`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Optional

import jax
import numpy as np
from safetensors.flax import save_file

from translator.hf.weights import SINGLE, hf_names
from translator.models.config import DecoderConfig


def to_hf_dict(config: DecoderConfig, dtype: str = "float32") -> dict[str, Any]:
  """The `config.json` dict of a Llama-family `DecoderConfig`."""
  if config.family != "llama":
    raise NotImplementedError(f"exporting family {config.family!r} is not implemented; only 'llama' is")
  if config.qkv_bias != config.o_bias:
    raise ValueError("Llama's attention_bias covers q/k/v and o together; qkv_bias and o_bias differ")
  rope = {"rope_type": config.rope_scaling.rope_type, "rope_theta": config.rope_theta}
  if config.rope_scaling.rope_type == "linear":
    rope["factor"] = config.rope_scaling.factor
  elif config.rope_scaling.rope_type == "llama3":
    for field in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
      rope[field] = getattr(config.rope_scaling, field)
  eos = list(config.eos_token_ids)
  return {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
      "num_key_value_heads": config.num_key_value_heads, "head_dim": config.head_dim,
      "hidden_act": config.hidden_act, "max_position_embeddings": config.max_position_embeddings,
      "rms_norm_eps": config.rms_norm_eps, "rope_parameters": rope,
      "tie_word_embeddings": config.tie_word_embeddings, "attention_bias": config.qkv_bias,
      "mlp_bias": config.mlp_bias, "bos_token_id": config.bos_token_id,
      "eos_token_id": eos[0] if len(eos) == 1 else (eos or None), "pad_token_id": config.pad_token_id,
      "dtype": dtype,
  }


def hf_state_dict(params: dict, config: DecoderConfig) -> dict[str, np.ndarray]:
  """Our param tree -> HF tensor names and layouts (the inverse of `translator.hf.weights.load_params`)."""
  out = {}
  for key_path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
    key = tuple(getattr(k, "key", getattr(k, "name", k)) for k in key_path)
    names, transpose = hf_names(key, config.num_hidden_layers)
    value = np.asarray(value)
    tensors = list(value) if key[:2] == ("model", "layers") else [value]
    for name, tensor in zip(names, tensors):
      out[name] = np.ascontiguousarray(tensor.T if transpose else tensor)
  return out


def save_lm(directory: str, config: DecoderConfig, params: dict, *, tokenizer_dir: Optional[str] = None,
            dtype: str = "float32") -> str:
  """Writes `directory` atomically (a temporary folder renamed into place) and returns it.

  tokenizer_dir: a folder whose tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
  `special_tokens_map.json`) are copied alongside.
  """
  directory = os.path.abspath(os.fspath(directory))
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
  try:
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(to_hf_dict(config, dtype), f, indent=2, sort_keys=True)
      f.write("\n")
    tensors = {k: jax.numpy.asarray(v, dtype) for k, v in hf_state_dict(params, config).items()}
    save_file(tensors, os.path.join(tmp, SINGLE), metadata={"format": "pt"})
    if tokenizer_dir is not None:
      for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = os.path.join(tokenizer_dir, name)
        if os.path.exists(src):
          shutil.copy(src, os.path.join(tmp, name))
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory
