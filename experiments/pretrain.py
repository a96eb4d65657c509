r"""Pretrains a Llama-architecture LM of the embedded default on the world's corpus, with the project's own
decoder, and exports it in Hugging Face layout. Resumes from `--workdir` when restarted.

  python -m experiments.make_world --config configs/world.py --workdir /tmp/world
  python -m experiments.pretrain --config configs/pretrain.py:base --workdir /tmp/world/base \
      --config.world_dir=/tmp/world

Rerunning a finished run only exports it again (e.g. with another `export_dtype`). Rerunning it with a larger
`total_steps` continues it from its last checkpoint under the schedule of the new length (the cosine stretched
to the new end, so the learning rate rises a little and decays again): launch/build_world.sh continues
`base` from 3,000 to 3,500 steps this way, as the shipped base was trained. `stop_at_step` ends a run early
while its schedule still runs to `total_steps`, so a long run can be cut into legs that fit a time budget and
end where an uncut run would be (the run is exported at the stop; rerunning without it resumes there).
"""

import functools
import os
import time

from absl import app, flags, logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags
import numpy as np
import optax

import translator
from translator import distributed
from translator import sharding as sharding_lib
from translator.data import corpus as corpus_lib
from translator.data import dod
from translator.evaluation import lm_eval
from translator.hf import export
from translator.models import DecoderConfig, RopeScaling
from translator.models import functions as F
from translator.training import checkpoints, lm_loss, metrics, optimizers


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: object


def decoder_config(m, vocab_size: int) -> DecoderConfig:
  return DecoderConfig(
      family="llama", vocab_size=vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
      num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
      num_key_value_heads=m.num_key_value_heads, head_dim=m.hidden_size // m.num_attention_heads,
      rope_theta=m.rope_theta, rope_scaling=RopeScaling(), max_position_embeddings=m.max_position_embeddings,
      tie_word_embeddings=m.tie_word_embeddings, rms_norm_eps=1e-5, bos_token_id=1, eos_token_ids=(2,),
      pad_token_id=3, scan_unroll=m.num_hidden_layers if m.unroll_layers else 1)


def main(argv):
  del argv
  cfg = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  distributed.initialize()
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(cfg.to_json_best_effort(indent=2))

  # ----- Set up mesh ---------------------------------------------------------------------------------------
  mesh = sharding_lib.mesh_from_config(cfg.mesh)
  batch_sharding = NamedSharding(mesh, sharding_lib.spec_for(("batch", "length"), (cfg.batch_size, cfg.seq_len),
                                                             mesh))
  logging.info("mesh %s", dict(mesh.shape))

  # ----- Data ----------------------------------------------------------------------------------------------
  world = cfg.world_dir
  tasks = dod.read_dod(os.path.join(world, "dod"))
  tok_dir = os.path.join(world, "tokenizer")
  tokenizer = translator.lm.load_tokenizer(tok_dir)
  corpus = corpus_lib.Corpus(tasks, tokenizer, cfg.corpus)
  per_process = cfg.batch_size // jax.process_count()

  def global_batch(step: int) -> dict:
    batch = corpus.batch(step, cfg.batch_size, seed=cfg.seed)
    lo = jax.process_index() * per_process
    local = {k: v[lo:lo + per_process] for k, v in batch.items()}
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}

  # ----- Create model and optimizer --------------------------------------------------------------------------
  config = decoder_config(cfg.model, tokenizer.vocab_size if cfg.model.vocab_size is None else cfg.model.vocab_size)
  boxed = F.abstract_params(config)
  param_shardings = sharding_lib.shardings(boxed, mesh)
  params = jax.jit(lambda rng: nn.unbox(F.init_params(config, rng)), out_shardings=param_shardings)(
      jax.random.key(cfg.seed))
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  logging.info("model: %d layers, width %d, %.2fM params", config.num_hidden_layers, config.hidden_size, n_params / 1e6)
  tx = optimizers.make(cfg.optimizer, cfg.total_steps)
  state = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p)))(params)
  state_shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), every=cfg.checkpoint_every)
  state, extra = ckpt.restore_or(state)
  first_step = int(state.step)
  if first_step:
    logging.info("resumed from step %d", first_step)

  @functools.partial(jax.jit, in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, None),
                     donate_argnums=0)
  def train_step(state: TrainState, batch: dict):
    def loss_fn(params):
      return lm_loss.next_token_loss(params, config, batch["tokens"], batch["loss_mask"], batch.get("mask"),
                                     remat=cfg.remat)
    grads, aux = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree_util.tree_map(lambda p, u: p + u, state.params, updates)
    aux = dict(aux, grad_norm=optax.global_norm(grads))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), aux

  # ----- Quick evaluation: greedy exact match on held-out instances -------------------------------------------
  eval_items = lm_eval.build_items(
      tasks, task_splits=("test",), conditions=("instruction", "input_only"), instance_split="valid",
      instances_per_task=cfg.eval.num_instances, tasks_per_split=cfg.eval.num_tasks, seed=cfg.seed)

  def evaluate(params) -> dict:
    """Exact match per (condition, family) on validation instances of held-out tasks."""
    lm = translator.LM(config=config, params=params, tokenizer=tokenizer)
    result, _ = lm_eval.evaluate(lm_eval.lm_generate_fn(lm, batch_size=cfg.eval.batch_size), eval_items)
    return {f"{condition}/{group}": v["exact_match"]
            for condition, by_split in result["summary"].items() for group, v in by_split["test"].items()}

  # ----- Train loop ----------------------------------------------------------------------------------------
  writer = metrics.MetricWriter(workdir)
  end = cfg.stop_at_step or cfg.total_steps
  if not 0 < end <= cfg.total_steps:
    raise ValueError(f"stop_at_step={end} is not in 1..total_steps={cfg.total_steps}")
  progress = metrics.Progress(end, first_step, every=cfg.log_every, name="pretrain")
  tokens_per_step = cfg.batch_size * cfg.seq_len
  t_last, running = time.perf_counter(), []
  for step in range(first_step + 1, end + 1):
    state, aux = train_step(state, global_batch(step))
    running.append(aux)
    if step % cfg.log_every == 0 or step == end:
      aux = jax.device_get(running)
      mean = {k: float(np.mean([a[k] for a in aux])) for k in aux[0]}
      now = time.perf_counter()
      mean["tokens_per_s"] = len(running) * tokens_per_step / (now - t_last)
      mean["lr"] = float(optimizers.schedule(cfg.optimizer, cfg.total_steps)(step))
      writer.write(step, mean)
      progress(step, f"loss {mean['loss']:.4f} acc {mean['accuracy']:.3f} {mean['tokens_per_s']:.0f} tok/s")
      t_last, running = time.perf_counter(), []
    if cfg.eval.every and (step % cfg.eval.every == 0 or step == end):
      result = evaluate(state.params)
      writer.write(step, {f"eval/{k}": v for k, v in result.items()})
      logging.info("eval at step %d: %s", step, " ".join(f"{k}={v:.3f}" for k, v in sorted(result.items())))
      t_last = time.perf_counter()
    ckpt.maybe_save(step, state, {"step": step})
  if (ckpt.latest_step() or 0) < end:  # a run already past `end` (a later continuation) stays as it is
    ckpt.save(end, state, {"step": end})
  ckpt.close()
  writer.close()

  # ----- Export in HF layout -------------------------------------------------------------------------------
  out = os.path.join(workdir, "hf")
  if jax.process_index() == 0:
    export.save_lm(out, config, jax.device_get(state.params), tokenizer_dir=tok_dir, dtype=cfg.export_dtype)
    logging.info("exported to %s", out)
  multihost_utils.sync_global_devices("exported")


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/pretrain.py:base", "Pretraining config.")
  flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the exported LM.", required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
