r"""Serve a local LM (HF folder) as an OpenAI-compatible chat API on 127.0.0.1.

Local (CPU):
  python -m experiments.serve_openai --config configs/serve_openai.py --config.lm_path=/tmp/pretrain_target/hf
then, from Python:
  translator.execution.ChatClient("http://127.0.0.1:8000/v1", "hf", api_key_env=None).complete(["..."])
With a key (clients send `Authorization: Bearer $SERVE_KEY`):
  SERVE_KEY=... python -m experiments.serve_openai --config configs/serve_openai.py \
      --config.lm_path=/tmp/pretrain_target/hf --config.api_key_env=SERVE_KEY
TPU VM (one host): the local command with --config.dtype=bfloat16 --config.max_batch=64.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.lm_path = ""  # an HF folder for translator.load_lm
  c.dtype = "float32"
  c.model_name = ""  # the name clients pass as "model"; empty: the folder's base name
  c.host = "127.0.0.1"  # loopback only; "0.0.0.0" exposes the server to the network
  c.port = 8000  # 0: any free port (logged)
  c.api_key_env = ""  # if set, requests must carry `Authorization: Bearer ${api_key_env}`
  c.default_max_tokens = 256  # when a request gives no max_tokens
  c.default_temperature = 1.0  # when a request gives no temperature (OpenAI's default); 0 is greedy
  c.request_timeout_s = 600.0  # a request waiting longer for its generation gets a 500
  # Batching: requests arriving within batch_wait_ms share one sampler call of up to max_batch rows; the
  # batch is padded to a power of two >= min_batch, prompts to a multiple of length_multiple tokens and
  # new tokens to a multiple of tokens_multiple, so the sampler compiles once per bucket.
  c.max_batch = 8
  c.min_batch = 1
  c.batch_wait_ms = 5.0
  c.length_multiple = 32
  c.tokens_multiple = 16
  c.seed = 0  # for requests with temperature > 0
  return c
