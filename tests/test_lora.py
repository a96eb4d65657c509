"""LoRA on the decoder: a fresh LoRA (B = 0) leaves the logits unchanged; the LoRA forward equals the merged
weights `W + A B alpha/r`; the cached decode path equals the uncached one and the merged model; only targeted
projections get factors, stacked per layer, initialised like PEFT; dropout only with an rng."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import fixtures
from translator.models import functions as F
from translator.models import lora as lora_lib
from translator.models import sampler

V = 97
forward = jax.jit(F.forward, static_argnums=1, static_argnames=("compute_logits", "return_hidden", "remat"))


@pytest.fixture(scope="module")
def model():
  config = fixtures.tiny_config(V)
  params = nn.unbox(F.init_params(config, jax.random.key(0)))
  ids = jax.random.randint(jax.random.key(1), (3, 9), 4, V)
  mask = jnp.ones(ids.shape, bool).at[0, :3].set(False).at[2, -2:].set(False)  # left and right padding
  prefix = 0.02 * jax.random.normal(jax.random.key(2), (3, 4, config.hidden_size))
  return config, params, ids, mask, prefix


def random_b(lora, seed=3):
  """The same factors with a random B (a LoRA that has trained)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(lora.weights)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [0.2 * jax.random.normal(k, x.shape) if path[-1].key == "lora_b" else x
         for k, (path, x) in zip(keys, leaves)]
  return lora.replace(weights=jax.tree_util.tree_unflatten(tree, new))


def test_fresh_lora_leaves_logits_unchanged(model):
  config, params, ids, mask, prefix = model
  lora = lora_lib.init(config, lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.1), jax.random.key(5))
  base = forward(params, config, ids, mask=mask, embedded_prefix=prefix).logits
  with_lora = forward(params, config, ids, mask=mask, embedded_prefix=prefix, lora=lora).logits
  np.testing.assert_array_equal(np.asarray(base), np.asarray(with_lora))
  # Factors for the 7 projections, stacked [L, ...]; A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT), B = 0.
  layers = lora.weights["model"]["layers"]
  assert sorted(layers["self_attn"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
  assert sorted(layers["mlp"]) == ["down_proj", "gate_proj", "up_proj"]
  a, b = layers["self_attn"]["q_proj"]["lora_a"], layers["self_attn"]["q_proj"]["lora_b"]
  assert a.shape == (2, 32, 4) and b.shape == (2, 4, 32) and not np.any(np.asarray(b))
  assert np.abs(a).max() <= 1 / np.sqrt(32) and np.abs(a).max() > 0.5 / np.sqrt(32)
  assert not np.array_equal(a[0], a[1])  # each layer draws its own A
  assert lora_lib.count(lora) == 2 * 4 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 2 + (64 + 32))
  only_q = lora_lib.init(config, lora_lib.LoraConfig(rank=2, targets=("q_proj",)), jax.random.key(5))
  assert list(only_q.weights["model"]["layers"]) == ["self_attn"]
  assert list(only_q.weights["model"]["layers"]["self_attn"]) == ["q_proj"]
  with pytest.raises(ValueError, match="not decoder projections"):
    lora_lib.LoraConfig(targets=("lm_head",))


def test_merged_equals_lora_forward(model):
  config, params, ids, mask, prefix = model
  lora = random_b(lora_lib.init(config, lora_lib.LoraConfig(rank=4, alpha=8.0), jax.random.key(5)))
  base = forward(params, config, ids, mask=mask, embedded_prefix=prefix).logits
  out = forward(params, config, ids, mask=mask, embedded_prefix=prefix, lora=lora).logits
  merged = forward(lora_lib.merge(params, lora), config, ids, mask=mask, embedded_prefix=prefix).logits
  assert np.abs(np.asarray(out - base)).max() > 1e-2  # the update matters
  np.testing.assert_allclose(np.asarray(out), np.asarray(merged), atol=2e-5, rtol=0)
  # Dropout only when a dropout rng is passed; then it changes the output, and differs per rng.
  dropped = lambda r: forward(params, config, ids, mask=mask, lora=lora.replace(
      config=lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.5)), dropout_rng=r).logits
  same = forward(params, config, ids, mask=mask, lora=lora).logits
  np.testing.assert_array_equal(np.asarray(forward(params, config, ids, mask=mask, lora=lora.replace(
      config=lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.5))).logits), np.asarray(same))
  assert not np.allclose(dropped(jax.random.key(0)), same, atol=1e-3)
  assert not np.allclose(dropped(jax.random.key(0)), dropped(jax.random.key(1)), atol=1e-3)


def test_cached_decode_with_lora_equals_uncached(model):
  config, params, ids, mask, prefix = model
  lora = random_b(lora_lib.init(config, lora_lib.LoraConfig(rank=4, alpha=8.0), jax.random.key(6)), seed=4)
  run = lambda **kw: np.asarray(sampler.sample(params, config, ids, mask=mask, embedded_prefix=prefix,
                                               max_new_tokens=6, eos_ids=(2,), pad_id=3, **kw).tokens)
  cached, uncached = run(lora=lora), run(lora=lora, use_cache=False)
  merged = np.asarray(sampler.sample(lora_lib.merge(params, lora), config, ids, mask=mask, embedded_prefix=prefix,
                                     max_new_tokens=6, eos_ids=(2,), pad_id=3).tokens)
  np.testing.assert_array_equal(cached, uncached)
  np.testing.assert_array_equal(cached, merged)
  # The hidden states of the cached prefill equal the full pass.
  x, positions, valid = F.inputs(params, config, ids, mask, prefix)
  from translator.models.decoder import KVCache  # pylint: disable=g-import-not-at-top
  split_lora = lora.replace(weights=F.split_layers(lora.weights, config))
  hidden, _ = F.cached_step(F.split_layers(params, config), config, x, positions, valid,
                            KVCache.init(config, 3, x.shape[1] + 2, x.dtype), lora=split_lora)
  full = forward(params, config, ids, mask=mask, embedded_prefix=prefix, lora=lora).hidden
  np.testing.assert_allclose(np.asarray(hidden)[np.asarray(valid)], np.asarray(full)[np.asarray(valid)], atol=2e-5)
