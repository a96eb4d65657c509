r"""Foundation demo: HF-layout checkpoint -> `load_lm` on a mesh -> logits, generation, hidden states.

  python -m experiments.demo --config configs/demo.py --workdir /tmp/translator_demo
"""

import os
import time

from absl import app, flags, logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np

import translator
from translator import distributed
from translator.hf import export
from translator.models import DecoderConfig, Patch
from translator.models import functions as F


def _timed(name, fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  logging.info("%-38s %8.3f s", name, time.perf_counter() - start)
  return out


def main(argv):
  del argv
  cfg = flags.FLAGS.config
  distributed.initialize()
  rng = jax.random.key(cfg.seed)

  # ----- Checkpoint ---------------------------------------------------------------------------------------
  path = cfg.lm_path
  if not path:
    m = cfg.model
    config = DecoderConfig(
        family="llama", vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim, rope_theta=m.rope_theta,
        max_position_embeddings=m.max_position_embeddings, bos_token_id=m.bos_token_id,
        eos_token_ids=(m.eos_token_id,), pad_token_id=m.pad_token_id)
    path = os.path.join(flags.FLAGS.workdir, "random_llama")
    if jax.process_index() == 0:
      export.save_lm(path, config, nn.unbox(F.init_params(config, rng)))
      logging.info("wrote a random Llama in HF layout to %s", path)
    multihost_utils.sync_global_devices("checkpoint written")  # the others wait for process 0

  # ----- Load onto the mesh -------------------------------------------------------------------------------
  mesh = translator.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  logging.info("mesh %s over %d devices", dict(mesh.shape), jax.device_count())
  lm = _timed("load_lm", lambda: translator.load_lm(path, cfg.dtype, mesh=mesh))
  c = lm.config
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(lm.params))
  logging.info("%s: %d layers, width %d, %d heads / %d kv heads, %.2fM params", c.family, c.num_hidden_layers,
               c.hidden_size, c.num_attention_heads, c.num_key_value_heads, n_params / 1e6)

  # ----- Inputs: token ids and a soft prompt ----------------------------------------------------------------
  ids = np.asarray(jax.random.randint(jax.random.fold_in(rng, 1), (cfg.batch, cfg.prompt_len), 3, c.vocab_size))
  mask = np.ones_like(ids, bool)
  mask[0, : cfg.prompt_len // 2] = False  # one left-padded row
  table = lm.embed(np.arange(c.vocab_size)[None])[0]
  soft = table[jax.random.randint(jax.random.fold_in(rng, 2), (cfg.batch, cfg.prefix_len), 0, c.vocab_size)]

  # ----- Logits, generation, hidden states, patching -------------------------------------------------------
  logits = _timed("logits (compile + run)", lambda: lm.logits(ids, mask=mask, embedded_prefix=soft))
  logits = _timed("logits (run)", lambda: lm.logits(ids, mask=mask, embedded_prefix=soft))
  logging.info("logits %s", logits.shape)
  gen = lambda prefix: lm.sample(ids, mask=mask, embedded_prefix=prefix, max_new_tokens=cfg.max_new_tokens,
                                 temperature=cfg.temperature, rng=jax.random.fold_in(rng, 3))
  _timed("generate, soft prefix (compile + run)", lambda: gen(soft))
  out = _timed("generate, soft prefix (run)", lambda: gen(soft))
  plain = _timed("generate, no prefix (compile + run)", lambda: gen(None))
  tokens = cfg.batch * cfg.max_new_tokens
  logging.info("new tokens, soft prefix: %s ... lengths %s", np.asarray(out.tokens[1, :10]), np.asarray(out.lengths))
  logging.info("new tokens, no prefix:   %s ... (%d new tokens per call)", np.asarray(plain.tokens[1, :10]), tokens)
  hidden = lm.forward(ids, mask=mask, embedded_prefix=soft, return_hidden=True).all_hidden
  logging.info("residual stream %s (embeddings + %d layers)", hidden.shape, c.num_hidden_layers)
  # Put the soft prompt's state at layer `patch_layer` over the first prompt positions (InSPEcT-style).
  patch = Patch.at(cfg.patch_layer, cfg.prefix_len, hidden[cfg.patch_layer, :, :4], length=cfg.prefix_len + cfg.prompt_len)
  patched = lm.forward(ids, mask=mask, embedded_prefix=soft, patch=patch).logits
  logging.info("patching layer %d moved the logits by up to %.3f", cfg.patch_layer,
               float(jnp.abs(patched - logits).max()))


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo config.")
  flags.DEFINE_string("workdir", None, "Where the random checkpoint is written.", required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
