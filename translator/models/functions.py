"""Plain functions of `(params, inputs)` over the decoder, for use inside other jitted code.

`config` is static (hashable). A sequence is `[embedded prefix (P)][tokens (T)]`: the prefix (soft prompt,
translator output) is always real; tokens may be padded on either side, and every row gives the same
result as it would unpadded. Positions count real items only: the prefix holds 0..P-1, the n-th real
token P + n.

LoRA: `forward`, `apply_embedded` and `cached_step` take `lora` (a `lora.LoraWeights`: the trainable factors and
their static config) next to the frozen params; `split_layers` slices a LoRA tree per layer like the params.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from translator.models.config import DecoderConfig
from translator.models.decoder import (CausalLM, Context, DecoderLayer, DecoderOutput, KVCache, Patch,
                                      attention_masks, sliding_layers)
from translator.models.layers import RMSNorm
from translator.models.lora import COLLECTION as LORA, LoraWeights

Array = jax.Array


def model(config: DecoderConfig, remat: bool = False) -> CausalLM:
  return CausalLM(config, remat=remat)


def init_params(config: DecoderConfig, rng: Array) -> dict:
  """Random float32 params (boxed with their logical axes: use `flax.linen.unbox` to strip them)."""
  return CausalLM(config).init(rng, jnp.zeros((1, 1), jnp.int32), method=CausalLM.init_all)["params"]


def abstract_params(config: DecoderConfig) -> dict:
  """Shapes and logical axes of the params, without allocating them."""
  return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def embed(params: dict, config: DecoderConfig, token_ids: Array) -> Array:
  """Input embeddings `[B, T, D]` of `[B, T]` ids, in the space where an embedded prefix lives."""
  return CausalLM(config).apply({"params": params}, token_ids, method=CausalLM.embed)


def layout(mask: Array, prefix_len: int) -> tuple[Array, Array]:
  """Positions and validity `[B, P + T]` of a prefix of length P followed by tokens with `mask` `[B, T]`."""
  b = mask.shape[0]
  mask = mask.astype(bool)
  token_pos = prefix_len + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
  positions = jnp.concatenate(
      [jnp.broadcast_to(jnp.arange(prefix_len, dtype=jnp.int32), (b, prefix_len)), jnp.maximum(token_pos, 0)],
      axis=1)
  valid = jnp.concatenate([jnp.ones((b, prefix_len), bool), mask], axis=1)
  return positions, valid


def inputs(params: dict, config: DecoderConfig, token_ids: Array, mask: Optional[Array],
           embedded_prefix: Optional[Array]) -> tuple[Array, Array, Array]:
  """Embeddings `[B, P+T, D]`, positions and validity `[B, P+T]` of a prefix and tokens."""
  if mask is None:
    mask = jnp.ones(token_ids.shape, bool)
  if mask.shape != token_ids.shape:
    raise ValueError(f"mask shape {mask.shape} differs from token_ids shape {token_ids.shape}")
  x = embed(params, config, token_ids)
  prefix_len = 0
  if embedded_prefix is not None:
    if embedded_prefix.ndim != 3 or embedded_prefix.shape[0] != x.shape[0] or embedded_prefix.shape[2] != x.shape[2]:
      raise ValueError(f"embedded_prefix has shape {embedded_prefix.shape}; expected [B={x.shape[0]}, P, "
                       f"D={x.shape[2]}] for token_ids of shape {token_ids.shape}")
    prefix_len = embedded_prefix.shape[1]
    x = jnp.concatenate([embedded_prefix.astype(x.dtype), x], axis=1)
  positions, valid = layout(mask, prefix_len)
  return x, positions, valid


def _variables(params: dict, lora: Optional[LoraWeights]) -> dict:
  return {"params": params} if lora is None else {"params": params, LORA: lora.weights}


def forward(params: dict, config: DecoderConfig, token_ids: Array, *, mask: Optional[Array] = None,
            embedded_prefix: Optional[Array] = None, patch: Optional[Patch] = None, return_hidden: bool = False,
            compute_logits: bool = True, remat: bool = False, lora: Optional[LoraWeights] = None,
            dropout_rng: Optional[Array] = None) -> DecoderOutput:
  """One pass over `[prefix][tokens]`: logits `[B, P+T, V]`, final hidden states, optionally the residual
  stream of every layer and a patched stream (see `Patch`). `remat` recomputes layer activations in the
  backward pass (less memory, more compute). `lora` adds its low-rank updates; `dropout_rng` turns on LoRA
  dropout (training)."""
  x, positions, valid = inputs(params, config, token_ids, mask, embedded_prefix)
  return CausalLM(config, remat=remat, lora=None if lora is None else lora.config).apply(
      _variables(params, lora), x, positions, valid, patch, return_hidden, compute_logits,
      rngs=None if dropout_rng is None else {"dropout": dropout_rng})


def forward_shared_prefix(params: dict, config: DecoderConfig, token_ids: Array, *, embedded_prefix: Array,
                          mask: Optional[Array] = None, compute_logits: bool = True,
                          remat: bool = False) -> DecoderOutput:
  """`forward` of `[prefix][tokens]` when consecutive rows share a prefix, computing each prefix once.

  embedded_prefix `[S, P, D]`, token_ids and mask `[B = S * n, T]`: rows s*n .. s*n+n-1 follow prefix s. The
  prefixes run alone (the causal mask makes their states independent of the tokens); their keys and values
  are repeated n times, and the tokens attend to them as a `Context`. The outputs (`[B, P+T, ...]`, the
  prefix's slots repeated) equal `forward` on the repeated prefix up to float rounding, as do the gradients,
  at about (S P + B T) / (B (P + T)) of its cost: prompt tuning's k examples per task share one prompt.
  """
  s, p, _ = embedded_prefix.shape
  b, t = token_ids.shape
  if b % s:
    raise ValueError(f"{b} token rows do not split evenly over {s} prefixes")
  n = b // s
  if mask is None:
    mask = jnp.ones(token_ids.shape, bool)
  x = embed(params, config, token_ids)
  prefix = embedded_prefix.astype(x.dtype)
  model = CausalLM(config, remat=remat)
  positions, valid = layout(mask, p)  # the prefix's slots are the same in every row
  first = model.apply({"params": params}, prefix, positions[::n, :p], valid[::n, :p], compute_logits=compute_logits,
                      context=Context.empty(config, s, x.dtype))
  rest = model.apply({"params": params}, x, positions[:, p:], valid[:, p:], compute_logits=compute_logits,
                     context=first.context.repeat(n))
  join = lambda a, c: None if a is None else jnp.concatenate([jnp.repeat(a, n, axis=0), c], axis=1)
  return DecoderOutput(logits=join(first.logits, rest.logits), hidden=join(first.hidden, rest.hidden))


def logits_from_hidden(params: dict, config: DecoderConfig, hidden: Array) -> Array:
  """Output logits of final (normed) hidden states `[..., D]`: the LM head alone."""
  return CausalLM(config).apply({"params": params}, hidden, method=CausalLM.logits)


def apply_embedded(params: dict, config: DecoderConfig, x: Array, positions: Array, valid: Array,
                   patch: Optional[Patch] = None, lora: Optional[LoraWeights] = None) -> DecoderOutput:
  """The full pass over already embedded inputs `[B, T, D]` (no cache)."""
  return CausalLM(config, lora=None if lora is None else lora.config).apply(
      _variables(params, lora), x, positions, valid, patch)


def split_layers(params: dict, config: DecoderConfig) -> dict:
  """The params with the stacked `model/layers` replaced by a tuple of per-layer trees (for `cached_step`).

  Do this once, outside a decode loop: slicing the stack inside the loop would copy every weight each step.
  The same call slices a LoRA tree (`LoraWeights.weights`, which has the same `model/layers` stack).
  """
  stacked = params["model"]["layers"]
  layers = tuple(jax.tree_util.tree_map(lambda a, i=i: a[i], stacked) for i in range(config.num_hidden_layers))
  return {**params, "model": {**params["model"], "layers": layers}}


def cached_step(split: dict, config: DecoderConfig, x: Array, positions: Array, valid: Array, cache: KVCache,
                patch: Optional[Patch] = None, lora: Optional[LoraWeights] = None) -> tuple[Array, KVCache]:
  """Appends embedded inputs `[B, T, D]` to `cache` and returns their final hidden states `[B, T, D]`.

  `split` comes from `split_layers`; so does `lora.weights` when LoRA is given (per-layer trees).
  Prefill (T = prompt) and decode (T = 1) are the same call.
  """
  offset = cache.end
  key_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, valid, offset, axis=1)
  key_pos = jax.lax.dynamic_update_slice_in_dim(cache.positions, positions.astype(jnp.int32), offset, axis=1)
  masks = attention_masks(config, positions, key_pos, key_valid, offset)
  h = x if patch is None else patch.apply(x, 0)
  ks, vs = [], []
  layer_module = DecoderLayer(config, None if lora is None else lora.config)
  for i, (layer_params, sliding) in enumerate(zip(split["model"]["layers"], sliding_layers(config))):
    variables = {"params": layer_params}
    if lora is not None:
      variables[LORA] = lora.weights["model"]["layers"][i]
    h, ((k, v), _) = layer_module.apply(
        variables, h, (i, sliding, (cache.k[i], cache.v[i])), positions, masks, patch, offset)
    ks.append(k)
    vs.append(v)
  h = RMSNorm(config.rms_norm_eps, config.norm_plus_one).apply({"params": split["model"]["norm"]}, h)
  cache = KVCache(k=tuple(ks), v=tuple(vs), valid=key_valid, positions=key_pos, end=offset + x.shape[1])
  return h, cache
