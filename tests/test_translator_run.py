"""The translator end to end on a tiny world: two fake prompt stores (two seeds) over a tiny random Llama, each
config (paper: identity + LoRA; design: transformer + frozen decoder; design_lora: transformer + LoRA; cross:
linear into a wider LM) trains a few steps, selects an epoch by validation ROUGE-L, writes eval/valid.json and a
translator that experiments.translate loads; a cut run resumes from its checkpoint and ends where an uncut run ends."""

import json
import os

import jax
import numpy as np
import pytest

from configs import translator_cross, translator_design, translator_design_lora, translator_paper
from experiments import train_translator, translate
from tests import fixtures
from translator.tuning import store

P = 4


def fake_store(directory: str, tasks, width: int, seed: int) -> str:
  """A prompt store of the DoD's train/test/novel tasks with random `[P, width]` prompts."""
  rng = np.random.default_rng(seed)
  names = [t.name for t in tasks]
  prompts = rng.normal(0.0, 0.02, (len(tasks), P, width)).astype(np.float32)
  records = [{"family": t.family, "task_split": t.split, "seed": seed} for t in tasks]
  store.write(directory, names, prompts, records)
  return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("translator_world"))
  _, tasks = fixtures.make_world(root)
  tok = os.path.join(root, "tokenizer")
  base = fixtures.make_tiny_lm(os.path.join(root, "base"), tok)
  target = fixtures.make_tiny_lm(os.path.join(root, "target"), tok, seed=1, hidden_size=48, intermediate_size=96)
  # A small DoD: 8 train tasks per family, 2 test and 1 novel per family.
  chosen = []
  for f in ("classification", "general"):
    for split, n in (("train", 8), ("test", 2), ("novel", 1)):
      chosen += [t for t in tasks if t.family == f and t.split == split][:n]
  stores = [fake_store(os.path.join(root, f"store{s}"), chosen, 32, s) for s in (0, 1)]
  return {"root": root, "base": base, "target": target, "tasks": chosen, "stores": stores}


def smoke_config(module, world, **overrides):
  c = module.get_config("smoke")
  c.world_dir = world["root"]
  c.stores = tuple(world["stores"])
  c.lm_path = world["target"] if module is translator_cross else world["base"]
  if module is translator_cross:
    c.encoder.align_with = world["base"]  # the LM of the (fake) prompts: same width and tokenizer
  c.mesh.update(data=2, fsdp=2, tensor=2)
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def paper_run(world, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("paper_run"))
  return workdir, train_translator.run(smoke_config(translator_paper, world), workdir)


@pytest.mark.parametrize("module", [translator_paper, translator_design, translator_design_lora, translator_cross],
                         ids=["paper", "design", "design_lora", "cross"])
def test_train_select_translate(module, world, tmp_path, request):
  if module is translator_paper:
    workdir, out = request.getfixturevalue("paper_run")
  else:
    workdir = str(tmp_path / "run")
    out = train_translator.run(smoke_config(module, world), workdir)
  assert out["steps"] == 6 and [h["epoch"] for h in out["history"]] == [1, 2]
  valid = json.load(open(os.path.join(workdir, "eval", "valid.json")))
  assert set(valid) >= {"rouge_l", "rouge_l_by_family", "tasks", "epoch", "history"}
  assert valid["epoch"] == out["best"]["epoch"] and 0.0 <= valid["rouge_l"] <= 1.0
  splits = json.load(open(os.path.join(workdir, "splits.json")))
  assert {valid["tasks"][n]["split"] for n in valid["tasks"]} == {"train"}  # held-out train tasks
  assert set(valid["tasks"]) == set(splits["valid"]) and len(splits["valid"]) == 2  # one per family
  assert not set(splits["train"]) & (set(splits["valid"]) | set(splits["test"]) | set(splits["novel"]))
  for entry in valid["tasks"].values():
    assert len(entry["translations"]) == 2 and all(isinstance(x["text"], str) for x in entry["translations"])
  test = json.load(open(os.path.join(workdir, "eval", "test.json")))
  assert {e["split"] for e in test["tasks"].values()} == {"test"} and test["num_tasks"] == 4
  if module is not translator_paper:
    return
  # experiments.translate: a whole store, and one [P, D] prompt as .npy
  output = str(tmp_path / "hard.json")
  rows = translate.run(os.path.join(workdir, "translator"), world["stores"][0], output)
  assert len(rows) == len(world["tasks"]) and all(isinstance(r["hard_prompt"], str) for r in rows)
  assert json.load(open(output))["translations"] == rows
  names, prompts, _ = store.read(world["stores"][0])
  np.save(str(tmp_path / "one.npy"), prompts[3])
  one = translate.run(os.path.join(workdir, "translator"), str(tmp_path / "one.npy"))
  assert one == [{"name": "prompt_0", "hard_prompt": rows[3]["hard_prompt"]}]


def test_cut_run_resumes(world, paper_run, tmp_path):
  """max_steps=4 stops mid epoch 2 (after a checkpoint); the full command then resumes and ends like an uncut run."""
  _, full = paper_run
  cut_dir = str(tmp_path / "cut")
  cut = train_translator.run(smoke_config(translator_paper, world, final_splits="", max_steps=4), cut_dir)
  assert cut["steps"] == 4
  resumed = train_translator.run(smoke_config(translator_paper, world, final_splits=""), cut_dir)
  assert resumed["steps"] == 6
  assert [h["epoch"] for h in resumed["history"]] == [1, 2, 2]  # epoch 2 validated at the cut, then at its end
  assert resumed["history"][0] == full["history"][0]
  assert resumed["history"][2]["rouge_l"] == full["history"][1]["rouge_l"]
  # The same trajectory: the same batches, per-step rngs and optimizer state after the resume.
  for x, y in zip(jax.tree_util.tree_leaves(full["trainable"]), jax.tree_util.tree_leaves(resumed["trainable"])):
    np.testing.assert_allclose(x, y, atol=1e-6)
