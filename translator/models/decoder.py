"""The decoder LM: `CausalLM` (HF `*ForCausalLM`) = `model` (embeddings, scanned layers, final norm) + `lm_head`.

The full-sequence pass (training, logits, the residual stream after every layer, patching that stream for
InSPEcT) runs the layers as one `nn.scan`, so their parameters are stacked on a leading `layers` axis
`[L, ...]`. Generation runs the same `DecoderLayer`s one by one over per-layer slices of those params and
per-layer KV-cache buffers (translator/models/functions.py: `cached_step`), so a decode step neither copies
weights out of the stack nor caches through the scan.

Parameter tree (HF name -> ours; kernels are the transpose of HF weights):
  model.embed_tokens.weight            -> model/embed_tokens/embedding  [V, D]
  model.layers.{i}.self_attn.q_proj.*  -> model/layers/self_attn/q_proj/{kernel [L, D, H*E], bias}
  model.layers.{i}.mlp.gate_proj.*     -> model/layers/mlp/gate_proj/kernel  [L, D, F]
  model.layers.{i}.input_layernorm.*   -> model/layers/input_layernorm/scale  [L, D]
  model.norm.weight                    -> model/norm/scale  [D]
  lm_head.weight                       -> lm_head/kernel  [D, V]   (absent when embeddings are tied)

LoRA factors (translator/models/lora.py), when a `LoraConfig` is given, live in the "lora" collection with the
same paths, stacked `[L, ...]` like the params: model/layers/self_attn/q_proj/{lora_a [L, D, r], lora_b [L, r, H*E]}.

Einsum letters as in layers.py; additionally V vocabulary, L layers, P prefix length.
"""

from __future__ import annotations

from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from translator.models.config import DecoderConfig
from translator.models.lora import COLLECTION as LORA, LoraConfig
from translator.models.layers import MLP, Attention, Linear, RMSNorm, _init, matmul, softcap

Array = jax.Array


@flax.struct.dataclass
class KVCache:
  """Keys/values of every layer for S slots, and what each slot holds.

  k, v: one `[B, K, S, E]` array per layer (separate buffers, so a decode step updates each in place);
  valid: `[B, S]` True where the slot holds a real token; positions: `[B, S]` the RoPE position of the
  slot's token; end: `[]` how many slots are written.
  """

  k: tuple[Array, ...]
  v: tuple[Array, ...]
  valid: Array
  positions: Array
  end: Array

  @classmethod
  def init(cls, config: DecoderConfig, batch: int, length: int, dtype) -> "KVCache":
    shape = (batch, config.num_key_value_heads, length, config.head_dim)
    layers = range(config.num_hidden_layers)
    return cls(k=tuple(jnp.zeros(shape, dtype) for _ in layers), v=tuple(jnp.zeros(shape, dtype) for _ in layers),
               valid=jnp.zeros((batch, length), bool), positions=jnp.zeros((batch, length), jnp.int32),
               end=jnp.zeros((), jnp.int32))


def sliding_layers(config: DecoderConfig) -> list[bool]:
  return [t == "sliding_attention" for t in config.layer_types]


def attention_masks(config: DecoderConfig, positions: Array, key_positions: Array, key_valid: Array,
                    offset) -> tuple[Array, Optional[Array]]:
  """Which key slots each query may attend to: (full, sliding) `[B, T, S]`; sliding is None when no layer
  slides. Queries sit at slots offset..offset+T-1 with `positions` `[B, T]`; keys at slots 0..S-1."""
  t, s = positions.shape[1], key_valid.shape[1]
  q_slot = offset + jnp.arange(t)
  full = key_valid[:, None, :] & (jnp.arange(s)[None, None, :] <= q_slot[None, :, None])
  sliding = None
  if any(sliding_layers(config)):
    sliding = full & (positions[:, :, None] - key_positions[:, None, :] < config.sliding_window)
  return full, sliding


@flax.struct.dataclass
class Patch:
  """At the output of layer `layer` (0 = the embeddings, l >= 1 = decoder layer l), replace the residual
  stream wherever `mask` is True by `values`. layer: `[B]`, values: `[B, T, D]`, mask: `[B, T]`."""

  layer: Array
  values: Array
  mask: Array

  @classmethod
  def at(cls, layer: Array, start: Array, vectors: Array, length: int) -> "Patch":
    """Replace positions `start .. start + n - 1` of a length-`length` chunk by `vectors` `[B, n, D]`.

    layer and start are ints or `[B]` arrays (each row may patch a different layer and place).
    """
    b, n, d = vectors.shape
    layer = jnp.broadcast_to(jnp.asarray(layer, jnp.int32), (b,))
    start = jnp.broadcast_to(jnp.asarray(start, jnp.int32), (b,))
    place = jax.vmap(lambda buf, row, s: jax.lax.dynamic_update_slice_in_dim(buf, row, s, axis=0))
    values = place(jnp.zeros((b, length, d), vectors.dtype), vectors, start)
    mask = place(jnp.zeros((b, length), bool), jnp.ones((b, n), bool), start)
    return cls(layer=layer, values=values, mask=mask)

  def apply(self, h: Array, layer: Array) -> Array:
    where = self.mask & (self.layer == layer)[:, None]
    return jnp.where(where[..., None], self.values.astype(h.dtype), h)


@flax.struct.dataclass
class Context:
  """Keys and values of C slots that come before a full-sequence pass (e.g. a prompt that several rows
  share), stacked over layers: k, v `[L, B, K, C, E]`; positions, valid `[B, C]` as in `KVCache`.

  `Context.empty` gives a pass with no earlier slots; its output `context` then holds the pass's own keys and
  values, which a later pass (over the same or repeated rows) can attend to. Differentiable throughout.
  """

  k: Array
  v: Array
  positions: Array
  valid: Array

  @classmethod
  def empty(cls, config: DecoderConfig, batch: int, dtype) -> "Context":
    shape = (config.num_hidden_layers, batch, config.num_key_value_heads, 0, config.head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), positions=jnp.zeros((batch, 0), jnp.int32),
               valid=jnp.zeros((batch, 0), bool))

  def repeat(self, n: int) -> "Context":
    """Each row n times in a row (row b becomes rows b*n .. b*n+n-1)."""
    return Context(k=jnp.repeat(self.k, n, axis=1), v=jnp.repeat(self.v, n, axis=1),
                   positions=jnp.repeat(self.positions, n, axis=0), valid=jnp.repeat(self.valid, n, axis=0))


@flax.struct.dataclass
class DecoderOutput:
  """logits `[B, T, V]` (None unless asked for), hidden `[B, T, D]` after the final norm,
  all_hidden `[L + 1, B, T, D]` residual stream (0 = embeddings, l = output of layer l; before the final
  norm), cache: the updated cache (None without one), context: given a `Context`, the same extended by this
  pass's slots (`[L, B, K, C + T, E]`)."""

  logits: Optional[Array]
  hidden: Array
  all_hidden: Optional[Array] = None
  cache: Optional[KVCache] = None
  context: Optional[Context] = None


class DecoderLayer(nn.Module):
  """One block: Llama-style pre-norm, or Gemma 2 sandwich norms."""

  config: DecoderConfig
  lora: Optional[LoraConfig] = None

  @nn.compact
  def __call__(self, h, xs, positions, masks, patch, write_index):
    cfg = self.config
    layer, is_sliding, kv = xs
    full_mask, sliding_mask = masks
    mask = full_mask if sliding_mask is None else jnp.where(is_sliding, sliding_mask, full_mask)
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.norm_plus_one, name=name)

    attn, kv = Attention(cfg, self.lora, name="self_attn")(norm("input_layernorm")(h), positions, mask, kv, write_index)
    if cfg.sandwich_norms:
      h = h + norm("post_attention_layernorm")(attn)
      h = h + norm("post_feedforward_layernorm")(MLP(cfg, self.lora, name="mlp")(norm("pre_feedforward_layernorm")(h)))
    else:
      h = h + attn
      h = h + MLP(cfg, self.lora, name="mlp")(norm("post_attention_layernorm")(h))
    if patch is not None:
      h = patch.apply(h, layer + 1)
    return h, (kv, h)


class Embedding(nn.Module):
  """The token embedding table `[V, D]`."""

  num_embeddings: int
  features: int

  def setup(self):
    self.embedding = self.param("embedding", nn.with_logical_partitioning(_init, ("vocab", "embed")),
                                (self.num_embeddings, self.features), jnp.float32)


class Model(nn.Module):
  """HF `*Model`: embeddings, layers, final norm."""

  config: DecoderConfig
  remat: bool = False
  lora: Optional[LoraConfig] = None

  def setup(self):
    cfg = self.config
    self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
    layer = nn.remat(DecoderLayer, static_argnums=()) if self.remat else DecoderLayer
    self.layers = nn.scan(
        layer, variable_axes={"params": 0, LORA: 0}, split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_hidden_layers, unroll=cfg.scan_unroll,
        metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.lora)
    self.norm = RMSNorm(cfg.rms_norm_eps, cfg.norm_plus_one)

  def embedding_table(self) -> Array:
    return self.embed_tokens.embedding

  def embed(self, token_ids: Array) -> Array:
    """Input embeddings `[B, T, D]` of token ids `[B, T]` (Gemma: scaled by sqrt(D), as HF does)."""
    table = self.embedding_table()
    x = jnp.take(table, token_ids, axis=0)
    if self.config.scale_embeddings:
      x = x * jnp.asarray(self.config.hidden_size ** 0.5, x.dtype)
    return x

  def __call__(self, x, positions, valid, patch=None, return_hidden=False, context=None):
    """x `[B, T, D]` input embeddings; positions `[B, T]`; valid `[B, T]` (False = padding).

    context: a `Context` of C earlier slots that every query may also attend to (where valid); the patch, if
    any, still covers the T slots of x only.
    """
    cfg = self.config
    kv, write_index, new_context = None, 0, None
    if context is None:
      masks = attention_masks(cfg, positions, positions, valid, 0)
    else:
      c, t = context.k.shape[3], x.shape[1]
      grow = lambda a: jnp.pad(a.astype(x.dtype), ((0, 0), (0, 0), (0, 0), (0, t), (0, 0)))
      kv, write_index = (grow(context.k), grow(context.v)), c
      key_pos = jnp.concatenate([context.positions, positions.astype(jnp.int32)], axis=1)
      key_valid = jnp.concatenate([context.valid, valid.astype(bool)], axis=1)
      masks = attention_masks(cfg, positions, key_pos, key_valid, c)
    if patch is not None:
      x = patch.apply(x, 0)
    xs = (jnp.arange(cfg.num_hidden_layers), jnp.asarray(sliding_layers(cfg)), kv)
    h, (kv, all_hidden) = self.layers(x, xs, positions, masks, patch, write_index)
    if context is not None:
      new_context = Context(k=kv[0], v=kv[1], positions=key_pos, valid=key_valid)
    if return_hidden:
      all_hidden = jnp.concatenate([x[None], all_hidden], axis=0)
    return DecoderOutput(logits=None, hidden=self.norm(h), all_hidden=all_hidden if return_hidden else None,
                         context=new_context)


class CausalLM(nn.Module):
  """HF `*ForCausalLM`: `model` plus `lm_head` (or the tied embedding table)."""

  config: DecoderConfig
  remat: bool = False
  lora: Optional[LoraConfig] = None

  def setup(self):
    self.model = Model(self.config, self.remat, self.lora)
    if not self.config.tie_word_embeddings:
      self.lm_head = Linear(self.config.vocab_size, ("embed", "vocab"))

  def embed(self, token_ids: Array) -> Array:
    return self.model.embed(token_ids)

  def logits(self, hidden: Array) -> Array:
    """Output logits `[..., V]` of final hidden states `[..., D]`, in float32."""
    if self.config.tie_word_embeddings:
      table = self.model.embedding_table()
      out = matmul("...d,vd->...v", hidden, table.astype(hidden.dtype))
    else:
      out = self.lm_head(hidden)
    return softcap(out.astype(jnp.float32), self.config.final_logit_softcapping)

  def __call__(self, x, positions, valid, patch=None, return_hidden=False, compute_logits=True, context=None):
    out = self.model(x, positions, valid, patch, return_hidden, context)
    if compute_logits:
      out = out.replace(logits=self.logits(out.hidden))
    return out

  def init_all(self, token_ids):
    """Touches every parameter (for `init`)."""
    x = self.embed(token_ids)
    b, t = token_ids.shape
    return self(x, jnp.broadcast_to(jnp.arange(t), (b, t)), jnp.ones((b, t), bool))
