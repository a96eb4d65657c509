"""The jitted computations of joint prompt tuning: the train step, validation losses, best-prompt selection
and greedy generation, over a prompt table `[T, P, D]` and a frozen LM.

Letters: T tasks (rows of the table), P prompt length, D model width, S slots per step, k examples per
slot, B = S * k rows, L tokens per row, Tt target slots per row, V vocabulary, N new tokens.

The frozen LM's params are an argument of every function, with their own shardings; they are never
differentiated and have no optimizer state. The gradient is taken with respect to the S prompt rows of the
step only, so the backward pass computes activation gradients and no weight gradients (the test
`test_no_weight_gradients` checks the jaxpr).

Per-task optimizer. The optimizer (any optax transformation, e.g. AdamW or Adafactor) is applied to one
task's prompt `[P, D]`, vmapped over tasks: its state is stacked `[T, ...]`, with one step count per task.
A step gathers the state rows of its S tasks, updates them, and scatters them back; rows of tasks outside
the step keep both their prompt and their optimizer state bit for bit (no momentum drift, no shared
bias-correction count). So the joint job updates each prompt exactly as the paper's one-task job would, and
the cost of an update is O(S P D), not O(T P D).

The LM head runs only where the loss needs it: the decoder returns final hidden states `[B, P+L, D]`, the
Tt target positions of each row are gathered, and `logits_from_hidden` gives `[B, Tt, V]`. The k rows of a
slot share their prompt, so the train step runs each prompt once (`F.forward_shared_prefix`); prompt dropout
gives each row its own prompt and runs them all.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np
import optax

from translator import sharding as sharding_lib
from translator.models import functions as F
from translator.models import sampler
from translator.models.config import DecoderConfig
from translator.tuning.data import Layout

Array = jax.Array
PROMPT_AXES = ("prompt_tasks", "prompt_length", "prompt_embed")


@flax.struct.dataclass
class TuneState:
  """step `[]` train steps done; prompts `[T, P, D]` current; best_prompts `[T, P, D]` each task's prompt at its
  best validation loss; opt_state: the optimizer state of one `[P, D]` prompt, every leaf stacked `[T, ...]`."""

  step: Array
  prompts: Array
  best_prompts: Array
  opt_state: Any


# ---------------------------------------------------------------------------------------------------
# Pure functions.


def with_bos(lm_params: dict, config: DecoderConfig, layout: Layout, prefix: Array) -> Array:
  """The embedded prefix the decoder reads: `[prompt]` or, after BOS, `[emb(BOS)][prompt]` `[B, P(+1), D]`."""
  if layout.prompt_position != "after_bos":
    return prefix
  bos = F.embed(lm_params, config, jnp.full((prefix.shape[0], 1), layout.bos_id, jnp.int32))
  return jnp.concatenate([bos.astype(prefix.dtype), prefix], axis=1)


def target_losses(lm_params: dict, config: DecoderConfig, layout: Layout, prefix: Array, batch: dict,
                  remat: bool = False, rows_per_prefix: int = 1) -> tuple[Array, Array, Array]:
  """Per row: summed cross-entropy of the target tokens, their count and how many the argmax gets right `[B]`.

  prefix `[B / rows_per_prefix, P, D]`: rows r*n .. r*n+n-1 (n = rows_per_prefix) follow prefix r, which the
  decoder then runs once for all n (`F.forward_shared_prefix`); batch: tokens, mask `[B, L]`, target_pos,
  target_ids, target_mask `[B, Tt]`.
  """
  prefix = with_bos(lm_params, config, layout, prefix)
  if rows_per_prefix == 1:
    out = F.forward(lm_params, config, batch["tokens"], mask=batch["mask"], embedded_prefix=prefix,
                    compute_logits=False, remat=remat)
  else:
    out = F.forward_shared_prefix(lm_params, config, batch["tokens"], mask=batch["mask"], embedded_prefix=prefix,
                                  compute_logits=False, remat=remat)
  hidden = jnp.take_along_axis(out.hidden, batch["target_pos"][..., None], axis=1)  # [B, Tt, D]
  logits = F.logits_from_hidden(lm_params, config, hidden)  # [B, Tt, V] float32
  weights = batch["target_mask"].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["target_ids"])
  # Accuracy (a metric): the target's logit is the maximum. One reduction, which XLA shares with the
  # cross-entropy's, instead of an argmax's two (~3% of a step on the CPU).
  target_logit = jnp.take_along_axis(logits, batch["target_ids"][..., None], axis=-1)[..., 0]
  correct = jax.lax.stop_gradient(target_logit >= logits.max(-1)).astype(jnp.float32)
  return (ce * weights).sum(-1), weights.sum(-1), (correct * weights).sum(-1)


def train_step(state: TuneState, lm_params: dict, batch: dict, rng: Array, *, config: DecoderConfig,
               layout: Layout, tx: optax.GradientTransformation, examples_per_task: int, dropout: float = 0.0,
               remat: bool = False) -> tuple[TuneState, dict]:
  """One update of the prompts of the step's tasks.

  batch: slot_task `[S]` (T = empty slot; distinct otherwise), and the rows `[B = S * k, ...]` of
  `target_losses`, slot s holding rows s*k .. s*k+k-1. The loss of a slot is its mean target-token
  cross-entropy; the objective is their sum, so each prompt's gradient is that of its own task's batch.
  rng: the job's key; the step uses `fold_in(rng, state.step)` (prompt dropout).
  """
  rng = jax.random.fold_in(rng, state.step)
  num_tasks = state.prompts.shape[0]
  slot_task = batch["slot_task"]
  s, k = slot_task.shape[0], examples_per_task
  filled = slot_task < num_tasks
  rows_index = jnp.minimum(slot_task, num_tasks - 1)
  rows = jnp.take(state.prompts, rows_index, axis=0)  # [S, P, D]

  def loss_fn(rows):
    if dropout > 0.0:  # each row its own dropout mask, so each row its own prefix
      prefix = jnp.repeat(rows, k, axis=0)  # [B, P, D]
      keep = jax.random.bernoulli(rng, 1.0 - dropout, prefix.shape)
      prefix = jnp.where(keep, prefix / (1.0 - dropout), 0.0)
      ce, count, correct = target_losses(lm_params, config, layout, prefix, batch, remat)
    else:  # the k rows of a slot share its prompt: the decoder runs it once per slot
      ce, count, correct = target_losses(lm_params, config, layout, rows, batch, remat, rows_per_prefix=k)
    ce, count, correct = (x.reshape(s, k).sum(1) for x in (ce, count, correct))
    slot_loss = jnp.where(filled, ce / jnp.maximum(count, 1.0), 0.0)
    aux = {"loss": slot_loss.sum() / jnp.maximum(filled.sum(), 1),
           "accuracy": correct.sum() / jnp.maximum(count.sum(), 1.0), "target_tokens": count.sum()}
    return slot_loss.sum(), aux

  grads, aux = jax.grad(loss_fn, has_aux=True)(rows)
  opt_rows = jax.tree_util.tree_map(lambda x: jnp.take(x, rows_index, axis=0), state.opt_state)
  updates, new_opt_rows = jax.vmap(tx.update)(grads, opt_rows, rows)
  new_rows = optax.apply_updates(rows, updates)
  # Empty slots scatter to index T, which mode="drop" ignores.
  where = jnp.where(filled, slot_task, num_tasks)
  scatter = lambda full, new: full.at[where].set(new.astype(full.dtype), mode="drop")
  prompts = scatter(state.prompts, new_rows)
  opt_state = jax.tree_util.tree_map(scatter, state.opt_state, new_opt_rows)
  aux["grad_norm"] = jnp.sqrt(jnp.sum(jnp.where(filled[:, None, None], grads, 0.0) ** 2))
  aux["slots_filled"] = filled.sum()
  return state.replace(step=state.step + 1, prompts=prompts, opt_state=opt_state), aux


def eval_losses(prompts: Array, lm_params: dict, batch: dict, *, config: DecoderConfig, layout: Layout,
                remat: bool = False) -> tuple[Array, Array]:
  """Summed target cross-entropy and target count `[R]` of rows of `batch["task"]` `[R]` under `prompts`."""
  prefix = jnp.take(prompts, batch["task"], axis=0)
  ce, count, _ = target_losses(lm_params, config, layout, prefix, batch, remat)
  return ce, count


def select_best(state: TuneState, improved: Array) -> TuneState:
  """best_prompts[t] = prompts[t] where `improved` `[T]`."""
  return state.replace(best_prompts=jnp.where(improved[:, None, None], state.prompts, state.best_prompts))


def generate(prompts: Array, lm_params: dict, batch: dict, *, config: DecoderConfig, layout: Layout,
             max_new_tokens: int, eos_ids: tuple[int, ...], pad_id: int) -> Array:
  """Greedy continuations `[R, N]` of text prompts ids, mask `[R, L]` after the prompts of `batch["task"]`."""
  prefix = with_bos(lm_params, config, layout, jnp.take(prompts, batch["task"], axis=0))
  return sampler.sample(lm_params, config, batch["ids"], mask=batch["mask"], embedded_prefix=prefix,
                        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id).tokens


# ---------------------------------------------------------------------------------------------------
# Sharded, jitted versions.


def table_sharding(mesh: Mesh, shape) -> NamedSharding:
  """A prompt-table-like array `[T, ...]`: its own logical axes, which map to no mesh axis (replicated)."""
  names = PROMPT_AXES if len(shape) == 3 else ("prompt_tasks",) + (None,) * (len(shape) - 1)
  return sharding_lib.sharding_for(names[:len(shape)], shape, mesh)


class Tuner:
  """The jitted functions of one job, with explicit shardings: LM params as loaded onto the mesh, prompt
  tables replicated through the prompt axes, rows over `batch`. The train state is donated."""

  def __init__(self, mesh: Mesh, config: DecoderConfig, lm_param_shardings: Any, layout: Layout, *,
               num_tasks: int, tx: optax.GradientTransformation, tasks_per_step: int, examples_per_task: int,
               dropout: float = 0.0, remat: bool = False):
    self.mesh, self.config, self.layout, self.tx = mesh, config, layout, tx
    self.num_tasks, self.S, self.k = num_tasks, tasks_per_step, examples_per_task
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.prompt_sharding = table_sharding(mesh, (num_tasks, layout.prompt_length, config.hidden_size))
    self.state_shardings = self._state_shardings()
    b, lay = tasks_per_step * examples_per_task, layout
    rows = lambda *shape: sharding_lib.sharding_for(("batch",) + (None,) * (len(shape) - 1), shape, mesh)
    self.train_batch_shardings = {
        "slot_task": self.replicated, "tokens": rows(b, lay.max_len), "mask": rows(b, lay.max_len),
        "target_pos": rows(b, lay.max_target_len), "target_ids": rows(b, lay.max_target_len),
        "target_mask": rows(b, lay.max_target_len)}
    self._train = jax.jit(
        functools.partial(train_step, config=config, layout=layout, tx=tx, examples_per_task=examples_per_task,
                          dropout=dropout, remat=remat),
        in_shardings=(self.state_shardings, lm_param_shardings, self.train_batch_shardings, self.replicated),
        out_shardings=(self.state_shardings, self.replicated), donate_argnums=0)
    # Validation and generation rows (any count) arrive sharded over `batch` from data.make_global: None
    # keeps their shardings.
    self._eval = jax.jit(functools.partial(eval_losses, config=config, layout=layout, remat=remat),
                         in_shardings=(self.prompt_sharding, lm_param_shardings, None),
                         out_shardings=(self.replicated, self.replicated))
    self._select = jax.jit(select_best, in_shardings=(self.state_shardings, self.replicated),
                           out_shardings=self.state_shardings, donate_argnums=0)
    self._generate = {}
    self._lm_param_shardings = lm_param_shardings

  def _state_shardings(self) -> TuneState:
    shape = (self.num_tasks, self.layout.prompt_length, self.config.hidden_size)
    abstract = jax.eval_shape(lambda p: jax.vmap(self.tx.init)(p), jax.ShapeDtypeStruct(shape, jnp.float32))
    opt = jax.tree_util.tree_map(lambda x: table_sharding(self.mesh, x.shape), abstract)
    return TuneState(step=self.replicated, prompts=self.prompt_sharding, best_prompts=self.prompt_sharding,
                     opt_state=opt)

  def init_state(self, prompts: Array) -> TuneState:
    """The train state of an initial table: best = initial, fresh per-task optimizer state."""
    make = lambda p: TuneState(step=jnp.zeros((), jnp.int32), prompts=p, best_prompts=p,
                               opt_state=jax.vmap(self.tx.init)(p))
    return jax.jit(make, in_shardings=self.prompt_sharding, out_shardings=self.state_shardings)(prompts)

  def train_step(self, state: TuneState, lm_params: dict, batch: dict, rng: Array) -> tuple[TuneState, dict]:
    return self._train(state, lm_params, batch, rng)

  def eval_losses(self, prompts: Array, lm_params: dict, batch: dict) -> tuple[Array, Array]:
    return self._eval(prompts, lm_params, batch)

  def select_best(self, state: TuneState, improved) -> TuneState:
    """improved: host bool `[T]`, the same on every process."""
    improved = np.asarray(improved, bool)
    mask = jax.make_array_from_callback(improved.shape, self.replicated, lambda index: improved[index])
    return self._select(state, mask)

  def rng(self, seed: int) -> Array:
    """The job's base key, replicated over the mesh."""
    return jax.jit(lambda: jax.random.key(seed), out_shardings=self.replicated)()

  def generate(self, prompts: Array, lm_params: dict, batch: dict, *, max_new_tokens: int,
               eos_ids: tuple[int, ...], pad_id: int) -> Array:
    key = (max_new_tokens, eos_ids, pad_id)
    if key not in self._generate:
      self._generate[key] = jax.jit(
          functools.partial(generate, config=self.config, layout=self.layout, max_new_tokens=max_new_tokens,
                            eos_ids=eos_ids, pad_id=pad_id),
          in_shardings=(self.prompt_sharding, self._lm_param_shardings, None), out_shardings=self.replicated)
    return self._generate[key](prompts, lm_params, batch)
