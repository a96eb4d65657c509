"""Hard prompts on a local `translator.LM`, request by request: what `experiments.serve_openai` runs.

(For evaluation runs, `translator.evaluation.lm_eval.lm_generate_fn` is the local executor: greedy, sorted
by length, fixed batches. This module serves requests that arrive one at a time, each with its own
max_tokens, temperature and stop strings.)

  chat_prompt(tokenizer, messages)   chat messages -> (prompt text, whether to add BOS)
  Request / Completion               one prompt to complete / its answer, token counts and finish reason
  generate(lm, requests, ...)        one batched, jitted generation per (temperature, top_p) group
  Batcher(lm, ...)                   a worker thread that gathers requests for a few ms into one batch

Shapes are bucketed so the sampler compiles rarely: the batch is padded to a power of two in
[min_batch, max_batch] (with copies of its first row), prompts are left-padded to a multiple of
`length_multiple` and the number of new tokens is rounded up to a multiple of `tokens_multiple`; each row
is then cut to its own max_tokens. Greedy rows do not depend on the other rows of their batch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np


def message_text(content: Any) -> str:
  """The text of a message's content: a string, or a list of parts of which the "text" ones count."""
  if content is None:
    return ""
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
  raise ValueError(f"message content must be a string or a list of parts, not {type(content).__name__}")


def chat_prompt(tokenizer, messages: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
  """(prompt text, add_bos) for chat `messages` ([{"role", "content"}]).

  With a chat template, the tokenizer's rendering with the generation prompt (BOS is added only if the
  rendering does not start with it). Without one (this project's LMs), the contents joined by newlines,
  in order: "{system}\\n{user}", after BOS.
  """
  if not messages:
    raise ValueError("messages is empty")
  for m in messages:
    if not isinstance(m, Mapping) or "role" not in m:
      raise ValueError(f"every message needs a role and a content; got {m!r}"[:300])
  if getattr(tokenizer, "chat_template", None):
    simple = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
    text = tokenizer.apply_chat_template(simple, tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    return text, not (bos and text.startswith(bos))
  return "\n".join(message_text(m.get("content")) for m in messages), True


@dataclasses.dataclass(frozen=True)
class Request:
  """A prompt to complete: its token ids (BOS included when wanted) and its sampling settings."""

  ids: tuple[int, ...]
  max_tokens: int
  temperature: float = 0.0
  top_p: float = 1.0
  stop: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Completion:
  text: str
  prompt_tokens: int
  completion_tokens: int  # generated tokens kept, EOS included
  finish_reason: str  # "stop" (EOS or a stop string) | "length"


def encode_request(lm, text: str, add_bos: bool = True, **settings) -> Request:
  """A `Request` of `text` for `lm`; `settings` are Request's max_tokens, temperature, top_p and stop."""
  ids = lm.tokenizer.encode(text, add_special_tokens=False)
  if add_bos and lm.config.bos_token_id is not None:
    ids = [lm.config.bos_token_id] + ids
  return Request(ids=tuple(ids), **settings)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // max(multiple, 1)) * max(multiple, 1)


def _batch_size(n: int, min_batch: int, max_batch: int) -> int:
  size = max(min_batch, 1)
  while size < n:
    size *= 2
  return max(n, min(size, max_batch))


def _finish(lm, request: Request, row: list[int]) -> Completion:
  row = row[:request.max_tokens]
  cut = next((k for k, tok in enumerate(row) if tok in lm.eos_ids), None)
  kept = row if cut is None else row[:cut]
  text = lm.tokenizer.decode(kept, skip_special_tokens=True)
  reason = "length" if cut is None else "stop"
  hits = [text.find(s) for s in request.stop if s and s in text]
  if hits:
    text, reason = text[:min(hits)], "stop"
  return Completion(text=text, prompt_tokens=len(request.ids), completion_tokens=len(kept) + (cut is not None),
                    finish_reason=reason)


def generate(lm, requests: Sequence[Request], *, rng: Optional[jax.Array] = None, min_batch: int = 1,
             max_batch: int = 8, length_multiple: int = 32, tokens_multiple: int = 16) -> list[Completion]:
  """Completions of `requests`, in order: one sampler call per (temperature, top_p) group and `max_batch`
  rows. `rng` is needed when a request has temperature > 0."""
  out: list[Optional[Completion]] = [None] * len(requests)
  groups: dict[tuple[float, float], list[int]] = {}
  for i, r in enumerate(requests):
    key = (0.0, 1.0) if r.temperature == 0.0 else (float(r.temperature), float(r.top_p))
    groups.setdefault(key, []).append(i)
  for g, ((temperature, top_p), members) in enumerate(sorted(groups.items())):
    for start in range(0, len(members), max_batch):
      chunk = members[start:start + max_batch]
      size = _batch_size(len(chunk), min_batch, max_batch)
      rows = [requests[i] for i in chunk] + [requests[chunk[0]]] * (size - len(chunk))
      length = _round_up(max(len(r.ids) for r in rows), length_multiple)
      ids = np.full((size, length), lm.pad_id, np.int32)
      mask = np.zeros((size, length), bool)
      for j, r in enumerate(rows):
        ids[j, length - len(r.ids):], mask[j, length - len(r.ids):] = r.ids, True
      n = _round_up(max(r.max_tokens for r in rows), tokens_multiple)
      step_rng = None
      if temperature > 0.0:
        if rng is None:
          raise ValueError("sampling with temperature > 0 needs an rng")
        step_rng = jax.random.fold_in(jax.random.fold_in(rng, g), start)
      tokens = lm.generate(ids, mask=mask, max_new_tokens=n, temperature=temperature, top_p=top_p, rng=step_rng)
      tokens = np.asarray(tokens).tolist()
      for j, i in enumerate(chunk):
        out[i] = _finish(lm, requests[i], tokens[j])
  return out


class Batcher:
  """Runs `generate` on a worker thread: `submit(request)` returns a future; requests that arrive within
  `wait_ms` of the first one of a batch (up to `max_batch`) share its sampler call."""

  def __init__(self, lm, *, max_batch: int = 8, min_batch: int = 1, wait_ms: float = 5.0,
               length_multiple: int = 32, tokens_multiple: int = 16, seed: int = 0):
    self.lm = lm
    self.max_batch, self.min_batch, self.wait_s = max_batch, min_batch, wait_ms / 1000.0
    self.length_multiple, self.tokens_multiple = length_multiple, tokens_multiple
    self.rng = jax.random.key(seed)
    self.stats = {"requests": 0, "batches": 0}
    self._queue: queue.Queue = queue.Queue()
    self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
    self._thread.start()

  def submit(self, request: Request) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((request, future))
    return future

  def close(self, timeout_s: float = 30.0) -> None:
    self._queue.put(None)
    self._thread.join(timeout_s)

  def _run(self) -> None:
    closing = False
    while not closing:
      item = self._queue.get()
      if item is None:
        break
      batch = [item]
      deadline = time.monotonic() + self.wait_s
      while len(batch) < self.max_batch:
        try:
          item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
          break
        if item is None:
          closing = True
          break
        batch.append(item)
      batch = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
      if not batch:
        continue
      try:
        rng = jax.random.fold_in(self.rng, self.stats["batches"])
        completions = generate(self.lm, [r for r, _ in batch], rng=rng, min_batch=self.min_batch,
                               max_batch=self.max_batch, length_multiple=self.length_multiple,
                               tokens_multiple=self.tokens_multiple)
      except Exception as e:  # pylint: disable=broad-except
        logging.exception("generation of a batch of %d failed", len(batch))
        for _, f in batch:
          f.set_exception(e)
        continue
      finally:
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
      for (_, f), c in zip(batch, completions):
        f.set_result(c)
    # Anything still queued after close: fail it rather than leave its caller waiting.
    while True:
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        return
      if item is not None and item[1].set_running_or_notify_cancel():
        item[1].set_exception(RuntimeError("the batcher was closed"))
