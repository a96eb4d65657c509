"""results.json, the paper-style markdown tables and the figures of a reproduction run.

Inputs are the scores of `translation_quality.score` per method and `portability.score` per cell
("<prompt>@<model>"); both hold {"summary": {task split: {group: {...}}}, "per_task": {...}}.

results.json:
  translation[group][method]        rouge_l, cosine, n_tasks (+ class_recall, class_precision, class_f1 for
                                    "classification"); group in all | classification | general
  execution[group]["<prompt>@<model>"]  exact_match, rouge_l, n_tasks, n
  (both on the DoD's held-out "test" tasks), novel: the same two on the "novel" tasks (never pretrained on),
  inspect_layers, timing, config.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

import numpy as np

from translator.data import dod

MAIN_SPLIT = "test"
GROUPS = ("all",) + dod.FAMILIES
PROMPT_ORDER = ("soft", "gold", "translator", "translator_checked", "inspect", "nearest_token", "zero_shot",
                "few_shot")
METHOD_ORDER = ("translator", "translator_checked", "translator_design", "translator_cross", "inspect", "nearest_token")


def _by_group(scores: Mapping[str, Mapping], split: str) -> dict:
  out: dict = {}
  for name, score in scores.items():
    for group, entry in score["summary"].get(split, {}).items():
      out.setdefault(group, {})[name] = entry
  return {g: out[g] for g in GROUPS if g in out}


def results(quality: Mapping[str, Mapping], execution: Mapping[str, Mapping], *, inspect_layers=None,
            timing: Optional[Mapping[str, float]] = None, config: Optional[Mapping] = None) -> dict:
  out = {"translation": _by_group(quality, MAIN_SPLIT), "execution": _by_group(execution, MAIN_SPLIT)}
  novel = {"translation": _by_group(quality, "novel"), "execution": _by_group(execution, "novel")}
  if novel["translation"] or novel["execution"]:
    out["novel"] = novel
  if inspect_layers is not None:
    out["inspect_layers"] = {"source_target": inspect_layers.get("layers")}
  out["timing"] = dict(timing or {})
  out["config"] = dict(config or {})
  return out


def _sorted(names, order):
  return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _f(x) -> str:
  return "-" if x is None else f"{x:.3f}"


def translation_table(translation: Mapping[str, Mapping]) -> str:
  gen, cls = translation.get("general", {}), translation.get("classification", {})
  methods = _sorted(set(gen) | set(cls), METHOD_ORDER)
  lines = ["| method | general ROUGE-L | general cosine | class. ROUGE-L | class. cosine | class recall | "
           "class precision | class F1 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for m in methods:
    g, c = gen.get(m, {}), cls.get(m, {})
    cells = [g.get("rouge_l"), g.get("cosine"), c.get("rouge_l"), c.get("cosine"), c.get("class_recall"),
             c.get("class_precision"), c.get("class_f1")]
    lines.append(f"| {m} | " + " | ".join(_f(x) for x in cells) + " |")
  n = {f: next(iter(translation.get(f, {}).values()), {}).get("n_tasks") for f in dod.FAMILIES}
  lines.append(f"\n({n.get('general')} general and {n.get('classification')} classification tasks)")
  return "\n".join(lines) + "\n"


def execution_table(execution: Mapping[str, Mapping]) -> str:
  cells = set(execution.get("all", {}))
  prompts = _sorted({c.split("@")[0] for c in cells}, PROMPT_ORDER)
  models = [m for m in ("base", "target") if any(c.endswith("@" + m) for c in cells)]
  head = "| prompt | " + " | ".join(f"{m} EM ({g}) | {m} ROUGE-L ({g})" for m in models for g in GROUPS) + " |"
  lines = [head, "|---|" + "---:|" * (2 * len(models) * len(GROUPS))]
  for p in prompts:
    row = []
    for m in models:
      for g in GROUPS:
        e = execution.get(g, {}).get(f"{p}@{m}")
        row += [_f(e and e["exact_match"]), _f(e and e["rouge_l"])]
    lines.append(f"| {p} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def markdown(res: Mapping) -> str:
  parts = ["## Translation quality (held-out test tasks)\n", translation_table(res["translation"]),
           "\n## Execution: exact match and ROUGE-L against gold outputs (held-out test tasks)\n",
           execution_table(res["execution"])]
  if "novel" in res:
    parts += ["\n## Novel tasks (never in pretraining): translation quality\n",
              translation_table(res["novel"]["translation"]),
              "\n## Novel tasks: execution\n", execution_table(res["novel"]["execution"])]
  if res.get("inspect_layers"):
    parts.append(f"\nInSPEcT layers (source, target): {res['inspect_layers']['source_target']}\n")
  return "".join(parts)


def figures(res: Mapping, quality: Mapping[str, Mapping], execution: Mapping[str, Mapping], directory: str) -> list[str]:
  """Writes translation_vs_soft.png (per task: translator ROUGE-L against the soft prompt's exact match on
  base), methods.png (methods side by side) and execution.png (exact match per prompt and model)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  written = []

  def save(fig, name):
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=120)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    written.append(path)

  soft = execution.get("soft@base", {}).get("per_task", {})
  if soft and quality:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, marker in zip(_sorted(quality, METHOD_ORDER), "o^sDv*P"):
      per_task = quality[method]["per_task"]
      names = [n for n in per_task if n in soft]
      ax.scatter([soft[n]["exact_match"] for n in names], [per_task[n]["rouge_l"] for n in names], s=14,
                 marker=marker, alpha=0.6, label=method)
    ax.set_xlabel("soft prompt exact match on base (per task)")
    ax.set_ylabel("hard prompt ROUGE-L vs instruction")
    ax.set_title("Translation quality against soft-prompt accuracy")
    ax.legend(fontsize=8)
    save(fig, "translation_vs_soft.png")

  translation = res["translation"]
  if translation:
    metrics = [("general", "rouge_l"), ("general", "cosine"), ("classification", "rouge_l"),
               ("classification", "cosine"), ("classification", "class_f1")]
    metrics = [(g, k) for g, k in metrics if translation.get(g)]
    methods = _sorted({m for g in translation.values() for m in g}, METHOD_ORDER)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(metrics))
    for i, m in enumerate(methods):
      ax.bar(x + i * width, [translation[g].get(m, {}).get(k, 0.0) for g, k in metrics], width, label=m)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, [f"{g[:5]}.\n{k}" for g, k in metrics], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("Methods side by side (held-out tasks)")
    ax.legend(fontsize=8)
    save(fig, "methods.png")

  ex = res["execution"].get("all", {})
  if ex:
    prompts = _sorted({c.split("@")[0] for c in ex}, PROMPT_ORDER)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(prompts))
    for i, model in enumerate(("base", "target")):
      ax.bar(x + i * 0.4, [ex.get(f"{p}@{model}", {}).get("exact_match", 0.0) for p in prompts], 0.4, label=model)
    ax.set_xticks(x + 0.2, prompts, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.set_title("Prompts executed on base and target (held-out tasks)")
    ax.legend(fontsize=8)
    save(fig, "execution.png")
  return written
