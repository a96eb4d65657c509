"""One prompt-tuning step: ours (`translator.tuning.step.Tuner.train_step`, JAX) vs the paper's stack (`transformers`
+ PEFT prompt tuning, PyTorch), on the same tiny random Llama, the same rows and the same initial prompt.

Model: hidden 256, 4 layers, 8 heads (8 key/value heads), intermediate 688, vocab 32000, float32, built in
transformers and saved to a temporary folder that ours loads with `translator.load_lm`. Step: 20 virtual
tokens, a batch of 8 rows of 64 text tokens (random ids) whose last 16 are the target: the loss is the mean
cross-entropy of the 128 target tokens on both sides (PEFT: labels -100 elsewhere; it still computes the LM
head at every position, ours only at the targets; PEFT runs the prompt in each of the 8 rows, ours once, the rows
attending to its keys and values), then an AdamW update of the prompt (lr 1e-4). Ours runs as the
configs do: layers scanned with `remat=True` (recomputing activations in the backward pass is ~7% faster here).
Tokens/s counts the 8 x (20 + 64) = 672 positions a step processes.

Each side runs in its own subprocess (peak RSS per side from `resource.getrusage`), PEFT twice: with torch's
default threads and with 1 thread (another job on the cores makes OpenMP's default far slower; the ratio is
reported against the faster PEFT). After warm-up the parent interleaves the timed steps (ours, PEFT, PEFT-1
thread, ours, ...) and compares medians. Both sides start from the same prompt; their first losses are printed
(they agree to ~1e-5). The lower bound of our step is its FLOP count (matmuls, activation gradients only: the
LM is frozen) over this CPU's fp32 matmul peak, measured under jax.jit on 2048 x 2048 matrices.

  python -m benchmarks.prompt_tuning            # from the repo root
  python -m benchmarks.prompt_tuning --reps=20 --text_len=128 --target_len=32
"""

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

if __package__ in (None, ""):  # Run as a script: make the repo root importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # pylint: disable=g-import-not-at-top

_SIDE = flags.DEFINE_enum("side", "", ["", "ours", "peft"], "Internal: run one side as a worker.")
_DIR = flags.DEFINE_string("dir", "", "Internal: the folder with the model, rows and initial prompt.")
_THREADS = flags.DEFINE_integer("threads", 0, "Internal: torch threads (0 = torch's default).")
_REPS = flags.DEFINE_integer("reps", 15, "Timed steps of each side (interleaved).")
_BATCH = flags.DEFINE_integer("batch", 8, "Rows per step (all of one task).")
_TEXT_LEN = flags.DEFINE_integer("text_len", 64, "Text tokens per row.")
_TARGET_LEN = flags.DEFINE_integer("target_len", 16, "Target tokens at the end of each row (the loss).")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 20, "Virtual tokens.")
_HIDDEN = flags.DEFINE_integer("hidden", 256, "Model width (8 heads of hidden/8; intermediate 2.6875x).")
_LAYERS = flags.DEFINE_integer("layers", 4, "Decoder layers.")
_VOCAB = flags.DEFINE_integer("vocab", 32000, "Vocabulary size.")
_TASKS = flags.DEFINE_integer("tasks", 64, "Rows of our prompt table (the step trains one of them).")
_REMAT = flags.DEFINE_bool("remat", True, "Ours: recompute layer activations in the backward pass (the "
                           "configs' default; ~7% faster here).")
LR = 1e-4


def _inputs(directory):
  rows = np.load(os.path.join(directory, "rows.npy"))
  prompt = np.load(os.path.join(directory, "prompt.npy"))
  return rows, prompt


def _serve(step, first_loss, extra=None, peak=None):
  """Worker loop: "run" -> one timed step (prints seconds); "peak" -> the matmul peak (FLOP/s);
  "quit" -> prints the final JSON record."""
  print(json.dumps({"ready": True, "first_loss": first_loss}), flush=True)
  for line in sys.stdin:
    if line.strip() == "run":
      start = time.perf_counter()
      step()
      print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
    elif line.strip() == "peak":
      print(json.dumps({"flops_per_s": peak()}), flush=True)
    elif line.strip() == "quit":
      record = {"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **(extra or {})}
      print(json.dumps(record), flush=True)
      return


def worker_ours(directory):
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import translator  # pylint: disable=g-import-not-at-top
  from translator.training import optimizers  # pylint: disable=g-import-not-at-top
  from translator.tuning import data as data_lib, step as step_lib  # pylint: disable=g-import-not-at-top

  rows, prompt = _inputs(directory)
  b, t = rows.shape
  tt, p = _TARGET_LEN.value, prompt.shape[0]
  mesh = translator.make_mesh()
  lm = translator.load_lm(os.path.join(directory, "model"), mesh=mesh)
  layout = data_lib.Layout(prompt_length=p, prompt_position="before_bos", max_len=t, max_target_len=tt,
                           bos_id=None, eos_id=None, pad_id=0)
  tx = optimizers.make(ml_collections.ConfigDict(dict(name="adamw", lr=LR)), 1000)
  tuner = step_lib.Tuner(mesh, lm.config, jax.tree_util.tree_map(lambda x: x.sharding, lm.params), layout,
                         num_tasks=_TASKS.value, tx=tx, tasks_per_step=1, examples_per_task=b, remat=_REMAT.value)
  table = np.broadcast_to(prompt, (_TASKS.value,) + prompt.shape).copy()
  state = tuner.init_state(jax.device_put(table, tuner.prompt_sharding))
  target_pos = np.broadcast_to(p + np.arange(t - tt, t) - 1, (b, tt)).astype(np.int32)
  host = {"tokens": rows, "mask": np.ones((b, t), bool), "target_pos": target_pos, "target_ids": rows[:, t - tt:],
          "target_mask": np.ones((b, tt), bool), "slot_task": np.zeros(1, np.int32)}
  batch = {k: jax.device_put(v, tuner.train_batch_shardings[k]) for k, v in host.items()}
  rng = tuner.rng(0)
  box = {"state": state}

  def step():
    box["state"], aux = tuner.train_step(box["state"], lm.params, batch, rng)
    jax.block_until_ready(box["state"].prompts)
    return aux

  first = float(step()["loss"])
  step()
  # The matmul peak of this CPU under jax.jit (fp32), measured on request while the other workers wait.
  a = jax.device_put(np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32))
  mm = jax.jit(lambda x: x @ x)
  jax.block_until_ready(mm(a))

  def peak():
    times = []
    for _ in range(5):
      start = time.perf_counter()
      jax.block_until_ready(mm(a))
      times.append(time.perf_counter() - start)
    return 2 * 2048 ** 3 / min(times)

  _serve(step, first, {"devices": str(jax.devices()), "jax": jax.__version__}, peak)


def worker_peft(directory):
  import torch  # pylint: disable=g-import-not-at-top
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  rows, prompt = _inputs(directory)
  b, t = rows.shape
  transformers.utils.logging.set_verbosity_error()
  model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(directory, "model"), dtype=torch.float32)
  model = peft.get_peft_model(model, peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                             num_virtual_tokens=prompt.shape[0]))
  with torch.no_grad():
    model.prompt_encoder.default.embedding.weight.copy_(torch.from_numpy(prompt))
  opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LR, weight_decay=0.0)
  ids = torch.from_numpy(rows.astype(np.int64))
  labels = ids.clone()
  labels[:, :t - _TARGET_LEN.value] = -100
  mask = torch.ones_like(ids)
  model.train()

  def step():
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss

  first = float(step())
  step()
  _serve(step, first, {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "peft": peft.__version__, "transformers": transformers.__version__})


class Worker:
  """A side in its own process, driven line by line."""

  def __init__(self, name, args, directory):
    self.name = name
    self.log = open(os.path.join(directory, f"{name}.log"), "w")
    self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.prompt_tuning", f"--dir={directory}", *args],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                 cwd=str(pathlib.Path(__file__).resolve().parents[1]))
    self.times = []

  def read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      self.log.flush()
      with open(self.log.name) as f:
        raise RuntimeError(f"{self.name} died:\n{f.read()[-3000:]}")
    return json.loads(line)

  def run(self):
    self.proc.stdin.write("run\n")
    self.proc.stdin.flush()
    self.times.append(self.read()["seconds"])

  def peak(self) -> float:
    self.proc.stdin.write("peak\n")
    self.proc.stdin.flush()
    return self.read()["flops_per_s"]

  def quit(self) -> dict:
    self.proc.stdin.write("quit\n")
    self.proc.stdin.flush()
    out = self.read()
    self.proc.wait(timeout=60)
    return out


def step_flops(b, p, t, tt, d, f, layers, v, head_positions, prefix_runs) -> float:
  """Matmul FLOPs of forward + activation-gradient backward (2x forward's matmuls, no weight gradients).

  prefix_runs: how often the p prompt positions run: b (every row its own copy, PEFT) or 1 (the rows share the
  prompt, which runs once and whose keys and values all rows attend to: ours).
  """
  per_token_layer = 2 * (4 * d * d + 3 * d * f)  # q, k, v, o (H*E = D) and gate, up, down
  positions = prefix_runs * p + b * t
  attention = 2 * 2 * d * (prefix_runs * p * p + b * t * (p + t))  # QK^T and PV, per layer
  forward = layers * (positions * per_token_layer + attention) + 2 * b * head_positions * d * v
  return 2.0 * forward


def main(argv):
  del argv
  if _SIDE.value == "ours":
    return worker_ours(_DIR.value)
  if _SIDE.value == "peft":
    return worker_peft(_DIR.value)

  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  b, t, tt, p = _BATCH.value, _TEXT_LEN.value, _TARGET_LEN.value, _PROMPT_LEN.value
  d, f, v, layers = _HIDDEN.value, _HIDDEN.value * 43 // 16, _VOCAB.value, _LAYERS.value
  load_start = os.getloadavg()
  with tempfile.TemporaryDirectory() as directory:
    config = transformers.LlamaConfig(vocab_size=v, hidden_size=d, intermediate_size=f, num_hidden_layers=layers,
                                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                                      initializer_range=0.02, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(os.path.join(directory, "model"))
    rng = np.random.default_rng(0)
    np.save(os.path.join(directory, "rows.npy"), rng.integers(3, v, (b, t)).astype(np.int32))
    np.save(os.path.join(directory, "prompt.npy"), (rng.normal(size=(p, d)) * 0.02).astype(np.float32))

    common = [f"--text_len={t}", f"--target_len={tt}", f"--tasks={_TASKS.value}", f"--remat={_REMAT.value}"]
    workers = [Worker("ours", ["--side=ours", *common], directory),
               Worker("peft", ["--side=peft", *common], directory),
               Worker("peft_1thread", ["--side=peft", "--threads=1", *common], directory)]
    first = {w.name: w.read()["first_loss"] for w in workers}
    peaks = [workers[0].peak()]
    for _ in range(_REPS.value):
      for w in workers:
        w.run()
    peaks.append(workers[0].peak())
    final = {w.name: w.quit() for w in workers}
  load_end = os.getloadavg()

  med = {w.name: statistics.median(w.times) for w in workers}
  tokens = b * (p + t)
  ours, peft_default, peft_one = med["ours"], med["peft"], med["peft_1thread"]
  best_peft = min(peft_default, peft_one)
  peak = max(peaks)
  ours_flops = step_flops(b, p, t, tt, d, f, layers, v, head_positions=tt, prefix_runs=1)
  peft_flops = step_flops(b, p, t, tt, d, f, layers, v, head_positions=p + t, prefix_runs=b)
  print(f"cpus={os.cpu_count()} load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end (other jobs on "
        f"the cores slow both sides, PyTorch's default threads most); {final['ours']['jax']} jax, torch "
        f"{final['peft']['torch']} (threads {final['peft']['torch_threads']} / 1), peft {final['peft']['peft']}, "
        f"transformers {final['peft']['transformers']}")
  print(f"model: Llama hidden={d} layers={layers} heads=8/8 intermediate={f} vocab={v} float32; step: batch={b} x "
        f"({p} virtual + {t} text tokens), loss on the last {tt} tokens, AdamW lr {LR}")
  print(f"first loss (same prompt, same rows): ours {first['ours']:.6f}  peft {first['peft']:.6f}  "
        f"peft_1thread {first['peft_1thread']:.6f}")
  for w in workers:
    print(f"{w.name:13s} step ms: median {med[w.name] * 1e3:7.1f}  min {min(w.times) * 1e3:7.1f}  "
          f"({len(w.times)} interleaved runs)  tokens/s {tokens / med[w.name]:8.0f}  "
          f"peak RSS {final[w.name]['maxrss_mib']:.0f} MiB")
  print(f"FLOPs per step (matmuls; backward = activation gradients only): ours {ours_flops / 1e9:.2f} G (prompt run "
        f"once for the {b} rows, LM head on {tt} target positions), PEFT-equivalent {peft_flops / 1e9:.2f} G (prompt "
        f"in every row, head on all {p + t} positions)")
  print(f"fp32 matmul peak (jax.jit, 2048^3, before/after the runs: {peaks[0] / 1e9:.0f}/{peaks[1] / 1e9:.0f} "
        f"GFLOP/s) -> lower bound ours {ours_flops / peak * 1e3:.1f} ms, full-head step {peft_flops / peak * 1e3:.1f} "
        f"ms; ours runs at {ours_flops / peak / ours:.0%} of peak")
  print(f"tokens/s: ours={tokens / ours:.0f} peft={tokens / peft_default:.0f} peft_1thread={tokens / peft_one:.0f}; "
        f"ratio ours/best PEFT = {best_peft / ours:.2f}x (vs default threads {peft_default / ours:.2f}x) "
        f"(goal >= 1.3x)")


if __name__ == "__main__":
  app.run(main)
