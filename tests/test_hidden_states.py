"""The residual stream after every layer, and patching it, agree with Hugging Face (hidden states and a
forward hook that overwrites a layer's output); a prefix shared by several rows runs once with the same result."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

import translator  # pylint: disable=g-import-not-at-top
from tests import hf_models  # pylint: disable=g-import-not-at-top
from translator.models import Patch  # pylint: disable=g-import-not-at-top
from translator.models import functions as F  # pylint: disable=g-import-not-at-top

ATOL = 1e-4


@pytest.fixture(scope="module", params=["llama_gqa_llama3rope", "gemma2_gqa"])
def pair(request, tmp_path_factory):
  path = hf_models.make_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
  return translator.load_lm(path), hf_models.load_torch_model(path)


def _ids():
  return np.random.default_rng(0).integers(4, 128, size=(2, 14))


def test_hidden_states_match_transformers(pair):
  lm, model = pair
  ids = _ids()
  with torch.no_grad():
    ref = model(torch.tensor(ids), output_hidden_states=True).hidden_states
  out = lm.forward(ids, return_hidden=True)
  layers = lm.config.num_hidden_layers
  assert out.all_hidden.shape == (layers + 1, 2, 14, lm.config.hidden_size)
  assert len(ref) == layers + 1
  for layer in range(layers):  # HF's last entry is after the final norm.
    np.testing.assert_allclose(np.asarray(out.all_hidden[layer]), ref[layer].numpy(), atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(out.hidden), ref[layers].numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_patching_matches_a_transformers_hook(pair, layer):
  """Replacing positions 3..5 at the output of `layer` (0 = embeddings) == HF with the same overwrite."""
  lm, model = pair
  ids = _ids()
  vectors = np.random.default_rng(5).normal(size=(2, 3, lm.config.hidden_size)).astype(np.float32)
  start = 3

  def overwrite(hidden):
    hidden = hidden.clone()
    hidden[:, start:start + 3] = torch.tensor(vectors)
    return hidden

  if layer == 0:
    with torch.no_grad():
      embeds = overwrite(model.get_input_embeddings()(torch.tensor(ids)))
      ref = model(inputs_embeds=embeds).logits.numpy()
  else:
    def hook(module, args, output):
      if isinstance(output, tuple):
        return (overwrite(output[0]),) + tuple(output[1:])
      return overwrite(output)
    handle = model.model.layers[layer - 1].register_forward_hook(hook)
    try:
      with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    finally:
      handle.remove()

  patch = Patch.at(layer, start, jnp.asarray(vectors), length=ids.shape[1])
  ours = np.asarray(lm.forward(ids, patch=patch).logits)
  np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
  unpatched = np.asarray(lm.logits(ids))
  assert np.abs(unpatched - ours).max() > 1e-2  # the patch changed something


def test_per_row_patch_layers(pair):
  """Each row of a batch may patch a different layer (batched InSPEcT sweeps)."""
  lm, _ = pair
  ids = _ids()
  vectors = jnp.asarray(np.random.default_rng(6).normal(size=(2, 2, lm.config.hidden_size)), jnp.float32)
  both = lm.forward(ids, patch=Patch.at(jnp.array([1, 2]), jnp.array([2, 7]), vectors, length=14)).logits
  row0 = lm.forward(ids[:1], patch=Patch.at(1, 2, vectors[:1], length=14)).logits
  row1 = lm.forward(ids[1:], patch=Patch.at(2, 7, vectors[1:], length=14)).logits
  np.testing.assert_allclose(np.asarray(both[0]), np.asarray(row0[0]), atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(both[1]), np.asarray(row1[0]), atol=1e-5, rtol=0)


def test_long_left_padded_rows_match_transformers_with_causal_query_blocks(pair):
  """A 200-token batch runs attention in 4 causal query blocks (`attention_query_blocks`) and the scan over
  layers unrolled or not: same logits as Hugging Face on every real token, and as one unblocked pass."""
  lm, model = pair
  ids = np.random.default_rng(1).integers(4, 128, size=(2, 200))
  mask = np.ones_like(ids, dtype=bool)
  mask[1, :37] = False  # row 1 left-padded
  with torch.no_grad():
    ref = [model(torch.tensor(ids[i:i + 1, start:])).logits[0].numpy() for i, start in ((0, 0), (1, 37))]
  blocked = np.asarray(lm.logits(ids, mask=mask))
  assert lm.config.attention_query_blocks == 4
  np.testing.assert_allclose(blocked[0], ref[0], atol=ATOL, rtol=0)
  np.testing.assert_allclose(blocked[1, 37:], ref[1], atol=ATOL, rtol=0)
  for changes in (dict(attention_query_blocks=1), dict(scan_unroll=lm.config.num_hidden_layers)):
    other = translator.LM(config=lm.config.replace(**changes), params=lm.params, tokenizer=lm.tokenizer)
    np.testing.assert_allclose(np.asarray(other.logits(ids, mask=mask))[mask], blocked[mask], atol=1e-5, rtol=1e-5)


def test_shared_prefix_pass_equals_the_repeated_prefix(pair):
  """`forward_shared_prefix` (each prefix run once, its keys and values attended to by n rows) gives the
  logits and prefix gradients of `forward` on the prefix repeated n times, padded rows and Gemma 2's sliding
  windows included."""
  lm, _ = pair
  s, n, p, t = 2, 3, 5, 12
  rng = np.random.default_rng(7)
  prefix = jnp.asarray(rng.normal(size=(s, p, lm.config.hidden_size)).astype(np.float32))
  ids = jnp.asarray(rng.integers(4, 128, size=(s * n, t)), jnp.int32)
  mask = jnp.asarray(np.arange(t)[None] < np.array([t, 4, 9, 1, t, 7])[:, None])  # right-padded rows
  valid = jnp.concatenate([jnp.ones((s * n, p), bool), mask], axis=1)

  def loss(q, shared):
    if shared:
      out = F.forward_shared_prefix(lm.params, lm.config, ids, mask=mask, embedded_prefix=q, remat=True)
    else:
      out = F.forward(lm.params, lm.config, ids, mask=mask, embedded_prefix=jnp.repeat(q, n, axis=0))
    logits = jnp.where(valid[..., None], out.logits, 0.0)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * valid), logits

  (_, ref), ref_grad = jax.value_and_grad(loss, has_aux=True)(prefix, False)
  (_, got), got_grad = jax.value_and_grad(loss, has_aux=True)(prefix, True)
  assert got.shape == (s * n, p + t, lm.config.vocab_size)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-4, rtol=0)
  assert np.abs(np.asarray(ref_grad)).max() > 1e-3
  np.testing.assert_allclose(np.asarray(got_grad), np.asarray(ref_grad), atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="do not split evenly"):
    F.forward_shared_prefix(lm.params, lm.config, ids[:5], embedded_prefix=prefix)
