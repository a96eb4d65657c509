"""Hard prompts on any OpenAI-compatible chat API: `ChatClient(base_url, model).complete(prompts) -> texts`.

    client = ChatClient("https://api.openai.com/v1", "gpt-4o-mini", cache_dir="/tmp/api_cache")
    texts = client.complete(["Classify the sentence as: a, b\\nInput: ...\\nOutput:"])
    generate_fn = as_generate_fn(client)   # for translator.evaluation.lm_eval.evaluate

Each prompt is one `POST {base_url}/chat/completions` with messages [system, user], temperature 0 and the
paper's system prompt by default. Requests run on a thread pool, at most `concurrency` in flight.

Failures: connection errors, timeouts, 408, 429 and 5xx are retried up to `max_retries` times (so
1 + max_retries attempts) after an exponential backoff with jitter, `backoff_s * 2**retry * U(0.5, 1)`,
never shorter than the server's `Retry-After` (seconds or an HTTP date) or `retry-after-ms`, capped at
`max_backoff_s`. Any other 4xx raises `APIStatusError` at once, with the server's message. When the attempts
are spent, `APITimeoutError` (also a `TimeoutError`) if the last one timed out, else `APIError`; both name
the URL, the attempts and the last error. When one prompt fails, prompts not yet sent are cancelled, those in
flight finish (and are cached), then the error is raised: a rerun resumes where it stopped.

The cache (with `cache_dir`): one JSON file per answer, `{cache_dir}/{key[:2]}/{key}.json`, key = sha256 of
(base_url, model, system prompt, temperature, max_tokens, prompt), holding those fields and the answer.
Only successful answers are written, atomically (temporary file, then rename); a prompt found there is not
sent again.

The API key is read from the environment variable `api_key_env` at each request and sent as
`Authorization: Bearer ...` (no header when the variable is unset or empty, for local servers). It is never
logged, never cached and never part of an exception: server messages that echo it have it masked.

Only the standard library (urllib, concurrent.futures, json) is used. A loopback `base_url` (127.0.0.1,
localhost, ::1) bypasses the proxies of the environment; other hosts honour them, as urllib does.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional, Sequence

from translator.data import dod

SYSTEM_PROMPT = "You are a helpful assistant. Follow the task exactly."
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
CACHE_VERSION = 1
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MASK = "***"


class APIError(RuntimeError):
  """A chat request failed: retries exhausted, or an answer that is not a chat completion."""


class APIStatusError(APIError):
  """The server refused a request with a status that is not retried (a 4xx other than 408 and 429)."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


class APITimeoutError(APIError, TimeoutError):
  """Every attempt of a request failed and the last one timed out."""


class _Retryable(Exception):
  """One attempt failed in a way worth retrying; `retry_after` is the server's wish in seconds, if any."""

  def __init__(self, message: str, retry_after: Optional[float] = None, timed_out: bool = False):
    super().__init__(message)
    self.retry_after = retry_after
    self.timed_out = timed_out


def _retry_after(headers) -> Optional[float]:
  """Seconds from `retry-after-ms` or `Retry-After` (seconds, fractional accepted, or an HTTP date)."""
  if headers is None:
    return None
  ms = headers.get("retry-after-ms")
  if ms:
    try:
      return max(0.0, float(ms) / 1000.0)
    except ValueError:
      pass
  value = headers.get("Retry-After")
  if not value:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
  except (TypeError, ValueError):
    return None


def _server_message(body: bytes) -> str:
  """The `error.message` of an OpenAI-style error body, else the body's start."""
  text = body.decode("utf-8", errors="replace")
  try:
    error = json.loads(text).get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if message:
      return str(message)
  except (ValueError, AttributeError):
    pass
  return text[:500].strip() or "(empty body)"


def _atomic_write_json(path: str, obj) -> None:
  dod.atomic_write_text(path, json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")


class ChatClient:
  """Chat completions of prompts on an OpenAI-compatible API, in parallel, retried and cached.

  Attributes after use: `stats` counts "attempts" (HTTP requests sent), "retries", "cache_hits" and
  "completions" (answers received), over the client's lifetime.
  """

  def __init__(self, base_url: str, model: str, *, api_key_env: Optional[str] = "OPENAI_API_KEY",
               system_prompt: Optional[str] = SYSTEM_PROMPT, temperature: float = 0.0, max_tokens: int = 256,
               concurrency: int = 8, timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
               max_backoff_s: float = 60.0, cache_dir: Optional[str] = None, log_every_s: float = 30.0):
    if not base_url.startswith(("http://", "https://")):
      raise ValueError(f"base_url {base_url!r} must start with http:// or https://")
    if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or max_tokens < 1:
      raise ValueError(f"need concurrency >= 1, max_retries >= 0, timeout_s > 0 and max_tokens >= 1; got "
                       f"{concurrency}, {max_retries}, {timeout_s}, {max_tokens}")
    self.base_url = base_url.rstrip("/")
    self.url = self.base_url + "/chat/completions"
    self.model = model
    self.api_key_env = api_key_env
    self.system_prompt = system_prompt
    self.temperature = float(temperature)
    self.max_tokens = int(max_tokens)
    self.concurrency = int(concurrency)
    self.timeout_s = float(timeout_s)
    self.max_retries = int(max_retries)
    self.backoff_s = float(backoff_s)
    self.max_backoff_s = float(max_backoff_s)
    self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    self.log_every_s = log_every_s
    self.stats = {"attempts": 0, "retries": 0, "cache_hits": 0, "completions": 0}
    self._lock = threading.Lock()
    host = urllib.parse.urlsplit(self.base_url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
    self._opener = urllib.request.build_opener(*handlers)

  def __repr__(self) -> str:  # no key here either: it is never stored on the object
    return f"ChatClient({self.base_url!r}, {self.model!r}, concurrency={self.concurrency})"

  # ----- The key ------------------------------------------------------------------------------------------

  def _api_key(self) -> str:
    return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

  def _mask(self, text: str) -> str:
    key = self._api_key()
    return text.replace(key, _MASK) if key else text

  # ----- The cache ----------------------------------------------------------------------------------------

  def _request_fields(self, prompt: str) -> dict:
    return {"version": CACHE_VERSION, "base_url": self.base_url, "model": self.model,
            "system_prompt": self.system_prompt, "temperature": self.temperature, "max_tokens": self.max_tokens,
            "prompt": prompt}

  def cache_key(self, prompt: str) -> str:
    """sha256 of the request's fields (never the key): what determines the answer."""
    blob = json.dumps(self._request_fields(prompt), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()

  def _cache_path(self, prompt: str) -> Optional[str]:
    if self.cache_dir is None:
      return None
    key = self.cache_key(prompt)
    return os.path.join(self.cache_dir, key[:2], key + ".json")

  def _cache_get(self, prompt: str) -> Optional[str]:
    path = self._cache_path(prompt)
    if path is None or not os.path.exists(path):
      return None
    try:
      with open(path, encoding="utf-8") as f:
        entry = json.load(f)
      if entry["request"] == self._request_fields(prompt):
        return entry["response"]
      logging.warning("cache entry %s is for another request (a hash collision?); asking again", path)
    except (OSError, ValueError, KeyError, TypeError) as e:
      logging.warning("unreadable cache entry %s (%s); asking again", path, e)
    return None

  def _cache_put(self, prompt: str, text: str, answer: dict) -> None:
    path = self._cache_path(prompt)
    if path is not None:
      _atomic_write_json(path, {"request": self._request_fields(prompt), "response": text,
                                "response_model": answer.get("model"), "usage": answer.get("usage"),
                                "finish_reason": answer["choices"][0].get("finish_reason")})

  # ----- One request --------------------------------------------------------------------------------------

  def _body(self, prompt: str) -> bytes:
    messages = [{"role": "user", "content": prompt}]
    if self.system_prompt is not None:
      messages.insert(0, {"role": "system", "content": self.system_prompt})
    return json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                       "max_tokens": self.max_tokens}).encode("utf-8")

  def _attempt(self, body: bytes) -> dict:
    """One POST: the parsed answer, or `_Retryable`, `APIStatusError` or `APIError`."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = self._api_key()
    if key:
      headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
    with self._lock:
      self.stats["attempts"] += 1
    deadline = time.monotonic() + self.timeout_s
    try:
      with self._opener.open(request, timeout=self.timeout_s) as response:
        chunks = []
        while chunk := response.read(1 << 16):
          chunks.append(chunk)
          if time.monotonic() > deadline:
            raise TimeoutError(f"the answer took more than {self.timeout_s} s")
        raw = b"".join(chunks)
    except urllib.error.HTTPError as e:
      try:
        message = self._mask(_server_message(e.read()))
      except (OSError, http.client.HTTPException):
        message = "(no body)"
      status = f"HTTP {e.code} {e.reason}: {message}"
      if e.code in RETRY_STATUSES or e.code >= 500:
        raise _Retryable(status, retry_after=_retry_after(e.headers)) from None
      hint = ""
      if e.code in (401, 403):
        hint = (f" (the key is read from the environment variable {self.api_key_env}; it is "
                f"{'set' if key else 'unset or empty'})")
      raise APIStatusError(f"POST {self.url} failed with {status}{hint}; not retried", e.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      reason = e.reason if isinstance(e, urllib.error.URLError) else e
      timed_out = isinstance(reason, (TimeoutError, socket.timeout))
      name = "timeout" if timed_out else type(reason).__name__
      raise _Retryable(f"{name}: {self._mask(str(reason)) or '(no message)'}", timed_out=timed_out) from None
    try:
      answer = json.loads(raw.decode("utf-8"))
      answer["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
      raise APIError(f"POST {self.url} answered with something that is not a chat completion: "
                     f"{self._mask(raw[:500].decode('utf-8', errors='replace'))!r}") from None
    return answer

  def _complete_one(self, prompt: str) -> str:
    body = self._body(prompt)
    attempts = 1 + self.max_retries
    last: Optional[_Retryable] = None
    for attempt in range(attempts):
      if attempt:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if last.retry_after is not None:
          delay = max(delay, min(last.retry_after, self.max_backoff_s))
        logging.info("POST %s: attempt %d / %d failed (%s); retrying in %.2f s", self.url, attempt, attempts,
                     last, delay)
        with self._lock:
          self.stats["retries"] += 1
        time.sleep(delay)
      try:
        answer = self._attempt(body)
      except _Retryable as e:
        last = e
        continue
      text = answer["choices"][0]["message"].get("content") or ""
      self._cache_put(prompt, text, answer)
      with self._lock:
        self.stats["completions"] += 1
      return text
    what = (f"no answer within {self.timeout_s} s" if last.timed_out else "failed")
    error = APITimeoutError if last.timed_out else APIError
    raise error(f"POST {self.url} (model {self.model!r}): {what} after {attempts} attempts "
                f"(1 + max_retries={self.max_retries}); last error: {last}")

  # ----- Many prompts -------------------------------------------------------------------------------------

  def complete(self, prompts: Sequence[str]) -> list[str]:
    """The assistant's answer to each prompt, in order. Cached prompts are not sent; duplicates are sent
    once."""
    prompts = list(prompts)
    answers: dict[str, str] = {}
    todo = []
    for p in dict.fromkeys(prompts):
      hit = self._cache_get(p)
      if hit is None:
        todo.append(p)
      else:
        answers[p] = hit
    with self._lock:
      self.stats["cache_hits"] += len(answers)
    if todo:
      logging.info("%s: %d prompts, %d cached, %d to ask with %d in flight", self.url, len(prompts),
                   len(answers), len(todo), self.concurrency)
      start = last_log = time.perf_counter()
      with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)),
                                                 thread_name_prefix="chat") as pool:
        futures = {pool.submit(self._complete_one, p): p for p in todo}
        try:
          for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            answers[futures[future]] = future.result()
            now = time.perf_counter()
            if now - last_log >= self.log_every_s or done == len(todo):
              last_log = now
              logging.info("%s: %d / %d answers (%.1f / s)", self.url, done, len(todo),
                           done / max(now - start, 1e-9))
        except BaseException:
          pool.shutdown(wait=True, cancel_futures=True)  # those in flight finish and are cached
          raise
    return [answers[p] for p in prompts]


def as_generate_fn(client: ChatClient) -> Callable[[Sequence[str]], list[str]]:
  """`client` as a `GenerateFn` (`prompts -> texts`) for `translator.evaluation.lm_eval.evaluate`."""

  def generate(prompts: Sequence[str]) -> list[str]:
    return client.complete(prompts)

  return generate
