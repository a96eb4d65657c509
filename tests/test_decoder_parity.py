"""The Flax decoder is the Hugging Face model: logits and greedy generations of tiny random models of
every family agree with `transformers` (PyTorch, CPU), with and without an embedded prefix."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

import translator  # pylint: disable=g-import-not-at-top
from tests import hf_models  # pylint: disable=g-import-not-at-top

LOGITS_ATOL = 1e-4
NEW_TOKENS = 32


@pytest.fixture(scope="module", params=sorted(hf_models.TINY_CONFIGS))
def pair(request, tmp_path_factory):
  """(our LM, the torch model) on the same weights."""
  path = hf_models.make_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
  return translator.load_lm(path), hf_models.load_torch_model(path)


def _ids(batch=2, length=20, seed=0):
  return np.random.default_rng(seed).integers(4, 128, size=(batch, length))


def _prefix_and_embeds(lm, model, ids, prefix_len, seed):
  """A random prefix `[B, P, D]` and HF `inputs_embeds` = [prefix][embeddings of ids]."""
  prefix = np.random.default_rng(seed).normal(size=(ids.shape[0], prefix_len, lm.config.hidden_size))
  prefix = prefix.astype(np.float32)
  with torch.no_grad():
    embeds = torch.cat([torch.tensor(prefix), model.get_input_embeddings()(torch.tensor(ids))], dim=1)
  return jnp.asarray(prefix), embeds


def _hf_generate(model, pad_id, **inputs):
  with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad_id).numpy()
  if "input_ids" in inputs:
    out = out[:, inputs["input_ids"].shape[1]:]
  return np.pad(out, ((0, 0), (0, NEW_TOKENS - out.shape[1])), constant_values=pad_id)


def test_logits_match_transformers(pair):
  lm, model = pair
  ids = _ids()
  with torch.no_grad():
    ref = model(torch.tensor(ids)).logits.numpy()
  ours = np.asarray(lm.logits(ids))
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, atol=LOGITS_ATOL, rtol=0)
  assert np.abs(ref).max() > 1.0  # the comparison is not between two near-zero tensors


def test_logits_with_prefix_match_transformers_inputs_embeds(pair):
  lm, model = pair
  ids = _ids()
  prefix, embeds = _prefix_and_embeds(lm, model, ids, 5, seed=1)
  with torch.no_grad():
    ref = model(inputs_embeds=embeds).logits.numpy()
  ours = np.asarray(lm.logits(ids, embedded_prefix=prefix))
  np.testing.assert_allclose(ours, ref, atol=LOGITS_ATOL, rtol=0)


def test_padded_rows_equal_unpadded(pair):
  lm, _ = pair
  ids = _ids()
  ref = np.asarray(lm.logits(ids))
  padded = np.zeros((2, 26), np.int64)
  mask = np.zeros((2, 26), bool)
  padded[0, 6:], mask[0, 6:] = ids[0], True  # left padding
  padded[1, :20], mask[1, :20] = ids[1], True  # right padding
  ours = np.asarray(lm.logits(padded, mask=mask))
  np.testing.assert_allclose(ours[0, 6:], ref[0], atol=LOGITS_ATOL, rtol=0)
  np.testing.assert_allclose(ours[1, :20], ref[1], atol=LOGITS_ATOL, rtol=0)


def test_greedy_generation_matches_transformers(pair):
  lm, model = pair
  ids = _ids()
  ref = _hf_generate(model, lm.pad_id, input_ids=torch.tensor(ids))
  ours = np.asarray(lm.generate(ids, max_new_tokens=NEW_TOKENS))
  np.testing.assert_array_equal(ours, ref)


def test_greedy_generation_with_prefix_matches_transformers(pair):
  lm, model = pair
  ids = _ids()
  prefix, embeds = _prefix_and_embeds(lm, model, ids, 4, seed=2)
  ref = _hf_generate(model, lm.pad_id, inputs_embeds=embeds)
  ours = np.asarray(lm.generate(ids, embedded_prefix=prefix, max_new_tokens=NEW_TOKENS))
  np.testing.assert_array_equal(ours, ref)


def test_cached_and_uncached_decoding_identical(pair):
  lm, _ = pair
  ids = _ids(batch=3, length=12, seed=3)
  mask = np.ones_like(ids, bool)
  mask[1, :5] = False  # a left-padded row
  mask[2, 9:] = False  # a right-padded row
  prefix = jnp.asarray(np.random.default_rng(4).normal(size=(3, 3, lm.config.hidden_size)), jnp.float32)
  cached = lm.sample(ids, mask=mask, embedded_prefix=prefix, max_new_tokens=NEW_TOKENS)
  uncached = lm.sample(ids, mask=mask, embedded_prefix=prefix, max_new_tokens=NEW_TOKENS, use_cache=False)
  np.testing.assert_array_equal(np.asarray(cached.tokens), np.asarray(uncached.tokens))
  np.testing.assert_array_equal(np.asarray(cached.lengths), np.asarray(uncached.lengths))


def test_bfloat16_logits_as_close_to_float32_as_transformers_bfloat16(pair):
  """In bfloat16 no two implementations agree to the bit; ours must be as near the float32 logits as HF's
  bfloat16 model is (both round every matmul's float32 sum to bfloat16)."""
  lm, model = pair
  ids = _ids()
  with torch.no_grad():
    exact = model(torch.tensor(ids)).logits.numpy()
    theirs = copy.deepcopy(model).to(torch.bfloat16)(torch.tensor(ids)).logits.float().numpy()
  ours = np.asarray(translator.load_lm(lm.path, dtype="bfloat16").logits(ids), np.float32)
  their_err, our_err = np.abs(theirs - exact).max(), np.abs(ours - exact).max()
  assert their_err > 0  # bfloat16 did round
  assert our_err <= 2 * their_err, (our_err, their_err)
