r"""Evaluate LMs (HF folders) on the tasks of a DoD: exact match on held-out instances with the gold
instruction, with the input alone, and with three demonstrations, per task split and family.

Local (CPU; every test and novel task, all 30 test instances, 3 conditions: ~15k prompts per LM):
  python -m experiments.eval_lms --config configs/eval_lms.py --workdir /tmp/eval_lms \
      --config.dod_dir=/tmp/synthetic_dod --config.lms=base=/tmp/pretrain_base/hf,target=/tmp/pretrain_target/hf
A quick look (10 tasks per split, 10 instances each):
  python -m experiments.eval_lms --config configs/eval_lms.py --workdir /tmp/eval_lms_quick \
      --config.dod_dir=/tmp/synthetic_dod --config.lms=/tmp/pretrain_base/hf \
      --config.tasks_per_split=10 --config.instances_per_task=10
TPU VM (one host is plenty; a local workdir): the local command with --config.dtype=bfloat16.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  # Comma-separated LMs, each "name=path" or "path" (named by the folder's base name).
  c.lms = ""
  c.dod_dir = ""  # a DoD written by translator.data.dod.write_dod
  c.dtype = "float32"
  c.task_splits = "test,novel"  # comma-separated task splits: any of train, test, novel
  c.conditions = "instruction,input_only,few_shot"
  c.instance_split = "test"
  c.instances_per_task = 30  # the first N instances of instance_split (30 = all test instances)
  c.tasks_per_split = 0  # 0: every task of the split; else a seeded sample
  c.num_demos = 3  # demonstrations of the few_shot condition, from the task's train instances
  c.seed = 0
  c.batch_size = 64  # prompts per generate call (the last batch is filled up: one compile per length)
  c.max_new_tokens = 24  # the longest synthetic output is 18 tokens
  c.length_multiple = 32  # prompts are left-padded to a multiple of this
  return c
