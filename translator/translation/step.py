"""The translator's jitted computations: the train step and greedy generation, over a frozen decoder LM.

A translator = an encoder (translator/translation/encoders.py) that maps soft prompts `[B, P, D_src]` to an
embedded prefix `[B, P', D]`, and a decoder LM (any `load_lm` LM) that reads `[prefix][BOS][text][EOS]`,
optionally adapted by LoRA (translator/models/lora.py). The trainables are one tree,
`{"encoder": encoder params, "lora": LoRA factors ({} without LoRA)}`: the only differentiated argument and
the only one with optimizer state. The decoder's params are a separate, read-only argument of every
function, with their own shardings (never closed over, never in the train state).

Letters: B batch, P prompt length, D_src prompt width, P' prefix length, D decoder width, T text tokens,
V vocabulary, N new tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import optax

from translator.models import functions as F
from translator.models import sampler
from translator.models.config import DecoderConfig
from translator.models.lora import LoraConfig, LoraWeights

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """step `[]`; trainable {"encoder", "lora"}; best: the trainables of the best validated epoch; opt_state:
  the optimizer state of `trainable` alone."""

  step: Array
  trainable: Any
  best: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
  """What a translator's functions close over (all static): the encoder module, the decoder's config, LoRA
  config (None = frozen decoder), the decoder's BOS/EOS/pad ids."""

  encoder: nn.Module
  config: DecoderConfig
  lora: Optional[LoraConfig]
  bos_id: int
  eos_ids: tuple[int, ...]
  pad_id: int
  remat: bool = False
  prompt_noise: float = 0.0  # training only: Gaussian noise on each prompt vector, as a fraction of its RMS


def lora_weights(spec: Spec, trainable: dict) -> Optional[LoraWeights]:
  return None if spec.lora is None else LoraWeights(weights=trainable["lora"], config=spec.lora)


def encode(spec: Spec, trainable: dict, prompts: Array, rng: Optional[Array] = None) -> Array:
  """The decoder's prefix `[B, P', D]` of soft prompts `[B, P, D_src]` (encoder dropout with an rng)."""
  return spec.encoder.apply({"params": trainable["encoder"]}, prompts.astype(jnp.float32),
                            deterministic=rng is None, rngs=None if rng is None else {"dropout": rng})


def losses(spec: Spec, trainable: dict, lm_params: dict, batch: dict, rng: Optional[Array] = None
           ) -> tuple[Array, Array]:
  """Summed cross-entropy of every text token after BOS, and the token count, per row `[B]`.

  batch: prompts `[B, P, D_src]`, tokens / mask `[B, T]` (`[BOS][text][EOS]`, right-padded), weight `[B]`.
  """
  enc_rng, lora_rng = (None, None) if rng is None else tuple(jax.random.split(rng))
  prompts = batch["prompts"].astype(jnp.float32)
  if rng is not None and spec.prompt_noise > 0:
    rms = jnp.sqrt(jnp.mean(jnp.square(prompts), axis=-1, keepdims=True))
    noise = jax.random.normal(jax.random.fold_in(rng, 1), prompts.shape, prompts.dtype)
    prompts = prompts + spec.prompt_noise * rms * noise
  prefix = encode(spec, trainable, prompts, enc_rng)
  out = F.forward(lm_params, spec.config, batch["tokens"], mask=batch["mask"], embedded_prefix=prefix,
                  compute_logits=False, remat=spec.remat, lora=lora_weights(spec, trainable), dropout_rng=lora_rng)
  p = prefix.shape[1]
  hidden = out.hidden[:, p:-1]  # text positions 0..T-2 predict tokens 1..T-1
  logits = F.logits_from_hidden(lm_params, spec.config, hidden)  # [B, T-1, V] float32
  weights = batch["mask"][:, 1:].astype(jnp.float32) * batch["weight"][:, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:])
  return (ce * weights).sum(-1), weights.sum(-1)


def train_step(state: TrainState, lm_params: dict, batch: dict, rng: Array, *, spec: Spec,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One AdamW (or any optax) update of the trainables on the batch's mean token cross-entropy.

  rng: the job's key; the step uses `fold_in(rng, step)` (LoRA and encoder dropout, prompt noise)."""
  rng = jax.random.fold_in(rng, state.step)

  def loss_fn(trainable):
    ce, count = losses(spec, trainable, lm_params, batch, rng)
    return ce.sum() / jnp.maximum(count.sum(), 1.0), count.sum()

  (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  metrics = {"loss": loss, "tokens": count, "grad_norm": optax.global_norm(grads)}
  return state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics


def generate(spec: Spec, trainable: dict, lm_params: dict, prompts: Array, rng: Optional[Array] = None, *,
             max_new_tokens: int, temperature: float = 0.0) -> Array:
  """Translations `[B, N]` of soft prompts `[B, P, D_src]`: `[encoder(prompt)][BOS]` -> text, stop at EOS,
  `pad_id` after it. Greedy at temperature 0, else sampled from `rng`."""
  prefix = encode(spec, trainable, prompts)
  ids = jnp.full((prompts.shape[0], 1), spec.bos_id, jnp.int32)
  return sampler.sample(lm_params, spec.config, ids, embedded_prefix=prefix, max_new_tokens=max_new_tokens,
                        temperature=temperature, rng=rng, eos_ids=spec.eos_ids, pad_id=spec.pad_id,
                        lora=lora_weights(spec, trainable)).tokens


class Trainer:
  """The jitted functions of one job: decoder params with their own shardings, trainables and optimizer
  state replicated (LoRA factors and encoders are small), batch rows over `batch`. The state is donated."""

  def __init__(self, mesh: Mesh, spec: Spec, lm_param_shardings: Any, tx: optax.GradientTransformation):
    self.mesh, self.spec, self.tx = mesh, spec, tx
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self._train = jax.jit(functools.partial(train_step, spec=spec, tx=tx),
                          in_shardings=(self.replicated, lm_param_shardings, None, self.replicated),
                          out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    self._keep_best = jax.jit(lambda s: s.replace(best=s.trainable), in_shardings=self.replicated,
                              out_shardings=self.replicated, donate_argnums=0)
    self._lm_param_shardings = lm_param_shardings
    self._generate = {}

  def init_state(self, trainable: dict) -> TrainState:
    make = lambda t: TrainState(step=jnp.zeros((), jnp.int32), trainable=t, best=t, opt_state=self.tx.init(t))
    return jax.jit(make, out_shardings=self.replicated)(trainable)

  def train_step(self, state: TrainState, lm_params: dict, batch: dict, rng: Array) -> tuple[TrainState, dict]:
    return self._train(state, lm_params, batch, rng)

  def keep_best(self, state: TrainState) -> TrainState:
    """best := trainable."""
    return self._keep_best(state)

  def rng(self, seed: int) -> Array:
    return jax.jit(lambda: jax.random.key(seed), out_shardings=self.replicated)()

  def generate(self, trainable: dict, lm_params: dict, prompts: Array, rng: Optional[Array] = None, *,
               max_new_tokens: int, temperature: float = 0.0) -> Array:
    key = (max_new_tokens, temperature)
    if key not in self._generate:
      self._generate[key] = jax.jit(
          functools.partial(generate, self.spec, max_new_tokens=max_new_tokens, temperature=temperature),
          in_shardings=(self.replicated, self._lm_param_shardings, None, None), out_shardings=self.replicated)
    return self._generate[key](trainable, lm_params, prompts, rng)
