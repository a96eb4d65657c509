r"""Trains a translator (soft prompt -> instruction) on the prompt stores of a DoD; keeps the best epoch.

  python -m experiments.train_translator --config configs/translator_paper.py --workdir /tmp/translator_paper \
      --config.world_dir=/tmp/world --config.stores='("/tmp/tune_toy/prompts",)'

The translator is an encoder (identity | linear | mlp | transformer) that maps each soft prompt `[P, D_src]`
to an embedded prefix, read by a decoder LM (frozen, optionally with LoRA), trained on
`[prefix][BOS][instruction][EOS]` with the loss on every token after BOS. Pairs: every prompt of every store
x the instruction and its paraphrases of every training task (translator/translation/data.py). After each
epoch the validation tasks' prompts are translated greedily (jitted sampler, text prompt = [BOS], stop at
EOS) and scored by ROUGE-L against the instruction; the best epoch's trainables are kept. Restarting the
same command resumes from the last checkpoint in the workdir.

Writes into the workdir:
  translator/                 the best translator (translator.json + weights.safetensors; experiments.translate)
  eval/valid.json             the best epoch's ROUGE-L (mean, per family), translations per task, history
  eval/{split}.json           the best translator on `final_splits` (DoD "test" tasks, never trained on)
  checkpoints/                orbax: step, trainables, best trainables, optimizer state; JSON: history
  metrics.jsonl, tb/, config.json
"""

import json
import os

from absl import app, flags, logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np

import translator
from translator import distributed
from translator import sharding as sharding_lib
from translator.data import dod
from translator.hf import weights as hf_weights
from translator.models import lora as lora_lib
from translator.training import checkpoints, metrics, optimizers
from translator.translation import data as data_lib
from translator.translation import encoders, evaluate, export, step as step_lib
from translator.tuning import data as tuning_data
from translator.tuning import store


TRAIN_FIELDS = ("prompts", "tokens", "mask", "weight")


def read_tasks(cfg) -> list[dod.Task]:
  directory = cfg.dod_dir or (os.path.join(cfg.world_dir, "dod") if cfg.world_dir else "")
  if not directory:
    raise ValueError("set --config.world_dir (a folder made by experiments.make_world) or --config.dod_dir: the "
                     "DoD whose tasks the prompt stores hold")
  return dod.read_dod(directory)


def lora_config(cfg):
  if not cfg.lora.rank:
    return None
  targets = tuple(t.strip() for t in cfg.lora.targets.split(",") if t.strip())
  return lora_lib.LoraConfig(rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, targets=targets)


def embedding_rms(lm) -> float:
  """RMS of the decoder's input embeddings (a sample of the vocabulary): the scale of its prefix space."""
  ids = jnp.arange(min(lm.config.vocab_size, 4096), dtype=jnp.int32)[None]
  return float(jnp.sqrt(jnp.mean(jnp.square(lm.embed(ids).astype(jnp.float32)))))


def aligned_encoder(enc_cfg, lm, params: dict) -> dict:
  """The linear encoder's params set to the least-squares map from the token embeddings of the LM in
  `enc_cfg.align_with` (the source of the prompts) to the decoder's (encoders.aligned_linear)."""
  if enc_cfg.kind != "linear":
    raise ValueError(f"encoder.align_with needs encoder.kind='linear', not {enc_cfg.kind!r}")
  source = hf_weights.input_embeddings(enc_cfg.align_with)  # the one tensor, not the whole source LM
  if source.shape[0] != lm.config.vocab_size:
    raise ValueError(f"encoder.align_with: {enc_cfg.align_with} has a vocabulary of {source.shape[0]} "
                     f"tokens, the decoder {lm.config.vocab_size}; the alignment needs one shared vocabulary")
  ids = jnp.arange(lm.config.vocab_size, dtype=jnp.int32)[None]
  aligned = encoders.aligned_linear(source, np.asarray(lm.embed(ids)[0]))
  want, got = params["proj"]["kernel"].shape, aligned["proj"]["kernel"].shape
  if want != got:
    raise ValueError(f"encoder.align_with: {enc_cfg.align_with} maps widths {got}, the encoder {want}: the "
                     "prompts were tuned on another LM")
  logging.info("linear encoder aligned with the token embeddings of %s", enc_cfg.align_with)
  return aligned


def run(cfg, workdir: str) -> dict:
  """Trains (or resumes), writes the translator and its evaluations; returns a summary (with the final
  trainables as host arrays)."""
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    dod.atomic_write_text(os.path.join(workdir, "config.json"), cfg.to_json_best_effort(indent=2) + "\n")

  # ----- Set up mesh ---------------------------------------------------------------------------------------
  mesh = sharding_lib.mesh_from_config(cfg.mesh)

  # ----- Load the decoder LM (frozen) ----------------------------------------------------------------------
  lm = translator.load_lm(cfg.lm_path, cfg.lm_dtype, mesh=mesh)
  if lm.tokenizer is None:
    raise ValueError(f"{cfg.lm_path} has no tokenizer files; the translator's decoder needs one")
  lm_shardings = jax.tree_util.tree_map(lambda x: x.sharding, lm.params)
  c = lm.config

  # ----- Data ----------------------------------------------------------------------------------------------
  table = data_lib.read_stores(list(cfg.stores))
  tasks = {t.name: t for t in read_tasks(cfg)}
  unknown = sorted(set(table.task_names) - set(tasks))
  if unknown:
    raise ValueError(f"{len(unknown)} tasks of the prompt stores are not in the DoD (e.g. {unknown[:3]}): "
                     "point world_dir/dod_dir at the DoD the prompts were tuned on")
  splits = data_lib.split_tasks(list(tasks.values()), table.task_names, cfg.data.valid_tasks, cfg.seed)
  if 0 < cfg.data.max_train_tasks < len(splits["train"]):
    rng = np.random.default_rng([cfg.seed, 7])
    splits["train"] = sorted(rng.choice(splits["train"], cfg.data.max_train_tasks, replace=False).tolist())
  final_splits = [s.strip() for s in cfg.final_splits.split(",") if s.strip()]
  text = data_lib.TextEncoder(lm.tokenizer, c.bos_token_id, c.eos_token_ids[0] if c.eos_token_ids else None,
                              lm.pad_id, cfg.data.max_len)
  pairs = data_lib.train_pairs(table, tasks, splits["train"], cfg.data.paraphrases)
  items = {s: data_lib.eval_items(table, tasks, splits[s]) for s in ["valid"] + final_splits}
  text.fit([t for _, t in pairs] + [t for v in items.values() for _, t in v])
  train = data_lib.Pairs.encode(pairs, text)
  max_new = cfg.max_new_tokens or text.max_len
  prompt_shape = table.prompts.shape[1:]
  logging.info("prompts %s from %d stores; tasks: %s; %d training pairs of %d tokens",
               table.prompts.shape, len(table.paths), {k: len(v) for k, v in splits.items()}, len(train),
               text.max_len)
  if is_main:
    dod.atomic_write_text(os.path.join(workdir, "splits.json"), json.dumps(splits, indent=1) + "\n")

  # ----- Create the translator and its train state -----------------------------------------------------------
  output_rms = embedding_rms(lm)
  encoder = encoders.make(cfg.encoder, c.hidden_size, output_rms)
  lora = lora_config(cfg)
  spec = step_lib.Spec(encoder=encoder, config=c, lora=lora, bos_id=c.bos_token_id, eos_ids=tuple(c.eos_token_ids),
                       pad_id=lm.pad_id, remat=cfg.remat, prompt_noise=cfg.prompt_noise)
  spe = -(-len(train) // cfg.batch_size)
  if cfg.max_steps_per_epoch:
    spe = min(spe, cfg.max_steps_per_epoch)
  total = cfg.epochs * spe if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * spe)
  tx = optimizers.make(cfg.optimizer, total)
  trainer = step_lib.Trainer(mesh, spec, lm_shardings, tx)
  enc_rng, lora_rng = jax.random.split(jax.random.key(cfg.seed))
  trainable = {"encoder": encoders.init(encoder, enc_rng, prompt_shape),
               "lora": lora_lib.init(c, lora, lora_rng).weights if lora else {}}
  if cfg.encoder.align_with:
    trainable["encoder"] = aligned_encoder(cfg.encoder, lm, trainable["encoder"])
  logging.info("encoder %s: %d params; LoRA %s: %d params", cfg.encoder.kind,
               sum(x.size for x in jax.tree_util.tree_leaves(trainable["encoder"])), lora,
               sum(x.size for x in jax.tree_util.tree_leaves(trainable["lora"])))
  state = trainer.init_state(trainable)
  rng = trainer.rng(cfg.seed)

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), every=cfg.checkpoint_every)
  state, extra = ckpt.restore_or(state)
  history = list(extra.get("history", []))
  best = dict(extra.get("best", {"rouge_l": -1.0, "epoch": None, "step": 0}))
  validated_step = int(extra.get("validated_step", 0))
  step = int(state.step)
  if step:
    logging.info("resumed from step %d (best so far: %s)", step, best)

  def save():
    ckpt.save(step, state, {"history": history, "best": best, "validated_step": validated_step, "step": step})

  # ----- Translation and validation ----------------------------------------------------------------------------
  writer = metrics.MetricWriter(workdir)

  def translate(trainable, rows) -> list[str]:
    out, n = [], cfg.eval_batch_size
    for start in range(0, len(rows), n):
      chunk = list(rows[start:start + n])
      padded = chunk + [chunk[-1]] * (n - len(chunk))
      batch = tuning_data.make_global(mesh, n, lambda i: {"prompts": table.prompts[padded[i]]}, ("prompts",))
      tokens = trainer.generate(trainable, lm.params, batch["prompts"], max_new_tokens=max_new)
      out += lm.decode(np.asarray(tokens)[:len(chunk)])
    return out

  def score(trainable, split_items) -> dict:
    rows = [r for r, _ in split_items]
    predictions = translate(trainable, rows)
    return evaluate.report([table.task_names[r] for r in rows], table.store_index[rows].tolist(),
                           [t for _, t in split_items], predictions, tasks)

  def write_eval(name: str, report: dict):
    if is_main:
      dod.atomic_write_text(os.path.join(workdir, "eval", f"{name}.json"), json.dumps(report, indent=1) + "\n")

  def validate():
    nonlocal state, best
    epoch = -(-step // spe)
    if not items["valid"]:  # no validation tasks: the last epoch is the best
      state = trainer.keep_best(state)
      best = {"rouge_l": None, "epoch": epoch, "step": step}
      return
    report = score(state.trainable, items["valid"])
    improved = report["rouge_l"] > best["rouge_l"]
    history.append({"epoch": epoch, "step": step, "rouge_l": report["rouge_l"],
                    "rouge_l_by_family": report["rouge_l_by_family"], "improved": bool(improved)})
    logging.info("epoch %d (step %d): valid ROUGE-L %.4f %s%s", epoch, step, report["rouge_l"],
                 report["rouge_l_by_family"], "  (best)" if improved else "")
    writer.write(step, {"valid/rouge_l": report["rouge_l"],
                        **{f"valid/rouge_l/{f}": v for f, v in report["rouge_l_by_family"].items()}})
    if improved:
      state = trainer.keep_best(state)
      best = {"rouge_l": report["rouge_l"], "epoch": epoch, "step": step}
      write_eval("valid", dict(report, epoch=epoch, step=step, history=history))
    elif is_main and os.path.exists(os.path.join(workdir, "eval", "valid.json")):
      with open(os.path.join(workdir, "eval", "valid.json")) as f:
        write_eval("valid", dict(json.load(f), history=history))

  # ----- Train loop ----------------------------------------------------------------------------------------
  progress = metrics.Progress(total, step, every=cfg.log_every, name="translator")
  while True:
    if (step % spe == 0 or step >= total) and step > validated_step:
      validate()
      validated_step = step
      save()
    if step >= total:
      break
    epoch, i = divmod(step, spe)
    index, weight = data_lib.batch_rows(data_lib.epoch_order(len(train), epoch, cfg.seed), i, cfg.batch_size)
    build = lambda r: {"prompts": table.prompts[train.rows[index[r]]], "tokens": train.tokens[index[r]],
                       "mask": train.mask[index[r]], "weight": weight[r]}
    batch = tuning_data.make_global(mesh, cfg.batch_size, build, TRAIN_FIELDS)
    state, aux = trainer.train_step(state, lm.params, batch, rng)
    step += 1
    if step % cfg.log_every == 0:
      scalars = {f"train/{k}": float(v) for k, v in aux.items()}
      writer.write(step, scalars)
      progress(step, f"epoch {epoch}  loss {scalars['train/loss']:.4f}")
    if step % spe and step < total:  # an epoch end is saved after its validation
      ckpt.maybe_save(step, state, {"history": history, "best": best, "validated_step": validated_step,
                                    "step": step})
  ckpt.close()

  # ----- Export the best translator; translate the final splits ----------------------------------------------
  record = {"encoder": cfg.encoder.to_dict(), "lora": None if lora is None else lora.to_dict(),
            "lm": store.lm_identity(cfg.lm_path, c, cfg.lm_dtype, hash_weights=False),
            "prompt_shape": list(prompt_shape), "output_rms": output_rms, "max_new_tokens": max_new,
            "stores": list(table.paths), "selection": dict(best, metric="valid ROUGE-L"), "steps": step}
  out_dir = os.path.join(workdir, "translator")
  if is_main:
    export.save(out_dir, jax.device_get(state.best), record)
  results = {"translator": out_dir, "best": best, "steps": step, "history": history,
             "trainable": jax.device_get(state.trainable)}
  for split in final_splits:
    if items[split]:
      report = score(state.best, items[split])
      write_eval(split, report)
      results[split] = {k: report[k] for k in ("rouge_l", "rouge_l_by_family", "num_tasks")}
      writer.write(step, {f"{split}/rouge_l": report["rouge_l"]})
  writer.close()
  multihost_utils.sync_global_devices("translator written")
  return results


def main(argv):
  del argv
  distributed.initialize()
  results = run(flags.FLAGS.config, flags.FLAGS.workdir)
  results.pop("trainable")
  logging.info("%s", json.dumps(results, default=str))


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/translator_paper.py", "Translator config.")
  flags.DEFINE_string("workdir", None, "Checkpoints, metrics, evaluations and the translator.",
                                 required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
