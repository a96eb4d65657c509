r"""The design card's translator: a small transformer encoder over the prompt vectors + a frozen decoder (no LoRA).

The encoder (2 pre-LN self-attention blocks of width 256 over the 20 vectors, then a projection into the
decoder's embedding space, residual around the prompt) is the only trainable part; the decoder LM (the source
LM) is frozen. `--config.encoder.num_queries=16` makes it a resampler (16 learned queries cross-attend to
the prompt). Paper hyper-parameters otherwise (AdamW 1e-4, wd 0.1, batch 8, 5 epochs, best valid ROUGE-L).

Local:
  python -m experiments.train_translator --config configs/translator_design.py --workdir /tmp/translator_design \
      --config.world_dir=/tmp/world --config.stores='("/tmp/tune_toy/prompts",)'
A smoke run: `--config configs/translator_design.py:smoke`.
TPU pod:
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.train_translator --config configs/translator_design.py \
      --workdir ~/translator_design --config.world_dir=~/world --config.stores='(\"~/tune_toy/prompts\",)'"
"""

import translator
from translator.translation import config as base_config


def get_config(arg: str = ""):
  args = [a for a in arg.split(",") if a]
  c = base_config.base()
  c.lm_path = translator.shipped_lm("base")
  c.encoder.update(kind="transformer", width=256, depth=2, heads=4, num_queries=0, skip=True, dropout=0.1)
  c.lora.rank = 0  # frozen decoder
  c.optimizer.lr = 1e-4
  if "smoke" in args:
    base_config.smoke(c)
    c.encoder.update(width=32, depth=1, heads=2)
  return c
