"""Executors: run hard prompts (texts) on models and return their answers, as `GenerateFn`s
(`prompts -> texts`) for `translator.evaluation.lm_eval.evaluate`.

  lm_generate_fn(lm, ...)             a local `translator.LM`: greedy, batched, jitted (from evaluation)
  ChatClient(base_url, model, ...)    any OpenAI-compatible chat API: temperature 0, the paper's system
                                      prompt, bounded concurrency, timeouts, retries, an on-disk cache
  as_generate_fn(client)              a ChatClient as a GenerateFn
  local                               chat prompts and batched requests on a local LM (the server's side;
                                      `experiments.serve_openai` serves an LM as an OpenAI-compatible API)
"""

from translator.evaluation.lm_eval import lm_generate_fn
from translator.execution import local
from translator.execution.api import (SYSTEM_PROMPT, APIError, APIStatusError, APITimeoutError, ChatClient,
                                      as_generate_fn)

__all__ = ["lm_generate_fn", "local", "SYSTEM_PROMPT", "APIError", "APIStatusError", "APITimeoutError",
           "ChatClient", "as_generate_fn"]
