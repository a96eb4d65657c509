"""Next-token cross-entropy of the decoder on token rows, with a loss mask."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from translator.models import functions as F
from translator.models.config import DecoderConfig

Array = jax.Array


def next_token_loss(params: dict, config: DecoderConfig, tokens: Array, loss_mask: Array,
                    mask: Optional[Array] = None, embedded_prefix: Optional[Array] = None,
                    remat: bool = False) -> tuple[Array, dict]:
  """Mean cross-entropy of predicting `tokens[:, 1:]` where `loss_mask[:, 1:]`.

  tokens, loss_mask, mask: `[B, T]` (mask: False = padding, default all real); embedded_prefix `[B, P, D]`
  goes before the tokens and is never a target. Returns (loss, {"loss", "accuracy", "tokens"}).
  """
  out = F.forward(params, config, tokens[:, :-1], mask=None if mask is None else mask[:, :-1],
                  embedded_prefix=embedded_prefix, compute_logits=True, remat=remat)
  prefix_len = 0 if embedded_prefix is None else embedded_prefix.shape[1]
  logits = out.logits[:, prefix_len:]
  targets = tokens[:, 1:]
  weights = loss_mask[:, 1:].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  count = jnp.maximum(weights.sum(), 1.0)
  loss = (ce * weights).sum() / count
  accuracy = ((jnp.argmax(logits, -1) == targets) * weights).sum() / count
  return loss, {"loss": loss, "accuracy": accuracy, "tokens": weights.sum()}
