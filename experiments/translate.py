r"""Translates soft prompts into hard prompts with a trained translator; writes JSON (atomically) and prints them.

  python -m experiments.translate --translator /tmp/translator_paper/translator \
      --prompts /tmp/tune_toy/prompts --output /tmp/hard_prompts.json
  python -m experiments.translate --translator /tmp/translator_paper/translator --prompts prompt.npy

--prompts: a prompt store folder (experiments.tune_prompts; one translation per task), or one file:
`.npy` or `.safetensors` holding `[P, D]` (one prompt) or `[T, P, D]` (a `.safetensors` with several tensors
must name one with --tensor). --lm_path moves the decoder LM (default: the path in translator.json).

Output: {"translator", "prompts", "translations": [{"name", "hard_prompt"}]} (names: the store's task names,
else "prompt_{i}").
"""

import json
import os

from absl import app, flags, logging
import numpy as np
from safetensors import safe_open

from translator.data import dod
from translator.translation import export
from translator.tuning import store

_TRANSLATOR = flags.DEFINE_string("translator", None, "A translator folder (WORKDIR/translator).", required=True)
_PROMPTS = flags.DEFINE_string("prompts", None, "A prompt store folder, or a .npy / .safetensors file.",
                               required=True)
_OUTPUT = flags.DEFINE_string("output", "", "JSON file to write (default: print only).")
_LM_PATH = flags.DEFINE_string("lm_path", "", "Override the decoder LM folder.")
_TENSOR = flags.DEFINE_string("tensor", "", "Tensor name in a .safetensors file with several.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 0, "0 = the translator's own budget.")


def read_prompts(path: str, tensor: str = "") -> tuple[list[str], np.ndarray]:
  """(names, prompts `[N, P, D]`) from a prompt store, a `.npy` or a `.safetensors` file."""
  if os.path.isdir(path) or os.path.basename(path) == store.PROMPTS_FILE:
    names, prompts, _ = store.read(path)
    return names, prompts
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: pass a prompt store folder, a .npy or a .safetensors file")
  if path.endswith(".npy"):
    prompts = np.load(path)
  elif path.endswith(".safetensors"):
    with safe_open(path, framework="numpy") as f:
      keys = list(f.keys())
      if tensor:
        if tensor not in keys:
          raise KeyError(f"{path} has no tensor {tensor!r}; it has {keys}")
        key = tensor
      elif len(keys) == 1:
        key = keys[0]
      else:
        raise ValueError(f"{path} holds tensors {keys}: choose one with --tensor")
      prompts = f.get_tensor(key)
  else:
    raise ValueError(f"{path}: expected a prompt store folder, a .npy or a .safetensors file")
  prompts = np.asarray(prompts, np.float32)
  if prompts.ndim == 2:
    prompts = prompts[None]
  if prompts.ndim != 3:
    raise ValueError(f"{path} holds an array of shape {prompts.shape}; expected [P, D] or [N, P, D]")
  return [f"prompt_{i}" for i in range(len(prompts))], prompts


def run(translator_dir: str, prompts_path: str, output: str = "", lm_path: str = "", tensor: str = "",
        max_new_tokens: int = 0) -> list[dict]:
  names, prompts = read_prompts(prompts_path, tensor)
  tr = export.load(translator_dir, lm_path=lm_path or None)
  texts = tr.translate(prompts, max_new_tokens=max_new_tokens or None)
  rows = [{"name": n, "hard_prompt": t} for n, t in zip(names, texts)]
  if output:
    dod.atomic_write_text(output, json.dumps({"translator": os.path.abspath(translator_dir),
                                              "prompts": os.path.abspath(prompts_path), "translations": rows},
                                             indent=1, ensure_ascii=False) + "\n")
    logging.info("wrote %d hard prompts to %s", len(rows), output)
  return rows


def main(argv):
  del argv
  for row in run(_TRANSLATOR.value, _PROMPTS.value, _OUTPUT.value, _LM_PATH.value, _TENSOR.value, _MAX_NEW.value):
    print(f"{row['name']}\t{row['hard_prompt']}")


if __name__ == "__main__":
  app.run(main)
