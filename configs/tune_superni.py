r"""The paper's prompt tuning: one 20-token soft prompt per Super-NaturalInstructions task, Llama-3.1-8B-Instruct
frozen, AdamW lr 1e-4, batches of 8 examples per task, at most 20 epochs, patience 3 on the task's validation
loss, at most 500 instances per task split 90/10 into train / valid - all tasks in one job.

TPU pod (the LM folder and the SuperNI clone on every worker, e.g. a mounted bucket):
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.tune_prompts --config configs/tune_superni.py \
      --workdir ~/tune_superni --config.lm_path=~/Llama-3.1-8B-Instruct \
      --config.superni.root=~/natural-instructions"
Local (a CPU or one accelerator host; the same job, slower - for a look, cap the tasks):
  python -m experiments.tune_prompts --config configs/tune_superni.py --workdir /tmp/tune_superni \
      --config.lm_path=/path/to/Llama-3.1-8B-Instruct --config.superni.root=/path/to/natural-instructions \
      --config.superni.max_tasks=8 --config.mesh.fsdp=1
Restarting the same command resumes from the workdir.

Mapping the paper's per-task jobs onto one job (translator/tuning/schedule.py): a step holds
`tasks_per_step` (32) tasks x 8 examples = 256 rows; each task's 8 rows are exactly its own batch of the
paper and update only its prompt, with its own AdamW state and step count; a task's epoch is one pass over
its (at most 450) train instances, after which its validation loss decides early stopping. Tasks whose
patience ran out leave the rotation; the job ends when every task has stopped.
"""

import ml_collections

from configs import tune_toy


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  from translator.data import superni  # pylint: disable=g-import-not-at-top  (imported when the config is built)

  c = tune_toy.get_config()
  c.dod = "superni"
  c.superni = superni.superni_config()  # 500 instances per task at most, 10% valid, <= 400 tokens per instance
  c.superni.max_instances_per_task = 500
  c.superni.valid_fraction = 0.1
  c.task_splits = "train,test"
  c.lm_path = ""  # a local Llama-3.1-8B-Instruct folder in HF layout
  c.lm_dtype = "bfloat16"
  c.prompt_length = 20
  c.prompt_position = "before_bos"
  c.init.kind = "random_vocab"
  # Rows: BOS + at most 400 tokens of "Input: x\nOutput: y" + EOS; targets past 128 tokens are cut (rare).
  c.data.update(max_train_per_task=0, max_valid_per_task=0, max_len=408, max_target_len=128)
  c.examples_per_task = 8
  c.tasks_per_step = 32
  c.max_epochs = 20
  c.patience = 3
  c.optimizer = ml_collections.ConfigDict(dict(name="adamw", lr=1e-4, weight_decay=0.0, schedule="constant",
                                               warmup_steps=0, clip_norm=0.0))
  c.remat = True  # 256 rows x 428 positions of an 8B model: recompute layer activations in the backward pass
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=4, tensor=1))  # 16 GB of bf16 weights over 4 chips
  c.eval_batch_size = 256
  c.final_eval.update(batch_size=256, max_new_tokens=128, max_examples_per_task=0)
  c.log_every = 20
  c.checkpoint_every = 200
  c.store.hash_weights = True
  return c
