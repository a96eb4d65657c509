"""experiments.pretrain end to end on the small world: a run cut at `stop_at_step` and restarted ends with the
same weights as an uncut run (resumption is exact), and a finished run rerun with a smaller stop is left as
it is."""

import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

from tests import fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pretrain(world: str, workdir: str, *overrides: str) -> None:
  cmd = [sys.executable, "-m", "experiments.pretrain", "--config", "configs/pretrain.py:base,smoke",
         "--workdir", workdir, f"--config.world_dir={world}", "--config.mesh.fsdp=2", *overrides]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]


def weights(workdir: str) -> dict:
  return safetensors.numpy.load_file(os.path.join(workdir, "hf", "model.safetensors"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  return fixtures.make_world(str(tmp_path_factory.mktemp("pretrain_world")))[0]


def test_a_cut_run_resumes_exactly(world, tmp_path):
  uncut, cut = str(tmp_path / "uncut"), str(tmp_path / "cut")
  pretrain(world, uncut)  # 20 steps (the smoke config)
  pretrain(world, cut, "--config.stop_at_step=10")
  halfway = weights(cut)
  pretrain(world, cut)  # resumes at step 10
  a, b = weights(uncut), weights(cut)
  assert sorted(a) == sorted(b) and any(not np.array_equal(halfway[k], b[k]) for k in b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  pretrain(world, cut, "--config.stop_at_step=10")  # already past step 10: exports the run as it is
  assert all(np.array_equal(a[k], v) for k, v in weights(cut).items())
  assert sorted(os.listdir(os.path.join(cut, "checkpoints")))[-1] == "20"
