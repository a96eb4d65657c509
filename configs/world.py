r"""The embedded default's world: the synthetic dataset of datasets and its tokenizer.

Local (a few seconds):
  python -m experiments.make_world --config configs/world.py --workdir /tmp/world
The whole world, both LMs and their evaluation, in one command (hours on a 2-core CPU; resumable):
  bash launch/build_world.sh /tmp/world
"""

import ml_collections

from translator.data import synthetic


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.dod = synthetic.small_config() if arg == "small" else synthetic.default_config()
  c.tokenizer_vocab_size = 1536  # BPE on this world runs out of pairs seen twice near 1,545 entries
  c.tokenizer_examples_per_task = 16
  return c
