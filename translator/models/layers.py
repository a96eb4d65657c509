"""Building blocks of the decoder: RMSNorm, linear projections, rotary embeddings, attention and MLP.

Attribute names mirror Hugging Face (`q_proj`, `gate_proj`, `input_layernorm`, ...) so that weight import
is a short name map (translator/hf/weights.py). Every parameter carries logical axis names
(translator/sharding/rules.py maps them onto the mesh).

Einsum letters: B batch, T query positions, S key positions, D model width, H query heads,
K key/value heads, G query heads per key/value head (H = K * G), E head dim.

LoRA (translator/models/lora.py): with a `LoraConfig` naming it, a `Linear` adds a low-rank update read from
the "lora" collection; `Attention`, `MLP` (and the decoder above them) only pass the config down.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from translator.models import lora as lora_lib
from translator.models.config import DecoderConfig, RopeScaling

Array = jax.Array
_init = nn.initializers.normal(0.02)


class RMSNorm(nn.Module):
  """RMSNorm computed in float32. Gemma multiplies by (1 + w), everybody else by w."""

  eps: float
  plus_one: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
    scale = self.param("scale", nn.with_logical_partitioning(init, ("norm",)), (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.plus_one:  # Gemma: scale in float32, then cast.
      return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
    # Llama: cast to the input dtype, then scale.
    return scale.astype(x.dtype) * normed.astype(x.dtype)


def matmul(spec: str, a: Array, b: Array) -> Array:
  """`jnp.einsum(spec, a, b)` accumulated in float32 and rounded to `a`'s dtype, as PyTorch does in bfloat16.

  The numbers of a plain bfloat16 einsum, which XLA:CPU runs by converting both operands to float32 first; with
  a float32 result it runs on the CPU's bfloat16 units instead (2.6x faster for a 32k-word LM head here, 1.3x
  for a whole bfloat16 decode step). A no-op in float32. Not for batched dots: XLA:CPU's own dot (which gets
  them) rejects bfloat16 x bfloat16 = float32.
  """
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def dense(x: Array, kernel: Array) -> Array:
  """`x @ kernel` over the last axis of `x` `[..., in]`, as one 2-D matmul: XLA:CPU runs the backward pass of
  a rank-3 `einsum` through slow transposing copies (twice the time of the whole MLP). See `matmul`."""
  y = matmul("ij,jk->ik", x.reshape(-1, x.shape[-1]), kernel)
  return y.reshape(*x.shape[:-1], kernel.shape[-1])


class Linear(nn.Module):
  """`y = x @ kernel (+ bias)`, kernel `[in, out]` (the transpose of the HF `weight`).

  With `lora` naming this module (its `name`, e.g. "q_proj"), adds `dropout(x) @ lora_a @ lora_b * alpha/r`
  from the "lora" collection (`lora_a` `[in, r]`, `lora_b` `[r, out]`); dropout only with a "dropout" rng.
  """

  features: int
  axes: tuple[str, str]
  use_bias: bool = False
  lora: Optional[lora_lib.LoraConfig] = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(_init, self.axes), (x.shape[-1], self.features), jnp.float32)
    y = dense(x, kernel.astype(x.dtype))
    if self.use_bias:
      bias = self.param(
          "bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]), (self.features,),
          jnp.float32)
      y = y + bias.astype(x.dtype)
    if self.lora is not None and self.lora.applies_to(self.name):
      r = self.lora.rank
      a = self.variable(lora_lib.COLLECTION, "lora_a",
                        lambda: lora_lib.init_a(self.make_rng("params"), (x.shape[-1], r), jnp.float32))
      b = self.variable(lora_lib.COLLECTION, "lora_b", lambda: jnp.zeros((r, self.features), jnp.float32))
      rng = self.make_rng("dropout") if self.lora.dropout > 0.0 and self.has_rng("dropout") else None
      y = y + lora_lib.update(x, a.value, b.value, self.lora, rng)
    return y


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> np.ndarray:
  """RoPE inverse frequencies `[E // 2]` in float32, as Hugging Face computes them."""
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
  inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
  if scaling.rope_type == "linear":
    inv_freq = inv_freq / np.float32(scaling.factor)
  elif scaling.rope_type == "llama3":
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    inv_freq = np.where(is_medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray) -> Array:
  """Rotates `x` `[B, T, N, E]` by `positions` `[B, T]` (HF's rotate-half convention)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, E/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, E]
  cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x * cos + rotated * sin


def softcap(x: Array, cap: float | None) -> Array:
  return x if cap is None else cap * jnp.tanh(x / cap)


_MIN_QUERY_BLOCK = 64  # queries per block of the causal split in `Attention`, at least


def _attend(cfg: DecoderConfig, q: Array, key: Array, value: Array, mask: Array) -> Array:
  """Softmax attention of q `[B, T, K, G, E]` over key/value `[B, K, S, E]` where mask `[B, T, S]`; `[B, T, H*E]`."""
  b, t, k, g, e = q.shape
  logits = jnp.einsum("btkge,bkse->bkgts", q, key.astype(q.dtype)).astype(jnp.float32)
  logits = softcap(logits * cfg.attention_scale, cfg.attn_logit_softcapping)
  logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  return jnp.einsum("bkgts,bkse->btkge", probs, value.astype(q.dtype)).reshape(b, t, k * g * e)


class Attention(nn.Module):
  """Multi-head attention with grouped key/value heads and an optional external KV cache.

  The keys and values of the current chunk are written into the cache at `write_index` (when a cache is
  given); queries then attend to every cache slot that `mask` allows.
  """

  config: DecoderConfig
  lora: Optional[lora_lib.LoraConfig] = None

  @nn.compact
  def __call__(self, x: Array, positions: Array, mask: Array, kv: tuple[Array, Array] | None,
               write_index: Array | None) -> tuple[Array, tuple[Array, Array] | None]:
    """x `[B, T, D]`, positions `[B, T]`, mask `[B, T, S]` (True = may attend).

    kv: cache `([B, K, S, E], [B, K, S, E])` or None (then S = T and the chunk attends to itself).
    Returns the output `[B, T, D]` and the updated cache.
    """
    cfg = self.config
    b, t, _ = x.shape
    h, k, e = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = Linear(h * e, ("embed", "q_heads"), cfg.qkv_bias, lora=self.lora, name="q_proj")(x).reshape(b, t, h, e)
    key = Linear(k * e, ("embed", "kv_heads"), cfg.qkv_bias, lora=self.lora, name="k_proj")(x).reshape(b, t, k, e)
    value = Linear(k * e, ("embed", "kv_heads"), cfg.qkv_bias, lora=self.lora, name="v_proj")(x).reshape(b, t, k, e)
    inv_freq = inverse_frequencies(e, cfg.rope_theta, cfg.rope_scaling)
    q = apply_rope(q, positions, inv_freq)
    # Keys and values as [B, K, S, E]: the layout both attention dots read without a transpose.
    key = apply_rope(key, positions, inv_freq).transpose(0, 2, 1, 3)
    value = value.transpose(0, 2, 1, 3)
    if kv is not None:
      cache_k, cache_v = kv
      key = jax.lax.dynamic_update_slice_in_dim(cache_k, key.astype(cache_k.dtype), write_index, axis=2)
      value = jax.lax.dynamic_update_slice_in_dim(cache_v, value.astype(cache_v.dtype), write_index, axis=2)
      kv = (key, value)
    q = q.reshape(b, t, k, h // k, e)
    # Without a cache, query slot i only sees key slots <= i (the mask is causal by slot): split the queries
    # into blocks and give each block only the keys up to its end, which skips ~3/8 of the score matrix at
    # 4 blocks. Same result; only padding query rows (all keys masked, outputs unused) differ.
    n_blocks = 1 if kv is not None else max(1, min(cfg.attention_query_blocks, -(-t // _MIN_QUERY_BLOCK)))
    bounds = [round(i * t / n_blocks) for i in range(n_blocks + 1)]
    outs = []
    for q0, q1 in zip(bounds[:-1], bounds[1:]):
      s1 = key.shape[2] if kv is not None else q1
      outs.append(_attend(cfg, q[:, q0:q1], key[:, :, :s1], value[:, :, :s1], mask[:, q0:q1, :s1]))
    out = outs[0] if n_blocks == 1 else jnp.concatenate(outs, axis=1)
    return Linear(cfg.hidden_size, ("q_heads", "embed"), cfg.o_bias, lora=self.lora, name="o_proj")(out), kv


class MLP(nn.Module):
  """Gated feed-forward: down(act(gate(x)) * up(x))."""

  config: DecoderConfig
  lora: Optional[lora_lib.LoraConfig] = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    act = {"silu": jax.nn.silu, "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True)}
    gate = Linear(cfg.intermediate_size, ("embed", "mlp"), cfg.mlp_bias, lora=self.lora, name="gate_proj")(x)
    up = Linear(cfg.intermediate_size, ("embed", "mlp"), cfg.mlp_bias, lora=self.lora, name="up_proj")(x)
    return Linear(cfg.hidden_size, ("mlp", "embed"), cfg.mlp_bias, lora=self.lora, name="down_proj")(
        act[cfg.hidden_act](gate) * up)
