r"""The paper's translator: identity encoder (the 20 soft vectors are the prefix) + LoRA on the source LM.

LoRA r=4, alpha=8, dropout 0.1 on q/k/v/o/gate/up/down; `[soft prompt][BOS][instruction][EOS]`, loss on every
text token; AdamW lr 1e-4, weight decay 0.1, batch 8, 5 epochs; the epoch with the best validation ROUGE-L of
greedy generations is kept.

Local (after experiments.make_world, the base LM's pretraining and experiments.tune_prompts into /tmp/tune_toy):
  python -m experiments.train_translator --config configs/translator_paper.py --workdir /tmp/translator_paper \
      --config.world_dir=/tmp/world --config.stores='("/tmp/tune_toy/prompts",)'
Several seeds of prompts (augmentation): --config.stores='("/tmp/tune_s0/prompts","/tmp/tune_s1/prompts")'.
A smoke run (2 epochs x 3 steps, batch 4): `--config configs/translator_paper.py:smoke`.
TPU pod:
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.train_translator --config configs/translator_paper.py \
      --workdir ~/translator_paper --config.world_dir=~/world --config.stores='(\"~/tune_toy/prompts\",)'"
Restarting the same command resumes from the workdir. Then: python -m experiments.translate \
  --translator /tmp/translator_paper/translator --prompts /tmp/tune_toy/prompts --output /tmp/hard_prompts.json
"""

import translator
from translator.translation import config as base_config


def get_config(arg: str = ""):
  args = [a for a in arg.split(",") if a]
  c = base_config.base()
  c.lm_path = translator.shipped_lm("base")  # the source LM: the one the prompts were tuned on
  c.encoder.kind = "identity"
  c.lora.update(rank=4, alpha=8.0, dropout=0.1)
  if "smoke" in args:
    base_config.smoke(c)
  return c
