"""experiments.reproduce end to end on tiny random LMs: every stage runs, results.json has the documented
layout, and a rerun reuses every stage."""

import json
import os
import shutil
import threading

import pytest

from configs import default as default_config
from configs import serve_openai as serve_config
from experiments import reproduce
from experiments import serve_openai
from tests import fixtures
import translator
from translator.data import dod


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("reproduce")
  world, _ = fixtures.make_world(str(root / "world"))
  tok = os.path.join(world, "tokenizer")
  base = fixtures.make_tiny_lm(str(root / "base"), tok, seed=0)
  target = fixtures.make_tiny_lm(str(root / "target"), tok, seed=1, hidden_size=48, intermediate_size=96,
                                 num_hidden_layers=3, head_dim=12)
  cfg = default_config.get_config("smoke")
  cfg.dod_dir = os.path.join(world, "dod")
  cfg.base_lm, cfg.target_lm = base, target
  cfg.ablations = "design,cross"
  cfg.methods = "translator,translator_checked,inspect,nearest_token"
  cfg.prompt_seeds = 2  # a second prompt of training tasks (tune_seed1) for every translator
  workdir = str(root / "run")
  results = reproduce.run(cfg, workdir)
  return cfg, workdir, results


def test_results_have_every_method_and_cell(setup):
  cfg, workdir, results = setup
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  for family in ("general", "classification"):
    for method in ("translator", "translator_checked", "inspect", "nearest_token"):
      entry = results["translation"][family][method]
      keys = {"rouge_l", "cosine"} | ({"class_recall", "class_precision", "class_f1"} if family == "classification"
                                      else set())
      assert keys <= set(entry) and all(0.0 <= entry[k] <= 1.0 for k in keys)
    cells = results["execution"][family]
    prompts = ("gold", "translator", "translator_checked", "inspect", "nearest_token", "zero_shot", "few_shot")
    expected = {"soft@base"} | {f"{p}@{m}" for p in prompts for m in ("base", "target")}
    assert set(cells) == expected
    assert all(0.0 <= c["exact_match"] <= 1.0 and c["n"] > 0 for c in cells.values())
  assert "novel" in results and results["novel"]["execution"]["all"]["soft@base"]["n_tasks"] > 0
  for family in ("general", "classification"):  # the ablation's translators: scored, not executed
    assert {"translator_design", "translator_cross"} <= set(results["translation"][family])
  assert not any(c.startswith(("translator_design", "translator_cross")) for c in results["execution"]["all"])
  with open(os.path.join(workdir, "ablations", "cross", "translator", "translator.json")) as f:
    record = json.load(f)
  assert record["lm"]["hidden_size"] == 48 and record["prompt_shape"][1] == 32  # base prompts, target decoder
  with open(os.path.join(workdir, "tune_seed1", "prompts", "metadata.json")) as f:
    seed_names = json.load(f)["names"]
  split = {t.name: t.split for t in dod.read_dod(cfg.dod_dir)}
  assert 0 < len(seed_names) <= 24 and {split[n] for n in seed_names} == {"train"}  # the smoke's train cap
  for directory in ("translator", "ablations/cross"):  # every translator reads both stores
    with open(os.path.join(workdir, directory, "config.json")) as f:
      assert [os.path.basename(os.path.dirname(p)) for p in json.load(f)["stores"]] == ["tune", "tune_seed1"]
  s, t = results["inspect_layers"]["source_target"]
  assert 0 <= s <= 2 and 0 <= t <= 2  # the base LM has 2 layers: 0..2
  for name in ("results.md", "figures/methods.png", "figures/execution.png", "figures/translation_vs_soft.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "hard_prompts", "translator.json")) as f:
    hard = json.load(f)
  assert len(hard) == results["translation"]["all"]["translator"]["n_tasks"] + \
      results["novel"]["translation"]["all"]["translator"]["n_tasks"]
  # The checked translator kept, for every task, a candidate of highest score (agreement + weight x consensus);
  # the greedy text comes first.
  with open(os.path.join(workdir, "hard_prompts", "translator_checked.json")) as f:
    chosen = json.load(f)
  with open(os.path.join(workdir, "hard_prompts", "translator_checked_choice.json")) as f:
    choice = json.load(f)
  assert set(chosen) == set(hard) == set(choice["tasks"])
  for name, scores in choice["tasks"].items():
    assert list(scores)[0] == hard[name].strip() and 1 <= len(scores) <= 3  # greedy + up to 2 samples
    total = {c: s["agreement"] + cfg.checked.consensus * s["consensus"] for c, s in scores.items()}
    assert total[chosen[name]] == max(total.values())
  assert 0.0 <= choice["summary"]["replaced"] <= 1.0


def test_a_rerun_reuses_every_stage(setup):
  cfg, workdir, results = setup
  stamps = {p: os.path.getmtime(os.path.join(workdir, p)) for p in (
      "tune/prompts/metadata.json", "tune_seed1/prompts/metadata.json", "translator/translator/translator.json",
      "hard_prompts/inspect.json",
      "execution/soft@base.json", "translation.json")}
  again = reproduce.run(cfg, workdir)
  assert {p: os.path.getmtime(os.path.join(workdir, p)) for p in stamps} == stamps
  assert again["translation"] == results["translation"] and again["execution"] == results["execution"]


def test_an_interrupted_checked_translation_resumes_from_its_candidates_and_answers(setup):
  """Checked translation keeps its candidates and their answers as it goes: a run stopped in the middle of the
  answers reuses the candidates and the answers made, generates the rest and chooses the same prompts."""
  cfg, workdir, _ = setup
  out = os.path.join(workdir, "hard_prompts")
  paths = {name: os.path.join(out, f"translator_checked{name}") for name in (
      ".json", "_choice.json", "_candidates.json", "_answers.jsonl")}
  with open(paths[".json"]) as f:
    chosen = json.load(f)
  with open(paths["_answers.jsonl"]) as f:
    lines = f.read().splitlines()
  candidates_stamp = os.path.getmtime(paths["_candidates.json"])
  os.remove(paths[".json"])
  os.remove(paths["_choice.json"])
  with open(paths["_answers.jsonl"], "w") as f:  # stopped half way, in the middle of a line
    f.write("\n".join(lines[:len(lines) // 2]) + "\n" + lines[len(lines) // 2][:10])
  reproduce.run(cfg, workdir)
  with open(paths[".json"]) as f:
    assert json.load(f) == chosen
  assert os.path.getmtime(paths["_candidates.json"]) == candidates_stamp
  with open(paths["_answers.jsonl"]) as f:
    assert len([line for line in f.read().splitlines() if line.startswith("{") and line.endswith("}")]) == \
        len(lines)


def test_a_removed_ablation_is_trained_and_derived_anew(setup):
  """An ablation's hard prompts and scores live in its folder: removing the folder retrains the translator and
  derives both from it, rather than scoring the hard prompts of the translator that was removed."""
  cfg, workdir, results = setup
  directory = os.path.join(workdir, "ablations", "design")
  assert os.path.exists(os.path.join(directory, "hard_prompts.json"))
  assert not os.path.exists(os.path.join(workdir, "hard_prompts", "translator_design.json"))
  shutil.rmtree(directory)
  again = reproduce.run(cfg, workdir)
  assert os.path.getmtime(os.path.join(directory, "hard_prompts.json")) > \
      os.path.getmtime(os.path.join(directory, "translator", "translator.json"))
  assert again["translation"]["all"]["translator_design"] == results["translation"]["all"]["translator_design"]


def test_a_rerun_with_other_settings_is_refused(setup):
  cfg, workdir, _ = setup
  changed = cfg.copy_and_resolve_references()
  changed.tune.max_epochs = 3
  with pytest.raises(ValueError, match="stage 'tune' made with other settings.*max_epochs"):
    reproduce.run(changed, workdir)
  changed = cfg.copy_and_resolve_references()
  changed.eval.instances_per_task = 2
  with pytest.raises(ValueError, match="stage 'execution@base' made with other settings.*eval"):
    reproduce.run(changed, workdir)


def test_stage_settings_allow_new_fields_at_their_default(tmp_path):
  """A config field added after a stage ran, at an off value, does not make its workdir unusable; any other
  difference does, and the error names the nested field."""
  stages = reproduce.Stages(str(tmp_path))
  stages.check("tune", {"seed": 0, "optimizer": {"lr": 0.01}}, started=False)
  stages.check("tune", {"seed": 0, "optimizer": {"lr": 0.01, "noise": 0.0}, "extra": ""}, started=True)
  for changed, where in (({"lr": 0.01, "noise": 0.5}, "optimizer.noise"), ({"lr": 0.1, "noise": 0.0}, "optimizer.lr"),
                         ({"noise": 0.0}, "optimizer.lr")):
    with pytest.raises(ValueError, match=f"changed: \\['{where}'\\]"):
      reproduce.Stages(str(tmp_path)).check("tune", {"seed": 0, "optimizer": changed, "extra": ""}, started=True)
  with pytest.raises(ValueError, match="'extra'"):
    stages.check("tune", {"seed": 0, "optimizer": {"lr": 0.01, "noise": 0.0}, "extra": "x"}, started=True)
  # A shipped LM's folder is the same LM in any clone of the project; another folder is not.
  stages.check("lm", {"path": "/one/clone/translator/assets/lms/base"}, started=False)
  stages.check("lm", {"path": translator.shipped_lm("base")}, started=True)
  with pytest.raises(ValueError, match="'path'"):
    stages.check("lm", {"path": "/elsewhere/base"}, started=True)


def test_missing_lm_names_the_path_and_the_way_out(tmp_path):
  cfg = default_config.get_config("smoke")
  cfg.base_lm = cfg.target_lm = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere.*holds no LM.*build_world"):
    reproduce.run(cfg, str(tmp_path / "run"))


def test_the_target_can_be_an_openai_compatible_api(setup, tmp_path):
  """The target cells rerun through the project's own server on loopback (serving the target LM): every
  target cell is scored, each answer came over HTTP and is in the on-disk cache."""
  cfg, workdir, results = setup
  work = str(tmp_path / "run")
  shutil.copytree(workdir, work)
  for name in os.listdir(os.path.join(work, "execution")):
    if name.endswith("@target.json"):
      os.remove(os.path.join(work, "execution", name))
  scfg = serve_config.get_config()
  scfg.model_name, scfg.port, scfg.api_key_env = "target", 0, ""
  scfg.min_batch = scfg.max_batch = 8
  server = serve_openai.build_server(translator.load_lm(cfg.target_lm), scfg)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  try:
    api_cfg = cfg.copy_and_resolve_references()
    api_cfg.target.update(kind="api", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="target",
                          api_key_env="", concurrency=4, timeout_s=60.0)
    again = reproduce.run(api_cfg, work)
  finally:
    server.shutdown()
    server.server_close()
    thread.join(10)
  cells = again["execution"]["all"]
  assert {c for c in cells if c.endswith("@target")} == {c for c in results["execution"]["all"] if c.endswith("@target")}
  assert cells["soft@base"] == results["execution"]["all"]["soft@base"]  # base cells reused
  answers = [f for _, _, fs in os.walk(os.path.join(work, "api_cache", "target")) for f in fs if f.endswith(".json")]
  n_prompts = sum(1 for name in os.listdir(os.path.join(work, "execution")) if name.endswith("@target.json"))
  assert n_prompts == 7 and len(answers) > 0  # gold, translator, translator_checked, inspect, nearest, 0- and 3-shot
