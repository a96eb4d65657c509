"""The API executor: `ChatClient` against the project's own OpenAI-compatible server (a tiny random Llama with
the project tokenizer, on 127.0.0.1) and against fake stdlib servers in this file that fail on purpose
(503s, a dropped connection, a 400, silence). Everything binds 127.0.0.1 port 0; every server stops with its
test."""

import contextlib
import http.server
import json
import os
import socket
import threading
import time
import urllib.request

import pytest

import translator
from configs import serve_openai as serve_config
from experiments import serve_openai
from tests import fixtures
from translator.execution import api
from translator.execution import local

KEY_ENV = "TRANSLATOR_TEST_API_KEY"
KEY = "sk-test-0123456789abcdef-do-not-leak"
PROMPTS = [f"Sort the numbers.\nInput: {i} {i + 3} {i + 1}\nOutput:" for i in range(5)] + ["Say hi."]


def _files(directory) -> list[str]:
  return [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]


def _assert_no_key(directory, *messages):
  for path in _files(directory):
    with open(path, "rb") as f:
      assert KEY.encode() not in f.read(), path
  for message in messages:
    assert KEY not in message


# ---------------------------------------------------------------------------------------------------
# The project's server on a tiny random LM.


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """(lm, server) with the server running in a thread; requests need the key of KEY_ENV."""
  root = str(tmp_path_factory.mktemp("serve"))
  fixtures.make_world(root)
  lm = translator.load_lm(fixtures.make_tiny_lm(os.path.join(root, "tiny"), os.path.join(root, "tokenizer")))
  cfg = serve_config.get_config()
  cfg.model_name, cfg.port, cfg.api_key_env = "tiny", 0, KEY_ENV
  cfg.min_batch = cfg.max_batch = 4  # one batch shape (4 rows of 64 tokens, 8 new): one sampler compile
  cfg.length_multiple, cfg.tokens_multiple = 64, 8
  os.environ[KEY_ENV] = KEY
  server = serve_openai.build_server(lm, cfg)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  try:
    yield lm, server
  finally:
    server.shutdown()
    server.server_close()
    thread.join(10)
    os.environ.pop(KEY_ENV, None)


def test_server_answers_are_greedy_generations_and_the_cache_serves_a_rerun(served, tmp_path):
  lm, server = served
  assert server.server_address[0] == "127.0.0.1"
  cache = str(tmp_path / "cache")
  client = api.ChatClient(server.base_url, "tiny", api_key_env=KEY_ENV, max_tokens=8, concurrency=4, timeout_s=60,
                          backoff_s=0.01, cache_dir=cache)
  answers = api.as_generate_fn(client)(PROMPTS + PROMPTS[:2])  # duplicates are asked once

  # The server's prompt for our (template-less) LMs: system and user contents joined by a newline, after BOS.
  # Generated here in the server's batch shape (4 rows of 64 tokens, 8 new), so the sampler compiles once.
  texts = [f"{api.SYSTEM_PROMPT}\n{p}" for p in PROMPTS]
  expected = []
  for chunk in (texts[:4], texts[4:] + texts[4:]):
    ids, mask = lm.encode(chunk, length=64)
    expected += lm.decode(lm.generate(ids, mask=mask, max_new_tokens=8, temperature=0.0))
  expected = expected[:len(PROMPTS)]
  assert answers == expected + expected[:2]
  assert any(answers)
  assert server.stats["completions"] == len(PROMPTS) and client.stats["attempts"] == len(PROMPTS)
  assert server.batcher.stats["requests"] == len(PROMPTS)

  # The cache: one JSON file per prompt, holding the request's fields and the answer, never the key.
  files = _files(cache)
  assert len(files) == len(PROMPTS) and all(f.endswith(".json") for f in files)
  with open(os.path.join(cache, client.cache_key(PROMPTS[0])[:2], client.cache_key(PROMPTS[0]) + ".json")) as f:
    entry = json.load(f)
  assert entry["request"]["prompt"] == PROMPTS[0] and entry["response"] == expected[0]
  assert entry["request"]["system_prompt"] == api.SYSTEM_PROMPT and entry["request"]["temperature"] == 0.0
  _assert_no_key(cache)

  # A second run with the same prompts asks nothing.
  again = api.ChatClient(server.base_url, "tiny", api_key_env=KEY_ENV, max_tokens=8, cache_dir=cache)
  assert again.complete(PROMPTS) == expected
  assert again.stats["attempts"] == 0 and again.stats["cache_hits"] == len(PROMPTS)
  assert server.stats["completions"] == len(PROMPTS)
  # Another max_tokens is another request.
  other = api.ChatClient(server.base_url, "tiny", api_key_env=KEY_ENV, max_tokens=3, cache_dir=cache)
  assert other.cache_key(PROMPTS[0]) != client.cache_key(PROMPTS[0])


def test_server_response_shape_models_and_refusals(served, tmp_path):
  lm, server = served
  headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
  body = {"model": "tiny", "temperature": 0, "max_tokens": 5,
          "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text",
                                                                                       "text": "Say hi."}]}]}
  request = urllib.request.Request(server.base_url + "/chat/completions", json.dumps(body).encode(), headers)
  with urllib.request.urlopen(request, timeout=30) as response:
    answer = json.load(response)
  assert answer["object"] == "chat.completion" and answer["model"] == "tiny"
  choice = answer["choices"][0]
  assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
  ids, mask = lm.encode(["S\nSay hi."] * 4, length=64)
  assert choice["message"]["content"] == lm.decode(lm.generate(ids, mask=mask, max_new_tokens=8)[:, :5])[0]
  usage = answer["usage"]
  assert usage["prompt_tokens"] == int(mask[0].sum()) and 1 <= usage["completion_tokens"] <= 5
  assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
  with urllib.request.urlopen(urllib.request.Request(server.base_url + "/models", headers=headers), timeout=10) as r:
    assert [m["id"] for m in json.load(r)["data"]] == ["tiny"]

  # Refusals are 4xx, not retried, with the server's message; the key is in no message.
  cases = [(dict(model="gpt-4"), 404, "serves 'tiny'"), (dict(api_key_env="TRANSLATOR_TEST_UNSET_KEY"), 401,
                                                         "TRANSLATOR_TEST_UNSET_KEY")]
  for overrides, status, text in cases:
    kwargs = dict(model="tiny", api_key_env=KEY_ENV, max_retries=3, backoff_s=0.01, cache_dir=str(tmp_path))
    kwargs.update(overrides)
    client = api.ChatClient(server.base_url, **kwargs)
    with pytest.raises(api.APIStatusError) as error:
      client.complete(["Say hi."])
    assert error.value.status == status and text in str(error.value) and client.stats["attempts"] == 1
    _assert_no_key(tmp_path, str(error.value))
  assert not _files(tmp_path)


def test_chat_prompt():
  class Plain:
    chat_template = None

  class Templated:
    chat_template = "..."
    bos_token = "<s>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
      assert not tokenize and add_generation_prompt
      return "<s>" + "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"

  messages = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "2+2?"}]
  assert local.chat_prompt(Plain(), messages) == ("Be exact.\n2+2?", True)
  assert local.chat_prompt(Templated(), messages) == ("<s>[system]Be exact.[user]2+2?[assistant]", False)
  with pytest.raises(ValueError, match="empty"):
    local.chat_prompt(Plain(), [])


# ---------------------------------------------------------------------------------------------------
# Fake servers that misbehave on purpose.


def _send_json(handler, status, obj, headers=()):
  data = json.dumps(obj).encode()
  handler.send_response(status)
  for name, value in headers:
    handler.send_header(name, value)
  handler.send_header("Content-Type", "application/json")
  handler.send_header("Content-Length", str(len(data)))
  handler.end_headers()
  handler.wfile.write(data)


def _ok(handler, body):
  prompt = body["messages"][-1]["content"]
  _send_json(handler, 200, {"model": body["model"], "usage": {},
                            "choices": [{"message": {"content": f"echo: {prompt}"}, "finish_reason": "stop"}]})


@contextlib.contextmanager
def fake_server(respond):
  """An HTTP server on 127.0.0.1:0 whose POSTs call `respond(handler, index, body)`; yields (base_url, calls),
  calls being one {"time", "headers", "body"} per request."""
  calls, lock = [], threading.Lock()

  class Handler(http.server.BaseHTTPRequestHandler):

    def log_message(self, *args):
      pass

    def do_POST(self):  # pylint: disable=invalid-name
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      with lock:
        index = len(calls)
        calls.append({"time": time.monotonic(), "headers": dict(self.headers), "body": body})
      respond(self, index, body)

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", calls
  finally:
    server.shutdown()
    server.server_close()
    thread.join(5)


@contextlib.contextmanager
def silent_server():
  """Accepts connections on 127.0.0.1:0 and never answers; yields (base_url, accepted connections)."""
  sock = socket.create_server(("127.0.0.1", 0))
  sock.settimeout(0.05)
  stop, accepted = threading.Event(), []

  def loop():
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
      try:
        accepted.append(sock.accept()[0])
      except socket.timeout:
        pass

  thread = threading.Thread(target=loop, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", accepted
  finally:
    stop.set()
    thread.join(5)
    for conn in accepted:
      conn.close()
    sock.close()


def test_concurrency_is_bounded():
  state = {"now": 0, "max": 0}
  lock = threading.Lock()

  def respond(handler, index, body):
    with lock:
      state["now"] += 1
      state["max"] = max(state["max"], state["now"])
    time.sleep(0.05)
    with lock:
      state["now"] -= 1
    _ok(handler, body)

  with fake_server(respond) as (url, calls):
    prompts = [f"p{i}" for i in range(12)]
    answers = api.ChatClient(url, "m", api_key_env=None, concurrency=3).complete(prompts)
  assert answers == [f"echo: {p}" for p in prompts] and len(calls) == 12
  assert 2 <= state["max"] <= 3  # never more than `concurrency` in flight; in parallel all the same


def test_retries_503s_and_a_dropped_connection_with_backoff(tmp_path, monkeypatch):
  def respond(handler, index, body):
    if index == 0:
      _send_json(handler, 503, {"error": {"message": "overloaded"}}, [("Retry-After", "0.3")])
    elif index == 1:
      _send_json(handler, 503, {"error": {"message": "overloaded"}})
    elif index == 2:
      handler.close_connection = True  # no answer at all: the client sees the connection close
    else:
      _ok(handler, body)

  with fake_server(respond) as (url, calls):
    client = api.ChatClient(url, "m", api_key_env=KEY_ENV, max_retries=4, backoff_s=0.05, timeout_s=5,
                            cache_dir=str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)  # read at request time, not at construction
    assert client.complete(["hello"]) == ["echo: hello"]
  assert len(calls) == 4 and client.stats["retries"] == 3
  gaps = [b["time"] - a["time"] for a, b in zip(calls, calls[1:])]
  assert gaps[0] >= 0.29  # Retry-After wins over the 0.05 s backoff
  assert gaps[1] >= 0.05 * 2 * 0.5 and gaps[2] >= 0.05 * 4 * 0.5  # exponential, jitter in [0.5, 1]
  assert all(c["headers"]["Authorization"] == f"Bearer {KEY}" for c in calls)
  body = calls[0]["body"]
  assert body["temperature"] == 0.0 and body["model"] == "m" and body["messages"] == [
      {"role": "system", "content": api.SYSTEM_PROMPT}, {"role": "user", "content": "hello"}]
  assert len(_files(tmp_path)) == 1
  _assert_no_key(tmp_path)


def test_a_server_that_never_answers_raises_a_timeout_and_caches_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv(KEY_ENV, KEY)
  with silent_server() as (url, accepted):
    client = api.ChatClient(url, "m", api_key_env=KEY_ENV, timeout_s=0.3, max_retries=2, backoff_s=0.01,
                            cache_dir=str(tmp_path))
    start = time.monotonic()
    with pytest.raises(api.APITimeoutError) as error:
      client.complete(["hello"])
    elapsed = time.monotonic() - start
  assert isinstance(error.value, TimeoutError)
  message = str(error.value)
  assert url + "/chat/completions" in message and "3 attempts" in message and "timeout" in message
  assert len(accepted) == 3 and 0.9 <= elapsed < 5
  assert not _files(tmp_path)
  _assert_no_key(tmp_path, message)


def test_a_400_is_not_retried_and_exhausted_5xx_name_the_attempts(tmp_path, monkeypatch):
  monkeypatch.setenv(KEY_ENV, KEY)

  both_sent = threading.Barrier(2, timeout=10)

  def bad_request(handler, index, body):
    # Answer once both prompts are in flight: an early 400 would cancel the second before it is sent.
    both_sent.wait()
    _send_json(handler, 400, {"error": {"message": f"unknown parameter; your key {KEY} is fine"}})

  with fake_server(bad_request) as (url, calls):
    client = api.ChatClient(url, "m", api_key_env=KEY_ENV, max_retries=3, backoff_s=0.01, cache_dir=str(tmp_path))
    with pytest.raises(api.APIStatusError) as error:
      client.complete(["a", "b"])
  assert error.value.status == 400 and "unknown parameter" in str(error.value) and "***" in str(error.value)
  assert len(calls) == 2  # one per prompt, none retried

  def broken(handler, index, body):
    _send_json(handler, 500, {"error": {"message": "boom"}})

  with fake_server(broken) as (url, calls):
    client = api.ChatClient(url, "m", api_key_env=KEY_ENV, max_retries=1, backoff_s=0.01, cache_dir=str(tmp_path))
    with pytest.raises(api.APIError) as exhausted:
      client.complete(["a"])
  assert not isinstance(exhausted.value, api.APITimeoutError)
  assert "2 attempts" in str(exhausted.value) and "HTTP 500" in str(exhausted.value) and "boom" in str(exhausted.value)
  assert len(calls) == 2
  assert not _files(tmp_path)
  _assert_no_key(tmp_path, str(error.value), str(exhausted.value), repr(client))
