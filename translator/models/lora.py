"""LoRA (Hu et al., 2021) on the decoder's projections: `y = x W + dropout(x) A B * alpha / r`.

    lora_cfg = LoraConfig(rank=4, alpha=8.0, dropout=0.1, targets=ALL_PROJECTIONS)   # the paper's PEFT set-up
    lora = init(config, lora_cfg, rng)            # LoraWeights: the "lora" collection + its (static) config
    F.forward(params, config, ids, lora=lora, dropout_rng=rng)   # frozen params, trainable lora.weights
    sampler.sample(params, config, ids, lora=lora, ...)          # the cached decode path reads it too
    merged = merge(params, lora)                  # W + A B alpha/r: a plain param tree (export, parity tests)

Design. The frozen base weights stay in the "params" collection; the low-rank factors live in their own
collection, "lora", created by `layers.Linear` when its name (q_proj, k_proj, v_proj, o_proj, gate_proj,
up_proj, down_proj) is in `LoraConfig.targets`. A `[in, r]` is initialised like PEFT (kaiming-uniform with
a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), B `[r, out]` with zeros, so a fresh LoRA leaves the LM
unchanged. The layers' `nn.scan` stacks "lora" on the `layers` axis (`[L, in, r]`) like "params", and
`functions.split_layers` slices it per layer for the decode loop. Dropout (on the LoRA branch's input only)
is active iff a "dropout" rng is passed (training); generation never passes one.

`LoraWeights` is a pytree whose leaves are the factors and whose `config` is static (part of the treedef),
so one argument carries both through `jax.jit`, optax and orbax.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from translator.models.config import DecoderConfig

Array = jax.Array
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
ALL_PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
COLLECTION = "lora"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank r, scale alpha / r, dropout on the LoRA input, and the projection names it adapts."""

  rank: int = 4
  alpha: float = 8.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ALL_PROJECTIONS

  def __post_init__(self):
    unknown = set(self.targets) - set(ALL_PROJECTIONS)
    if unknown:
      raise ValueError(f"LoRA targets {sorted(unknown)} are not decoder projections {ALL_PROJECTIONS}")
    if self.rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
    object.__setattr__(self, "targets", tuple(self.targets))

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def applies_to(self, name: Optional[str]) -> bool:
    return name in self.targets

  @classmethod
  def from_dict(cls, d) -> "LoraConfig":
    return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), dropout=float(d.get("dropout", 0.0)),
               targets=tuple(d.get("targets", ALL_PROJECTIONS)))

  def to_dict(self) -> dict:
    return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}


@flax.struct.dataclass
class LoraWeights:
  """weights: the "lora" collection, `{"model": {"layers": {...: {"lora_a" [L, in, r], "lora_b" [L, r, out]}}}}`
  (per-layer trees instead of stacks after `functions.split_layers`); config: static."""

  weights: Any
  config: LoraConfig = flax.struct.field(pytree_node=False)


# PEFT's kaiming_uniform_(a=sqrt(5)) on a [r, in] weight: U(-b, b), b = sqrt(6 / ((1 + 5) in)) = 1/sqrt(in).
init_a = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=-2, out_axis=-1)


def update(x: Array, a: Array, b: Array, config: LoraConfig, dropout_rng: Optional[Array]) -> Array:
  """The LoRA branch `dropout(x) A B * alpha/r` of `x` `[..., in]`, in x's dtype."""
  if dropout_rng is not None and config.dropout > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - config.dropout, x.shape)
    x = jnp.where(keep, x / (1.0 - config.dropout), 0.0).astype(x.dtype)
  low = jnp.einsum("...i,ir->...r", x, a.astype(x.dtype))
  return jnp.einsum("...r,ro->...o", low, b.astype(x.dtype)) * jnp.asarray(config.scale, x.dtype)


def init(config: DecoderConfig, lora_config: LoraConfig, rng: Array) -> LoraWeights:
  """Fresh LoRA factors (B = 0) for every targeted projection of every layer, float32, unboxed.

  Runs the model's init under `jit` and keeps only the "lora" collection, so XLA drops the (unused) base
  parameter initialisation."""
  from translator.models.decoder import CausalLM  # pylint: disable=g-import-not-at-top

  def make(rng):
    variables = CausalLM(config, lora=lora_config).init(
        {"params": rng}, jnp.zeros((1, 1), jnp.int32), method=CausalLM.init_all)
    return nn.unbox(variables[COLLECTION])

  return LoraWeights(weights=jax.jit(make)(rng), config=lora_config)


def merge(params: dict, lora: LoraWeights) -> dict:
  """The base params with every adapted kernel replaced by `W + A B alpha/r` (stacked or per-layer trees)."""
  scale = lora.config.scale

  def walk(p, l):
    if isinstance(l, dict) and "lora_a" in l:
      merged = p["kernel"] + jnp.einsum("...ir,...ro->...io", l["lora_a"], l["lora_b"]).astype(p["kernel"].dtype) * scale
      return {**p, "kernel": merged}
    if isinstance(l, (tuple, list)):
      return type(p)(walk(pi, li) for pi, li in zip(p, l))
    return {k: (walk(v, l[k]) if k in l else v) for k, v in p.items()}

  return walk(params, lora.weights)


def count(lora: Optional[LoraWeights]) -> int:
  """Number of trainable LoRA parameters."""
  if lora is None:
    return 0
  return sum(x.size for x in jax.tree_util.tree_leaves(lora.weights))
