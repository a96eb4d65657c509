"""The translator: soft prompt -> the instruction it stands for.

  encoders        identity (the paper) | linear | mlp | transformer (a resampler with learned queries)
  data            (soft prompt, instruction) pairs from prompt stores + the DoD; task splits; paraphrases
  step            the jitted train step and greedy generation over a frozen decoder (+ LoRA)
  evaluate        ROUGE-L per prompt, task and family
  export          a trained translator on disk; `export.load(dir).translate(prompts)`
  config.base     the paper's hyper-parameters, specialised by configs/translator_*.py

The entry points are experiments/train_translator.py and experiments/translate.py.
"""

from translator.translation import data, encoders, evaluate, export, step
from translator.translation.export import Translator, load

__all__ = ["data", "encoders", "evaluate", "export", "step", "Translator", "load"]
