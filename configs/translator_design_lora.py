r"""The design card's encoder with the paper's adapted decoder: a small transformer encoder over the prompt
vectors + LoRA on the source LM.

`configs/translator_design.py` (transformer encoder, frozen decoder) and `configs/translator_paper.py` (identity
encoder, LoRA) each change one half of the translator; this config trains both halves. Paper
hyper-parameters otherwise (AdamW 1e-4, wd 0.1, batch 8, 5 epochs, best valid ROUGE-L).

Local:
  python -m experiments.train_translator --config configs/translator_design_lora.py \
      --workdir /tmp/translator_design_lora --config.world_dir=/tmp/world --config.stores='("/tmp/tune_toy/prompts",)'
In experiments.reproduce: `--config.ablations=design_lora` (trained like the main translator, scored beside it).
A smoke run: `--config configs/translator_design_lora.py:smoke`.
TPU pod:
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.train_translator \
      --config configs/translator_design_lora.py --workdir ~/translator_design_lora --config.world_dir=~/world \
      --config.stores='(\"~/tune_toy/prompts\",)'"
"""

from configs import translator_design


def get_config(arg: str = ""):
  c = translator_design.get_config(arg)
  # The rank of the default's main translator (configs/default.py), which beat rank 4 on the 2M-parameter base.
  c.lora.update(rank=16, alpha=32.0, dropout=0.1)
  return c
