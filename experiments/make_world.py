r"""Writes the embedded default's world: the synthetic DoD (`WORKDIR/dod`) and its tokenizer
(`WORKDIR/tokenizer`). Deterministic: the same config gives byte-identical files (so rewriting is
harmless, and takes seconds).

  python -m experiments.make_world --config configs/world.py --workdir /tmp/world
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from translator.data import dod, synthetic, tokenizer


def make_world(cfg, workdir: str) -> tuple[str, str]:
  """Writes `workdir/dod` and `workdir/tokenizer`; returns both paths."""
  dod_dir, tok_dir = os.path.join(workdir, "dod"), os.path.join(workdir, "tokenizer")
  tasks = synthetic.generate(cfg.dod)
  meta = {"generator": "translator.data.synthetic", "config": json.loads(cfg.dod.to_json())}
  dod.write_dod(tasks, dod_dir, metadata=meta)
  logging.info("wrote %s: %s", dod_dir, json.dumps(dod.counts(tasks)["tasks_by_family_and_split"]))
  # The tokenizer reads no novel task: those never occur in pretraining.
  seen = [t for t in tasks if t.split != "novel"]
  tokenizer.train_tokenizer(tokenizer.corpus_texts(seen, cfg.tokenizer_examples_per_task), tok_dir,
                            vocab_size=cfg.tokenizer_vocab_size)
  logging.info("wrote the tokenizer to %s", tok_dir)
  return dod_dir, tok_dir


def main(argv):
  del argv
  make_world(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/world.py", "World config.")
  flags.DEFINE_string("workdir", None, "Output folder.", required=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
