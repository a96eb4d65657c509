"""Our params saved in HF layout load back bit for bit, and `transformers` reads them as the same model."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import translator
from translator.hf import export
from translator.models import DecoderConfig, RopeScaling
from translator.models import functions as F

CONFIG = DecoderConfig(
    family="llama", vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=500.0,
    rope_scaling=RopeScaling("llama3", 4.0, 1.0, 4.0, 32), max_position_embeddings=256,
    bos_token_id=1, eos_token_ids=(2,), pad_token_id=0)


def test_save_then_load_round_trips(tmp_path):
  params = nn.unbox(F.init_params(CONFIG, jax.random.key(0)))
  path = export.save_lm(tmp_path / "lm", CONFIG, params)
  lm = translator.load_lm(path)
  assert lm.config == CONFIG
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(lm.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not [p for p in (tmp_path).iterdir() if p.name.startswith(".tmp")]


def test_a_bfloat16_export_loads_as_the_rounded_params_in_float32(tmp_path):
  """How the shipped target is stored: bf16 on disk, float32 (the exact bf16 values) at load."""
  params = nn.unbox(F.init_params(CONFIG, jax.random.key(2)))
  path = export.save_lm(tmp_path / "lm", CONFIG, params, dtype="bfloat16")
  lm = translator.load_lm(path, dtype="float32")
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(lm.params)):
    assert b.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(a.astype(jax.numpy.bfloat16).astype(np.float32)), np.asarray(b))


def test_transformers_reads_the_export(tmp_path):
  torch = pytest.importorskip("torch")
  from tests import hf_models  # pylint: disable=g-import-not-at-top
  params = nn.unbox(F.init_params(CONFIG, jax.random.key(1)))
  path = export.save_lm(tmp_path / "lm", CONFIG, params)
  ids = np.random.default_rng(0).integers(3, 96, size=(2, 12))
  with torch.no_grad():
    ref = hf_models.load_torch_model(path)(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(translator.load_lm(path).logits(ids)), ref, atol=1e-5, rtol=0)


def test_only_llama_is_exported():
  with pytest.raises(NotImplementedError, match="gemma2"):
    export.to_hf_dict(CONFIG.replace(family="gemma2"))
