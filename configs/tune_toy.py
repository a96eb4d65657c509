r"""Prompt tuning on the synthetic world: one prompt per task of the synthetic DoD, against the world's base LM.

Local (after `python -m experiments.make_world --config configs/world.py --workdir /tmp/world` and the base
LM's pretraining, which exports `/tmp/world/base/hf`; the LM defaults to the shipped base):
  python -m experiments.tune_prompts --config configs/tune_toy.py --workdir /tmp/tune_toy \
      --config.world_dir=/tmp/world --config.lm_path=/tmp/world/base/hf
A smoke run (6 tasks, 4-token prompts, 2 epochs, 12 steps; ~10 s on a CPU with a tiny LM): `--config configs/tune_toy.py:smoke`.
The same command on 2 local processes (4 CPU devices each):
  bash launch/local_processes.sh 2 "python -m experiments.tune_prompts --config configs/tune_toy.py:smoke \
      --workdir /tmp/tune_toy_2p --config.world_dir=/tmp/world --config.lm_path=/tmp/world/base/hf"
TPU pod:
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.tune_prompts --config configs/tune_toy.py \
      --workdir ~/tune_toy --config.world_dir=~/world --config.lm_path=~/world/base/hf"
Restarting the same command resumes from the workdir.

Batch composition (see translator/tuning/schedule.py): a step is `tasks_per_step` tasks x `examples_per_task`
examples; each slot is one task's own update on a batch of its examples (the paper's per-task batch), with
its own AdamW state; a task's epoch is one pass over its train instances, after which it is validated.
"""

import ml_collections

import translator


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = [a for a in arg.split(",") if a]
  c = ml_collections.ConfigDict()
  c.dod = "dir"  # "dir": a DoD folder (dod.write_dod); "superni": translator.data.superni
  c.world_dir = ""  # holds dod/ (experiments.make_world)
  c.dod_dir = ""  # overrides world_dir/dod
  c.task_splits = "train,test,novel"  # the translator's splits to tune prompts for (comma-separated)
  c.max_tasks = 0  # 0 = all; else a seeded sample
  c.max_tasks_per_split = ""  # e.g. "train=400,test=60": a seeded sample of at most that many per split
  # A capped train split is sampled balanced over these task fields (attributes or meta entries, in turn,
  # dod.balanced_sample), e.g. "family,kind"; held-out splits are sampled uniformly, so that their means
  # estimate the whole split's. "" = uniform.
  c.balance_train_by = ""
  c.lm_path = translator.shipped_lm("base")
  c.lm_dtype = "float32"
  c.seed = 0

  c.prompt_length = 20
  c.prompt_position = "before_bos"  # the paper; or "after_bos"
  c.init = ml_collections.ConfigDict(dict(
      kind="random_vocab",  # random_vocab | sampled_vocab | class_labels | text | uniform (translator/tuning/inits.py)
      vocab_sample_size=5000, text="", uniform_range=0.5, match_embedding_rms=True, fallback="sampled_vocab"))
  c.data = ml_collections.ConfigDict(dict(
      max_train_per_task=0, max_valid_per_task=0,  # 0 = all (the synthetic DoD: 240 / 30)
      max_len=0, max_target_len=0,  # 0 = fit the data (rounded up to 8)
      append_eos=True))  # the target ends with EOS, as in the pretraining corpus

  c.examples_per_task = 8  # the paper's batch per task
  c.tasks_per_step = 8  # global batch = 64 rows
  c.max_epochs = 20
  c.patience = 3
  c.min_delta = 0.0
  # The paper's AdamW; 1e-3 rather than 1e-4 because the toy tasks have 240 train instances (30 updates per
  # epoch) instead of 450 (on the world's base LM after 600 pretraining steps, 16 tasks x 5 epochs: train loss
  # 3.5 -> 1.67, still falling). Lester et al.: name="adafactor", lr=0.3, multiply_by_parameter_scale=False.
  c.optimizer = ml_collections.ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=0.0, schedule="constant",
                                               warmup_steps=0, clip_norm=0.0,
                                               multiply_by_parameter_scale=True))  # adafactor only
  c.prompt_dropout = 0.0
  c.remat = True  # recompute layer activations in the backward pass: ~7% faster steps on the CPU (benchmark)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.eval_batch_size = 64  # rows per validation-loss batch
  c.final_eval = ml_collections.ConfigDict(dict(batch_size=64, max_new_tokens=0,  # 0 = max_target_len
                                                max_examples_per_task=0))  # 0 = the whole valid split
  c.log_every = 50
  c.checkpoint_every = 200
  c.max_steps = 0  # 0 = until every task has stopped
  c.step_sleep_s = 0.0  # tests only: slows each step so a test can kill the job mid-run
  c.store = ml_collections.ConfigDict(dict(hash_weights=True))

  if "smoke" in args:
    c.max_tasks = 6
    c.prompt_length = 4
    c.max_epochs, c.patience = 2, 1
    c.examples_per_task, c.tasks_per_step = 4, 4
    c.data.update(max_train_per_task=16, max_valid_per_task=4)
    c.eval_batch_size = 8
    c.final_eval.update(batch_size=8, max_new_tokens=8)
    c.log_every, c.checkpoint_every = 2, 4
  return c
