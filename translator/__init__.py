"""translator: turn soft prompts into hard prompts.

The public API:
  load_lm(path, dtype) -> LM     a Hugging Face checkpoint folder as a jitted Flax decoder
  LM.logits / LM.generate / LM.forward / LM.embed / LM.encode / LM.decode
  DecoderConfig, Patch           the decoder's configuration; residual-stream patching
  make_mesh                      the (data, fsdp, tensor) device mesh
"""

from translator.lm import LM, load_lm
from translator.models import DecoderConfig, Patch
from translator.sharding import make_mesh

__all__ = ["LM", "load_lm", "DecoderConfig", "Patch", "make_mesh"]
