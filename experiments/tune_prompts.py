r"""Soft prompt tuning for every task of a dataset of datasets in one sharded job, against a frozen LM.

  python -m experiments.make_world --config configs/world.py --workdir /tmp/world
  python -m experiments.tune_prompts --config configs/tune_toy.py --workdir /tmp/tune_toy \
      --config.world_dir=/tmp/world --config.lm_path=/tmp/world/base/hf

One prompt table `[T, P, D]` trains jointly; every step holds `tasks_per_step` tasks x `examples_per_task`
examples, each task with its own optimizer state, validation after each of its epochs, early stopping
and best-prompt keeping (translator/tuning/schedule.py). Restarting the same command resumes from the
last checkpoint in the workdir and gives bit-identical prompts.

Writes into the workdir:
  prompts/prompts.safetensors, prompts/metadata.json   the prompt store (translator.tuning.store.read)
  checkpoints/                  orbax: train state + scheduler (the loader position)
  metrics.jsonl, tb/            train and validation scalars (JSONL, TensorBoard)
  valid.jsonl                   one line per task validation: step, task, epoch, loss, improved, status
  config.json
"""

import json
import os
import time
import zlib

from absl import app, flags, logging
from clu import metrics as clu_metrics
import flax
import jax
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np

import translator
from translator import distributed
from translator import sharding as sharding_lib
from translator.data import dod
from translator.evaluation import lm_eval
from translator.training import checkpoints, metrics, optimizers
from translator.tuning import data as data_lib
from translator.tuning import inits, schedule as schedule_lib, step as step_lib, store


TRAIN_FIELDS = ("tokens", "mask", "target_pos", "target_ids", "target_mask")
EVAL_FIELDS = TRAIN_FIELDS + ("task",)
GENERATION_FIELDS = ("ids", "mask", "task")


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  accuracy: clu_metrics.Average.from_output("accuracy")
  grad_norm: clu_metrics.Average.from_output("grad_norm")
  slots_filled: clu_metrics.Average.from_output("slots_filled")


def parse_caps(text: str) -> dict[str, int]:
  """"train=400,test=60" -> {"train": 400, "test": 60}: a seeded sample of at most that many tasks per split."""
  caps = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    split, _, count = part.partition("=")
    if split.strip() not in dod.TASK_SPLITS or not count.strip().isdigit():
      raise ValueError(f"max_tasks_per_split entry {part!r} is not SPLIT=COUNT with SPLIT in {dod.TASK_SPLITS}")
    caps[split.strip()] = int(count)
  return caps


def read_tasks(cfg, lm) -> list[dod.Task]:
  """The DoD's tasks of `cfg.task_splits` that have train and valid instances, sorted by name (optionally a
  seeded sample of `cfg.max_tasks`)."""
  if cfg.dod == "superni":
    from translator.data import superni  # pylint: disable=g-import-not-at-top
    count = lambda s: len(lm.tokenizer.encode(s, add_special_tokens=False))
    tasks = superni.read_superni(cfg.superni, count)
  elif cfg.dod == "dir":
    directory = cfg.dod_dir or os.path.join(cfg.world_dir, "dod")
    if not (cfg.dod_dir or cfg.world_dir):
      raise ValueError("set --config.world_dir (a folder made by experiments.make_world) or --config.dod_dir")
    tasks = dod.read_dod(directory)
  else:
    raise ValueError(f"config.dod {cfg.dod!r} is not 'dir' or 'superni'")
  splits = [s.strip() for s in cfg.task_splits.split(",") if s.strip()]
  tasks = [t for t in tasks if t.split in splits]
  tasks, dropped = data_lib.tunable_tasks(tasks)
  if dropped:
    logging.warning("%d tasks have no train or no valid instances and get no prompt: %s", len(dropped), dropped[:5])
  tasks = sorted(tasks, key=lambda t: t.name)
  if 0 < cfg.max_tasks < len(tasks):
    rng = np.random.default_rng([cfg.seed, zlib.crc32(b"tasks")])
    tasks = [tasks[i] for i in sorted(rng.choice(len(tasks), cfg.max_tasks, replace=False))]
  caps = parse_caps(cfg.get("max_tasks_per_split", ""))
  balance = [f.strip() for f in cfg.get("balance_train_by", "").split(",") if f.strip()]
  for split, cap in caps.items():
    of_split = [t for t in tasks if t.split == split]
    if 0 < cap < len(of_split):
      rng = np.random.default_rng([cfg.seed, zlib.crc32(split.encode("utf-8"))])
      keep = {t.name for t in dod.balanced_sample(of_split, cap, balance if split == "train" else (), rng)}
      tasks = [t for t in tasks if t.split != split or t.name in keep]
  if not tasks:
    raise ValueError(f"no task of splits {splits} to tune")
  return tasks


def run(cfg, workdir: str) -> dict:
  """Tunes (or resumes) and writes the prompt store; returns {"store": path, "summary": ...}."""
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    dod.atomic_write_text(os.path.join(workdir, "config.json"), cfg.to_json_best_effort(indent=2) + "\n")

  # ----- Set up mesh ---------------------------------------------------------------------------------------
  mesh = sharding_lib.mesh_from_config(cfg.mesh)
  logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(), jax.process_count())

  # ----- Load the frozen LM ----------------------------------------------------------------------------------
  lm = translator.load_lm(cfg.lm_path, cfg.lm_dtype, mesh=mesh)
  if lm.tokenizer is None:
    raise ValueError(f"{cfg.lm_path} has no tokenizer files; prompt tuning needs one")
  lm_shardings = jax.tree_util.tree_map(lambda x: x.sharding, lm.params)
  c = lm.config
  logging.info("LM %s: %s, %d layers, width %d, vocab %d", cfg.lm_path, c.family, c.num_hidden_layers,
               c.hidden_size, c.vocab_size)

  # ----- Data ----------------------------------------------------------------------------------------------
  tasks = read_tasks(cfg, lm)
  eos = c.eos_token_ids[0] if c.eos_token_ids else None
  layout_of = lambda max_len, max_target: data_lib.Layout(
      prompt_length=cfg.prompt_length, prompt_position=cfg.prompt_position, max_len=max_len,
      max_target_len=max_target, bos_id=c.bos_token_id, eos_id=eos, pad_id=lm.pad_id)
  max_len, max_target = cfg.data.max_len, cfg.data.max_target_len
  if not (max_len and max_target):  # fit the data (tokenizes every example on every process)
    probe = data_lib.Encoder(lm.tokenizer, layout_of(1 << 30, 1 << 29), cfg.data.append_eos)
    train, valid = data_lib.split_examples(tasks, cfg.data.max_train_per_task, cfg.data.max_valid_per_task)
    fit_len, fit_target = data_lib.fit_lengths(probe, train + valid)
    max_len, max_target = max_len or fit_len, max_target or fit_target
  layout = layout_of(max_len, max_target)
  encoder = data_lib.Encoder(lm.tokenizer, layout, cfg.data.append_eos)
  data = data_lib.TuningData(tasks, encoder, max_train_per_task=cfg.data.max_train_per_task,
                             max_valid_per_task=cfg.data.max_valid_per_task, seed=cfg.seed)
  names = [t.name for t in tasks]
  logging.info("%d tasks; %d train and %d valid examples; rows of %d tokens (%d target) after a prefix of %d",
               len(tasks), len(data.train_examples), len(data.valid_examples), layout.max_len,
               layout.max_target_len, layout.prefix_len)

  # ----- Prompt table, optimizer and train state ---------------------------------------------------------------
  scheduler = schedule_lib.Scheduler(
      data.num_train, tasks_per_step=cfg.tasks_per_step, examples_per_task=cfg.examples_per_task,
      max_epochs=cfg.max_epochs, patience=cfg.patience, min_delta=cfg.min_delta, seed=cfg.seed)
  updates_bound = int(np.ceil(cfg.max_epochs * max(data.num_train) / cfg.examples_per_task))
  tx = optimizers.make(cfg.optimizer, updates_bound)  # schedules count each task's own updates
  tuner = step_lib.Tuner(mesh, c, lm_shardings, layout, num_tasks=len(tasks), tx=tx,
                         tasks_per_step=cfg.tasks_per_step, examples_per_task=cfg.examples_per_task,
                         dropout=cfg.prompt_dropout, remat=cfg.remat)
  prompts = inits.initial_prompts(cfg.init, tasks, lm.params, c, prompt_length=cfg.prompt_length,
                                  sharding=tuner.prompt_sharding, tokenizer=lm.tokenizer, seed=cfg.seed)
  state = tuner.init_state(prompts)
  rng = tuner.rng(cfg.seed)

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), every=cfg.checkpoint_every)
  state, extra = ckpt.restore_or(state)
  if extra:
    scheduler.load_json(extra["schedule"])
  step = int(state.step)
  if step:
    logging.info("resumed from step %d: %s", step, scheduler.summary())

  # ----- Validation: per-task loss of the current prompts, then early stopping --------------------------------
  writer = metrics.MetricWriter(workdir)
  valid_log = open(os.path.join(workdir, "valid.jsonl"), "a") if is_main else None

  def validate(task_ids: np.ndarray) -> np.ndarray:
    """Token-weighted mean target cross-entropy `[len(task_ids)]` of each task's valid instances."""
    rows = data.valid_rows(task_ids)
    ce_sum, count = np.zeros(len(tasks)), np.zeros(len(tasks))
    n = cfg.eval_batch_size
    for start in range(0, len(rows), n):
      chunk = rows[start:start + n]
      padded = chunk + [None] * (n - len(chunk))
      batch = data_lib.make_global(mesh, n, lambda i: data.valid_row(padded[i]), EVAL_FIELDS)
      ce, cnt = (np.asarray(x)[:len(chunk)] for x in tuner.eval_losses(state.prompts, lm.params, batch))
      owner = [data.valid_examples[i].task for i in chunk]
      np.add.at(ce_sum, owner, ce)
      np.add.at(count, owner, cnt)
    return ce_sum[task_ids] / np.maximum(count[task_ids], 1.0)

  def early_stopping(task_ids: np.ndarray, final_status=None):
    nonlocal state
    losses = validate(task_ids)
    improved = scheduler.record(task_ids, losses, final_status)
    state = tuner.select_best(state, improved)
    if valid_log is not None:
      for t, loss in zip(task_ids, losses):
        valid_log.write(json.dumps({"step": step, "task": names[t], "epoch": int(scheduler.evals[t]),
                                    "loss": float(loss), "improved": bool(improved[t]),
                                    "status": schedule_lib.STATUS_NAMES[int(scheduler.status[t])]}) + "\n")
      valid_log.flush()
    writer.write(step, {"valid/loss": float(np.mean(losses)), "valid/tasks": len(task_ids),
                        **scheduler.summary()})

  # ----- Train loop ----------------------------------------------------------------------------------------
  max_steps = cfg.max_steps or scheduler.turns_bound()  # every step trains at least one task
  progress = metrics.Progress(min(scheduler.step_bound(), max_steps), step, every=cfg.log_every, name="tune")
  rows_per_step = cfg.tasks_per_step * cfg.examples_per_task
  tokens_per_step = rows_per_step * (layout.prefix_len + layout.max_len)
  running, t_last, steps_since = None, time.perf_counter(), 0
  while not scheduler.done and step < max_steps:
    plan = scheduler.plan()
    batch = data_lib.make_global(
        mesh, rows_per_step, lambda r: data.step_row(plan.task, plan.cursor, cfg.examples_per_task, r), TRAIN_FIELDS)
    batch["slot_task"] = data_lib.replicated(mesh, plan.task)
    state, aux = tuner.train_step(state, lm.params, batch, rng)
    scheduler.commit(plan)
    step += 1
    steps_since += 1
    m = TrainMetrics.single_from_model_output(**aux)
    running = m if running is None else running.merge(m)
    if scheduler.needs_eval():
      early_stopping(scheduler.pending())
    if step == max_steps and not scheduler.done:  # the step budget ran out: validate what is left, and stop
      early_stopping(scheduler.unfinished(), final_status=schedule_lib.CUT)
    if step % cfg.log_every == 0 or scheduler.done:
      scalars = {f"train/{k}": float(v) for k, v in running.compute().items()}
      now = time.perf_counter()
      scalars["train/tokens_per_s"] = steps_since * tokens_per_step / (now - t_last)
      writer.write(step, scalars)
      progress(step, f"loss {scalars['train/loss']:.4f}  active {scheduler.count(schedule_lib.ACTIVE)}  "
                     f"{scalars['train/tokens_per_s']:.0f} tok/s")
      running, t_last, steps_since = None, time.perf_counter(), 0
    ckpt.maybe_save(step, state, {"schedule": scheduler.to_json(), "step": step})
    if cfg.step_sleep_s:
      time.sleep(cfg.step_sleep_s)
  if ckpt.latest_step() != step:
    ckpt.save(step, state, {"schedule": scheduler.to_json(), "step": step})
  ckpt.close()
  if valid_log is not None:
    valid_log.close()
  logging.info("training done at step %d: %s", step, scheduler.summary())

  # ----- Final evaluation: greedy exact match of each task's best prompt on its valid instances -------------
  stop_ids = tuple(c.eos_token_ids)
  newline = lm.tokenizer.encode("\n", add_special_tokens=False)
  if len(newline) == 1:
    stop_ids += tuple(newline)
  max_new = cfg.final_eval.max_new_tokens or layout.max_target_len
  cap = cfg.final_eval.max_examples_per_task
  rows = [data.valid_offsets[t] + i for t in range(len(tasks)) for i in range(min(data.num_valid[t], cap or 1 << 30))]
  hits, scored = np.zeros(len(tasks)), np.zeros(len(tasks))
  n = cfg.final_eval.batch_size
  for start in range(0, len(rows), n):
    chunk = rows[start:start + n]
    padded = chunk + [None] * (n - len(chunk))
    batch = data_lib.make_global(mesh, n, lambda i: data.generation_row(padded[i]), GENERATION_FIELDS)
    new = np.asarray(tuner.generate(state.best_prompts, lm.params, batch, max_new_tokens=max_new, eos_ids=stop_ids,
                                    pad_id=lm.pad_id))
    for j, i in enumerate(chunk):
      row = new[j].tolist()
      cut = next((p for p, tok in enumerate(row) if tok in stop_ids), len(row))
      ex = data.valid_examples[i]
      gold = tasks[ex.task].instances["valid"][i - data.valid_offsets[ex.task]].output
      hits[ex.task] += lm_eval.exact_match(lm.tokenizer.decode(row[:cut], skip_special_tokens=True), gold)
      scored[ex.task] += 1
  exact = hits / np.maximum(scored, 1)
  logging.info("valid exact match of the best prompts: mean %.3f over %d tasks", exact.mean(), len(tasks))
  writer.write(step, {"valid/exact_match": float(exact.mean())})
  writer.close()

  # ----- Write the prompt store ----------------------------------------------------------------------------
  out = os.path.join(workdir, "prompts")
  best = np.asarray(jax.device_get(state.best_prompts), np.float32)
  if is_main:
    common = {"lm": store.lm_identity(cfg.lm_path, c, cfg.lm_dtype, cfg.store.hash_weights),
              "tokenizer": store.tokenizer_identity(cfg.lm_path), "prompt_length": cfg.prompt_length,
              "prompt_position": cfg.prompt_position, "init": cfg.init.to_dict(),
              "optimizer": cfg.optimizer.to_dict(), "seed": cfg.seed, "examples_per_task": cfg.examples_per_task}
    records = [dict(common, family=task.family, task_split=task.split, classes=list(task.classes),
                    num_train=data.num_train[t], num_valid=data.num_valid[t], valid_exact_match=float(exact[t]),
                    valid_examples_scored=int(scored[t]), **scheduler.task_record(t))
               for t, task in enumerate(tasks)]
    store.write(out, names, best, records)
    logging.info("wrote the prompt store %s", out)
  multihost_utils.sync_global_devices("prompt store written")
  return {"store": out, "summary": dict(scheduler.summary(), exact_match=float(exact.mean()), step=step)}


def main(argv):
  del argv
  distributed.initialize()
  run(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/tune_toy.py", "Prompt-tuning config.")
  flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the prompt store.", required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
