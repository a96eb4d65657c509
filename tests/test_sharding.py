"""Params placed straight onto a mesh of 8 CPU devices give the same logits and generations as one device."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import translator
from tests import hf_models
from translator import sharding


def test_eight_devices_are_forced():
  assert jax.device_count() == 8


def test_spec_for_skips_axes_that_do_not_divide():
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  assert sharding.spec_for(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
  assert sharding.spec_for(("embed", "mlp"), (63, 128), mesh) == P(None, "tensor")
  assert sharding.spec_for(("batch", None), (8, 5), mesh) == P(("data", "fsdp"), None)
  assert sharding.spec_for(("batch", None), (2, 5), mesh) == P("data", None)
  assert sharding.spec_for(("prompt_tasks", "prompt_length", "prompt_embed"), (8, 4, 64), mesh) == P(None, None, None)
  with pytest.raises(KeyError, match="nonsense"):
    sharding.spec_for(("nonsense",), (4,), mesh)


def test_make_mesh_sizes():
  assert dict(sharding.make_mesh(fsdp=4).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  with pytest.raises(ValueError, match="devices"):
    sharding.make_mesh(data=3, fsdp=1, tensor=1)


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope", "gemma2_gqa"])
@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1), (1, 1, 8)])
def test_sharded_load_equals_one_device(tmp_path, name, shape):
  path = hf_models.make_tiny_model(name, tmp_path / name, sharded=True)
  mesh = sharding.make_mesh(*shape)
  one = translator.load_lm(path)
  many = translator.load_lm(path, mesh=mesh)
  kernel = many.params["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
  assert len(kernel.sharding.device_set) == 8
  assert kernel.sharding.spec != P(None, None, None) and kernel.sharding.spec != P()
  ids = np.random.default_rng(0).integers(4, 128, size=(8, 16))
  np.testing.assert_allclose(np.asarray(many.logits(ids)), np.asarray(one.logits(ids)), atol=5e-5, rtol=0)  # reduction order differs
  np.testing.assert_array_equal(np.asarray(many.generate(ids, max_new_tokens=8)),
                                np.asarray(one.generate(ids, max_new_tokens=8)))
