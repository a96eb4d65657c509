"""Weight import: every parameter comes from the file, sharded checkpoints load, and broken checkpoints
raise errors that name the culprit."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # pylint: disable=g-import-not-at-top

import translator  # pylint: disable=g-import-not-at-top
from tests import hf_models  # pylint: disable=g-import-not-at-top
from translator.hf import weights  # pylint: disable=g-import-not-at-top
from translator.models import functions as F  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
  return hf_models.make_tiny_model("llama_gqa_llama3rope", tmp_path_factory.mktemp("sharded"), layout="v4",
                                   sharded=True)


def _copy(src, dst):
  os.makedirs(dst)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
      g.write(f.read())
  return dst


def test_every_parameter_comes_from_the_file(sharded):
  lm = translator.load_lm(sharded)
  state = hf_models.load_torch_model(sharded).state_dict()
  flat = jax.tree_util.tree_flatten_with_path(lm.params)[0]
  abstract = jax.tree_util.tree_leaves(nn.unbox(F.abstract_params(lm.config)))
  assert len(flat) == len(abstract)
  for key_path, value in flat:
    names, transpose = weights.hf_names(tuple(k.key for k in key_path), lm.config.num_hidden_layers)
    tensors = [state[n].numpy().T if transpose else state[n].numpy() for n in names]
    expected = np.stack(tensors) if key_path[1].key == "layers" else tensors[0]
    np.testing.assert_array_equal(np.asarray(value), expected)


def test_sharded_checkpoint_matches_single_file(sharded, tmp_path):
  assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 1
  single = hf_models.make_tiny_model("llama_gqa_llama3rope", tmp_path / "single")
  ids = np.arange(4, 20)[None]
  np.testing.assert_array_equal(np.asarray(translator.load_lm(sharded).logits(ids)),
                                np.asarray(translator.load_lm(single).logits(ids)))


def test_bfloat16_at_load(sharded):
  lm = translator.load_lm(sharded, dtype="bfloat16")
  assert {x.dtype for x in jax.tree_util.tree_leaves(lm.params)} == {jnp.dtype(jnp.bfloat16)}
  ref = np.asarray(translator.load_lm(sharded).logits(np.arange(4, 20)[None]))
  ours = np.asarray(lm.logits(np.arange(4, 20)[None]))
  assert np.abs(ours - ref).max() < 0.1 * np.abs(ref).max()


def test_missing_shard_names_it(sharded, tmp_path):
  broken = _copy(sharded, tmp_path / "broken")
  shard = sorted(f for f in os.listdir(broken) if f.endswith(".safetensors"))[1]
  os.remove(os.path.join(broken, shard))
  with pytest.raises(FileNotFoundError, match=shard):
    translator.load_lm(broken)


def test_shape_mismatch_names_tensor_and_shapes(sharded, tmp_path):
  broken = _copy(sharded, tmp_path / "broken")
  config = json.loads(open(os.path.join(broken, "config.json")).read())
  config["intermediate_size"] = 96
  open(os.path.join(broken, "config.json"), "w").write(json.dumps(config))
  with pytest.raises(ValueError, match=r"down_proj\.weight.*has shape \(64, 128\).*implies \(64, 96\)"):
    translator.load_lm(broken)


def test_unsupported_config_attribute_names_it(sharded, tmp_path):
  broken = _copy(sharded, tmp_path / "broken")
  config = json.loads(open(os.path.join(broken, "config.json")).read())
  config["frobnicate_heads"] = True
  open(os.path.join(broken, "config.json"), "w").write(json.dumps(config))
  with pytest.raises(ValueError, match="frobnicate_heads"):
    translator.load_lm(broken)


def test_missing_and_unused_tensors_are_named(tmp_path):
  path = hf_models.make_tiny_model("qwen2_gqa", tmp_path / "m")
  tensors = load_file(os.path.join(path, "model.safetensors"))
  missing = dict(tensors)
  del missing["model.layers.1.self_attn.k_proj.bias"]
  save_file(missing, os.path.join(path, "model.safetensors"))
  with pytest.raises(KeyError, match=r"model\.layers\.1\.self_attn\.k_proj\.bias"):
    translator.load_lm(path)
  extra = dict(tensors, **{"model.layers.0.self_attn.q_norm.weight": torch.ones(16)})
  save_file(extra, os.path.join(path, "model.safetensors"))
  with pytest.raises(ValueError, match=r"q_norm\.weight"):
    translator.load_lm(path)


def test_missing_folder_and_weights_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    translator.load_lm(tmp_path / "nowhere")
  path = hf_models.make_tiny_model("llama_mha", tmp_path / "m")
  os.remove(os.path.join(path, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    translator.load_lm(path)


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope", "gemma2_gqa"])
def test_input_embeddings_read_alone_match_the_loaded_lm(name, tmp_path):
  """`weights.input_embeddings` reads one tensor and gives the loaded LM's input embeddings (Gemma: scaled)."""
  path = hf_models.make_tiny_model(name, tmp_path / name, layout="v4", sharded=True)
  lm = translator.load_lm(str(path))
  want = np.asarray(lm.embed(jnp.arange(lm.config.vocab_size)[None])[0])
  np.testing.assert_array_equal(weights.input_embeddings(str(path)), want)
  assert lm.config.scale_embeddings == (name == "gemma2_gqa")
