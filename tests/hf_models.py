"""Tiny random Hugging Face models (PyTorch, CPU) saved to disk, for parity tests of the Flax decoder.

Each entry of `TINY_CONFIGS` is the keyword arguments of the family's transformers config class (plus
`model_type`): hidden 64, 2-3 layers, vocab 128, 4 heads of 16 dims with 4 / 2 / 1 key-value heads. The
weights are drawn with a large `initializer_range`, so the logits are peaked and far apart and greedy
decoding does not flip on 1e-6 numeric noise. Nothing is downloaded and no tokenizer is saved.

  path = make_tiny_model("gemma2_gqa", tmp_path, layout="v4", sharded=True)
  torch_model = load_torch_model(path)
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Union

_COMMON = dict(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    head_dim=16, initializer_range=0.2, rms_norm_eps=1e-6, max_position_embeddings=256, bos_token_id=1,
    eos_token_id=2, pad_token_id=0)


def _tiny(model_type: str, **overrides: Any) -> dict[str, Any]:
  return dict(_COMMON, model_type=model_type, **overrides)


TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama_mha": _tiny("llama", num_key_value_heads=4),
    # original_max_position_embeddings=64 puts the 8 RoPE wavelengths (6 .. 2e4) in all three llama3 regimes:
    # kept (< 16), smoothed (16 .. 64) and divided by `factor` (> 64).
    "llama_gqa_llama3rope": _tiny(
        "llama", num_hidden_layers=3, num_key_value_heads=2, eos_token_id=[2, 3],
        rope_parameters=dict(
            rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=64)),
    "llama_mqa_bias_tied": _tiny(
        "llama", num_key_value_heads=1, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    "llama_gqa_linearrope": _tiny(
        "llama", num_key_value_heads=2, rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=4.0)),
    "mistral_gqa_window": _tiny("mistral", num_hidden_layers=3, num_key_value_heads=2, sliding_window=6),
    "mistral_mqa": _tiny(
        "mistral", num_key_value_heads=1, sliding_window=None, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1e6)),
    "qwen2_gqa": _tiny("qwen2", num_key_value_heads=2, eos_token_id=[2, 5]),
    "qwen2_mha_tied": _tiny("qwen2", num_key_value_heads=4, tie_word_embeddings=True),
    # Layers 1 and 2 slide (from max_window_layers on), layer 0 does not.
    "qwen2_gqa_window": _tiny(
        "qwen2", num_hidden_layers=3, num_key_value_heads=2, use_sliding_window=True, sliding_window=6,
        max_window_layers=1),
    "gemma_mqa": _tiny("gemma", num_key_value_heads=1),
    "gemma_gqa": _tiny("gemma", num_hidden_layers=3, num_key_value_heads=2, tie_word_embeddings=False),
    # Softcaps near the size of the logits, so that the tanh actually bends them; layers 0 and 2 slide.
    "gemma2_gqa": _tiny(
        "gemma2", num_hidden_layers=3, num_key_value_heads=2, sliding_window=6, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=8.0, eos_token_id=[2, 3]),
    "gemma2_mha": _tiny(
        "gemma2", num_key_value_heads=4, sliding_window=6, query_pre_attn_scalar=16, tie_word_embeddings=False),
}


def make_tiny_config(name: str):
  """The transformers config object of `TINY_CONFIGS[name]`."""
  import transformers  # pylint: disable=g-import-not-at-top

  kwargs = dict(TINY_CONFIGS[name])
  return transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def make_tiny_model(name: str, directory: Union[str, os.PathLike], *, layout: str = "v5", sharded: bool = False,
                    seed: int = 0) -> pathlib.Path:
  """Builds the random float32 `*ForCausalLM` of `TINY_CONFIGS[name]` and saves it in HF layout.

  Args:
    name: a key of TINY_CONFIGS.
    directory: the folder to write (config.json, generation_config.json, safetensors).
    layout: "v5" keeps config.json as transformers 5 writes it; "v4" rewrites it the way transformers 4.x
      checkpoints on the Hub look (see `to_v4_layout`).
    sharded: several model-0000x-of-0000y.safetensors files plus model.safetensors.index.json.
    seed: torch seed for the weights.

  Returns:
    The folder, as a pathlib.Path.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  if layout not in ("v4", "v5"):
    raise ValueError(f"layout must be 'v4' or 'v5', got {layout!r}")
  directory = pathlib.Path(directory)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(make_tiny_config(name), dtype=torch.float32)
  model.eval()
  model.save_pretrained(directory, safe_serialization=True, max_shard_size="100KB" if sharded else "50GB")
  if sharded and not (directory / "model.safetensors.index.json").is_file():
    raise AssertionError(f"save_pretrained wrote a single shard in {directory}")
  if layout == "v4":
    config_file = directory / "config.json"
    config = to_v4_layout(json.loads(config_file.read_text()))
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  return directory


def to_v4_layout(config: dict[str, Any]) -> dict[str, Any]:
  """Rewrites a transformers 5 config.json dict the way transformers 4.x checkpoints on the Hub look.

  Top-level `rope_theta` and `rope_scaling` (null for default RoPE) instead of `rope_parameters`,
  `torch_dtype` instead of `dtype`, no `layer_types` for Gemma 2 / Qwen2 (they are then derived, so this
  asserts that the derivation gives the same ones), `sliding_window` kept next to `use_sliding_window: false`
  in Qwen2 (as in Qwen2.5 files), Gemma 2's duplicate `hidden_act` and `cache_implementation`.
  """
  c = dict(config)
  c["transformers_version"] = "4.44.2"
  if "dtype" in c:
    c["torch_dtype"] = c.pop("dtype")
  rope = dict(c.pop("rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0})
  c["rope_theta"] = rope.pop("rope_theta")
  c["rope_scaling"] = None if rope["rope_type"] == "default" else rope
  if c.get("use_bidirectional_attention", False) is None:
    del c["use_bidirectional_attention"]
  layers = c["num_hidden_layers"]
  if c["model_type"] == "gemma2":
    c.pop("rope_scaling")  # Gemma2Config of 4.x had no rope_scaling.
    c["hidden_act"] = c["hidden_activation"]
    c["cache_implementation"] = "hybrid"
    derived = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    assert c.pop("layer_types") == derived, "v4 Gemma 2 files cannot express these layer_types"
  if c["model_type"] == "qwen2":
    window = c["sliding_window"] if c["use_sliding_window"] else None
    derived = ["sliding_attention" if window is not None and i >= c["max_window_layers"] else "full_attention"
               for i in range(layers)]
    assert c.pop("layer_types") == derived, "v4 Qwen2 files cannot express these layer_types"
    if not c["use_sliding_window"]:
      c["sliding_window"] = 4096
  return c


def load_torch_model(directory: Union[str, os.PathLike]):
  """The saved model in float32 and eval mode, with eager attention (honours softcapping and windows)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.AutoModelForCausalLM.from_pretrained(
      directory, dtype=torch.float32, attn_implementation="eager")
  return model.eval()
