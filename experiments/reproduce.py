r"""The paper's comparisons in one command: tune -> translator -> baselines -> execution -> results.

  python -m experiments.reproduce --config configs/default.py --workdir /tmp/reproduce

Stages. Each reads the previous stage's output from the workdir and is skipped when its own output is
there, so rerunning the command reuses finished stages (tuning and translator training also resume from
their checkpoints in the middle of a stage). Delete a stage's folder to redo it. On several hosts (a TPU
pod) every process reads the workdir, so it must be one shared filesystem (NFS, a GCS FUSE mount); process
0 writes.

  world          WORKDIR/world/dod        the synthetic DoD (deterministic, seconds), unless config.dod_dir
  tune           WORKDIR/tune/            experiments.tune_prompts on the base LM -> the prompt store
  tune_seed{k}   WORKDIR/tune_seed{k}/    with config.prompt_seeds > 1: more prompts of training tasks (another
                 seed's sample of the train split, tuned from that seed), read by the translators
  translator     WORKDIR/translator/      experiments.train_translator (prompts of the DoD's "train" tasks)
  hard_prompts   WORKDIR/hard_prompts/{method}.json   task -> hard prompt, for every evaluated task;
                 inspect_layers.json: InSPEcT's (source, target) layer sweep on training prompts;
                 translator_checked_choice.json: the checked translator's candidates and their agreement
                 (translator_checked_candidates.json and _answers.jsonl: its work so far, for a resumed run)
  translation    the hard prompts against the instructions (ROUGE-L, MiniLM cosine, class R/P/F1)
  execution      WORKDIR/execution/{prompt}@{model}.json  per-task scores and predictions of every prompt
                 kind (soft on base; gold, methods, zero_shot, few_shot on base and target)
  ablations      WORKDIR/ablations/{name}/    other translators (config.ablations, e.g. "design,cross":
                 configs/translator_{name}.py trained like the main one), scored like the methods, not
                 executed; its hard prompts and scores stay in its folder (hard_prompts.json, translation.json),
                 so removing the folder retrains it and derives both anew
  report         WORKDIR/results.json, results.md (printed), figures/*.png

results.json (documented in the README):
  translation[family][method]        {rouge_l, cosine, n_tasks} (+ class_recall, class_precision, class_f1 for
                                     "classification"), family in all | classification | general
  execution[family]["<prompt>@<model>"]  {exact_match, rouge_l, n_tasks, n}
  both on the DoD's held-out "test" tasks; the same for the never-pretrained "novel" tasks under
  results["novel"]; inspect_layers, timing (seconds per stage), config.
"""

import dataclasses
import functools
import importlib
import json
import os
import re
import time
from typing import Optional

from absl import app, flags, logging
import jax
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np

import translator
from translator import distributed
from translator.baselines import inspect_baseline, nearest_token
from translator.data import dod, synthetic
from translator.evaluation import lm_eval, portability, report, translation_quality
from translator.execution import api
from translator.translation import checked
from translator.translation import export as translator_export
from translator.tuning import store

from experiments import train_translator, tune_prompts

METHODS = ("translator", "translator_checked", "inspect", "nearest_token")


def _is_main() -> bool:
  return jax.process_index() == 0


def _write_json(path: str, obj) -> None:
  """Process 0 writes; on several processes, all wait for it, since every process reads the workdir."""
  if _is_main():
    dod.atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"wrote {os.path.basename(path)}")


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


_SHIPPED_PATH = re.compile(r'[^"]*/translator/assets/lms/')  # a shipped LM's folder, in any clone


def _changed(old, new, path: str = "") -> list[str]:
  """The paths where two settings trees differ. A key the old tree lacks counts as unchanged when its new value
  is off (0, "", False, None, empty): a config field added since the stage ran, at its default, which keeps
  the behaviour from before the field existed."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      where = f"{path}.{k}" if path else k
      if k not in old and not new[k]:
        continue
      out += [where] if (k not in old or k not in new) else _changed(old[k], new[k], where)
    return out
  return [] if old == new else [path or "(settings)"]


class Stages:
  """Runs each stage at most once per workdir, times it, and refuses to mix configs: the settings a stage
  ran with are kept in WORKDIR/stages.json, and reusing (or resuming) it under other settings is an error."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.timing, self.settings = {}, {}
    for name, attr in (("timing.json", "timing"), ("stages.json", "settings")):
      path = os.path.join(workdir, name)
      if os.path.exists(path):
        setattr(self, attr, _read_json(path))

  def _portable(self, settings):
    """Paths inside the workdir relative to it, so a moved or copied workdir is still reused; shipped LMs'
    folders relative to the package, which differs from clone to clone."""
    text = json.dumps(settings, sort_keys=True, default=str)
    text = text.replace(os.path.abspath(self.workdir), "WORKDIR").replace(self.workdir, "WORKDIR")
    return json.loads(_SHIPPED_PATH.sub("SHIPPED/", text))

  def check(self, name: str, settings, started: bool) -> None:
    """Records the settings of stage `name`; an error if some of its output (`started`) came from others."""
    settings = self._portable(settings)
    old = self.settings.get(name)
    if old is not None:
      old = self._portable(old)  # records written before a path was made portable
    changed = [] if old is None else _changed(old, settings)
    if started and changed:
      raise ValueError(f"{self.workdir} holds stage {name!r} made with other settings (changed: {changed[:8]}); "
                       f"use another workdir, or delete that stage's output")
    if old != settings:
      self.settings[name] = settings
      _write_json(os.path.join(self.workdir, "stages.json"), self.settings)

  def run(self, name: str, settings, done: bool, fn, started: Optional[bool] = None):
    """Runs `fn` unless `done`. `started`: whether any output of the stage exists (default: `done`)."""
    self.check(name, settings, done if started is None else started)
    if done:
      logging.info("stage %s: reused from %s", name, self.workdir)
      return None
    logging.info("stage %s: running", name)
    start = time.perf_counter()
    out = fn()
    self.timing[name] = round(time.perf_counter() - start, 1)
    logging.info("stage %s: done in %.1f s", name, self.timing[name])
    _write_json(os.path.join(self.workdir, "timing.json"), self.timing)
    return out


# ---------------------------------------------------------------------------------------------------------
# Stages.


def world_dir(cfg, workdir: str) -> str:
  """The DoD folder: config.dod_dir, or the synthetic world written into WORKDIR/world/dod."""
  if cfg.dod_dir:
    return cfg.dod_dir
  directory = os.path.join(workdir, "world", "dod")
  if not os.path.exists(os.path.join(directory, dod.MANIFEST_FILE)):  # written last by write_dod
    if cfg.world not in ("default", "small"):
      raise ValueError(f"config.world {cfg.world!r} is not 'default' or 'small'")
    world = synthetic.default_config() if cfg.world == "default" else synthetic.small_config()
    if _is_main():
      tasks = synthetic.generate(world)
      dod.write_dod(tasks, directory, metadata={"generator": "translator.data.synthetic",
                                                "config": json.loads(world.to_json())})
    multihost_utils.sync_global_devices("world written")
  return directory


def stage_configs(cfg, workdir: str, dod_dir: str):
  tune = cfg.tune.copy_and_resolve_references()
  tune.unlock()
  tune.dod, tune.dod_dir, tune.world_dir = "dir", dod_dir, ""
  tune.lm_path, tune.lm_dtype, tune.seed = cfg.base_lm, cfg.lm_dtype, cfg.seed
  tune.mesh = cfg.mesh
  tr = cfg.translator.copy_and_resolve_references()
  tr.unlock()
  tr.dod_dir, tr.world_dir = dod_dir, ""
  tr.lm_path = tr.lm_path or cfg.base_lm
  tr.lm_dtype, tr.seed, tr.mesh = cfg.lm_dtype, cfg.seed, cfg.mesh
  tr.stores = (os.path.join(workdir, "tune", "prompts"),) + tuple(
      os.path.join(workdir, f"tune_seed{k}", "prompts") for k in range(1, cfg.prompt_seeds))
  return tune, tr


def seed_tune_config(tune, k: int):
  """The tune config of prompt seed `k` >= 1 (`config.prompt_seeds`): the training split alone (with its cap),
  sampled and tuned with seed `tune.seed + k`."""
  c = tune.copy_and_resolve_references()
  c.seed = tune.seed + k
  c.task_splits = "train"
  c.max_tasks_per_split = ",".join(f"train={n}" for split, n in tune_prompts.parse_caps(
      tune.get("max_tasks_per_split", "")).items() if split == "train")
  return c


def rows_of(names, tasks) -> list[int]:
  """The prompt-table rows (`names`: the store's task names) of `tasks`."""
  row = {n: r for r, n in enumerate(names)}
  return [row[t.name] for t in tasks]


def evaluated_tasks(cfg, tasks_by_name, store_names) -> list[dod.Task]:
  splits = [s.strip() for s in cfg.eval.task_splits.split(",") if s.strip()]
  chosen = [tasks_by_name[n] for n in store_names if tasks_by_name[n].split in splits]
  if not chosen:
    raise ValueError(f"the prompt store has no task of the evaluated splits {splits}: tune them "
                     "(config.tune.task_splits)")
  return sorted(chosen, key=lambda t: t.name)


def translator_of(directory: str, decoder_path: str, cfg, base_lm_fn):
  """The translator in `directory`; its decoder is the loaded base LM when it decodes with that one."""
  return translator_export.load(directory, lm=base_lm_fn() if decoder_path == cfg.base_lm else None)


def soft_generate_fn(cfg, lm, layout, description: str):
  """(generate, bos): a GenerateFn reading `[soft prompt][BOS][text]` on the prompts' own LM, and the BOS
  embedding that goes before each prompt instead when it was tuned after BOS (else None)."""
  after_bos = layout["prompt_position"] == "after_bos"
  bos = np.asarray(lm.embed(np.array([[lm.config.bos_token_id]])))[0, 0] if after_bos else None
  generate = lm_eval.lm_generate_fn(lm, batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                    add_bos=not after_bos, description=description)
  return generate, bos


def _checked(cfg, lm, load_translator, names, prompts, eval_tasks, layout, out_dir):
  """The checked translator's hard prompts (translator/translation/checked.py); its candidates and their
  agreement go to hard_prompts/translator_checked_choice.json.

  Resumable: the candidates are kept in translator_checked_candidates.json and the candidates' answers on the
  probe inputs in translator_checked_answers.jsonl as they are made; a rerun reads both and runs only the rest.
  """
  c = cfg.checked
  rows = prompts[rows_of(names, eval_tasks)]
  candidates_path = os.path.join(out_dir, "translator_checked_candidates.json")
  if os.path.exists(candidates_path):
    saved = _read_json(candidates_path)
    options = [saved[task.name] for task in eval_tasks]
    logging.info("checked translation: candidates read from %s", candidates_path)
  else:
    translate = functools.partial(load_translator().translate, batch_size=cfg.translator.eval_batch_size)
    options = checked.candidates(translate, rows, c.samples, c.temperature, jax.random.PRNGKey(c.seed))
    _write_json(candidates_path, {task.name: texts for task, texts in zip(eval_tasks, options)})
  soft, bos = soft_generate_fn(cfg, lm, layout, "soft (check)")
  soft_rows = portability.with_bos(rows, bos)
  hard = lm_eval.lm_generate_fn(lm, batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                description="candidates (check)",
                                answers_path=os.path.join(out_dir, "translator_checked_answers.jsonl"))
  chosen, scores = checked.choose(eval_tasks, options, soft, soft_rows, hard, probe_split=c.probe_split,
                                  probe_instances=c.probe_instances, agreement=c.agreement, consensus=c.consensus)
  summary = checked.summary(scores, options, chosen)
  logging.info("checked translation: %s", {k: round(v, 3) for k, v in summary.items()})
  _write_json(os.path.join(out_dir, "translator_checked_choice.json"),
              {"summary": summary, "tasks": {task.name: score for task, score in zip(eval_tasks, scores)}})
  return chosen


def hard_prompts_stage(cfg, workdir, base_lm_fn, names, prompts, tasks_by_name, eval_tasks, methods, translator_lm,
                       layout):
  """Writes WORKDIR/hard_prompts/{method}.json (task -> text) for the methods not yet there; `translator_lm`:
  the path of the translator's decoder."""
  out_dir = os.path.join(workdir, "hard_prompts")
  eval_rows = rows_of(names, eval_tasks)
  load_translator = functools.cache(  # loaded once for both translator methods
      lambda: translator_of(os.path.join(workdir, "translator", "translator"), translator_lm, cfg, base_lm_fn))
  for method in methods:
    path = os.path.join(out_dir, f"{method}.json")
    if os.path.exists(path):
      logging.info("hard prompts of %s: reused %s", method, path)
      continue
    start = time.perf_counter()
    lm = base_lm_fn()
    if method == "translator":
      texts = load_translator().translate(prompts[eval_rows], batch_size=cfg.translator.eval_batch_size)
    elif method == "translator_checked":
      texts = _checked(cfg, lm, load_translator, names, prompts, eval_tasks, layout, out_dir)
    elif method == "nearest_token":
      texts = nearest_token.project(lm, prompts[eval_rows], exclude_special=cfg.nearest_token.exclude_special).texts
    elif method == "inspect":
      texts = _inspect(cfg, workdir, lm, names, prompts, tasks_by_name, eval_tasks)
    else:
      raise ValueError(f"method {method!r} is not one of {METHODS}")
    hard = {t.name: text for t, text in zip(eval_tasks, texts)}
    _write_json(path, hard)
    logging.info("hard prompts of %s: %d tasks in %.1f s, e.g. %r -> %r", method, len(hard),
                 time.perf_counter() - start, eval_tasks[0].instruction, texts[0])


SHARED_TRANSLATOR_KNOBS = ("epochs", "batch_size", "optimizer", "data", "max_new_tokens", "eval_batch_size",
                           "log_every", "checkpoint_every", "seed", "lm_dtype", "mesh", "stores", "dod_dir",
                           "world_dir", "final_splits", "max_steps_per_epoch", "max_steps")


def ablation_config(cfg, name: str, tr_cfg):
  """The translator of `configs/translator_{name}.py` trained like the main one (`SHARED_TRANSLATOR_KNOBS`),
  decoding with the base LM, or with the target LM for "cross"."""
  try:
    module = importlib.import_module(f"configs.translator_{name}")
  except ModuleNotFoundError as e:
    raise ValueError(f"config.ablations: no configs/translator_{name}.py") from e
  c = module.get_config()
  for key in SHARED_TRANSLATOR_KNOBS:
    c[key] = tr_cfg[key]
  if name == "cross":
    if not os.path.exists(os.path.join(cfg.target_lm, "config.json")):
      raise ValueError(f"the cross ablation decodes with the target LM, but config.target_lm={cfg.target_lm!r} "
                       "holds no local LM")
    c.lm_path = cfg.target_lm
    if c.encoder.align_with:
      c.encoder.align_with = cfg.base_lm  # the LM the prompts were tuned on
  else:
    c.lm_path = cfg.base_lm
  return c


def ablations_stage(cfg, workdir, stages, tr_cfg, tune_s, prompts, names, eval_tasks, similarity_fn,
                    base_lm_fn) -> dict:
  """Extra translators (config.ablations), each trained in WORKDIR/ablations/{name} and scored on the same
  evaluated tasks; returns {"translator_{name}": translation_quality.score(...)}."""
  out = {}
  for name in [a.strip() for a in cfg.ablations.split(",") if a.strip()]:
    c = ablation_config(cfg, name, tr_cfg)
    directory = os.path.join(workdir, "ablations", name)
    method = f"translator_{name}"
    stages.run(method, {"translator": c.to_dict(), "tune": tune_s},
               os.path.exists(os.path.join(directory, "translator", "translator.json")),
               lambda: train_translator.run(c, directory), started=os.path.isdir(directory))
    path = os.path.join(directory, "hard_prompts.json")
    if not os.path.exists(path):
      t = translator_of(os.path.join(directory, "translator"), c.lm_path, cfg, base_lm_fn)
      texts = t.translate(prompts[rows_of(names, eval_tasks)], batch_size=c.eval_batch_size)
      _write_json(path, {task.name: text for task, text in zip(eval_tasks, texts)})
    scores = os.path.join(directory, "translation.json")
    if not os.path.exists(scores):
      _write_json(scores, translation_quality.score(eval_tasks, _read_json(path), similarity_fn))
    out[method] = _read_json(scores)
  return out


def _inspect(cfg, workdir, lm, names, prompts, tasks_by_name, eval_tasks) -> list[str]:
  """InSPEcT hard prompts of `eval_tasks`: the layer pair is chosen on training prompts by MiniLM cosine to
  the gold text, as the paper (once; kept in hard_prompts/inspect_layers.json); demonstrations come from
  training tasks."""
  icfg = inspect_baseline.InspectConfig.from_config(cfg.inspect)
  icfg = dataclasses.replace(icfg, seed=cfg.seed)
  train_tasks = [tasks_by_name[n] for n in names if tasks_by_name[n].split == "train"]
  if not train_tasks:
    raise ValueError("InSPEcT chooses its layers on training prompts, but the prompt store has no 'train' task")
  p = prompts.shape[1]
  layers_path = os.path.join(workdir, "hard_prompts", "inspect_layers.json")
  if os.path.exists(layers_path):
    chosen = _read_json(layers_path)
  else:
    select = [train_tasks[i] for i in inspect_baseline.selection_indices(len(train_tasks), icfg)]
    targets = inspect_baseline.target_prompts([t.family for t in select], train_tasks, p, icfg,
                                              names=[t.name for t in select])
    best, table = inspect_baseline.select_layers(lm, prompts[rows_of(names, select)], targets,
                                                 [inspect_baseline.gold_reference(t) for t in select], icfg)
    chosen = {"layers": list(best), "sweep": table, "prompts": [t.name for t in select]}
    _write_json(layers_path, chosen)
  logging.info("InSPEcT layers (source, target) = %s", chosen["layers"])
  targets = inspect_baseline.target_prompts([t.family for t in eval_tasks], train_tasks, p, icfg,
                                            names=[t.name for t in eval_tasks])
  texts = inspect_baseline.describe(lm, prompts[rows_of(names, eval_tasks)], targets,
                                    tuple(chosen["layers"]), icfg)
  return [inspect_baseline.hard_prompt(t, text) for t, text in zip(eval_tasks, texts)]


def executor(model_cfg, name: str, workdir: str, lm_fn, cfg):
  """A GenerateFn for the model `name` ("base" | "target") of config."""
  if model_cfg.kind == "local":
    return lm_eval.lm_generate_fn(lm_fn(), batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                  description=name)
  if model_cfg.kind == "api":
    if not (model_cfg.base_url and model_cfg.model):
      raise ValueError(f"config.{name}.kind='api' needs config.{name}.base_url and config.{name}.model")
    client = api.ChatClient(model_cfg.base_url, model_cfg.model, api_key_env=model_cfg.api_key_env or None,
                            max_tokens=cfg.eval.max_new_tokens, concurrency=model_cfg.concurrency,
                            timeout_s=model_cfg.timeout_s, max_retries=model_cfg.max_retries,
                            cache_dir=model_cfg.cache_dir or os.path.join(workdir, "api_cache", name))
    return api.as_generate_fn(client)
  raise ValueError(f"config.{name}.kind {model_cfg.kind!r} is not 'local' or 'api'")


def cells(methods) -> list[tuple[str, str]]:
  """(prompt kind, model) of every execution cell: soft on base; gold, methods, zero- and few-shot on both."""
  kinds = ["soft", "gold"] + list(methods) + list(portability.BASELINE_PROMPTS)
  return [(k, m) for m in ("base", "target") for k in kinds if not (k == "soft" and m != "base")]


def execution_stage(cfg, workdir, eval_tasks, names, prompts, hard, lms, layout):
  """Runs every cell not yet in WORKDIR/execution; returns {cell: score}."""
  out_dir = os.path.join(workdir, "execution")
  results = {}
  for kind, model in cells(hard):
    model_cfg = cfg[model]
    name = portability.cell(kind, model)
    path = os.path.join(out_dir, f"{name}.json")
    if os.path.exists(path):
      results[name] = _read_json(path)["score"]
      continue
    start = time.perf_counter()
    items = portability.build_items(eval_tasks, kind, hard_prompts=hard.get(kind),
                                    instances_per_task=cfg.eval.instances_per_task,
                                    num_demos=cfg.eval.num_demos, seed=cfg.seed)
    if kind == "soft":
      generate, bos = soft_generate_fn(cfg, lms["base"](), layout, name)
      prefixes = portability.soft_prefixes(items, names, prompts, bos)
      score, predictions = portability.run_cell(generate, items, prefixes)
    else:
      generate = executor(model_cfg, model, workdir, lms[model], cfg)
      score, predictions = portability.run_cell(generate, items)
    results[name] = score
    _write_json(path, {"score": score, "predictions": [
        {"task": it.task, "index": it.index, "prediction": p, "gold": it.gold} for it, p in zip(items, predictions)]})
    logging.info("%-26s exact match %s  (%d prompts, %.1f s)", name,
                 {s: round(g["all"]["exact_match"], 3) for s, g in score["summary"].items()}, len(items),
                 time.perf_counter() - start)
  return results


# ---------------------------------------------------------------------------------------------------------
# The whole pipeline.


def run(cfg, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, "config.json"), json.loads(cfg.to_json_best_effort()))
  stages = Stages(workdir)
  methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
  for m in methods:
    if m not in METHODS:
      raise ValueError(f"config.methods: {m!r} is not one of {METHODS}")
  for name in ("base", "target"):
    if cfg[name].kind == "local" and not os.path.exists(os.path.join(cfg[name].path, "config.json")):
      raise FileNotFoundError(
          f"config.{name}.path={cfg[name].path!r} holds no LM (no config.json). The embedded default ships its "
          f"LMs in translator/assets/lms; else build them (bash launch/build_world.sh DIR) and pass "
          f"--config.base_lm=DIR/base/hf --config.target_lm=DIR/target/hf")

  # ----- World, tuning, translator ---------------------------------------------------------------------------
  dod_dir = world_dir(cfg, workdir)
  tune_cfg, tr_cfg = stage_configs(cfg, workdir, dod_dir)
  store_dir = os.path.join(workdir, "tune", "prompts")
  tune_s = tune_cfg.to_dict()
  stages.run("tune", tune_s, os.path.exists(os.path.join(store_dir, "metadata.json")),
             lambda: tune_prompts.run(tune_cfg, os.path.join(workdir, "tune")),
             started=os.path.exists(os.path.join(workdir, "tune", "checkpoints")))
  for k in range(1, cfg.prompt_seeds):  # more prompts of training tasks: the translator's augmentation
    seed_cfg, seed_dir = seed_tune_config(tune_cfg, k), os.path.join(workdir, f"tune_seed{k}")
    stages.run(f"tune_seed{k}", seed_cfg.to_dict(), os.path.exists(os.path.join(seed_dir, "prompts", "metadata.json")),
               functools.partial(tune_prompts.run, seed_cfg, seed_dir),
               started=os.path.exists(os.path.join(seed_dir, "checkpoints")))
    tune_s = {**tune_s, f"seed{k}": seed_cfg.to_dict()}  # later stages depend on every store
  tr_s = {"translator": tr_cfg.to_dict(), "tune": tune_s}
  if {"translator", "translator_checked"} & set(methods):
    stages.run("translator", tr_s, os.path.exists(os.path.join(workdir, "translator", "translator", "translator.json")),
               lambda: train_translator.run(tr_cfg, os.path.join(workdir, "translator")),
               started=os.path.exists(os.path.join(workdir, "translator", "checkpoints")))

  names, prompts, meta = store.read(store_dir)
  prompts = np.asarray(prompts, np.float32)
  layout = {"prompt_position": next(iter(meta.values())).get("prompt_position", "before_bos")}
  tasks_by_name = {t.name: t for t in dod.read_dod(dod_dir)}
  eval_tasks = evaluated_tasks(cfg, tasks_by_name, names)

  # ----- LMs, loaded once and only when a stage needs them ------------------------------------------------------
  mesh = translator.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  cache = {}

  def lm_of(name):
    def get():
      if name not in cache:
        cache[name] = translator.load_lm(cfg[name].path, cfg.lm_dtype, mesh=mesh)
      return cache[name]
    return get

  lms = {"base": lm_of("base"), "target": lm_of("target")}
  similarity_fn = translation_quality.default_similarity

  # ----- Hard prompts, their quality, their execution -------------------------------------------------------------
  hard_dir = os.path.join(workdir, "hard_prompts")
  hard_s = {"methods": methods, "inspect": cfg.inspect.to_dict(), "nearest_token": cfg.nearest_token.to_dict(),
            "eval_splits": cfg.eval.task_splits, "base_lm": cfg.base_lm, "tune": tune_s,
            "translator": tr_s if {"translator", "translator_checked"} & set(methods) else None,
            "checked": cfg.checked.to_dict() if "translator_checked" in methods else None}
  stages.run("hard_prompts", hard_s, all(os.path.exists(os.path.join(hard_dir, f"{m}.json")) for m in methods),
             lambda: hard_prompts_stage(cfg, workdir, lms["base"], names, prompts, tasks_by_name, eval_tasks,
                                        methods, tr_cfg.lm_path, layout),
             started=os.path.isdir(hard_dir) and bool(os.listdir(hard_dir)))
  hard = {m: _read_json(os.path.join(hard_dir, f"{m}.json")) for m in methods}
  quality_path = os.path.join(workdir, "translation.json")
  stages.run("translation", {"hard_prompts": hard_s}, os.path.exists(quality_path),
             lambda: _write_json(quality_path, {m: translation_quality.score(eval_tasks, hard[m], similarity_fn)
                                                for m in methods}))
  quality = _read_json(quality_path)
  quality.update(ablations_stage(cfg, workdir, stages, tr_cfg, tune_s, prompts, names, eval_tasks, similarity_fn,
                                 lms["base"]))
  execution = {}
  exec_dir = os.path.join(workdir, "execution")
  for model in ("base", "target"):  # cells are written one by one; a model's settings cover its cells
    written = [f for f in (os.listdir(exec_dir) if os.path.isdir(exec_dir) else []) if f.endswith(f"@{model}.json")]
    stages.check(f"execution@{model}", {"eval": cfg.eval.to_dict(), model: cfg[model].to_dict(),
                                        "hard_prompts": hard_s}, started=bool(written))
  all_cells = [os.path.join(exec_dir, portability.cell(k, m) + ".json") for k, m in cells(methods)]
  if all(os.path.exists(p) for p in all_cells):
    execution.update({os.path.basename(p)[:-len(".json")]: _read_json(p)["score"] for p in all_cells})
  stages.run("execution", None, bool(execution), lambda: execution.update(
      execution_stage(cfg, workdir, eval_tasks, names, prompts, hard, lms, layout)))

  # ----- Report ---------------------------------------------------------------------------------------------
  inspect_layers = None
  if os.path.exists(os.path.join(hard_dir, "inspect_layers.json")):
    inspect_layers = _read_json(os.path.join(hard_dir, "inspect_layers.json"))
  results = report.results(quality, execution, inspect_layers=inspect_layers, timing=stages.timing,
                           config=json.loads(cfg.to_json_best_effort()))
  table = report.markdown(results)
  if _is_main():
    _write_json(os.path.join(workdir, "results.json"), results)
    dod.atomic_write_text(os.path.join(workdir, "results.md"), table)
    report.figures(results, quality, execution, os.path.join(workdir, "figures"))
  print(table)
  return results


def main(argv):
  del argv
  distributed.initialize()
  run(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Reproduction config.")
  flags.DEFINE_string("workdir", None, "Every stage's output, results.json, results.md and figures/.",
                      required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
