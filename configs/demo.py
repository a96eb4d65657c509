r"""The foundation demo: a random Llama in HF layout, loaded through `load_lm` onto a mesh, then logits,
generation with and without a soft-prompt prefix, hidden states and a patched layer.

Local (CPU, about a minute):
  python -m experiments.demo --config configs/demo.py --workdir /tmp/translator_demo
Another model: point `lm_path` at any local HF folder (Llama, Mistral, Qwen2, Gemma, Gemma 2):
  python -m experiments.demo --config configs/demo.py --workdir /tmp/d \
      --config.lm_path=/path/to/Llama-3.2-1B-Instruct --config.dtype=bfloat16
TPU pod (every worker runs the same command):
  bash launch/tpu_pod.sh NAME ZONE "python -m experiments.demo --config configs/demo.py \
      --workdir gs://BUCKET/demo --config.mesh.fsdp=-1 --config.mesh.data=1"
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  # An existing HF folder to load; empty: write a random Llama with `model` below into the workdir first.
  c.lm_path = ""
  c.dtype = "float32"
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
      num_key_value_heads=4, head_dim=32, rope_theta=10000.0, max_position_embeddings=2048,
      bos_token_id=1, eos_token_id=2, pad_token_id=0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.batch = 8
  c.prompt_len = 24
  c.prefix_len = 20  # soft prompt length
  c.max_new_tokens = 32
  c.temperature = 0.0
  c.patch_layer = 2
  return c
