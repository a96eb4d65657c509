"""translator.hf.config: HF config.json (4.x and 5 layouts) -> DecoderConfig, and its refusals."""

import copy
import json
import re

import pytest
import torch
import transformers

from tests import hf_models
from translator.hf import from_hf_dict, read_config
from translator.models.config import DecoderConfig, RopeScaling


def _hf_config(d: dict):
  """transformers' own reading of a config.json dict."""
  d = dict(d)
  return transformers.AutoConfig.for_model(d.pop("model_type"), **d)


def _assert_matches_transformers(cfg: DecoderConfig, hf):
  """The fields transformers derives itself (defaults, layer types, RoPE, ids) agree with ours."""
  for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
              "pad_token_id"):
    assert getattr(cfg, key) == getattr(hf, key), key
  assert cfg.rms_norm_eps == pytest.approx(hf.rms_norm_eps)
  assert cfg.head_dim == (getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads)
  eos = hf.eos_token_id
  assert cfg.eos_token_ids == (() if eos is None else tuple(eos) if isinstance(eos, list) else (eos,))
  assert cfg.hidden_act == (hf.hidden_activation if cfg.family == "gemma2" else hf.hidden_act)

  if cfg.family == "mistral":
    hf_layer_types = ["sliding_attention" if hf.sliding_window else "full_attention"] * hf.num_hidden_layers
  else:
    hf_layer_types = getattr(hf, "layer_types", None) or ["full_attention"] * hf.num_hidden_layers
  assert list(cfg.layer_types) == hf_layer_types
  if "sliding_attention" in cfg.layer_types:
    assert cfg.sliding_window == hf.sliding_window
  else:
    assert cfg.sliding_window is None

  rope = hf.rope_parameters
  assert cfg.rope_theta == rope["rope_theta"]
  assert cfg.rope_scaling.rope_type == rope["rope_type"]
  if rope["rope_type"] != "default":
    assert cfg.rope_scaling.factor == rope["factor"]
  if rope["rope_type"] == "llama3":
    for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
      assert getattr(cfg.rope_scaling, key) == rope[key], key

  if cfg.family in ("llama", "gemma", "gemma2"):
    assert cfg.qkv_bias == cfg.o_bias == hf.attention_bias
  if cfg.family == "llama":
    assert cfg.mlp_bias == hf.mlp_bias
  if cfg.family == "qwen2":
    assert (cfg.qkv_bias, cfg.o_bias) == (True, False)
  gemma = cfg.family in ("gemma", "gemma2")
  assert cfg.norm_plus_one == cfg.scale_embeddings == gemma
  assert cfg.sandwich_norms == (cfg.family == "gemma2")
  if cfg.family == "gemma2":
    assert cfg.query_pre_attn_scalar == hf.query_pre_attn_scalar
    assert cfg.attn_logit_softcapping == hf.attn_logit_softcapping
    assert cfg.final_logit_softcapping == hf.final_logit_softcapping
  else:
    assert cfg.query_pre_attn_scalar is cfg.attn_logit_softcapping is cfg.final_logit_softcapping is None


# --- Tiny models saved by transformers, in both layouts ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(hf_models.TINY_CONFIGS))
def test_v4_and_v5_layouts_give_the_same_config(name, tmp_path):
  v5 = hf_models.make_tiny_model(name, tmp_path / "v5")
  v4 = hf_models.make_tiny_model(name, tmp_path / "v4", layout="v4")
  v4_json = json.loads((v4 / "config.json").read_text())
  assert "rope_parameters" not in v4_json and "dtype" not in v4_json
  assert "rope_theta" in v4_json and v4_json["torch_dtype"] == "float32"
  assert "rope_parameters" in json.loads((v5 / "config.json").read_text())

  cfg = read_config(v5)
  assert read_config(v4) == cfg
  assert read_config(v4 / "config.json") == cfg
  assert cfg.family == hf_models.TINY_CONFIGS[name]["model_type"]
  _assert_matches_transformers(cfg, transformers.AutoConfig.from_pretrained(v5))
  _assert_matches_transformers(cfg, transformers.AutoConfig.from_pretrained(v4))

  # The v4 rewrite means the same model to transformers itself.
  ids = torch.arange(20).reshape(1, 20) * 7 % cfg.vocab_size
  with torch.no_grad():
    logits = [hf_models.load_torch_model(p)(ids).logits for p in (v5, v4)]
  torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)
  assert torch.isfinite(logits[0]).all()


def test_tiny_configs_cover_the_switches():
  cfgs = {name: from_hf_dict(hf_models.make_tiny_config(name).to_dict()) for name in hf_models.TINY_CONFIGS}
  families = [c.family for c in cfgs.values()]
  assert all(families.count(f) >= 2 for f in ("llama", "mistral", "qwen2", "gemma", "gemma2"))
  assert {c.num_attention_heads // c.num_key_value_heads for c in cfgs.values()} == {1, 2, 4}
  assert {c.tie_word_embeddings for c in cfgs.values()} == {True, False}
  assert {c.rope_scaling.rope_type for c in cfgs.values()} == {"default", "linear", "llama3"}
  assert any(c.qkv_bias and c.o_bias and c.mlp_bias for c in cfgs.values())
  assert any(len(c.eos_token_ids) > 1 for c in cfgs.values())
  for name in ("mistral_gqa_window", "qwen2_gqa_window", "gemma2_gqa", "gemma2_mha"):
    assert "sliding_attention" in cfgs[name].layer_types and cfgs[name].sliding_window == 6, name
  assert cfgs["gemma2_gqa"].layer_types == ("sliding_attention", "full_attention", "sliding_attention")
  assert cfgs["qwen2_gqa_window"].layer_types == ("full_attention", "sliding_attention", "sliding_attention")
  for c in cfgs.values():
    ids = [c.bos_token_id, c.pad_token_id, *c.eos_token_ids]
    assert all(0 <= i < c.vocab_size for i in ids), c


def test_sharded_save_has_several_shards_and_an_index(tmp_path):
  path = hf_models.make_tiny_model("llama_mha", tmp_path, sharded=True)
  shards = sorted(p.name for p in path.glob("model-*-of-*.safetensors"))
  assert len(shards) > 1
  index = json.loads((path / "model.safetensors.index.json").read_text())
  assert sorted(set(index["weight_map"].values())) == shards


# --- Refusals -----------------------------------------------------------------------------------------------


@pytest.fixture(name="llama_dir")
def _llama_dir(tmp_path):
  return hf_models.make_tiny_model("llama_gqa_llama3rope", tmp_path / "llama", layout="v4")


def _edit(directory, **changes):
  file = directory / "config.json"
  d = json.loads(file.read_text())
  d.update(changes)
  file.write_text(json.dumps(d))
  return file


def test_unknown_attribute_names_attribute_and_file(llama_dir):
  file = _edit(llama_dir, frobnicate=3)
  with pytest.raises(ValueError, match="frobnicate") as e:
    read_config(llama_dir)
  assert str(file) in str(e.value) and "does not handle" in str(e.value)


@pytest.mark.parametrize("changes, match", [
    (dict(rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64)), "yarn"),
    (dict(rope_scaling=dict(type="dynamic", factor=2.0)), "dynamic"),
    (dict(rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=64, mscale=2.0)), "rope_scaling.mscale"),
    (dict(pretraining_tp=2), "pretraining_tp"),
    (dict(hidden_act="relu"), "relu"),
    (dict(hidden_act="gelu"), "gelu"),
    (dict(model_type="gpt2"), "gpt2"),
    (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
    (dict(sliding_window=4), "sliding_window"),  # Llama has no sliding window.
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    (dict(rope_theta=20000.0, rope_parameters=dict(rope_type="default", rope_theta=10000.0)), "rope"),
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(eos_token_id="</s>"), "eos_token_id"),
])
def test_unsupported_values_raise(llama_dir, changes, match):
  file = _edit(llama_dir, **changes)
  with pytest.raises(ValueError, match=match) as e:
    read_config(llama_dir)
  assert str(file) in str(e.value)


def test_v5_rope_parameters_with_yarn_raise():
  d = hf_models.make_tiny_config("llama_mha").to_dict()
  d["rope_parameters"] = dict(rope_type="yarn", rope_theta=1e4, factor=4.0, original_max_position_embeddings=64)
  with pytest.raises(ValueError, match="yarn"):
    from_hf_dict(d)


def test_missing_config_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "config.json"))):
    read_config(tmp_path)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    read_config(tmp_path / "nowhere")


def test_family_specific_refusals():
  mistral = hf_models.make_tiny_config("mistral_gqa_window").to_dict()
  with pytest.raises(ValueError, match="layer_types"):
    from_hf_dict({**mistral, "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]})
  with pytest.raises(ValueError, match="attention_bias"):
    from_hf_dict({**mistral, "attention_bias": True})
  mistral.pop("num_key_value_heads")
  with pytest.raises(ValueError, match="num_key_value_heads.*missing"):
    from_hf_dict(mistral)

  qwen2 = hf_models.make_tiny_config("qwen2_gqa").to_dict()
  with pytest.raises(ValueError, match="use_sliding_window"):
    from_hf_dict({**qwen2, "layer_types": ["full_attention", "sliding_attention"], "sliding_window": 6})

  gemma = hf_models.make_tiny_config("gemma_gqa").to_dict()
  with pytest.raises(ValueError, match="disagree"):
    from_hf_dict({**gemma, "hidden_activation": "silu"})
  with pytest.raises(ValueError, match="final_logit_softcapping"):
    from_hf_dict({**gemma, "final_logit_softcapping": 30.0})  # Gemma 1 has no softcapping.

  gemma2 = hf_models.make_tiny_config("gemma2_gqa").to_dict()
  with pytest.raises(ValueError, match="sliding_window_size"):
    from_hf_dict({**gemma2, "sliding_window_size": 4096})
  with pytest.raises(ValueError, match="sliding_window"):
    from_hf_dict({**gemma2, "sliding_window": None})


# --- Layout details -----------------------------------------------------------------------------------------


def test_legacy_rope_type_key_and_defaults():
  d = hf_models.make_tiny_config("llama_gqa_linearrope").to_dict()
  expected = from_hf_dict(d)
  assert expected.rope_scaling == RopeScaling("linear", factor=4.0) and expected.rope_theta == 500.0
  del d["rope_parameters"]
  legacy = {**d, "rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 4.0}}
  assert from_hf_dict(legacy) == expected
  # Absent RoPE attributes: theta 10000, no scaling; null head_dim / num_key_value_heads: derived.
  plain = from_hf_dict({**d, "head_dim": None, "num_key_value_heads": None})
  assert (plain.rope_theta, plain.rope_scaling) == (10000.0, RopeScaling())
  assert (plain.head_dim, plain.num_key_value_heads) == (16, 4)


def test_llama3_original_max_position_embeddings_falls_back_to_max_position_embeddings():
  d = hf_models.make_tiny_config("llama_gqa_llama3rope").to_dict()
  del d["rope_parameters"]["original_max_position_embeddings"]
  cfg = from_hf_dict(d)
  assert cfg.rope_scaling.original_max_position_embeddings == d["max_position_embeddings"]
  _assert_matches_transformers(cfg, _hf_config(d))


def test_gemma_legacy_gelu_means_tanh_gelu():
  d = hf_models.make_tiny_config("gemma_mqa").to_dict()
  assert from_hf_dict({**d, "hidden_act": "gelu"}).hidden_act == "gelu_pytorch_tanh"
  assert from_hf_dict({**d, "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh"}).hidden_act == (
      "gelu_pytorch_tanh")
  assert _hf_config({**d, "hidden_act": "gelu"}).hidden_act == "gelu_pytorch_tanh"


# --- Real checkpoints' config.json, as published ------------------------------------------------------------

LLAMA_3_1_8B_INSTRUCT = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
}
LLAMA_2_7B = {
    "_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000,
}
MISTRAL_7B_INSTRUCT_V0_3 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 32768,
}
MISTRAL_7B_V0_1 = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
}
QWEN2_5_7B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
    "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 152064,
}
GEMMA_2_9B_IT = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 8192, "model_type": "gemma2",
    "num_attention_heads": 16, "num_hidden_layers": 42, "num_key_value_heads": 8, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
    "sliding_window_size": 4096, "torch_dtype": "float32", "transformers_version": "4.42.0.dev0",
    "use_cache": True, "vocab_size": 256000,
}
GEMMA_7B = {
    "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 2,
    "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 3072, "initializer_range": 0.02,
    "intermediate_size": 24576, "max_position_embeddings": 8192, "model_type": "gemma",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 16, "pad_token_id": 0,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
    "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
}
REAL_CONFIGS = {
    "Llama-3.1-8B-Instruct": LLAMA_3_1_8B_INSTRUCT, "Llama-3.2-1B": LLAMA_3_2_1B, "Llama-2-7b-hf": LLAMA_2_7B,
    "Mistral-7B-Instruct-v0.3": MISTRAL_7B_INSTRUCT_V0_3, "Mistral-7B-v0.1": MISTRAL_7B_V0_1,
    "Qwen2.5-7B-Instruct": QWEN2_5_7B_INSTRUCT, "gemma-2-9b-it": GEMMA_2_9B_IT, "gemma-7b": GEMMA_7B,
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_configs_parse_like_transformers(name, tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(REAL_CONFIGS[name]))
  cfg = read_config(tmp_path)
  _assert_matches_transformers(cfg, _hf_config(copy.deepcopy(REAL_CONFIGS[name])))


def test_real_configs_switches():
  llama31 = from_hf_dict(LLAMA_3_1_8B_INSTRUCT)
  assert llama31.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192) and llama31.rope_theta == 5e5
  assert llama31.eos_token_ids == (128001, 128008, 128009) and llama31.head_dim == 128
  assert llama31.num_key_value_heads == 8 and not llama31.tie_word_embeddings and not llama31.qkv_bias
  assert from_hf_dict(LLAMA_3_2_1B).tie_word_embeddings
  assert from_hf_dict(LLAMA_2_7B).rope_theta == 10000.0

  mistral = from_hf_dict(MISTRAL_7B_INSTRUCT_V0_3)
  assert mistral.sliding_window is None and set(mistral.layer_types) == {"full_attention"}
  assert mistral.rope_theta == 1e6 and mistral.vocab_size == 32768
  mistral01 = from_hf_dict(MISTRAL_7B_V0_1)
  assert mistral01.sliding_window == 4096 and set(mistral01.layer_types) == {"sliding_attention"}

  qwen = from_hf_dict(QWEN2_5_7B_INSTRUCT)
  assert (qwen.qkv_bias, qwen.o_bias, qwen.mlp_bias) == (True, False, False)
  assert qwen.sliding_window is None and set(qwen.layer_types) == {"full_attention"}
  assert qwen.eos_token_ids == (151645,) and qwen.head_dim == 128 and qwen.num_key_value_heads == 4

  gemma2 = from_hf_dict(GEMMA_2_9B_IT)
  assert gemma2.norm_plus_one and gemma2.scale_embeddings and gemma2.sandwich_norms
  assert (gemma2.attn_logit_softcapping, gemma2.final_logit_softcapping) == (50.0, 30.0)
  assert gemma2.query_pre_attn_scalar == 256 and gemma2.sliding_window == 4096
  assert gemma2.layer_types[:3] == ("sliding_attention", "full_attention", "sliding_attention")
  assert gemma2.layer_types.count("sliding_attention") == 21 and gemma2.tie_word_embeddings
  assert gemma2.eos_token_ids == (1, 107) and gemma2.hidden_act == "gelu_pytorch_tanh"

  gemma = from_hf_dict(GEMMA_7B)
  assert gemma.norm_plus_one and gemma.scale_embeddings and not gemma.sandwich_norms
  assert gemma.head_dim == 256 and gemma.hidden_act == "gelu_pytorch_tanh" and gemma.tie_word_embeddings
  assert gemma.attention_scale == 256 ** -0.5 and gemma.attn_logit_softcapping is None
