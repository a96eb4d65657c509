"""Greedy generation speed: ours (`translator.load_lm(...).generate`, JAX) vs Hugging Face `generate` (PyTorch).

Both run on the CPU in one process, on the same weights: a tiny random Llama (hidden 256, 4 layers, 8 heads,
8 key/value heads, intermediate 688, vocab 32000) is built in transformers, saved with `save_pretrained` to
a temporary folder and loaded back with `translator.load_lm`. Each side decodes `--new_tokens` tokens for
`--batch` random prompts of `--prompt_len` tokens, greedily, with a KV cache. The config has no EOS id, so
both always produce every token; the script checks that the two agree token for token.

Our first call (jit compilation + one run) is timed separately; then `--reps` runs of each are interleaved
(ours, HF, ours, HF, ...) so that machine noise hits both, and the medians are compared. Run it on an idle
machine: other jobs on the cores slow PyTorch's OpenMP threads far more than XLA (HF runs then vary 10-50x);
the ratio of the best runs is printed as well. Two floors are printed too, each the same number of steps in the
same kind of jitted loop: the LM head alone (matmul, argmax, next embedding), and every matmul of the model
(each layer's seven projections, then the head, argmax and embedding) with nothing else: no attention over the
cache, norms, RoPE or cache updates. HF's time over a floor bounds the ratio any decoder of these float32 weights
can reach on this machine with XLA's matmuls.

  python -m benchmarks.generate            # from the repo root; or: python benchmarks/generate.py
  python -m benchmarks.generate --batch=1 --new_tokens=128 --reps=3
"""

import dataclasses
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

from absl import app, flags

if __package__ in (None, ""):  # Run as a script: make the repo root importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # A CPU benchmark: skip probing for accelerators.

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np
import torch
import transformers

import translator
from translator.models import functions as F
from translator.models import sampler
from translator.models.layers import matmul

_BATCH = flags.DEFINE_integer("batch", 8, "Prompts per generate call.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "Tokens per prompt (no padding).")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "New tokens per prompt (always all of them: no EOS).")
_HIDDEN = flags.DEFINE_integer("hidden", 256, "Model width; 8 heads of hidden/8 dims, intermediate 2.6875x.")
_LAYERS = flags.DEFINE_integer("layers", 4, "Decoder layers.")
_VOCAB = flags.DEFINE_integer("vocab", 32000, "Vocabulary size.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed runs of each side (interleaved).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Params and compute dtype of both.")


def make_hf_model(dtype: torch.dtype) -> transformers.LlamaForCausalLM:
  """A random Llama without EOS; initializer_range 0.1 makes logits peaked, so greedy ties are unlikely."""
  config = transformers.LlamaConfig(
      vocab_size=_VOCAB.value, hidden_size=_HIDDEN.value, intermediate_size=_HIDDEN.value * 43 // 16,
      num_hidden_layers=_LAYERS.value, num_attention_heads=8, num_key_value_heads=8,
      max_position_embeddings=max(2048, _PROMPT_LEN.value + _NEW_TOKENS.value), initializer_range=0.1,
      bos_token_id=1, eos_token_id=None, pad_token_id=0)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(config).to(dtype).eval()
  model.generation_config.eos_token_id = None
  return model


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main(argv):
  del argv
  b, t, n = _BATCH.value, _PROMPT_LEN.value, _NEW_TOKENS.value
  print(f"jax {jax.__version__} devices={jax.devices()}; torch {torch.__version__} "
        f"threads={torch.get_num_threads()}; transformers {transformers.__version__}; cpus={os.cpu_count()} "
        f"load average {os.getloadavg()[0]:.2f} (other jobs on the CPUs skew both sides, HF's most)")

  # Same weights on both sides.
  transformers.utils.logging.disable_progress_bar()
  hf_model = make_hf_model(getattr(torch, _DTYPE.value))
  with tempfile.TemporaryDirectory() as folder:
    hf_model.save_pretrained(folder)
    lm = translator.load_lm(folder, dtype=_DTYPE.value)
  lm = dataclasses.replace(lm, config=lm.config.replace(eos_token_ids=()))
  c = lm.config
  print(f"model: hidden={c.hidden_size} layers={c.num_hidden_layers} heads={c.num_attention_heads}/"
        f"{c.num_key_value_heads} intermediate={c.intermediate_size} vocab={c.vocab_size} dtype={_DTYPE.value}; "
        f"batch={b} prompt_len={t} new_tokens={n}")

  rng = np.random.default_rng(0)
  ids = rng.integers(3, c.vocab_size, size=(b, t), dtype=np.int32)
  mask = np.ones((b, t), bool)
  ids_jax, mask_jax = jax.device_put(ids), jax.device_put(mask)
  ids_torch = torch.from_numpy(ids.astype(np.int64))
  gen_config = transformers.GenerationConfig(
      do_sample=False, max_new_tokens=n, min_new_tokens=n, use_cache=True, eos_token_id=None, pad_token_id=0)

  def ours():
    return jax.block_until_ready(lm.generate(ids_jax, mask=mask_jax, max_new_tokens=n))

  def theirs():
    with torch.inference_mode():
      out = hf_model.generate(ids_torch, attention_mask=torch.ones_like(ids_torch), generation_config=gen_config)
    return out[:, t:].numpy()

  first, our_tokens = timed(ours)
  _, hf_tokens = timed(theirs)  # HF warm-up (allocator, kernels).
  our_tokens = np.asarray(our_tokens)
  same = our_tokens.shape == hf_tokens.shape and np.array_equal(our_tokens, hf_tokens)
  agree = (our_tokens == hf_tokens).mean() if our_tokens.shape == hf_tokens.shape else 0.0
  print(f"tokens: ours {our_tokens.shape} hf {hf_tokens.shape}; identical={same} "
        f"(agreement {agree:.1%}, first row ours {our_tokens[0, :8].tolist()} hf {hf_tokens[0, :8].tolist()})")

  our_times, hf_times = [], []
  for _ in range(_REPS.value):
    our_times.append(timed(ours)[0])
    hf_times.append(timed(theirs)[0])
  ours_s, hf_s = statistics.median(our_times), statistics.median(hf_times)
  print(f"ours: first call {first:.2f}s (compile ~{first - ours_s:.2f}s); runs "
        f"{' '.join(f'{s:.3f}' for s in our_times)} s; {ours_s / n * 1e3:.2f} ms per new token")
  print(f"hf:   runs {' '.join(f'{s:.3f}' for s in hf_times)} s; {hf_s / n * 1e3:.2f} ms per new token")
  # The floors of any greedy decoder on these weights: n steps of the LM head (one [B, D] x [D, V] matmul,
  # memory-bound on the CPU), the argmax and the next token's embedding; then the same after every projection
  # of every layer (the weights a step must read), in the same kind of jitted loop, with nothing else.
  head = lm.params["lm_head"]["kernel"] if "lm_head" in lm.params else lm.params["model"]["embed_tokens"][
      "embedding"].T
  table = lm.params["model"]["embed_tokens"]["embedding"]
  layers = F.split_layers(lm.params, c)["model"]["layers"]

  def projections(h):
    for layer in layers:
      a, m = layer["self_attn"], layer["mlp"]
      qkv = sum(matmul("bd,de->be", h, a[k]["kernel"]) for k in ("q_proj", "k_proj", "v_proj"))
      h = h + matmul("bd,de->be", qkv, a["o_proj"]["kernel"])
      up = matmul("bd,df->bf", h, m["gate_proj"]["kernel"]) * matmul("bd,df->bf", h, m["up_proj"]["kernel"])
      h = h + matmul("bf,fd->bd", up, m["down_proj"]["kernel"])
    return h

  def floor(layers_too: bool):
    @jax.jit
    def loop(h):
      def body(_, h):
        h = projections(h) if layers_too else h
        return jnp.take(table, sampler.argmax(matmul("bd,dv->bv", h, head)), axis=0)
      return jax.lax.fori_loop(0, n, body, h)
    h0 = jnp.ones((b, c.hidden_size), head.dtype)
    jax.block_until_ready(loop(h0))
    return statistics.median(timed(lambda: jax.block_until_ready(loop(h0)))[0] for _ in range(_REPS.value))

  head_s, matmuls_s = floor(False), floor(True)
  print(f"floor: the LM head, argmax and embedding alone take {head_s:.3f} s for {n} steps "
        f"({head_s / n * 1e3:.2f} ms per token), {head_s / ours_s:.0%} of ours; a decoder doing nothing else "
        f"would be {hf_s / head_s:.2f}x hf")
  print(f"floor: every matmul of the model (7 per layer and the head), argmax and embedding alone take "
        f"{matmuls_s:.3f} s ({matmuls_s / n * 1e3:.2f} ms per token), {matmuls_s / ours_s:.0%} of ours; a decoder "
        f"doing nothing else would be {hf_s / matmuls_s:.2f}x hf")
  ours_tps, hf_tps = b * n / ours_s, b * n / hf_s
  best_ratio = min(hf_times) / min(our_times)
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.
  print(f"median s: ours={ours_s:.3f} hf={hf_s:.3f}; peak RSS {peak_mib:.0f} MiB (both, one process)")
  print(f"generate tokens/s: ours={ours_tps:.0f} hf={hf_tps:.0f} ratio={ours_tps / hf_tps:.2f}x "
        f"(best of {len(our_times)}: {best_ratio:.2f}x) (goal >= 3x)")


if __name__ == "__main__":
  app.run(main)
