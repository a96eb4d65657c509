r"""Exact match of LMs on a DoD's tasks: gold instruction, input alone, few-shot; per task split and family.

  python -m experiments.eval_lms --config configs/eval_lms.py --workdir /tmp/eval_lms \
      --config.dod_dir=/tmp/synthetic_dod --config.lms=base=/tmp/pretrain_base/hf

Writes into the workdir (atomically, after every LM, so a killed run keeps the LMs it finished):
  results.json              config, and per LM its path, seconds, summary, per-task exact match and, on the
                            synthetic DoD, exact match per general-task operation (per_op)
  results.md                the table (also printed)
  predictions/{name}.jsonl  one line per prompt: task, split, condition, index, gold, prediction
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging
import jax
from ml_collections import config_flags

import translator
from translator.data import dod
from translator.evaluation import lm_eval


def _csv(text: str) -> list[str]:
  return [s.strip() for s in text.split(",") if s.strip()]


def parse_lms(spec: str) -> list[tuple[str, str]]:
  """"base=/a/hf,target=/b/hf" or "/a/hf" -> [(name, path)]; a name defaults to the folder's base name."""
  out = []
  for entry in _csv(spec):
    name, _, path = entry.partition("=") if "=" in entry else ("", "", entry)
    out.append((name.strip() or os.path.basename(os.path.normpath(path)), path.strip()))
  names = [n for n, _ in out]
  if not out:
    raise ValueError("config.lms is empty; pass --config.lms=name=/path/to/hf_folder[,name=path...]")
  if len(set(names)) != len(names):
    raise ValueError(f"LM names are not unique: {names}; name them explicitly with name=path")
  return out


def run(cfg, workdir: str) -> dict:
  """Evaluates every LM of `cfg.lms`; returns the results.json dict."""
  lms = parse_lms(cfg.lms)
  if not cfg.dod_dir:
    raise ValueError("config.dod_dir is empty; point it at a DoD written by translator.data.dod.write_dod")
  tasks = dod.read_dod(cfg.dod_dir)
  items = lm_eval.build_items(
      tasks, task_splits=_csv(cfg.task_splits), conditions=_csv(cfg.conditions), instance_split=cfg.instance_split,
      instances_per_task=cfg.instances_per_task, tasks_per_split=cfg.tasks_per_split, num_demos=cfg.num_demos,
      seed=cfg.seed)
  logging.info("%d prompts: %d tasks x conditions %s x up to %d instances", len(items),
               len({i.task for i in items}), cfg.conditions, cfg.instances_per_task)
  write = jax.process_index() == 0
  output = {"config": cfg.to_dict(), "dod_dir": os.path.abspath(cfg.dod_dir), "lms": {}}
  tables = {}
  for name, path in lms:
    # ----- Load and generate ------------------------------------------------------------------------------
    start = time.perf_counter()
    lm = translator.load_lm(path, cfg.dtype)
    generate = lm_eval.lm_generate_fn(lm, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                      length_multiple=cfg.length_multiple, description=name)
    results, predictions = lm_eval.evaluate(generate, items)
    seconds = time.perf_counter() - start
    logging.info("%s: %d prompts in %.1f s", name, len(items), seconds)

    # ----- Write ------------------------------------------------------------------------------------------
    output["lms"][name] = {"path": os.path.abspath(path), "seconds": seconds, **results,
                           "per_op": lm_eval.score_by_op(items, predictions, tasks)}
    tables[name] = results
    if write:
      lines = "".join(json.dumps({"task": i.task, "split": i.split, "condition": i.condition, "index": i.index,
                                  "gold": i.gold, "prediction": p}, ensure_ascii=False) + "\n"
                      for i, p in zip(items, predictions))
      dod.atomic_write_text(os.path.join(workdir, "predictions", f"{name}.jsonl"), lines)
      dod.atomic_write_text(os.path.join(workdir, "results.json"),
                            json.dumps(output, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
      dod.atomic_write_text(os.path.join(workdir, "results.md"), lm_eval.markdown_table(tables))
  table = lm_eval.markdown_table(tables)
  print(table, flush=True)
  return output


def main(argv):
  del argv
  run(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/eval_lms.py", "Evaluation config.")
  flags.DEFINE_string("workdir", None, "Where results.json and results.md are written.", required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
