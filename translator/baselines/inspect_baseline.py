"""InSPEcT (Ramati et al., 2024): a soft prompt described by the LM itself, from its hidden states patched into
a few-shot list of task descriptions; the baseline as "Learning to Translate from Soft to Hard LLM Prompts"
runs it.

    cfg = InspectConfig()
    targets = target_prompts(families, demo_pool, P, cfg, names=names)         # one target text per prompt
    pair, table = select_layers(lm, train_prompts, train_targets, golds, cfg)   # (s, t) on training prompts
    texts = describe(lm, prompts, targets, pair, cfg)                          # one description per prompt

Source pass. The soft prompt `[P, D]` replaces the stream of P placeholder tokens " x" at layer
`inject_layer` (0 = the embeddings, as the prompt was tuned; 1 = the output of the first decoder layer), and
the residual stream of every layer at those P positions is kept: `[L+1, P, D]` per prompt. The tokens are
`[" x"] * P`, or `[BOS] + [" x"] * P` with `source_bos`; the default is without BOS because the prompts were
tuned before BOS (`prompt_position="before_bos"`), so with `inject_layer=0` the states are exactly those of
the prompt read as an embedded prefix.

Target prompt. `num_demos` description items of other training tasks of the prompt's family (drawn with a
per-task seed), then the query item with P placeholders, joined by " | " (translator/data/corpus.py, the
format of the LMs' `inspect_list` documents), after BOS:
    general         "Instruction: p1 | Instruction: p2 | Instruction: p3 | Instruction: x x ... x"
    classification  "Sentence classification: k1, ..., k5 | ... | Sentence classification: x x ... x"
(the description is the task's `meta["description"]`, by default "Sentence classification"; the query takes
that of the first demonstration).

Patching. The source states of layer s (all P positions) replace the P placeholders of the target at the
output of target layer t, at prefill; the target is left-padded, and each row's placeholder start is computed
from its mask, so rows of any length and any (s, t) share one batch (`Patch` has a per-row layer). Greedy
decoding of `max_new_tokens`; the text is cut at the first of `stop_strings` and stripped. Tokens whose text
contains a stop string end a row like EOS (the text after them is cut anyway), so batches stop early.

What the description is compared with (`gold_reference`): what the query item stands for. For a general
task, its instruction; for a classification task, its class list "k1, k2, ..., k5": the query already holds
the description, and in the LMs' corpus what follows "Sentence classification:" is the class list. The hard
prompt a description gives (`hard_prompt`) is then the whole item: the instruction, or
"Sentence classification: k1, ..., k5".

Layer pairs. The pair (s, t) is chosen once, on `num_select_prompts` training prompts, by the mean
similarity (default: all-MiniLM-L6-v2 cosine) of their descriptions to their golds, over all pairs in
`source_layers` x `target_layers` (default 0..L each): rows (prompt, s, t) in fixed-size batches, so the
sampler compiles once for the whole sweep.

Letters: N prompts, P prompt length (= placeholders), D width, L layers, S source layers kept, R rows
(prompt, source layer, target layer), T target tokens, B batch.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from translator.data import corpus
from translator.data import dod
from translator.models import functions as F
from translator.models import sampler
from translator.models.config import DecoderConfig
from translator.models.decoder import Patch

Array = jax.Array
SimilarityFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]
LayerPairs = Union[tuple[int, int], Sequence[tuple[int, int]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class InspectConfig:
  """The InSPEcT baseline's settings (see the module docstring).

  Attributes:
    num_demos: description items of other tasks before the query.
    max_new_tokens: greedy decoding budget of a description.
    inject_layer: where the soft prompt enters the source pass: 0 = embeddings, l = output of layer l.
    source_bos: whether the source tokens start with BOS.
    batch_size: rows per jitted call (the last call is padded to it).
    seed: seeds the draw of demonstrations (with each task's name).
    stop_strings: a description ends before the first of these.
    num_select_prompts: training prompts the layer pair is chosen on (`selection_indices`).
    source_layers, target_layers: the layers swept by `select_layers`; () = 0..L.
  """

  num_demos: int = 3
  max_new_tokens: int = 60
  inject_layer: int = 0
  source_bos: bool = False
  batch_size: int = 32
  seed: int = 0
  stop_strings: tuple[str, ...] = ("\n", "$", ".", "|")
  num_select_prompts: int = 50
  source_layers: tuple[int, ...] = ()
  target_layers: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, c: Any) -> "InspectConfig":
    """From a mapping or `ml_collections.ConfigDict` with (a subset of) these fields."""
    values = c.to_dict() if isinstance(c, ml_collections.ConfigDict) else dict(c)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ValueError(f"unknown InSPEcT config fields {unknown}; known: {sorted(names)}")
    for key in ("stop_strings", "source_layers", "target_layers"):
      if key in values:
        values[key] = tuple(values[key])
    return cls(**values)


def inspect_config() -> ml_collections.ConfigDict:
  """The defaults of `InspectConfig` as a ConfigDict, to nest in an experiment config (`config.inspect`)."""
  return ml_collections.ConfigDict(dataclasses.asdict(InspectConfig()))


# ---------------------------------------------------------------------------------------------------
# Texts: target prompts, golds, cutting.


def demo_item(task: dod.Task) -> str:
  """The description item of a task: "Instruction: p" or "{description}: k1, ..., k5"."""
  if task.family == "general":
    return corpus.inspect_general_item(task.instruction)
  return corpus.inspect_classification_item(task.classes, corpus.classification_description(task))


def gold_reference(task: dod.Task) -> str:
  """What the query item of a task should be completed with: its instruction (general) or its class list
  "k1, ..., k5" (classification)."""
  if task.family == "general":
    return task.instruction
  return corpus.INSPECT_CLASS_SEPARATOR.join(task.classes)


def hard_prompt(task: dod.Task, description: str) -> str:
  """The hard prompt a description stands for: the description itself (general), or the classification item
  "{description of the task}: {description}" (classification)."""
  if task.family == "general":
    return description
  return f"{corpus.classification_description(task)}: {description}"


def target_prompt(family: str, demo_tasks: Sequence[dod.Task], num_placeholders: int, rng: np.random.Generator,
                  num_demos: int = 3, exclude: Sequence[str] = ()) -> str:
  """A target prompt: `num_demos` items of distinct tasks of `family` from `demo_tasks` (never the names in
  `exclude`), drawn with `rng`, then the query item with `num_placeholders` placeholders."""
  if family not in dod.FAMILIES:
    raise ValueError(f"family {family!r} is not one of {dod.FAMILIES}")
  if num_placeholders < 1:
    raise ValueError(f"num_placeholders={num_placeholders}; a soft prompt has at least one vector")
  pool = sorted((t for t in demo_tasks if t.family == family and t.name not in exclude), key=lambda t: t.name)
  if len(pool) < num_demos:
    raise ValueError(f"{len(pool)} {family} tasks are available as demonstrations (excluding {list(exclude)}), "
                     f"fewer than num_demos={num_demos}")
  demos = [pool[i] for i in rng.choice(len(pool), num_demos, replace=False)]
  if family == "general":
    prefix = corpus.INSTRUCTION_PREFIX
  else:
    prefix = (corpus.classification_description(demos[0]) if demos else corpus.CLASSIFICATION_DESCRIPTION) + ":"
  return corpus.inspect_prompt([demo_item(t) for t in demos], prefix, num_placeholders)


def target_prompts(families: Sequence[str], demo_pool: Sequence[dod.Task], num_placeholders: int,
                   cfg: InspectConfig, names: Optional[Sequence[str]] = None) -> list[str]:
  """One target prompt per prompt. With `names` (the prompts' tasks), a task never demonstrates itself and
  its demonstrations depend only on (cfg.seed, its name); without, on (cfg.seed, its row)."""
  if names is not None and len(names) != len(families):
    raise ValueError(f"{len(names)} names for {len(families)} families")
  out = []
  for i, family in enumerate(families):
    key = i if names is None else zlib.crc32(names[i].encode("utf-8"))
    rng = np.random.default_rng([cfg.seed, key])
    exclude = () if names is None else (names[i],)
    out.append(target_prompt(family, demo_pool, num_placeholders, rng, cfg.num_demos, exclude))
  return out


def cut(text: str, stop_strings: Sequence[str]) -> str:
  """The text before the first occurrence of any of `stop_strings`, stripped.

  >>> cut(" Reverse the words. Then | x", (".", "|"))
  'Reverse the words'
  """
  end = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=len(text))
  return text[:end].strip()


def selection_indices(num_available: int, cfg: InspectConfig) -> np.ndarray:
  """Sorted indices of the `cfg.num_select_prompts` training prompts (all, when fewer) the layers are chosen
  on, drawn with `cfg.seed`."""
  k = min(cfg.num_select_prompts, num_available)
  return np.sort(np.random.default_rng([cfg.seed, 1]).choice(num_available, k, replace=False))


# ---------------------------------------------------------------------------------------------------
# Token ids.


def placeholder_id(lm) -> int:
  """The id of " x", the placeholder token; raises if the tokenizer does not encode it as one token."""
  if lm.tokenizer is None:
    raise ValueError(f"no tokenizer was found in {lm.path}; InSPEcT needs one to build its prompts")
  text = " " + corpus.INSPECT_PLACEHOLDER
  ids = lm.tokenizer.encode(text, add_special_tokens=False)
  if len(ids) != 1:
    raise ValueError(f"the tokenizer of {lm.path} encodes the placeholder {text!r} as {len(ids)} tokens {ids}; "
                     "InSPEcT needs one token per placeholder (change corpus.INSPECT_PLACEHOLDER)")
  return int(ids[0])


def stop_token_ids(lm, stop_strings: Sequence[str]) -> tuple[int, ...]:
  """Ids whose decoded text contains one of `stop_strings`: generation may end at them."""
  if not stop_strings:
    return ()
  vocab = len(lm.tokenizer)
  texts = lm.tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=True)
  return tuple(i for i, t in enumerate(texts) if any(s and s in t for s in stop_strings))


def _encode_targets(lm, targets: Sequence[str], num_placeholders: int) -> tuple[np.ndarray, np.ndarray]:
  """Ids and mask `[N, T]` of `[BOS] target`, left-padded; checks that each ends in exactly
  `num_placeholders` placeholder tokens."""
  pid = placeholder_id(lm)
  ids, mask = lm.encode(list(targets), add_bos=True, padding_side="left")
  t = ids.shape[1]
  for r in range(len(targets)):
    run = 0
    while run < t and mask[r, t - 1 - run] and ids[r, t - 1 - run] == pid:
      run += 1
    if run != num_placeholders:
      raise ValueError(f"target {r} ends in {run} placeholder tokens (id {pid}), not the prompt length "
                       f"{num_placeholders}: {targets[r]!r}")
  return ids, mask


# ---------------------------------------------------------------------------------------------------
# Source states.


@functools.partial(jax.jit, static_argnames=("config", "start", "layers"))
def _source_pass(params: dict, config: DecoderConfig, prompts: Array, token_ids: Array, inject_layer: Array,
                 start: int, layers: tuple[int, ...]) -> Array:
  """States `[B, S, P, D]` at the P placeholder positions `start..start+P-1` of `token_ids` `[B, T]`, for the
  residual-stream `layers`, with `prompts` `[B, P, D]` written there at layer `inject_layer`."""
  p = prompts.shape[1]
  patch = Patch.at(inject_layer, start, prompts, length=token_ids.shape[1])
  out = F.forward(params, config, token_ids, patch=patch, return_hidden=True, compute_logits=False)
  hidden = out.all_hidden[jnp.asarray(layers), :, start:start + p]  # [S, B, P, D]
  return jnp.swapaxes(hidden, 0, 1)


def _check_layers(what: str, layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
  layers = tuple(int(x) for x in layers)
  bad = [x for x in layers if not 0 <= x <= num_layers]
  if bad:
    raise ValueError(f"{what} {bad} are outside 0..{num_layers} (0 = embeddings, {num_layers} = last layer)")
  return layers


def source_states(lm, prompts, cfg: InspectConfig, layers: Optional[Sequence[int]] = None) -> np.ndarray:
  """The residual stream at the soft prompt's positions: `[N, S, P, D]` float32 for prompts `[N, P, D]`, at
  the stream `layers` (default all L+1: index 0 the embeddings, l the output of layer l)."""
  prompts = np.asarray(prompts)
  num_layers, d = lm.config.num_hidden_layers, lm.config.hidden_size
  if prompts.ndim != 3 or prompts.shape[2] != d:
    raise ValueError(f"prompts have shape {prompts.shape}; expected [N, P, D={d}] for this LM")
  layers = _check_layers("source layers", range(num_layers + 1) if layers is None else layers, num_layers)
  _check_layers("inject_layer", [cfg.inject_layer], num_layers)
  n, p, _ = prompts.shape
  row = [placeholder_id(lm)] * p
  if cfg.source_bos:
    if lm.config.bos_token_id is None:
      raise ValueError("source_bos=True, but the LM config has no bos_token_id")
    row = [lm.config.bos_token_id] + row
  bs = cfg.batch_size
  token_ids = jnp.asarray(np.tile(np.asarray(row, np.int32), (bs, 1)))
  out = np.zeros((n, len(layers), p, d), np.float32)
  for lo in range(0, n, bs):
    chunk = prompts[lo:lo + bs]
    m = chunk.shape[0]
    if m < bs:
      chunk = np.concatenate([chunk, np.zeros((bs - m, p, d), chunk.dtype)])
    states = _source_pass(lm.params, lm.config, jnp.asarray(chunk), token_ids, jnp.asarray(cfg.inject_layer),
                          int(cfg.source_bos), layers)
    out[lo:lo + m] = np.asarray(states, np.float32)[:m]
  return out


# ---------------------------------------------------------------------------------------------------
# Patched generation.


def _generate(lm, states: np.ndarray, token_ids: np.ndarray, mask: np.ndarray, rows: np.ndarray,
              cfg: InspectConfig) -> list[str]:
  """Descriptions of `rows` `[R, 3]` = (prompt i, index j into the states' layer axis, target layer t): the
  states `states[i, j]` `[P, D]` replace the last P real tokens of target `token_ids[i]` (`[N, T]`, with
  `mask`) at the output of layer t, then greedy decoding."""
  n_rows = rows.shape[0]
  p = states.shape[2]
  t = token_ids.shape[1]
  last = t - 1 - np.argmax(mask[:, ::-1], axis=1)  # each target's last real token (any padding side)
  start = last - p + 1  # [N] where its placeholders begin
  eos_ids = tuple(lm.eos_ids) + tuple(i for i in stop_token_ids(lm, cfg.stop_strings) if i not in lm.eos_ids)
  bs = cfg.batch_size
  texts = []
  for lo in range(0, n_rows, bs):
    batch = rows[lo:lo + bs]
    m = batch.shape[0]
    if m < bs:  # pad with copies of the last row: one compiled shape for every batch
      batch = np.concatenate([batch, np.repeat(batch[-1:], bs - m, axis=0)])
    i, j, layer = batch[:, 0], batch[:, 1], batch[:, 2]
    patch = Patch.at(jnp.asarray(layer, jnp.int32), jnp.asarray(start[i]), jnp.asarray(states[i, j]), length=t)
    out = sampler.sample(lm.params, lm.config, jnp.asarray(token_ids[i]), mask=jnp.asarray(mask[i]), patch=patch,
                         max_new_tokens=cfg.max_new_tokens, eos_ids=eos_ids, pad_id=lm.pad_id)
    texts += [cut(x, cfg.stop_strings) for x in lm.decode(np.asarray(out.tokens)[:m])]
  return texts


def describe(lm, prompts, targets: Sequence[str], layer_pairs: LayerPairs, cfg: InspectConfig) -> list[str]:
  """InSPEcT descriptions of soft prompts.

  Args:
    lm: a `translator.LM` with a tokenizer.
    prompts: `[N, P, D]` soft prompts.
    targets: N target prompts (`target_prompts`), each ending in P placeholders.
    layer_pairs: one (source layer, target layer) for every row, or N of them (`[N, 2]`).
    cfg: the settings.

  Returns:
    N descriptions, cut at the first stop string.
  """
  prompts = np.asarray(prompts)
  n = prompts.shape[0]
  if len(targets) != n:
    raise ValueError(f"{len(targets)} target prompts for {n} soft prompts")
  pairs = np.asarray(layer_pairs, np.int64)
  if pairs.shape == (2,):
    pairs = np.broadcast_to(pairs, (n, 2))
  if pairs.shape != (n, 2):
    raise ValueError(f"layer_pairs has shape {pairs.shape}; expected one (source, target) pair or [N={n}, 2]")
  num_layers = lm.config.num_hidden_layers
  _check_layers("target layers", pairs[:, 1], num_layers)
  sources = sorted(set(_check_layers("source layers", pairs[:, 0], num_layers)))
  ids, mask = _encode_targets(lm, targets, prompts.shape[1])
  states = source_states(lm, prompts, cfg, layers=sources)
  slot = {s: k for k, s in enumerate(sources)}
  rows = np.stack([np.arange(n), [slot[s] for s in pairs[:, 0]], pairs[:, 1]], axis=1)
  return _generate(lm, states, ids, mask, rows, cfg)


def select_layers(lm, prompts, targets: Sequence[str], golds: Sequence[str], cfg: InspectConfig,
                  similarity_fn: Optional[SimilarityFn] = None) -> tuple[tuple[int, int], dict]:
  """The (source, target) layer pair whose descriptions of `prompts` are most similar to `golds`.

  Args:
    lm: a `translator.LM` with a tokenizer.
    prompts: `[N, P, D]` soft prompts of training tasks (`selection_indices` picks N of them).
    targets: their N target prompts (`target_prompts`, with the tasks' names).
    golds: their N references (`gold_reference`).
    cfg: the settings; `source_layers` / `target_layers` restrict the sweep (default 0..L each).
    similarity_fn: `(predictions, references) -> [R]` scores; default all-MiniLM-L6-v2 cosine.

  Returns:
    The best pair (the first in sweep order on a tie) and a JSON-native table: {"pairs": [{"source",
    "target", "score"} per pair, sweep order: source-major], "best": {...}, "num_prompts": N}.
  """
  if similarity_fn is None:
    from translator.evaluation import minilm  # pylint: disable=g-import-not-at-top
    similarity_fn = minilm.similarity_batch
  prompts = np.asarray(prompts)
  n = prompts.shape[0]
  if len(targets) != n or len(golds) != n:
    raise ValueError(f"{n} prompts, {len(targets)} targets and {len(golds)} golds: one of each per prompt")
  if n == 0:
    raise ValueError("select_layers needs at least one prompt")
  num_layers = lm.config.num_hidden_layers
  sources = _check_layers("source_layers", cfg.source_layers or range(num_layers + 1), num_layers)
  target_layers = _check_layers("target_layers", cfg.target_layers or range(num_layers + 1), num_layers)
  pairs = [(s, t) for s in sources for t in target_layers]
  ids, mask = _encode_targets(lm, targets, prompts.shape[1])
  states = source_states(lm, prompts, cfg, layers=sources)
  rows = np.array([(i, k, t) for k in range(len(sources)) for t in target_layers for i in range(n)], np.int64)
  texts = _generate(lm, states, ids, mask, rows, cfg)
  scores = np.asarray(similarity_fn(texts, [golds[i] for i in rows[:, 0]]), np.float64).reshape(len(pairs), n)
  means = scores.mean(axis=1)
  best = int(np.argmax(means))
  table = {"pairs": [{"source": s, "target": t, "score": float(x)} for (s, t), x in zip(pairs, means)],
           "best": {"source": pairs[best][0], "target": pairs[best][1], "score": float(means[best])},
           "num_prompts": n}
  return pairs[best], table
