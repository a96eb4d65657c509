r"""Tokens/s of one pretraining step (forward, backward, AdamW) of the `base` LM on a 32 x 256 batch, with
the decoder's execution knobs off (one attention block, scan over layers not unrolled) and on (the
defaults of configs/pretrain.py), in one run, and their ratio.

  python benchmarks/train_step.py                 # base
  python benchmarks/train_step.py --size=target --batch=16
"""

import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import pretrain as pretrain_config
from experiments.pretrain import decoder_config
from translator.models import functions as F
from translator.training import lm_loss

_SIZE = flags.DEFINE_string("size", "base", "configs/pretrain.py size: base or target")
_BATCH = flags.DEFINE_integer("batch", 32, "rows per step")
_SEQ = flags.DEFINE_integer("seq_len", 256, "tokens per row")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed steps per variant")


def tokens_per_s(config, batch_size: int, seq_len: int, repeats: int) -> float:
  params = jax.jit(lambda rng: nn.unbox(F.init_params(config, rng)))(jax.random.key(0))
  tx = optax.adamw(1e-3)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, config.vocab_size, (batch_size, seq_len)), jnp.int32)
  loss_mask = jnp.ones((batch_size, seq_len), jnp.float32)

  @jax.jit
  def step(params, opt_state):
    grads = jax.grad(lambda p: lm_loss.next_token_loss(p, config, tokens, loss_mask)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  state = (params, tx.init(params))
  state = jax.block_until_ready(step(*state))  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    state = jax.block_until_ready(step(*state))
  return repeats * batch_size * seq_len / (time.perf_counter() - start)


def main(argv):
  del argv
  cfg = pretrain_config.get_config(_SIZE.value)
  tuned = decoder_config(cfg.model, 1536)
  plain = tuned.replace(attention_query_blocks=1, scan_unroll=1)
  n = sum(x.size for x in jax.tree_util.tree_leaves(jax.eval_shape(lambda: F.init_params(tuned, jax.random.key(0)))))
  print(f"{_SIZE.value}: {n / 1e6:.2f}M params, batch {_BATCH.value} x {_SEQ.value}, {jax.devices()[0].platform}")
  results = {}
  for name, config in (("plain (1 attention block, scan)", plain),
                       (f"tuned ({tuned.attention_query_blocks} causal query blocks, unrolled layers)", tuned)):
    results[name] = tokens_per_s(config, _BATCH.value, _SEQ.value, _REPEATS.value)
    print(f"  {name}: {results[name]:.0f} tokens/s")
  plain_tps, tuned_tps = results.values()
  print(f"  ratio tuned / plain: {tuned_tps / plain_tps:.2f}x")


if __name__ == "__main__":
  app.run(main)
