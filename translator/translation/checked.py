"""Checked translation: of several translations of a soft prompt, keep the one that behaves like the prompt.

The translator writes its greedy text and `samples` sampled ones. Each candidate runs as a hard prompt on the
source LM over a few inputs of the task (its validation split: inputs only, no gold output is read), next to
the soft prompt itself on the same LM and inputs; the candidate whose answers agree most with the soft prompt's
answers is kept (with `consensus` = 0; see below). The soft prompt is the reference, so the check needs neither
the instruction nor labels, only the task's unlabeled inputs.

Agreement alone favours odd wordings that happen to behave alike on the probe inputs; `consensus` > 0 adds, times
that weight, each candidate's mean ROUGE-L to the task's other candidates (minimum-Bayes-risk decoding), which
favours the wording the translator writes most often. A candidate's score is agreement + consensus * that mean;
the highest wins (ties: the greedy text, then the earlier sample).

The LM calls are `GenerateFn`s (`lm_eval.lm_generate_fn`): `generate(texts, prefixes=None) -> answers`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import numpy as np

from translator.data import dod
from translator.evaluation import lm_eval, metrics

AGREEMENTS = {"exact_match": lambda a, b: float(a == b), "rouge_l": metrics.rouge_l}


def candidates(translate: Callable[..., list[str]], prompts: np.ndarray, samples: int, temperature: float,
               rng) -> list[list[str]]:
  """Per prompt: the greedy translation, then `samples` sampled ones without repeats (in draw order).

  translate: `Translator.translate` (prompts, temperature=, rng=) -> texts.
  """
  out = [[text.strip()] for text in translate(prompts)]
  for k in range(samples):
    for row, text in zip(out, translate(prompts, temperature=temperature, rng=jax.random.fold_in(rng, k))):
      if text.strip() not in row:
        row.append(text.strip())
  return out


def choose(tasks: Sequence[dod.Task], options: Sequence[Sequence[str]], soft_generate: lm_eval.GenerateFn,
           soft_prefixes: np.ndarray, hard_generate: lm_eval.GenerateFn, *, probe_split: str = "valid",
           probe_instances: int = 16, agreement: str = "rouge_l",
           consensus: float = 0.0) -> tuple[list[str], list[dict[str, dict[str, float]]]]:
  """The chosen hard prompt of each task, and each task's {candidate: {"agreement": a, "consensus": c}}.

  soft_prefixes `[T, P, D]`: each task's soft prompt as the source LM reads it (after BOS where tuned so);
  soft_generate reads `[prefix][text]`, hard_generate `[text]`.
  """
  if agreement not in AGREEMENTS:
    raise ValueError(f"agreement {agreement!r} is not one of {sorted(AGREEMENTS)}")
  if len(tasks) != len(options) or len(tasks) != len(soft_prefixes):
    raise ValueError(f"{len(tasks)} tasks, {len(options)} candidate lists and {len(soft_prefixes)} soft prompts")
  same = AGREEMENTS[agreement]
  inputs = [[ins.input for ins in task.instances.get(probe_split, ())[:probe_instances]] for task in tasks]
  empty = [t.name for t, x in zip(tasks, inputs) if not x]
  if empty:
    raise ValueError(f"{len(empty)} tasks have no {probe_split!r} instances to check translations on, e.g. "
                     f"{empty[:3]}")
  soft_texts = [dod.format_prompt(None, x) for xs in inputs for x in xs]
  soft_rows = np.repeat(np.asarray(soft_prefixes), [len(xs) for xs in inputs], axis=0)
  reference = iter([lm_eval.normalize(a) for a in soft_generate(soft_texts, soft_rows)])
  references = [[next(reference) for _ in xs] for xs in inputs]
  hard_texts = [dod.format_prompt(c or None, x) for cs, xs in zip(options, inputs) for c in cs for x in xs]
  answers = iter([lm_eval.normalize(a) for a in hard_generate(hard_texts)])
  chosen, scores = [], []
  for cs, refs in zip(options, references):
    pairs = metrics.rouge_l_pairwise(cs)
    score = {c: {"agreement": float(np.mean([same(next(answers), r) for r in refs])),
                 "consensus": float(np.mean(np.delete(pairs[i], i))) if len(cs) > 1 else 0.0}
             for i, c in enumerate(cs)}
    scores.append(score)
    # max keeps the first of equals: greedy, then draw order
    chosen.append(max(cs, key=lambda c, s=score: s[c]["agreement"] + consensus * s[c]["consensus"]))
  return chosen, scores


def summary(scores: Sequence[dict[str, dict[str, float]]], options: Sequence[Sequence[str]],
            chosen: Sequence[str]) -> dict[str, Optional[float]]:
  """How often the check replaced the greedy text; the mean agreement and consensus of greedy and chosen."""
  n = len(chosen)
  mean = lambda pick, key: float(np.mean([s[pick(cs, c)][key] for s, cs, c in zip(scores, options, chosen)]))
  return {"tasks": n, "candidates_mean": float(np.mean([len(c) for c in options])) if n else None,
          "replaced": float(np.mean([c != cs[0] for c, cs in zip(chosen, options)])) if n else None,
          "agreement_greedy": mean(lambda cs, c: cs[0], "agreement") if n else None,
          "agreement_chosen": mean(lambda cs, c: c, "agreement") if n else None,
          "consensus_greedy": mean(lambda cs, c: cs[0], "consensus") if n else None,
          "consensus_chosen": mean(lambda cs, c: c, "consensus") if n else None}
