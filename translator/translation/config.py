"""The translator's default config (the paper's hyper-parameters), which configs/translator_*.py specialise.

Fields (see experiments/train_translator.py):
  stores            list of prompt store folders (several seeds = several prompts per task)
  world_dir / dod_dir   the DoD the prompts were tuned on (instructions, paraphrases, task splits)
  lm_path, lm_dtype the decoder LM (any `load_lm` folder): the source LM (paper) or another one
  encoder.kind      identity | linear | mlp | transformer (translator/translation/encoders.py), and its sizes;
                    encoder.align_with: linear starts as the map between two LMs' token embeddings
  lora.rank         0 = frozen decoder; else LoRA rank, alpha, dropout, targets (comma-separated)
  data.paraphrases  paraphrased targets per training task (-1 = all); data.valid_tasks: held-out train tasks
                    per family (fraction < 1 or count); data.max_len: text tokens (0 = fit)
  prompt_noise      augmentation: training prompts get Gaussian noise of this fraction of each vector's RMS
  batch_size, epochs, optimizer   the paper: 8, 5, AdamW lr 1e-4, weight decay 0.1
  max_new_tokens    greedy generation budget (0 = data.max_len)
  final_splits      task splits translated with the best translator at the end (eval/{split}.json)
"""

import ml_collections

import translator
from translator.models.lora import ALL_PROJECTIONS


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stores = ("/tmp/tune_toy/prompts",)  # WORKDIR_OF_TUNING/prompts of experiments.tune_prompts (a tuple)
  c.world_dir = ""  # holds dod/ (experiments.make_world)
  c.dod_dir = ""  # overrides world_dir/dod
  c.lm_path = translator.shipped_lm("base")
  c.lm_dtype = "float32"
  c.seed = 0

  c.encoder = ml_collections.ConfigDict(dict(
      kind="identity", hidden=0,  # mlp: hidden width (0 = 4 D)
      width=256, depth=2, heads=4, num_queries=0, skip=True,  # transformer
      dropout=0.0,
      align_with=""))  # linear: the LM the prompts were tuned on; "" = random init (encoders.aligned_linear)
  c.lora = ml_collections.ConfigDict(dict(rank=4, alpha=8.0, dropout=0.1, targets=",".join(ALL_PROJECTIONS)))
  c.data = ml_collections.ConfigDict(dict(paraphrases=-1, valid_tasks=0.1, max_len=0, max_train_tasks=0))

  c.batch_size = 8
  c.epochs = 5
  c.optimizer = ml_collections.ConfigDict(dict(name="adamw", lr=1e-4, weight_decay=0.1, schedule="constant",
                                               warmup_steps=0, clip_norm=0.0))
  c.prompt_noise = 0.0
  c.remat = False
  c.max_new_tokens = 0  # 0 = data.max_len
  c.eval_batch_size = 32
  c.final_splits = "test"  # comma-separated; "" = none
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.log_every = 50
  c.checkpoint_every = 500  # steps; every epoch end is saved too
  c.max_steps_per_epoch = 0  # 0 = one pass over the training pairs
  c.max_steps = 0  # 0 = epochs * steps per epoch
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few steps on a tiny LM: 2 epochs of 3 steps, batch 4, 8 new tokens, 2 paraphrases."""
  c.batch_size = 4
  c.epochs = 2
  c.max_steps_per_epoch = 3
  c.data.paraphrases = 2
  c.data.max_train_tasks = 6
  c.data.valid_tasks = 1
  c.max_new_tokens = 8
  c.eval_batch_size = 8
  c.optimizer.lr = 1e-3
  c.log_every, c.checkpoint_every = 1, 2
  return c
