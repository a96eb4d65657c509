r"""Pretraining the embedded default's LMs: `base` (the source LM of soft prompts) and `target` (the larger
model of the portability experiment, differently seeded).

Local (after `python -m experiments.make_world --config configs/world.py --workdir /tmp/world`):
  python -m experiments.pretrain --config configs/pretrain.py:base --workdir /tmp/world/base \
      --config.world_dir=/tmp/world
  python -m experiments.pretrain --config configs/pretrain.py:target --workdir /tmp/world/target \
      --config.world_dir=/tmp/world
A smoke run: `--config configs/pretrain.py:base,smoke`. Restarting the same command resumes.
TPU pod:
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.pretrain --config configs/pretrain.py:target \
      --workdir ~/world/target --config.world_dir=~/world --config.mesh.data=-1"
"""

import ml_collections

from translator.data import corpus


def get_config(arg: str = "base") -> ml_collections.ConfigDict:
  args = arg.split(",")
  size = args[0]
  c = ml_collections.ConfigDict()
  c.world_dir = ""  # holds dod/ and tokenizer/ (experiments.make_world)
  c.seed = {"base": 0, "target": 1}[size]

  c.model = ml_collections.ConfigDict(dict(
      vocab_size=None,  # None: the tokenizer's
      hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=6,
      rope_theta=10000.0, max_position_embeddings=512, tie_word_embeddings=True,
      unroll_layers=True))  # speed only: the scan over layers fully unrolled (~10% faster steps on the CPU)
  if size == "target":  # >= 4x the parameters of base
    c.model.update(hidden_size=320, intermediate_size=960, num_hidden_layers=6, num_attention_heads=8,
                   num_key_value_heads=8)

  c.corpus = corpus.corpus_config()
  c.seq_len = c.corpus.get_ref("seq_len")
  # 32 rows of 256 tokens per step (~7,600 tokens/s for base, ~40 ms per row, on a 2-core CPU).
  c.batch_size = 32
  c.total_steps = 3_000 if size == "base" else 2_000
  c.stop_at_step = 0  # 0 = total_steps; else end there while the schedule runs to total_steps (continuations)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=2e-3 if size == "base" else 1e-3, b2=0.98, weight_decay=0.1, clip_norm=1.0,
      schedule="cosine", warmup_steps=150, final_lr_fraction=0.05))
  c.remat = False
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.log_every = 50
  c.checkpoint_every = 250
  c.eval = ml_collections.ConfigDict(dict(every=500, num_tasks=60, num_instances=8, batch_size=64))
  # The shipped LMs must fit 40 MB together: base in float32 (8.2 MB), target in bfloat16 (16.9 MB; 33.8 MB in
  # float32). load_lm casts to the dtype asked for at load, so the target runs in float32 from bf16 weights.
  c.export_dtype = "float32" if size == "base" else "bfloat16"

  if "smoke" in args:
    c.total_steps, c.batch_size, c.log_every, c.checkpoint_every = 20, 8, 5, 10
    c.eval.update(every=20, num_tasks=4, num_instances=2)
    c.model.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=2)
  return c
