"""A Hugging Face `config.json` -> a validated `DecoderConfig`.

Strict in the penzai way: every attribute in the file must be one the decoder uses, harmless metadata, or a
switch set to a value the decoder implements. Anything else raises `ValueError` naming the attribute and the
file, because an attribute that is silently ignored makes the converted model differ from the HF one.

Both layouts found on disk are read, and give identical configs:
  transformers 4.x: top-level `rope_theta` and `rope_scaling` (null, or a dict keyed `rope_type` or the legacy
    `type`), `torch_dtype`; Gemma 2 and Qwen2 files have no `layer_types` (they are derived as HF does).
  transformers 5: `rope_parameters = {"rope_type", "rope_theta", ...}`, `dtype`, `layer_types`.

An attribute absent from the file takes the default of the family's transformers config class (Gemma
`head_dim` 256 and tied embeddings, Mistral `sliding_window` 4096, ...). Where that class default is a
7B-model size that no file relies on (`num_key_value_heads` outside Llama), the attribute is required.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Optional, Union

from translator.models.config import ACTIVATIONS, FAMILIES, LAYER_TYPES, ROPE_TYPES, DecoderConfig, RopeScaling

_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_DEFAULT_ROPE_THETA = 10000.0

# What every PreTrainedConfig may write that does not change the forward pass: bookkeeping, training-only
# knobs, and the generation defaults that older transformers versions dumped into config.json.
_METADATA = frozenset({
    "_name_or_path", "_attn_implementation_autoset", "architectures", "transformers_version", "torch_dtype",
    "dtype", "use_cache", "initializer_range", "attention_dropout", "id2label", "label2id", "num_labels",
    "output_attentions", "output_hidden_states", "return_dict", "problem_type", "chunk_size_feed_forward",
    "is_decoder", "tie_encoder_decoder", "torchscript", "use_bfloat16", "tf_legacy_loss", "finetuning_task",
    "tokenizer_class", "prefix", "task_specific_params", "sep_token_id", "decoder_start_token_id",
    "cache_implementation",
    # Generation defaults (transformers 4.x `to_dict` wrote them); the decoder's sampler has its own.
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
})

# Read by `from_hf_dict` for every family.
_COMMON_USES = frozenset({
    "model_type", *_REQUIRED, "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "original_max_position_embeddings", "max_position_embeddings",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
})

# Attributes that are harmless only at these values: any other value asks for something the decoder lacks.
_COMMON_PINNED = {
    "pretraining_tp": (1, None),
    "partial_rotary_factor": (1.0, None),
    "use_bidirectional_attention": (False, None),
    "is_encoder_decoder": (False,),
    "add_cross_attention": (False,),
    "pruned_heads": ({},),
}

_GEMMA_DEFAULTS = dict(
    head_dim=256, max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=2, eos_token_id=1,
    pad_token_id=0, attention_bias=False)


@dataclasses.dataclass(frozen=True)
class _Family:
  """What one `model_type` reads (`uses`), tolerates at fixed values (`pinned`) and assumes when absent."""

  uses: frozenset
  pinned: Mapping[str, tuple]
  defaults: Mapping[str, Any]  # Value of an attribute absent from the file; required if not listed here.


_FAMILIES = {
    "llama": _Family(
        uses=_COMMON_USES | {"attention_bias", "mlp_bias"},
        pinned={},
        defaults=dict(
            num_key_value_heads=None, head_dim=None, max_position_embeddings=2048, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=None, hidden_act="silu", attention_bias=False,
            mlp_bias=False)),
    "mistral": _Family(
        uses=_COMMON_USES | {"sliding_window", "layer_types"},
        pinned={"attention_bias": (False,), "mlp_bias": (False,)},
        defaults=dict(
            head_dim=None, max_position_embeddings=131072, tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=2, pad_token_id=None, hidden_act="silu", sliding_window=4096)),
    "qwen2": _Family(
        uses=_COMMON_USES | {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"},
        pinned={"mlp_bias": (False,)},
        defaults=dict(
            head_dim=None, max_position_embeddings=32768, tie_word_embeddings=False, bos_token_id=None,
            eos_token_id=None, pad_token_id=None, hidden_act="silu", use_sliding_window=False,
            sliding_window=4096, max_window_layers=28)),
    "gemma": _Family(
        uses=_COMMON_USES | {"attention_bias", "hidden_activation"},
        pinned={"mlp_bias": (False,)},
        defaults=_GEMMA_DEFAULTS),
    "gemma2": _Family(
        uses=_COMMON_USES | {
            "attention_bias", "hidden_activation", "query_pre_attn_scalar", "attn_logit_softcapping",
            "final_logit_softcapping", "sliding_window", "sliding_window_size", "layer_types"},
        pinned={"mlp_bias": (False,)},
        defaults=dict(
            _GEMMA_DEFAULTS, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0, sliding_window=4096)),
}
assert set(_FAMILIES) == set(FAMILIES)


def read_config(path: Union[str, os.PathLike]) -> DecoderConfig:
  """Reads `config.json` from `path`, a model folder in HF layout or the file itself; see `from_hf_dict`."""
  path = pathlib.Path(path)
  file = path / "config.json" if path.is_dir() else path
  if not file.is_file():
    raise FileNotFoundError(
        f"No Hugging Face config.json at {file}; pass the model folder that holds config.json and the "
        f"*.safetensors files (or the config.json itself).")
  try:
    d = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON ({e}); re-download or re-save the checkpoint.") from e
  return from_hf_dict(d, source=str(file))


def from_hf_dict(d: Mapping[str, Any], source: str = "config.json") -> DecoderConfig:
  """Validates the contents of a HF `config.json` and returns the `DecoderConfig` it describes.

  Args:
    d: the parsed config.json (either the transformers 4.x or 5 layout).
    source: where `d` came from, for error messages.

  Raises:
    ValueError: the model_type is not supported, an attribute is unknown or has a value the decoder does not
      implement, a required attribute is missing, or attributes contradict each other.
  """
  if not isinstance(d, Mapping):
    raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}.")
  model_type = d.get("model_type")
  if model_type not in _FAMILIES:
    raise ValueError(
        f"{source}: model_type {model_type!r} is not supported; supported: {FAMILIES}. Convert only "
        f"checkpoints of these families.")
  fam = _FAMILIES[model_type]
  _check_attributes(d, model_type, fam, source)

  def get(key):
    if key in d:
      return d[key]
    if key in fam.defaults:
      return fam.defaults[key]
    if key == "rms_norm_eps":  # The same default in every family's config class.
      return 1e-6
    raise ValueError(
        f"{source}: required attribute {key!r} is missing (model_type {model_type!r}); every HF config.json "
        f"of this family has it. Is the file complete?")

  def positive_int(key, value=None):
    value = get(key) if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}.")
    return value

  def number(key, optional=False):
    value = get(key)
    if value is None and optional:
      return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      raise ValueError(f"{source}: {key} must be a number{' or null' if optional else ''}, got {value!r}.")
    return float(value)

  def flag(key):
    value = get(key)
    if not isinstance(value, bool):
      raise ValueError(f"{source}: {key} must be true or false, got {value!r}.")
    return value

  sizes = {key: positive_int(key) for key in _REQUIRED}
  num_heads, num_layers = sizes["num_attention_heads"], sizes["num_hidden_layers"]
  # HF's config classes set a null head_dim / num_key_value_heads from the other sizes.
  head_dim = get("head_dim")
  head_dim = positive_int("head_dim", sizes["hidden_size"] // num_heads if head_dim is None else head_dim)
  num_kv_heads = get("num_key_value_heads")
  num_kv_heads = positive_int("num_key_value_heads", num_heads if num_kv_heads is None else num_kv_heads)
  max_positions = positive_int("max_position_embeddings")
  rope_theta, rope_scaling = _rope(d, source, max_positions)
  layer_types, sliding_window = _layer_types(d, model_type, get, num_layers, source)

  switches = {}
  if model_type in ("llama", "gemma", "gemma2"):
    switches.update(qkv_bias=flag("attention_bias"), o_bias=flag("attention_bias"))
  if model_type == "llama":
    switches.update(mlp_bias=flag("mlp_bias"))
  if model_type == "qwen2":
    switches.update(qkv_bias=True, o_bias=False)
  if model_type in ("gemma", "gemma2"):
    switches.update(norm_plus_one=True, scale_embeddings=True)
  if model_type == "gemma2":
    query_pre_attn_scalar = number("query_pre_attn_scalar")
    if query_pre_attn_scalar <= 0:
      raise ValueError(f"{source}: query_pre_attn_scalar must be positive, got {query_pre_attn_scalar}.")
    switches.update(
        sandwich_norms=True, query_pre_attn_scalar=query_pre_attn_scalar,
        attn_logit_softcapping=number("attn_logit_softcapping", optional=True),
        final_logit_softcapping=number("final_logit_softcapping", optional=True))

  fields = dict(
      family=model_type,
      **sizes,
      num_key_value_heads=num_kv_heads,
      head_dim=head_dim,
      rms_norm_eps=number("rms_norm_eps"),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      max_position_embeddings=max_positions,
      tie_word_embeddings=flag("tie_word_embeddings"),
      hidden_act=_activation(d, model_type, get, source),
      sliding_window=sliding_window,
      layer_types=layer_types,
      bos_token_id=_token_id(get("bos_token_id"), "bos_token_id", source),
      eos_token_ids=_token_ids(get("eos_token_id"), source),
      pad_token_id=_token_id(get("pad_token_id"), "pad_token_id", source),
      **switches)
  try:
    return DecoderConfig(**fields)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e


def _check_attributes(d: Mapping[str, Any], model_type: str, fam: _Family, source: str):
  """Raises on an attribute that is neither used, nor metadata, nor pinned to a value it holds."""
  pinned = {**_COMMON_PINNED, **fam.pinned}
  for key, value in d.items():
    if key in fam.uses or key in _METADATA:
      continue
    if key in pinned:
      if not any(_same(value, ok) for ok in pinned[key]):
        raise ValueError(
            f"{source}: attribute {key!r} = {_short(value)} is not supported for model_type {model_type!r}: "
            f"the decoder only handles {key} in {pinned[key]}. Use a checkpoint without it, or implement it "
            f"in the decoder first.")
      continue
    raise ValueError(
        f"{source}: attribute {key!r} = {_short(value)} is not known for model_type {model_type!r}, so the "
        f"decoder does not handle it and the converted model could differ from the Hugging Face one. If it "
        f"is harmless metadata, add it to the known keys in translator/hf/config.py; otherwise implement it "
        f"in the decoder first.")


def _same(value: Any, expected: Any) -> bool:
  """JSON equality that keeps true/false apart from 1/0."""
  return value == expected and isinstance(value, bool) == isinstance(expected, bool)


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _rope(d: Mapping[str, Any], source: str, max_positions: int) -> tuple[float, RopeScaling]:
  """(rope_theta, RopeScaling) from 4.x `rope_theta`/`rope_scaling` or 5 `rope_parameters`."""
  theta = d.get("rope_theta")
  if theta is not None and (not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta <= 0):
    raise ValueError(f"{source}: rope_theta must be a positive number, got {theta!r}.")
  parsed = {key: _rope_dict(d, key, source, max_positions)
            for key in ("rope_scaling", "rope_parameters") if d.get(key) is not None}
  if not parsed:
    return float(_DEFAULT_ROPE_THETA if theta is None else theta), RopeScaling()
  if len(set(parsed.values())) > 1:
    raise ValueError(
        f"{source}: rope_scaling and rope_parameters describe different RoPE ({parsed['rope_scaling']} vs "
        f"{parsed['rope_parameters']}); keep only one of them.")
  return next(iter(parsed.values()))


def _rope_dict(d: Mapping[str, Any], key: str, source: str, max_positions: int) -> tuple[float, RopeScaling]:
  """Parses `d[key]`, a flat RoPE dict, the way transformers 5 standardizes it."""
  r = d[key]
  if not isinstance(r, Mapping):
    raise ValueError(f"{source}: {key} must be a JSON object or null, got {_short(r)}.")
  if any(k in LAYER_TYPES for k in r):
    raise ValueError(
        f"{source}: {key} gives a different RoPE per layer type ({sorted(r)}); the decoder does not handle it.")
  rope_type = r.get("rope_type", r.get("type", "default"))
  if "rope_type" in r and "type" in r and r["type"] != r["rope_type"]:
    raise ValueError(f"{source}: {key} has rope_type {r['rope_type']!r} but type {r['type']!r}; keep one.")
  if rope_type not in ROPE_TYPES:
    raise ValueError(
        f"{source}: {key} rope_type {rope_type!r} is not supported; the decoder handles {ROPE_TYPES}. Use a "
        f"checkpoint with one of those, or implement {rope_type!r} RoPE in the decoder first.")
  known = {"rope_type", "type", "rope_theta", "partial_rotary_factor"}
  known |= {"linear": {"factor"}, "llama3": {
      "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}}.get(rope_type, set())
  for k in r:
    if k not in known:
      raise ValueError(
          f"{source}: attribute {key}.{k} = {_short(r[k])} is not known for rope_type {rope_type!r}, so the "
          f"decoder does not handle it; remove it if it is harmless, otherwise implement it first.")
  if r.get("partial_rotary_factor", 1.0) not in (1, 1.0, None):
    raise ValueError(
        f"{source}: {key}.partial_rotary_factor = {r['partial_rotary_factor']!r} is not supported; the decoder "
        f"rotates the whole head (1.0).")

  def number(k, default=None):
    value = r.get(k, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"{source}: {key}.{k} must be a positive number for rope_type {rope_type!r}, got {value!r}.")
    return value

  # Priority as in transformers 5: the dict's own rope_theta, then the top-level one, then 10000.
  theta = r.get("rope_theta")
  top_theta = d.get("rope_theta")
  if theta is not None and top_theta is not None and float(theta) != float(top_theta):
    raise ValueError(
        f"{source}: {key}.rope_theta = {theta} contradicts rope_theta = {top_theta}; keep one of them.")
  theta = float(number("rope_theta", _DEFAULT_ROPE_THETA if top_theta is None else top_theta))
  if rope_type == "default":
    return theta, RopeScaling()
  if rope_type == "linear":
    return theta, RopeScaling("linear", factor=float(number("factor")))
  # llama3: a top-level original_max_position_embeddings wins over the dict's (as in transformers 5), and
  # max_position_embeddings stands in for both.
  original = d.get("original_max_position_embeddings", r.get("original_max_position_embeddings", max_positions))
  if not isinstance(original, int) or isinstance(original, bool) or original < 1:
    raise ValueError(f"{source}: original_max_position_embeddings must be a positive integer, got {original!r}.")
  low, high = float(number("low_freq_factor")), float(number("high_freq_factor"))
  if high <= low:
    raise ValueError(f"{source}: {key} needs high_freq_factor > low_freq_factor, got {high} <= {low}.")
  return theta, RopeScaling(
      "llama3", factor=float(number("factor")), low_freq_factor=low, high_freq_factor=high,
      original_max_position_embeddings=original)


def _activation(d: Mapping[str, Any], model_type: str, get, source: str) -> str:
  """The MLP activation, with Gemma's two keys resolved.

  Gemma 1: transformers 4.x used `hidden_activation` (tanh GELU when null); transformers 5 uses `hidden_act`,
  mapping the legacy "gelu" of the original releases to "gelu_pytorch_tanh". Gemma 2 uses only
  `hidden_activation`. When both keys are set they must agree.
  """
  if model_type not in ("gemma", "gemma2"):
    act = get("hidden_act")
  else:
    by_key = {}
    if d.get("hidden_activation") is not None:
      by_key["hidden_activation"] = d["hidden_activation"]
    if d.get("hidden_act") is not None:
      by_key["hidden_act"] = d["hidden_act"]
      if model_type == "gemma" and d["hidden_act"] == "gelu":
        by_key["hidden_act"] = "gelu_pytorch_tanh"
    act = next(iter(by_key.values()), "gelu_pytorch_tanh")
    if len(set(by_key.values())) > 1:
      raise ValueError(
          f"{source}: hidden_activation = {d['hidden_activation']!r} and hidden_act = {d['hidden_act']!r} "
          f"disagree; {model_type} uses hidden_activation. Make them equal.")
  if act not in ACTIVATIONS:
    raise ValueError(
        f"{source}: activation {act!r} is not supported; the decoder handles {ACTIVATIONS}. Use a checkpoint "
        f"with one of those, or add the activation to the decoder first.")
  return act


def _layer_types(d: Mapping[str, Any], model_type: str, get, num_layers: int,
                 source: str) -> tuple[tuple[str, ...], Optional[int]]:
  """(layer_types, sliding_window), derived the way each family's transformers config and model do.

  Llama, Gemma: every layer full. Mistral: a non-null `sliding_window` makes every layer sliding (its model
  ignores `layer_types`). Qwen2: `sliding_window` counts only with `use_sliding_window`, and then the layers
  from `max_window_layers` on slide. Gemma 2: even-indexed layers slide. A file's `layer_types` wins over the
  derivation for Qwen2 and Gemma 2. `sliding_window` is None when no layer slides.
  """
  if model_type in ("llama", "gemma"):
    return ("full_attention",) * num_layers, None
  window = get("sliding_window")
  if model_type == "qwen2":
    use_window = get("use_sliding_window")
    if not isinstance(use_window, bool):
      raise ValueError(f"{source}: use_sliding_window must be true or false, got {use_window!r}.")
    window = window if use_window else None
  if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
    raise ValueError(f"{source}: sliding_window must be a positive integer or null, got {window!r}.")

  if model_type == "mistral":
    derived = ("sliding_attention" if window is not None else "full_attention",) * num_layers
  elif model_type == "qwen2":
    first = get("max_window_layers")
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
      raise ValueError(f"{source}: max_window_layers must be a non-negative integer, got {first!r}.")
    derived = tuple("sliding_attention" if window is not None and i >= first else "full_attention"
                    for i in range(num_layers))
  else:  # gemma2
    derived = tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers))

  given = d.get("layer_types")
  if given is None:
    layer_types = derived
  else:
    if (not isinstance(given, list) or len(given) != num_layers or any(t not in LAYER_TYPES for t in given)):
      raise ValueError(
          f"{source}: layer_types must list one of {LAYER_TYPES} per layer ({num_layers}), got {_short(given)}.")
    layer_types = tuple(given)
    if model_type == "mistral" and layer_types != derived:
      raise ValueError(
          f"{source}: layer_types {_short(given)} differ from what transformers' Mistral model does (it ignores "
          f"layer_types: sliding_window={window!r} gives {derived[0]} everywhere). Remove layer_types or fix "
          f"sliding_window.")
  if "sliding_attention" not in layer_types:
    return layer_types, None
  if window is None:
    hint = " (use_sliding_window is false)" if model_type == "qwen2" else ""
    raise ValueError(
        f"{source}: layer_types has sliding_attention layers but no sliding_window{hint}; set sliding_window.")
  if model_type == "gemma2" and d.get("sliding_window_size", window) != window:
    raise ValueError(
        f"{source}: sliding_window_size = {d['sliding_window_size']!r} contradicts sliding_window = {window}; "
        f"transformers uses sliding_window. Make them equal.")
  return layer_types, window


def _token_id(value: Any, key: str, source: str) -> Optional[int]:
  if isinstance(value, list) and len(value) == 1:
    value = value[0]
  if value is None or (isinstance(value, int) and not isinstance(value, bool)):
    return value
  raise ValueError(f"{source}: {key} must be an integer or null, got {_short(value)}.")


def _token_ids(value: Any, source: str) -> tuple[int, ...]:
  values = [] if value is None else value if isinstance(value, list) else [value]
  if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
    raise ValueError(f"{source}: eos_token_id must be an integer, a list of integers or null, got {_short(value)}.")
  return tuple(values)
