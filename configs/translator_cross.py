r"""Cross-model translation: prompts tuned on the `base` LM, decoded by the `target` LM through a linear encoder.

The linear encoder maps every prompt vector from the base LM's width into the target LM's embedding space,
starting from the map that sends each token's base embedding to its target embedding;
the target LM reads the result as its prefix, with LoRA r=16, alpha=32, dropout 0.1 (the rank of the default's
main translator: on the embedded default, r16 reached all-task ROUGE-L 0.569 against 0.489 for the paper's r4).
Paper hyper-parameters otherwise.

Local (prompts from experiments.tune_prompts on the base LM in /tmp/tune_toy):
  python -m experiments.train_translator --config configs/translator_cross.py --workdir /tmp/translator_cross \
      --config.world_dir=/tmp/world --config.stores='("/tmp/tune_toy/prompts",)'
A smoke run: `--config configs/translator_cross.py:smoke`.
TPU pod:
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.train_translator --config configs/translator_cross.py \
      --workdir ~/translator_cross --config.world_dir=~/world --config.stores='(\"~/tune_toy/prompts\",)'"
"""

import translator
from translator.translation import config as base_config


def get_config(arg: str = ""):
  args = [a for a in arg.split(",") if a]
  c = base_config.base()
  c.lm_path = translator.shipped_lm("target")  # the decoder; the prompts come from the shipped base
  c.encoder.kind = "linear"
  # Starts as the least-squares map from base's token embeddings to target's (they share the tokenizer).
  c.encoder.align_with = translator.shipped_lm("base")
  c.lora.update(rank=16, alpha=32.0, dropout=0.1)
  if "smoke" in args:
    base_config.smoke(c)
  return c
