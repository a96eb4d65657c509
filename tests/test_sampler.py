"""Sampler behaviour beyond greedy parity: EOS handling, sampling from an rng, top-p, patched prefill."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from translator.models import DecoderConfig, Patch, sampler
from translator.models import functions as F

CONFIG = DecoderConfig(family="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, eos_token_ids=(2,), pad_token_id=0)


@pytest.fixture(scope="module")
def params():
  boxed = F.init_params(CONFIG, jax.random.key(0))
  # Peaked logits: scale the random weights up.
  return jax.tree_util.tree_map(lambda x: x * 6.0, nn.unbox(boxed))


def _ids(batch=4, length=7, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(3, 64, size=(batch, length)), jnp.int32)


def test_tokens_after_eos_are_padding_and_lengths_count_through_eos(params):
  ids = _ids()
  free = sampler.sample(params, CONFIG, ids, max_new_tokens=12, eos_ids=(), pad_id=0)
  # Declare the token greedy decoding produces at step 3 of row 0 an EOS: row 0 must stop there.
  eos = int(free.tokens[0, 3])
  out = sampler.sample(params, CONFIG, ids, max_new_tokens=12, eos_ids=(eos,), pad_id=0)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for row in range(ids.shape[0]):
    hits = np.flatnonzero(np.asarray(free.tokens[row]) == eos)
    stop = hits[0] + 1 if hits.size else 12
    assert lengths[row] == stop
    np.testing.assert_array_equal(tokens[row, :stop], np.asarray(free.tokens[row, :stop]))
    assert (tokens[row, stop:] == 0).all()
  assert lengths[0] <= 4


def test_sampling_is_a_function_of_the_rng(params):
  ids = _ids()
  a = sampler.sample(params, CONFIG, ids, max_new_tokens=16, temperature=1.0, rng=jax.random.key(1))
  b = sampler.sample(params, CONFIG, ids, max_new_tokens=16, temperature=1.0, rng=jax.random.key(1))
  c = sampler.sample(params, CONFIG, ids, max_new_tokens=16, temperature=1.0, rng=jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()
  with pytest.raises(ValueError, match="rng"):
    sampler.sample(params, CONFIG, ids, max_new_tokens=4, temperature=1.0)


def test_tiny_top_p_is_greedy(params):
  ids = _ids()
  greedy = sampler.sample(params, CONFIG, ids, max_new_tokens=16)
  nucleus = sampler.sample(params, CONFIG, ids, max_new_tokens=16, temperature=1.0, top_p=1e-6,
                           rng=jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(greedy.tokens), np.asarray(nucleus.tokens))


def test_top_p_filter_keeps_the_smallest_nucleus():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(sampler.top_p_filter(logits, 0.7)))
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  kept = np.isfinite(np.asarray(sampler.top_p_filter(logits, 0.81)))
  np.testing.assert_array_equal(kept, [[True, True, True, False]])


def test_argmax_takes_the_first_maximum():
  x = jnp.asarray([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -0.5, -0.5]])
  np.testing.assert_array_equal(np.asarray(sampler.argmax(x)), np.asarray(jnp.argmax(x, -1)))


def test_patched_prefill_cached_equals_uncached(params):
  ids = _ids(length=9)
  prefix = jax.random.normal(jax.random.key(4), (4, 3, CONFIG.hidden_size))
  vectors = jax.random.normal(jax.random.key(5), (4, 2, CONFIG.hidden_size)) * 3
  patch = Patch.at(jnp.array([0, 1, 2, 1]), 5, vectors, length=12)
  cached = sampler.sample(params, CONFIG, ids, embedded_prefix=prefix, patch=patch, max_new_tokens=10)
  uncached = sampler.sample(params, CONFIG, ids, embedded_prefix=prefix, patch=patch, max_new_tokens=10,
                            use_cache=False)
  plain = sampler.sample(params, CONFIG, ids, embedded_prefix=prefix, max_new_tokens=10)
  np.testing.assert_array_equal(np.asarray(cached.tokens), np.asarray(uncached.tokens))
  assert (np.asarray(cached.tokens) != np.asarray(plain.tokens)).any()
  # The first new token is the argmax of the patched forward pass at the last position.
  logits = F.forward(params, CONFIG, ids, embedded_prefix=prefix, patch=patch).logits[:, -1]
  np.testing.assert_array_equal(np.asarray(cached.tokens[:, 0]), np.asarray(jnp.argmax(logits, -1)))
