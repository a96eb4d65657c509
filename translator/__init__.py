"""translator: turn soft prompts into hard prompts.

The public API:
  load_lm(path, dtype) -> LM     a Hugging Face checkpoint folder as a jitted Flax decoder
  LM.logits / LM.generate / LM.forward / LM.embed / LM.encode / LM.decode
  DecoderConfig, Patch           the decoder's configuration; residual-stream patching
  make_mesh                      the (data, fsdp, tensor) device mesh
  shipped_lm(name)               the folder of a shipped LM of the embedded default ("base", "target")
"""

import os

from translator.lm import LM, load_lm
from translator.models import DecoderConfig, Patch
from translator.sharding import make_mesh

__all__ = ["LM", "load_lm", "DecoderConfig", "Patch", "make_mesh", "shipped_lm"]

SHIPPED_LMS = ("base", "target")


def shipped_lm(name: str) -> str:
  """The folder (HF layout, for `load_lm`) of an LM shipped with the package, wherever it is installed:
  `base`, the source LM of the embedded default, or `target`, its larger portability LM
  (launch/build_world.sh trains both)."""
  if name not in SHIPPED_LMS:
    raise ValueError(f"no shipped LM {name!r}; the package ships {', '.join(SHIPPED_LMS)}")
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "lms", name)

