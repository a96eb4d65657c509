"""The prompt-tuning entry point as a subprocess, on a tiny random Llama: `kill -9` after the first checkpoint
and the same command again give bit-identical prompts to an uninterrupted run; 2 processes x 4 devices (through
launch/local_processes.sh and jax.distributed) give the prompts of 1 process x 8 devices."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import fixtures
from translator.tuning import store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES_8 = "--xla_force_host_platform_device_count=8"


def command(world: dict, workdir: str, *extra: str) -> list[str]:
  return [sys.executable, "-m", "experiments.tune_prompts", "--config", "configs/tune_toy.py:smoke",
          "--workdir", workdir, f"--config.world_dir={world['root']}", f"--config.lm_path={world['lm_dir']}",
          *extra]


def environment(**overrides) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=DEVICES_8, TOKENIZERS_PARALLELISM="false")
  for key in ("TRANSLATOR_NUM_PROCESSES", "TRANSLATOR_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    env.pop(key, None)
  env.update(overrides)
  return env


def run(cmd, env, log):
  with open(log, "w") as out:
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=240, check=False)
  if done.returncode:
    with open(log) as f:
      raise AssertionError(f"{cmd} failed with {done.returncode}:\n{f.read()[-4000:]}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tune_run_world"))
  fixtures.make_world(root)
  return {"root": root, "lm_dir": fixtures.make_tiny_lm(os.path.join(root, "lm"), os.path.join(root, "tokenizer"))}


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
  """An uninterrupted run: 1 process, 8 devices."""
  workdir = str(tmp_path_factory.mktemp("tune_reference"))
  run(command(world, workdir), environment(), os.path.join(workdir, "log.txt"))
  return store.read(os.path.join(workdir, "prompts"))


def test_kill9_then_rerun_is_bitwise_identical(world, reference, tmp_path):
  workdir = str(tmp_path / "killed")
  cmd = command(world, workdir, "--config.step_sleep_s=0.3")  # slow steps, so the kill lands mid-run
  log = open(tmp_path / "first.txt", "w")
  proc = subprocess.Popen(cmd, cwd=REPO, env=environment(), stdout=log, stderr=subprocess.STDOUT)
  first = os.path.join(workdir, "checkpoints", "4", "commit_success.txt")  # smoke: checkpoint_every=4 of 12 steps
  deadline = time.time() + 180
  while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  assert proc.wait(timeout=30) == -signal.SIGKILL
  log.close()
  assert os.path.exists(first), "the run ended or timed out before its first checkpoint"
  assert not os.path.exists(os.path.join(workdir, "prompts")), "the run finished before it was killed"
  run(cmd, environment(), str(tmp_path / "second.txt"))
  with open(tmp_path / "second.txt") as f:
    assert "resumed from step" in f.read()
  names, prompts, meta = store.read(os.path.join(workdir, "prompts"))
  ref_names, ref_prompts, ref_meta = reference
  assert names == ref_names
  np.testing.assert_array_equal(prompts, ref_prompts)
  assert meta == ref_meta


def test_two_processes_equal_one_process(world, reference, tmp_path):
  workdir = str(tmp_path / "two")
  cmd = " ".join(command(world, workdir))
  run(["bash", "launch/local_processes.sh", "2", cmd], environment(DEVICES_PER_PROCESS="4"), str(tmp_path / "log.txt"))
  with open(tmp_path / "log.txt") as f:
    assert f.read().count("over 8 devices, 2 processes") == 2
  names, prompts, meta = store.read(os.path.join(workdir, "prompts"))
  ref_names, ref_prompts, ref_meta = reference
  assert names == ref_names
  np.testing.assert_allclose(prompts, ref_prompts, atol=1e-6, rtol=0)  # observed: bitwise equal
  assert [m["best_epoch"] for m in meta.values()] == [m["best_epoch"] for m in ref_meta.values()]
