"""Encoders: soft prompt vectors `[B, P, D_src]` -> the decoder's embedded prefix `[B, P', D_dec]`.

  identity     the paper: the soft prompt itself is the prefix (D_src = D_dec, P' = P).
  linear       one affine map per vector: a source LM whose width differs from the decoder's.
  mlp          per-vector 2-layer GELU MLP; with D_src = D_dec a residual whose last layer starts at zero
               (so it starts as the identity).
  transformer  the design card's encoder: an input projection plus learned positions, `depth` pre-LN
               self-attention blocks over the P vectors, then either the P outputs (P' = P) or, with
               `num_queries` > 0, a resampler: `num_queries` learned queries cross-attend to them (P' = Q).
               With `skip` and equal widths and lengths, the output is prompt + correction (zero-initialised).

`linear` can instead start from the least-squares map between the two LMs' token embeddings
(`aligned_linear`; config `encoder.align_with`: the folder of the LM the prompts were tuned on).

Every encoder's output lands in the decoder's input-embedding space; `output_rms` (the RMS of the decoder's
token embeddings) sets the scale at which freshly initialised projections write there.

Letters: B batch, P prompt length, Q learned queries, D_src / D_dec prompt / decoder width, W encoder width.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
KINDS = ("identity", "linear", "mlp", "transformer")


class Identity(nn.Module):
  """The soft prompt as the prefix; fails when the widths differ."""

  out_features: int

  @nn.compact
  def __call__(self, prompts: Array, deterministic: bool = True) -> Array:
    if prompts.shape[-1] != self.out_features:
      raise ValueError(f"identity encoder: prompts have width {prompts.shape[-1]} but the decoder's is "
                       f"{self.out_features}; use encoder.kind='linear' (or mlp/transformer) across widths")
    return prompts


class Linear(nn.Module):
  """`prompts @ W + b`; W `[D_src, D_dec]` starts as the identity when the widths agree (else lecun-normal)."""

  out_features: int

  @nn.compact
  def __call__(self, prompts: Array, deterministic: bool = True) -> Array:
    d_in = prompts.shape[-1]
    init = (nn.initializers.lecun_normal() if d_in != self.out_features
            else lambda key, shape, dtype=jnp.float32: jnp.eye(shape[0], dtype=dtype))
    return nn.Dense(self.out_features, kernel_init=init, name="proj")(prompts)


class MLP(nn.Module):
  """`Dense(D_dec)(gelu(Dense(hidden)(x)))`, residual (zero-initialised last layer) when D_src = D_dec."""

  out_features: int
  hidden: int = 0  # 0 = 4 * D_dec
  dropout: float = 0.0
  output_rms: float = 1.0

  @nn.compact
  def __call__(self, prompts: Array, deterministic: bool = True) -> Array:
    residual = prompts.shape[-1] == self.out_features
    hidden = self.hidden or 4 * self.out_features
    h = jax.nn.gelu(nn.Dense(hidden, name="fc1")(prompts))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    last_init = (nn.initializers.zeros if residual
                 else nn.initializers.normal(self.output_rms / hidden ** 0.5))
    out = nn.Dense(self.out_features, kernel_init=last_init, name="fc2")(h)
    return prompts + out if residual else out


class Block(nn.Module):
  """Pre-LN block: (cross- or self-) attention, then a GELU MLP, both residual."""

  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array], deterministic: bool) -> Array:
    width = x.shape[-1]
    q = nn.LayerNorm(name="norm_q")(x)
    kv = q if context is None else nn.LayerNorm(name="norm_kv")(context)
    x = x + nn.MultiHeadDotProductAttention(
        self.heads, dropout_rate=self.dropout, deterministic=deterministic, name="attn")(q, kv)
    h = nn.LayerNorm(name="norm_mlp")(x)
    h = nn.Dense(self.mlp_ratio * width, name="fc1")(h)
    h = nn.Dropout(self.dropout)(jax.nn.gelu(h), deterministic=deterministic)
    return x + nn.Dense(width, name="fc2")(h)


class Transformer(nn.Module):
  """Self-attention encoder over the P prompt vectors, optionally a learned-query resampler."""

  out_features: int
  width: int = 256
  depth: int = 2
  heads: int = 4
  num_queries: int = 0  # 0: one output per prompt vector; else Q learned queries cross-attend (resampler)
  dropout: float = 0.0
  skip: bool = True
  output_rms: float = 1.0

  @nn.compact
  def __call__(self, prompts: Array, deterministic: bool = True) -> Array:
    b, p, d_in = prompts.shape
    x = nn.Dense(self.width, name="in_proj")(nn.LayerNorm(name="norm_in")(prompts))
    x = x + self.param("positions", nn.initializers.normal(0.02), (p, self.width))
    for i in range(self.depth):
      x = Block(self.heads, dropout=self.dropout, name=f"block_{i}")(x, None, deterministic)
    if self.num_queries:
      queries = self.param("queries", nn.initializers.normal(0.02), (self.num_queries, self.width))
      x = Block(self.heads, dropout=self.dropout, name="resampler")(
          jnp.broadcast_to(queries, (b,) + queries.shape), x, deterministic)
    x = nn.LayerNorm(name="norm_out")(x)
    residual = self.skip and d_in == self.out_features and not self.num_queries
    init = nn.initializers.zeros if residual else nn.initializers.normal(self.output_rms / self.width ** 0.5)
    out = nn.Dense(self.out_features, kernel_init=init, name="out_proj")(x)
    return prompts + out if residual else out


def make(cfg, out_features: int, output_rms: float = 1.0) -> nn.Module:
  """The encoder named by `cfg.kind` (an ml_collections.ConfigDict or dict with the fields above)."""
  get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
  kind = get("kind", "identity")
  if kind == "identity":
    return Identity(out_features)
  if kind == "linear":
    return Linear(out_features)
  if kind == "mlp":
    return MLP(out_features, hidden=get("hidden", 0), dropout=get("dropout", 0.0), output_rms=output_rms)
  if kind == "transformer":
    return Transformer(out_features, width=get("width", 256), depth=get("depth", 2), heads=get("heads", 4),
                       num_queries=get("num_queries", 0), dropout=get("dropout", 0.0), skip=get("skip", True),
                       output_rms=output_rms)
  raise ValueError(f"encoder.kind {kind!r} is not one of {KINDS}")


def aligned_linear(source_embeddings, decoder_embeddings) -> dict:
  """Params of `Linear` mapping the source LM's input-embedding space onto the decoder's: the least-squares
  affine map that sends each token's source embedding `[V, D_src]` to its decoder embedding `[V, D_dec]`
  (the two LMs share one vocabulary). A prompt vector near a source token then starts near the same token of
  the decoder, rather than at a random point of its space."""
  src = np.asarray(source_embeddings, np.float64)
  dec = np.asarray(decoder_embeddings, np.float64)
  if src.ndim != 2 or dec.ndim != 2 or src.shape[0] != dec.shape[0]:
    raise ValueError(f"embedding alignment needs two tables over one vocabulary; got {src.shape} and {dec.shape}")
  src_mean, dec_mean = src.mean(0), dec.mean(0)
  kernel = np.linalg.lstsq(src - src_mean, dec - dec_mean, rcond=None)[0]
  return {"proj": {"kernel": jnp.asarray(kernel, jnp.float32),
                   "bias": jnp.asarray(dec_mean - src_mean @ kernel, jnp.float32)}}


def init(encoder: nn.Module, rng: Array, prompt_shape: tuple[int, int]) -> dict:
  """Float32 params of `encoder` for prompts `[P, D_src]` ({} for the identity)."""
  variables = jax.jit(lambda r: encoder.init({"params": r}, jnp.zeros((1,) + tuple(prompt_shape), jnp.float32)))(rng)
  return dict(variables.get("params", {}))
