r"""Serve a local LM (HF folder) as an OpenAI-compatible chat API, so the API executor runs on it.

  python -m experiments.serve_openai --config configs/serve_openai.py --config.lm_path=/tmp/pretrain_target/hf

  POST /v1/chat/completions   {"model", "messages", "max_tokens" | "max_completion_tokens", "temperature",
                               "top_p", "stop"} -> {"choices": [{"message": {"content"}}], "usage", ...}
  GET  /v1/models             the one served model

Messages become one prompt with `translator.execution.local.chat_prompt` (the tokenizer's chat template if
it has one, else the contents joined by newlines after BOS); temperature 0 is greedy. Requests that arrive
within `batch_wait_ms` of each other share one batched sampler call (`local.Batcher`). With `api_key_env`,
requests must carry `Authorization: Bearer <the value of that variable>`. Errors are OpenAI-shaped:
{"error": {"message", "type", "code"}} with 400 / 401 / 404 / 500.
"""

from __future__ import annotations

import hmac
import http.server
import json
import os
import threading
import time
import uuid
from typing import Optional

from absl import app, flags, logging
from ml_collections import config_flags

import translator
from translator.execution import local

_MAX_BODY = 16 << 20


class _HTTPError(Exception):

  def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
    super().__init__(message)
    self.status, self.message, self.kind = status, message, kind


class Server(http.server.ThreadingHTTPServer):
  """A threading HTTP server bound to an LM and its `local.Batcher`; `base_url` ends in /v1."""

  daemon_threads = True

  def __init__(self, lm, *, model_name: str, host: str = "127.0.0.1", port: int = 0, api_key_env: str = "",
               default_max_tokens: int = 256, default_temperature: float = 1.0, request_timeout_s: float = 600.0,
               **batcher_kwargs):
    self.lm, self.model_name = lm, model_name
    self.api_key_env = api_key_env
    self.default_max_tokens, self.default_temperature = default_max_tokens, default_temperature
    self.request_timeout_s = request_timeout_s
    self.created = int(time.time())
    self.stats = {"completions": 0, "errors": 0}
    self._lock = threading.Lock()
    super().__init__((host, port), _Handler)
    self.batcher = local.Batcher(lm, **batcher_kwargs)

  @property
  def base_url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}/v1"

  def server_close(self) -> None:
    super().server_close()
    self.batcher.close()

  def count(self, name: str) -> None:
    with self._lock:
      self.stats[name] += 1

  # ----- Requests -----------------------------------------------------------------------------------------

  def check_key(self, header: Optional[str]) -> None:
    if not self.api_key_env:
      return
    expected = os.environ.get(self.api_key_env, "")
    if not expected:
      raise _HTTPError(500, f"the server expects a key in ${self.api_key_env}, which is unset", "server_error")
    given = header[len("Bearer "):] if header and header.startswith("Bearer ") else ""
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
      raise _HTTPError(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")

  def chat_completion(self, body: dict) -> dict:
    model = body.get("model")
    if model not in (None, self.model_name):
      raise _HTTPError(404, f"model {model!r} is not served here; this server serves {self.model_name!r}",
                       "model_not_found")
    if body.get("stream"):
      raise _HTTPError(400, "stream=true is not supported")
    if body.get("n", 1) != 1:
      raise _HTTPError(400, f"n={body.get('n')!r} is not supported; only n=1")
    messages = body.get("messages")
    if not isinstance(messages, list):
      raise _HTTPError(400, "messages must be a list of {role, content}")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or self.default_max_tokens
    temperature = body.get("temperature")
    temperature = self.default_temperature if temperature is None else temperature
    top_p = 1.0 if body.get("top_p") is None else body["top_p"]
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    if not (isinstance(max_tokens, int) and max_tokens >= 1):
      raise _HTTPError(400, f"max_tokens must be a positive integer, not {max_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
      raise _HTTPError(400, f"temperature must be a number >= 0, not {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
      raise _HTTPError(400, f"top_p must be in (0, 1], not {top_p!r}")
    if not all(isinstance(s, str) for s in stop):
      raise _HTTPError(400, "stop must be a string or a list of strings")
    try:
      text, add_bos = local.chat_prompt(self.lm.tokenizer, messages)
    except ValueError as e:
      raise _HTTPError(400, str(e)) from None
    request = local.encode_request(self.lm, text, add_bos, max_tokens=max_tokens, temperature=float(temperature),
                                   top_p=float(top_p), stop=stop)
    limit = self.lm.config.max_position_embeddings
    if len(request.ids) + max_tokens > limit:
      raise _HTTPError(400, f"the prompt has {len(request.ids)} tokens; with max_tokens={max_tokens} that is more "
                            f"than the model's {limit} positions")
    completion = self.batcher.submit(request).result(timeout=self.request_timeout_s)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": self.model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                     "finish_reason": completion.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                  "total_tokens": completion.prompt_tokens + completion.completion_tokens},
    }

  def models(self) -> dict:
    return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                        "owned_by": "translator"}]}


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"  # keep-alive for clients that want it; every answer has a Content-Length
  server: Server

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.debug("%s %s", self.address_string(), format % args)  # the request line; never headers

  def _send(self, status: int, obj: dict) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _error(self, e: _HTTPError) -> None:
    self.server.count("errors")
    self._send(e.status, {"error": {"message": e.message, "type": e.kind, "param": None, "code": e.kind}})

  def do_GET(self):  # pylint: disable=invalid-name
    path = self.path.split("?", 1)[0].rstrip("/")
    try:
      self.server.check_key(self.headers.get("Authorization"))
      if path == "/v1/models":
        self._send(200, self.server.models())
      elif path == f"/v1/models/{self.server.model_name}":
        self._send(200, self.server.models()["data"][0])
      else:
        raise _HTTPError(404, f"no route GET {path}; try /v1/models", "not_found")
    except _HTTPError as e:
      self._error(e)

  def do_POST(self):  # pylint: disable=invalid-name
    path = self.path.split("?", 1)[0].rstrip("/")
    try:
      length = int(self.headers.get("Content-Length") or 0)
      if length > _MAX_BODY:
        self.close_connection = True
        raise _HTTPError(400, f"the body has {length} bytes, more than {_MAX_BODY}")
      raw = self.rfile.read(length)
      self.server.check_key(self.headers.get("Authorization"))
      if path != "/v1/chat/completions":
        raise _HTTPError(404, f"no route POST {path}; try /v1/chat/completions", "not_found")
      try:
        body = json.loads(raw.decode("utf-8"))
      except ValueError as e:
        raise _HTTPError(400, f"the body is not JSON: {e}") from None
      if not isinstance(body, dict):
        raise _HTTPError(400, "the body must be a JSON object")
      answer = self.server.chat_completion(body)
      self.server.count("completions")
      self._send(200, answer)
    except _HTTPError as e:
      self._error(e)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("POST %s failed", path)
      self._error(_HTTPError(500, f"{type(e).__name__}: {e}", "server_error"))


def build_server(lm, cfg) -> Server:
  """A `Server` for `lm` from the config (see configs/serve_openai.py); not yet serving."""
  name = cfg.model_name or os.path.basename(os.path.normpath(lm.path or "lm"))
  return Server(lm, model_name=name, host=cfg.host, port=cfg.port, api_key_env=cfg.api_key_env,
                default_max_tokens=cfg.default_max_tokens, default_temperature=cfg.default_temperature,
                request_timeout_s=cfg.request_timeout_s, max_batch=cfg.max_batch, min_batch=cfg.min_batch,
                wait_ms=cfg.batch_wait_ms, length_multiple=cfg.length_multiple,
                tokens_multiple=cfg.tokens_multiple, seed=cfg.seed)


def main(argv):
  del argv
  cfg = flags.FLAGS.config
  if not cfg.lm_path:
    raise ValueError("config.lm_path is empty; pass --config.lm_path=/path/to/hf_folder")
  lm = translator.load_lm(cfg.lm_path, cfg.dtype)
  server = build_server(lm, cfg)
  logging.info("serving %s (%s) at %s%s", server.model_name, cfg.lm_path, server.base_url,
               f"; key required from ${cfg.api_key_env}" if cfg.api_key_env else "")
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


def define_flags():
  """The entry point's flags (defined only when it runs, so modules can be imported together)."""
  config_flags.DEFINE_config_file("config", "configs/serve_openai.py", "Server config.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
